"""Per-chromosome VCF/BCF files (as imputation servers write them) read as one genotype source."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pysam
import pysam.bcftools
import pytest

from client.data import SitePaths
from shared.errors import InputError
from shared.genotypes import harmonize_panel_genotypes
from shared.panel import read_panel

SEQ = {"chr1": "GATTACAGCACACACATTTGCAGGCATCGATCGTACCGTA" * 3,
       "chr2": "CCGTAGGATTACATTTGCAGCACACAGGCATCGATCGTAT" * 3}
SAMPLES = ["p1", "p2", "p3", "p4"]
# (chrom, pos, ALT, GTs of p1..p4); REF is the reference's base.
RECORDS = [
    ("chr1", 5, "T", ["0|1", "1|1", "0|0", "./."]),
    ("chr1", 21, "A", ["1|1", "0|1", "0|1", "0|0"]),
    ("chr2", 3, "A", ["0|0", "0|0", "1|1", "0|1"]),
    ("chr2", 30, "C", ["0/1", "./.", "1/1", "0/0"]),
]


def _reference(folder: Path) -> Path:
    ref = folder / "reference.fa"
    ref.write_text("".join(f">{c}\n{s}\n" for c, s in SEQ.items()))
    pysam.faidx(str(ref))
    return ref


def _vcf(path: Path, records: list, samples: list[str] = SAMPLES, bcf: bool = False) -> Path:
    head = ["##fileformat=VCFv4.2", *(f"##contig=<ID={c},length={len(s)}>" for c, s in SEQ.items()),
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                       *samples])]
    order = [SAMPLES.index(s) for s in samples]
    body = ["\t".join([c, str(p), ".", SEQ[c][p - 1], a, ".", "PASS", ".", "GT",
                       *(gts[k] for k in order)]) for c, p, a, gts in records]
    plain = path.parent / (path.name + ".txt")
    plain.write_text("\n".join(head + body) + "\n")
    if bcf:
        pysam.bcftools.view("-Ob", "-o", str(path), str(plain), catch_stdout=False)
        pysam.bcftools.index("--csi", str(path))
    else:
        pysam.tabix_compress(str(plain), str(path), force=True)
        pysam.tabix_index(str(path), preset="vcf", force=True)
    plain.unlink()
    return path


def _panel(folder: Path) -> Path:
    rows = "".join(f"{c}\t{p}\t{SEQ[c][p - 1]}\t{a}\n" for c, p, a, _ in RECORDS)
    # one panel variant on a contig no file holds: missing, as from a single VCF
    path = folder / "panel.tsv"
    path.write_text("chrom\tpos\tref\talt\n" + rows + "chr3\t10\tA\tG\n")
    return path


@pytest.fixture()
def folder(tmp_path: Path) -> Path:
    _reference(tmp_path)
    _panel(tmp_path)
    return tmp_path


def test_per_chromosome_files_read_as_the_concatenated_vcf(folder: Path) -> None:
    """chr1 in a VCF, chr2 in a BCF: the same codes, in the cohort's order, as one VCF holding
    both; the folder's files are found by their names (chr2 after chr1, chr10 after chr2)."""
    (folder / "whole").mkdir()
    whole = _vcf(folder / "whole" / "genotypes.vcf.gz", RECORDS)
    site = folder / "site"
    site.mkdir()
    _vcf(site / "chr1.dose.vcf.gz", RECORDS[:2])
    _vcf(site / "chr2.dose.bcf", RECORDS[2:], bcf=True)
    _vcf(site / "chr10.vcf.gz", [])  # a chromosome without panel variants
    (site / "chr1_notes.txt").write_text("not genotypes")
    paths = SitePaths.in_folder(site)
    assert [p.name for p in paths.genotypes] == ["chr1.dose.vcf.gz", "chr2.dose.bcf",
                                                 "chr10.vcf.gz"]
    assert len([p for p in paths.genotype_inputs() if p is not None]) == 6  # each with its index
    panel = read_panel(folder / "panel.tsv")
    people = ["p3", "p1", "p4"]
    got = harmonize_panel_genotypes(paths.genotypes, panel, people, folder / "reference.fa")
    want = harmonize_panel_genotypes(whole, panel, people, folder / "reference.fa")
    np.testing.assert_array_equal(got.codes, want.codes)
    assert got.how == want.how == ["same"] * 4 + ["missing"]
    assert got.codes[:, 0].tolist() == [0, 1, 3]  # p3 0|0, p1 0|1, p4 missing


def test_files_whose_samples_differ_are_one_clear_line(folder: Path) -> None:
    panel = read_panel(folder / "panel.tsv")
    a = _vcf(folder / "chr1.vcf.gz", RECORDS[:2])
    for samples, why in ((["p2", "p1", "p3", "p4"], "the same samples in another order "
                                                    "(column 10 is p2, p1 in chr1.vcf.gz)"),
                         (SAMPLES[:3], "3 samples, chr1.vcf.gz has 4")):
        b = _vcf(folder / "chr2.vcf.gz", RECORDS[2:], samples)
        with pytest.raises(InputError, match="per-chromosome files must list the same samples "
                                             "in the same order") as caught:
            harmonize_panel_genotypes([a, b], panel, ["p1"])
        assert caught.value.path == str(b) and why in caught.value.problem


def test_a_contig_in_two_files_is_refused(folder: Path) -> None:
    panel = read_panel(folder / "panel.tsv")
    a = _vcf(folder / "a.vcf.gz", RECORDS[:3])
    b = _vcf(folder / "b.vcf.gz", RECORDS[2:])
    with pytest.raises(InputError, match="contig chr2 has records in a.vcf.gz too"):
        harmonize_panel_genotypes([a, b], panel, ["p1"])


def test_site_toml_lists_the_files(folder: Path) -> None:
    """Files named otherwise are listed (names or globs) in site.toml; a glob naming nothing, or
    a file outside the folder, is one line naming site.toml."""
    site = folder / "site"
    site.mkdir()
    _vcf(site / "ukb_c1_v3.vcf.gz", RECORDS[:2])
    _vcf(site / "ukb_c2_v3.vcf.gz", RECORDS[2:])
    with pytest.raises(InputError, match="no genotypes.vcf.gz or genotypes.bcf, but VCFs named "
                                         "otherwise"):
        SitePaths.in_folder(site).require(cohort=False)
    (site / "site.toml").write_text('[genotypes]\nfiles = ["ukb_c*_v3.vcf.gz"]\n')
    for name in ("reference.fa", "reference.fa.fai", "panel.tsv"):
        (site / name).symlink_to(folder / name)
    paths = SitePaths.in_folder(site)
    paths.require(cohort=False)
    assert [p.name for p in paths.genotypes] == ["ukb_c1_v3.vcf.gz", "ukb_c2_v3.vcf.gz"]
    (site / "site.toml").write_text('[genotypes]\nfiles = ["chr*.vcf.gz"]\n')
    with pytest.raises(InputError, match=r"'chr\*.vcf.gz' names no file"):
        SitePaths.in_folder(site)
    (site / "site.toml").write_text('[genotypes]\nfiles = ["../whole.vcf.gz"]\n')
    with pytest.raises(InputError, match="inside the data folder"):
        SitePaths.in_folder(site)
