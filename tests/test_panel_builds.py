"""One panel for both genome builds: positions for GRCh37 and GRCh38 (as PGS Catalog's
harmonized scoring files carry), each site looking its variants up at its own build's."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pysam
import pytest
import torch

from client.check import check_site
from client.data import load_site
from shared.encoding import EncoderSettings, encode_panel
from shared.errors import InputError
from shared.genotypes import harmonize_panel_genotypes
from shared.panel import read_panel

SEQ37 = "GATTACAGCACACACATTTGCAGGCATCGATCGTACCGTA" * 3
SHIFT = 17  # GRCh38 has 17 more bases before these variants
# (GRCh37 position, panel REF, ALT); the panel's REF is its own build's (GRCh38).
VARIANTS = [(12, "A", "G"), (20, "G", "A"), (33, "T", "G"), (50, "A", "C")]
SWAPPED = 2  # this variant's GRCh38 base is the panel's REF, its GRCh37 base the panel's ALT
_seq38 = list("ACGTTGCAACGTTGCAA" + SEQ37)
_seq38[VARIANTS[SWAPPED][0] + SHIFT - 1] = VARIANTS[SWAPPED][1]
SEQ38 = "".join(_seq38)
# The GRCh37 reference's base there is the panel's ALT.
assert SEQ37[VARIANTS[SWAPPED][0] - 1] == VARIANTS[SWAPPED][2]
LENGTH = {"GRCh37": 51304566, "GRCh38": 50818468}  # chr22 in each build
SAMPLES = ["p1", "p2", "p3", "p4"]
# Counts of the panel's ALT allele, per person (rows) and variant (columns); 3 = missing.
TRUTH = np.array([[0, 1, 2, 0], [1, 1, 0, 2], [2, 0, 1, 3], [0, 2, 1, 1]], dtype=np.int8)
GT = {0: "0/0", 1: "0/1", 2: "1/1", 3: "./."}


def _site(folder: Path, build: str) -> Path:
    """A site on `build`: its reference (the .fai states the build's chr22 length, as a real
    one's would), and its people's calls at that build's positions, REF as its reference says."""
    folder.mkdir()
    seq, shift = (SEQ37, 0) if build == "GRCh37" else (SEQ38, SHIFT)
    ref = folder / "reference.fa"
    ref.write_text(f">chr22\n{seq}\n")
    Path(f"{ref}.fai").write_text(f"chr22\t{LENGTH[build]}\t7\t{len(seq)}\t{len(seq) + 1}\n")
    head = ["##fileformat=VCFv4.2", f"##contig=<ID=chr22,length={LENGTH[build]}>",
            '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">',
            "\t".join(["#CHROM", "POS", "ID", "REF", "ALT", "QUAL", "FILTER", "INFO", "FORMAT",
                       *SAMPLES])]
    body = []
    for j, (p37, r, a) in enumerate(VARIANTS):
        pos = p37 + shift
        base = seq[pos - 1]
        counts = TRUTH[:, j] if base == r else np.where(TRUTH[:, j] == 3, 3, 2 - TRUTH[:, j])
        alt = a if base == r else r
        body.append("\t".join(["chr22", str(pos), ".", base, alt, ".", "PASS", ".", "GT",
                               *(GT[int(c)] for c in counts)]))
    (folder / "g.vcf").write_text("\n".join(head + body) + "\n")
    pysam.tabix_compress(str(folder / "g.vcf"), str(folder / "genotypes.vcf.gz"), force=True)
    pysam.tabix_index(str(folder / "genotypes.vcf.gz"), preset="vcf", force=True)
    (folder / "g.vcf").unlink()
    (folder / "cohort.tsv").write_text("sample_id\tancestry\tphenotype\n" + "".join(
        f"{s}\tCEU\t{i % 2}\n" for i, s in enumerate(SAMPLES)))
    return folder


def _panel(path: Path, header: str = "#genome_build=GRCh38\n", ref37: bool = True,
           pos37: list[str] | None = None) -> Path:
    pos37 = pos37 or [str(p) for p, _, _ in VARIANTS]
    rows = [f"chr22\t{p + SHIFT}\t{r}\t{a}\t{q}" + (f"\t{a if j == SWAPPED else ''}"
                                                    if ref37 else "")
            for j, ((p, r, a), q) in enumerate(zip(VARIANTS, pos37, strict=True))]
    cols = "chrom\tpos\tref\talt\tpos_grch37" + ("\tref_grch37" if ref37 else "")
    path.write_text(header + cols + "\n" + "\n".join(rows) + "\n")
    return path


def test_one_panel_reads_the_same_genotypes_and_model_input_at_either_build(
    tmp_path: Path
) -> None:
    """A GRCh38 panel with GRCh37 positions (one variant's REF differing, declared): a GRCh37
    site and a GRCh38 site read the same genotypes; the model sees the same input at both,
    coordinates the panel's own build's; the check passes both and says which were used."""
    panel = read_panel(_panel(tmp_path / "panel.tsv"))
    assert panel.build == "GRCh38" and set(panel.build_pos) == {"GRCh37", "GRCh38"}
    encoder = EncoderSettings(context_bases=2)
    loaded = {}
    for build in ("GRCh37", "GRCh38"):
        site = _site(tmp_path / build, build)
        (site / "panel.tsv").write_bytes((tmp_path / "panel.tsv").read_bytes())
        got = harmonize_panel_genotypes(site / "genotypes.vcf.gz", panel, SAMPLES,
                                        site / "reference.fa")
        np.testing.assert_array_equal(got.codes, TRUTH)
        loaded[build] = load_site(site, encoder)
        report = check_site(site / "genotypes.vcf.gz", site / "cohort.tsv", site / "panel.tsv",
                            site / "reference.fa")
        assert report.ok, [f.line() for f in report.errors]
        assert report.summary["panel"]["positions"] == build
        assert report.summary["panel"]["coverage"]["found"] == len(VARIANTS)
    a, b = loaded["GRCh37"], loaded["GRCh38"]
    np.testing.assert_array_equal(a.genotypes, b.genotypes)
    np.testing.assert_array_equal(a.genotypes, TRUTH)
    for name in ("context", "ref", "alt", "coord"):
        assert torch.equal(getattr(a.features, name), getattr(b.features, name)), name
    assert a.features.coord.tolist() == [p + SHIFT for p, _, _ in VARIANTS]


def test_a_ref_difference_between_builds_must_be_declared(tmp_path: Path) -> None:
    """Without `ref_grch37`, the GRCh37 reference's base at the swapped variant disagrees with
    the panel's REF: refused as any REF disagreement is, naming the variant."""
    site = _site(tmp_path / "GRCh37", "GRCh37")
    panel = read_panel(_panel(tmp_path / "panel.tsv", ref37=False))
    p37 = VARIANTS[SWAPPED][0]
    with pytest.raises(InputError, match=f"chr22:{p37}: REF T disagrees with the FASTA's G"):
        encode_panel(panel, site / "reference.fa", EncoderSettings(context_bases=2))


def test_a_panel_without_the_sites_build_is_one_line_naming_both(tmp_path: Path) -> None:
    site = _site(tmp_path / "GRCh37", "GRCh37")
    rows = "".join(f"chr22\t{p + SHIFT}\t{r}\t{a}\n" for p, r, a in VARIANTS)
    (tmp_path / "p38.tsv").write_text("#genome_build=GRCh38\nchrom\tpos\tref\talt\n" + rows)
    line = "the panel is on GRCh38 but this reference FASTA is GRCh37"
    with pytest.raises(InputError, match=re.escape(line)):
        encode_panel(read_panel(tmp_path / "p38.tsv"), site / "reference.fa",
                     EncoderSettings(context_bases=2))


@pytest.mark.parametrize(("kwargs", "problem"), [
    ({"header": ""}, "must declare its own build"),
    ({"pos37": ["12", "", "33", "50"]}, "pos_grch37 '' is not a positive integer"),
    ({"pos37": ["12", "20", "x", "50"]}, "pos_grch37 'x' is not a positive integer"),
])
def test_bad_build_columns_are_one_line(tmp_path: Path, kwargs: dict, problem: str) -> None:
    with pytest.raises(InputError, match=re.escape(problem)):
        read_panel(_panel(tmp_path / "panel.tsv", **kwargs))


def test_a_declared_ref_must_be_the_panels_ref_or_alt(tmp_path: Path) -> None:
    path = _panel(tmp_path / "panel.tsv")
    path.write_text(path.read_text().replace("\t33\tG", "\t33\tC"))
    with pytest.raises(InputError, match="ref_grch37 'C' is neither the panel's REF nor its "
                                         "ALT") as caught:
        read_panel(path)
    assert caught.value.record == "line 5"
