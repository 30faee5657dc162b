"""Per-chromosome VCF/BCF files read as one genotype source.

Imputation servers (Michigan, TOPMed) and most biobanks hand out one file per chromosome
(`chr1.dose.vcf.gz` ... `chr22.dose.vcf.gz`, each indexed). Concatenating them costs a site a
copy of its largest data; genofed reads them where they are instead. The files must list the
same people in the same order (else they are not one cohort's genotypes: one clear line names
the first file that differs), and each contig may have records in one file only. Every panel
variant is then read, harmonized exactly as from a single VCF (`shared.genotypes`), from the
file that holds its contig.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pysam

from shared.errors import InputError
from shared.genotypes import PanelGenotypes, canonical_contig, harmonize_panel_genotypes
from shared.panel import Panel
from shared.tokenizer import GT_MISSING


def file_samples(path: Path) -> list[str]:
    """The sample ids of a VCF/BCF header, in file order."""
    previous = pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(path)) as vf:
            return [str(s) for s in vf.header.samples]
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot open VCF/BCF ({err})") from None
    finally:
        pysam.set_verbosity(previous)


def samples_differ(first: Path, first_ids: Sequence[str], path: Path,
                   ids: Sequence[str]) -> str | None:
    """Why `path`'s samples are not `first`'s, in the same order; None when they are."""
    if list(ids) == list(first_ids):
        return None
    if len(ids) != len(first_ids):
        how = f"{len(ids)} samples, {first.name} has {len(first_ids)}"
    elif set(ids) == set(first_ids):
        k = next(i for i, (a, b) in enumerate(zip(ids, first_ids, strict=True)) if a != b)
        how = f"the same samples in another order (column {k + 10} is {ids[k]}, " \
              f"{first_ids[k]} in {first.name})"
    else:
        other = next(s for s in ids if s not in set(first_ids))
        how = f"sample {other} is not in {first.name}"
    return (f"per-chromosome files must list the same samples in the same order: {how} "
            "(reorder with `bcftools view -S samples.txt`)")


def contigs_with_records(path: Path) -> list[str]:
    """The contigs on which a file has records, through its index (tabix/CSI)."""
    previous = pysam.set_verbosity(0)
    try:
        with pysam.VariantFile(str(path)) as vf:
            if vf.index is None:
                raise InputError(path, "no .tbi or .csi index next to the VCF/BCF")
            found = []
            for contig in (str(c) for c in vf.index):
                with contextlib.suppress(ValueError):
                    if next(iter(vf.fetch(contig)), None) is not None:
                        found.append(contig)
            return found
    except (OSError, ValueError) as err:
        raise InputError(path, f"cannot read through its index ({err})") from None
    finally:
        pysam.set_verbosity(previous)


def contig_files(files: Sequence[Path]) -> dict[str, Path]:
    """Canonical contig name -> the one file holding its records (`InputError` for a contig in
    two files, or files whose samples differ)."""
    owner: dict[str, Path] = {}
    first_ids = file_samples(files[0])
    for path in files:
        why = samples_differ(files[0], first_ids, path, file_samples(path))
        if why is not None:
            raise InputError(path, why)
        for contig in contigs_with_records(path):
            key = canonical_contig(contig)
            if key in owner and owner[key] != path:
                raise InputError(path, f"contig {contig} has records in {owner[key].name} too: "
                                       "each chromosome's records belong in one file")
            owner[key] = path
    return owner


def harmonize_files(files: Sequence[Path], panel: Panel, samples: list[str],
                    fasta_path: str | Path | None = None,
                    min_quality: float = 0.0) -> PanelGenotypes:
    """Genotype codes of `samples` at every panel variant, each read from its contig's file
    (`shared.genotypes.harmonize_panel_genotypes` per file, on that file's panel variants)."""
    owner = contig_files(files)
    result = PanelGenotypes(np.full((len(samples), len(panel)), GT_MISSING, dtype=np.int8),
                            np.zeros(len(panel), dtype=bool), ["missing"] * len(panel))
    contig = np.array([canonical_contig(str(c)) for c in panel.chrom])
    for path in files:  # every file, even one without panel variants: its people are checked
        cols = np.flatnonzero([owner.get(c) == path for c in contig])
        part = harmonize_panel_genotypes(path, _subset(panel, cols), samples, fasta_path,
                                         min_quality)
        result.codes[:, cols] = part.codes
        result.found[cols] = part.found
        for j, how in zip(cols.tolist(), part.how, strict=True):
            result.how[j] = how
    return result


def _subset(panel: Panel, cols: np.ndarray) -> Panel:
    def each(by_build: dict[str, np.ndarray] | None) -> dict[str, np.ndarray] | None:
        return None if by_build is None else {b: v[cols] for b, v in by_build.items()}

    return replace(panel, chrom=panel.chrom[cols], pos=panel.pos[cols], ref=panel.ref[cols],
                   alt=panel.alt[cols], af=None if panel.af is None else panel.af[cols],
                   build_pos=each(panel.build_pos), build_ref=each(panel.build_ref))
