"""Benchmark section `dp_cost`: what DP-SGD costs per training step, in time and memory.

The demo's model (the `RunSettings` defaults on a 256-variant panel) takes training steps on
batches of 64 people, once as a plain PyTorch step (forward, backward, the sites' optimizer step:
`client.train.local_optimizer`, SGD with momentum by default) and once per Opacus grad-sample
mode (`hooks`, the default; `functorch`; `ew`, expanded weights; `ghost`, ghost clipping) as a
full DP-SGD step: per-sample gradients, clipping, noise, the same optimizer step, set up as the
sites set it up (`client.train.make_private`, summed loss; ghost clipping needs Opacus' own
criterion wrapper instead). The default mode is measured again at batch 256, about what the
largest site of the bench's cohort trains on under `max-steps-per-epoch` (249).

- time: per DP mode, ONE fresh process (`python -m deploy.bench.dp_cost --paired MODE`) holds
  the plain model and the DP one (same initial weights) and alternates their steps, `pairs`
  times after `warmup` untimed steps of each, swapping which goes first every pair. The time
  ratio is the median over the pairs of (DP step / plain step), with the pairs' middle half
  beside it. Steps taken a fraction of a second apart see the same machine; timing each
  configuration in its own process instead moved the ratio from one process to the next (lab
  notebook, "DP-cost time: paired steps in one process");
- memory: every configuration runs `repetitions` times, each in a FRESH process
  (`--worker MODE`), so its peak is its own: the worker's peak resident set (`VmHWM` in
  `/proc/self/status`, reset to the current size through `/proc/self/clear_refs` just before
  the first step) minus the resident set just before the first step (`/proc/self/statm`, model
  and data already built): the step's working memory, the median over the repetitions. Not
  `getrusage().ru_maxrss`: Linux carries the PARENT's peak across fork and exec into it, so a
  worker started by a bench process holding a large cohort reports the parent's peak and the
  ratio compares the parent's memory with itself (lab notebook, "DP-cost memory: the worker's
  own peak, not `ru_maxrss`"). Python's `tracemalloc` does not see torch's allocations and torch
  has no CPU allocator statistics.

Genotypes and panel features are random codes of the right shapes: the model's cost does not
depend on their values. A mode that fails is recorded with its error, not dropped.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.bench.common import say

MODES = ("hooks", "functorch", "ew", "ghost")
DEFAULT_MODE = "hooks"
FULL = {"variants": 256, "batch": 64, "warmup": 3, "steps": 12, "repetitions": 3, "pairs": 40,
        "large_batch": 256}
QUICK = {"variants": 32, "batch": 16, "warmup": 1, "steps": 2, "repetitions": 1, "pairs": 3,
         "large_batch": 32}
WORKER_TIMEOUT_S = 900


def _rss_bytes() -> int:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss_bytes() -> int:
    """This address space's resident-set high-water mark (inherits nothing from the parent)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
    raise RuntimeError("/proc/self/status has no VmHWM line")


