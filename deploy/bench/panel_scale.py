"""Benchmark section `panel_scale`: what a training step costs per person as the panel grows.

The demo's model (`RunSettings` defaults, but for the attention) trains on panels of 256 to
65,536 variants with full attention (every variant attends to every other) and with local
attention (blocks of `attention-window` variants, see `shared.model.SelfAttention._local`),
each as a plain step and as the sites' DP-SGD step (Opacus hooks, `client.train.make_private`).
Every configuration is measured by `deploy.bench.dp_cost`'s own workers: memory by
fresh worker processes (their own peak resident set over the resident set before the first
step, or the CUDA allocator's peak on a GPU), time by one fresh process alternating plain and
DP steps (the median of the pairs). One batch size for every panel, small enough that the
largest panels still run; per-person figures are the step's divided by the batch.

A configuration that would not fit is not started: before each panel, the plain and DP steps'
memory and time are extrapolated from the two panels below it (as measured, a power law with
an exponent from 1 to 2), and a panel whose step would need more than a share of the memory
available now, or whose measurement would take longer than a budget, is recorded as
`skipped: <reason>`; so are the larger panels after it. Every worker runs under a timeout.
On a machine with CUDA the steps run there (`client.train.pick_device`), as a site trains.

Local attention's growth (the goal: its DP step on 16,384 variants against 1,024) is timed
the way dp_cost times DP against plain: one fresh process holds both panels' models and
alternates their steps, and the ratio is the median over the pairs. The rows' own medians come
from different processes minutes apart, and on a shared machine their ratio moves with
whatever else runs. That process runs torch on one thread: on cores shared with other work, a
step's two threads wait for each other at every parallel region, a stall per step that does
not grow with the panel and hides how the work grows (lab notebook, "Panel scale").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from deploy.bench.common import say
from deploy.bench.dp_cost import (
    DEFAULT_MODE,
    _measure_modes,
    _run_worker,
    paired_ratio,
    training_step,
)

ATTENTIONS = ("full", "local")
FULL = {"variants": (256, 1024, 4096, 16384, 65536), "batch": 8, "warmup": 1, "steps": 1,
        "repetitions": 2, "pairs": (5, 40), "pair_budget_s": 60.0, "config_budget_s": 420.0,
        "growth": (1024, 16384), "growth_pairs": 10}
# Quick panels' steps are mostly fixed cost, which extrapolating at least linearly over-predicts
# on a loaded machine: their time budget is loose enough that they never skip.
QUICK = {"variants": (16, 256), "batch": 4, "warmup": 1, "steps": 1, "repetitions": 1,
         "pairs": (2, 3), "pair_budget_s": 5.0, "config_budget_s": 600.0, "growth": (16, 256),
         "growth_pairs": 3}
MEMORY_SHARE = 0.5  # of the memory available when a panel starts
GROWTH_ATTENTION = "local"


def memory_available_bytes() -> int:
    """`MemAvailable` from /proc/meminfo: what a new process may use without swapping."""
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("/proc/meminfo has no MemAvailable line")


def extrapolate(points: list[tuple[int, float]], variants: int) -> float | None:
    """A measured quantity at `variants`, from its values at the last two smaller panels.

    A power law through the two, its exponent between 1 and 2: fixed per-step costs make
    small panels grow slower than large ones will, so a smaller exponent would under-predict,
    and nothing in the model grows faster than full attention's square of the panel (a
    near-zero reading at a tiny panel would otherwise predict a far steeper law).
    """
    if not points:
        return None
    if len(points) == 1:
        (x, y), k = points[0], 1.0
    else:
        (x0, y0), (x, y) = points[-2], points[-1]
        k = min(2.0, max(1.0, math.log(y / y0) / math.log(x / x0))) if y0 > 0 < y else 1.0
    return y * (variants / x) ** k


def _steps_needed(sizes: dict[str, Any]) -> int:
    """Training steps one configuration takes: memory workers and the fewest timed pairs."""
    return 2 * (sizes["repetitions"] * (sizes["warmup"] + sizes["steps"])
                + sizes["warmup"] + sizes["pairs"][0])


def plan(history: list[tuple[int, dict[str, Any]]], variants: int, sizes: dict[str, Any],
         memory_cap: float) -> dict[str, Any]:
    """Whether to measure one attention at `variants`, from its rows at smaller panels.

    Returns {"skipped": reason} or {"pairs": how many timed pairs, "predicted_step_s": ...}.
    """
    if history and "step_s" not in history[-1][1]:
        return {"skipped": f"the {history[-1][0]:,}-variant panel was not measured"}
    memory = extrapolate([(v, max(r["step_memory_bytes"], r["plain_step_memory_bytes"]))
                          for v, r in history], variants)
    step = extrapolate([(v, r["step_s"]) for v, r in history], variants)
    if memory is not None and memory > memory_cap:
        v, r = history[-1]
        return {"skipped": f"a step would need about {memory / 1e9:.1f} GB "
                           f"({r['step_memory_bytes'] / 1e9:.2f} GB measured at {v:,} "
                           f"variants), over the {memory_cap / 1e9:.1f} GB allowed "
                           f"({MEMORY_SHARE:.0%} of the memory available)"}
    if step is not None and step * _steps_needed(sizes) > sizes["config_budget_s"]:
        v, r = history[-1]
        return {"skipped": f"a DP step would take about {step:.0f} s ({r['step_s']:.2f} s "
                           f"measured at {v:,} variants): {_steps_needed(sizes)} steps exceed "
                           f"the {sizes['config_budget_s']:.0f} s budget per configuration"}
    lo, hi = sizes["pairs"]
    pairs = hi if step is None else max(lo, min(hi, int(sizes["pair_budget_s"] / (2 * step))))
    return {"pairs": pairs, "predicted_step_s": step}


def _row(attention: str, variants: int, pairs: int, sizes: dict[str, Any],
         work_dir: Path) -> dict[str, Any]:
    """One attention on one panel: plain and DP step, time and memory, per person too."""
    batch = sizes["batch"]
    config = {**sizes, "variants": variants, "pairs": pairs, "attention": attention,
              "device": "auto"}
    load = os.getloadavg()[0]
    try:
        base, modes = _measure_modes((DEFAULT_MODE,), config, work_dir,
                                     tag=f"-{attention}-{variants}",
                                     timeout_s=2 * sizes["config_budget_s"])
    except RuntimeError as exc:  # the plain step failed: nothing to compare against
        return {"error": str(exc)}
    row = modes[DEFAULT_MODE]
    if "error" in row:
        return row
    plain_memory = statistics.median(r["step_memory_bytes"] for r in base)
    return {
        **row,
        "plain_step_memory_bytes": plain_memory,
        "plain_s_per_sample": row["nondp_step_s"] / batch,
        "dp_s_per_sample": row["step_s"] / batch,
        "plain_memory_per_sample_bytes": plain_memory / batch,
        "dp_memory_per_sample_bytes": row["step_memory_bytes"] / batch,
        "load_average_1min": [load, os.getloadavg()[0]],
    }


def paired_growth(small: int, large: int, batch: int, warmup: int, pairs: int,
                  device: str = "cpu") -> dict[str, Any]:
    """Local attention's plain and DP steps on both panels, alternately in this one process:
    per pair, the large panel's step over the small one's, which goes first swapped."""
    import torch

    steps = {(mode, v): training_step(mode, v, batch, GROWTH_ATTENTION, device)
             for mode in ("nondp", DEFAULT_MODE) for v in (small, large)}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[tuple[str, int], list[float]] = {key: [] for key in steps}
    for i in range(pairs):
        for key in (steps if i % 2 == 0 else reversed(list(steps))):
            began = time.perf_counter()
            steps[key]()
            times[key].append(time.perf_counter() - began)
    dp = paired_ratio(times[DEFAULT_MODE, small], times[DEFAULT_MODE, large])
    plain = paired_ratio(times["nondp", small], times["nondp", large])
    return {"dp_step_ratio": dp["time_ratio"], "dp_step_ratio_iqr": dp["time_ratio_iqr"],
            "plain_step_ratio": plain["time_ratio"],
            "plain_step_ratio_iqr": plain["time_ratio_iqr"], "pairs": pairs,
            "from_step_s": dp["nondp_step_s"], "to_step_s": dp["step_s"],
            "from_plain_step_s": plain["nondp_step_s"], "to_plain_step_s": plain["step_s"],
            "threads": torch.get_num_threads()}


def growth(rows: dict[str, dict[str, Any]], sizes: dict[str, Any], work_dir: Path
           ) -> dict[str, Any]:
    """How much longer local attention's steps take on the larger panel of `sizes["growth"]`,
    timed in pairs in a fresh process where both panels' rows were measured."""
    pair = sizes["growth"]
    small, large = (rows.get(str(v), {}) for v in pair)
    out: dict[str, Any] = {"attention": GROWTH_ATTENTION, "from_variants": pair[0],
                           "to_variants": pair[1]}
    missing = [f"{v:,} variants: {r.get('skipped') or r.get('error') or 'not measured'}"
               for v, r in zip(pair, (small, large), strict=True) if "step_s" not in r]
    if missing:
        return {**out, "error": "; ".join(missing)}
    say("panel_scale", f"{GROWTH_ATTENTION} attention's growth from {pair[0]:,} to "
                       f"{pair[1]:,} variants, {sizes['growth_pairs']} steps of each alternating")
    timed = _run_worker(["--growth", *(str(v) for v in pair), f"--batch={sizes['batch']}",
                         f"--warmup={sizes['warmup']}", f"--pairs={sizes['growth_pairs']}"],
                        work_dir / "growth.json", timeout_s=2 * sizes["config_budget_s"],
                        module="deploy.bench.panel_scale")
    return {**out, **timed,
            "rows_dp_step_ratio": large["step_s"] / small["step_s"]}


