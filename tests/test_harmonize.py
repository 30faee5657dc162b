"""Harmonizing a hospital's VCF to the coordinator's panel: contig names, swaps, strands,
multi-allelic records, indel representations, ploidy, phasing, VCF/BCF with TBI/CSI."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pysam
import pysam.bcftools
import pytest

from shared import genotypes
from shared.errors import InputError
from shared.genotypes import harmonize_panel_genotypes, normalize
from shared.panel import read_panel
from shared.tokenizer import GT_HET, GT_HOM_ALT, GT_HOM_REF, GT_MISSING

#            1         2         3         4
#   1234567890123456789012345678901234567890
SEQ = "GATTACAGCACACACATTTGCAGGCATCGATCGTACCGTA" * 3
SAMPLES = ["p1", "p2", "p3"]


def write_reference(path: Path, name: str = "chr1") -> Path:
    path.write_text(f">{name}\n{SEQ}\n")
    pysam.faidx(str(path))
    return path


def write_vcf(path: Path, contig: str, records: list[tuple[int, str, tuple[str, ...], list]],
              fmt: str = "z", csi: bool = False) -> Path:
    header = pysam.VariantHeader()
    header.add_line(f"##contig=<ID={contig},length={len(SEQ)}>")
    header.add_line('##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">')
    for s in SAMPLES:
        header.add_sample(s)
    mode = "wb" if fmt == "b" else "wz"
    with pysam.VariantFile(str(path), mode, header=header) as vf:
        for pos, ref, alts, gts in records:
            rec = vf.new_record(contig=contig, start=pos - 1, alleles=(ref, *alts))
            for s, (gt, phased) in zip(SAMPLES, gts, strict=True):
                rec.samples[s]["GT"] = gt
                rec.samples[s].phased = phased
            vf.write(rec)
    if fmt == "b":
        pysam.bcftools.index("--csi", "--force", str(path))
    else:
        pysam.tabix_index(str(path), preset="vcf", force=True, csi=csi)
    return path


def write_panel(path: Path, rows: list[tuple[str, int, str, str]]) -> Path:
    body = "".join(f"{c}\t{p}\t{r}\t{a}\n" for c, p, r, a in rows)
    path.write_text("chrom\tpos\tref\talt\n" + body)
    return path


def test_normalize_trims_and_left_aligns(tmp_path: Path) -> None:
    fa = pysam.FastaFile(str(write_reference(tmp_path / "ref.fa")))
    # SEQ[8:16] = "CACACACA": deleting one "CA" anywhere in the run is the same event.
    assert normalize(14, "ACA", "A", fa, "chr1") == (8, "GCA", "G")
    assert normalize(9, "CAC", "C", fa, "chr1") == (8, "GCA", "G")
    assert normalize(5, "ACAG", "ATAG") == (6, "C", "T")  # an MNP-style SNV, trimmed


@pytest.mark.parametrize("scan_from", [1, 10_000], ids=["one-pass", "fetch-each"])
@pytest.mark.parametrize(("fmt", "csi"), [("z", False), ("z", True), ("b", True)])
def test_every_representation_is_harmonized(
    tmp_path: Path, fmt: str, csi: bool, scan_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(genotypes, "_SCAN_MIN_VARIANTS", scan_from)
    ref = write_reference(tmp_path / "ref.fa")
    # Panel on "chr1"; the hospital's VCF calls the contig "1".
    panel = read_panel(write_panel(tmp_path / "panel.tsv", [
        ("chr1", 2, "A", "G"),     # same
        ("chr1", 4, "T", "C"),     # VCF has it swapped (REF C / ALT T)
        ("chr1", 5, "A", "C"),     # VCF on the other strand (T/G)
        ("chr1", 7, "A", "T"),     # A/T palindrome: the VCF's T/A is a swap, never a flip
        ("chr1", 18, "T", "G"),    # multi-allelic record T -> C,G
        ("chr1", 8, "GCA", "G"),   # a CA deletion, called right-shifted in the VCF
        ("chr1", 20, "G", "A"),    # not in the VCF at all
        ("chr1", 22, "A", "T"),    # haploid calls
    ]))
    S, U = True, False  # phased, unphased
    vcf = write_vcf(tmp_path / ("g.vcf.gz" if fmt == "z" else "g.bcf"), "1", [
        (2, "A", ("G",), [((0, 0), S), ((0, 1), U), ((1, 1), S)]),
        (4, "C", ("T",), [((0, 0), S), ((0, 1), S), ((1, 1), U)]),
        (5, "T", ("G",), [((0, 1), U), ((None, None), U), ((1, 1), S)]),
        (7, "T", ("A",), [((0, 0), U), ((1, 0), S), ((1, 1), U)]),
        (14, "ACA", ("A",), [((0, 1), S), ((0, 0), S), ((1, 1), S)]),
        (18, "T", ("C", "G"), [((1, 2), U), ((2, 2), S), ((0, 1), U)]),
        (22, "A", ("T",), [((0,), S), ((1,), S), ((None,), S)]),
    ], fmt=fmt, csi=csi)
    result = harmonize_panel_genotypes(vcf, panel, ["p3", "p1", "p2"], ref)
    got = result.codes
    r, h, a, m = GT_HOM_REF, GT_HET, GT_HOM_ALT, GT_MISSING
    expected = np.array([
        # p3
        [a, r, a, r, r, a, m, m],
        # p1
        [r, a, h, a, h, h, m, r],
        # p2
        [h, h, m, h, a, r, m, a],
    ], dtype=np.int8)
    np.testing.assert_array_equal(got, expected)
    assert result.how == ["same", "swapped", "strand-flipped", "swapped", "same", "same",
                          "missing", "same"]
    assert result.found.tolist() == [True] * 6 + [False, True]


def test_palindrome_is_not_strand_flipped(tmp_path: Path) -> None:
    ref = write_reference(tmp_path / "ref.fa")
    panel = read_panel(write_panel(tmp_path / "panel.tsv", [("chr1", 2, "A", "T")]))
    # T/A at an A/T panel site is read as a swap (dosage flipped), the stated rule.
    vcf = write_vcf(tmp_path / "g.vcf.gz", "chr1",
                    [(2, "A", ("T",), [((0, 0), True), ((0, 1), True), ((1, 1), True)])])
    codes = harmonize_panel_genotypes(vcf, panel, SAMPLES, ref).codes
    assert codes[:, 0].tolist() == [GT_HOM_REF, GT_HET, GT_HOM_ALT]


@pytest.mark.parametrize("scan_from", [1, 10_000], ids=["one-pass", "fetch-each"])
@pytest.mark.parametrize("layout", ["insertion-first", "deletion-first", "multi-allelic",
                                    "multi-allelic-insertion-first", "insertion-only"])
def test_an_indel_is_read_from_its_own_record_not_a_neighbours(
    tmp_path: Path, layout: str, scan_from: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A panel deletion CA>C at a position where the VCF also holds the insertion C>CA: the
    insertion's REF agrees with the reference, so it is another variant, never this one
    "swapped" (its dosage flipped), whichever record or allele comes first."""
    monkeypatch.setattr(genotypes, "_SCAN_MIN_VARIANTS", scan_from)
    ref = write_reference(tmp_path / "ref.fa")  # SEQ[24:26] == "CA"
    panel = read_panel(write_panel(tmp_path / "panel.tsv", [("chr1", 25, "CA", "C")]))
    S = True
    insertion = (25, "C", ("CA",), [((1, 1), S), ((1, 1), S), ((0, 1), S)])
    deletion = (25, "CA", ("C",), [((0, 1), S), ((0, 0), S), ((0, 0), S)])
    records = {
        "insertion-first": [insertion, deletion],
        "deletion-first": [deletion, insertion],
        "multi-allelic": [(25, "CA", ("C", "CAA"), [((0, 1), S), ((2, 2), S), ((0, 2), S)])],
        "multi-allelic-insertion-first":
            [(25, "CA", ("CAA", "C"), [((0, 2), S), ((1, 1), S), ((0, 1), S)])],
        "insertion-only": [insertion],
    }[layout]
    vcf = write_vcf(tmp_path / "g.vcf.gz", "chr1", records)
    result = harmonize_panel_genotypes(vcf, panel, SAMPLES, ref)
    if layout == "insertion-only":
        assert result.how == ["missing"] and not result.found[0]
        assert result.codes[:, 0].tolist() == [GT_MISSING] * 3
    else:
        assert result.how == ["same"]
        assert result.codes[:, 0].tolist() == [GT_HET, GT_HOM_REF, GT_HOM_REF]
    # Without the reference to tell them apart, an indel is never taken as swapped either.
    assert harmonize_panel_genotypes(vcf, panel, SAMPLES).how == result.how


