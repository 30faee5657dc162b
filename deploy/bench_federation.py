"""Benchmark section `federation`: what a federated round costs beyond the sites' own work.

For 3, 10, 30 and 100 simulated hospitals, the same 4,800 people (one simulated cohort per site
count, same seed, split into that many sites; the smallest site still holds >= 10 people) are
federated for 2 rounds through Flower's real simulation engine (`run_simulation`: SuperLink,
ServerApp, one ClientApp per site on Ray, one CPU per site, so 2 sites at a time here) with a
small model. Method:

- `round_s`: the coordinator's wall time for one whole round, from the modification times of
  the checkpoints it writes right after aggregating each round's updates:
  `mtime(round-002.pt) - mtime(round-001.pt)` = round 2's one round-trip, in which each site
  first scores round 1's aggregate, then trains on it, i.e. a steady-state round (round 1 alone
  also pays Ray start-up, cold VCF loads and each site's one-off noise calibration, so it is not
  used; only the run's last round has an evaluation round-trip of its own, see
  `server/strategy.py`).
- `local_s`: the sites' own work in that round, from the seconds each site reports with its
  reply (`evaluate_s`: `Site.evaluate` of round 1's aggregate; `train_s`: `Site.fit`, data load
  to weights), which the coordinator keeps in results.json under rounds 1 and 2. The round ends
  when its slowest site answers, and `workers` sites run at once (CPUs / CPUs per site), so it
  needs at least `max(sum / workers, longest site)` seconds over each site's evaluate + train.
  Measured inside the real run, so the sites' work is timed under the same load as the round
  (Flower's own processes took ~0.5 CPU-seconds of a 10 s round here, which this counts as the
  sites' time).
- `overhead_s = round_s - local_s` (coordinator, Flower/Ray messaging and scheduling, process
  and data hand-offs, idle workers) and `overhead_fraction = overhead_s / round_s`. Apart from
  that ~5% of a core, `local_s` is a lower bound on the sites' share, so the overhead is an
  upper bound on Flower's.

`bytes_per_update`: the float32 weight arrays one site sends per round (the coordinator sends the
same amount back to each). `secagg_overhead`: 3 sites, 3 rounds, `secagg = true` vs `false`, each
on a fresh copy of the cohort, `round_s` averaged over rounds 2 and 3.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bench_utility import say
from deploy.demo import fresh_copy
from deploy.federation import run_simulation
from server.strategy import initial_weights
from shared.encoding import model_config
from shared.runconfig import RunSettings
from shared.simulate import SimulationConfig, simulate_cohort

FULL_SITES = (3, 10, 30, 100)
QUICK_SITES = (3,)
CPUS_PER_SITE = 1
ROUNDS = 2
SECAGG_ROUNDS_FULL = 3
SECAGG_ROUNDS_QUICK = 2  # quick: the 3-site scaling run doubles as the plain run
RUN_TIMEOUT_S = 1800


def cohort_config(sites: int, quick: bool) -> SimulationConfig:
    if quick:
        return SimulationConfig(
            seed=31, sites=sites, people_per_population=40, sequence_length=200_000,
            panel_size=24, n_causal=6, n_interactions=2, prevalence=0.3,
        )
    # 1,600 per population: with 100 sites the smallest holds 11 people (the simulator's
    # minimum is 10).
    return SimulationConfig(
        seed=31, sites=sites, people_per_population=1600, sequence_length=300_000,
        panel_size=64, n_causal=16, n_interactions=2,
    )


SMALL_MODEL: dict[str, object] = {"model-dim": 16, "model-layers": 1, "model-heads": 2}


def _overrides(cohort: Path, out: Path, sites: int, rounds: int, **extra: object) -> dict:
    return {"num-server-rounds": rounds, "min-sites": sites, "data-root": str(cohort),
            "out-dir": str(out), "seed": 0, **SMALL_MODEL, **extra}


def checkpoint_times(run_dir: Path, rounds: int) -> list[float]:
    """When the coordinator finished aggregating each round (checkpoint mtimes, seconds)."""
    return [(run_dir / "checkpoints" / f"round-{r:03d}.pt").stat().st_mtime_ns / 1e9
            for r in range(1, rounds + 1)]


def steady_round_s(run_dir: Path, rounds: int) -> float:
    """Mean wall time of rounds 2..rounds at the coordinator."""
    times = checkpoint_times(run_dir, rounds)
    return float(np.mean(np.diff(times)))


def federate(cohort: Path, work: Path, sites: int, rounds: int, **extra: object) -> dict:
    """One real federated run; its steady-state round time, whole wall time and round records."""
    run_dir = work / "run"
    began = time.perf_counter()
    run_simulation(_overrides(cohort, run_dir, sites, rounds, **extra), sites, work / "flower",
                   timeout=RUN_TIMEOUT_S, cpus_per_site=CPUS_PER_SITE)
    wall = time.perf_counter() - began
    records = json.loads((run_dir / "results.json").read_text())["rounds"]
    return {"round_s": steady_round_s(run_dir, rounds), "run_s": wall, "rounds": records}


def phase_s(seconds: list[float], workers: int) -> float:
    """Least wall time for sites taking `seconds` each, `workers` at a time, all before the
    phase ends."""
    if not seconds:
        raise RuntimeError("no site reported its time for a phase of the round")
    return max(sum(seconds) / min(workers, len(seconds)), max(seconds))


def bytes_per_update(n_variants: int, settings: RunSettings) -> int:
    cfg = model_config(n_variants, settings.encoder(), **settings.architecture())
    arrays = initial_weights(cfg, settings.seed)
    if any(a.dtype != np.float32 for a in arrays):
        raise RuntimeError("the exchanged weights are expected to be float32")
    return int(sum(a.nbytes for a in arrays))


def scaling(n_sites: int, work: Path, quick: bool, workers: int) -> dict[str, Any]:
    config = cohort_config(n_sites, quick)
    cohort = work / "cohort"
    meta = simulate_cohort(cohort, config, force=True)
    sizes = [info["n"] for info in meta["sites"].values()]
    say("federation", f"{n_sites} sites: {ROUNDS} rounds through Flower's simulation engine")
    fed = federate(fresh_copy(cohort, work / "cohort-run"), work, n_sites, ROUNDS)
    first, second = fed["rounds"][0], fed["rounds"][1]
    if len(second["train_s"]) != n_sites or len(first["evaluate_s"]) != n_sites:
        raise RuntimeError(f"{len(second['train_s'])} of {n_sites} sites reported their "
                           f"training time, {len(first['evaluate_s'])} their evaluation time")
    if set(first["evaluate_s"]) != set(second["train_s"]):
        raise RuntimeError("the sites that scored round 1 are not those that trained round 2")
    evaluate = list(first["evaluate_s"].values())
    train = list(second["train_s"].values())
    local = phase_s([first["evaluate_s"][s] + t for s, t in second["train_s"].items()], workers)
    overhead = fed["round_s"] - local
    return {
        "round_s": fed["round_s"],
        "overhead_fraction": overhead / fed["round_s"],
        "overhead_s": overhead,
        "local_s": local,
        "sites_train_sum_s": float(sum(train)),
        "sites_evaluate_sum_s": float(sum(evaluate)),
        "longest_site_train_s": float(max(train)),
        "run_s": fed["run_s"],
        "people": int(sum(sizes)),
        "smallest_site_people": int(min(sizes)),
        "largest_site_people": int(max(sizes)),
        "panel_variants": int(meta["panel_size"]),
    }


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = max(1, (cpus or 1) // CPUS_PER_SITE)
    counts = QUICK_SITES if quick else FULL_SITES
    load = [os.getloadavg()[0]]
    sites: dict[str, Any] = {}
    for n in counts:
        try:
            sites[str(n)] = scaling(n, work_dir / f"sites-{n}", quick, workers)
        except Exception as err:  # recorded: e.g. 100 sites not fitting this machine
            print(f"  federation: {n} sites failed: {err}", file=sys.stderr, flush=True)
            sites[str(n)] = {"error": f"{type(err).__name__}: {err}"}
        shutil.rmtree(work_dir / f"sites-{n}" / "cohort-run", ignore_errors=True)
        load.append(os.getloadavg()[0])

    say("federation", "SecAgg+ vs plain aggregation, 3 sites")
    work = work_dir / "secagg"
    cohort = work / "cohort"
    simulate_cohort(cohort, cohort_config(3, quick), force=True)
    rounds = SECAGG_ROUNDS_QUICK if quick else SECAGG_ROUNDS_FULL
    if quick and "round_s" in sites.get("3", {}):
        plain = sites["3"]["round_s"]
    else:
        plain = federate(fresh_copy(cohort, work / "plain-cohort"), work / "plain", 3,
                         rounds)["round_s"]
    secure = federate(fresh_copy(cohort, work / "secagg-cohort"), work / "secagg", 3, rounds,
                      secagg=True)["round_s"]
    load.append(os.getloadavg()[0])

    small = RunSettings.from_run_config(SMALL_MODEL)
    panel = cohort_config(3, quick).panel_size
    return {
        "sites": sites,
        "bytes_per_update": bytes_per_update(panel, small),
        "bytes_per_update_demo_model": bytes_per_update(256, RunSettings()),
        "secagg_overhead": {"plain_round_s": plain, "secagg_round_s": secure,
                            "ratio": secure / plain, "rounds": rounds},
        "rounds": ROUNDS,
        "workers": workers,
        "cpus_per_site": CPUS_PER_SITE,
        "model": {**small.architecture(), "panel_variants": panel},
        "cohort": dataclasses.asdict(cohort_config(max(counts), quick)),
        "load_average_1min": load,
        "method": (
            "round_s = mtime(round-002.pt) - mtime(round-001.pt), the coordinator's checkpoints "
            "(round 2's one round-trip: each site scores round 1's aggregate, then trains on it: "
            "one steady-state round); local_s = max(sum / workers, longest) over each site's "
            "reported seconds for that evaluation + that training; overhead_fraction = "
            "(round_s - local_s) / round_s; bytes_per_update = float32 weights one site sends"
        ),
    }