def _device() -> dict[str, Any]:
    """Where the workers' steps run (`--device auto` picks the same)."""
    import torch

    from client.train import pick_device

    device = pick_device()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    return {"device": str(device), "device_name": name, "torch_threads": torch.get_num_threads()}


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    load = [os.getloadavg()[0]]
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for attention in ATTENTIONS:
        history: list[tuple[int, dict[str, Any]]] = []
        rows[attention] = {}
        for variants in sizes["variants"]:
            cap = MEMORY_SHARE * memory_available_bytes()
            decided = plan(history, variants, sizes, cap)
            if "skipped" in decided:
                say("panel_scale", f"{attention} attention, {variants:,} variants: skipped, "
                                   f"{decided['skipped']}")
                row = decided
            else:
                say("panel_scale", f"{attention} attention, {variants:,} variants "
                                   f"({decided['pairs']} timed pairs)")
                row = _row(attention, variants, decided["pairs"], sizes, work_dir)
            rows[attention][str(variants)] = row
            history.append((variants, row))
    load.append(os.getloadavg()[0])
    measured = [(a, v, r["memory_ratio"]) for a, by in rows.items() for v, r in by.items()
                if r.get("memory_ratio") is not None]
    worst = max(measured, key=lambda m: m[2]) if measured else None
    return {
        "rows": rows,
        "growth": growth(rows[GROWTH_ATTENTION], sizes, work_dir),
        "worst_memory_ratio": None if worst is None else worst[2],
        "worst_memory_at": None if worst is None else f"{worst[0]}, {int(worst[1]):,} variants",
        "failed": [f"{a}, {int(v):,} variants: {r['error']}" for a, by in rows.items()
                   for v, r in by.items() if "error" in r],
        "batch_size": sizes["batch"],
        "panel_variants": list(sizes["variants"]),
        "default_mode": DEFAULT_MODE,
        "repetitions": sizes["repetitions"],
        "load_average_1min": load,
        **_device(),
        "method": (
            "the demo model (RunSettings defaults but for the attention) on random genotype "
            "codes of each panel size, batch_size people per step; per configuration "
            "deploy.bench.dp_cost's measurements: memory = the step's working memory in "
            "`repetitions` fresh worker processes (peak RSS via VmHWM after clear_refs, minus "
            "the RSS before the first step; on CUDA the allocator's peak), the median; time = "
            "one fresh process alternating plain and DP steps, the median of the pairs "
            "(pairs fitted to a time budget from the predicted step); per-sample figures are "
            "the step's divided by the batch (the model's own weights and their gradients "
            "are counted in every person's share); a panel predicted (power law from the two "
            "smaller panels measured) to need more than half the memory available or more "
            "than the budget per configuration is skipped, with its reason"
        ),
    }


def _main(argv: list[str]) -> int:
    """The paired growth timer, in its own fresh process (see `growth`)."""
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.panel_scale")
    parser.add_argument("--growth", nargs=2, type=int, metavar=("SMALL", "LARGE"),
                        required=True)
    parser.add_argument("--out", required=True)
    for key in ("batch", "warmup", "pairs"):
        parser.add_argument(f"--{key}", type=int, required=True)
    args = parser.parse_args(argv)
    import torch

    from client.train import pick_device

    torch.set_num_threads(1)  # see the module's docstring
    result = paired_growth(*args.growth, args.batch, args.warmup, args.pairs,
                           str(pick_device()))
    if not all(math.isfinite(v) for v in result.values() if isinstance(v, float)):
        raise RuntimeError(f"non-finite measurement: {result}")
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
