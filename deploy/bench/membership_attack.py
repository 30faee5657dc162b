"""Benchmark section `membership_attack`: does the released model give its training people away?

A loss-threshold membership-inference attack (Yeom et al. 2018) on a final model: the attacker
scores each person by minus the model's loss on them (members, having been trained on, tend to
have lower loss) and the attack's AUROC separates members from non-members; 0.5 is guessing.

One hospital's people (a one-site simulated cohort): `members` = a random subset of its training
split, the ONLY people the model is trained on; `non-members` = as many of its held-out (test
split) people, never seen. The same model (demo architecture, same initial weights and batch
size) is trained twice for the same number of epochs:

- with DP-SGD (`client.train.train_dp`, epsilon = 8 at delta = 1e-5 over the whole training,
  noise multiplier from `shared.privacy.calibrate_noise`, the site's default settings),
  FULL_DP_TRAININGS times with seeds seed, seed + 1, ...: `dp_auroc` is their mean, each
  under `dp_runs`;
- without DP (plain minibatch Adam at `deploy.bench.utility.PLAIN_LEARNING_RATE`), for enough epochs
  to fit the members closely.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score, roc_curve

from client.data import load_site
from client.train import DPPlan, pick_device, predict_logits, train_dp
from deploy.bench.common import say
from deploy.bench.utility import PLAIN_LEARNING_RATE, fresh_model, train_plain
from deploy.simulate import SimulationConfig, simulate_cohort
from shared.metrics import auroc_ci
from shared.privacy import calibrate_noise, epsilon_for
from shared.runconfig import RunSettings

FULL = SimulationConfig(seed=21, sites=1, people_per_population=300)
FULL_MEMBERS = 200
FULL_EPOCHS = 60
FULL_RUN: dict[str, object] = {}  # the demo model and DP settings (pyproject defaults)
# DP trainings (seeds seed, seed + 1, ...) whose attack AUROCs are averaged: on 200 members
# vs 200 non-members one training's figure moves by ~0.02-0.05.
FULL_DP_TRAININGS = 3
QUICK = SimulationConfig(
    seed=21, sites=1, people_per_population=60, sequence_length=200_000, panel_size=32,
    n_causal=8, n_interactions=2, prevalence=0.3,
)
QUICK_MEMBERS = 40
QUICK_EPOCHS = 3
QUICK_RUN: dict[str, object] = {"model-dim": 16, "model-layers": 1, "model-heads": 2}
QUICK_DP_TRAININGS = 2


def per_person_loss(model, genotypes, labels, features) -> np.ndarray:  # type: ignore[no-untyped-def]
    logits = predict_logits(model, genotypes, features, pick_device())
    return F.binary_cross_entropy_with_logits(
        torch.as_tensor(logits, dtype=torch.float64), torch.as_tensor(labels, dtype=torch.float64),
        reduction="none",
    ).numpy()


def delong_ci(truth: np.ndarray, score: np.ndarray, level: float = 0.95) -> list[float]:
    """DeLong interval for the attack's AUROC, exact on raw scores: every distinct score is its
    own bin of `shared.metrics.auroc_ci`.

    Why report it: on a few hundred people one attack's AUROC is uncertain by several
    hundredths, as much as the distance between a met and a missed goal."""
    values, bin_of = np.unique(score, return_inverse=True)
    cases = np.bincount(bin_of[truth == 1], minlength=len(values))
    controls = np.bincount(bin_of[truth == 0], minlength=len(values))
    return list(auroc_ci(cases, controls, level))


def attack(model, members, nonmembers, features) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """AUROC (with its 95% DeLong interval over the people) and best TPR - FPR of the score
    -loss for members vs non-members."""
    loss_in = per_person_loss(model, members[0], members[1], features)
    loss_out = per_person_loss(model, nonmembers[0], nonmembers[1], features)
    truth = np.r_[np.ones(len(loss_in)), np.zeros(len(loss_out))]
    score = -np.r_[loss_in, loss_out]
    fpr, tpr, _ = roc_curve(truth, score)
    logits_in = predict_logits(model, members[0], features, pick_device())
    logits_out = predict_logits(model, nonmembers[0], features, pick_device())
    return {
        "auroc": float(roc_auc_score(truth, score)),
        "auroc_ci": delong_ci(truth, score),
        "advantage": float(np.max(tpr - fpr)),
        "member_loss": float(loss_in.mean()),
        "nonmember_loss": float(loss_out.mean()),
        "member_disease_auroc": float(roc_auc_score(members[1], logits_in)),
        "nonmember_disease_auroc": float(roc_auc_score(nonmembers[1], logits_out)),
    }


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    config = QUICK if quick else FULL
    n_members = QUICK_MEMBERS if quick else FULL_MEMBERS
    epochs = QUICK_EPOCHS if quick else FULL_EPOCHS
    trainings = QUICK_DP_TRAININGS if quick else FULL_DP_TRAININGS
    settings = RunSettings.from_run_config(QUICK_RUN if quick else FULL_RUN)
    cohort_dir = work_dir / "cohort"
    say("membership_attack", "simulating a one-site cohort")
    simulate_cohort(cohort_dir, config, force=True)
    data = load_site(cohort_dir / "site-1", settings.encoder(), None)
    g_train, y_train, _ = data.split("train")
    g_test, y_test, _ = data.split("test")
    n = min(n_members, len(y_train), len(y_test))
    rng = np.random.default_rng(config.seed)
    pick_in = np.sort(rng.choice(len(y_train), n, replace=False))
    pick_out = np.sort(rng.choice(len(y_test), n, replace=False))
    members = (g_train[pick_in], y_train[pick_in].astype(np.int64))
    nonmembers = (g_test[pick_out], y_test[pick_out].astype(np.int64))
    cfg = settings.model_config(len(data.panel))

    say("membership_attack", f"training without DP: {n} members, {epochs} epochs")
    began = time.perf_counter()
    plain = fresh_model(cfg, settings.seed)
    losses, _ = train_plain(plain, *members, data.features, epochs=epochs,
                            batch_size=settings.batch_size, learning_rate=PLAIN_LEARNING_RATE,
                            seed=settings.seed)
    nondp_s = time.perf_counter() - began
    nondp = attack(plain, members, nonmembers, data.features)

    plan = DPPlan.for_site(n, settings.batch_size, epochs, settings.max_steps_per_epoch)
    sigma = calibrate_noise(settings.target_epsilon, settings.target_delta, plan.sample_rate,
                            plan.steps)
    dp_runs: list[dict[str, Any]] = []
    began = time.perf_counter()
    for k in range(trainings):
        seed = settings.seed + k
        say("membership_attack", f"training with DP-SGD (epsilon {settings.target_epsilon:g}, "
                                 f"seed {seed}): {n} members, {epochs} epochs")
        private = fresh_model(cfg, seed)
        result = train_dp(private, *members, data.features, plan=plan,
                          learning_rate=settings.learning_rate, noise_multiplier=sigma,
                          max_grad_norm=settings.max_grad_norm,
                          device=pick_device(), optimizer=settings.optimizer)
        dp_runs.append({"seed": seed, **attack(private, members, nonmembers, data.features)})
    dp_s = (time.perf_counter() - began) / trainings
    spent = epsilon_for([(sigma, result.sample_rate, result.steps)], settings.target_delta, "prv")
    return {
        "dp_auroc": float(np.mean([r["auroc"] for r in dp_runs])),
        "dp_runs": dp_runs,
        "nondp_auroc": nondp["auroc"],
        "epsilon": spent,
        "target_epsilon": settings.target_epsilon,
        "delta": settings.target_delta,
        "epochs": epochs,
        "noise_multiplier": sigma,
        "dp_steps": result.steps,
        "sample_rate": result.sample_rate,
        "members": n,
        "nonmembers": n,
        "nondp": nondp,
        "nondp_train_loss_by_epoch": losses,
        "dp_train_s": dp_s,
        "nondp_train_s": nondp_s,
        "settings": {
            "cohort": dataclasses.asdict(config), "architecture": settings.architecture(),
            "batch_size": settings.batch_size, "optimizer": settings.optimizer,
            "learning_rate": settings.learning_rate, "plain_learning_rate": PLAIN_LEARNING_RATE,
            "max_grad_norm": settings.max_grad_norm,
        },
        "method": (
            "loss-threshold membership inference: score = -BCE loss of the final model; AUROC "
            "of members (random training people the model was trained on) vs as many held-out "
            "people of the same site; auroc_ci = 95% DeLong interval over those people; "
            "advantage = max(TPR - FPR) over thresholds"
        ),
    }
