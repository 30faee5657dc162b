"""Benchmark measurements `utility.evaluation_noise`: what the sites' DP evaluation releases
cost in per-ancestry AUROC accuracy, and in DP-SGD noise, at each budget split.

On the federated DP model's real held-out scores (each site's own test people), for each
population:

- `exact_auroc`: sklearn's AUROC on the raw scores, pooled over the sites;
- `binned_auroc`: the same from the merged exact histograms (what zero noise would report):
  the binning error alone;
- over `draws` independent releases (every site adds its own Gaussian noise to every bin, as
  `client.release.release_scores` does, and the coordinator merges): `rmse` and `bias` of the
  released AUROC against `exact_auroc`, and `coverage`: how often the coordinator's 95%
  interval (`shared.metrics.auroc_ci`, DeLong plus the noise) holds the exact AUROC;
  `width` / `delong_width`: that interval's mean width against DeLong's alone on exact bins.

`budget_split`: for each evaluation share of the budget, the sigma each evaluation's bins get
(one evaluation per run, the default schedule), the DP-SGD noise multiplier a site of the
largest site's plan then needs (its ratio to a run without evaluation or count releases), and
the AUROC error at that sigma. `bins`: the default share at other numbers of bins (the same
+-3.5 logit span), to choose N_BINS.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from client.budget import SiteBudget
from client.release import COUNT_SENSITIVITY
from client.train import DPPlan
from deploy.simulate import POPULATIONS
from shared.metrics import BIN_WIDTH, N_BINS, auroc_ci, auroc_from_hist
from shared.privacy import calibrate_noise, gaussian_release, sigma_for_share
from shared.runconfig import RunSettings

SHARES = (0.05, 0.1, 0.2, 0.3)
BIN_COUNTS = (8, 12, 16, 24)
SPAN = BIN_WIDTH * (N_BINS - 2)  # logits covered by the inner bins


def edges_for(n_bins: int, center: float) -> np.ndarray:
    width = SPAN / (n_bins - 2)
    return center + width * (np.arange(n_bins - 1) - (n_bins - 2) / 2)


def site_histograms(logits: np.ndarray, labels: np.ndarray, keep: np.ndarray,
                    sites: np.ndarray, edges: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each site's exact (case, control) histograms of the people in `keep`."""
    bins = np.searchsorted(edges, logits, side="right")
    out = []
    for site in np.unique(sites[keep]):
        mine = keep & (sites == site)
        n = len(edges) + 1
        out.append((np.bincount(bins[mine & (labels == 1)], minlength=n).astype(float),
                    np.bincount(bins[mine & (labels == 0)], minlength=n).astype(float)))
    return out


def released_error(
    logits: np.ndarray, labels: np.ndarray, keep: np.ndarray, sites: np.ndarray, sigma: float,
    draws: int, rng: np.random.Generator, n_bins: int = N_BINS, center: float = 0.0,
) -> dict[str, Any]:
    exact = float(roc_auc_score(labels[keep], logits[keep]))
    parts = site_histograms(logits, labels, keep, sites, edges_for(n_bins, center))
    hc = sum(p[0] for p in parts)
    h0 = sum(p[1] for p in parts)
    binned = auroc_from_hist(hc, h0)
    delong = auroc_ci(hc, h0)
    noise_var = len(parts) * sigma**2
    errors, covered, widths = [], 0, []
    for _ in range(draws):
        nc = hc + rng.normal(0.0, sigma, (len(parts), n_bins)).sum(0)
        n0 = h0 + rng.normal(0.0, sigma, (len(parts), n_bins)).sum(0)
        released = auroc_from_hist(nc, n0)
        lo, hi = auroc_ci(nc, n0, noise_var=noise_var)
        if math.isnan(released):
            continue
        errors.append(released - exact)
        covered += lo <= exact <= hi
        widths.append(hi - lo)
    err = np.array(errors)
    return {
        "exact_auroc": exact, "binned_auroc": binned, "binning_error": binned - exact,
        "rmse": float(np.sqrt(np.mean(err**2))), "bias": float(err.mean()),
        "coverage": covered / len(err), "width": float(np.mean(widths)),
        "delong_width": delong[1] - delong[0], "draws": len(err), "sigma": sigma,
        "sites": len(parts),
    }


