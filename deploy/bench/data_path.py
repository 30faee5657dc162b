"""Benchmark section `data_path`: how fast a site turns its VCF into genotype codes.

One site VCF is simulated, then every decoder is timed on that same file:

- genofed's decoder (`shared.genotypes.record_codes`) over ALL records, streamed with pysam;
- genofed's real path, `harmonize_panel_genotypes`, on a panel of every common variant
  (one tabix region fetch per panel variant);
- the naive pysam per-sample loop (`rec.samples[s]["GT"]`) on the first records only (it is
  slow), extrapolated to calls/s;
- `bcftools query -f '[%GT\\t]\\n'` piped into a vectorised numpy parse, end to end;
- `client.data.load_site` with an empty on-disk genotype cache (cold) and with it populated
  (cached), the in-process memory cache cleared before each;
- `scale`: load time and peak memory as a site grows to 100,000 people or 100,000 variants,
  for genofed's VCF and PLINK paths, pgenlib alone and `bcftools query`
  (`deploy.bench.data_scale`).

genofed's codes must equal the bcftools ones on every record (and the per-sample pysam ones on
its subset, and the panel path's at the panel variants), or the section fails.
Timings are `time.perf_counter`, best of `repetitions`; the OS page cache is warm for all of them
(the file was just written), so they measure decoding, not the disk.
"""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pysam

from deploy.bench.common import say
from deploy.simulate import SimulationConfig, simulate_cohort
from shared.genotypes import gt_code, harmonize_panel_genotypes, record_codes
from shared.panel import Panel
from shared.tokenizer import GT_HET, GT_HOM_ALT, GT_HOM_REF, GT_MISSING

T = TypeVar("T")

# ~3,000 samples x ~28k variants (83 M calls): decoding takes seconds, the section ~2 minutes.
FULL = SimulationConfig(
    seed=11, sites=1, people_per_population=1000, sequence_length=2_500_000, panel_size=1024,
    n_causal=40, n_interactions=4,
)
# 300 samples x ~1.1k variants: seconds, for the tests.
QUICK = SimulationConfig(
    seed=11, sites=1, people_per_population=100, sequence_length=200_000, panel_size=96,
    n_causal=12, n_interactions=2,
)
REPETITIONS = 3
COMMON_MAF = 0.05  # "common" for the panel-path measurement
PER_SAMPLE_CALLS = 1_000_000  # calls decoded by the per-sample loop (a subset of the file)
_PIPE_CHUNK = 1 << 24  # bytes of bcftools output parsed at once

_TAB, _NL, _DOT, _ONE = ord("\t"), ord("\n"), ord("."), ord("1")
_ZERO, _NINE, _PHASED, _UNPHASED = ord("0"), ord("9"), ord("|"), ord("/")


class BenchCheckError(RuntimeError):
    """Two decoders disagree on the same records: a benchmark of a wrong decoder is worthless."""


def _best_of(reps: int, fn: Callable[[], T]) -> tuple[float, T]:
    """(fastest wall time, result of the last call)."""
    best, result = float("inf"), None
    for _ in range(reps):
        began = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - began)
    return best, result  # type: ignore[return-value]


def _say(message: str) -> None:
    say("data_path", message)


# --------------------------------------------------------------------------- decoders


@dataclasses.dataclass
class _Decoded:
    codes: np.ndarray  # [records, samples] int8
    pos: np.ndarray
    ref: list[str]
    alt: list[str]


def decode_genofed(vcf: Path) -> _Decoded:
    """Every record, streamed in file order, decoded by genofed's `record_codes`."""
    rows, pos, ref, alt = [], [], [], []
    with pysam.VariantFile(str(vcf)) as vf:
        for rec in vf:
            rows.append(record_codes(rec, alt_index=1))
            pos.append(rec.pos)
            ref.append(rec.ref)
            alt.append(rec.alts[0] if rec.alts else ".")
    codes = np.stack(rows) if rows else np.empty((0, 0), dtype=np.int8)
    return _Decoded(codes, np.asarray(pos, dtype=np.int64), ref, alt)


