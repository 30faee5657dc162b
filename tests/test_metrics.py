"""Federated per-ancestry metrics: pooled-from-histograms must equal pooled-from-people."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from scipy.special import expit
from scipy.stats import norm, rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from shared.metrics import (
    DISPARITY_METRICS,
    N_BINS,
    GroupedScores,
    GroupStats,
    MetricFrame,
    auroc_ci,
    auroc_from_hist,
    calibration_fit,
    expected_calibration_error,
    logit_to_bin,
)

GROUP_SIGNAL = {"AFR": 0.6, "EAS": 1.0, "EUR": 1.6}


def synthetic_cohort(
    n: int, seed: int, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and ancestry with a group-dependent signal strength.

    Labels are drawn from the sigmoid of the true risk; the reported logits are that risk
    (calibrated) or three times it (over-confident).
    """
    rng = np.random.default_rng(seed)
    groups = rng.choice(list(GROUP_SIGNAL), size=n, p=[0.25, 0.25, 0.5])
    scale = np.vectorize(GROUP_SIGNAL.get)(groups)
    risk = -0.8 + scale * rng.normal(size=n)
    labels = (rng.random(n) < expit(risk)).astype(np.int64)
    return (risk if calibrated else 3.0 * risk), labels, groups


def split_sites(n: int, n_sites: int, seed: int) -> list[np.ndarray]:
    site = np.random.default_rng(seed).integers(0, n_sites, size=n)
    return [np.flatnonzero(site == s) for s in range(n_sites)]


def assert_stats_equal(a: GroupStats, b: GroupStats) -> None:
    assert (a.n, a.cases) == (b.n, b.cases)
    np.testing.assert_array_equal(a.hist_case, b.hist_case)
    np.testing.assert_array_equal(a.hist_control, b.hist_control)
    np.testing.assert_allclose(a.sum_prob, b.sum_prob, rtol=1e-12, atol=1e-9)
    assert a.brier_sum == pytest.approx(b.brier_sum, rel=1e-12)


def assert_scores_equal(a: GroupedScores, b: GroupedScores) -> None:
    assert sorted(a.groups) == sorted(b.groups)
    for name in a.groups:
        assert_stats_equal(a.groups[name], b.groups[name])


