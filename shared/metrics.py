"""Federated, mergeable per-ancestry evaluation of the global model.

A hospital may not send per-person predictions, yet the coordinator must report pooled
per-population discrimination and calibration. Averaging per-site AUROCs is wrong (it weights a
20-person site like a 20,000-person one and is not the AUROC of anybody), so each site sends, per
ancestry group, histograms of its scores on a fine logit grid. Histograms add across sites, and
every metric here is a function of the merged histograms, so the pooled metric is the metric of
the pooled people up to the bin width (0.005 logits: AUROC error well under 0.005).

Site side::

    scores = GroupedScores.from_predictions(logits, labels, ancestry)
    payload = scores.to_json(min_count=10)        # groups with n < 10 are withheld

Coordinator side::

    pooled = sum(GroupedScores.from_json(p) for p in payloads)   # strict validation
    report = MetricFrame.from_scores(pooled, k=10, reference="EUR").to_dict()

Small-cell suppression happens in `MetricFrame`: a group with fewer than ``k`` people, cases or
controls shows as exactly ``{"suppressed": True}`` and is left out of ``overall`` too, so
"overall minus the shown groups" recovers nothing. The total over all groups is never reported.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, log_expit, logit, ndtri

N_BINS = 4000
LOGIT_RANGE = (-10.0, 10.0)
BIN_WIDTH = (LOGIT_RANGE[1] - LOGIT_RANGE[0]) / N_BINS
BIN_EDGES = np.linspace(LOGIT_RANGE[0], LOGIT_RANGE[1], N_BINS + 1)
# Probability bounds of each bin; the edge bins also hold everything clipped into them.
_P_LO = np.concatenate([[0.0], expit(BIN_EDGES[1:-1])])
_P_HI = np.concatenate([expit(BIN_EDGES[1:-1]), [1.0]])

FORMAT = "genofed.grouped_scores"
VERSION = 1
N_CALIBRATION_BINS = 10
DISPARITY_METRICS = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity", "ppv")
MAX_JSON_CHARS = 50_000_000
MAX_COUNT = 10**12  # far above any cohort; keeps int64 sums exact and rejects absurd payloads
MAX_GROUP_NAME = 100
_TOLERANCE = 1e-9

_TOP_KEYS = frozenset({"format", "version", "n_bins", "logit_range", "groups"})
_GROUP_KEYS = frozenset({"n", "cases", "brier_sum", "bins", "case", "control", "sum_prob"})


def logit_to_bin(logits: np.ndarray) -> np.ndarray:
    """Bin index of each logit; values outside ``LOGIT_RANGE`` go to the edge bins."""
    idx = np.floor((np.asarray(logits, dtype=np.float64) - LOGIT_RANGE[0]) / BIN_WIDTH)
    return np.clip(idx, 0, N_BINS - 1).astype(np.int64)


@dataclass(eq=False)
class GroupStats:
    """Sufficient statistics for one ancestry group at one site, or merged over sites.

    Every field is a sum over people, so merging is addition and is exactly associative and
    commutative for the counts (float sums differ only by rounding).
    """

    n: int
    cases: int
    hist_case: np.ndarray  # int64 [N_BINS]: case scores per logit bin
    hist_control: np.ndarray  # int64 [N_BINS]
    sum_prob: np.ndarray  # float64 [N_BINS]: sum of predicted probabilities per bin (everyone)
    brier_sum: float  # sum of (p - y)^2

    def __post_init__(self) -> None:
        self.n, self.cases, self.brier_sum = int(self.n), int(self.cases), float(self.brier_sum)
        self.hist_case = np.asarray(self.hist_case, dtype=np.int64)
        self.hist_control = np.asarray(self.hist_control, dtype=np.int64)
        self.sum_prob = np.asarray(self.sum_prob, dtype=np.float64)
        for name in ("hist_case", "hist_control", "sum_prob"):
            if getattr(self, name).shape != (N_BINS,):
                raise ValueError(f"{name} must have shape ({N_BINS},)")

    @classmethod
    def empty(cls) -> GroupStats:
        """The identity for `merge`."""
        zeros = np.zeros(N_BINS, dtype=np.int64)
        return cls(0, 0, zeros, zeros.copy(), np.zeros(N_BINS), 0.0)

    @property
    def controls(self) -> int:
        return self.n - self.cases

    @property
    def counts(self) -> np.ndarray:
        """People per bin."""
        return self.hist_case + self.hist_control

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of both groups of people."""
        return GroupStats(
            n=self.n + other.n,
            cases=self.cases + other.cases,
            hist_case=self.hist_case + other.hist_case,
            hist_control=self.hist_control + other.hist_control,
            sum_prob=self.sum_prob + other.sum_prob,
            brier_sum=self.brier_sum + other.brier_sum,
        )

    def __add__(self, other: GroupStats) -> GroupStats:
        if not isinstance(other, GroupStats):
            return NotImplemented
        return self.merge(other)