def _reset_peak_rss() -> bool:
    """Lower the high-water mark to the current resident set (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


def training_step(mode: str, variants: int, batch: int, attention: str | None = None,
                  device: str = "cpu") -> Callable[[], None]:
    """One configuration's training step on a fresh model with the same initial weights
    (`torch.manual_seed(0)`) and the same random batch for every mode.

    `attention` overrides the settings' (`full` or `local`) and `device` puts model and batch
    on a torch device (a step on CUDA waits for the device before it returns, so it can be
    timed): both for `deploy.bench.panel_scale`.
    """
    import warnings

    import numpy as np
    import torch
    import torch.nn.functional as F

    from client.train import local_optimizer
    from shared.model import PanelFeatures, RiskTransformer
    from shared.runconfig import RunSettings

    warnings.filterwarnings("ignore")
    settings = RunSettings()
    cfg = settings.model_config(variants)
    if attention is not None:
        cfg = dataclasses.replace(cfg, attention=attention)
    rng = np.random.default_rng(0)
    torch.manual_seed(0)
    features = PanelFeatures(
        context=torch.as_tensor(rng.integers(0, cfg.kmer_vocab, (variants, cfg.context_len))),
        ref=torch.as_tensor(rng.integers(0, cfg.allele_vocab, variants)),
        alt=torch.as_tensor(rng.integers(0, cfg.allele_vocab, variants)),
        coord=torch.as_tensor(np.sort(rng.choice(1_000_000, variants, replace=False)) + 2e7,
                              dtype=torch.float64),
    )
    codes = rng.choice(4, size=(batch, variants), p=[0.5, 0.35, 0.149, 0.001])
    x = torch.as_tensor(codes, dtype=torch.long)
    y = torch.as_tensor(rng.integers(0, 2, batch), dtype=torch.float32)
    features, x, y = features.to(device), x.to(device), y.to(device)
    model = RiskTransformer(cfg).to(device)
    optimizer = local_optimizer(settings.optimizer, model.parameters(), settings.learning_rate)
    wait = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)

    if mode == "nondp":
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(x, features), y).backward()
            optimizer.step()
            wait()
    else:
        from torch.utils.data import DataLoader, TensorDataset

        loader = DataLoader(TensorDataset(x, y), batch_size=batch)
        if mode == "ghost":  # needs Opacus' own criterion wrapper, so not client.train's setup
            from opacus import PrivacyEngine

            from shared.model import register_grad_samplers

            register_grad_samplers()
            dp_model, dp_opt, dp_crit, _ = PrivacyEngine(accountant="prv").make_private(
                module=model, optimizer=optimizer, data_loader=loader, noise_multiplier=1.0,
                max_grad_norm=settings.max_grad_norm, poisson_sampling=False,
                grad_sample_mode=mode, criterion=torch.nn.BCEWithLogitsLoss(),
            )
        else:  # the sites' own DP-SGD setup (summed loss, see client.train.make_private)
            from client.randomness import DPRandomness
            from client.train import make_private

            dp_model, dp_opt = make_private(
                model, optimizer, loader, noise_multiplier=1.0,
                max_grad_norm=settings.max_grad_norm, randomness=DPRandomness.secret(),
                grad_sample_mode=mode,
            )

            def dp_crit(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")

        def step() -> None:
            dp_opt.zero_grad(set_to_none=True)
            dp_crit(dp_model(x, features), y).backward()
            dp_opt.step()
            wait()

    return step


def worker(mode: str, variants: int, batch: int, warmup: int, steps: int,
           attention: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """The working memory of `warmup + steps` steps of one configuration, alone in this
    process (its time is measured by `paired`, against the plain step). On CUDA the step's
    memory is the device allocator's peak over what it held before the first step."""
    import torch

    step = training_step(mode, variants, batch, attention, device)
    on_gpu = torch.device(device).type == "cuda"
    if on_gpu:
        torch.cuda.reset_peak_memory_stats(device)
        gpu_before = torch.cuda.memory_allocated(device)
    peak_reset = _reset_peak_rss()
    rss_before, peak_before = _rss_bytes(), _peak_rss_bytes()
    for _ in range(warmup + steps):
        step()
    peak = _peak_rss_bytes()
    result = {
        "peak_rss_bytes": peak,
        "rss_before_bytes": rss_before,
        "peak_before_bytes": peak_before,
        "peak_reset": peak_reset,
        "step_memory_bytes": max(peak - rss_before, 0),
        "threads": torch.get_num_threads(),
    }
    if on_gpu:
        result["step_memory_bytes"] = torch.cuda.max_memory_allocated(device) - gpu_before
        result["host_step_memory_bytes"] = max(peak - rss_before, 0)
    return result


def paired_ratio(base_s: list[float], dp_s: list[float]) -> dict[str, Any]:
    """The DP step's time over the plain step's, from steps timed in pairs.

    Each pair's ratio compares two steps a fraction of a second apart, so a slow spell of the
    machine scales both; the median over the pairs ignores the pairs a spell split.
    """
    if not base_s or len(base_s) != len(dp_s):
        raise ValueError("need as many DP steps as plain steps, at least one")
    ratios = [d / b for b, d in zip(base_s, dp_s, strict=True)]
    q1, _, q3 = (statistics.quantiles(ratios, n=4, method="inclusive") if len(ratios) > 1
                 else ratios * 3)
    return {"time_ratio": statistics.median(ratios), "time_ratio_iqr": [q1, q3],
            "pairs": len(ratios), "step_s": statistics.median(dp_s),
            "nondp_step_s": statistics.median(base_s)}


