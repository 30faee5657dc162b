"""The consortium baseline: per-site GWAS, inverse-variance meta-analysis, C+T score."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from deploy.bench.gwas import (
    SummaryStats,
    association,
    clump,
    ct_baselines,
    fit_ct,
    meta_analyse,
)


def cohort(seed: int, n: int, beta: np.ndarray, freq: float = 0.3, intercept: float = -1.0,
           ) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    dose = rng.binomial(2, freq, (n, len(beta))).astype(float)
    y = (rng.random(n) < 1 / (1 + np.exp(-(intercept + dose @ beta)))).astype(int)
    return dose, y


def test_association_is_the_per_variant_maximum_likelihood_fit() -> None:
    beta = np.array([0.5, 0.0, -0.3, 0.2])
    dose, y = cohort(0, 1500, beta)
    dose[np.random.default_rng(1).random(dose.shape) < 0.05] = np.nan  # missing calls
    stats = association(dose, y)
    for j in range(len(beta)):
        seen = np.isfinite(dose[:, j])
        ref = LogisticRegression(C=np.inf, max_iter=1000).fit(dose[seen, j:j + 1], y[seen])
        assert stats.beta[j] == pytest.approx(ref.coef_[0, 0], abs=2e-3)
        # Standard error from the observed information, computed here independently.
        x = np.column_stack([np.ones(seen.sum()), dose[seen, j]])
        p = ref.predict_proba(dose[seen, j:j + 1])[:, 1]
        cov = np.linalg.inv(x.T @ (x * (p * (1 - p))[:, None]))
        assert stats.se[j] == pytest.approx(np.sqrt(cov[1, 1]), rel=1e-2)
    assert stats.p[0] < 1e-6 and stats.p[1] > 1e-3
    mono = association(np.zeros((100, 1)), np.arange(100) % 2)
    assert np.isinf(mono.se[0]) and mono.p[0] == 1.0


def test_meta_analysis_of_two_halves_agrees_with_the_pooled_study() -> None:
    beta = np.array([0.4, -0.2, 0.0])
    dose, y = cohort(2, 4000, beta)
    pooled = association(dose, y)
    meta = meta_analyse([association(dose[:2000], y[:2000]), association(dose[2000:], y[2000:])])
    assert np.allclose(meta.beta, pooled.beta, atol=0.02)
    assert np.allclose(meta.se, pooled.se, rtol=0.03)
    # A site that could not test a variant does not move it.
    blind = SummaryStats(np.array([9.0, 9.0, 9.0]), np.full(3, np.inf))
    again = meta_analyse([association(dose, y), blind])
    assert np.allclose(again.beta, pooled.beta) and np.allclose(again.se, pooled.se)


def test_clumping_keeps_one_of_linked_variants_and_both_of_distant_ones() -> None:
    rng = np.random.default_rng(3)
    a = rng.binomial(2, 0.3, 500).astype(float)
    ld = np.column_stack([a, a, a])  # three copies of one haplotype block
    stats = SummaryStats(np.array([0.3, 0.2, 0.1]), np.array([0.05, 0.05, 0.05]))
    contig = np.array(["1", "1", "1"])
    near = clump(stats, ld, contig, np.array([1000, 2000, 900_000]), r2_max=0.1)
    assert near.tolist() == [0, 2]  # the second is in LD within the window; the third is far
    other = clump(stats, ld, np.array(["1", "1", "2"]), np.array([1000, 2000, 2500]), 0.1)
    assert other.tolist() == [0, 2]  # on another contig LD is not clumped


def test_ct_selects_the_causal_variants_and_scores_held_out_people() -> None:
    beta = np.zeros(30)
    beta[[3, 11, 20]] = [0.7, -0.6, 0.5]
    dose, y = cohort(4, 3000, beta)
    stats = association(dose[:2000], y[:2000])
    mean = np.nanmean(dose[:2000], axis=0)
    ct = fit_ct(stats, dose[2000:2500], np.full(30, "1"), np.arange(30) * 1_000_000,
                dose[2000:2500], y[2000:2500], mean)
    assert {3, 11, 20} <= set(np.flatnonzero(ct.weights))
    from sklearn.metrics import roc_auc_score
    assert roc_auc_score(y[2500:], ct.score(dose[2500:])) > 0.65


def test_multi_ancestry_ct_uses_each_ancestrys_own_effects() -> None:
    """Two ancestries with different causal variants: the per-ancestry meta-analyses find
    each, the combined score beats the single meta-analysis in the minority ancestry."""
    from sklearn.metrics import roc_auc_score

    b_major, b_minor = np.zeros(20), np.zeros(20)
    b_major[[1, 2]] = 0.8
    b_minor[[10, 11]] = 0.8
    d1, y1 = cohort(5, 4000, b_major)
    d2, y2 = cohort(6, 1600, b_minor)
    dose, y = np.vstack([d1, d2]), np.concatenate([y1, y2])
    anc = np.array(["A"] * 4000 + ["B"] * 1600)
    site = np.array(["s1", "s2"] * 2000 + ["s1", "s2"] * 800)
    role = np.random.default_rng(7).choice(3, len(y), p=[0.6, 0.2, 0.2])
    d, v, t = role == 0, role == 1, role == 2
    out = ct_baselines((dose[d], y[d], anc[d], site[d]), (dose[v], y[v], anc[v]),
                       (dose[t], anc[t]), np.full(20, "1"), np.arange(20) * 1_000_000,
                       ("A", "B"))
    minority = anc[t] == "B"
    single = roc_auc_score(y[t][minority], out["single"]["scores"][minority])
    multi = roc_auc_score(y[t][minority], out["multi"]["scores"][minority])
    assert multi > single + 0.05
    assert out["multi"]["fit"]["components"] == ["A", "B"]


def test_without_any_large_enough_ancestry_stratum_the_single_score_stands_in() -> None:
    beta = np.zeros(10)
    beta[2] = 0.8
    dose, y = cohort(8, 600, beta)
    anc = np.array(["A", "B", "C"] * 200)
    site = np.array([f"s{k}" for k in range(4)] * 150)  # 100 per site, ~33 per stratum
    out = ct_baselines((dose[:400], y[:400], anc[:400], site[:400]),
                       (dose[400:500], y[400:500], anc[400:500]), (dose[500:], anc[500:]),
                       np.full(10, "1"), np.arange(10) * 1_000_000, ("A", "B", "C"))
    assert out["multi"]["fit"]["components"] == []
    assert np.array_equal(out["multi"]["scores"], out["single"]["scores"])