def delong_unbinned(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Textbook DeLong (midrank placement values) on raw scores: (auc, variance)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    n1, n0 = len(pos), len(neg)
    all_ranks = rankdata(np.concatenate([pos, neg]))
    v10 = (all_ranks[:n1] - rankdata(pos)) / n0
    v01 = 1.0 - (all_ranks[n1:] - rankdata(neg)) / n1
    auc = v10.mean()
    return auc, v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0


def hist(bins: dict[int, int]) -> np.ndarray:
    out = np.zeros(N_BINS, dtype=np.int64)
    for b, c in bins.items():
        out[b] = c
    return out


# --- AUROC / DeLong ----------------------------------------------------------------------------


def test_auroc_analytic_cases() -> None:
    assert auroc_from_hist(hist({10: 3}), hist({5: 4})) == 1.0
    assert auroc_from_hist(hist({5: 3}), hist({10: 4})) == 0.0
    assert auroc_from_hist(hist({7: 3}), hist({7: 4})) == 0.5  # all tied: half credit
    # cases at 2, 5; controls at 1, 5: pairs 1 + 0 + 1 + 1/2 over 4
    assert auroc_from_hist(hist({2: 1, 5: 1}), hist({1: 1, 5: 1})) == pytest.approx(0.625)
    assert math.isnan(auroc_from_hist(hist({}), hist({1: 2})))


def test_logit_binning_edges() -> None:
    bins = logit_to_bin(np.array([-np.inf, -50.0, -10.0, 0.0, 9.9999, 10.0, 50.0, np.inf]))
    assert bins.tolist() == [0, 0, 0, N_BINS // 2, N_BINS - 1, N_BINS - 1, N_BINS - 1, N_BINS - 1]


def test_merged_auroc_across_three_sites_matches_pooled_sklearn() -> None:
    logits, labels, groups = synthetic_cohort(6000, seed=1)
    payloads = [
        GroupedScores.from_predictions(logits[i], labels[i], groups[i]).to_json(min_count=1)
        for i in split_sites(len(logits), 3, seed=2)
    ]
    pooled = sum(GroupedScores.from_json(p) for p in payloads)
    frame = MetricFrame.from_scores(pooled, k=10).to_dict()
    for name in GROUP_SIGNAL:
        mask = groups == name
        got = frame["by_group"][name]
        assert got["n"] == mask.sum() and got["cases"] == labels[mask].sum()
        assert got["auroc"] == pytest.approx(roc_auc_score(labels[mask], logits[mask]), abs=0.005)
        ap = average_precision_score(labels[mask], logits[mask])
        assert got["auprc"] == pytest.approx(ap, abs=0.005)
        brier = brier_score_loss(labels[mask], expit(logits[mask]))
        assert got["brier"] == pytest.approx(brier, rel=1e-9)
    assert frame["overall"]["auroc"] == pytest.approx(roc_auc_score(labels, logits), abs=0.005)
    # The groups really differ, so a per-group report is meaningful.
    assert frame["by_group"]["EUR"]["auroc"] - frame["by_group"]["AFR"]["auroc"] > 0.1


def test_averaging_site_aurocs_would_be_wrong_but_merging_is_right() -> None:
    rng = np.random.default_rng(3)
    # Two sites whose score scales differ: each site ranks well internally, pooled ranks worse.
    a = rng.normal(size=2000) + 2.0 * (lab_a := rng.integers(0, 2, 2000))
    b = rng.normal(size=2000) + 4.0 + 2.0 * (lab_b := rng.integers(0, 2, 2000))
    groups = np.array(["X"] * 2000)
    merged = GroupedScores.from_predictions(a, lab_a, groups) + GroupedScores.from_predictions(
        b, lab_b, groups
    )
    pooled_truth = roc_auc_score(np.r_[lab_a, lab_b], np.r_[a, b])
    mean_of_sites = (roc_auc_score(lab_a, a) + roc_auc_score(lab_b, b)) / 2
    got = auroc_from_hist(merged.groups["X"].hist_case, merged.groups["X"].hist_control)
    assert got == pytest.approx(pooled_truth, abs=0.005)
    assert abs(mean_of_sites - pooled_truth) > 0.05


def test_delong_matches_unbinned_delong() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 2, 3000)
    scores = rng.normal(size=3000) + 0.8 * labels
    stats = GroupedScores.from_predictions(scores, labels, np.array(["g"] * 3000)).groups["g"]
    auc, var = delong_unbinned(scores, labels)
    half = norm.ppf(0.975) * math.sqrt(var)
    lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
    assert lo == pytest.approx(auc - half, abs=5e-4)
    assert hi == pytest.approx(auc + half, abs=5e-4)
    assert (hi - lo) == pytest.approx(2 * half, rel=0.01)


def test_delong_interval_covers_truth_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(5)
    shift = 1.0
    truth = norm.cdf(shift / math.sqrt(2))  # binormal AUROC
    covered, reps = 0, 200
    for _ in range(reps):
        labels = rng.integers(0, 2, 300)
        scores = rng.normal(size=300) + shift * labels
        stats = GroupedScores.from_predictions(scores, labels, np.full(300, "0")).groups["0"]
        lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
        covered += lo <= truth <= hi
    assert covered / reps >= 0.90

    widths = []
    for n in (400, 4000):
        labels = rng.integers(0, 2, n)
        scores = rng.normal(size=n) + shift * labels
        stats = GroupedScores.from_predictions(scores, labels, np.full(n, "0")).groups["0"]
        lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(10) expected


def test_auroc_ci_degenerate() -> None:
    assert all(math.isnan(v) for v in auroc_ci(hist({3: 1}), hist({1: 5})))
    lo, hi = auroc_ci(hist({3: 5}), hist({1: 5}))  # perfect separation: zero variance
    assert lo == hi == 1.0
    with pytest.raises(ValueError):
        auroc_ci(hist({3: 5}), hist({1: 5}), level=1.0)


# --- merging ---------------------------------------------------------------------------------


def test_merge_is_associative_commutative_and_equals_concatenation() -> None:
    logits, labels, groups = synthetic_cohort(3000, seed=6)
    parts = [
        GroupedScores.from_predictions(logits[i], labels[i], groups[i])
        for i in split_sites(3000, 3, seed=7)
    ]
    a, b, c = parts
    whole = GroupedScores.from_predictions(logits, labels, groups)
    assert_scores_equal((a + b) + c, a + (b + c))
    assert_scores_equal(a + b, b + a)
    assert_scores_equal(a.merge(b).merge(c), whole)
    assert_scores_equal(sum(parts), whole)


def test_merge_keeps_groups_present_at_only_one_site() -> None:
    a = GroupedScores.from_predictions(np.zeros(3), np.array([0, 1, 0]), np.array(["A"] * 3))
    b = GroupedScores.from_predictions(np.zeros(2), np.array([1, 1]), np.array(["B"] * 2))
    merged = a + b
    assert sorted(merged.groups) == ["A", "B"]
    assert merged.groups["B"].cases == 2


def test_from_predictions_validates_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        GroupedScores.from_predictions(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="0 or 1"):
        GroupedScores.from_predictions(np.zeros(2), np.array([0, 2]), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        GroupedScores.from_predictions(np.array([np.nan]), np.array([1]), np.zeros(1))
    assert GroupedScores.from_predictions(np.zeros(0), np.zeros(0), np.zeros(0)).groups == {}


# --- JSON ------------------------------------------------------------------------------------


def site_payload(seed: int = 8, n: int = 400) -> dict:
    logits, labels, groups = synthetic_cohort(n, seed=seed)
    return json.loads(GroupedScores.from_predictions(logits, labels, groups).to_json(1))


def test_json_round_trip_is_exact() -> None:
    logits, labels, groups = synthetic_cohort(1500, seed=9)
    scores = GroupedScores.from_predictions(logits, labels, groups)
    back = GroupedScores.from_json(scores.to_json(min_count=1))
    assert_scores_equal(scores, back)
    assert back.groups["EUR"].brier_sum == scores.groups["EUR"].brier_sum  # repr round-trips


def test_to_json_withholds_small_groups() -> None:
    logits, labels, groups = synthetic_cohort(600, seed=10)
    groups = groups.copy()
    groups[:4] = "OCE"  # a 4-person group at this site
    scores = GroupedScores.from_predictions(logits, labels, groups)
    text = scores.to_json(min_count=5)
    assert "OCE" not in text
    assert sorted(json.loads(text)["groups"]) == sorted(GROUP_SIGNAL)
    assert scores.withheld(5) == ["OCE"]
    assert "OCE" in json.loads(scores.to_json(min_count=4))["groups"]
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="min_count"):
            scores.to_json(min_count=bad)  # type: ignore[arg-type]


VALID = site_payload()


def mutate(path: tuple, change: object) -> str:
    """JSON of a valid payload with the value at ``path`` replaced (callable: computed from it)."""
    payload = copy.deepcopy(VALID)
    target = payload
    for key in path[:-1]:
        target = target[key]
    if change is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = change(target.get(path[-1])) if callable(change) else change
    return json.dumps(payload)


def eur(field: str, change: object) -> str:
    return mutate(("groups", "EUR", field), change)


BAD_PAYLOADS = {
    "not json": "{not json",
    "not an object": "[1, 2]",
    "nan constant": '{"x": NaN}',
    "pickle bytes": b"\x80\x04\x95",
    "duplicate key": '{"format": 1, "format": 2}',
    "extra top key": mutate(("extra",), 1),
    "missing top key": mutate(("version",), KeyError),
    "wrong format": mutate(("format",), "pickle"),
    "wrong version": mutate(("version",), 2),
    "wrong n_bins": mutate(("n_bins",), 100),
    "wrong logit range": mutate(("logit_range",), [-5.0, 5.0]),
    "groups not object": mutate(("groups",), []),
    "empty group name": mutate(("groups", ""), VALID["groups"]["EUR"]),
    "group not object": mutate(("groups", "EUR"), [1, 2]),
    "missing group key": eur("brier_sum", KeyError),
    "extra group key": eur("ids", [1, 2]),
    "negative count": eur("case", lambda v: [-1, *v[1:]]),
    "float count": eur("n", float),
    "bool count": eur("cases", lambda v: True),
    "string count": eur("n", str),
    "huge count": eur("n", 10**30),
    "inconsistent n": eur("n", lambda v: v + 1),
    "inconsistent cases": eur("cases", lambda v: v - 1),
    "cases above n": eur("cases", lambda v: 10**6),
    "short case list": eur("case", lambda v: v[:-1]),
    "short sum_prob": eur("sum_prob", lambda v: v[1:]),
    "bin out of range": eur("bins", lambda v: [*v[:-1], N_BINS]),
    "unsorted bins": eur("bins", lambda v: v[::-1]),
    "empty listed bin": eur("control", lambda v: [0] * len(v)),
    "sum_prob too big": eur("sum_prob", lambda v: [1e6] * len(v)),
    "sum_prob string": eur("sum_prob", lambda v: ["0.5"] * len(v)),
    "brier too big": eur("brier_sum", 1e9),
    "brier negative": eur("brier_sum", -1.0),
    "brier string": eur("brier_sum", "0.1"),
    "zero n": mutate(
        ("groups", "EUR"),
        {
            "n": 0,
            "cases": 0,
            "brier_sum": 0.0,
            "bins": [],
            "case": [],
            "control": [],
            "sum_prob": [],
        },
    ),  # fmt: skip
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_from_json_rejects_malformed(name: str) -> None:
    with pytest.raises(ValueError, match="grouped scores"):
        GroupedScores.from_json(BAD_PAYLOADS[name])  # type: ignore[arg-type]


def test_from_json_accepts_scores_on_bin_edges_and_extremes() -> None:
    # Consistency checks must tolerate float rounding for logits sitting exactly on bin edges.
    edges = np.linspace(-10.0, 10.0, N_BINS + 1)
    logits = np.r_[edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf)]
    logits = np.r_[logits, -1e300, 1e300, -np.inf, np.inf]
    labels = np.random.default_rng(17).integers(0, 2, len(logits))
    scores = GroupedScores.from_predictions(logits, labels, np.full(len(logits), "g"))
    assert_scores_equal(GroupedScores.from_json(scores.to_json(1)), scores)


def test_from_json_rejects_non_text() -> None:
    with pytest.raises(ValueError):
        GroupedScores.from_json(None)  # type: ignore[arg-type]


def test_from_json_accepts_valid_payload_variants() -> None:
    GroupedScores.from_json(json.dumps(site_payload()))
    GroupedScores.from_json(json.dumps(site_payload()).encode())
    empty = json.loads(GroupedScores().to_json(1))
    assert GroupedScores.from_json(json.dumps(empty)).groups == {}


# --- calibration -----------------------------------------------------------------------------


def single_group(logits: np.ndarray, labels: np.ndarray) -> GroupStats:
    return GroupedScores.from_predictions(logits, labels, np.full(len(logits), "0")).groups["0"]


def test_calibration_slope_and_intercept_calibrated_vs_overconfident() -> None:
    rng = np.random.default_rng(11)
    risk = rng.normal(-0.5, 1.5, 20000)
    labels = (rng.random(20000) < expit(risk)).astype(int)
    intercept, slope = calibration_fit(single_group(risk, labels))
    assert slope == pytest.approx(1.0, abs=0.07)
    assert intercept == pytest.approx(0.0, abs=0.07)
    # Same fit as an unpenalised per-person logistic regression on the raw logits.
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(risk[:, None], labels)
    assert slope == pytest.approx(ref.coef_[0, 0], abs=1e-3)
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-3)

    _, over_slope = calibration_fit(single_group(3.0 * risk, labels))
    assert over_slope == pytest.approx(1 / 3, abs=0.03)


