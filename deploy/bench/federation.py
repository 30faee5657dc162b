"""Benchmark section `federation`: what a federated round costs beyond the sites' own work.

For 3, 10, 30 and 100 simulated hospitals, the same 4,800 people (one simulated cohort per site
count, same seed, split into that many sites; the smallest site still holds >= 10 people) are
federated for 2 rounds through Flower's real simulation engine (`run_simulation`: SuperLink,
ServerApp, one ClientApp per site on Ray, one CPU per site, so 2 sites at a time here) with a
small model. Method:

- `round_s`: the coordinator's wall time for one whole round, from the modification times of
  the checkpoints it writes right after aggregating each round's updates:
  `mtime(round-r.pt) - mtime(round-(r-1).pt)` = round r's one round-trip, in which each site
  first scores round r-1's aggregate, then trains on it, i.e. a steady-state round (round 1 alone
  also pays Ray start-up, cold VCF loads and each site's one-off noise calibration, so it is not
  used; only the run's last round has an evaluation round-trip of its own, see
  `server/strategy.py`, and it comes after the last checkpoint).
- `local_s`: the time in that round during which at least one site was doing its own work.
  Each site logs, in its own state folder (`activity.jsonl`, never sent: timings are about
  its data), the seconds its work took and the Unix time it ended (`train_s`/`train_ended_at`:
  `Site.fit`, data load to weights; `evaluate_s`/`evaluate_ended_at`: `Site.evaluate` of a
  round's model, kept under that round). In a simulation every site's folder is on this
  machine, so the bench reads the logs; the union of those intervals within the round is
  `local_s`. Measured inside the real run, so the sites' work is timed under the same load as
  the round (Flower's own processes count as the sites' time while a site works).
- `overhead_s = round_s - local_s`: the time no site was working (coordinator, Flower/Ray
  messaging and scheduling, process and data hand-offs), and `overhead_fraction = overhead_s
  / round_s`. The least time the sites' work needs on `workers` workers, `max(sum / workers,
  longest site)`, is kept as `local_bound_s`, not used for the overhead: it would count as
  overhead a worker left idle while the other finishes the round's last site, up to one site's
  work at 10 unequal sites on 2 workers (lab notebook, "Federation overhead: the sites' logged
  work, the median of 3 steady rounds").
- The full bench runs 4 rounds, so 3 steady rounds (2, 3, 4), and reports the round with the
  median overhead fraction, every figure from that one round; `per_round` keeps all three. A
  single round's figure moved from one bench to the next (same notebook entry).

`bytes_per_update`: the float32 weight arrays one site sends per round (the coordinator sends the
same amount back to each). `secagg_overhead`: 3 sites, 3 rounds, `secagg = true` vs `false`, each
on a fresh copy of the cohort, `round_s` averaged over rounds 2 and 3.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bench.common import say
from deploy.federation import run_simulation
from deploy.simulate import SimulationConfig, fresh_copy, register_sites, simulate_cohort
from server.outdir import RunFolder
from server.strategy import initial_weights
from shared.runconfig import RunSettings

FULL_SITES = (3, 10, 30, 100)
QUICK_SITES = (3,)
CPUS_PER_SITE = 1
ROUNDS_FULL = 4  # 3 steady rounds: the median of them is reported
ROUNDS_QUICK = 2
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
    return [RunFolder(run_dir).checkpoint(r).stat().st_mtime_ns / 1e9
            for r in range(1, rounds + 1)]


def steady_round_s(run_dir: Path, rounds: int) -> list[float]:
    """Wall time of rounds 2..rounds at the coordinator, in round order."""
    return [float(d) for d in np.diff(checkpoint_times(run_dir, rounds))]


def federate(cohort: Path, work: Path, sites: int, rounds: int, **extra: object) -> dict:
    """One real federated run; its steady-state round time, whole wall time and round records."""
    run_dir = work / "run"
    began = time.perf_counter()
    run_simulation(_overrides(cohort, run_dir, sites, rounds, **extra), sites, work / "flower",
                   timeout=RUN_TIMEOUT_S, cpus_per_site=CPUS_PER_SITE)
    wall = time.perf_counter() - began
    return {"steady_round_s": steady_round_s(run_dir, rounds), "run_s": wall,
            "checkpoint_times": checkpoint_times(run_dir, rounds),
            "rounds": site_rounds(cohort)}


def site_rounds(cohort: Path) -> list[dict[str, Any]]:
    """Each round's site timings, from the sites' own activity logs: training under its round,
    an evaluation under the round whose model it scored."""
    by_round: dict[int, dict[str, Any]] = {}

    def record(r: int) -> dict[str, Any]:
        return by_round.setdefault(r, {"round": r, "train_s": {}, "train_ended_at": {},
                                       "evaluate_s": {}, "evaluate_ended_at": {}})

    for log in sorted(cohort.glob("site-*/.genofed-state/activity.jsonl")):
        for line in log.read_text().splitlines():
            event = json.loads(line)
            if event["event"] == "train":
                rec = record(int(event["round"]))
                rec["train_s"][event["site"]] = float(event["train_s"])
                rec["train_ended_at"][event["site"]] = float(event["train_ended_at"])
            elif event["event"] == "evaluate":
                rec = record(int(event["model_round"]))
                rec["evaluate_s"][event["site"]] = float(event["evaluate_s"])
                rec["evaluate_ended_at"][event["site"]] = float(event["evaluate_ended_at"])
    return [by_round[r] for r in sorted(by_round)]


def busy_s(intervals: list[tuple[float, float]], window: tuple[float, float]) -> float:
    """Seconds of `window` during which at least one of `intervals` was under way."""
    lo, hi = window
    clipped = sorted((max(a, lo), min(b, hi)) for a, b in intervals if min(b, hi) > max(a, lo))
    total, reach = 0.0, lo
    for a, b in clipped:
        if b > reach:
            total += b - max(a, reach)
            reach = b
    return total


def round_costs(ends: list[float], records: list[dict], workers: int) -> list[dict[str, Any]]:
    """Each steady round's wall time split into the sites' own work and the rest.

    `ends[i]` is when round i + 1's checkpoint was written, so round r (r >= 2) runs from
    ends[r - 2] to ends[r - 1]. Its sites' work is their evaluation of round r-1's aggregate
    (kept under that round) and their training in round r, each reported with its seconds and
    the Unix time it ended: `local_s` is the time in the round during which at least one site
    was at work, `overhead_s` the rest, when no site was. `local_bound_s` is the least time
    the same work needs on `workers` workers (the bound used before sites reported when their
    work ended): the gap between the two is workers left idle by the simulation's packing of
    unequal sites, not time spent by the coordinator.
    """
    by_round = {int(r["round"]): r for r in records}
    costs = []
    for i in range(len(ends) - 1):
        missing = [r for r in (i + 1, i + 2) if r not in by_round]
        if missing:
            raise RuntimeError(f"results.json has no record of round {missing[0]}")
        before, this = by_round[i + 1], by_round[i + 2]
        evaluate, train = before.get("evaluate_s") or {}, this.get("train_s") or {}
        evaluate_end = before.get("evaluate_ended_at") or {}
        train_end = this.get("train_ended_at") or {}
        # With `evaluate-rounds = last` no site scores round r-1's model within round r.
        scored = set(evaluate) == set(evaluate_end) and (
            not evaluate or set(evaluate) == set(train))
        if not (train and set(train) == set(train_end) and scored):
            raise RuntimeError(f"round {i + 2}: {len(train)} sites logged their training "
                               f"time, {len(evaluate)} their evaluation of round {i + 1}, or "
                               "not the same sites, or not when their work ended")
        wall = ends[i + 1] - ends[i]
        intervals = [(evaluate_end[s] - evaluate[s], evaluate_end[s]) for s in evaluate]
        intervals += [(train_end[s] - train[s], train_end[s]) for s in train]
        local = busy_s(intervals, (ends[i], ends[i + 1]))
        costs.append({
            "round": i + 2, "sites": len(train), "round_s": wall, "local_s": local,
            "overhead_s": wall - local, "overhead_fraction": (wall - local) / wall,
            "local_bound_s": phase_s([evaluate.get(s, 0.0) + t for s, t in train.items()],
                                     workers),
            "sites_train_sum_s": float(sum(train.values())),
            "sites_evaluate_sum_s": float(sum(evaluate.values())),
            "longest_site_train_s": float(max(train.values())),
        })
    return costs


def median_round(costs: list[dict[str, Any]]) -> dict[str, Any]:
    """The round whose overhead fraction is the median (the lower middle one for an even count),
    so every reported figure comes from one real round."""
    if not costs:
        raise RuntimeError("no steady round to report")
    ranked = sorted(costs, key=lambda c: c["overhead_fraction"])
    return ranked[(len(ranked) - 1) // 2]


def phase_s(seconds: list[float], workers: int) -> float:
    """Least wall time for sites taking `seconds` each, `workers` at a time, all before the
    phase ends."""
    if not seconds:
        raise RuntimeError("no site reported its time for a phase of the round")
    return max(sum(seconds) / min(workers, len(seconds)), max(seconds))


def bytes_per_update(n_variants: int, settings: RunSettings) -> int:
    cfg = settings.model_config(n_variants)
    arrays = initial_weights(cfg, settings.seed)
    if any(a.dtype != np.float32 for a in arrays):
        raise RuntimeError("the exchanged weights are expected to be float32")
    return int(sum(a.nbytes for a in arrays))


def scaling(n_sites: int, work: Path, quick: bool, workers: int) -> dict[str, Any]:
    config = cohort_config(n_sites, quick)
    cohort = work / "cohort"
    meta = simulate_cohort(cohort, config, force=True)
    register_sites(cohort)  # each site's keys; the coordinator's registry
    sizes = [info["n"] for info in meta["sites"].values()]
    rounds = ROUNDS_QUICK if quick else ROUNDS_FULL
    say("federation", f"{n_sites} sites: {rounds} rounds through Flower's simulation engine")
    fed = federate(fresh_copy(cohort, work / "cohort-run"), work, n_sites, rounds)
    costs = round_costs(fed["checkpoint_times"], fed["rounds"], workers)
    if any(c["sites"] != n_sites for c in costs):
        raise RuntimeError(f"not all {n_sites} sites reported their time in every round")
    reported = median_round(costs)
    return {
        **{k: v for k, v in reported.items() if k not in ("round", "sites")},
        "reported_round": reported["round"],
        "per_round": costs,
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
            say("federation", f"{n} sites failed: {err}")
            sites[str(n)] = {"error": f"{type(err).__name__}: {err}"}
        shutil.rmtree(work_dir / f"sites-{n}" / "cohort-run", ignore_errors=True)
        load.append(os.getloadavg()[0])

    say("federation", "SecAgg+ vs plain aggregation, 3 sites")
    work = work_dir / "secagg"
    cohort = work / "cohort"
    simulate_cohort(cohort, cohort_config(3, quick), force=True)
    register_sites(cohort)  # each site's keys; the coordinator's registry
    rounds = SECAGG_ROUNDS_QUICK if quick else SECAGG_ROUNDS_FULL
    if quick and "round_s" in sites.get("3", {}):
        plain = sites["3"]["round_s"]
    else:
        plain = float(np.mean(federate(fresh_copy(cohort, work / "plain-cohort"), work / "plain",
                                       3, rounds)["steady_round_s"]))
    secure = float(np.mean(federate(fresh_copy(cohort, work / "secagg-cohort"),
                                    work / "secagg", 3, rounds,
                                    secagg=True)["steady_round_s"]))
    load.append(os.getloadavg()[0])

    small = RunSettings.from_run_config(SMALL_MODEL)
    panel = cohort_config(3, quick).panel_size
    return {
        "sites": sites,
        "bytes_per_update": bytes_per_update(panel, small),
        "bytes_per_update_demo_model": bytes_per_update(256, RunSettings()),
        "secagg_overhead": {"plain_round_s": plain, "secagg_round_s": secure,
                            "ratio": secure / plain, "rounds": rounds},
        "rounds": ROUNDS_QUICK if quick else ROUNDS_FULL,
        "workers": workers,
        "cpus_per_site": CPUS_PER_SITE,
        "model": {**small.architecture(), "panel_variants": panel},
        "cohort": dataclasses.asdict(cohort_config(max(counts), quick)),
        "load_average_1min": load,
        "method": (
            "round_s = mtime(round-r.pt) - mtime(round-(r-1).pt), the coordinator's checkpoints "
            "(round r's one round-trip, the default schedule: each site trains on round r-1's "
            "aggregate; a steady-state round, r >= 2); the round with the median "
            "overhead_fraction is reported, all in per_round; local_s = the time within the "
            "round during which at least one site was working (union of each site's training "
            "in round r and any evaluation it made, from the seconds and end times in its own "
            "activity log); overhead_fraction "
            "= (round_s - local_s) / round_s, the time no site was working; local_bound_s = "
            "max(sum / workers, longest), the least time the same work needs on the workers; "
            "bytes_per_update = float32 weights one site sends"
        ),
    }
