"""Synthetic site folders of any size, written fast: for the data-path scale rows.

`deploy.simulate` makes realistic cohorts but needs minutes and many GB for a biobank-sized
site; a scale measurement needs only files of the right shape and content type. So genotypes
here are independent random draws (allele frequencies uniform in [0.05, 0.5], about 0.4% of
calls missing), written straight from numpy in chunks of variants, so generating a site never
holds more than one chunk:

- `genotypes.vcf.gz` (BGZF at compression level 1, with a tabix index): phased diploid GT only,
  the layout of an imputation server's output;
- the same genotypes as PLINK 1 `genotypes.bed/.bim/.fam` (.bim's A1 = ALT, as `shared.plink`
  reads it), packed with numpy from the format's definition;
- `reference.fa` (+ .fai): random bases; every REF agrees with it;
- `panel.tsv`: every variant (a panel as large as the file); `cohort.tsv`: everyone.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pysam
from pysam.libcbgzf import BGZFile

CHROM = "22"
FIRST_POS = 1_001  # room for the encoder's context before the first variant
SPACING = 10  # bp between variants
_CALLS_PER_CHUNK = 1 << 24  # genotypes generated and written at once
_BASES = np.frombuffer(b"ACGT", dtype=np.uint8)
# Allele pair index (2 * allele1 + allele2), 4 = missing -> the 4-byte VCF cell.
_CELL = np.frombuffer(b"0|0\t0|1\t1|0\t1|1\t.|.\t", dtype="<u4")
_LAST = np.frombuffer(b"0|0\n0|1\n1|0\n1|1\n.|.\n", dtype="<u4")
# Alt-allele count (0, 1, 2), 3 = missing -> PLINK 1 .bed 2-bit code with A1 = ALT:
# 00 hom A1 (2 ALT), 01 missing, 10 het, 11 hom A2 (0 ALT).
_BED = np.array([0b11, 0b10, 0b00, 0b01], dtype=np.uint8)


@dataclasses.dataclass(frozen=True)
class SyntheticSite:
    folder: Path
    people: int
    variants: int

    @property
    def vcf(self) -> Path:
        return self.folder / "genotypes.vcf.gz"

    @property
    def bed(self) -> Path:
        return self.folder / "genotypes.bed"

    @property
    def reference(self) -> Path:
        return self.folder / "reference.fa"

    @property
    def panel(self) -> Path:
        return self.folder / "panel.tsv"

    @property
    def samples(self) -> list[str]:
        return sample_ids(self.people)


def sample_ids(people: int) -> list[str]:
    return [f"P{i:07d}" for i in range(people)]


def _alt_counts(rng: np.random.Generator, freq: np.ndarray, people: int
                ) -> tuple[np.ndarray, np.ndarray]:
    """(allele pair index [k, people] uint8, 4 = missing; alt count, 3 = missing)."""
    threshold = (freq * 255).astype(np.uint8)[:, None, None]
    draws = np.frombuffer(rng.bytes(len(freq) * people * 2), dtype=np.uint8)
    draws = draws.reshape(len(freq), people, 2)
    alt = draws < threshold
    pair = (2 * alt[..., 0] + alt[..., 1]).astype(np.uint8)
    missing = draws[..., 0] == 255
    count = alt.sum(axis=2, dtype=np.uint8)
    pair[missing] = 4
    count[missing] = 3
    return pair, count


def _pack_bed(count: np.ndarray) -> bytes:
    """PLINK 1 variant-major rows: four people per byte, the first in the low bits."""
    k, people = count.shape
    padded = np.zeros((k, -(-people // 4) * 4), dtype=np.uint8)
    padded[:, :people] = _BED[count]
    q = padded.reshape(k, -1, 4)
    return (q[..., 0] | (q[..., 1] << 2) | (q[..., 2] << 4) | (q[..., 3] << 6)).tobytes()


def write_site(folder: Path, people: int, variants: int, seed: int = 0) -> SyntheticSite:
    """Write a synthetic site of `people` x `variants` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    length = FIRST_POS + SPACING * variants + 1_000
    genome = _BASES[rng.integers(0, 4, size=length)]
    with open(folder / "reference.fa", "w") as fh:
        fh.write(f">{CHROM}\n")
        for start in range(0, length, 60):
            fh.write(genome[start:start + 60].tobytes().decode() + "\n")
    pysam.faidx(str(folder / "reference.fa"))

    pos = FIRST_POS + SPACING * np.arange(variants, dtype=np.int64)
    ref = genome[pos - 1]
    alt = _BASES[(np.searchsorted(_BASES, ref) + rng.integers(1, 4, size=variants)) % 4]
    ref_s = ref.tobytes().decode()
    alt_s = alt.tobytes().decode()
    ids = sample_ids(people)

    with open(folder / "panel.tsv", "w") as fh:
        fh.write("chrom\tpos\tref\talt\n")
        fh.writelines(f"{CHROM}\t{p}\t{r}\t{a}\n" for p, r, a in zip(pos.tolist(), ref_s, alt_s,
                                                                     strict=True))
    with open(folder / "cohort.tsv", "w") as fh:
        fh.write("sample_id\tancestry\tphenotype\tsplit\n")
        pheno = rng.integers(0, 2, size=people)
        fh.writelines(f"{s}\tEUR\t{y}\t{'test' if i % 4 == 0 else 'train'}\n"
                      for i, (s, y) in enumerate(zip(ids, pheno.tolist(), strict=True)))
    with open(folder / "genotypes.fam", "w") as fh:
        fh.writelines(f"{s}\t{s}\t0\t0\t0\t-9\n" for s in ids)
    with open(folder / "genotypes.bim", "w") as fh:
        fh.writelines(f"{CHROM}\tv{p}\t0\t{p}\t{a}\t{r}\n"
                      for p, r, a in zip(pos.tolist(), ref_s, alt_s, strict=True))

    header = ("##fileformat=VCFv4.2\n"
              f"##contig=<ID={CHROM},length={length}>\n"
              '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(ids) + "\n")
    chunk = max(1, _CALLS_PER_CHUNK // max(1, people))
    vcf = folder / "genotypes.vcf.gz"
    with BGZFile(str(vcf), "wb1") as out, open(folder / "genotypes.bed", "wb") as bed:
        out.write(header.encode())
        bed.write(bytes([0x6C, 0x1B, 0x01]))  # magic, variant-major
        for lo in range(0, variants, chunk):
            hi = min(variants, lo + chunk)
            freq = rng.uniform(0.05, 0.5, size=hi - lo)
            pair, count = _alt_counts(rng, freq, people)
            cells = _CELL[pair]
            cells[:, -1] = _LAST[pair[:, -1]]
            rows = cells.view(np.uint8).reshape(hi - lo, 4 * people)
            lines = []
            for i in range(hi - lo):
                p = int(pos[lo + i])
                lines.append(f"{CHROM}\t{p}\tv{p}\t{ref_s[lo + i]}\t{alt_s[lo + i]}\t.\tPASS\t.\t"
                             "GT\t".encode())
                lines.append(rows[i].tobytes())
            out.write(b"".join(lines))
            bed.write(_pack_bed(count))
    pysam.tabix_index(str(vcf), preset="vcf", force=True)
    return SyntheticSite(folder, people, variants)
