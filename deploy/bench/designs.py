"""Benchmark section `designs`: what joining is worth as hospitals join, in the spread design.

The utility section measures today's three skewed hospitals (each mostly one ancestry). Here the
cohort is the SPREAD design (`deploy.simulate`, `design="spread"`): 8 sites of unequal size
(400 to 1,500 people in proportion), every ancestry near a third of every site, where pooling
matters most. Hospitals join in one seeded random order; for 1, 2, 4 and 8 joined sites:

- `federated_dp`: the real federation (Flower's simulation engine) of the joined sites only,
  with the utility section's run settings, each site on a fresh privacy budget;
- `best_site_alone`: per population, the best joined site's own L2-logistic score, without DP
  (what a hospital has without joining);
- `pooled_linear`: the L2-logistic score on every joined site's training people pooled, without
  DP (the ceiling no consortium may legally compute).

Every point is scored on the same people: the held-out split of ALL 8 sites. At 8 sites the
meta-analysed GWAS C+T scores are added (`deploy.bench.baselines.meta_gwas`), so the spread
design has the same comparisons as the skewed one (as figures; the goals are judged on the
skewed design in `utility`).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from client.identity import IDENTITY
from client.privacy_state import BINDING
from client.train import pick_device, predict_logits
from deploy.bench.baselines import meta_gwas
from deploy.bench.common import say
from deploy.bench.utility import (
    QUICK_RUN,
    CohortData,
    auroc_by_population,
    federated_model,
    linear_prs,
    load_cohort,
)
from deploy.federation import run_simulation
from deploy.simulate import POPULATIONS, SimulationConfig, register_sites, simulate_cohort
from shared.runconfig import RunSettings

FULL = SimulationConfig(seed=0, sites=8, people_per_population=2600, design="spread")
FULL_JOINED = (1, 2, 4, 8)
FULL_ROUNDS = 5
QUICK = SimulationConfig(seed=5, sites=4, people_per_population=300, sequence_length=200_000,
                         panel_size=32, n_causal=8, n_interactions=2, prevalence=0.3,
                         design="spread")
QUICK_JOINED = (1, 2, 4)
QUICK_ROUNDS = 1
JOIN_SEED = 2026


def join_order(sites: list[str], seed: int = JOIN_SEED) -> list[str]:
    """The order hospitals join in: one seeded random permutation, fixed for every point."""
    return [sites[i] for i in np.random.default_rng(seed).permutation(len(sites))]


def joined_cohort(cohort: Path, sites: list[str], dst: Path) -> Path:
    """A cohort folder holding only `sites`, renamed site-1..site-k (the federation's simulated
    nodes read `site-<n>`), each with fresh keys and no spent budget, and its registry."""
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    for item in cohort.iterdir():
        if item.is_file() and item.name != "site-registry.json":
            shutil.copy2(item, dst / item.name)
    for k, name in enumerate(sites):
        shutil.copytree(cohort / name, dst / f"site-{k + 1}",
                        ignore=lambda _d, names: {n for n in names
                                                  if n in (".genofed-state", BINDING, IDENTITY)})
    register_sites(dst)
    return dst


def _subset(data: CohortData, sites: list[str]) -> CohortData:
    keep = np.isin(data.train.site, sites)
    return dataclasses.replace(data, train=data.train.subset(keep), sites=list(sites))


def best_alone(data: CohortData, sites: list[str], seed: int) -> dict[str, dict[str, Any]]:
    """Per population the best of the joined sites' own L2-logistic scores (no DP)."""
    best: dict[str, dict[str, Any]] = {p: {"auroc": None, "site": None} for p in POPULATIONS}
    for name in sites:
        scores, _ = linear_prs(_subset(data, [name]), seed)
        for pop, auc in auroc_by_population(scores, data.test).items():
            if auc is not None and (best[pop]["auroc"] is None or auc > best[pop]["auroc"]):
                best[pop] = {"auroc": auc, "site": name}
    return best


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    config = QUICK if quick else FULL
    joined = QUICK_JOINED if quick else FULL_JOINED
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    extra: dict[str, object] = dict(QUICK_RUN) if quick else {}
    cohort_dir = work_dir / "cohort"
    say("designs", f"simulating the spread design ({config.sites} sites, "
                   f"{config.people_per_population} people per population)")
    meta = simulate_cohort(cohort_dir, config, force=True)
    settings = RunSettings.from_run_config({"num-server-rounds": rounds, **extra})
    data = load_cohort(cohort_dir, settings)
    order = join_order(data.sites)
    device = pick_device()

    curve: list[dict[str, Any]] = []
    for k in joined:
        sites = order[:k]
        root = joined_cohort(cohort_dir, sites, work_dir / f"joined-{k}")
        say("designs", f"{k} site(s) joined ({', '.join(sites)}): federated DP, "
                       f"{rounds} rounds")
        began = time.perf_counter()
        overrides = {"num-server-rounds": rounds, "min-sites": k, "data-root": str(root),
                     "out-dir": str(work_dir / f"run-{k}"), "seed": config.seed, **extra}
        run_simulation(overrides, k, work_dir / f"federation-{k}", timeout=3000)
        seconds = time.perf_counter() - began
        fed = predict_logits(federated_model(work_dir / f"run-{k}"), data.test.genotypes,
                             data.features, device)
        pooled, _ = linear_prs(_subset(data, sites), settings.seed)
        curve.append({
            "sites": k, "joined": sites,
            "n_train": int(np.isin(data.train.site, sites).sum()),
            "federated_dp": auroc_by_population(fed, data.test),
            "best_site_alone": best_alone(data, sites, settings.seed),
            "pooled_linear": auroc_by_population(pooled, data.test),
            "federated_s": seconds,
        })

    say("designs", "meta-analysed GWAS C+T scores of all sites")
    assert data.contig is not None
    gwas = meta_gwas(data, data.contig, POPULATIONS, settings.seed)
    full = {"meta_gwas": auroc_by_population(gwas["single"]["scores"], data.test),
            "meta_gwas_multi": auroc_by_population(gwas["multi"]["scores"], data.test)}
    sizes = {name: info["n"] for name, info in meta["sites"].items()}
    mix = {name: {p: round(v / info["n"], 3) for p, v in info["by_ancestry"].items()}
           for name, info in meta["sites"].items()}
    return {
        "design": config.design,
        "gain_curve": curve,
        "all_sites": full,
        "site_sizes": sizes,
        "site_mix": mix,
        "join_order": order,
        "held_out": {pop: int((data.test.ancestry == pop).sum()) for pop in POPULATIONS},
        "settings": {"cohort": dataclasses.asdict(config), "rounds": rounds,
                     "run_overrides": extra, "target_epsilon": settings.target_epsilon},
        "note": ("every point is scored on the held-out people of all sites; the federated run "
                 "holds only the joined sites, each on a fresh budget; best_site_alone and "
                 "pooled_linear are L2-logistic scores without DP (C by 5-fold CV)"),
    }
