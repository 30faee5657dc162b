"""Benchmark section `privacy_audit`: lower bounds on the epsilon a site's releases can have.

`deploy.bench.canary_audit` (Steinke, Nasr & Jagielski 2023, one training run per bound) on one
simulated hospital:

- `white_box`: m gradient canaries through one round of the site's DP-SGD (the demo model and
  settings, `local-epochs` epochs at the site's capped plan), noise calibrated to a claimed
  epsilon of 1 and of 2 with the site's accountant (PRV); scorers `plain` and `replay` (a
  coordinator replaying the training with DP randomness seeded from public values);
- `positive_control`: the same at epsilon 2 with the training seeded from those public values,
  as the reviewed code was: the replay scorer must exceed the claim there, or the audit could
  not have caught the flaw;
- `black_box`: m canary people in the site's cohort through the real `Site.fit` and
  `Site.evaluate` at a site budget of 1 and of 2, scored from the released weights and the
  released evaluation histograms; the claim is the epsilon the site reported after both.

`claims_hold`: every lower bound of `white_box` and `black_box` is at most its claim.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from client.budget import SiteBudget
from client.site import Site
from deploy.bench.canary_audit import AuditSetup, canary_people_audit, gradient_canary_audit
from deploy.bench.common import say
from deploy.simulate import SimulationConfig, fresh_copy, simulate_cohort
from shared.runconfig import RunSettings

FULL = SimulationConfig(seed=23, sites=1, people_per_population=300)
FULL_CANARIES = 1000
FULL_RUN: dict[str, object] = {"num-server-rounds": 1}
QUICK = SimulationConfig(
    seed=23, sites=1, people_per_population=60, sequence_length=200_000, panel_size=32,
    n_causal=8, n_interactions=2, prevalence=0.3,
)
QUICK_CANARIES = 200
QUICK_RUN: dict[str, object] = {"num-server-rounds": 1, "model-dim": 16, "model-layers": 1,
                                "model-heads": 2}
CLAIMS = (1.0, 2.0)


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    config = QUICK if quick else FULL
    m = QUICK_CANARIES if quick else FULL_CANARIES
    settings = RunSettings.from_run_config(QUICK_RUN if quick else FULL_RUN)
    cohort = work_dir / "cohort"
    say("privacy_audit", f"simulating one site ({config.people_per_population} people per "
                         "population)")
    simulate_cohort(cohort, config, force=True)
    site_dir = cohort / "site-1"
    data = Site(site_dir, settings).data()
    g, y, _ = data.split("train")
    cfg = settings.model_config(len(data.panel))
    setup = AuditSetup(
        genotypes=g, labels=y, features=data.features, model_cfg=cfg,
        batch_size=settings.batch_size, epochs=settings.local_epochs,
        learning_rate=settings.learning_rate, max_grad_norm=settings.max_grad_norm,
        optimizer=settings.optimizer, delta=settings.target_delta, run_seed=settings.seed,
    )
    rng = np.random.default_rng()
    white = []
    for claimed in CLAIMS:
        say("privacy_audit", f"white box: {m} gradient canaries at claimed epsilon {claimed:g}")
        white.append(gradient_canary_audit(setup, claimed, m, rng=rng))
    say("privacy_audit", "positive control: the training seeded from public values")
    control = gradient_canary_audit(setup, CLAIMS[-1], m, public_seed_training=True, rng=rng)
    black = []
    for k, claimed in enumerate(CLAIMS):
        say("privacy_audit", f"black box: {m} canary people, site budget {claimed:g}")
        copy = fresh_copy(site_dir, work_dir / f"site-{k}")
        black.append(canary_people_audit(
            copy, RunSettings.from_run_config({**(QUICK_RUN if quick else FULL_RUN),
                                               "target-epsilon": claimed}),
            m, rng=rng, budget=SiteBudget(max_epsilon=claimed)))

    def holds(result: dict[str, Any], claim_key: str) -> bool:
        return all(s["epsilon_lb"] <= result[claim_key] for s in result["scorers"].values())

    return {
        "white_box": white,
        "positive_control": control,
        "positive_control_caught": control["scorers"]["replay"]["epsilon_lb"]
        > control["claimed_epsilon"],
        "black_box": black,
        "claims_hold": all(holds(r, "claimed_epsilon") for r in white)
        and all(holds(r, "epsilon_after_evaluation") for r in black),
        "max_epsilon_lb_over_claim": max(
            [s["epsilon_lb"] / r["claimed_epsilon"] for r in white
             for s in r["scorers"].values()]
            + [s["epsilon_lb"] / r["epsilon_after_evaluation"] for r in black
               for s in r["scorers"].values()]),
        "canaries": m,
        "people": int(len(data.cohort)),
        "note": "epsilon_lb: 95% lower bound (Steinke, Nasr & Jagielski 2023) from the best of "
                "4 guess counts (Bonferroni); a claim is falsified when a bound exceeds it",
    }