@dataclass(eq=False)
class GroupedScores:
    """Per-ancestry `GroupStats`; what a site sends and what the coordinator pools."""

    groups: dict[str, GroupStats] = field(default_factory=dict)

    @classmethod
    def from_predictions(
        cls, logits: np.ndarray, labels: np.ndarray, groups: np.ndarray
    ) -> GroupedScores:
        """Site side: bin one site's held-out predictions (logits) by ancestry group."""
        logits, labels, names, inverse = _check_predictions(logits, labels, groups)
        key = inverse * N_BINS + logit_to_bin(logits)
        size = len(names) * N_BINS
        prob = expit(logits)
        is_case = labels == 1
        hist_case = np.bincount(key[is_case], minlength=size).reshape(-1, N_BINS)
        hist_control = np.bincount(key[~is_case], minlength=size).reshape(-1, N_BINS)
        sum_prob = np.bincount(key, weights=prob, minlength=size).reshape(-1, N_BINS)
        brier = np.bincount(inverse, weights=(prob - labels) ** 2, minlength=len(names))
        n = np.bincount(inverse, minlength=len(names))
        cases = np.bincount(inverse, weights=is_case, minlength=len(names))
        columns = zip(n, cases, hist_case, hist_control, sum_prob, brier, strict=True)
        return cls({str(name): GroupStats(*col) for name, col in zip(names, columns, strict=True)})

    def merge(self, other: GroupedScores) -> GroupedScores:
        """Pool two sets of people (different sites); groups absent on one side pass through."""
        merged = dict(self.groups)
        for name, stats in other.groups.items():
            merged[name] = merged[name].merge(stats) if name in merged else stats
        return GroupedScores(dict(sorted(merged.items())))

    def __add__(self, other: GroupedScores) -> GroupedScores:
        if not isinstance(other, GroupedScores):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> GroupedScores:
        # Lets the coordinator write `sum(site_scores)`, whose start value is 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def withheld(self, min_count: int) -> list[str]:
        """Groups `to_json(min_count)` would omit, for the site's own log."""
        min_count = _positive_int(min_count, "min_count")
        return sorted(name for name, stats in self.groups.items() if stats.n < min_count)

    def to_json(self, min_count: int) -> str:
        """Site side: compact JSON, omitting groups with fewer than ``min_count`` people.

        Bins are sparse (only non-empty bins are listed) so a few hundred people cost a few KB.
        """
        min_count = _positive_int(min_count, "min_count")
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "n_bins": N_BINS,
            "logit_range": list(LOGIT_RANGE),
            "groups": {
                name: _group_to_obj(stats)
                for name, stats in sorted(self.groups.items())
                if stats.n >= min_count
            },
        }
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> GroupedScores:
        """Coordinator side: parse a site's payload, rejecting anything malformed.

        The payload comes from another institution, so nothing is trusted: exact key sets,
        exact JSON types, bounds, and internal consistency (counts agree with histograms,
        probability and Brier sums lie within what the listed bins allow) are all checked and
        any failure is a ``ValueError`` naming the group and field.
        """
        payload = _parse_json(text)
        _expect_keys(payload, _TOP_KEYS, "grouped scores")
        if payload["format"] != FORMAT:
            raise ValueError(f"grouped scores: format must be {FORMAT!r}")
        if type(payload["version"]) is not int or payload["version"] != VERSION:
            raise ValueError(f"grouped scores: unsupported version {payload['version']!r}")
        if type(payload["n_bins"]) is not int or payload["n_bins"] != N_BINS:
            raise ValueError(f"grouped scores: n_bins must be {N_BINS}")
        lr = payload["logit_range"]
        if not (isinstance(lr, list) and len(lr) == 2 and all(_is_number(v) for v in lr)) or (
            tuple(float(v) for v in lr) != LOGIT_RANGE
        ):
            raise ValueError(f"grouped scores: logit_range must be {list(LOGIT_RANGE)}")
        if not isinstance(payload["groups"], dict):
            raise ValueError("grouped scores: groups must be an object")
        return cls({name: _group_from_obj(name, obj) for name, obj in payload["groups"].items()})


