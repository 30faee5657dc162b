"""Benchmark section `dp_cost`: what DP-SGD costs per training step, in time and memory.

The demo's model (the `RunSettings` defaults on a 256-variant panel) takes training steps on
batches of 64 people, once as a plain PyTorch step (forward, backward, Adam) and once per Opacus
grad-sample mode (`hooks`, the default; `functorch`; `ew`, expanded weights; `ghost`, ghost
clipping) as a full DP-SGD step: per-sample gradients, clipping, noise, Adam, set up as the
sites set it up (`client.train.make_private`, summed loss; ghost clipping needs Opacus' own
criterion wrapper instead). Every configuration runs in a FRESH Python process
(`python -m deploy.bench_cost --worker MODE`), so its peak memory is its own:

- time: `time.perf_counter` over `steps` timed steps after `warmup` untimed ones; the
  configurations are run in turn `repetitions` times and the fastest repetition is kept;
- memory: the peak resident set of the worker's own address space (`VmHWM` in
  `/proc/self/status`, reset to the current size through `/proc/self/clear_refs` just before
  the first step) minus the resident set just before the first step (`/proc/self/statm`,
  model and data already built): the step's working memory. Not `getrusage().ru_maxrss`:
  Linux carries the PARENT's peak across fork and exec into it, so every worker started by a
  bench process holding a 1.4 GB cohort reported 1.4 GB and the ratio compared the parent's
  memory with itself (0.92x, 2026-11-28). Python's `tracemalloc` does not see torch's
  allocations and torch has no CPU allocator statistics.

Genotypes and panel features are random codes of the right shapes: the model's cost does not
depend on their values. A mode that fails is recorded with its error, not dropped.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("hooks", "functorch", "ew", "ghost")
DEFAULT_MODE = "hooks"
FULL = {"variants": 256, "batch": 64, "warmup": 3, "steps": 12, "repetitions": 5}
QUICK = {"variants": 32, "batch": 16, "warmup": 1, "steps": 2, "repetitions": 1}
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


def worker(mode: str, variants: int, batch: int, warmup: int, steps: int) -> dict[str, Any]:
    """Time and measure `steps` training steps of one configuration in this process."""
    import warnings

    import numpy as np
    import torch
    import torch.nn.functional as F

    from shared.encoding import model_config
    from shared.model import PanelFeatures, RiskTransformer
    from shared.runconfig import RunSettings

    warnings.filterwarnings("ignore")
    settings = RunSettings()
    cfg = model_config(variants, settings.encoder(), **settings.architecture())
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
    model = RiskTransformer(cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.learning_rate)

    if mode == "nondp":
        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            F.binary_cross_entropy_with_logits(model(x, features), y).backward()
            optimizer.step()
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
            from client.train import make_private

            dp_model, dp_opt, _ = make_private(
                model, optimizer, loader, noise_multiplier=1.0,
                max_grad_norm=settings.max_grad_norm, poisson_sampling=False,
                grad_sample_mode=mode,
            )

            def dp_crit(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
                return F.binary_cross_entropy_with_logits(logits, target, reduction="sum")

        def step() -> None:
            dp_opt.zero_grad(set_to_none=True)
            dp_crit(dp_model(x, features), y).backward()
            dp_opt.step()

    peak_reset = _reset_peak_rss()
    rss_before, peak_before = _rss_bytes(), _peak_rss_bytes()
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        began = time.perf_counter()
        step()
        times.append(time.perf_counter() - began)
    peak = _peak_rss_bytes()
    # The median step: one step slowed by something else on the machine (a process of the
    # previous section still exiting, the kernel) moves a mean of a dozen steps by several
    # percent, enough to flip a 1.3x goal either way between runs.
    step_s = statistics.median(times)
    return {
        "step_s": step_s,
        "mean_step_s": sum(times) / steps,
        "samples_per_s": batch / step_s,
        "peak_rss_bytes": peak,
        "rss_before_bytes": rss_before,
        "peak_before_bytes": peak_before,
        "peak_reset": peak_reset,
        "step_memory_bytes": max(peak - rss_before, 0),
        "threads": torch.get_num_threads(),
    }


def _measure(mode: str, sizes: dict[str, int], out: Path) -> dict[str, Any]:
    """One configuration in a fresh interpreter; its result or its error."""
    cmd = [sys.executable, "-m", "deploy.bench_cost", "--worker", mode, "--out", str(out)]
    for key in ("variants", "batch", "warmup", "steps"):
        cmd += [f"--{key}", str(sizes[key])]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=WORKER_TIMEOUT_S,
                              cwd=Path(__file__).resolve().parent.parent)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {WORKER_TIMEOUT_S} s"}
    if proc.returncode != 0 or not out.exists():
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        return {"error": lines[-1][:500] if lines else f"exit code {proc.returncode}"}
    return json.loads(out.read_text())


def _ratios(dp: dict[str, Any], base: dict[str, Any]) -> dict[str, Any]:
    if "error" in dp:
        return {"error": dp["error"]}
    memory = (dp["step_memory_bytes"] / base["step_memory_bytes"]
              if base["step_memory_bytes"] > 0 else None)
    return {
        "time_ratio": dp["step_s"] / base["step_s"],
        "memory_ratio": memory,
        "peak_rss_ratio": dp["peak_rss_bytes"] / base["peak_rss_bytes"],
        "samples_per_s": dp["samples_per_s"],
        "step_s": dp["step_s"],
        "step_memory_bytes": dp["step_memory_bytes"],
        "peak_rss_bytes": dp["peak_rss_bytes"],
    }


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    sizes = QUICK if quick else FULL
    configs = ("nondp", *MODES)
    best: dict[str, dict[str, Any]] = {}
    load = [os.getloadavg()[0]]
    for rep in range(sizes["repetitions"]):
        for mode in configs:
            if "error" in best.get(mode, {}):
                continue  # a mode that failed once fails again; do not pay for it twice
            print(f"  dp_cost: {mode} (repetition {rep + 1})", file=sys.stderr, flush=True)
            result = _measure(mode, sizes, work_dir / f"{mode}-{rep}.json")
            if mode not in best or "error" in result or result["step_s"] < best[mode]["step_s"]:
                best[mode] = result
    load.append(os.getloadavg()[0])
    base = best["nondp"]
    if "error" in base:
        raise RuntimeError(f"the non-private step failed: {base['error']}")
    modes = {mode: _ratios(best[mode], base) for mode in MODES}
    default = modes[DEFAULT_MODE]
    if "error" in default:
        raise RuntimeError(f"the default grad-sample mode failed: {default['error']}")
    return {
        "time_ratio": default["time_ratio"],
        "memory_ratio": default["memory_ratio"],
        "default_mode": DEFAULT_MODE,
        "nondp_samples_per_s": base["samples_per_s"],
        "nondp_step_s": base["step_s"],
        "nondp_step_memory_bytes": base["step_memory_bytes"],
        "nondp_peak_rss_bytes": base["peak_rss_bytes"],
        "modes": modes,
        "batch_size": sizes["batch"],
        "panel_variants": sizes["variants"],
        "warmup_steps": sizes["warmup"],
        "timed_steps": sizes["steps"],
        "repetitions": sizes["repetitions"],
        "torch_threads": base["threads"],
        "load_average_1min": load,
        "method": (
            "each configuration (non-DP, and DP-SGD per Opacus grad_sample_mode) in a fresh "
            "Python process on the demo model (RunSettings defaults) with random genotype codes; "
            "time = perf_counter over the timed steps after warm-up, fastest of the repetitions; "
            "memory = the worker's own peak RSS (VmHWM, reset via /proc/self/clear_refs before "
            "the first step) after the steps minus the RSS (/proc/self/statm) just before the "
            "first step, i.e. the step's working memory (memory_ratio); "
            "peak_rss_ratio compares whole-process peaks (interpreter, torch and model included)"
        ),
    }


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench_cost")
    parser.add_argument("--worker", required=True, choices=("nondp", *MODES))
    parser.add_argument("--out", required=True)
    parser.add_argument("--variants", type=int, default=FULL["variants"])
    parser.add_argument("--batch", type=int, default=FULL["batch"])
    parser.add_argument("--warmup", type=int, default=FULL["warmup"])
    parser.add_argument("--steps", type=int, default=FULL["steps"])
    args = parser.parse_args(argv)
    result = worker(args.worker, args.variants, args.batch, args.warmup, args.steps)
    if not all(math.isfinite(v) for v in result.values()):
        raise RuntimeError(f"non-finite measurement: {result}")
    Path(args.out).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
