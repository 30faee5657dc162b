"""Federated, mergeable per-ancestry evaluation of the global model, released under DP.

Held-out patients are patients too: what a site says about how the model scores them is a
release about people, so it is differentially private and paid for from the site's budget.
Each site bins its held-out people's risk logits into `N_BINS` coarse bins (open-ended at both
ends), one histogram per ancestry group and class (case, control), and adds Gaussian noise of
standard deviation `sigma` to every bin. One person moves one count by one, so the whole release
has L2 sensitivity 1 and costs one Gaussian mechanism at `sigma` (`shared.privacy`). No
per-bin probability sums, no exact counts, nothing else: the coarse, noisy histogram is all.

Averaging per-site AUROCs would be wrong (it weights a 20-person site like a 20,000-person one
and is not the AUROC of anybody), so the coordinator adds the sites' noisy histograms (and their
noise variances) and computes every metric from the merged histograms. The AUROC estimator is
the Mann-Whitney statistic of the merged histograms, bilinear in the counts, so zero-mean noise
leaves it (to first order) unbiased; its interval adds the noise's variance (delta method) to
DeLong's sampling variance. Calibration, Brier and threshold metrics use each bin's
representative logit (`bin_logits`), so they are as coarse as the bins.

Site side::

    exact = GroupedScores.from_predictions(logits, labels, ancestry, center=0.0)
    payload = exact.with_noise(sigma, rng).keep(shown).to_json()

Coordinator side::

    pooled = sum(GroupedScores.from_json(p, center=0.0) for p in payloads)   # strict
    report = MetricFrame.from_scores(pooled, k=10, reference="EUR").to_dict()

Small-cell suppression: a site withholds groups whose (noisy) case or control count is under its
floor; the coordinator suppresses merged groups under its k the same way, shows them as exactly
``{"suppressed": True}`` and leaves them out of ``overall`` too, so "overall minus the shown
groups" recovers nothing. The total over all groups is never reported.
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

N_BINS = 16
BIN_WIDTH = 0.5  # logits; the N_BINS - 2 inner bins span +-3.5 around the centre
FORMAT = "genofed.dp_scores"
VERSION = 2
DISPARITY_METRICS = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity", "ppv")
MAX_JSON_CHARS = 1_000_000
MAX_GROUPS = 64
MAX_COUNT = 1e9  # far above any cohort: rejects absurd payloads before they are summed
MAX_NOISE_SD = 1e6
MAX_GROUP_NAME = 100
MAX_CENTER = 20.0

_TOP_KEYS = frozenset({"format", "version", "n_bins", "bin_width", "center", "noise_sd",
                       "groups"})
_GROUP_KEYS = frozenset({"case", "control"})


def bin_edges(center: float = 0.0) -> np.ndarray:
    """The N_BINS - 1 inner edges; bin 0 is (-inf, edge 0), bin N_BINS - 1 [last edge, inf)."""
    return center + BIN_WIDTH * (np.arange(N_BINS - 1) - (N_BINS - 2) / 2)


def bin_logits(center: float = 0.0) -> np.ndarray:
    """Each bin's representative logit: its midpoint; the open edge bins half a bin outside
    their inner edge (the people there are further out still, which these metrics cannot see)."""
    edges = bin_edges(center)
    mids = (edges[:-1] + edges[1:]) / 2
    return np.concatenate([[edges[0] - BIN_WIDTH / 2], mids, [edges[-1] + BIN_WIDTH / 2]])


def logit_to_bin(logits: np.ndarray, center: float = 0.0) -> np.ndarray:
    """Bin index of each logit (an edge belongs to the bin above it)."""
    return np.searchsorted(bin_edges(center), np.asarray(logits, dtype=np.float64),
                           side="right").astype(np.int64)



# Bin centres the sites choose themselves (`score-centering = "panel"`) lie on this grid, so
# sites computing the same public quantity on different hardware agree exactly.
CENTER_STEP = 0.25
MAX_CENTER = 20.0


def snap_center(logit: float) -> float:
    """A bin centre on the agreed grid, within +-MAX_CENTER."""
    return float(min(MAX_CENTER, max(-MAX_CENTER, round(logit / CENTER_STEP) * CENTER_STEP)))


@dataclass(eq=False)
class GroupStats:
    """One ancestry group's histograms at one site, or merged over sites.

    `hist_case` / `hist_control` are counts per bin, exact at the site before noise and noisy
    (real-valued, possibly negative) once released; `noise_var` is the variance of the noise on
    each bin (the sum over the sites that contributed).
    """

    hist_case: np.ndarray  # float64 [N_BINS]
    hist_control: np.ndarray  # float64 [N_BINS]
    noise_var: float = 0.0

    def __post_init__(self) -> None:
        self.hist_case = np.asarray(self.hist_case, dtype=np.float64)
        self.hist_control = np.asarray(self.hist_control, dtype=np.float64)
        self.noise_var = float(self.noise_var)
        for name in ("hist_case", "hist_control"):
            if getattr(self, name).shape != (N_BINS,):
                raise ValueError(f"{name} must have shape ({N_BINS},)")

    @classmethod
    def empty(cls) -> GroupStats:
        """The identity for `merge`."""
        return cls(np.zeros(N_BINS), np.zeros(N_BINS), 0.0)

    @property
    def cases(self) -> float:
        return float(self.hist_case.sum())

    @property
    def controls(self) -> float:
        return float(self.hist_control.sum())

    @property
    def n(self) -> float:
        return self.cases + self.controls

    def merge(self, other: GroupStats) -> GroupStats:
        """Statistics of the union of both groups of people (noise variances add)."""
        return GroupStats(self.hist_case + other.hist_case,
                          self.hist_control + other.hist_control,
                          self.noise_var + other.noise_var)

    def __add__(self, other: GroupStats) -> GroupStats:
        if not isinstance(other, GroupStats):
            return NotImplemented
        return self.merge(other)


@dataclass(eq=False)
class GroupedScores:
    """Per-ancestry `GroupStats`: what a site releases and what the coordinator pools."""

    groups: dict[str, GroupStats] = field(default_factory=dict)
    center: float = 0.0
    noise_sd: float = 0.0  # of each bin, as released by one site; merged scores keep 0 here

    @classmethod
    def from_predictions(
        cls, logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, center: float = 0.0
    ) -> GroupedScores:
        """Site side: bin one site's held-out predictions (logits) by ancestry group, exactly.
        Never released as they are: see `with_noise`."""
        logits, labels, names, inverse = _check_predictions(logits, labels, groups)
        key = inverse * N_BINS + logit_to_bin(logits, center)
        size = len(names) * N_BINS
        is_case = labels == 1
        hist_case = np.bincount(key[is_case], minlength=size).reshape(-1, N_BINS)
        hist_control = np.bincount(key[~is_case], minlength=size).reshape(-1, N_BINS)
        return cls({str(name): GroupStats(hc, h0) for name, hc, h0
                    in zip(names, hist_case, hist_control, strict=True)}, center=center)

    def with_groups(self, names: Iterable[str]) -> GroupedScores:
        """These groups exactly (absent ones as empty histograms): the release must not depend
        on which groups happen to be present, so a site releases a fixed vocabulary."""
        return GroupedScores({n: self.groups.get(n, GroupStats.empty()) for n in sorted(names)},
                             self.center, self.noise_sd)

    def with_noise(self, sigma: float, rng: np.random.Generator) -> GroupedScores:
        """The DP release: Gaussian noise of standard deviation `sigma` on every bin."""
        if not math.isfinite(sigma) or sigma <= 0:
            raise ValueError("the noise standard deviation must be a positive number")
        noisy = {name: GroupStats(s.hist_case + rng.normal(0.0, sigma, N_BINS),
                                  s.hist_control + rng.normal(0.0, sigma, N_BINS),
                                  s.noise_var + sigma**2)
                 for name, s in self.groups.items()}
        return GroupedScores(noisy, self.center, sigma)

    def keep(self, names: Iterable[str]) -> GroupedScores:
        """Only these groups (the others withheld)."""
        wanted = set(names)
        return GroupedScores({n: s for n, s in self.groups.items() if n in wanted},
                             self.center, self.noise_sd)

    def merge(self, other: GroupedScores) -> GroupedScores:
        """Pool two sets of people (different sites); groups absent on one side pass through."""
        if other.center != self.center and self.groups and other.groups:
            raise ValueError("grouped scores binned around different centres cannot be merged")
        merged = dict(self.groups)
        for name, stats in other.groups.items():
            merged[name] = merged[name].merge(stats) if name in merged else stats
        center = self.center if self.groups else other.center
        return GroupedScores(dict(sorted(merged.items())), center)

    def __add__(self, other: GroupedScores) -> GroupedScores:
        if not isinstance(other, GroupedScores):
            return NotImplemented
        return self.merge(other)

    def __radd__(self, other: object) -> GroupedScores:
        # Lets the coordinator write `sum(site_scores)`, whose start value is 0.
        if isinstance(other, int) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def to_json(self, exact: bool = False) -> str:
        """Site side: the released payload, of noisy, already-kept scores. Exact histograms
        are refused unless `exact` (tests and benchmarks that model a non-private release)."""
        if self.noise_sd <= 0 and not exact:
            raise ValueError("refusing to serialize scores without DP noise")
        payload = {
            "format": FORMAT,
            "version": VERSION,
            "n_bins": N_BINS,
            "bin_width": BIN_WIDTH,
            "center": float(self.center),
            "noise_sd": float(self.noise_sd),
            "groups": {name: {"case": [round(float(v), 3) for v in s.hist_case],
                              "control": [round(float(v), 3) for v in s.hist_control]}
                       for name, s in sorted(self.groups.items())},
        }
        return json.dumps(payload, separators=(",", ":"), allow_nan=False)

    @classmethod
    def from_json(cls, text: str | bytes, center: float | None = 0.0) -> GroupedScores:
        """Coordinator side: parse a site's payload, rejecting anything malformed.

        The payload comes from another institution, so nothing is trusted: size first, then
        exact key sets, exact JSON types, bounds and the agreed binning; any failure is a
        ``ValueError`` naming the group and field.
        """
        payload = _parse_json(text)
        _expect_keys(payload, _TOP_KEYS, "grouped scores")
        if payload["format"] != FORMAT:
            raise ValueError(f"grouped scores: format must be {FORMAT!r}")
        if type(payload["version"]) is not int or payload["version"] != VERSION:
            raise ValueError(f"grouped scores: unsupported version {payload['version']!r}")
        if type(payload["n_bins"]) is not int or payload["n_bins"] != N_BINS:
            raise ValueError(f"grouped scores: n_bins must be {N_BINS}")
        if not _is_number(payload["bin_width"]) or float(payload["bin_width"]) != BIN_WIDTH:
            raise ValueError(f"grouped scores: bin_width must be {BIN_WIDTH}")
        if center is None:  # the sites chose it from public inputs: on the grid, in range
            if (not _is_number(payload["center"]) or abs(float(payload["center"])) > MAX_CENTER
                    or snap_center(float(payload["center"])) != float(payload["center"])):
                raise ValueError(f"grouped scores: center must be a multiple of {CENTER_STEP} "
                                 f"within +-{MAX_CENTER:g}")
            center = float(payload["center"])
        elif not _is_number(payload["center"]) or float(payload["center"]) != float(center):
            raise ValueError(f"grouped scores: center must be {center}")
        sd = payload["noise_sd"]
        if not _is_number(sd) or not 0 <= float(sd) <= MAX_NOISE_SD:
            raise ValueError(f"grouped scores: noise_sd must be a number in 0..{MAX_NOISE_SD:g}")
        groups = payload["groups"]
        if not isinstance(groups, dict):
            raise ValueError("grouped scores: groups must be an object")
        if len(groups) > MAX_GROUPS:
            raise ValueError(f"grouped scores: more than {MAX_GROUPS} groups")
        parsed = {name: _group_from_obj(name, obj, float(sd) ** 2)
                  for name, obj in groups.items()}
        return cls(parsed, float(center), float(sd))


# --- metrics from (noisy) histograms -------------------------------------------------------


def auroc_from_hist(hist_case: np.ndarray, hist_control: np.ndarray) -> float:
    """AUROC (Mann-Whitney U / (cases * controls)); a case and control in one bin count 1/2.

    Computed on the counts as released, negative noise included: the statistic is bilinear in
    the two histograms, so independent zero-mean noise on them leaves its numerator unbiased
    (clipping negative bins first would bias it towards 0.5). Clipped to [0, 1]; NaN when the
    (noisy) number of cases or controls is not positive.
    """
    v10, _, n1, n0 = _placements(hist_case, hist_control)
    if n1 <= 0 or n0 <= 0:
        return math.nan
    auc = float(np.dot(np.asarray(hist_case, dtype=np.float64), v10) / n1)
    return min(1.0, max(0.0, auc))


def auroc_ci(
    hist_case: np.ndarray, hist_control: np.ndarray, level: float = 0.95, noise_var: float = 0.0
) -> tuple[float, float]:
    """Confidence interval for the AUROC: DeLong's sampling variance plus the DP noise's.

    DeLong's variance needs only each case's placement value (fraction of controls it
    outranks, ties 1/2) and each control's (fraction of cases outranking it); everyone in a bin
    shares one, so the per-person sums are bin-weighted sums (on the histograms with negative
    noise clipped to 0). The noise's variance is the delta method on the bilinear estimator:
    sum over bins of (dAUROC / dcount)^2 * noise_var. Normal interval clipped to [0, 1], as in
    pROC; NaN with fewer than 2 of a class.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    hc = np.clip(np.asarray(hist_case, dtype=np.float64), 0, None)
    h0 = np.clip(np.asarray(hist_control, dtype=np.float64), 0, None)
    v10, v01, n1, n0 = _placements(hc, h0)
    if n1 < 2 or n0 < 2:
        return (math.nan, math.nan)
    auc = auroc_from_hist(hist_case, hist_control)
    if math.isnan(auc):
        return (math.nan, math.nan)
    s10 = float(np.dot(hc, (v10 - auc) ** 2) / (n1 - 1))
    s01 = float(np.dot(h0, (v01 - auc) ** 2) / (n0 - 1))
    var = s10 / n1 + s01 / n0 + noise_var * _noise_gradient_sq(hc, h0, auc)
    half = float(ndtri(0.5 + level / 2)) * math.sqrt(var)  # normal quantile
    return (max(0.0, auc - half), min(1.0, auc + half))