def auroc_from_hist(hist_case: np.ndarray, hist_control: np.ndarray) -> float:
    """AUROC (Mann-Whitney U / (cases * controls)); a case and control in one bin count 1/2.

    NaN when there are no cases or no controls.
    """
    v10, _, n1, n0 = _placements(hist_case, hist_control)
    if n1 == 0 or n0 == 0:
        return math.nan
    return float(np.dot(np.asarray(hist_case, dtype=np.float64), v10) / n1)


def auroc_ci(
    hist_case: np.ndarray, hist_control: np.ndarray, level: float = 0.95
) -> tuple[float, float]:
    """DeLong confidence interval for the AUROC, from binned scores.

    DeLong's variance needs only each case's placement value (fraction of controls it
    outranks, ties 1/2) and each control's (fraction of cases outranking it). Those depend on a
    person's score only through its rank among the other class, so everyone in a bin shares one
    placement value and the per-person sums become bin-weighted sums. The result is exactly
    DeLong for the score rounded to its bin, which at 0.005-logit bins matches DeLong on the raw
    scores to ~1e-4. Normal interval clipped to [0, 1], as in pROC; NaN with < 2 of a class.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    v10, v01, n1, n0 = _placements(hist_case, hist_control)
    if n1 < 2 or n0 < 2:
        return (math.nan, math.nan)
    hc = np.asarray(hist_case, dtype=np.float64)
    h0 = np.asarray(hist_control, dtype=np.float64)
    auc = float(np.dot(hc, v10) / n1)
    s10 = float(np.dot(hc, (v10 - auc) ** 2) / (n1 - 1))
    s01 = float(np.dot(h0, (v01 - auc) ** 2) / (n0 - 1))
    half = float(ndtri(0.5 + level / 2)) * math.sqrt(s10 / n1 + s01 / n0)  # normal quantile
    return (max(0.0, auc - half), min(1.0, auc + half))


def _placements(
    hist_case: np.ndarray, hist_control: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-bin DeLong placement values of cases (``v10``) and controls (``v01``)."""
    hc = np.asarray(hist_case, dtype=np.float64)
    h0 = np.asarray(hist_control, dtype=np.float64)
    n1, n0 = float(hc.sum()), float(h0.sum())
    controls_below = np.cumsum(h0) - h0
    cases_above = n1 - np.cumsum(hc)
    v10 = (controls_below + 0.5 * h0) / max(n0, 1.0)
    v01 = (cases_above + 0.5 * hc) / max(n1, 1.0)
    return v10, v01, n1, n0


def auprc_from_hist(hist_case: np.ndarray, hist_control: np.ndarray) -> float:
    """Step-wise average precision, one threshold per bin (sklearn's definition, binned).

    The trapezoidal PR area is optimistic, which is why the step form is used.
    """
    hc = np.asarray(hist_case, dtype=np.float64)[::-1]
    h0 = np.asarray(hist_control, dtype=np.float64)[::-1]
    n1 = hc.sum()
    if n1 == 0:
        return math.nan
    tp, flagged = np.cumsum(hc), np.cumsum(hc + h0)
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    return float(np.dot(hc, precision) / n1)