def paired(mode: str, variants: int, batch: int, warmup: int, pairs: int,
           attention: str | None = None, device: str = "cpu") -> dict[str, Any]:
    """Time the plain step and one DP mode's step alternately in this one process."""
    import torch

    steps = {"nondp": training_step("nondp", variants, batch, attention, device),
             mode: training_step(mode, variants, batch, attention, device)}
    for _ in range(warmup):
        for step in steps.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for i in range(pairs):
        for name in (("nondp", mode) if i % 2 == 0 else (mode, "nondp")):
            began = time.perf_counter()
            steps[name]()
            times[name].append(time.perf_counter() - began)
    result = paired_ratio(times["nondp"], times[mode])
    return {**result, "samples_per_s": batch / result["step_s"],
            "threads": torch.get_num_threads()}


def _run_worker(args: list[str], out: Path, timeout_s: float = WORKER_TIMEOUT_S,
                module: str = "deploy.bench.dp_cost") -> dict[str, Any]:
    """`python -m MODULE ARGS --out OUT` in a fresh interpreter: its result or error."""
    cmd = [sys.executable, "-m", module, *args, "--out", str(out)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout_s:g} s"}
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1][:500] if lines else f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


# What each role of the worker process needs from the sizes.
ROLE_SIZES = {"worker": ("variants", "batch", "warmup", "steps"),
              "paired": ("variants", "batch", "warmup", "pairs")}


def _measure(mode: str, sizes: dict[str, Any], out: Path, role: str = "worker",
             timeout_s: float = WORKER_TIMEOUT_S) -> dict[str, Any]:
    """One configuration's memory worker (or one DP mode's paired timer) in a fresh
    interpreter; `sizes` may also name an `attention` and a `device` (`cpu`, `auto`)."""
    extra = [f"--{k}={sizes[k]}" for k in ("attention", "device") if k in sizes]
    return _run_worker([f"--{role}", mode, *(f"--{k}={sizes[k]}" for k in ROLE_SIZES[role]),
                        *extra], out, timeout_s)


def _summary(dp: list[dict[str, Any]], base: list[dict[str, Any]],
             timed: dict[str, Any]) -> dict[str, Any]:
    """One mode's row: time from its paired run, memory as the median over its workers."""
    memory = statistics.median(r["step_memory_bytes"] for r in dp)
    base_memory = statistics.median(r["step_memory_bytes"] for r in base)
    peak = statistics.median(r["peak_rss_bytes"] for r in dp)
    return {
        "time_ratio": timed["time_ratio"],
        "time_ratio_iqr": timed["time_ratio_iqr"],
        "pairs": timed["pairs"],
        "memory_ratio": memory / base_memory if base_memory > 0 else None,
        "memory_ratios": [d["step_memory_bytes"] / b["step_memory_bytes"]
                          for d, b in zip(dp, base, strict=True) if b["step_memory_bytes"] > 0],
        "peak_rss_ratio": peak / statistics.median(r["peak_rss_bytes"] for r in base),
        "samples_per_s": timed["samples_per_s"],
        "step_s": timed["step_s"],
        "nondp_step_s": timed["nondp_step_s"],
        "step_memory_bytes": memory,
        "peak_rss_bytes": peak,
    }