def _noise_gradient_sq(hc: np.ndarray, h0: np.ndarray, auc: float) -> float:
    """Sum of squared derivatives of U / (n1 n0) with respect to every bin count."""
    n1, n0 = hc.sum(), h0.sum()
    below = np.cumsum(h0) - h0 + 0.5 * h0  # V_i: controls ranked below a case in bin i
    above = hc.sum() - np.cumsum(hc) + 0.5 * hc  # W_j: cases ranked above a control in bin j
    d_case = (below - auc * n0) / (n1 * n0)
    d_control = (above - auc * n1) / (n1 * n0)
    return float(np.sum(d_case**2) + np.sum(d_control**2))


def _placements(
    hist_case: np.ndarray, hist_control: np.ndarray
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-bin DeLong placement values of cases (``v10``) and controls (``v01``)."""
    hc = np.asarray(hist_case, dtype=np.float64)
    h0 = np.asarray(hist_control, dtype=np.float64)
    n1, n0 = float(hc.sum()), float(h0.sum())
    controls_below = np.cumsum(h0) - h0
    cases_above = n1 - np.cumsum(hc)
    v10 = (controls_below + 0.5 * h0) / (n0 if n0 > 0 else 1.0)
    v01 = (cases_above + 0.5 * hc) / (n1 if n1 > 0 else 1.0)
    return v10, v01, n1, n0


def auprc_from_hist(hist_case: np.ndarray, hist_control: np.ndarray) -> float:
    """Step-wise average precision, one threshold per bin (sklearn's definition, binned; noisy
    bins clipped at 0). The trapezoidal PR area is optimistic, which is why the step form."""
    hc = np.clip(np.asarray(hist_case, dtype=np.float64), 0, None)[::-1]
    h0 = np.clip(np.asarray(hist_control, dtype=np.float64), 0, None)[::-1]
    n1 = hc.sum()
    if n1 <= 0:
        return math.nan
    tp, flagged = np.cumsum(hc), np.cumsum(hc + h0)
    precision = np.divide(tp, flagged, out=np.zeros_like(tp), where=flagged > 0)
    return float(np.dot(hc, precision) / n1)


CALIBRATION_NOISE_SDS = 3.0


def _fit_bins(stats: GroupStats, center: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(representative logit, cases, people) of the bins a calibration fit may use.

    On DP-noised histograms a bin whose noisy total is within CALIBRATION_NOISE_SDS standard
    deviations of its noise is left out: there the clipped zero-mean noise adds about equal
    case and control mass where there are hardly any people, which flattens the fitted slope
    (measured in the lab notebook's "worth joining? The baselines" entry).
    """
    cases = np.clip(stats.hist_case, 0, None)
    counts = cases + np.clip(stats.hist_control, 0, None)
    floor = CALIBRATION_NOISE_SDS * math.sqrt(2 * stats.noise_var)  # total = case + control
    idx = np.flatnonzero(counts > floor)
    return bin_logits(center)[idx], cases[idx], counts[idx]


def calibration_fit(stats: GroupStats, center: float = 0.0) -> tuple[float, float]:
    """(intercept, slope) of the logistic recalibration ``logit P(y) = a + b * logit(p)``.

    Cox's calibration: slope < 1 means over-confident predictions, intercept != 0 a shifted
    baseline risk. Fitted by Newton-Raphson on per-bin (representative logit, cases, people)
    triples, leaving out bins lost in the DP noise (`_fit_bins`). NaN when the fit does not
    exist (fewer than two usable bins, separation).
    """
    x, cases, counts = _fit_bins(stats, center)
    if x.size < 2:
        return (math.nan, math.nan)
    beta = _newton_logistic(np.column_stack([np.ones_like(x), x]), cases, counts)
    return (float(beta[0]), float(beta[1]))


# Closed testing of the recalibration (`recalibration_fit`): chi-square critical values at 5%.
RECALIBRATION_CHI2_1DF = 3.841
RECALIBRATION_CHI2_2DF = 5.991


def recalibration_fit(stats: GroupStats, center: float = 0.0) -> dict[str, Any]:
    """The recalibration a site should apply: the simplest update the statistics support.

    Vergouwe et al.'s closed testing procedure (Stat Med 2017;36:4529): keep the model
    (``"none"``: intercept 0, slope 1) unless the intercept-and-slope update fits significantly
    better (likelihood ratio, 2 df, 5%); then update the intercept only (``"intercept"``, slope
    1) unless the slope also differs significantly from 1 (1 df, 5%), else both
    (``"logistic"``, Cox's fit). The likelihood ratios are divided by the quasi-binomial
    dispersion (Pearson's chi-square of Cox's fit per residual degree of freedom, at least 1):
    DP noise makes the released counts vary more than binomially, and an untested likelihood
    would read that noise as miscalibration. A small group's fitted slope is mostly noise,
    sampling and DP alike; estimating it anyway spends that noise on every person the fit is
    applied to (lab notebook, "calibrated risk, attempt 3"). ``update`` is None (and the numbers
    NaN) when no usable bin remains.
    """
    none: dict[str, Any] = {"update": None, "intercept": math.nan, "slope": math.nan}
    x, cases, counts = _fit_bins(stats, center)
    if x.size < 1:
        return none

    shift = _newton_logistic(np.ones((x.size, 1)), cases, counts, offset=x)
    full = (_newton_logistic(np.column_stack([np.ones_like(x), x]), cases, counts)
            if x.size >= 2 else np.array([math.nan, math.nan]))
    ll_none = -_binomial_nll(x, cases, counts)
    ll_shift = (-_binomial_nll(x + shift[0], cases, counts) if np.isfinite(shift).all()
                else -math.inf)
    ll_full = (-_binomial_nll(full[0] + full[1] * x, cases, counts) if np.isfinite(full).all()
               else -math.inf)
    if max(ll_shift, ll_full) == -math.inf:
        return none
    phi = 1.0  # quasi-binomial dispersion: DP noise makes the counts vary more than binomial
    if np.isfinite(full).all() and x.size > 2:
        mu = expit(full[0] + full[1] * x)
        pearson = (cases - counts * mu) ** 2 / np.maximum(counts * mu * (1 - mu), 1e-12)
        phi = max(1.0, float(pearson.sum()) / (x.size - 2))
    if 2 * (max(ll_full, ll_shift) - ll_none) / phi < RECALIBRATION_CHI2_2DF:
        return {"update": "none", "intercept": 0.0, "slope": 1.0}
    if ll_full == -math.inf or 2 * (ll_full - ll_shift) / phi < RECALIBRATION_CHI2_1DF:
        return {"update": "intercept", "intercept": float(shift[0]), "slope": 1.0}
    return {"update": "logistic", "intercept": float(full[0]), "slope": float(full[1])}


def _binomial_nll(eta: np.ndarray, cases: np.ndarray, counts: np.ndarray) -> float:
    """Negative binomial log-likelihood of (cases, counts) at logits ``eta``."""
    return float(-(cases * log_expit(eta) + (counts - cases) * log_expit(-eta)).sum())


def _newton_logistic(design: np.ndarray, cases: np.ndarray, counts: np.ndarray,
                     offset: np.ndarray | None = None) -> np.ndarray:
    """Binomial-logit MLE (``logit P = offset + design @ beta``) by Newton-Raphson with step
    halving, from intercept 0 and slope 1 (the model as it is); NaNs if it does not converge
    (separation)."""
    offset = np.zeros(len(design)) if offset is None else offset

    def nll(beta: np.ndarray) -> float:
        return _binomial_nll(offset + design @ beta, cases, counts)

    start = np.zeros(design.shape[1])
    if design.shape[1] > 1:
        start[1] = 1.0
    beta, current = start, nll(start)
    for _ in range(100):
        mu = expit(offset + design @ beta)
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
    return np.full(design.shape[1], math.nan)


def brier_score(stats: GroupStats, center: float = 0.0) -> float:
    """Mean (p - y)^2 with each person's p its bin's representative probability."""
    cases = np.clip(stats.hist_case, 0, None)
    controls = np.clip(stats.hist_control, 0, None)
    n = float(cases.sum() + controls.sum())
    if n <= 0:
        return math.nan
    p = expit(bin_logits(center))
    return float((np.dot(cases, (1 - p) ** 2) + np.dot(controls, p**2)) / n)


def expected_calibration_error(stats: GroupStats, center: float = 0.0) -> float:
    """Count-weighted mean |bin's representative probability - observed rate| over the bins."""
    cases = np.clip(stats.hist_case, 0, None)
    counts = cases + np.clip(stats.hist_control, 0, None)
    n = float(counts.sum())
    if n <= 0:
        return math.nan
    return float(np.abs(counts * expit(bin_logits(center)) - cases).sum() / n)


def calibration_curve(
    stats: GroupStats, min_count: float = 1, center: float = 0.0
) -> list[list[float]]:
    """``[[predicted, observed_rate, count], ...]`` per bin with >= min_count (noisy) people.

    Bins below ``min_count`` are omitted, not only empty ones: a bin's count and rate are a
    small cell just like a group's.
    """
    cases = np.clip(stats.hist_case, 0, None)
    counts = cases + np.clip(stats.hist_control, 0, None)
    p = expit(bin_logits(center))
    keep = np.flatnonzero((counts >= max(min_count, 1)) & (counts > 0))
    return [[float(p[b]), float(min(1.0, cases[b] / counts[b])), int(round(counts[b]))]
            for b in keep]


def threshold_metrics(
    stats: GroupStats, threshold: float, center: float = 0.0
) -> dict[str, float]:
    """Sensitivity, specificity and PPV calling ``p >= threshold`` positive, the threshold
    rounded to the nearest bin edge (p = 0.5 is an edge when the bins are centred at 0)."""
    edges = bin_edges(center)
    cut = int(np.argmin(np.abs(edges - logit(threshold)))) + 1
    cases = np.clip(stats.hist_case, 0, None)
    controls = np.clip(stats.hist_control, 0, None)
    tp, fp = float(cases[cut:].sum()), float(controls[cut:].sum())
    n1, n0 = float(cases.sum()), float(controls.sum())
    return {
        "sensitivity": tp / n1 if n1 > 0 else math.nan,
        "specificity": (n0 - fp) / n0 if n0 > 0 else math.nan,
        "ppv": tp / (tp + fp) if tp + fp > 0 else math.nan,
    }


def group_metrics(
    stats: GroupStats, threshold: float = 0.5, min_cell: float = 1, center: float = 0.0
) -> dict[str, Any]:
    """All per-group metrics of `MetricFrame`, unsuppressed (callers decide suppression)."""
    intercept, slope = calibration_fit(stats, center)
    return {
        "n": int(round(max(stats.n, 0.0))),
        "cases": int(round(max(stats.cases, 0.0))),
        "noise_sd": math.sqrt(stats.noise_var),
        "auroc": auroc_from_hist(stats.hist_case, stats.hist_control),
        "auroc_ci": list(auroc_ci(stats.hist_case, stats.hist_control,
                                  noise_var=stats.noise_var)),
        "auprc": auprc_from_hist(stats.hist_case, stats.hist_control),
        "brier": brier_score(stats, center),
        "calibration_slope": slope,
        "calibration_intercept": intercept,
        "recalibration": recalibration_fit(stats, center),
        "ece": expected_calibration_error(stats, center),
        **threshold_metrics(stats, threshold, center),
        "calibration_curve": calibration_curve(stats, min_count=min_cell, center=center),
    }


def is_small_cell(stats: GroupStats, k: float) -> bool:
    """True when a group's (noisy) count of people, cases or controls is below ``k``."""
    return min(stats.n, stats.cases, stats.controls) < k


@dataclass
class MetricFrame:
    """Pooled per-group metrics with small-cell suppression and disparity summaries.

    Like fairlearn's MetricFrame (overall, by_group, difference, ratio), but built from
    mergeable, DP-noised federated statistics, which MetricFrame cannot consume.
    """

    k: int
    threshold: float
    reference: str | None
    overall: dict[str, Any]
    by_group: dict[str, dict[str, Any]]
    difference: dict[str, float | None]
    ratio: dict[str, float | None]
    vs_reference: dict[str, dict[str, float | None]]
    dp: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_scores(
        cls,
        scores: GroupedScores,
        k: int = 10,
        threshold: float = 0.5,
        reference: str | None = None,
    ) -> MetricFrame:
        """Compute the report; groups below ``k`` (noisy) people, cases or controls are
        suppressed. ``overall`` pools only the shown groups, so it cannot be differenced
        against them to recover a suppressed group; the all-groups total is never computed.
        """
        k = _positive_int(k, "k")
        threshold = _probability(threshold, "threshold")
        center = scores.center
        shown = {name: stats for name, stats in sorted(scores.groups.items())
                 if not is_small_cell(stats, k)}
        by_group = {
            name: group_metrics(shown[name], threshold, k, center) if name in shown
            else {"suppressed": True}
            for name in sorted(scores.groups)
        }
        if shown:
            overall: dict[str, Any] = group_metrics(_merge_all(shown.values()), threshold, k,
                                                    center)
        else:
            overall = {"suppressed": True}
        metrics = {name: by_group[name] for name in shown}
        difference, ratio = _disparities(metrics)
        dp = {"mechanism": "gaussian", "n_bins": N_BINS, "bin_width": BIN_WIDTH,
              "center": center,
              "note": "from the sites' DP-noised histograms; intervals include the noise"}
        return cls(k=k, threshold=threshold, reference=reference, overall=overall,
                   by_group=by_group, difference=difference, ratio=ratio,
                   vs_reference=_vs_reference(metrics, reference), dp=dp)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready report (NaN becomes ``None``, as strict JSON has no NaN)."""
        return _json_ready({
            "k": self.k,
            "threshold": self.threshold,
            "reference": self.reference,
            "overall": self.overall,
            "by_group": self.by_group,
            "difference": self.difference,
            "ratio": self.ratio,
            "vs_reference": self.vs_reference,
            "dp": self.dp,
        })


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


def _counts(values: object, where: str) -> np.ndarray:
    if not isinstance(values, list) or len(values) != N_BINS:
        raise ValueError(f"{where} must be a list of {N_BINS} numbers")
    if not all(_is_number(v) and abs(float(v)) <= MAX_COUNT for v in values):
        raise ValueError(f"{where} must hold finite numbers within +-{MAX_COUNT:g}")
    return np.array(values, dtype=np.float64)


def _group_from_obj(name: str, obj: object, noise_var: float) -> GroupStats:
    if not isinstance(name, str) or not 0 < len(name) <= MAX_GROUP_NAME:
        raise ValueError(f"grouped scores: group name must be 1..{MAX_GROUP_NAME} characters")
    where = f"grouped scores: group {name!r}"
    _expect_keys(obj, _GROUP_KEYS, where)
    assert isinstance(obj, dict)
    return GroupStats(_counts(obj["case"], f"{where}: case"),
                      _counts(obj["control"], f"{where}: control"), noise_var)