def _bin_mean_prob(stats: GroupStats) -> tuple[np.ndarray, np.ndarray]:
    """Indices of non-empty bins and their mean predicted probability.

    The mean is exact even for logits clipped into the edge bins, which bin centres are not.
    """
    counts = stats.counts
    idx = np.flatnonzero(counts)
    return idx, stats.sum_prob[idx] / counts[idx]


def calibration_fit(stats: GroupStats) -> tuple[float, float]:
    """(intercept, slope) of the logistic recalibration ``logit P(y) = a + b * logit(p)``.

    Cox's calibration: slope < 1 means over-confident predictions, intercept != 0 a shifted
    baseline risk. Fitted by Newton-Raphson on per-bin (logit, cases, people) triples, which is
    the per-person fit with each logit rounded within its bin. NaN when the fit does not exist
    (a single bin, or perfectly separated outcomes).
    """
    idx, mean_prob = _bin_mean_prob(stats)
    if idx.size < 2:
        return (math.nan, math.nan)
    x = logit(np.clip(mean_prob, 1e-12, 1 - 1e-12))
    if np.ptp(x) == 0:
        return (math.nan, math.nan)
    cases = stats.hist_case[idx].astype(np.float64)
    beta = _newton_logistic(x, cases, stats.counts[idx].astype(np.float64))
    return (float(beta[0]), float(beta[1]))


