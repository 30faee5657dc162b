"""The coordinator's variant panel: the (chrom, pos, ref, alt) list the model is defined on.

Every site encodes its people at exactly these variants, in this order, so weights learned at
one hospital mean the same thing at another. The panel's sha256 travels in the run config so a
site refuses to train on a different panel than the coordinator's.

One panel may serve sites on either genome build, as PGS Catalog's harmonized scoring files do:
besides its declared build's `pos` it may carry `pos_grch37` / `pos_grch38` (and, where the
reference base differs between builds, `ref_grch37` / `ref_grch38`, which must be the panel's
REF or ALT). A site looks its variants up at its own build's positions (`Panel.on_build`); the
model's coordinates stay the declared build's, the same at every site.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from shared.builds import LENGTHS, canonical_build
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
    # Per build (GRCh37, GRCh38): [T] positions and [T] REF on that build (`pos_<build>`,
    # `ref_<build>` columns); None when the panel has positions for its declared build only.
    build_pos: dict[str, np.ndarray] | None = None
    build_ref: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.pos)

    def on_build(self, build: str | None) -> tuple[Panel, np.ndarray]:
        """The panel as a site on `build` looks its variants up, and a [T] bool mask of the
        variants whose REF on that build is the panel's ALT (looked up with REF and ALT
        swapped: their allele counts must be flipped back). Itself when it has no positions
        for `build`."""
        if not self.build_pos or build is None or build not in self.build_pos:
            return self, np.zeros(len(self), dtype=bool)
        ref = (self.build_ref or {}).get(build, self.ref)
        swapped = ref != self.ref
        return replace(self, pos=self.build_pos[build], ref=ref,
                       alt=np.where(swapped, self.ref, self.alt), build=build, build_pos=None,
                       build_ref=None), swapped


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
    build = _declared_build(meta, path)
    build_pos, build_ref = _build_columns(df, path, first, build)
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
        build=build,
        build_pos=build_pos,
        build_ref=build_ref,
    )


def _build_columns(df: pd.DataFrame, path: Path, first: int, build: str | None
                   ) -> tuple[dict[str, np.ndarray] | None, dict[str, np.ndarray] | None]:
    """The `pos_<build>` / `ref_<build>` columns, validated (see the module docstring)."""
    builds = {b for b in LENGTHS for col in (f"pos_{b.lower()}", f"ref_{b.lower()}")
              if col in df.columns}
    if not builds:
        return None, None
    if build is None:
        raise InputError(path, "a panel with pos_grch37/pos_grch38 columns must declare its own "
                               "build (a `#genome_build=GRCh38` line): the model's coordinates")
    positions: dict[str, np.ndarray] = {build: df.pos.astype(np.int64).to_numpy()}
    refs: dict[str, np.ndarray] = {}
    ref, alt = df.ref.str.upper().to_numpy(dtype=str), df.alt.str.upper().to_numpy(dtype=str)
    for b in sorted(builds):
        col = f"pos_{b.lower()}"
        if col not in df.columns:
            raise InputError(path, f"ref_{b.lower()} without {col}")
        bad = ~df[col].str.fullmatch(r"[1-9][0-9]*")
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(path, f"{col} {df[col].iloc[i]!r} is not a positive integer (every "
                                   f"variant needs a {b} position)", f"line {i + first}")
        pos = df[col].astype(np.int64).to_numpy()
        if b == build and (pos != positions[b]).any():
            i = int(np.flatnonzero(pos != positions[b])[0])
            raise InputError(path, f"{col} differs from pos on the panel's own build {build}",
                             f"line {i + first}")
        positions[b] = pos
        rcol = f"ref_{b.lower()}"
        if rcol in df.columns:
            declared = df[rcol].str.upper().to_numpy(dtype=str)
            declared = np.where(declared == "", ref, declared)
            bad = (declared != ref) & ((declared != alt) | (b == build))
            if bad.any():
                i = int(np.flatnonzero(bad)[0])
                raise InputError(path, f"{rcol} {str(declared[i])!r} is neither the panel's "
                                       "REF nor its ALT (on its own build, the REF)",
                                 f"line {i + first}")
            refs[b] = declared
    return positions, refs


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
