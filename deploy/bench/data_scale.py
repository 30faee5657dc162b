"""The data-path section's scale rows: load time and peak memory as a site grows.

For each size (people x variants) one synthetic site is written (`deploy.bench.synthetic_site`:
the same genotypes as a VCF and as PLINK 1 .bed), then every reader loads all of it in a fresh
child process, so each peak is its own:

- `genofed_vcf`: `harmonize_panel_genotypes` on the VCF, the panel being every variant;
- `genofed_plink`: the same on the .bed (pgenlib underneath, harmonized like a VCF);
- `pgenlib`: PLINK 2's reader alone, `read_range` over every variant into one int8 array
  (the reader's own speed, no harmonization);
- `bcftools`: `bcftools query -f '[%GT\\t]\\n'` piped into the section's vectorised numpy
  parse, filling one preallocated array (null with the reason when bcftools is absent);
- `load_site`: `client.data.load_site` cold, with an empty on-disk cache (tables, encoding,
  reading, the cache written).

Peak memory is the child's high-water resident memory (VmHWM, reset just before loading);
`extra_bytes` is that peak minus the child's resident memory just before loading (imports,
panel and sample list), minus the output array itself (people x variants bytes): what loading
costs beyond the result it must hold. Every reader's codes must hash the same (sha256 of the
[people, variants] int8 codes), or the section fails.
`growth` fits, per reader, how time grows with variants (people fixed where most sizes share it)
and with people: the exponent b of time ~ size^b (1 = linear), and the time per call.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bench.common import say
from deploy.bench.goals import LOAD_MEMORY_CONSTANT_BYTES, LOAD_MEMORY_FACTOR

# (people, variants): what the issue asks for, and a miniature of it for the tests.
FULL_SIZES = ((10_000, 1_000), (10_000, 10_000), (10_000, 100_000), (100_000, 1_000),
              (100_000, 10_000))
QUICK_SIZES = ((200, 100), (200, 1_000), (2_000, 100))
READERS = ("genofed_vcf", "genofed_plink", "pgenlib", "bcftools", "load_site")
MEMORY_READERS = ("genofed_vcf", "genofed_plink", "load_site")  # held to the memory goal
# load_site reads the VCF as genofed_vcf does, plus tables, encoding and the cache: above this
# many calls the full run measures it no more, to keep `make bench` within its budget.
LOAD_SITE_MAX_CALLS = 100_000_000
_CHILD_TIMEOUT_S = 1800


class BenchCheckError(RuntimeError):
    """Two readers disagree on the same site."""


def _rss_now() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


def _rss_now_and_reset_peak() -> int:
    """The resident memory now, with the kernel's high-water mark reset to it (Linux'
    `clear_refs` 5), so `_peak` sees this load alone. `ru_maxrss` would not do: it
    survives exec, so a child of a large parent starts at the parent's size."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _rss_now()