def _newton_logistic(x: np.ndarray, cases: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Binomial-logit MLE with step halving; NaNs if it does not converge (separation)."""
    design = np.column_stack([np.ones_like(x), x])

    def nll(beta: np.ndarray) -> float:
        eta = design @ beta
        return float(-(cases * log_expit(eta) + (counts - cases) * log_expit(-eta)).sum())

    beta, current = np.array([0.0, 1.0]), nll(np.array([0.0, 1.0]))
    for _ in range(100):
        mu = expit(design @ beta)
        grad = design.T @ (cases - counts * mu)
        hess = (design * (counts * mu * (1 - mu))[:, None]).T @ design
        try:
            step = np.linalg.solve(hess, grad)
        except np.linalg.LinAlgError:
            break
        scale = 1.0
        while scale > 1e-8 and nll(beta + scale * step) > current + 1e-12:
            scale /= 2
        if scale <= 1e-8:
            break
        beta = beta + scale * step
        current = nll(beta)
        if np.max(np.abs(scale * step)) < 1e-9:
            return beta
    return np.array([math.nan, math.nan])


def _probability_bins(stats: GroupStats) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """People, predicted-probability sum and cases per equal-width probability bin.

    Fine logit bins are assigned whole by their mean probability; a fine bin is far narrower
    than a probability bin, so at most a handful of people land one bin over.
    """
    idx, mean_prob = _bin_mean_prob(stats)
    coarse = np.minimum((mean_prob * N_CALIBRATION_BINS).astype(np.int64), N_CALIBRATION_BINS - 1)
    count = np.bincount(coarse, weights=stats.counts[idx], minlength=N_CALIBRATION_BINS)
    prob = np.bincount(coarse, weights=stats.sum_prob[idx], minlength=N_CALIBRATION_BINS)
    cases = np.bincount(coarse, weights=stats.hist_case[idx], minlength=N_CALIBRATION_BINS)
    return count, prob, cases


def expected_calibration_error(stats: GroupStats) -> float:
    """Count-weighted mean |mean prediction - observed rate| over 10 probability bins."""
    if stats.n == 0:
        return math.nan
    _, prob, cases = _probability_bins(stats)
    return float(np.abs(prob - cases).sum() / stats.n)


def calibration_curve(stats: GroupStats, min_count: int = 1) -> list[list[float]]:
    """``[[mean_pred, observed_rate, count], ...]`` per probability bin with >= min_count people.

    Bins below ``min_count`` are omitted, not only empty ones: a bin's count and rate are a
    small cell just like a group's.
    """
    count, prob, cases = _probability_bins(stats)
    keep = np.flatnonzero((count >= max(min_count, 1)) & (count > 0))
    return [[float(prob[b] / count[b]), float(cases[b] / count[b]), int(count[b])] for b in keep]


def threshold_metrics(stats: GroupStats, threshold: float) -> dict[str, float]:
    """Sensitivity, specificity and PPV calling ``p >= threshold`` positive.

    The threshold is rounded to the nearest bin edge (within 0.0025 logits), so only people
    scored that close to it can be misclassified relative to the raw scores.
    """
    cut = int(np.clip(np.rint((logit(threshold) - LOGIT_RANGE[0]) / BIN_WIDTH), 0, N_BINS))
    tp = float(stats.hist_case[cut:].sum())
    fp = float(stats.hist_control[cut:].sum())
    return {
        "sensitivity": tp / stats.cases if stats.cases else math.nan,
        "specificity": (stats.controls - fp) / stats.controls if stats.controls else math.nan,
        "ppv": tp / (tp + fp) if tp + fp else math.nan,
    }


def group_metrics(stats: GroupStats, threshold: float = 0.5, min_cell: int = 1) -> dict[str, Any]:
    """All per-group metrics of `MetricFrame`, unsuppressed (callers decide suppression)."""
    intercept, slope = calibration_fit(stats)
    return {
        "n": stats.n,
        "cases": stats.cases,
        "auroc": auroc_from_hist(stats.hist_case, stats.hist_control),
        "auroc_ci": list(auroc_ci(stats.hist_case, stats.hist_control)),
        "auprc": auprc_from_hist(stats.hist_case, stats.hist_control),
        "brier": stats.brier_sum / stats.n if stats.n else math.nan,
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "ece": expected_calibration_error(stats),
        **threshold_metrics(stats, threshold),
        "calibration_curve": calibration_curve(stats, min_count=min_cell),
    }


def is_small_cell(stats: GroupStats, k: int) -> bool:
    """True when a group has fewer than ``k`` people, cases or controls."""
    return min(stats.n, stats.cases, stats.controls) < k


@dataclass
class MetricFrame:
    """Pooled per-group metrics with small-cell suppression and disparity summaries.

    Like fairlearn's MetricFrame (overall, by_group, difference, ratio), but built from
    mergeable federated statistics, which MetricFrame cannot consume.
    """

    k: int
    threshold: float
    reference: str | None
    overall: dict[str, Any]
    by_group: dict[str, dict[str, Any]]
    difference: dict[str, float | None]
    ratio: dict[str, float | None]
    vs_reference: dict[str, dict[str, float | None]]

    @classmethod
    def from_scores(
        cls,
        scores: GroupedScores,
        k: int = 10,
        threshold: float = 0.5,
        reference: str | None = None,
    ) -> MetricFrame:
        """Compute the report; groups below ``k`` people, cases or controls are suppressed.

        ``overall`` pools only the shown groups, so it cannot be differenced against them to
        recover a suppressed group; the all-groups total is deliberately never computed.
        """
        k = _positive_int(k, "k")
        threshold = _probability(threshold, "threshold")
        shown = {
            name: stats
            for name, stats in sorted(scores.groups.items())
            if not is_small_cell(stats, k)
        }
        by_group = {
            name: group_metrics(shown[name], threshold, k)
            if name in shown
            else {"suppressed": True}
            for name in sorted(scores.groups)
        }
        if shown:
            pooled = _merge_all(shown.values())
            overall: dict[str, Any] = group_metrics(pooled, threshold, k)
        else:
            overall = {"suppressed": True}
        metrics = {name: by_group[name] for name in shown}
        difference, ratio = _disparities(metrics)
        return cls(
            k=k,
            threshold=threshold,
            reference=reference,
            overall=overall,
            by_group=by_group,
            difference=difference,
            ratio=ratio,
            vs_reference=_vs_reference(metrics, reference),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (NaN becomes ``None``, as strict JSON has no NaN)."""
        return _json_ready(
            {
                "k": self.k,
                "threshold": self.threshold,
                "reference": self.reference,
                "overall": self.overall,
                "by_group": self.by_group,
                "difference": self.difference,
                "ratio": self.ratio,
                "vs_reference": self.vs_reference,
            }
        )


def _merge_all(parts: Iterable[GroupStats]) -> GroupStats:
    total = GroupStats.empty()
    for stats in parts:
        total = total.merge(stats)
    return total


def _disparities(
    metrics: dict[str, dict[str, Any]],
) -> tuple[dict[str, float | None], dict[str, float | None]]:
    """max - min and min / max over shown groups; ``None`` if any shown group lacks the metric.

    An undefined value is not dropped: silently comparing only the groups where a metric
    exists would understate the disparity.
    """
    if not metrics:
        return {}, {}
    difference: dict[str, float | None] = {}
    ratio: dict[str, float | None] = {}
    for metric in DISPARITY_METRICS:
        values = [float(m[metric]) for m in metrics.values()]
        if not all(math.isfinite(v) for v in values):
            difference[metric] = ratio[metric] = None
            continue
        lo, hi = min(values), max(values)
        difference[metric] = hi - lo
        ratio[metric] = lo / hi if hi > 0 else None
    return difference, ratio


def _vs_reference(
    metrics: dict[str, dict[str, Any]], reference: str | None
) -> dict[str, dict[str, float | None]]:
    """Each other shown group's metric minus the reference group's; empty if it is not shown."""
    if reference is None or reference not in metrics:
        return {}
    ref = metrics[reference]
    return {
        name: {metric: float(m[metric]) - float(ref[metric]) for metric in DISPARITY_METRICS}
        for name, m in metrics.items()
        if name != reference
    }


def _json_ready(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


# --- validation helpers ---------------------------------------------------------------------


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    try:
        number = operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
    if number < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return number


def _probability(value: object, name: str) -> float:
    """A float strictly inside (0, 1): 0 and 1 are not thresholds on a sigmoid output."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), got {value!r}")
    return float(value)


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _check_predictions(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Validated float logits, 0/1 labels, sorted group names and each person's group index."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels)
    groups = np.asarray(groups)
    if logits.ndim != 1 or labels.shape != logits.shape or groups.shape != logits.shape:
        raise ValueError("logits, labels and groups must be 1-D arrays of the same length")
    if np.isnan(logits).any():
        raise ValueError("logits contain NaN")
    if labels.size and not np.isin(labels, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    names, inverse = np.unique(groups.astype(str), return_inverse=True)
    if any(not name for name in names):
        raise ValueError("group names must be non-empty")
    return logits, labels.astype(np.float64), names, inverse.reshape(-1).astype(np.int64)


def _group_to_obj(stats: GroupStats) -> dict[str, Any]:
    idx = np.flatnonzero(stats.counts)
    return {
        "n": stats.n,
        "cases": stats.cases,
        "brier_sum": stats.brier_sum,
        "bins": idx.tolist(),
        "case": stats.hist_case[idx].tolist(),
        "control": stats.hist_control[idx].tolist(),
        "sum_prob": stats.sum_prob[idx].tolist(),
    }


def _parse_json(text: str | bytes) -> Any:
    if not isinstance(text, str | bytes | bytearray):
        raise ValueError(f"grouped scores: expected JSON text, got {type(text).__name__}")
    if len(text) > MAX_JSON_CHARS:
        raise ValueError(f"grouped scores: payload larger than {MAX_JSON_CHARS} characters")

    def reject_constant(name: str) -> None:
        raise ValueError(f"grouped scores: {name} is not allowed")

    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        keys = [key for key, _ in pairs]
        if len(set(keys)) != len(keys):
            raise ValueError("grouped scores: duplicate key in JSON object")
        return dict(pairs)

    try:
        return json.loads(text, parse_constant=reject_constant, object_pairs_hook=no_duplicates)
    except json.JSONDecodeError as exc:
        raise ValueError(f"grouped scores: not valid JSON ({exc})") from None
    except UnicodeDecodeError as exc:
        raise ValueError(f"grouped scores: not UTF-8 text ({exc})") from None
    except RecursionError:
        raise ValueError("grouped scores: JSON nested too deeply") from None


def _expect_keys(obj: object, keys: frozenset[str], where: str) -> None:
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object")
    missing, extra = keys - obj.keys(), obj.keys() - keys
    if missing or extra:
        raise ValueError(
            f"{where}: missing keys {sorted(missing)}, unexpected keys {sorted(extra)}"
        )


def _int_list(values: object, where: str) -> np.ndarray:
    if not isinstance(values, list) or not all(type(v) is int for v in values):
        raise ValueError(f"{where} must be a list of integers")
    if any(v < 0 or v > MAX_COUNT for v in values):
        raise ValueError(f"{where} must hold integers in 0..{MAX_COUNT}")
    return np.array(values, dtype=np.int64)


def _count(value: object, where: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_COUNT:  # type: ignore[operator]
        raise ValueError(f"{where} must be an integer in 0..{MAX_COUNT}")
    return value  # type: ignore[return-value]


def _group_from_obj(name: str, obj: object) -> GroupStats:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_GROUP_NAME:
        raise ValueError(f"grouped scores: group name must be 1..{MAX_GROUP_NAME} characters")
    where = f"grouped scores: group {name!r}"
    _expect_keys(obj, _GROUP_KEYS, where)
    assert isinstance(obj, dict)
    n, cases = _count(obj["n"], f"{where}: n"), _count(obj["cases"], f"{where}: cases")
    if n < 1 or cases > n:
        raise ValueError(f"{where}: need n >= 1 and cases <= n (n={n}, cases={cases})")
    bins = _int_list(obj["bins"], f"{where}: bins")
    case = _int_list(obj["case"], f"{where}: case")
    control = _int_list(obj["control"], f"{where}: control")
    sum_prob = obj["sum_prob"]
    if not isinstance(sum_prob, list) or not all(_is_number(v) for v in sum_prob):
        raise ValueError(f"{where}: sum_prob must be a list of finite numbers")
    if not len(bins) == len(case) == len(control) == len(sum_prob):
        raise ValueError(f"{where}: bins, case, control and sum_prob differ in length")
    if bins.size and (bins[-1] >= N_BINS or np.any(np.diff(bins) <= 0)):
        raise ValueError(f"{where}: bins must be strictly increasing indices below {N_BINS}")
    if np.any(case + control == 0):
        raise ValueError(f"{where}: listed bins must be non-empty")
    if int(case.sum()) != cases or int(case.sum() + control.sum()) != n:
        raise ValueError(f"{where}: n and cases disagree with the histograms")
    if not _is_number(obj["brier_sum"]):
        raise ValueError(f"{where}: brier_sum must be a finite number")
    stats = GroupStats.empty()
    stats.n, stats.cases, stats.brier_sum = n, cases, float(obj["brier_sum"])
    stats.hist_case[bins], stats.hist_control[bins] = case, control
    stats.sum_prob[bins] = np.array(sum_prob, dtype=np.float64)
    _check_sums(stats, where)
    return stats


def _check_sums(stats: GroupStats, where: str) -> None:
    """Probability and Brier sums must be achievable by the people in the listed bins."""
    counts = stats.counts.astype(np.float64)
    hc, h0 = stats.hist_case.astype(np.float64), stats.hist_control.astype(np.float64)
    slack = _TOLERANCE * (counts + 1)
    if np.any(stats.sum_prob < counts * _P_LO - slack) or np.any(
        stats.sum_prob > counts * _P_HI + slack
    ):
        raise ValueError(f"{where}: sum_prob outside the probability range of its bins")
    low = float(np.dot(hc, (1 - _P_HI) ** 2) + np.dot(h0, _P_LO**2))
    high = float(np.dot(hc, (1 - _P_LO) ** 2) + np.dot(h0, _P_HI**2))
    slack_total = _TOLERANCE * (stats.n + 1)
    if not low - slack_total <= stats.brier_sum <= high + slack_total:
        raise ValueError(f"{where}: brier_sum inconsistent with the histograms")