def test_the_panel_serves_either_contig_naming(tmp_path: Path) -> None:
    """One panel (chr1) for a site whose FASTA and VCF say "1": encoded and read alike."""
    from shared.encoding import EncoderSettings, encode_panel

    panel = read_panel(write_panel(tmp_path / "panel.tsv", [("chr1", 20, "G", "A")]))
    plain = encode_panel(panel, write_reference(tmp_path / "a.fa", "chr1"), EncoderSettings())
    renamed = encode_panel(panel, write_reference(tmp_path / "b.fa", "1"), EncoderSettings())
    assert bool((plain.context == renamed.context).all())
    vcf = write_vcf(tmp_path / "g.vcf.gz", "1",
                    [(20, "G", ("A",), [((0, 1), True), ((0, 0), True), ((1, 1), True)])])
    got = harmonize_panel_genotypes(vcf, panel, SAMPLES, tmp_path / "b.fa")
    assert got.codes[:, 0].tolist() == [GT_HET, GT_HOM_REF, GT_HOM_ALT]


def test_a_long_panel_deletion_is_checked_against_its_whole_ref(tmp_path: Path) -> None:
    """A deletion longer than the context window is neither refused nor misread."""
    from shared.encoding import EncoderSettings, encode_panel
    from shared.errors import InputError

    ref = write_reference(tmp_path / "ref.fa")
    long_del = SEQ[9:31]  # 22 bases from position 10
    settings = EncoderSettings(context_bases=4)
    panel = read_panel(write_panel(tmp_path / "p.tsv", [("chr1", 10, long_del, long_del[0])]))
    assert encode_panel(panel, ref, settings).context.shape[0] == 1
    vcf = write_vcf(tmp_path / "g.vcf.gz", "chr1", [
        (10, long_del, (long_del[0],), [((0, 1), True), ((0, 0), True), ((1, 1), True)])])
    got = harmonize_panel_genotypes(vcf, panel, SAMPLES, ref)
    assert got.how == ["same"] and got.codes[:, 0].tolist() == [GT_HET, GT_HOM_REF, GT_HOM_ALT]
    wrong = long_del[:-1] + ("A" if long_del[-1] != "A" else "C")
    bad = read_panel(write_panel(tmp_path / "bad.tsv", [("chr1", 10, wrong, wrong[0])]))
    with pytest.raises(InputError, match=f"chr1:10: REF {wrong} disagrees with the FASTA's "
                                         f"{long_del}"):
        encode_panel(bad, ref, settings)


