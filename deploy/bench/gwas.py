"""What a consortium does today instead of joining: meta-analysed GWAS and a C+T polygenic score.

Each site runs a per-variant association study on its own people and shares only summary
statistics (effect size and standard error per variant); the consortium meta-analyses them
(fixed-effect, inverse-variance weighted) and builds a clumping + thresholding score (C+T), the
recipe of PRSice and PLINK's `--clump` + `--score`: keep the most significant variant, drop its
neighbours in linkage disequilibrium (r² above a cut-off within a window), keep what passes a
p-value threshold, and sum dosages weighted by the meta-analysed log odds ratios. The r² cut-off
and the p-value threshold are chosen by AUROC on a validation set of people the GWAS did not see.

The multi-ancestry version runs one meta-analysis per ancestry (sites stratify their GWAS by
ancestry), builds one C+T score per ancestry, and combines them per target ancestry with weights
fitted on that ancestry's validation people (a logistic regression on the scores), as
multi-ancestry PRS methods combine their per-population scores.

Everything here is the bench's baseline: sites never run it, so it lives in `deploy/`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

# The C+T grid (PRSice's default thresholds, and PLINK clumping's usual r² cut-offs).
P_THRESHOLDS = (5e-8, 1e-5, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)
R2_THRESHOLDS = (0.1, 0.5, 0.8)
CLUMP_WINDOW_BP = 250_000
# A site's stratum enters a meta-analysis only with this many people and cases: below it the
# logistic fit's standard errors are not to be trusted (and a real site would not report it).
MIN_STRATUM_PEOPLE = 50
MIN_STRATUM_CASES = 10
NEWTON_STEPS = 30


@dataclass(frozen=True)
class SummaryStats:
    """Per-variant association statistics: log odds ratio per alt allele and its standard error
    (inf where the variant could not be tested, e.g. monomorphic)."""

    beta: np.ndarray  # [T]
    se: np.ndarray  # [T]

    @property
    def p(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(np.isfinite(self.se), self.beta / self.se, 0.0)
        return 2 * norm.sf(np.abs(z))


def association(dose: np.ndarray, y: np.ndarray) -> SummaryStats:
    """Per-variant logistic regression y ~ 1 + dosage, every variant at once (Newton steps on
    [T] independent two-parameter fits). Missing dosages (NaN) leave that person out of that
    variant's fit, as PLINK's `--glm` does."""
    observed = np.isfinite(dose)
    d = np.where(observed, dose, 0.0)  # [N, T]
    m = observed.astype(np.float64)
    y = y.astype(np.float64)[:, None]
    a = np.zeros(d.shape[1])
    b = np.zeros(d.shape[1])
    info = np.zeros((d.shape[1], 2, 2))
    for _ in range(NEWTON_STEPS):
        p = 1 / (1 + np.exp(-(a + b * d)))
        w = m * p * (1 - p)
        r = m * (y - p)
        g = np.stack([r.sum(0), (r * d).sum(0)], axis=1)  # [T, 2]
        info = np.stack([np.stack([w.sum(0), (w * d).sum(0)], 1),
                         np.stack([(w * d).sum(0), (w * d * d).sum(0)], 1)], 1)  # [T, 2, 2]
        det = info[:, 0, 0] * info[:, 1, 1] - info[:, 0, 1] ** 2
        ok = det > 1e-9 * np.maximum(info[:, 0, 0], 1.0) ** 2
        step = np.zeros_like(g)
        step[ok] = np.linalg.solve(info[ok], g[ok][:, :, None])[:, :, 0]
        a, b = a + step[:, 0], np.clip(b + step[:, 1], -10, 10)
        if np.abs(step).max(initial=0.0) < 1e-8:
            break
    det = info[:, 0, 0] * info[:, 1, 1] - info[:, 0, 1] ** 2
    testable = (det > 1e-9 * np.maximum(info[:, 0, 0], 1.0) ** 2) & (np.abs(b) < 10)
    se = np.full(d.shape[1], np.inf)
    se[testable] = np.sqrt(info[testable, 0, 0] / det[testable])
    return SummaryStats(np.where(testable, b, 0.0), se)


def meta_analyse(parts: list[SummaryStats]) -> SummaryStats:
    """Fixed-effect inverse-variance-weighted meta-analysis (METAL's `SCHEME STDERR`)."""
    if not parts:
        raise ValueError("no site's study to meta-analyse")
    w = np.stack([1 / p.se**2 for p in parts])  # inf se -> weight 0
    total = w.sum(0)
    beta = np.where(total > 0, (w * np.stack([p.beta for p in parts])).sum(0)
                    / np.where(total > 0, total, 1), 0.0)
    se = np.where(total > 0, 1 / np.sqrt(np.where(total > 0, total, 1)), np.inf)
    return SummaryStats(beta, se)


def mean_imputed(dose: np.ndarray, mean: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(dose), dose, mean)


def clump(stats: SummaryStats, ld_dose: np.ndarray, contig: np.ndarray, pos: np.ndarray,
          r2_max: float) -> np.ndarray:
    """Index variants kept by greedy clumping: most significant first, each removing the
    untested variants within CLUMP_WINDOW_BP on its contig with r² > `r2_max` (r² from
    `ld_dose`, the LD reference people)."""
    x = ld_dose - np.nanmean(ld_dose, axis=0)
    x = np.where(np.isfinite(x), x, 0.0)
    sd = np.sqrt((x**2).sum(0))
    corr = (x.T @ x) / np.where(np.outer(sd, sd) > 0, np.outer(sd, sd), np.inf)
    p = stats.p
    alive = np.isfinite(stats.se)
    kept = []
    for j in np.argsort(p, kind="stable"):
        if not alive[j]:
            continue
        kept.append(j)
        near = (contig == contig[j]) & (np.abs(pos - pos[j]) <= CLUMP_WINDOW_BP)
        alive &= ~(near & (corr[j] ** 2 > r2_max))
    return np.array(kept, dtype=np.int64)


def _auroc(y: np.ndarray, s: np.ndarray) -> float:
    return float(roc_auc_score(y, s)) if 0 < y.sum() < len(y) else float("nan")


@dataclass(frozen=True)
class CTScore:
    """A fitted C+T score: weights over the panel (zero off the selected variants)."""

    weights: np.ndarray  # [T]
    mean: np.ndarray  # [T] dosage means used for missing calls
    r2: float
    p_threshold: float
    n_variants: int
    validation_auroc: float

    def score(self, dose: np.ndarray) -> np.ndarray:
        return mean_imputed(dose, self.mean) @ self.weights

    def describe(self) -> dict[str, Any]:
        return {"r2": self.r2, "p_threshold": self.p_threshold, "variants": self.n_variants,
                "validation_auroc": self.validation_auroc}


def fit_ct(stats: SummaryStats, ld_dose: np.ndarray, contig: np.ndarray, pos: np.ndarray,
           val_dose: np.ndarray, val_y: np.ndarray, mean: np.ndarray) -> CTScore:
    """The C+T score whose (r², p) pair scores the validation people best."""
    best: CTScore | None = None
    p = stats.p
    val = mean_imputed(val_dose, mean)
    for r2 in R2_THRESHOLDS:
        kept = clump(stats, ld_dose, contig, pos, r2)
        for threshold in P_THRESHOLDS:
            chosen = kept[p[kept] <= threshold]
            if not len(chosen):
                continue
            w = np.zeros_like(stats.beta)
            w[chosen] = stats.beta[chosen]
            auc = _auroc(val_y, val @ w)
            if best is None or auc > best.validation_auroc:
                best = CTScore(w, mean, r2, threshold, len(chosen), auc)
    if best is None:  # nothing testable: a constant score
        return CTScore(np.zeros_like(stats.beta), mean, R2_THRESHOLDS[0], 0.0, 0, 0.5)
    return best


def site_stats(dose: np.ndarray, y: np.ndarray, site: np.ndarray,
               keep: np.ndarray | None = None) -> tuple[list[SummaryStats], list[str]]:
    """Each site's GWAS on its own people (within `keep`), strata too small left out."""
    parts, used = [], []
    for name in sorted(set(site)):
        mask = site == name
        if keep is not None:
            mask &= keep
        if mask.sum() < MIN_STRATUM_PEOPLE or y[mask].sum() < MIN_STRATUM_CASES:
            continue
        parts.append(association(dose[mask], y[mask]))
        used.append(str(name))
    return parts, used


def multi_ancestry_weights(scores: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Weights combining per-ancestry scores for one target ancestry, fitted on its validation
    people (standardised scores, a lightly penalised logistic regression)."""
    from sklearn.linear_model import LogisticRegression

    sd = scores.std(0)
    sd = np.where(sd > 0, sd, 1.0)
    if not 0 < y.sum() < len(y):
        return np.ones(scores.shape[1]) / sd
    fit = LogisticRegression(C=1.0, max_iter=2000).fit(scores / sd, y)
    return fit.coef_[0] / sd


def ct_baselines(
    discovery: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    validation: tuple[np.ndarray, np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    contig: np.ndarray, pos: np.ndarray, populations: tuple[str, ...],
) -> dict[str, Any]:
    """Held-out scores of the single- and multi-ancestry meta-analysed C+T scores.

    discovery: (dosages, labels, ancestry, site) of the people whose sites run the GWAS;
    validation: (dosages, labels, ancestry) for choosing thresholds and weights (and the LD
    reference); test: (dosages, ancestry) to score."""
    d_dose, d_y, d_anc, d_site = discovery
    v_dose, v_y, v_anc = validation
    t_dose, t_anc = test
    mean = np.nanmean(d_dose, axis=0)
    mean = np.where(np.isfinite(mean), mean, 0.0)

    parts, used = site_stats(d_dose, d_y, d_site)
    if not parts:
        raise RuntimeError(f"no site has {MIN_STRATUM_PEOPLE} people and "
                           f"{MIN_STRATUM_CASES} cases to run a GWAS on")
    single = fit_ct(meta_analyse(parts), v_dose, contig, pos, v_dose, v_y, mean)
    out: dict[str, Any] = {"single": {"scores": single.score(t_dose),
                                      "fit": {**single.describe(), "sites": used}}}

    per_pop: dict[str, CTScore] = {}
    fits: dict[str, Any] = {}
    for pop in populations:
        parts, used = site_stats(d_dose, d_y, d_site, keep=d_anc == pop)
        in_pop = v_anc == pop
        if not parts or not in_pop.any():
            fits[pop] = {"skipped": "no site stratum large enough"}
            continue
        per_pop[pop] = fit_ct(meta_analyse(parts), v_dose[in_pop], contig, pos, v_dose[in_pop],
                              v_y[in_pop], mean)
        fits[pop] = {**per_pop[pop].describe(), "sites": used}
    names = sorted(per_pop)
    if not names:  # no ancestry stratum anywhere is large enough: nothing to combine
        out["multi"] = {"scores": out["single"]["scores"],
                        "fit": {"per_ancestry": fits, "components": [],
                                "note": "no per-ancestry meta-analysis possible; the single "
                                        "score stands in"}}
        return out
    v_scores = np.stack([per_pop[n].score(v_dose) for n in names], 1)
    t_scores = np.stack([per_pop[n].score(t_dose) for n in names], 1)
    combined = np.zeros(len(t_anc))
    weights: dict[str, list[float]] = {}
    for pop in populations:
        w = multi_ancestry_weights(v_scores[v_anc == pop], v_y[v_anc == pop])
        weights[pop] = [float(x) for x in w]
        combined[t_anc == pop] = t_scores[t_anc == pop] @ w
    out["multi"] = {"scores": combined,
                    "fit": {"per_ancestry": fits, "components": names,
                            "weights_by_target": weights}}
    return out
