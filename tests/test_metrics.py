"""Federated per-ancestry metrics from DP-noised, coarse score histograms.

What must hold: merging the sites' histograms is pooling their people (never averaging their
metrics); on exact histograms every metric is the per-person metric of the binned scores; once
noised, the AUROC estimator stays unbiased and its interval covers at its nominal level because
it carries the noise's variance; a payload holds noisy histograms and nothing else, and the
coordinator parses it strictly.
"""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
from scipy.special import expit, logit
from scipy.stats import norm, rankdata
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

from shared.metrics import (
    BIN_WIDTH,
    DISPARITY_METRICS,
    FORMAT,
    MAX_COUNT,
    MAX_GROUP_NAME,
    MAX_GROUPS,
    MAX_JSON_CHARS,
    MAX_NOISE_SD,
    N_BINS,
    VERSION,
    GroupedScores,
    GroupStats,
    MetricFrame,
    auprc_from_hist,
    auroc_ci,
    auroc_from_hist,
    bin_edges,
    bin_logits,
    brier_score,
    calibration_curve,
    calibration_fit,
    expected_calibration_error,
    is_small_cell,
    logit_to_bin,
    recalibration_fit,
    threshold_metrics,
)

GROUP_SIGNAL = {"AFR": 0.6, "EAS": 1.0, "EUR": 1.6}
Z95 = float(norm.ppf(0.975))