def decode_per_sample(vcf: Path, n_records: int) -> np.ndarray:
    """The naive way: pysam's per-sample accessor, one call at a time, first `n_records`."""
    memo: dict[tuple, int] = {}

    def code(gt: tuple) -> int:
        if gt not in memo:
            if any(a is None for a in gt):
                memo[gt] = GT_MISSING
            elif len(gt) == 1:
                memo[gt] = GT_HOM_ALT if gt[0] == 1 else GT_HOM_REF
            else:
                n_alt = sum(a == 1 for a in gt)
                memo[gt] = (GT_HOM_REF, GT_HET, GT_HOM_ALT)[n_alt] if len(gt) == 2 else GT_MISSING
        return memo[gt]

    rows = []
    with pysam.VariantFile(str(vcf)) as vf:
        n = len(vf.header.samples)
        for rec in islice(vf, n_records):
            samples = rec.samples
            rows.append([code(samples[s]["GT"]) for s in range(n)])
    return np.asarray(rows, dtype=np.int8)


def parse_gt_lines(data: bytes, n_samples: int) -> np.ndarray:
    """Genotype codes [lines, n_samples] int8 of `bcftools query -f '[%GT\\t]\\n'` output.

    Vectorised over calls: field boundaries from the tab positions, then the two allele bytes
    of every 3-character diploid call (`0|1`, `./.`) compared at once; haploid 1-character calls
    likewise. Anything else (allele indices >= 10, polyploid calls) goes through genofed's
    `gt_code` once per distinct string. Counts allele 1, like `record_codes(rec, alt_index=1)`.
    """
    buf = np.frombuffer(data, dtype=np.uint8)
    n_lines = int(np.count_nonzero(buf == _NL))
    ends = np.flatnonzero(buf == _TAB)
    if len(ends) != n_lines * n_samples:
        raise BenchCheckError(
            f"bcftools output has {len(ends)} genotype fields on {n_lines} lines, "
            f"expected {n_samples} per line"
        )
    if not len(ends):
        return np.empty((n_lines, n_samples), dtype=np.int8)
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    starts += buf[starts] == _NL  # the first field of a line follows "\t\n"
    width = ends - starts
    codes = np.full(len(ends), GT_MISSING, dtype=np.int8)

    diploid = np.flatnonzero(width == 3)
    a0, sep, a1 = buf[starts[diploid]], buf[starts[diploid] + 1], buf[starts[diploid] + 2]
    digit0, digit1 = (a0 >= _ZERO) & (a0 <= _NINE), (a1 >= _ZERO) & (a1 <= _NINE)
    ok = ((sep == _PHASED) | (sep == _UNPHASED)) & (digit0 | (a0 == _DOT)) & (digit1 | (a1 == _DOT))
    called = ok & digit0 & digit1
    n_alt = (a0 == _ONE).astype(np.int8) + (a1 == _ONE).astype(np.int8)
    codes[diploid[called]] = n_alt[called]  # GT_HOM_REF/HET/HOM_ALT are 0/1/2

    haploid = np.flatnonzero(width == 1)
    h = buf[starts[haploid]]
    codes[haploid[h == _ONE]] = GT_HOM_ALT
    codes[haploid[(h >= _ZERO) & (h <= _NINE) & (h != _ONE)]] = GT_HOM_REF
    h_ok = (h == _DOT) | ((h >= _ZERO) & (h <= _NINE))

    other = np.flatnonzero((width != 3) & (width != 1))
    odd = np.concatenate([diploid[~ok], haploid[~h_ok], other])
    if len(odd):  # rare: not the simulated data; one gt_code per distinct string
        memo: dict[bytes, int] = {}
        for i in odd.tolist():
            text = data[starts[i] : ends[i]]
            if text not in memo:
                try:
                    memo[text] = gt_code(text.decode(), 1 << 30, alt_index=1)
                except ValueError as err:
                    raise BenchCheckError(f"bcftools printed an unreadable GT: {err}") from err
            codes[i] = memo[text]
    return codes.reshape(n_lines, n_samples)