def by_population(logits: np.ndarray, labels: np.ndarray, ancestry: np.ndarray,
                  sites: np.ndarray, sigma: float, draws: int, rng: np.random.Generator,
                  n_bins: int = N_BINS, center: float = 0.0) -> dict[str, Any]:
    return {pop: released_error(logits, labels, ancestry == pop, sites, sigma, draws, rng,
                                n_bins, center) for pop in POPULATIONS}


def measure(
    logits: np.ndarray, labels: np.ndarray, ancestry: np.ndarray, sites: np.ndarray,
    n_train_largest: int, settings: RunSettings, draws: int, seed: int, center: float,
) -> dict[str, Any]:
    """The section's `evaluation_noise` measurements for one trained model's held-out scores,
    binned around `center` (where the sites bin them: `client.release.public_center`)."""
    rng = np.random.default_rng(seed)
    budget = SiteBudget()
    epsilon, delta = budget.effective(settings.target_epsilon, settings.target_delta)
    default_sigma = sigma_for_share(budget.evaluation_share, epsilon, delta)
    default = by_population(logits, labels, ancestry, sites, default_sigma, draws, rng,
                            center=center)

    plan = DPPlan.for_site(n_train_largest, settings.batch_size, settings.local_epochs,
                           settings.max_steps_per_epoch)
    rounds = settings.num_server_rounds
    counts = gaussian_release(sigma_for_share(budget.count_share, epsilon, delta, releases=2),
                              COUNT_SENSITIVITY)
    training_alone = calibrate_noise(epsilon, delta, plan.sample_rate, plan.steps, blocks=rounds)
    split = []
    for share in SHARES:
        sigma = sigma_for_share(share, epsilon, delta)
        multiplier = calibrate_noise(epsilon, delta, plan.sample_rate, plan.steps, blocks=rounds,
                                     also=[counts, gaussian_release(sigma)])
        errors = by_population(logits, labels, ancestry, sites, sigma, draws, rng,
                               center=center)
        split.append({
            "evaluation_share": share, "sigma": sigma, "noise_multiplier": multiplier,
            "noise_multiplier_ratio": multiplier / training_alone,
            "rmse": {p: e["rmse"] for p, e in errors.items()},
            "coverage": {p: e["coverage"] for p, e in errors.items()},
        })
    bins = []
    for n_bins in BIN_COUNTS:
        errors = by_population(logits, labels, ancestry, sites, default_sigma, draws, rng,
                               n_bins, center)
        bins.append({"n_bins": n_bins, "bin_width": SPAN / (n_bins - 2),
                     "rmse": {p: e["rmse"] for p, e in errors.items()},
                     "binning_error": {p: e["binning_error"] for p, e in errors.items()}})
    return {
        "default": {"evaluation_share": budget.evaluation_share, "count_share":
                    budget.count_share, "sigma": default_sigma, "n_bins": N_BINS,
                    "bin_width": BIN_WIDTH, "bin_center": center, "centering":
                    settings.score_centering, "by_population": default},
        "budget_split": split,
        "training_alone_noise_multiplier": training_alone,
        "plan": {"n_train": n_train_largest, "sample_rate": plan.sample_rate,
                 "steps_per_round": plan.steps, "rounds": rounds},
        "bins": bins,
        "draws": draws,
        "note": "AUROC of the federated DP model's held-out scores as the coordinator would "
                "compute it from the sites' noisy histograms, against the exact pooled AUROC; "
                "epsilon and delta are the run's (the site default budget)",
    }