def synthetic_cohort(
    n: int, seed: int, calibrated: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, labels and ancestry with a group-dependent signal strength.

    Labels are drawn from the sigmoid of the true risk; the reported logits are that risk
    (calibrated) or twice it (over-confident). Nearly everyone falls inside the inner bins.
    """
    rng = np.random.default_rng(seed)
    groups = rng.choice(list(GROUP_SIGNAL), size=n, p=[0.25, 0.25, 0.5])
    scale = np.vectorize(GROUP_SIGNAL.get)(groups)
    risk = -0.8 + scale * rng.normal(size=n)
    labels = (rng.random(n) < expit(risk)).astype(np.int64)
    return (risk if calibrated else 2.0 * risk), labels, groups


def split_sites(n: int, n_sites: int, seed: int) -> list[np.ndarray]:
    site = np.random.default_rng(seed).integers(0, n_sites, size=n)
    return [np.flatnonzero(site == s) for s in range(n_sites)]


def single_group(logits: np.ndarray, labels: np.ndarray, center: float = 0.0) -> GroupStats:
    n = len(logits)
    return GroupedScores.from_predictions(logits, labels, np.full(n, "g"), center).groups["g"]


def binormal(n: int, shift: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Scores N(+-shift/2, 1) by class, classes 50/50."""
    labels = rng.integers(0, 2, n)
    return rng.normal(size=n) + shift * (labels - 0.5), labels


def binned_population_auroc(shift: float, center: float = 0.0) -> float:
    """AUROC of the binormal population after binning (ties within a bin count 1/2)."""
    edges = np.r_[-np.inf, bin_edges(center), np.inf]
    p_case = np.diff(norm.cdf(edges - shift / 2))
    p_control = np.diff(norm.cdf(edges + shift / 2))
    return float(np.dot(p_case, np.cumsum(p_control) - p_control / 2))


def clipped_auroc(stats: GroupStats) -> float:
    """The estimator the module does NOT use: negative noisy bins clipped to 0 first."""
    return auroc_from_hist(np.clip(stats.hist_case, 0, None), np.clip(stats.hist_control, 0, None))


def assert_stats_equal(a: GroupStats, b: GroupStats, exact: bool = True) -> None:
    if exact:
        np.testing.assert_array_equal(a.hist_case, b.hist_case)
        np.testing.assert_array_equal(a.hist_control, b.hist_control)
    else:  # float sums of noise: the order of additions moves the last bits
        np.testing.assert_allclose(a.hist_case, b.hist_case, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(a.hist_control, b.hist_control, rtol=1e-12, atol=1e-9)
    assert a.noise_var == pytest.approx(b.noise_var, rel=1e-12)


def assert_scores_equal(a: GroupedScores, b: GroupedScores, exact: bool = True) -> None:
    assert sorted(a.groups) == sorted(b.groups)
    assert a.center == b.center
    for name in a.groups:
        assert_stats_equal(a.groups[name], b.groups[name], exact)


def delong_unbinned(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Textbook DeLong (midrank placement values) on per-person scores: (auc, variance)."""
    pos, neg = scores[labels == 1], scores[labels == 0]
    n1, n0 = len(pos), len(neg)
    all_ranks = rankdata(np.concatenate([pos, neg]))
    v10 = (all_ranks[:n1] - rankdata(pos)) / n0
    v01 = 1.0 - (all_ranks[n1:] - rankdata(neg)) / n1
    auc = v10.mean()
    return auc, v10.var(ddof=1) / n1 + v01.var(ddof=1) / n0


def hist(bins: dict[int, float]) -> np.ndarray:
    out = np.zeros(N_BINS)
    for b, c in bins.items():
        out[b] = c
    return out


# --- binning ---------------------------------------------------------------------------------


def test_logit_binning_edges() -> None:
    edges = bin_edges()
    assert len(edges) == N_BINS - 1 and np.allclose(np.diff(edges), BIN_WIDTH)
    assert edges[(N_BINS - 2) // 2] == 0.0  # p = 0.5 is an edge when centred at 0
    x = np.array([-np.inf, -1e300, np.nextafter(edges[0], -np.inf), edges[0], 0.0,
                  np.nextafter(0.0, -np.inf), np.nextafter(edges[-1], -np.inf), edges[-1],
                  1e300, np.inf])
    assert logit_to_bin(x).tolist() == [0, 0, 0, 1, N_BINS // 2, N_BINS // 2 - 1,
                                        N_BINS - 2, N_BINS - 1, N_BINS - 1, N_BINS - 1]


@pytest.mark.parametrize("center", [0.0, -1.3, 2.25])
def test_binning_follows_center_and_representatives_fall_in_their_bin(center: float) -> None:
    x = np.random.default_rng(1).normal(0, 3, 500)
    np.testing.assert_array_equal(logit_to_bin(x + center, center), logit_to_bin(x))
    reps = bin_logits(center)
    assert np.all(np.diff(reps) > 0)
    np.testing.assert_array_equal(logit_to_bin(reps, center), np.arange(N_BINS))


# --- AUROC / DeLong ----------------------------------------------------------------------------


def test_auroc_analytic_cases() -> None:
    assert auroc_from_hist(hist({10: 3}), hist({5: 4})) == 1.0
    assert auroc_from_hist(hist({5: 3}), hist({10: 4})) == 0.0
    assert auroc_from_hist(hist({7: 3}), hist({7: 4})) == 0.5  # all tied: half credit
    # cases at 2, 5; controls at 1, 5: pairs 1 + 0 + 1 + 1/2 over 4
    assert auroc_from_hist(hist({2: 1, 5: 1}), hist({1: 1, 5: 1})) == pytest.approx(0.625)
    assert math.isnan(auroc_from_hist(hist({}), hist({1: 2})))


def test_auroc_uses_negative_noisy_counts_and_clips_only_the_result() -> None:
    # A negative bin is used as released: cases 3 @ 10 and -1 @ 2 over controls 4 @ 5:
    # (3 * 4 + (-1) * 0) / (2 * 4) = 1.5, reported as 1.
    assert auroc_from_hist(hist({10: 3, 2: -1}), hist({5: 4})) == 1.0
    # cases 2 @ 10, 1 @ 2, -0.5 @ 3; controls 4 @ 5 -> (8 + 0 + 0) / (2.5 * 4) = 0.8
    assert auroc_from_hist(hist({10: 2, 2: 1, 3: -0.5}), hist({5: 4})) == pytest.approx(0.8)
    # Noisy number of cases not positive: undefined, not a number made up.
    assert math.isnan(auroc_from_hist(hist({10: 0.4, 3: -0.9}), hist({5: 4})))
    assert math.isnan(auroc_from_hist(hist({10: 3}), hist({5: 1.0, 6: -1.0})))


@pytest.mark.parametrize(("seed", "center", "shift"), [(1, 0.0, 1.0), (2, 0.7, 2.0),
                                                       (3, -1.5, 0.3)])
def test_exact_histogram_auroc_equals_sklearn_on_bin_indices(
    seed: int, center: float, shift: float
) -> None:
    """Before noise, the histogram AUROC is exactly the AUROC of the binned scores."""
    rng = np.random.default_rng(seed)
    scores, labels = binormal(2500, shift, rng)
    scores = scores * 2.0 + center  # wide enough that the open edge bins are used too
    stats = single_group(scores, labels, center)
    bins = logit_to_bin(scores, center)
    assert bins.min() == 0 and bins.max() == N_BINS - 1
    expected = roc_auc_score(labels, bins)
    assert auroc_from_hist(stats.hist_case, stats.hist_control) == pytest.approx(expected,
                                                                                 abs=1e-12)
    assert auprc_from_hist(stats.hist_case, stats.hist_control) == pytest.approx(
        average_precision_score(labels, bins), abs=1e-12)
    # Binning loses a little ranking information, never gains any here.
    assert expected <= roc_auc_score(labels, scores) + 1e-12


def test_averaging_site_aurocs_would_be_wrong_but_merging_is_right() -> None:
    rng = np.random.default_rng(3)
    n = 3000
    # Two sites whose score scales differ: each ranks well internally, pooled ranks worse.
    lab_a, lab_b = rng.integers(0, 2, n), rng.integers(0, 2, n)
    a = 0.6 * rng.normal(size=n) + 1.2 * lab_a - 1.8
    b = 0.6 * rng.normal(size=n) + 1.2 * lab_b + 0.6
    groups = np.array(["X"] * n)
    site_a = GroupedScores.from_predictions(a, lab_a, groups)
    site_b = GroupedScores.from_predictions(b, lab_b, groups)
    merged = (site_a + site_b).groups["X"]
    pooled_truth = roc_auc_score(np.r_[lab_a, lab_b], logit_to_bin(np.r_[a, b]))
    mean_of_sites = (roc_auc_score(lab_a, logit_to_bin(a))
                     + roc_auc_score(lab_b, logit_to_bin(b))) / 2
    assert auroc_from_hist(merged.hist_case, merged.hist_control) == pytest.approx(
        pooled_truth, abs=1e-12)
    assert abs(mean_of_sites - pooled_truth) > 0.05
    # The same holds for the noisy releases the sites actually send.
    noisy = (site_a.with_noise(1.0, rng) + site_b.with_noise(1.0, rng)).groups["X"]
    got = auroc_from_hist(noisy.hist_case, noisy.hist_control)
    assert abs(got - pooled_truth) < 0.01 < abs(got - mean_of_sites)


def test_merged_noisy_releases_of_three_sites_match_the_pooled_people() -> None:
    logits, labels, groups = synthetic_cohort(6000, seed=1)
    rng = np.random.default_rng(2)
    sigma = 1.0
    payloads = [
        GroupedScores.from_predictions(logits[i], labels[i], groups[i])
        .with_groups(GROUP_SIGNAL).with_noise(sigma, rng).to_json()
        for i in split_sites(len(logits), 3, seed=2)
    ]
    pooled = sum(GroupedScores.from_json(p) for p in payloads)
    frame = MetricFrame.from_scores(pooled, k=10).to_dict()
    n_sd = sigma * math.sqrt(3 * 2 * N_BINS)  # noise on a merged group's n
    for name in GROUP_SIGNAL:
        mask = groups == name
        got = frame["by_group"][name]
        assert abs(got["n"] - mask.sum()) <= 5 * n_sd
        assert abs(got["cases"] - labels[mask].sum()) <= 5 * sigma * math.sqrt(3 * N_BINS) + 1
        assert got["noise_sd"] == pytest.approx(sigma * math.sqrt(3))
        bins = logit_to_bin(logits[mask])
        assert got["auroc"] == pytest.approx(roc_auc_score(labels[mask], bins), abs=0.01)
        assert got["auprc"] == pytest.approx(average_precision_score(labels[mask], bins),
                                             abs=0.02)
        rep = expit(bin_logits()[bins])
        assert got["brier"] == pytest.approx(brier_score_loss(labels[mask], rep), abs=0.01)
    assert frame["overall"]["auroc"] == pytest.approx(
        roc_auc_score(labels, logit_to_bin(logits)), abs=0.01)
    # The groups really differ, so a per-group report is meaningful.
    assert frame["by_group"]["EUR"]["auroc"] - frame["by_group"]["AFR"]["auroc"] > 0.1


def test_delong_on_histograms_equals_delong_on_binned_people() -> None:
    rng = np.random.default_rng(4)
    scores, labels = binormal(3000, 0.8, rng)
    stats = single_group(scores, labels)
    auc, var = delong_unbinned(logit_to_bin(scores).astype(float), labels)
    half = Z95 * math.sqrt(var)
    lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
    assert lo == pytest.approx(auc - half, abs=1e-9)
    assert hi == pytest.approx(auc + half, abs=1e-9)
    lo90, hi90 = auroc_ci(stats.hist_case, stats.hist_control, level=0.9)
    assert (hi90 - lo90) == pytest.approx(2 * norm.ppf(0.95) * math.sqrt(var), rel=1e-9)


def test_delong_interval_covers_binned_truth_and_shrinks_with_n() -> None:
    rng = np.random.default_rng(5)
    shift = 1.0
    truth = binned_population_auroc(shift)
    covered, reps = 0, 300
    for _ in range(reps):
        stats = single_group(*binormal(300, shift, rng))
        lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
        covered += lo <= truth <= hi
    assert 0.90 <= covered / reps <= 0.99

    widths = []
    for n in (400, 4000):
        stats = single_group(*binormal(n, shift, rng))
        lo, hi = auroc_ci(stats.hist_case, stats.hist_control)
        widths.append(hi - lo)
    assert widths[1] < widths[0] / 2  # ~ 1/sqrt(10) expected


def test_auroc_ci_degenerate() -> None:
    assert all(math.isnan(v) for v in auroc_ci(hist({3: 1}), hist({1: 5})))
    # Enough cases once clipped, but the released (noisy) number of cases is negative.
    assert all(math.isnan(v) for v in auroc_ci(hist({3: 3, 4: -4}), hist({1: 5})))
    lo, hi = auroc_ci(hist({3: 5}), hist({1: 5}))  # perfect separation: zero variance
    assert lo == hi == 1.0
    lo, hi = auroc_ci(hist({3: 5}), hist({1: 5}), noise_var=1.0)  # but noise is uncertainty
    assert lo < 1.0 == hi
    for level in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="level"):
            auroc_ci(hist({3: 5}), hist({1: 5}), level=level)


# --- the DP design -----------------------------------------------------------------------------


def test_noisy_auroc_is_unbiased_where_clipping_first_is_not() -> None:
    """Over many noise draws of one site's release the bilinear estimator averages to the exact
    binned AUROC; clipping negative bins first pulls it towards 0.5. The noise variance the
    interval adds is the noise's real variance, and the interval covers the exact value."""
    rng = np.random.default_rng(20)
    scores, labels = binormal(300, 1.8, rng)
    exact = GroupedScores.from_predictions(scores, labels, np.full(len(scores), "g"))
    stats = exact.groups["g"]
    truth = auroc_from_hist(stats.hist_case, stats.hist_control)
    assert truth == pytest.approx(roc_auc_score(labels, logit_to_bin(scores)), abs=1e-12)
    sigma, draws = 2.0, 400
    noisy, clipped, covered, wider = [], [], 0, 0
    for _ in range(draws):
        s = exact.with_noise(sigma, rng).groups["g"]
        assert s.noise_var == sigma**2
        noisy.append(auroc_from_hist(s.hist_case, s.hist_control))
        clipped.append(clipped_auroc(s))
        lo, hi = auroc_ci(s.hist_case, s.hist_control, noise_var=s.noise_var)
        lo0, hi0 = auroc_ci(s.hist_case, s.hist_control)
        covered += lo <= truth <= hi
        wider += (hi - lo) > (hi0 - lo0)
    noisy_a, clipped_a = np.array(noisy), np.array(clipped)
    se = noisy_a.std(ddof=1) / math.sqrt(draws)
    assert abs(noisy_a.mean() - truth) < 4 * se
    clipped_bias = clipped_a.mean() - truth
    assert clipped_bias < -10 * clipped_a.std(ddof=1) / math.sqrt(draws)  # towards 0.5
    assert abs(noisy_a.mean() - truth) < abs(clipped_bias) / 4
    # Delta-method noise variance (interval width with noise minus without, on the exact
    # histograms) against the noisy AUROC's spread over the draws.
    lo_n, hi_n = auroc_ci(stats.hist_case, stats.hist_control, noise_var=sigma**2)
    lo_0, hi_0 = auroc_ci(stats.hist_case, stats.hist_control)
    assert lo_n > 0 and hi_n < 1  # unclipped, so the widths are 2 z sd
    var_with, var_without = ((hi_n - lo_n) / (2 * Z95)) ** 2, ((hi_0 - lo_0) / (2 * Z95)) ** 2
    predicted_sd = math.sqrt(var_with - var_without)
    assert predicted_sd == pytest.approx(noisy_a.std(ddof=1), rel=0.15)
    # It also carries DeLong's sampling variance, so for this fixed sample it is conservative.
    assert covered / draws >= 0.95
    assert wider == draws


def test_noise_aware_interval_covers_at_its_level_where_delong_alone_does_not() -> None:
    """Fresh people and fresh noise each draw: the noise-aware interval covers the population's
    binned AUROC about 95% of the time, DeLong alone far less, and is always wider."""
    rng = np.random.default_rng(21)
    shift, sigma, draws = 1.5, 2.0, 400
    truth = binned_population_auroc(shift)
    covered = covered_delong = wider = 0
    for _ in range(draws):
        scores, labels = binormal(300, shift, rng)
        s = single_group(scores, labels)
        s = GroupedScores({"g": s}).with_noise(sigma, rng).groups["g"]
        lo, hi = auroc_ci(s.hist_case, s.hist_control, noise_var=s.noise_var)
        lo0, hi0 = auroc_ci(s.hist_case, s.hist_control)
        covered += lo <= truth <= hi
        covered_delong += lo0 <= truth <= hi0
        wider += (hi - lo) > (hi0 - lo0)
    assert 0.88 <= covered / draws <= 0.99
    assert covered_delong / draws < covered / draws - 0.1
    assert wider == draws


def test_with_noise_adds_gaussian_noise_of_sd_sigma_to_every_bin() -> None:
    logits, labels, groups = synthetic_cohort(2000, seed=22)
    exact = GroupedScores.from_predictions(logits, labels, groups).with_groups([*GROUP_SIGNAL,
                                                                                "OCE"])
    assert exact.groups["OCE"].n == 0  # absent group: released all the same, as noise
    sigma, rng = 3.0, np.random.default_rng(23)
    deltas = []
    for _ in range(50):
        noisy = exact.with_noise(sigma, rng)
        assert noisy.noise_sd == sigma and sorted(noisy.groups) == sorted(exact.groups)
        for name, s in noisy.groups.items():
            assert s.noise_var == sigma**2
            deltas.append(s.hist_case - exact.groups[name].hist_case)
            deltas.append(s.hist_control - exact.groups[name].hist_control)
    d = np.concatenate(deltas)
    assert abs(d.mean()) < 4 * sigma / math.sqrt(d.size)
    assert d.std() == pytest.approx(sigma, rel=0.05)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="noise"):
            exact.with_noise(bad, rng)


def test_payload_holds_noisy_histograms_and_nothing_else() -> None:
    logits, labels, groups = synthetic_cohort(3000, seed=24)
    exact = GroupedScores.from_predictions(logits, labels, groups).with_groups(GROUP_SIGNAL)
    sigma = 1.0
    text = exact.with_noise(sigma, np.random.default_rng(25)).to_json()
    ints: list[int] = []
    payload = json.loads(text, parse_int=lambda s: ints.append(int(s)) or int(s))
    assert set(payload) == {"format", "version", "n_bins", "bin_width", "center", "noise_sd",
                            "groups"}
    assert ints == [VERSION, N_BINS]  # no count is written as an integer
    assert payload["noise_sd"] == sigma
    for word in ("sum_prob", "brier", "prob", '"n"', "cases", '"bins"'):
        assert word not in text
    values, exact_values = [], []
    for name, obj in payload["groups"].items():
        assert set(obj) == {"case", "control"}
        for cls, attr in (("case", "hist_case"), ("control", "hist_control")):
            assert len(obj[cls]) == N_BINS
            values += obj[cls]
            exact_values += getattr(exact.groups[name], attr).tolist()
    v, e = np.array(values), np.array(exact_values)
    assert np.all(e == np.round(e))  # the pre-noise histogram is integer counts ...
    assert np.mean(v == np.round(v)) <= 0.02  # ... the release (nearly) never is
    assert np.mean(v == e) <= 0.02
    assert np.any(v < 0)  # empty bins stay noisy, negative included: nothing is clipped
    assert np.abs(v - e).max() < 6 * sigma


# --- merging ---------------------------------------------------------------------------------


@pytest.mark.parametrize("sigma", [None, 1.5])
def test_merge_is_associative_commutative_and_equals_pooling(sigma: float | None) -> None:
    logits, labels, groups = synthetic_cohort(3000, seed=6)
    rng = np.random.default_rng(7)
    parts = [GroupedScores.from_predictions(logits[i], labels[i], groups[i])
             for i in split_sites(3000, 3, seed=7)]
    whole = GroupedScores.from_predictions(logits, labels, groups)
    if sigma is not None:
        parts = [p.with_noise(sigma, rng) for p in parts]
    exact = sigma is None
    a, b, c = parts
    assert_scores_equal((a + b) + c, a + (b + c), exact)
    assert_scores_equal(a + b, b + a, exact)
    assert_scores_equal(a.merge(b).merge(c), sum(parts), exact)
    merged = sum(parts)
    assert merged.noise_sd == 0.0  # per-site noise sd; the merged variance is per group
    for name, s in merged.groups.items():
        assert s.noise_var == pytest.approx(0.0 if exact else 3 * sigma**2)
        if exact:
            assert_stats_equal(s, whole.groups[name])
        else:  # the merged noise is the sum of the three sites' noise
            noise = s.hist_case - whole.groups[name].hist_case
            assert np.abs(noise).max() < 6 * sigma * math.sqrt(3)


def test_merge_keeps_groups_present_at_only_one_site() -> None:
    a = GroupedScores.from_predictions(np.zeros(3), np.array([0, 1, 0]), np.array(["A"] * 3))
    b = GroupedScores.from_predictions(np.zeros(2), np.array([1, 1]), np.array(["B"] * 2))
    merged = a + b
    assert sorted(merged.groups) == ["A", "B"]
    assert merged.groups["B"].cases == 2 and merged.groups["A"].controls == 2


def test_merge_refuses_different_centers() -> None:
    a = GroupedScores.from_predictions(np.zeros(2), np.array([0, 1]), np.array(["A"] * 2))
    b = GroupedScores.from_predictions(np.zeros(2), np.array([0, 1]), np.array(["A"] * 2), 1.0)
    with pytest.raises(ValueError, match="centres"):
        a.merge(b)
    assert (GroupedScores(center=0.0) + b).center == 1.0  # an empty start takes the other's


def test_with_groups_and_keep() -> None:
    scores = GroupedScores.from_predictions(np.zeros(4), np.array([0, 1, 0, 1]),
                                            np.array(["A", "A", "B", "B"]), center=0.5)
    fixed = scores.with_groups(["C", "A"])
    assert list(fixed.groups) == ["A", "C"] and fixed.center == 0.5
    assert fixed.groups["C"].n == 0 and fixed.groups["A"].n == 2
    kept = scores.keep(["B", "Z"])
    assert list(kept.groups) == ["B"] and kept.center == 0.5


def test_from_predictions_validates_input() -> None:
    with pytest.raises(ValueError, match="same length"):
        GroupedScores.from_predictions(np.zeros(3), np.zeros(2), np.zeros(3))
    with pytest.raises(ValueError, match="0 or 1"):
        GroupedScores.from_predictions(np.zeros(2), np.array([0, 2]), np.zeros(2))
    with pytest.raises(ValueError, match="NaN"):
        GroupedScores.from_predictions(np.array([np.nan]), np.array([1]), np.zeros(1))
    with pytest.raises(ValueError, match="non-empty"):
        GroupedScores.from_predictions(np.zeros(1), np.array([1]), np.array([""]))
    assert GroupedScores.from_predictions(np.zeros(0), np.zeros(0), np.zeros(0)).groups == {}
    with pytest.raises(ValueError, match="shape"):
        GroupStats(np.zeros(N_BINS + 1), np.zeros(N_BINS))


# --- JSON ------------------------------------------------------------------------------------


def site_payload(seed: int = 8, n: int = 400, sigma: float = 1.0) -> dict:
    logits, labels, groups = synthetic_cohort(n, seed=seed)
    exact = GroupedScores.from_predictions(logits, labels, groups).with_groups(GROUP_SIGNAL)
    return json.loads(exact.with_noise(sigma, np.random.default_rng(seed)).to_json())


def test_json_round_trip() -> None:
    logits, labels, groups = synthetic_cohort(1500, seed=9)
    exact = GroupedScores.from_predictions(logits, labels, groups)
    assert_scores_equal(GroupedScores.from_json(exact.to_json(exact=True)), exact)  # counts: exact
    noisy = exact.with_noise(0.7, np.random.default_rng(9))
    back = GroupedScores.from_json(noisy.to_json())
    assert back.noise_sd == 0.7 and sorted(back.groups) == sorted(noisy.groups)
    for name, s in noisy.groups.items():
        # Released to 3 decimals: no more digits of noise than the statistics need.
        np.testing.assert_allclose(back.groups[name].hist_case, s.hist_case, atol=5.0001e-4)
        np.testing.assert_allclose(back.groups[name].hist_control, s.hist_control,
                                   atol=5.0001e-4)
        assert back.groups[name].noise_var == pytest.approx(0.7**2)
    shifted = GroupedScores.from_predictions(logits, labels, groups, center=-1.25)
    assert_scores_equal(GroupedScores.from_json(shifted.to_json(exact=True), center=-1.25), shifted)
    with pytest.raises(ValueError, match="center"):
        GroupedScores.from_json(shifted.to_json(exact=True))  # binned around another logit


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


def eur(cls: str, change: object) -> str:
    return mutate(("groups", "EUR", cls), change)


def many_groups(n: int) -> str:
    return mutate(("groups",), {f"G{i}": VALID["groups"]["EUR"] for i in range(n)})


BAD_PAYLOADS = {
    "not json": "{not json",
    "not an object": "[1, 2]",
    "nan constant": '{"x": NaN}',
    "infinity constant": eur("case", lambda v: ["INF", *v[1:]]).replace('"INF"', "Infinity"),
    "overflowing number": eur("case", lambda v: ["BIG", *v[1:]]).replace('"BIG"', "1e400"),
    "pickle bytes": b"\x80\x04\x95",
    "not utf-8": b'{"format": "\xff"}',
    "duplicate key": '{"format": 1, "format": 2}',
    "nested too deeply": "[" * 200_000,
    "too large": json.dumps(VALID) + " " * MAX_JSON_CHARS,
    "extra top key": mutate(("extra",), 1),
    "old top key": mutate(("logit_range",), [-10.0, 10.0]),
    "missing top key": mutate(("version",), KeyError),
    "missing noise_sd": mutate(("noise_sd",), KeyError),
    "wrong format": mutate(("format",), "pickle"),
    "old version": mutate(("version",), 1),
    "float version": mutate(("version",), float(VERSION)),
    "string version": mutate(("version",), str(VERSION)),
    "wrong n_bins": mutate(("n_bins",), 4000),
    "bool n_bins": mutate(("n_bins",), True),
    "wrong bin_width": mutate(("bin_width",), BIN_WIDTH / 2),
    "string bin_width": mutate(("bin_width",), str(BIN_WIDTH)),
    "wrong center": mutate(("center",), 0.5),
    "string center": mutate(("center",), "0"),
    "negative noise_sd": mutate(("noise_sd",), -1.0),
    "huge noise_sd": mutate(("noise_sd",), MAX_NOISE_SD * 10),
    "string noise_sd": mutate(("noise_sd",), "1.0"),
    "bool noise_sd": mutate(("noise_sd",), True),
    "groups not object": mutate(("groups",), []),
    "too many groups": many_groups(MAX_GROUPS + 1),
    "empty group name": mutate(("groups", ""), VALID["groups"]["EUR"]),
    "long group name": mutate(("groups", "X" * (MAX_GROUP_NAME + 1)), VALID["groups"]["EUR"]),
    "group not object": mutate(("groups", "EUR"), [1, 2]),
    "missing control": eur("control", KeyError),
    "extra sum_prob": eur("sum_prob", [0.1] * N_BINS),
    "extra n": eur("n", 400),
    "short case list": eur("case", lambda v: v[:-1]),
    "long control list": eur("control", lambda v: [*v, 0.0]),
    "case not a list": eur("case", lambda v: dict(enumerate(v))),
    "string count": eur("case", lambda v: ["1.0", *v[1:]]),
    "bool count": eur("control", lambda v: [True, *v[1:]]),
    "null count": eur("case", lambda v: [None, *v[1:]]),
    "nested count": eur("case", lambda v: [[1.0], *v[1:]]),
    "huge count": eur("case", lambda v: [MAX_COUNT * 2, *v[1:]]),
    "huge negative count": eur("control", lambda v: [-MAX_COUNT * 2, *v[1:]]),
}


@pytest.mark.parametrize("name", list(BAD_PAYLOADS))
def test_from_json_rejects_malformed(name: str) -> None:
    with pytest.raises(ValueError, match="grouped scores"):
        GroupedScores.from_json(BAD_PAYLOADS[name])  # type: ignore[arg-type]


def test_from_json_rejects_non_text() -> None:
    for bad in (None, 3, VALID, [json.dumps(VALID)]):
        with pytest.raises(ValueError, match="grouped scores"):
            GroupedScores.from_json(bad)  # type: ignore[arg-type]


def test_from_json_accepts_valid_payload_variants() -> None:
    text = json.dumps(VALID)
    assert sorted(GroupedScores.from_json(text).groups) == sorted(GROUP_SIGNAL)
    assert sorted(GroupedScores.from_json(text.encode()).groups) == sorted(GROUP_SIGNAL)
    assert GroupedScores.from_json(GroupedScores().to_json(exact=True)).groups == {}
    # Integer tokens, negative and fractional counts (noise), the edge of every bound.
    edge = mutate(("groups", "EUR", "case"), [0, -3, 2.5, MAX_COUNT, -MAX_COUNT,
                                              *VALID["groups"]["EUR"]["case"][5:]])
    got = GroupedScores.from_json(edge).groups["EUR"].hist_case
    assert got[:5].tolist() == [0.0, -3.0, 2.5, MAX_COUNT, -MAX_COUNT]
    assert len(GroupedScores.from_json(many_groups(MAX_GROUPS)).groups) == MAX_GROUPS
    name = "X" * MAX_GROUP_NAME
    assert name in GroupedScores.from_json(mutate(("groups", name), VALID["groups"]["EUR"])
                                           ).groups
    assert GroupedScores.from_json(mutate(("noise_sd",), MAX_NOISE_SD)).noise_sd == MAX_NOISE_SD
    assert GroupedScores.from_json(mutate(("center",), 0)).center == 0.0


def test_exact_histograms_with_extreme_scores_round_trip() -> None:
    edges = bin_edges()
    logits = np.r_[edges, np.nextafter(edges, -np.inf), np.nextafter(edges, np.inf),
                   -1e300, 1e300, -np.inf, np.inf]
    labels = np.random.default_rng(17).integers(0, 2, len(logits))
    scores = GroupedScores.from_predictions(logits, labels, np.full(len(logits), "g"))
    assert scores.groups["g"].n == len(logits)
    assert_scores_equal(GroupedScores.from_json(scores.to_json(exact=True)), scores)


# --- calibration, Brier, thresholds ------------------------------------------------------------


def calibrated_risk(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    risk = rng.normal(-0.5, 1.2, n)
    return risk, (rng.random(n) < expit(risk)).astype(int)


def test_calibration_fit_is_logistic_regression_on_bin_representatives() -> None:
    risk, labels = calibrated_risk(20000, 11)
    intercept, slope = calibration_fit(single_group(risk, labels))
    rep = bin_logits()[logit_to_bin(risk)]
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(rep[:, None], labels)
    assert slope == pytest.approx(ref.coef_[0, 0], abs=1e-4)
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-4)
    # Coarse bins, but a calibrated model still reads as (nearly) calibrated ...
    assert slope == pytest.approx(1.0, abs=0.1) and intercept == pytest.approx(0.0, abs=0.1)
    # ... and an over-confident one as over-confident.
    _, over_slope = calibration_fit(single_group(2.0 * risk, labels))
    assert over_slope < 0.7


def test_calibration_fit_on_noisy_histograms_leaves_out_bins_within_the_noise() -> None:
    """A calibrated model's DP release (three sites' noise, sigma 2.18 each, 500 people): bins
    within the noise carry clipped noise as equal case and control mass, which flattens the
    fit. Left out, the fitted slope stays near the exact histograms' (measured: the untrimmed
    fit's median slope is off by more than twice as much)."""
    risk, labels = calibrated_risk(500, 13)
    exact = single_group(risk, labels)
    _, exact_slope = calibration_fit(exact)
    rng = np.random.default_rng(0)
    kept, untrimmed = [], []
    for _ in range(100):
        noisy = GroupStats(exact.hist_case + rng.normal(0, 2.18 * math.sqrt(3), N_BINS),
                           exact.hist_control + rng.normal(0, 2.18 * math.sqrt(3), N_BINS),
                           noise_var=3 * 2.18**2)
        kept.append(calibration_fit(noisy)[1])
        untrimmed.append(calibration_fit(GroupStats(noisy.hist_case, noisy.hist_control))[1])
    off_kept = abs(np.nanmedian(kept) - exact_slope)
    off_untrimmed = abs(np.nanmedian(untrimmed) - exact_slope)
    assert off_kept < 0.5 * off_untrimmed and off_kept < 0.15, (off_kept, off_untrimmed)
    # Exact histograms (no noise) keep every occupied bin, as before.
    assert calibration_fit(exact) == calibration_fit(GroupStats(exact.hist_case,
                                                                exact.hist_control, 0.0))


def test_calibration_fit_with_center_uses_shifted_bins() -> None:
    risk, labels = calibrated_risk(20000, 12)
    center = -0.5
    intercept, slope = calibration_fit(single_group(risk, labels, center), center)
    rep = bin_logits(center)[logit_to_bin(risk, center)]
    ref = LogisticRegression(C=np.inf, tol=1e-10, max_iter=1000).fit(rep[:, None], labels)
    assert slope == pytest.approx(ref.coef_[0, 0], abs=1e-4)
    assert intercept == pytest.approx(ref.intercept_[0], abs=1e-4)


def test_calibration_fit_undefined_for_separated_or_single_bin() -> None:
    labels = np.r_[[0] * 10, [1] * 10]
    one_bin = single_group(np.zeros(20), labels)
    assert all(math.isnan(v) for v in calibration_fit(one_bin))
    separated = single_group(np.r_[np.full(10, -1.0), np.full(10, 1.0)], labels)
    assert all(math.isnan(v) for v in calibration_fit(separated))
    # Huge logits in the open edge bins must not break the fit.
    clipped = single_group(np.r_[-40.0, 40.0, 0.0, 0.1, 0.6, -0.6], np.r_[0, 1, 1, 0, 0, 1])
    assert not math.isnan(calibration_fit(clipped)[1])


def test_recalibration_fit_takes_the_simplest_update_the_statistics_support() -> None:
    """Closed testing: a calibrated model is kept, a shifted one gets its intercept moved back
    (slope left at 1), an over-confident one gets Cox's two-parameter fit."""
    risk, labels = calibrated_risk(2000, 21)
    kept = recalibration_fit(single_group(risk, labels))
    assert kept == {"update": "none", "intercept": 0.0, "slope": 1.0}
    shifted = recalibration_fit(single_group(risk + 2.0, labels))
    assert shifted["update"] == "intercept" and shifted["slope"] == 1.0
    assert shifted["intercept"] == pytest.approx(-2.0, abs=0.15)
    over = single_group(2.0 * risk, labels)
    assert recalibration_fit(over) == {"update": "logistic",
                                       "intercept": pytest.approx(calibration_fit(over)[0]),
                                       "slope": pytest.approx(calibration_fit(over)[1])}
    empty = recalibration_fit(GroupStats(np.zeros(N_BINS), np.zeros(N_BINS), noise_var=1.0))
    assert empty["update"] is None and math.isnan(empty["slope"])


def test_recalibration_fit_on_a_small_noisy_group_spends_less_noise_than_coxs_fit() -> None:
    """A small group (300 people) whose model is shifted by +2 logits but has the right slope,
    released with three sites' DP noise: the closed test leaves the slope alone in most releases,
    so its recalibrated slope errs less than Cox's fitted one, and its intercept no worse."""
    risk, labels = calibrated_risk(300, 23)
    exact = single_group(risk + 2.0, labels)
    rng = np.random.default_rng(1)
    sd = 2.18 * math.sqrt(3)
    chosen, cox = [], []
    for _ in range(200):
        noisy = GroupStats(exact.hist_case + rng.normal(0, sd, N_BINS),
                           exact.hist_control + rng.normal(0, sd, N_BINS), noise_var=sd**2)
        fit = recalibration_fit(noisy)
        chosen.append((fit["intercept"], fit["slope"], fit["update"]))
        cox.append(calibration_fit(noisy))
    updates = [u for _, _, u in chosen]
    assert updates.count("intercept") >= 0.7 * len(updates), updates
    slope_err = np.nanmedian([abs(b - 1) for _, b, _ in chosen])
    cox_slope_err = np.nanmedian([abs(b - 1) for _, b in cox])
    assert slope_err < 0.5 * cox_slope_err, (slope_err, cox_slope_err)
    # The recalibrated intercept at the group's mean logit (what calibration-in-the-large sees).
    mean = float(np.mean(risk + 2.0))
    err = np.nanmedian([abs(a + (b - 1) * mean + 2.0) for a, b, _ in chosen])
    cox_err = np.nanmedian([abs(a + (b - 1) * mean + 2.0) for a, b in cox])
    assert err <= cox_err * 1.05, (err, cox_err)


def test_brier_and_ece_are_per_person_on_bin_representatives() -> None:
    risk, labels = calibrated_risk(20000, 13)
    stats = single_group(risk, labels)
    bins = logit_to_bin(risk)
    p = expit(bin_logits()[bins])
    assert brier_score(stats) == pytest.approx(brier_score_loss(labels, p), rel=1e-12)
    direct = sum(abs(p[bins == b].sum() - labels[bins == b].sum()) for b in range(N_BINS))
    assert expected_calibration_error(stats) == pytest.approx(direct / len(p), rel=1e-12)
    calibrated = expected_calibration_error(stats)
    over = expected_calibration_error(single_group(2.0 * risk, labels))
    shifted = expected_calibration_error(single_group(risk + 1.0, labels))
    assert calibrated < 0.03
    assert over > 0.05 and shifted > 0.1 and min(over, shifted) > 2 * calibrated
    assert math.isnan(brier_score(GroupStats.empty()))
    assert math.isnan(expected_calibration_error(GroupStats.empty()))


@pytest.mark.parametrize("threshold", [0.5, 0.3, 0.27, 0.8])
def test_threshold_metrics_cut_at_the_nearest_bin_edge(threshold: float) -> None:
    logits, labels, groups = synthetic_cohort(5000, seed=13)
    mask = groups == "EUR"
    got = threshold_metrics(single_group(logits[mask], labels[mask]), threshold)
    edges = bin_edges()
    cut = edges[np.argmin(np.abs(edges - logit(threshold)))]
    assert abs(cut - logit(threshold)) <= BIN_WIDTH / 2
    pred = logits[mask] >= cut
    y = labels[mask] == 1
    assert got["sensitivity"] == pytest.approx((pred & y).sum() / y.sum(), rel=1e-12)
    assert got["specificity"] == pytest.approx((~pred & ~y).sum() / (~y).sum(), rel=1e-12)
    assert got["ppv"] == pytest.approx((pred & y).sum() / pred.sum(), rel=1e-12)


def test_calibration_curve_suppresses_small_bins() -> None:
    logits, labels, groups = synthetic_cohort(5000, seed=13)
    frame = MetricFrame.from_scores(GroupedScores.from_predictions(logits, labels, groups), k=10)
    curve = frame.by_group["EUR"]["calibration_curve"]
    mask = groups == "EUR"
    bins = logit_to_bin(logits[mask])
    big = [b for b in range(N_BINS) if (bins == b).sum() >= 10]
    assert len(curve) == len(big) >= 5
    assert sum(c[2] for c in curve) <= mask.sum()
    assert all(c[2] >= 10 for c in curve)  # small bins are small cells too
    assert [c[0] for c in curve] == pytest.approx(expit(bin_logits()[big]).tolist())
    assert all(abs(pred - obs) < 0.15 for pred, obs, n in curve if n >= 50)
    # On noisy histograms, bins under min_count by their noisy count are left out as well.
    noisy = GroupStats(hist({8: 40.0, 9: 9.6, 10: -2.0}), hist({8: 20.0, 9: 0.3, 10: 1.0}))
    assert calibration_curve(noisy, min_count=10) == [
        [pytest.approx(expit(bin_logits()[8])), pytest.approx(40 / 60), 60]]


# --- MetricFrame, suppression, disparities ----------------------------------------------------


def cohort_with_small_group(
    small_n: int, small_cases: int, seed: int = 14, sigma: float | None = 0.3
) -> GroupedScores:
    """Two sites' merged releases (noisy unless sigma is None) with a small OCE group."""
    logits, labels, groups = synthetic_cohort(4000, seed=seed)
    rng = np.random.default_rng(seed + 1)
    tiny_logits = rng.normal(size=small_n)
    tiny_labels = np.r_[np.ones(small_cases), np.zeros(small_n - small_cases)].astype(int)
    logits, labels = np.r_[logits, tiny_logits], np.r_[labels, tiny_labels]
    groups = np.r_[groups, ["OCE"] * small_n]
    sites = [GroupedScores.from_predictions(logits[i], labels[i], groups[i])
             .with_groups([*GROUP_SIGNAL, "OCE"]) for i in split_sites(len(logits), 2, seed)]
    if sigma is not None:
        sites = [s.with_noise(sigma, rng) for s in sites]
    return sum(sites)


@pytest.mark.parametrize(("small_n", "small_cases"), [(5, 2), (200, 3), (200, 197)])
def test_small_group_is_exactly_suppressed_and_not_recoverable(
    small_n: int, small_cases: int
) -> None:
    scores = cohort_with_small_group(small_n, small_cases)
    assert is_small_cell(scores.groups["OCE"], 10)
    report = MetricFrame.from_scores(scores, k=10).to_dict()
    assert report["by_group"]["OCE"] == {"suppressed": True}
    shown = [g for g in report["by_group"] if g != "OCE"]
    assert shown == sorted(GROUP_SIGNAL)
    # Overall pools exactly the shown groups' histograms (and noise variances) ...
    n_shown = sum(scores.groups[g].n for g in shown)
    assert report["overall"]["n"] == round(n_shown)
    assert abs(report["overall"]["n"] - sum(report["by_group"][g]["n"] for g in shown)) <= 2
    assert report["overall"]["noise_sd"] == pytest.approx(
        math.sqrt(sum(scores.groups[g].noise_var for g in shown)))
    # ... so it is identical to a report in which the small group never existed.
    without = GroupedScores({g: s for g, s in scores.groups.items() if g != "OCE"})
    assert report["overall"] == MetricFrame.from_scores(without, k=10).to_dict()["overall"]
    assert "OCE" not in json.dumps({k: v for k, v in report.items() if k != "by_group"})


def test_suppression_reads_the_noisy_counts() -> None:
    base = hist({6: 30.0, 7: 30.0})
    for cases, small in ((9.6, True), (10.2, False)):
        stats = GroupStats(hist({8: cases - 4.0, 9: 4.0}), base)
        assert is_small_cell(stats, 10) is small
        report = MetricFrame.from_scores(GroupedScores({"A": stats}), k=10).to_dict()
        assert (report["by_group"]["A"] == {"suppressed": True}) is small
    # Controls and people count too.
    assert is_small_cell(GroupStats(base, hist({3: 9.9})), 10)
    assert not is_small_cell(GroupStats(base, hist({3: 10.0})), 10)


def test_unsuppressed_at_lower_k() -> None:
    exact = MetricFrame.from_scores(cohort_with_small_group(200, 5, sigma=None), k=5).to_dict()
    assert exact["by_group"]["OCE"]["cases"] == 5 and exact["by_group"]["OCE"]["n"] == 200
    assert exact["by_group"]["OCE"]["noise_sd"] == 0.0


def test_everything_suppressed() -> None:
    scores = GroupedScores.from_predictions(np.zeros(6), np.r_[0, 1, 0, 1, 0, 1], np.full(6, "0"))
    report = MetricFrame.from_scores(scores, k=10).to_dict()
    assert report["overall"] == {"suppressed": True}
    assert report["by_group"] == {"0": {"suppressed": True}}
    assert report["difference"] == {} and report["ratio"] == {}
    assert report["vs_reference"] == {}


@pytest.mark.parametrize("k", [0, -3, 1.5, True, "10"])
def test_k_must_be_positive_int(k: object) -> None:
    with pytest.raises(ValueError, match="k"):
        MetricFrame.from_scores(GroupedScores(), k=k)  # type: ignore[arg-type]


@pytest.mark.parametrize("threshold", [0.0, 1.0, -0.1, "0.5", True, math.nan])
def test_threshold_must_be_probability(threshold: object) -> None:
    with pytest.raises(ValueError, match="threshold"):
        MetricFrame.from_scores(GroupedScores(), threshold=threshold)  # type: ignore[arg-type]


def test_difference_ratio_and_reference() -> None:
    logits, labels, groups = synthetic_cohort(6000, seed=15)
    scores = GroupedScores.from_predictions(logits, labels, groups)
    scores = scores.with_noise(1.0, np.random.default_rng(15))
    report = MetricFrame.from_scores(scores, reference="EUR").to_dict()
    by = report["by_group"]
    for metric in DISPARITY_METRICS:
        values = [by[g][metric] for g in GROUP_SIGNAL]
        assert report["difference"][metric] == pytest.approx(max(values) - min(values))
        assert report["ratio"][metric] == pytest.approx(min(values) / max(values))
    assert sorted(report["vs_reference"]) == ["AFR", "EAS"]
    for metric in DISPARITY_METRICS:
        assert report["vs_reference"]["AFR"][metric] == pytest.approx(
            by["AFR"][metric] - by["EUR"][metric])
    assert report["vs_reference"]["AFR"]["auroc"] < 0


def test_reference_suppressed_or_absent_gives_empty_comparison() -> None:
    scores = cohort_with_small_group(5, 2)
    assert MetricFrame.from_scores(scores, reference="OCE").to_dict()["vs_reference"] == {}
    assert MetricFrame.from_scores(scores, reference="SAS").to_dict()["vs_reference"] == {}


def test_to_dict_schema_is_strict_json() -> None:
    scores = cohort_with_small_group(5, 2, sigma=0.5)
    report = MetricFrame.from_scores(scores, k=10, threshold=0.4).to_dict()
    assert set(report) == {
        "k", "threshold", "reference", "overall", "by_group", "difference", "ratio",
        "vs_reference", "dp",
    }  # fmt: skip
    assert report["k"] == 10 and report["threshold"] == 0.4 and report["reference"] is None
    assert report["dp"]["mechanism"] == "gaussian"
    assert (report["dp"]["n_bins"], report["dp"]["bin_width"]) == (N_BINS, BIN_WIDTH)
    assert report["dp"]["center"] == scores.center
    expected = {
        "n", "cases", "noise_sd", "auroc", "auroc_ci", "auprc", "brier", "calibration_slope",
        "calibration_intercept", "recalibration", "ece", "sensitivity", "specificity", "ppv",
        "calibration_curve",
    }  # fmt: skip
    assert set(report["overall"]) == expected
    assert set(report["overall"]["recalibration"]) == {"update", "intercept", "slope"}
    assert set(report["by_group"]["EUR"]) == expected
    eur_ = report["by_group"]["EUR"]
    assert type(eur_["n"]) is int and type(eur_["cases"]) is int
    assert eur_["noise_sd"] == pytest.approx(0.5 * math.sqrt(2))  # two sites' noise
    lo, hi = eur_["auroc_ci"]
    assert lo < eur_["auroc"] < hi
    assert all(type(c[2]) is int for c in eur_["calibration_curve"])
    json.dumps(report, allow_nan=False)
    assert FORMAT not in json.dumps(report)  # a report, not a payload


def test_undefined_metric_becomes_null() -> None:
    # Nobody reaches the top (open) bin that p >= 0.99 rounds to, so PPV is 0/0: null.
    logits, labels, groups = synthetic_cohort(2000, seed=16)
    scores = GroupedScores.from_predictions(np.clip(logits, -3, 3), labels, groups)
    report = MetricFrame.from_scores(scores, threshold=0.99).to_dict()
    assert report["by_group"]["EUR"]["ppv"] is None
    assert report["by_group"]["EUR"]["sensitivity"] == 0.0
    assert report["difference"]["ppv"] is None and report["ratio"]["ppv"] is None
    assert report["vs_reference"] == {}
    json.dumps(report, allow_nan=False)


def test_bins_around_the_scores_keep_the_ranking_fixed_bins_lose() -> None:
    """A model whose logits sit far below the bins' centre (a DP model's intercept drifts)
    ranks nobody in fixed bins; bins centred on its median logit keep its AUROC."""
    from sklearn.metrics import roc_auc_score

    from shared.metrics import snap_center

    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 4000)
    logits = rng.normal(1.2 * y, 1.0) - 7.0
    exact = roc_auc_score(y, logits)
    groups = np.array(["G"] * len(y))
    fixed = GroupedScores.from_predictions(logits, y, groups, center=0.0)
    moved = GroupedScores.from_predictions(logits, y, groups,
                                           center=snap_center(float(np.median(logits))))
    binned_fixed = MetricFrame.from_scores(fixed, k=1).by_group["G"]["auroc"]
    binned_moved = MetricFrame.from_scores(moved, k=1).by_group["G"]["auroc"]
    assert binned_fixed < 0.55 < exact - 0.1
    assert abs(binned_moved - exact) < 0.02
    assert snap_center(-7.13) == -7.25 and snap_center(99.0) == 20.0
