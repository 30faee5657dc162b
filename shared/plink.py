"""PLINK genotypes, read where they are: PLINK 1 (.bed/.bim/.fam) and PLINK 2 (.pgen/.pvar/.psam).

Biobanks keep genotypes as PLINK files more often than as VCF. They are read through pgenlib,
PLINK 2's own reader (one library for both formats; chosen over bed-reader, which reads PLINK 1
only): allele counts per variant for the cohort's people, harmonized to the panel exactly as a
VCF is (`shared.genotypes`: normalized alleles, the exact match first, swaps and strand flips
only where plausible). PLINK's conventions, as PLINK 2 reads them: a .bim's fifth column (A1)
is the ALT allele and its sixth (A2) the REF; a .pvar says REF and ALT itself. A .bim's REF is
often the major allele rather than the reference base; harmonization flips those.

A .pgen's dosages (imputed data: `plink2 --vcf ... dosage=DS`) reach the model as fractions,
as a VCF's DS does: the genotype weights interpolate between the two nearest genotypes, and a
person whose hard call PLINK left missing (a dosage far from any integer) gets the nearest
genotype as the call. Another ALT of a multi-allelic .pvar line is read as hard calls.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pysam

from shared.errors import InputError
from shared.genotypes import (
    FLIP,
    INDEL_WINDOW,
    PanelGenotypes,
    better_hit,
    canonical_contig,
    contig_alias,
    dosage_probs,
    match_alleles,
    normalize,
    plausible_match,
    soft_columns,
)
from shared.progress import Progress
from shared.tokenizer import GT_MISSING

log = logging.getLogger(__name__)

# The genotype file's suffix -> (variant table, sample table).
PLINK_SUFFIXES = {".bed": (".bim", ".fam"), ".pgen": (".pvar", ".psam")}


def is_plink(path: str | Path) -> bool:
    return Path(path).suffix in PLINK_SUFFIXES


@dataclass(frozen=True)
class PlinkFiles:
    genotypes: Path
    variants: Path
    samples: Path

    @classmethod
    def of(cls, path: str | Path) -> PlinkFiles:
        """The three files of a PLINK fileset, named after its genotype file."""
        path = Path(path)
        variants, samples = (path.with_suffix(s) for s in PLINK_SUFFIXES[path.suffix])
        for p in (path, variants, samples):
            if not p.is_file():
                raise InputError(p, "missing: a PLINK fileset needs all three of "
                                    f"{path.name}, {variants.name} and {samples.name}")
        return cls(path, variants, samples)

    @property
    def inputs(self) -> list[Path]:
        return [self.genotypes, self.variants, self.samples]


def read_samples(files: PlinkFiles) -> list[str]:
    """The individual ids (IID), in file order: .fam columns FID IID ..., .psam by header."""
    lines = [line for line in files.samples.read_text().splitlines() if line.strip()]
    if files.samples.suffix == ".fam":
        column = 1
    else:
        header = lines[0].lstrip("#").split() if lines and lines[0].startswith("#") else None
        if header is None or "IID" not in header:
            raise InputError(files.samples, "a .psam needs a header line naming IID", "line 1")
        column, lines = header.index("IID"), lines[1:]
    ids = []
    for n, line in enumerate(lines, start=1):
        fields = line.split()
        if len(fields) <= column:
            raise InputError(files.samples, "too few columns for the sample id", f"line {n}")
        ids.append(fields[column])
    return ids


@dataclass(frozen=True)
class PlinkVariants:
    chrom: list[str]
    pos: np.ndarray  # int64, 1-based
    ref: list[str]
    alts: list[list[str]]  # each variant's ALT alleles (a .pvar may list several)


def read_variants(files: PlinkFiles) -> PlinkVariants:
    chrom: list[str] = []
    pos: list[int] = []
    ref: list[str] = []
    alts: list[list[str]] = []
    bim = files.variants.suffix == ".bim"
    with open(files.variants) as fh:
        for n, line in enumerate(fh, start=1):
            if not line.strip() or line.startswith("##"):
                continue
            fields = line.split()
            if fields[0].startswith("#"):
                names = [f.lstrip("#") for f in fields]
                if not {"CHROM", "POS", "REF", "ALT"} <= set(names):
                    raise InputError(files.variants, "a .pvar header needs CHROM, POS, REF "
                                                     "and ALT", f"line {n}")
                cols = [names.index(c) for c in ("CHROM", "POS", "REF", "ALT")]
                continue
            try:
                if bim:
                    c, p, r, a = fields[0], int(fields[3]), fields[5], fields[4]
                else:
                    c, p, r, a = (fields[cols[0]], int(fields[cols[1]]), fields[cols[2]],
                                  fields[cols[3]])
            except (IndexError, ValueError, UnboundLocalError):
                raise InputError(files.variants, "not a variant line (chromosome, position, "
                                                 "alleles)", f"line {n}") from None
            chrom.append(c)
            pos.append(p)
            ref.append(r.upper())
            alts.append([x.upper() for x in a.split(",")])
    return PlinkVariants(chrom, np.array(pos, dtype=np.int64), ref, alts)


def harmonize_plink(path: str | Path, panel, samples: list[str],  # noqa: ANN001 - Panel
                    fasta: pysam.FastaFile | None):  # noqa: ANN201 - PanelGenotypes
    """Genotype codes of `samples` at every panel variant from a PLINK fileset (see module)."""
    import pgenlib


    files = PlinkFiles.of(path)
    ids = read_samples(files)
    where = {s: i for i, s in enumerate(ids)}
    absent = [s for s in samples if s not in where]
    if absent:
        raise InputError(files.samples, "sample in the cohort table but not the PLINK fileset",
                         absent[0])
    variants = read_variants(files)
    by_contig: dict[str, np.ndarray] = {}
    sorted_pos: dict[str, np.ndarray] = {}
    canon = np.array([canonical_contig(c) for c in variants.chrom])
    for c in set(canon.tolist()):
        rows = np.flatnonzero(canon == c)
        by_contig[c] = rows[np.argsort(variants.pos[rows], kind="stable")]  # by position
        sorted_pos[c] = variants.pos[by_contig[c]]
    fa_names = set(fasta.references) if fasta is not None else set()
    result = PanelGenotypes(np.full((len(samples), len(panel)), GT_MISSING, dtype=np.int8),
                            np.zeros(len(panel), dtype=bool), ["missing"] * len(panel))
    raw = np.array([where[s] for s in samples], dtype=np.int64)
    subset = np.unique(raw).astype(np.uint32)  # pgenlib reads a sorted subset
    order = np.searchsorted(subset, raw)
    try:
        reader = pgenlib.PgenReader(bytes(str(files.genotypes), "utf-8"),
                                    raw_sample_ct=len(ids), sample_subset=subset)
    except RuntimeError as err:
        raise InputError(files.genotypes, f"cannot read PLINK genotypes ({err})") from None
    counts = np.empty(len(subset), dtype=np.int8)
    alleles = np.empty(2 * len(subset), dtype=np.int32)
    dosages = np.empty(len(subset), dtype=np.float64)
    has_dosages = files.genotypes.suffix == ".pgen"  # a .bed holds hard calls only
    soft: dict[int, np.ndarray] = {}
    progress = Progress(log, f"reading {files.genotypes.name}", len(panel),
                        len(panel) * len(samples))
    try:
        if reader.get_variant_ct() != len(variants.pos):
            raise InputError(files.genotypes, f"{reader.get_variant_ct()} variants, but "
                                              f"{files.variants.name} lists {len(variants.pos)}")
        for j, (chrom, p, r, a) in enumerate(zip(panel.chrom, panel.pos, panel.ref, panel.alt,
                                                 strict=True)):
            progress.update(j)
            canon_chrom = canonical_contig(str(chrom))
            rows = by_contig.get(canon_chrom)
            if rows is None:
                continue
            fa_contig = contig_alias(str(chrom), fa_names) if fasta is not None else None
            ref_fa = fasta if fa_contig else None
            target = normalize(int(p), r, a, ref_fa, fa_contig)
            near = _near(sorted_pos[canon_chrom], rows, target[0],
                         len(target[1]) + INDEL_WINDOW)
            best = None
            for i in near.tolist():
                for k, alt in enumerate(variants.alts[i], start=1):
                    if alt in (".", "*") or alt.startswith("<"):
                        continue
                    norm = normalize(int(variants.pos[i]), variants.ref[i], alt, ref_fa,
                                     fa_contig)
                    kind = match_alleles(target, norm)
                    if kind is not None and plausible_match(kind, norm, ref_fa, fa_contig):
                        best = better_hit(best, i, k, kind)
            if best is None:
                continue
            i, k, kind = best
            probs = None
            if k == 1:
                reader.read(i, counts)
                n_alt = counts.astype(np.int16)
                if has_dosages:
                    reader.read_dosages(i, dosages)
                    n_alt, probs = _with_dosages(n_alt, dosages)
            else:  # another ALT of a multi-allelic .pvar line: count that allele
                reader.read_alleles(i, alleles)
                pairs = alleles.reshape(-1, 2)
                n_alt = (pairs == k).sum(axis=1).astype(np.int16)
                n_alt[(pairs < 0).any(axis=1)] = -9
            codes = np.where(n_alt < 0, GT_MISSING, n_alt).astype(np.int8)[order]
            swapped = kind.endswith("swapped")
            result.codes[:, j] = FLIP[codes] if swapped else codes
            if probs is not None:  # a swap reverses them: P(0 ALT) is P(2 REF)
                soft[j] = probs[order, ::-1] if swapped else probs[order]
            result.found[j] = True
            result.how[j] = kind
        progress.update(len(panel))
    finally:
        reader.close()
    result.probs = soft_columns(result.codes, soft)
    return result


def _with_dosages(n_alt: np.ndarray, dosages: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(ALT counts with missing hard calls filled from the dosage's nearest genotype,
    genotype weights [n, 3]) of one variant's hard calls and ALT dosages (-9 = missing)."""
    have = dosages >= 0
    nearest = np.minimum(2, np.floor(np.where(have, dosages, 0) + 0.5)).astype(np.int16)
    n_alt = np.where((n_alt < 0) & have, nearest, n_alt)
    probs = dosage_probs(np.where(have, dosages, np.clip(n_alt, 0, 2))).astype(np.float32)
    probs[~have & (n_alt < 0)] = 0.0  # missing both ways: no weight, as a missing call
    return n_alt, probs


def _near(sorted_pos: np.ndarray, rows: np.ndarray, center: int, within: int) -> np.ndarray:
    """The rows (`rows` sorted by position, at `sorted_pos`) within `within` bp of `center`,
    in file order: two binary searches, so a panel as large as the file is matched in
    n log n, not n²."""
    lo = np.searchsorted(sorted_pos, center - within, side="left")
    hi = np.searchsorted(sorted_pos, center + within, side="right")
    return np.sort(rows[lo:hi])
