"""The coordinator's variant panel: the (chrom, pos, ref, alt) list the model is defined on.

Every site encodes its people at exactly these variants, in this order, so weights learned at
one hospital mean the same thing at another. The panel's sha256 travels in the run config so a
site refuses to train on a different panel than the coordinator's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shared.builds import canonical_build
from shared.errors import InputError
from shared.fsio import sha256_file

PANEL_COLUMNS = ("chrom", "pos", "ref", "alt")
AF_COLUMN = "af"  # optional: alt-allele frequency in a public reference (gnomAD, 1000 Genomes)
_BASES = set("ACGT")


@dataclass(frozen=True)
class Panel:
    chrom: np.ndarray  # [T] str
    pos: np.ndarray  # [T] int64, 1-based VCF positions
    ref: np.ndarray  # [T] str
    alt: np.ndarray  # [T] str
    sha256: str
    af: np.ndarray | None = None  # [T] float64 in [0, 1], public alt-allele frequency
    build: str | None = None  # declared in a `#genome_build=GRCh38` header line

    def __len__(self) -> int:
        return len(self.pos)


def read_panel(path: str | Path) -> Panel:
    """Read and validate a panel TSV; one clear InputError naming the row for anything wrong."""
    path = Path(path)
    meta = _header_lines(path)
    try:
        df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, skiprows=len(meta))
    except FileNotFoundError as err:
        raise InputError(path, "panel file not found") from err
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise InputError(path, f"not a readable tab-separated panel ({err})") from err
    missing = [c for c in PANEL_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(path, f"panel lacks column(s) {', '.join(missing)}")
    if df.empty:
        raise InputError(path, "panel has no variants")
    first = 2 + len(meta)  # the file line of the table's first row
    for i, row in enumerate(df[list(PANEL_COLUMNS)].itertuples(index=False), start=first):
        record = f"line {i}"
        if not row.chrom:
            raise InputError(path, "empty chrom", record)
        if not row.pos.isdigit() or int(row.pos) < 1:
            raise InputError(path, f"position {row.pos!r} is not a positive integer", record)
        for name, allele in (("ref", row.ref), ("alt", row.alt)):
            if not allele or set(allele.upper()) - _BASES:
                raise InputError(path, f"{name} allele {allele!r} is not A/C/G/T", record)
        if row.ref.upper() == row.alt.upper():
            raise InputError(path, "ref and alt alleles are identical", record)
    af = _alt_frequencies(df, path, first) if AF_COLUMN in df.columns else None
    keys = list(zip(df.chrom, df.pos.astype(np.int64), strict=True))
    if len(set(keys)) != len(keys):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise InputError(path, f"variant {dup[0]}:{dup[1]} listed twice")
    return Panel(
        chrom=df.chrom.to_numpy(dtype=str),
        pos=df.pos.astype(np.int64).to_numpy(),
        ref=df.ref.str.upper().to_numpy(dtype=str),
        alt=df.alt.str.upper().to_numpy(dtype=str),
        sha256=sha256_file(path),
        af=af,
        build=_declared_build(meta, path),
    )


def _header_lines(path: Path) -> list[str]:
    """The `#key=value` lines above the table (PGS Catalog style)."""
    lines: list[str] = []
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if not line.startswith("#"):
                    break
                lines.append(line.rstrip("\r\n"))
    except (OSError, UnicodeDecodeError):
        return []  # read_csv names the problem
    return lines


def _declared_build(meta: list[str], path: Path) -> str | None:
    for line in meta:
        key, _, value = line.lstrip("#").partition("=")
        if key.strip().lower() in ("genome_build", "genome-build", "build"):
            return canonical_build(value, path) if value.strip() else None
    return None


def _alt_frequencies(df: pd.DataFrame, path: Path, first: int) -> np.ndarray:
    """The `af` column as floats; a blank, non-numeric or out-of-range value names its line.

    The frequencies are part of the model's input (they standardize the additive read-out), so
    they must be public figures the whole consortium shares, which the panel's sha256 pins.
    """
    values = pd.to_numeric(df[AF_COLUMN], errors="coerce").to_numpy(dtype=np.float64)
    bad = ~((values >= 0) & (values <= 1))  # also catches NaN from blanks and text
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(
            path, f"af {df[AF_COLUMN].iloc[i]!r} is not a frequency in [0, 1]", f"line {i + first}"
        )
    return values


# The public sample: people drawn under Hardy-Weinberg from the panel's allele frequencies with
# a seed everyone knows. Anyone holding the panel draws the same people: no site's data in it.
PUBLIC_SAMPLE = 512
PUBLIC_SAMPLE_SEED = 0


def public_sample(alt_freq: np.ndarray, n: int = PUBLIC_SAMPLE) -> np.ndarray:
    """Genotype codes [n, T] int8 of the public sample (alt-allele counts 0/1/2)."""
    rng = np.random.default_rng(PUBLIC_SAMPLE_SEED)
    return rng.binomial(2, np.asarray(alt_freq, dtype=np.float64),
                        size=(n, len(alt_freq))).astype(np.int8)
