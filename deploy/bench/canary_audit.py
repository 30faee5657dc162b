"""Empirical privacy audits of a site's releases, in one training run each.

Steinke, Nasr & Jagielski (2023), "Privacy auditing with one (1) training run": put m canaries
into the data, each with probability 1/2, run the real mechanism once, score every canary from
what the mechanism released, guess the top r/2 scores "in" and the bottom r/2 "out", and turn
the number of correct guesses into a 95% lower bound on the epsilon the mechanism can have
(`epsilon_lower_bound`). A lower bound above the epsilon a site reports falsifies the claim.

- **White box** (`gradient_canary_audit`): m gradient canaries of norm exactly C, each on its
  own coordinate of an extra read-out the real people never move, trained through the site's
  own DP-SGD (`client.train.run_dp_sgd`: the same Opacus optimizer, Poisson sampler, noise
  source and plan) at a noise multiplier calibrated to the claimed epsilon. Two scorers read
  the released weights: `plain` (each canary's coordinate of the update) and `replay`, a
  coordinator that knows everything public (run config, seed, round, site name) and replays
  the training on zeros with DP randomness seeded from those, as the reviewed code seeded it,
  subtracting the replayed update. With `public_seed=True` the training itself is seeded that
  way: the vulnerable configuration, which the replay scorer must catch.
- **Black box** (`canary_people_audit`): m canary people with random genotypes in the site's
  cohort, half of them in it; of those, half in the training split and half held out. The
  site's real `Site.fit` and `Site.evaluate` run, and the attacker scores each canary from
  everything the coordinator receives: the released model's loss on the canary (training
  canaries) and, for held-out canaries, the noisy evaluation count in the canary's own (group,
  class, bin) cell, the bin being where the released model scores it. The counts leave only as
  the noisy training size, one number for all canaries, which ranks none of them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.stats
import torch
import torch.nn.functional as F
from torch.utils.data import TensorDataset

from client.randomness import DPRandomness
from client.site import Site
from client.train import DPPlan, pick_device, predict_logits, run_dp_sgd
from shared.metrics import logit_to_bin
from shared.model import RiskTransformer
from shared.privacy import calibrate_noise
from shared.tokenizer import GT_MISSING

BETA = 0.05  # 1 - confidence of the lower bound
GUESS_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # r / m tried; Bonferroni over them


def p_value(m: int, r: int, v: int, epsilon: float, delta: float) -> float:
    """P[at least v of r guesses right] for an (epsilon, delta)-DP mechanism with m canaries
    each included with probability 1/2 (Steinke et al. 2023, Theorem 5.2 as they compute it)."""
    q = 1 / (1 + math.exp(-epsilon))  # accuracy of epsilon-DP randomized response
    beta = scipy.stats.binom.sf(v - 1, r, q)  # P[Binomial(r, q) >= v]
    # alpha = max over i of P[v > Binomial(r, q) >= v - i] / i
    i = np.arange(1, v + 1)
    alpha = float(np.max(np.cumsum(scipy.stats.binom.pmf(v - i, r, q)) / i)) if v else 0.0
    return min(1.0, float(beta) + alpha * delta * 2 * m)


def epsilon_lower_bound(m: int, r: int, v: int, delta: float, beta: float = BETA) -> float:
    """The largest epsilon the guesses rule out at confidence 1 - beta (0 when none is)."""
    if not 0 <= v <= r <= m:
        raise ValueError("need 0 <= v <= r <= m")
    if p_value(m, r, v, 0.0, delta) >= beta:
        return 0.0
    lo, hi = 0.0, 1.0
    while p_value(m, r, v, hi, delta) < beta:
        lo, hi = hi, hi * 2
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if p_value(m, r, v, mid, delta) < beta else (lo, mid)
    return lo


def audit_scores(scores: np.ndarray, included: np.ndarray, delta: float) -> dict[str, Any]:
    """Guess the top r/2 in and the bottom r/2 out for each r in GUESS_FRACTIONS of m; the
    bound is the best of them at confidence 1 - BETA / len(GUESS_FRACTIONS) each."""
    m = len(scores)
    order = np.argsort(-scores, kind="stable")
    best = {"epsilon_lb": 0.0, "r": 0, "correct": 0}
    for fraction in GUESS_FRACTIONS:
        half = max(1, int(m * fraction) // 2)
        top, bottom = order[:half], order[-half:]
        v = int(included[top].sum() + (~included[bottom]).sum())
        bound = epsilon_lower_bound(m, 2 * half, v, delta, BETA / len(GUESS_FRACTIONS))
        if bound > best["epsilon_lb"] or best["r"] == 0:
            best = {"epsilon_lb": bound, "r": 2 * half, "correct": v}
    return best


def public_seed(site: str, run_seed: int, server_round: int) -> int:
    """What the reviewed code seeded its DP randomness with: all of it public."""
    digest = hashlib.sha256(f"{site}/{run_seed}/{server_round}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


class CanaryModel(torch.nn.Module):
    """The risk model plus a read-out of m coordinates that only canaries move.

    Real people: logit = model(x) (their canary input is 0). Canary j: its output is the j-th
    read-out weight alone (the model's part is multiplied by 0), and its loss is -C times that,
    so its gradient is exactly -C on coordinate j and 0 everywhere else: norm C.
    """

    def __init__(self, model: RiskTransformer, m: int) -> None:
        super().__init__()
        self.model = model
        self.canary = torch.nn.Linear(m, 1, bias=False)
        torch.nn.init.zeros_(self.canary.weight)

    def forward(self, x: torch.Tensor, z: torch.Tensor, is_canary: torch.Tensor,
                features: Any) -> torch.Tensor:
        return self.model(x, features) * (1 - is_canary) + self.canary(z).squeeze(-1)


@dataclass(frozen=True)
class AuditSetup:
    """One white-box audit's training: the site's people, the model and the DP settings."""

    genotypes: np.ndarray
    labels: np.ndarray
    features: Any
    model_cfg: Any
    batch_size: int
    epochs: int
    learning_rate: float
    max_grad_norm: float
    optimizer: str = "sgd"
    delta: float = 1e-5
    accountant: str = "prv"
    site: str = "site-1"
    run_seed: int = 0
    server_round: int = 1


def _canary_training(setup: AuditSetup, included: np.ndarray, plan: DPPlan, sigma: float,
                     randomness: DPRandomness, zeros: bool = False) -> np.ndarray:
    """The canary read-out's weights after DP-SGD on the real people plus the included
    canaries (or, `zeros`, on all-missing people of the same number and no canary)."""
    m = len(included)
    n = len(setup.labels)
    x_real = np.full_like(setup.genotypes, GT_MISSING) if zeros else setup.genotypes
    idx = np.flatnonzero(included) if not zeros else np.empty(0, dtype=int)
    x = np.concatenate([x_real, np.full((len(idx), x_real.shape[1]), GT_MISSING)])
    y = np.concatenate([np.zeros(n) if zeros else setup.labels, np.zeros(len(idx))])
    z = np.zeros((n + len(idx), m), dtype=np.float32)
    z[n + np.arange(len(idx)), idx] = 1.0
    flag = np.concatenate([np.zeros(n), np.ones(len(idx))])
    ds = TensorDataset(torch.as_tensor(x, dtype=torch.long),
                       torch.as_tensor(y, dtype=torch.float32), torch.as_tensor(z),
                       torch.as_tensor(flag, dtype=torch.float32))
    torch.manual_seed(setup.run_seed)  # the initial weights: public, like the coordinator's
    model = CanaryModel(RiskTransformer(setup.model_cfg), m)
    device = pick_device()
    features = setup.features.to(device)
    clip = setup.max_grad_norm

    def loss_fn(dp_model: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        xb, yb, zb, cb = batch
        out = dp_model(xb, zb, cb, features)
        if not len(xb):
            return out.sum()
        real = F.binary_cross_entropy_with_logits(out, yb, reduction="none") * (1 - cb)
        return (real - clip * out * cb).sum()

    run_dp_sgd(model, ds, loss_fn, plan=plan, learning_rate=setup.learning_rate,
               noise_multiplier=sigma, max_grad_norm=clip, device=device,
               optimizer=setup.optimizer, randomness=randomness)
    return model.canary.weight.detach().cpu().double().numpy().ravel()


def gradient_canary_audit(
    setup: AuditSetup, claimed_epsilon: float, m: int, public_seed_training: bool = False,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """White-box audit of one site's DP-SGD at `claimed_epsilon` with m gradient canaries."""
    rng = rng or np.random.default_rng()
    included = rng.random(m) < 0.5
    n_planned = len(setup.labels) + m / 2  # the expected size, public like the released one
    plan = DPPlan.for_site(n_planned, setup.batch_size, setup.epochs)
    sigma = calibrate_noise(claimed_epsilon, setup.delta, plan.sample_rate, plan.steps,
                            accountant=setup.accountant)
    seed = public_seed(setup.site, setup.run_seed, setup.server_round)
    training = DPRandomness(seed) if public_seed_training else DPRandomness.secret()
    released = _canary_training(setup, included, plan, sigma, training)
    replayed = _canary_training(setup, included, plan, sigma, DPRandomness(seed), zeros=True)
    scorers = {"plain": released, "replay": released - replayed}
    return {
        "claimed_epsilon": claimed_epsilon,
        "delta": setup.delta,
        "accountant": setup.accountant,
        "canaries": m,
        "included": int(included.sum()),
        "noise_multiplier": sigma,
        "sample_rate": plan.sample_rate,
        "steps": plan.steps,
        "training_randomness": "public seed (vulnerable)" if public_seed_training else "secret",
        "scorers": {name: audit_scores(s, included, setup.delta) for name, s in scorers.items()},
    }


# --- black box: canary people through the site's own fit and evaluate ----------------------


class _CanarySite(Site):
    """The real Site with canary people appended to its data (in memory only)."""

    def __init__(self, *args: Any, augmented: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._augmented = augmented

    def data(self, panel_sha256: str = "") -> Any:
        return self._augmented


def canary_people_audit(
    site_dir: Path, settings: Any, m: int, rng: np.random.Generator | None = None,
    budget: Any = None,
) -> dict[str, Any]:
    """Black-box audit: canary people in the site's training and held-out splits, attacked
    through the released weights and the released evaluation histograms."""
    from server.strategy import initial_weights
    from shared.metrics import GroupedScores

    rng = rng or np.random.default_rng()
    site = Site(site_dir, settings, budget=budget)
    data = site.data()
    cohort = data.cohort
    included = rng.random(m) < 0.5
    held_out = rng.random(m) < 0.5  # where a canary goes if it is included
    groups = np.array(data.vocabulary)[rng.integers(0, len(data.vocabulary), m)]
    labels = rng.integers(0, 2, m)
    genotypes = rng.integers(0, 3, (m, data.genotypes.shape[1])).astype(data.genotypes.dtype)
    keep = np.flatnonzero(included)
    augmented_cohort = dataclasses.replace(
        cohort,
        sample_id=np.concatenate([cohort.sample_id, [f"CANARY{i}" for i in keep]]),
        ancestry=np.concatenate([cohort.ancestry, groups[keep]]),
        phenotype=np.concatenate([cohort.phenotype, labels[keep]]),
        split=np.concatenate([cohort.split, np.where(held_out[keep], "test", "train")]),
        **_extra_columns(cohort, len(keep)),
    )
    augmented = dataclasses.replace(data, cohort=augmented_cohort,
                                    genotypes=np.concatenate([data.genotypes, genotypes[keep]]))
    canary_site = _CanarySite(site_dir, settings, budget=site.budget, augmented=augmented)
    cfg = settings.model_config(len(data.panel))
    weights = initial_weights(cfg, settings.seed)
    fit = canary_site.fit(weights, 1, "audit", data.panel.sha256)
    if fit.metrics["declined"]:
        raise RuntimeError(f"the site declined the audit's round: {fit.metrics.get('reason')}")
    evaluation = canary_site.evaluate(fit.weights, "audit", settings.num_server_rounds,
                                      data.panel.sha256, center=settings.score_center).metrics
    model = canary_site.model(data, fit.weights)
    logits = predict_logits(model, genotypes, data.features, site.device)
    loss = F.binary_cross_entropy_with_logits(torch.as_tensor(logits, dtype=torch.float64),
                                              torch.as_tensor(labels, dtype=torch.float64),
                                              reduction="none").numpy()
    released = GroupedScores()
    if "scores" in evaluation:
        released = GroupedScores.from_json(
            str(evaluation["scores"]),
            settings.score_center if settings.score_centering == "fixed" else None)
    bins = logit_to_bin(logits, released.center)  # the bins the site actually used
    cell = np.array([_cell(released, g, y, b) for g, y, b in zip(groups, labels, bins,
                                                                   strict=True)])
    train_side, test_side = ~held_out, held_out
    results = {
        "canaries": m, "included": int(included.sum()),
        "claimed_epsilon": float(fit.metrics["epsilon"]),
        "epsilon_after_evaluation": float(evaluation.get("epsilon", fit.metrics["epsilon"])),
        "delta": float(fit.metrics["delta"]),
        "scorers": {
            # members of the training split: the released model fits them better
            "weights_loss": audit_scores(-loss[train_side], included[train_side],
                                         float(fit.metrics["delta"])),
            # held-out canaries: their own cell of the released evaluation histogram
            "evaluation_cell": audit_scores(cell[test_side], included[test_side],
                                            float(fit.metrics["delta"])),
        },
    }
    return results


def _cell(scores: Any, group: str, label: int, b: int) -> float:
    stats = scores.groups.get(str(group))
    if stats is None:
        return 0.0
    return float((stats.hist_case if label == 1 else stats.hist_control)[b])


def _extra_columns(cohort: Any, k: int) -> dict[str, Any]:
    """Covariates (and any other per-person column) padded for the k canaries."""
    extra = {}
    for f in dataclasses.fields(cohort):
        value = getattr(cohort, f.name)
        if f.name in ("sample_id", "ancestry", "phenotype", "split"):
            continue
        if isinstance(value, np.ndarray) and value.ndim >= 1 and len(value) == len(
                cohort.sample_id):
            pad = np.zeros((k, *value.shape[1:]), dtype=value.dtype)
            if np.issubdtype(value.dtype, np.floating):
                pad[:] = np.nan
            extra[f.name] = np.concatenate([value, pad])
    return extra