def test_calibration_fit_undefined_for_separated_or_single_bin() -> None:
    labels = np.r_[[0] * 10, [1] * 10]
    one_bin = single_group(np.zeros(20), labels)
    assert all(math.isnan(v) for v in calibration_fit(one_bin))
    separated = single_group(np.r_[np.full(10, -1.0), np.full(10, 1.0)], labels)
    assert all(math.isnan(v) for v in calibration_fit(separated))
    # Huge logits clipped into the edge bins must not break the fit.
    clipped = single_group(np.r_[-40.0, 40.0, 0.0, 0.1], np.r_[0, 1, 1, 0])
    assert not math.isnan(calibration_fit(clipped)[1])


def test_ece_small_when_calibrated_larger_when_not() -> None:
    rng = np.random.default_rng(12)
    risk = rng.normal(-0.5, 1.5, 20000)
    labels = (rng.random(20000) < expit(risk)).astype(int)
    calibrated = expected_calibration_error(single_group(risk, labels))
    over = expected_calibration_error(single_group(3.0 * risk, labels))
    shifted = expected_calibration_error(single_group(risk + 1.0, labels))
    assert calibrated < 0.02
    assert over > 0.08 and shifted > 0.08
    # Matches the direct 10-bin ECE on raw probabilities.
    p = expit(risk)
    b = np.minimum((p * 10).astype(int), 9)
    direct = sum(abs(p[b == i].sum() - labels[b == i].sum()) for i in range(10)) / len(p)
    assert calibrated == pytest.approx(direct, abs=0.002)