def decode_bcftools(bcftools: str, vcf: Path, n_samples: int) -> np.ndarray:
    """`bcftools query` streamed through a pipe and parsed chunk by chunk as it arrives."""
    cmd = [bcftools, "query", "-f", "[%GT\\t]\\n", str(vcf)]
    parts: list[np.ndarray] = []
    with tempfile.TemporaryFile() as err, subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=err
    ) as proc:
        assert proc.stdout is not None
        rest = b""
        while block := proc.stdout.read(_PIPE_CHUNK):
            data = rest + block
            cut = data.rfind(b"\n") + 1
            rest = data[cut:]
            if cut:
                parts.append(parse_gt_lines(data[:cut], n_samples))
        rc = proc.wait()
        if rc != 0 or rest:
            err.seek(0)
            problem = err.read().decode(errors="replace").strip()[-500:]
            raise RuntimeError(f"{' '.join(cmd)} failed (exit {rc}): {problem or 'truncated'}")
    if not parts:
        return np.empty((0, n_samples), dtype=np.int8)
    return np.concatenate(parts)


def bcftools_version(bcftools: str) -> str:
    out = subprocess.run([bcftools, "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0].strip() if out.stdout else "unknown"


# --------------------------------------------------------------------------- helpers


def _common_panel(decoded: _Decoded, chrom: str) -> tuple[Panel, np.ndarray]:
    """Every biallelic SNV with pooled MAF >= COMMON_MAF (missing calls ignored)."""
    codes = decoded.codes
    called = codes != GT_MISSING
    alt = np.where(called, codes, 0).sum(axis=1, dtype=np.int64)
    n = 2 * called.sum(axis=1, dtype=np.int64)
    freq = np.divide(alt, n, out=np.zeros(len(n)), where=n > 0)
    snv = np.array([len(r) == 1 and len(a) == 1 for r, a in zip(decoded.ref, decoded.alt,
                                                                 strict=True)], dtype=bool)
    rows = np.flatnonzero((np.minimum(freq, 1 - freq) >= COMMON_MAF) & snv)
    panel = Panel(
        chrom=np.full(len(rows), chrom),
        pos=decoded.pos[rows],
        ref=np.array([decoded.ref[i] for i in rows]),
        alt=np.array([decoded.alt[i] for i in rows]),
        sha256="",
    )
    return panel, rows


def _check(name: str, ours: np.ndarray, theirs: np.ndarray) -> None:
    if ours.shape != theirs.shape:
        raise BenchCheckError(f"{name}: shape {theirs.shape} != genofed's {ours.shape}")
    bad = np.argwhere(ours != theirs)
    if len(bad):
        r, s = bad[0]
        raise BenchCheckError(
            f"{name}: {len(bad)} calls differ from genofed's, first at record {r} sample {s} "
            f"({theirs[r, s]} vs {ours[r, s]})"
        )


def _rate(calls: int, seconds: float) -> float:
    return calls / seconds if seconds > 0 else float("inf")


# --------------------------------------------------------------------------- the section


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    """Simulate one site and time every decoder on its VCF; see the module docstring."""
    from client import data as site_data  # torch-heavy import: only when the section runs
    from shared.encoding import EncoderSettings

    config = QUICK if quick else FULL
    reps = REPETITIONS
    work_dir = Path(work_dir)
    cohort = work_dir / "cohort"

    _say(f"simulating {3 * config.people_per_population} people over "
         f"{config.sequence_length / 1e6:g} Mb")
    began = time.perf_counter()
    meta = simulate_cohort(cohort, config, force=True)
    simulate_s = time.perf_counter() - began
    site = cohort / "site-1"
    vcf = site / "genotypes.vcf.gz"
    with pysam.VariantFile(str(vcf)) as vf:
        n_samples = len(vf.header.samples)
        samples = list(vf.header.samples)

    _say("genofed record_codes over every record")
    decode_s, decoded = _best_of(reps, lambda: decode_genofed(vcf))
    n_variants = int(decoded.codes.shape[0])
    calls = n_variants * n_samples
    result: dict[str, Any] = {
        "samples": n_samples,
        "variants": n_variants,
        "calls": calls,
        "file_bytes": vcf.stat().st_size,
        "simulate_s": simulate_s,
        "calls_per_s": _rate(calls, decode_s),
        "decode_s": decode_s,
    }
    checks = []

    _say("harmonize_panel_genotypes on every common variant")
    panel, rows = _common_panel(decoded, meta["chrom"])
    panel_s, harmonized = _best_of(
        reps, lambda: harmonize_panel_genotypes(vcf, panel, samples, site / "reference.fa")
    )
    _check("harmonize_panel_genotypes", decoded.codes[rows], harmonized.codes.T)
    checks.append(f"harmonize_panel_genotypes ({len(rows)} common variants)")
    panel_calls = len(rows) * n_samples
    result.update(
        panel_variants=len(rows),
        panel_calls_per_s=_rate(panel_calls, panel_s),
        panel_s=panel_s,
    )

    n_subset = max(1, min(n_variants, PER_SAMPLE_CALLS // max(1, n_samples)))
    _say(f"pysam per-sample GT loop on the first {n_subset} records")
    per_sample_s, naive = _best_of(reps, lambda: decode_per_sample(vcf, n_subset))
    _check("pysam per-sample", decoded.codes[:n_subset], naive)
    checks.append(f"pysam per-sample (first {n_subset} records)")
    per_sample_rate = _rate(n_subset * n_samples, per_sample_s)
    result.update(
        per_sample_pysam_calls_per_s=per_sample_rate,
        per_sample_pysam_subset_records=n_subset,
        per_sample_pysam_subset_s=per_sample_s,
        per_sample_pysam_extrapolated_s=calls / per_sample_rate,
        per_sample_pysam_note=(
            f"measured on the first {n_subset} of {n_variants} records only; "
            "calls/s and the whole-file time are extrapolated from that subset"
            if n_subset < n_variants
            else "measured on every record (the file is smaller than the usual subset)"
        ),
    )

    bcftools = shutil.which("bcftools")
    if bcftools is None:
        _say("bcftools not on PATH: skipped")
        result.update(
            bcftools_calls_per_s=None,
            bcftools_s=None,
            bcftools_reason="bcftools not found on PATH (make bench installs Debian's)",
        )
    else:
        _say("bcftools query | numpy parse over every record")
        bcf_s, bcf_codes = _best_of(reps, lambda: decode_bcftools(bcftools, vcf, n_samples))
        _check("bcftools query", decoded.codes, bcf_codes)
        checks.append(f"bcftools query (all {n_variants} records)")
        result.update(
            bcftools_calls_per_s=_rate(calls, bcf_s),
            bcftools_s=bcf_s,
            bcftools_version=bcftools_version(bcftools),
        )
    result.update(agree=True, agree_checks=checks)

    _say("client.data.load_site, cold and cached")
    cold, cached = [], []
    reference = None
    for rep in range(reps):
        cache_dir = work_dir / f"genotype-cache-{rep}"  # empty: a cold start
        for times in (cold, cached):
            site_data._load.cache_clear()
            began = time.perf_counter()
            loaded = site_data.load_site(site, EncoderSettings(), cache_dir)
            times.append(time.perf_counter() - began)
            if reference is None:
                reference = loaded.genotypes
            elif not np.array_equal(reference, loaded.genotypes):
                raise BenchCheckError("load_site: the cached genotypes differ from the cold ones")
    site_data._load.cache_clear()
    result.update(
        cold_load_s=min(cold),
        cached_load_s=min(cached),
        cache_speedup=min(cold) / min(cached),
        load_panel_variants=int(meta["panel_size"]),
        load_note=(
            "load_site(site, EncoderSettings(), cache_dir): cold = empty cache dir, cached = "
            "populated; the memory cache cleared before each; both read the tables, encode the "
            "panel and hash the VCF for the cache key"
        ),
    )
    result.update(
        repetitions=reps,
        timing=f"time.perf_counter, best of {reps}; OS page cache warm",
        config=dataclasses.asdict(config),
    )
    from deploy.bench import data_scale

    result["scale"] = data_scale.run(work_dir, quick)
    return result