def test_a_malformed_vcf_line_is_one_clear_error(tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    """A record htslib cannot parse: one line naming the file and the record, no traceback,
    and nothing of htslib's own on stderr."""
    from shared.errors import InputError

    ref = write_reference(tmp_path / "ref.fa")
    good = write_vcf(tmp_path / "good.vcf.gz", "chr1",
                     [(20, "G", ("A",), [((0, 1), True), ((0, 0), True), ((1, 1), True)])])
    lines = [line for line in pysam.BGZFile(str(good), "rb").read().decode().splitlines()]
    lines[-1] = "\t".join(lines[-1].split("\t")[:9] + ["0|1", "0|0"])  # a sample column short
    plain = tmp_path / "bad.vcf"
    plain.write_text("\n".join(lines) + "\n")
    bad = Path(pysam.tabix_index(str(plain), preset="vcf", force=True))
    panel = read_panel(write_panel(tmp_path / "p.tsv", [("chr1", 20, "G", "A")]))
    with pytest.raises(InputError) as caught:
        harmonize_panel_genotypes(bad, panel, SAMPLES, ref)
    line = str(caught.value)
    assert line.startswith(f"{bad}: chr1:") and "\n" not in line and "cannot parse" in line
    assert capfd.readouterr().err == ""


def write_text_vcf(path: Path, fmt: str, cells: list[str], extra_header: str = "",
                   alleles: str = "G\tA") -> Path:
    """A bgzipped, indexed VCF written as text (FORMAT fields the GT writer cannot make)."""
    header = ("##fileformat=VCFv4.2\n##contig=<ID=chr1,length=120>\n" + extra_header
              + '##FORMAT=<ID=GT,Number=1,Type=String,Description="Genotype">\n'
              '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Dosage">\n'
              '##FORMAT=<ID=GP,Number=G,Type=Float,Description="Probabilities">\n'
              "#CHROM\tPOS\tID\tREF\tALT\tQUAL\tFILTER\tINFO\tFORMAT\t" + "\t".join(SAMPLES))
    plain = path.with_suffix("")
    plain.write_text(f"{header}\nchr1\t20\t.\t{alleles}\t.\tPASS\t.\t{fmt}\t" + "\t".join(cells)
                     + "\n")
    return Path(pysam.tabix_index(str(plain), preset="vcf", force=True))


@pytest.mark.parametrize(("fmt", "cells"), [
    ("DS", ["0.1", "0.9", "1.8"]),                      # minimac --format DS
    ("GP", ["0.9,0.1,0", "0.2,0.7,0.1", "0,0.1,0.9"]),  # expected dosage 0.1, 0.9, 1.9
    ("DS:GP", ["0.1:.", "0.9:.", "1.8:."]),
])
def test_imputed_dosages_are_read_not_left_missing(tmp_path: Path, fmt: str,
                                                   cells: list[str]) -> None:
    """Dosage-only VCFs (no GT) are read (codes: the nearest genotype), not as all missing."""
    ref = write_reference(tmp_path / "ref.fa")
    vcf = write_text_vcf(tmp_path / "dose.vcf.gz", fmt, cells)
    panel = read_panel(write_panel(tmp_path / "p.tsv", [("chr1", 20, "G", "A")]))
    got = harmonize_panel_genotypes(vcf, panel, SAMPLES, ref)
    assert got.codes[:, 0].tolist() == [GT_HOM_REF, GT_HET, GT_HOM_ALT]


def test_a_gvcf_and_a_vcf_without_calls_are_refused(tmp_path: Path) -> None:
    from shared.genotypes import require_calls

    ref = write_reference(tmp_path / "ref.fa")
    panel = read_panel(write_panel(tmp_path / "p.tsv", [("chr1", 20, "G", "A")]))
    gvcf = write_text_vcf(tmp_path / "g.g.vcf.gz", "GT", ["0/1", "0/0", "1/1"],
                          '##ALT=<ID=NON_REF,Description="any other allele">\n##GVCFBlock0-1=x\n')
    with pytest.raises(InputError, match="a gVCF .*gvcf2vcf"):
        harmonize_panel_genotypes(gvcf, panel, SAMPLES, ref)
    bare = write_text_vcf(tmp_path / "ad.vcf.gz", "AD", ["3,4", "5,0", "0,6"],
                          '##FORMAT=<ID=AD,Number=R,Type=Integer,Description="depths">\n')
    got = harmonize_panel_genotypes(bare, panel, SAMPLES, ref)
    assert got.found.all() and (got.codes == GT_MISSING).all()
    with pytest.raises(InputError, match="every call at the 1 panel variant"):
        require_calls(got.codes, got.found, bare)


BCFTOOLS = Path(__file__).parent / "data" / "bcftools"  # third-party: see SOURCE.md there


def _text_alt_counts(vcf_text: str) -> dict[tuple[str, int, str, str], list[int]]:
    """ALT allele counts per sample of every (CHROM, POS, REF, ALT) of a VCF, read from its
    text alone (an independent reading): haploid calls count twice, as genofed defines."""
    counts: dict[tuple[str, int, str, str], list[int]] = {}
    for line in vcf_text.splitlines():
        if line.startswith("#"):
            continue
        f = line.split("\t")
        for i, alt in enumerate(f[4].split(","), start=1):
            if alt in (".", "*") or alt.startswith("<"):
                continue
            row = []
            for cell in f[9:]:
                alleles = cell.split(":")[0].replace("|", "/").split("/")
                if "." in alleles:
                    row.append(-1)
                else:
                    row.append(sum(int(a) == i for a in alleles) * (2 if len(alleles) == 1
                                                                    else 1))
            counts[(f[0], int(f[1]), f[3], alt)] = row
    return counts


def test_alt_counts_equal_an_independent_reading_of_bcftools_norm_test_data(
    tmp_path: Path,
) -> None:
    """bcftools' own multi-allelic indel tests: every allele genofed reads as the panel
    variant carries the counts the VCF text says, whatever record or allele comes first."""
    import shutil

    text = (BCFTOOLS / "norm.split.vcf").read_text()
    shutil.copy(BCFTOOLS / "norm.fa", tmp_path / "norm.fa")
    pysam.faidx(str(tmp_path / "norm.fa"))
    plain = tmp_path / "norm.vcf"
    plain.write_text(text)
    vcf = Path(pysam.tabix_index(str(plain), preset="vcf", force=True))
    fasta = pysam.FastaFile(str(tmp_path / "norm.fa"))
    truth = _text_alt_counts(text)
    # One panel row per allele whose normalized form no other allele shares (the VCF may
    # describe one variant twice; then "which record" has no single answer) and whose REF
    # the reference confirms.
    forms: dict[tuple, list[tuple[str, int, str, str]]] = {}
    for key in truth:
        chrom, pos, ref, alt = key
        if fasta.fetch(chrom, pos - 1, pos - 1 + len(ref)).upper() != ref:
            continue
        forms.setdefault((chrom, *normalize(pos, ref, alt, fasta, chrom)), []).append(key)
    unique = [keys[0] for keys in forms.values() if len(keys) == 1]
    # A panel lists one allele per position: each allele in turn, over as many panels.
    panels: list[list[tuple[str, int, str, str]]] = []
    for key in unique:
        free = next((rows for rows in panels if all(r[:2] != key[:2] for r in rows)), None)
        if free is None:
            panels.append(free := [])
        free.append(key)
    assert len(unique) >= 12 and any(len(r[2]) != len(r[3]) for r in unique)
    assert len(panels) >= 2  # some positions hold several alleles
    for k, rows in enumerate(panels):
        panel = read_panel(write_panel(tmp_path / f"panel{k}.tsv", rows))
        got = harmonize_panel_genotypes(vcf, panel, ["XY00001", "XY00002"],
                                        tmp_path / "norm.fa")
        for j, key in enumerate(rows):
            assert got.how[j] == "same", (key, got.how[j])
            expected = [GT_MISSING if c < 0 else c for c in truth[key]]
            assert got.codes[:, j].tolist() == expected, key


def test_a_panel_on_another_build_than_the_reference_is_one_clear_line(tmp_path: Path) -> None:
    """The panel declares its build (PGS Catalog's `#genome_build=`); the site's reference shows
    its own by its contig lengths; a mismatch names both, in training and in the check."""
    from client.check import check_site
    from shared.encoding import EncoderSettings, encode_panel

    ref = tmp_path / "reference.fa"
    ref.write_text(f">chr22\n{SEQ}\n")
    # The .fai states GRCh37's chr22 length, as a real GRCh37 reference's would.
    Path(f"{ref}.fai").write_text(f"chr22\t51304566\t7\t{len(SEQ)}\t{len(SEQ) + 1}\n")
    rows = "chrom\tpos\tref\talt\nchr22\t20\tG\tA\n"
    (tmp_path / "p38.tsv").write_text("#genome_build=GRCh38\n" + rows)
    (tmp_path / "p37.tsv").write_text("#genome_build=hg19\n" + rows)
    (tmp_path / "plain.tsv").write_text(rows)
    assert read_panel(tmp_path / "p37.tsv").build == "GRCh37"
    assert read_panel(tmp_path / "plain.tsv").build is None
    line = "the panel is on GRCh38 but this reference FASTA is GRCh37 (chr22 is 51,304,566 bp)"
    with pytest.raises(InputError, match=re.escape(line)):
        encode_panel(read_panel(tmp_path / "p38.tsv"), ref, EncoderSettings(context_bases=2))
    for ok in ("p37.tsv", "plain.tsv"):
        encode_panel(read_panel(tmp_path / ok), ref, EncoderSettings(context_bases=2))
    vcf = write_vcf(tmp_path / "g.vcf.gz", "chr22",
                    [(20, "G", ("A",), [((0, 1), True), ((0, 0), True), ((1, 1), True)])])
    cohort = tmp_path / "cohort.tsv"
    cohort.write_text("sample_id\tancestry\tphenotype\n" + "".join(
        f"{s}\tCEU\t{i % 2}\n" for i, s in enumerate(SAMPLES)))
    report = check_site(vcf, cohort, tmp_path / "p38.tsv", ref)
    assert any(line in f.problem for f in report.errors), [f.line() for f in report.findings]
    assert report.summary["reference"]["build"] == "GRCh37"
    with pytest.raises(InputError, match="genome build 'hg18' is not one of"):
        (tmp_path / "bad.tsv").write_text("#genome_build=hg18\n" + rows)
        read_panel(tmp_path / "bad.tsv")



def _read_one(tmp_path: Path, fmt: str, cells: list[str], swapped: bool = False):  # noqa: ANN202
    """One record at the panel's G>A (reference G), in the VCF as G>A or swapped, A>G."""
    ref = write_reference(tmp_path / "ref.fa")
    vcf = write_text_vcf(tmp_path / f"{fmt.replace(':', '_')}.vcf.gz", fmt, cells,
                         alleles="A\tG" if swapped else "G\tA")
    panel = read_panel(write_panel(tmp_path / "p.tsv", [("chr1", 20, "G", "A")]))
    got = harmonize_panel_genotypes(vcf, panel, SAMPLES, ref)
    assert got.how == ["swapped" if swapped else "same"]
    return got


@pytest.mark.parametrize("swapped", [False, True], ids=["same", "swapped"])
def test_a_minimac_ds_vcf_carries_fractional_dosages(tmp_path: Path, swapped: bool) -> None:
    """DS only (minimac `--format DS`): the expected dosage itself reaches the reader's output,
    with token weights interpolated between the two nearest genotypes; a panel with REF/ALT
    swapped reads 2 - d and the weights reversed."""
    got = _read_one(tmp_path, "DS", ["0.6", "1.7", "."], swapped)
    d = np.array([0.6, 1.7, np.nan], dtype=np.float32)
    probs = np.array([[0.4, 0.6, 0.0], [0.0, 0.3, 0.7], [0.0, 0.0, 0.0]], dtype=np.float32)
    if swapped:
        d, probs = 2 - d, probs[:, ::-1]
    assert got.probs is not None and got.probs.dtype == np.float32
    np.testing.assert_allclose(got.probs[:, 0], probs, atol=1e-6)
    np.testing.assert_allclose(got.dosage[:, 0], d, atol=1e-6)
    hard = [GT_HET, GT_HOM_ALT, GT_MISSING]  # the nearest genotypes, as before
    assert got.codes[:, 0].tolist() == ([GT_HET, GT_HOM_REF, GT_MISSING] if swapped else hard)
    np.testing.assert_array_equal(got.model_input, got.probs)


@pytest.mark.parametrize("swapped", [False, True], ids=["same", "swapped"])
def test_a_gp_vcf_carries_its_genotype_probabilities(tmp_path: Path, swapped: bool) -> None:
    """GP only: the probabilities are the token weights (normalized to sum 1), the expected
    dosage P(het) + 2 P(hom-alt); swapped REF/ALT reverses them."""
    got = _read_one(tmp_path, "GP", ["0.2,0.7,0.1", "0.5,0.25,0.25", "."],
                    swapped)
    probs = np.array([[0.2, 0.7, 0.1], [0.5, 0.25, 0.25], [0, 0, 0]], dtype=np.float32)
    d = np.array([0.9, 0.75, np.nan], dtype=np.float32)
    if swapped:
        d, probs = 2 - d, probs[:, ::-1]
    assert got.probs is not None
    np.testing.assert_allclose(got.probs[:, 0], probs, atol=1e-6)
    np.testing.assert_allclose(got.dosage[:, 0], d, atol=1e-6)


def test_imputed_dosages_beside_gt_are_what_the_model_reads(tmp_path: Path) -> None:
    """An imputation server's GT:DS (Michigan) or GT:DS:GP (Beagle): the codes stay the caller's
    GT; the model reads GP where given, else DS, else the GT."""
    got = _read_one(tmp_path, "GT:DS:GP", ["0/1:0.6:.", "1/1:1.8:0,0.1,0.9", "0/0:.:."])
    assert got.codes[:, 0].tolist() == [GT_HET, GT_HOM_ALT, GT_HOM_REF]
    assert got.probs is not None
    np.testing.assert_allclose(got.dosage[:, 0], [0.6, 1.9, 0.0], atol=1e-6)
    np.testing.assert_allclose(got.probs[2, 0], [1, 0, 0])


def test_hard_calls_carry_no_probabilities(tmp_path: Path) -> None:
    """GT only, or dosages that are whole numbers: no soft input, the model reads the codes
    exactly as before; the dosage is the code's (missing as NaN)."""
    got = _read_one(tmp_path, "GT", ["0/1", "./.", "1/1"])
    assert got.probs is None and got.model_input is got.codes
    np.testing.assert_array_equal(got.dosage[:, 0], [1.0, np.nan, 2.0])
    whole = _read_one(tmp_path, "DS", ["1", "0.0", "2.000"])
    assert whole.probs is None
    assert whole.codes[:, 0].tolist() == [GT_HET, GT_HOM_REF, GT_HOM_ALT]


@pytest.mark.parametrize(("fmt", "bad", "says"), [  # (htslib itself refuses a non-number)
    ("DS", "2.5", "outside"), ("DS", "-0.1", "outside"), ("GP", "0.5,0.5", "not three"),
    ("GP", "0.5,1.2,0", "not three"),
])
def test_a_malformed_imputed_value_is_one_clear_error(tmp_path: Path, fmt: str, bad: str,
                                                      says: str) -> None:
    """Imputed values are parsed as arrays; one bad value among good ones is still named."""
    good = "0.3" if fmt == "DS" else "0.7,0.3,0"
    with pytest.raises(InputError, match=rf"chr1:20.*{says}"):
        _read_one(tmp_path, fmt, [good, bad, good])


def test_a_call_is_missing_only_where_gt_and_dosage_both_are(tmp_path: Path) -> None:
    """GT:DS with either one absent: the other fills in, in the codes as in the model's input,
    so the check's missingness and `require_calls` count what the model cannot read."""
    got = _read_one(tmp_path, "GT:DS", ["./.:0.4", "0/1:.", "./.:."])
    assert got.codes[:, 0].tolist() == [GT_HOM_REF, GT_HET, GT_MISSING]
    np.testing.assert_allclose(got.dosage[:, 0], [0.4, 1.0, np.nan], atol=1e-6)