def test_calibration_curve_and_threshold_metrics_match_direct() -> None:
    logits, labels, groups = synthetic_cohort(5000, seed=13)
    frame = MetricFrame.from_scores(
        GroupedScores.from_predictions(logits, labels, groups), k=10, threshold=0.3
    )
    got = frame.by_group["EUR"]
    mask = groups == "EUR"
    pred = expit(logits[mask]) >= 0.3
    y = labels[mask] == 1
    assert got["sensitivity"] == pytest.approx((pred & y).sum() / y.sum(), abs=0.005)
    assert got["specificity"] == pytest.approx((~pred & ~y).sum() / (~y).sum(), abs=0.005)
    assert got["ppv"] == pytest.approx((pred & y).sum() / pred.sum(), abs=0.005)
    curve = got["calibration_curve"]
    assert 1 <= len(curve) <= 10
    assert sum(c[2] for c in curve) <= mask.sum()
    assert all(c[2] >= 10 for c in curve)  # small bins suppressed too
    assert all(abs(pred_ - obs) < 0.15 for pred_, obs, _ in curve)
    assert [c[0] for c in curve] == sorted(c[0] for c in curve)


# --- MetricFrame, suppression, disparities ----------------------------------------------------


def cohort_with_small_group(small_n: int, small_cases: int, seed: int = 14) -> GroupedScores:
    logits, labels, groups = synthetic_cohort(4000, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tiny_logits = rng.normal(size=small_n)
    tiny_labels = np.r_[np.ones(small_cases), np.zeros(small_n - small_cases)].astype(int)
    return GroupedScores.from_predictions(
        np.r_[logits, tiny_logits], np.r_[labels, tiny_labels], np.r_[groups, ["OCE"] * small_n]
    )


@pytest.mark.parametrize(("small_n", "small_cases"), [(5, 2), (200, 5), (200, 195)])
def test_small_group_is_exactly_suppressed_and_not_recoverable(
    small_n: int, small_cases: int
) -> None:
    scores = cohort_with_small_group(small_n, small_cases)
    report = MetricFrame.from_scores(scores, k=10).to_dict()
    assert report["by_group"]["OCE"] == {"suppressed": True}
    shown = [g for g in report["by_group"] if g != "OCE"]
    assert report["overall"]["n"] == sum(report["by_group"][g]["n"] for g in shown)
    assert report["overall"]["cases"] == sum(report["by_group"][g]["cases"] for g in shown)
    # Overall is identical to a report in which the small group never existed.
    without = GroupedScores({g: s for g, s in scores.groups.items() if g != "OCE"})
    assert report["overall"] == MetricFrame.from_scores(without, k=10).to_dict()["overall"]
    assert "OCE" not in json.dumps({k: v for k, v in report.items() if k != "by_group"})


def test_unsuppressed_at_lower_k() -> None:
    report = MetricFrame.from_scores(cohort_with_small_group(200, 5), k=5).to_dict()
    assert report["by_group"]["OCE"]["cases"] == 5


def test_everything_suppressed() -> None:
    scores = GroupedScores.from_predictions(np.zeros(6), np.r_[0, 1, 0, 1, 0, 1], np.full(6, "0"))
    report = MetricFrame.from_scores(scores, k=10).to_dict()
    assert report["overall"] == {"suppressed": True}
    assert report["by_group"] == {"0": {"suppressed": True}}
    assert report["difference"] == {} and report["ratio"] == {}


@pytest.mark.parametrize("k", [0, -3, 1.5, True])
def test_k_must_be_positive_int(k: object) -> None:
    with pytest.raises(ValueError, match="k"):
        MetricFrame.from_scores(GroupedScores(), k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, "0.5", True])