def _peak() -> int:
    """The process's peak resident memory since `_rss_now_and_reset_peak` (VmHWM)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _digest(codes: np.ndarray, transpose: bool = False) -> str:
    """sha256 of [people, variants] int8 codes in C order (`transpose`: given [variants,
    people]), hashed in slices so the hash adds no copy of the whole array."""
    h = hashlib.sha256()
    if transpose:
        for lo in range(0, codes.shape[1], 4096):
            h.update(np.ascontiguousarray(codes[:, lo:lo + 4096].T).tobytes())
        return h.hexdigest() + f":{codes.shape[1]}x{codes.shape[0]}"
    h.update(np.ascontiguousarray(codes).data)
    return h.hexdigest() + f":{codes.shape[0]}x{codes.shape[1]}"


def _child(reader: str, folder: Path, bcftools: str | None) -> dict[str, Any]:
    """Load one site with one reader; runs in its own process (see `measure`)."""
    from deploy.bench.synthetic_site import sample_ids
    from shared.genotypes import harmonize_panel_genotypes
    from shared.panel import read_panel

    panel = read_panel(folder / "panel.tsv")
    with open(folder / "genotypes.fam") as fam:
        people = sum(1 for _ in fam)
    samples = sample_ids(people)
    transpose = False
    if reader == "load_site":
        from client import data as site_data
        from shared.cohort import DEFAULT_SPEC
        from shared.encoding import EncoderSettings

        cache = Path(tempfile.mkdtemp(prefix="genofed-scale-cache-"))
        baseline, began = _rss_now_and_reset_peak(), time.perf_counter()
        site = site_data.load_site(folder, EncoderSettings(), cache, DEFAULT_SPEC, 0.0)
        seconds, peak = time.perf_counter() - began, _peak()
        codes = site.genotypes
        shutil.rmtree(cache, ignore_errors=True)
    elif reader in ("genofed_vcf", "genofed_plink"):
        path = folder / ("genotypes.vcf.gz" if reader == "genofed_vcf" else "genotypes.bed")
        baseline, began = _rss_now_and_reset_peak(), time.perf_counter()
        result = harmonize_panel_genotypes(path, panel, samples, folder / "reference.fa")
        seconds, peak = time.perf_counter() - began, _peak()
        codes = result.codes
    elif reader == "pgenlib":
        import pgenlib

        baseline, began = _rss_now_and_reset_peak(), time.perf_counter()
        pgen = pgenlib.PgenReader(bytes(str(folder / "genotypes.bed"), "utf-8"),
                                  raw_sample_ct=people)
        codes = np.empty((pgen.get_variant_ct(), people), dtype=np.int8)
        pgen.read_range(0, pgen.get_variant_ct(), codes)
        pgen.close()
        step = max(1, (1 << 22) // max(1, people))  # PLINK's missing (-9) as genofed's,
        for lo in range(0, len(codes), step):  # a few MB at a time
            block = codes[lo:lo + step]
            block[block < 0] = 3
        seconds, peak = time.perf_counter() - began, _peak()
        transpose = True
    elif reader == "bcftools":
        from deploy.bench.data_path import parse_gt_lines

        assert bcftools is not None
        baseline, began = _rss_now_and_reset_peak(), time.perf_counter()
        codes = np.empty((len(panel), people), dtype=np.int8)
        filled = 0
        cmd = [bcftools, "query", "-f", "[%GT\\t]\\n", str(folder / "genotypes.vcf.gz")]
        import psutil

        children = 0
        with subprocess.Popen(cmd, stdout=subprocess.PIPE) as proc:
            assert proc.stdout is not None
            rest = b""
            tool = psutil.Process(proc.pid)
            while block := proc.stdout.read(1 << 22):
                with contextlib.suppress(psutil.Error):  # bcftools' own memory, sampled
                    children = max(children, tool.memory_info().rss)
                data = rest + block
                cut = data.rfind(b"\n") + 1
                rest = data[cut:]
                if cut:
                    part = parse_gt_lines(data[:cut], people)
                    codes[filled:filled + len(part)] = part
                    filled += len(part)
            if proc.wait() != 0 or rest or filled != len(panel):
                raise BenchCheckError(f"bcftools query failed (exit {proc.returncode})")
        seconds, peak = time.perf_counter() - began, _peak()
        transpose = True
    else:
        raise ValueError(f"unknown reader {reader!r}")
    output = int(codes.size)
    row = {"seconds": seconds, "peak_bytes": peak, "baseline_bytes": baseline,
           "output_bytes": output, "extra_bytes": peak - baseline - output,
           "digest": _digest(codes, transpose)}
    if reader == "bcftools":
        row["bcftools_rss_bytes"] = children  # sampled as its output is read
    return row


def measure(reader: str, folder: Path, bcftools: str | None = None) -> dict[str, Any]:
    """One reader on one site, in a fresh process: its time, peak memory and codes' hash."""
    cmd = [sys.executable, "-m", "deploy.bench.data_scale", reader, str(folder)]
    if bcftools:
        cmd += ["--bcftools", bcftools]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_CHILD_TIMEOUT_S,
                          env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{reader} on {folder.name} failed: {proc.stderr.strip()[-800:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _exponent(sizes: list[float], seconds: list[float]) -> float | None:
    """Least-squares slope of log(time) on log(size): 1 = linear growth."""
    if len(sizes) < 2 or min(seconds) <= 0:
        return None
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def growth(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per reader: ns per call at each size, and the time exponent along variants (people
    fixed at the size with the most variant steps) and along people (variants fixed)."""
    out: dict[str, Any] = {}
    for reader in READERS:
        got = [r for r in rows if (r.get(reader) or {}).get("seconds") is not None]
        if not got:
            continue
        entry: dict[str, Any] = {
            "ns_per_call": {f"{r['people']}x{r['variants']}":
                            1e9 * r[reader]["seconds"] / (r["people"] * r["variants"])
                            for r in got},
            "max_extra_bytes": max(r[reader]["extra_bytes"] for r in got),
        }
        if len(got) >= 2:  # extra ~ a x output + b: a is what loading costs per result byte
            a, b = np.polyfit([r[reader]["output_bytes"] for r in got],
                              [r[reader]["extra_bytes"] for r in got], 1)
            entry.update(extra_per_output_byte=float(a), extra_constant_bytes=float(b))
        by_people: dict[int, list[dict]] = {}
        for r in got:
            by_people.setdefault(r["people"], []).append(r)
        people = max(by_people, key=lambda p: len(by_people[p]))
        line = sorted(by_people[people], key=lambda r: r["variants"])
        entry["time_exponent_variants"] = _exponent([r["variants"] for r in line],
                                                    [r[reader]["seconds"] for r in line])
        entry["time_exponent_variants_at_people"] = people
        exps = []
        for v in sorted({r["variants"] for r in got}):
            col = sorted((r for r in got if r["variants"] == v), key=lambda r: r["people"])
            e = _exponent([r["people"] for r in col], [r[reader]["seconds"] for r in col])
            if e is not None:
                exps.append(e)
        entry["time_exponent_people"] = float(np.mean(exps)) if exps else None
        out[reader] = entry
    return out


def memory_goal(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Loading holds the output plus bounded overhead: extra <= factor x output + constant."""
    worst, margin = None, math.inf
    for r in rows:
        for reader in MEMORY_READERS:
            m = r.get(reader)
            if not isinstance(m, dict) or "extra_bytes" not in m:
                continue
            allowed = LOAD_MEMORY_FACTOR * m["output_bytes"] + LOAD_MEMORY_CONSTANT_BYTES
            if allowed - m["extra_bytes"] < margin:
                margin = allowed - m["extra_bytes"]
                worst = f"{reader} at {r['people']}x{r['variants']}"
    measured = worst is not None
    return {"rule": f"peak memory while loading ≤ output array × (1 + {LOAD_MEMORY_FACTOR:g}) + "
                    f"{LOAD_MEMORY_CONSTANT_BYTES / 2**20:g} MiB over the process before it",
            "worst": worst, "margin_bytes": margin if measured else None,
            "met": measured and margin >= 0}


def run(work_dir: Path, quick: bool,
        sizes: tuple[tuple[int, int], ...] | None = None) -> dict[str, Any]:
    """Write each size's site, measure every reader on it, and check they all agree."""
    from deploy.bench.synthetic_site import write_site

    sizes = sizes or (QUICK_SIZES if quick else FULL_SIZES)
    bcftools = shutil.which("bcftools")
    rows = []
    for people, variants in sizes:
        folder = Path(work_dir) / f"scale-{people}x{variants}"
        say("data_path", f"scale: writing a synthetic site of {people:,} x {variants:,}")
        began = time.perf_counter()
        write_site(folder, people, variants, seed=people + variants)
        row: dict[str, Any] = {"people": people, "variants": variants,
                               "write_s": time.perf_counter() - began,
                               "vcf_bytes": (folder / "genotypes.vcf.gz").stat().st_size}
        for reader in READERS:
            if reader == "bcftools" and bcftools is None:
                row[reader] = {"seconds": None, "reason": "bcftools not found on PATH (make "
                                                          "bench installs Debian's)"}
                continue
            if reader == "load_site" and people * variants > LOAD_SITE_MAX_CALLS:
                row[reader] = {"seconds": None, "reason": f"not measured above "
                                                          f"{LOAD_SITE_MAX_CALLS:,} calls"}
                continue
            say("data_path", f"scale: {reader} on {people:,} x {variants:,}")
            row[reader] = measure(reader, folder, bcftools)
        digests = {r: row[r]["digest"] for r in READERS if "digest" in row[r]}
        if len(set(digests.values())) != 1:
            raise BenchCheckError(f"readers disagree at {people}x{variants}: {digests}")
        row["agree"] = sorted(digests)
        rows.append(row)
        shutil.rmtree(folder, ignore_errors=True)
    return {"sizes": rows, "growth": growth(rows), "memory_goal": memory_goal(rows),
            "note": __doc__.split("\n\n")[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench.data_scale")
    parser.add_argument("reader", choices=READERS)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--bcftools")
    args = parser.parse_args(argv)
    print(json.dumps(_child(args.reader, args.folder, args.bcftools)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