def _measure_modes(
    dp_modes: tuple[str, ...], sizes: dict[str, Any], work_dir: Path, tag: str = "",
    timeout_s: float = WORKER_TIMEOUT_S,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """The plain step's memory workers, and each DP mode's row (or its error): `repetitions`
    fresh memory workers per configuration, then one paired timing process per DP mode."""
    configs = ("nondp", *dp_modes)
    workers: dict[str, list[dict[str, Any]]] = {mode: [] for mode in configs}
    where = f" at batch {sizes['batch']}" if tag else ""
    for rep in range(sizes["repetitions"]):
        for mode in configs:
            if any("error" in r for r in workers[mode]):
                continue  # a mode that failed once fails again; do not pay for it twice
            say("dp_cost", f"{mode} memory{where} (repetition {rep + 1})")
            workers[mode].append(_measure(mode, sizes, work_dir / f"{mode}{tag}-{rep}.json",
                                          timeout_s=timeout_s))
    base = workers["nondp"]
    if any("error" in r for r in base):
        raise RuntimeError(f"the non-private step failed{where}: {base[0]['error']}")
    modes: dict[str, dict[str, Any]] = {}
    for mode in dp_modes:
        failed = next((r for r in workers[mode] if "error" in r), None)
        if failed is None:
            say("dp_cost", f"{mode} time{where}, {sizes['pairs']} steps alternating with "
                           "plain ones")
            timed = _measure(mode, sizes, work_dir / f"{mode}{tag}-paired.json", role="paired",
                             timeout_s=timeout_s)
            failed = timed if "error" in timed else None
        modes[mode] = ({"error": failed["error"]} if failed
                       else _summary(workers[mode], base, timed))
    return base, modes


def _at_batch(batch: int, sizes: dict[str, int], work_dir: Path) -> dict[str, Any]:
    """The default mode's row at a larger batch, measured the same way.

    Why: with `max-steps-per-epoch` a large site trains on batches of a few hundred, and
    per-sample gradients grow with the batch while the model's own weights do not, so the
    ratio at 64 alone would not cover what the sites run.
    """
    try:
        _, modes = _measure_modes((DEFAULT_MODE,), {**sizes, "batch": batch}, work_dir,
                                  tag=f"-b{batch}")
    except RuntimeError as exc:  # the plain step failed there: nothing to compare against
        return {"error": str(exc)}
    return modes[DEFAULT_MODE]


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    load = [os.getloadavg()[0]]
    base, modes = _measure_modes(MODES, sizes, work_dir)
    default = modes[DEFAULT_MODE]
    if "error" in default:
        raise RuntimeError(f"the default grad-sample mode failed: {default['error']}")
    large = _at_batch(sizes["large_batch"], sizes, work_dir)
    load.append(os.getloadavg()[0])
    return {
        "time_ratio": default["time_ratio"],
        "time_ratio_iqr": default["time_ratio_iqr"],
        "memory_ratio": default["memory_ratio"],
        "default_mode": DEFAULT_MODE,
        "nondp_samples_per_s": sizes["batch"] / default["nondp_step_s"],
        "nondp_step_s": default["nondp_step_s"],
        "nondp_step_memory_bytes": statistics.median(r["step_memory_bytes"] for r in base),
        "nondp_peak_rss_bytes": statistics.median(r["peak_rss_bytes"] for r in base),
        "modes": modes,
        "at_batch": {str(sizes["large_batch"]): large},
        "batch_size": sizes["batch"],
        "panel_variants": sizes["variants"],
        "warmup_steps": sizes["warmup"],
        "timed_steps": sizes["steps"],
        "timed_pairs": sizes["pairs"],
        "repetitions": sizes["repetitions"],
        "torch_threads": base[0]["threads"],
        "load_average_1min": load,
        "method": (
            "the demo model (RunSettings defaults) on random genotype codes; time: per DP mode "
            "one fresh Python process alternates plain and DP-SGD steps (same initial weights, "
            "which goes first swapped every pair) after warm-up; time_ratio = the median over "
            "the pairs of DP step / plain step, time_ratio_iqr its quartiles, samples/s from "
            "each side's median step; memory: each configuration `repetitions` times in a "
            "fresh process, the worker's own peak RSS (VmHWM, reset via /proc/self/clear_refs "
            "before the first step) after the steps minus the RSS (/proc/self/statm) just "
            "before the first step, i.e. the step's working memory, the median over the "
            "repetitions (memory_ratio; memory_ratios per repetition); peak_rss_ratio compares "
            "whole-process peaks (interpreter, torch and model included); at_batch: the "
            "default mode measured the same way at a larger batch, the size a capped site "
            "trains at"
        ),
    }


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.dp_cost")
    role = parser.add_mutually_exclusive_group(required=True)
    role.add_argument("--worker", choices=("nondp", *MODES), help="memory of one configuration")
    role.add_argument("--paired", choices=MODES, help="time of one DP mode against plain steps")
    parser.add_argument("--out", required=True)
    for key in ("variants", "batch", "warmup", "steps", "pairs"):
        parser.add_argument(f"--{key}", type=int, default=FULL[key])
    parser.add_argument("--attention", choices=("full", "local"), default=None,
                        help="override the settings' attention")
    parser.add_argument("--device", choices=("cpu", "auto"), default="cpu",
                        help="auto: CUDA when torch sees it, as a site trains")
    args = parser.parse_args(argv)
    device = "cpu"
    if args.device == "auto":
        from client.train import pick_device

        device = str(pick_device())
    if args.worker:
        result = worker(args.worker, args.variants, args.batch, args.warmup, args.steps,
                        args.attention, device)
    else:
        result = paired(args.paired, args.variants, args.batch, args.warmup, args.pairs,
                        args.attention, device)
    result["device"] = device
    numbers = [v for v in result.values() if isinstance(v, int | float)]
    numbers += [v for value in result.values() if isinstance(value, list) for v in value]
    if not all(math.isfinite(v) for v in numbers):
        raise RuntimeError(f"non-finite measurement: {result}")
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