def test_threshold_must_be_probability(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        MetricFrame.from_scores(GroupedScores(), threshold=threshold)  # type: ignore[arg-type]


def test_difference_ratio_and_reference() -> None:
    logits, labels, groups = synthetic_cohort(6000, seed=15)
    report = MetricFrame.from_scores(
        GroupedScores.from_predictions(logits, labels, groups), reference="EUR"
    ).to_dict()
    by = report["by_group"]
    for metric in DISPARITY_METRICS:
        values = [by[g][metric] for g in GROUP_SIGNAL]
        assert report["difference"][metric] == pytest.approx(max(values) - min(values))
        assert report["ratio"][metric] == pytest.approx(min(values) / max(values))
    assert sorted(report["vs_reference"]) == ["AFR", "EAS"]
    assert report["vs_reference"]["AFR"]["auroc"] == pytest.approx(
        by["AFR"]["auroc"] - by["EUR"]["auroc"]
    )
    assert report["vs_reference"]["AFR"]["auroc"] < 0


def test_reference_suppressed_or_absent_gives_empty_comparison() -> None:
    scores = cohort_with_small_group(5, 2)
    assert MetricFrame.from_scores(scores, reference="OCE").to_dict()["vs_reference"] == {}
    assert MetricFrame.from_scores(scores, reference="SAS").to_dict()["vs_reference"] == {}


def test_to_dict_schema_is_strict_json() -> None:
    report = MetricFrame.from_scores(cohort_with_small_group(5, 2), k=10, threshold=0.4).to_dict()
    assert set(report) == {
        "k", "threshold", "reference", "overall", "by_group", "difference", "ratio",
        "vs_reference",
    }  # fmt: skip
    assert report["k"] == 10 and report["threshold"] == 0.4 and report["reference"] is None
    expected = {
        "n", "cases", "auroc", "auroc_ci", "auprc", "brier", "calibration_slope",
        "calibration_intercept", "ece", "sensitivity", "specificity", "ppv", "calibration_curve",
    }  # fmt: skip
    assert set(report["overall"]) == expected
    assert set(report["by_group"]["EUR"]) == expected
    lo, hi = report["by_group"]["EUR"]["auroc_ci"]
    assert lo < report["by_group"]["EUR"]["auroc"] < hi
    json.dumps(report, allow_nan=False)


def test_undefined_metric_becomes_null() -> None:
    # Nobody reaches p >= 0.99, so PPV is undefined (0/0) and must serialise as null.
    logits, labels, groups = synthetic_cohort(2000, seed=16)
    scores = GroupedScores.from_predictions(np.clip(logits, -3, 3), labels, groups)
    report = MetricFrame.from_scores(scores, threshold=0.99).to_dict()
    assert report["by_group"]["EUR"]["ppv"] is None
    assert report["difference"]["ppv"] is None and report["ratio"]["ppv"] is None
    json.dumps(report, allow_nan=False)
