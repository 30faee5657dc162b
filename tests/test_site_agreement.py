"""One folder, three readers: `site check`, training's loader and `site predict` agree.

A folder the check passes is a folder training reads and a site can score; a folder the check
refuses is refused by the others too (scoring needs no phenotype, so a phenotype problem stops
only the first two). Each case turns the tiny cohort's site into a variant a hospital might
hold.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pysam
import pysam.bcftools
import pytest
import torch

from client.check import check_site, format_report
from client.data import SitePaths, load_site
from client.predict import predict_site
from client.settings import SiteSettings
from shared.checkpoint import Checkpoint
from shared.encoding import EncoderSettings, model_config
from shared.errors import GenofedError
from shared.model import RiskTransformer
from shared.panel import read_panel
from tests.helpers import header_end, site_files, vcf_lines, write_vcf


def _rewrite_calls(site: Path, tmp: Path, cell: Callable[[str], str], fmt: str | None = None,
                   header: Callable[[list[str]], list[str]] = lambda h: h) -> None:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    end = header_end(lines)
    out = header(lines[:end]) + [lines[end]]
    for line in lines[end + 1:]:
        f = line.split("\t")
        out.append("\t".join(f[:8] + [fmt or f[8]] + [cell(c) for c in f[9:]]))
    write_vcf(site, out, tmp)


def as_is(site: Path, tmp: Path) -> None:
    pass


def contig_without_chr(site: Path, tmp: Path) -> None:
    lines = vcf_lines(site / "genotypes.vcf.gz")
    write_vcf(site, [x.replace("chr22", "22") if x.startswith(("chr22\t", "##contig")) else x
                     for x in lines], tmp)


def fasta_without_chr(site: Path, tmp: Path) -> None:
    ref = site / "reference.fa"
    text = ref.read_text().replace(">chr22", ">22", 1)
    ref.unlink()  # hard-linked from the shared cohort: replace, never edit in place
    Path(f"{ref}.fai").unlink()
    ref.write_text(text)
    pysam.faidx(str(ref))


def vcf_4_4_phasing(site: Path, tmp: Path) -> None:
    _rewrite_calls(site, tmp, lambda c: ("|" if c[1:2] == "|" else "/") + c,
                   header=lambda h: ["##fileformat=VCFv4.4", *h[1:]])


def dosages_only(site: Path, tmp: Path) -> None:
    def ds(cell: str) -> str:
        alleles = cell.replace("|", "/").split("/")
        return "." if "." in alleles else f"{sum(a == '1' for a in alleles) * 0.98:.2f}"

    _rewrite_calls(site, tmp, ds, "DS", lambda h: h + [
        '##FORMAT=<ID=DS,Number=A,Type=Float,Description="Dosage">'])


def bcf_with_csi(site: Path, tmp: Path) -> None:
    vcf = site / "genotypes.vcf.gz"
    with pysam.VariantFile(str(vcf)) as src, pysam.VariantFile(
            str(site / "genotypes.bcf"), "wb", header=src.header) as dst:
        for rec in src:
            dst.write(rec)
    pysam.bcftools.index("--csi", str(site / "genotypes.bcf"))
    vcf.unlink()
    Path(f"{vcf}.tbi").unlink()


def no_index(site: Path, tmp: Path) -> None:
    Path(f"{site / 'genotypes.vcf.gz'}.tbi").unlink()


def gvcf(site: Path, tmp: Path) -> None:
    _rewrite_calls(site, tmp, lambda c: c, header=lambda h: h + [
        '##ALT=<ID=NON_REF,Description="Represents any possible alternative allele">'])


def all_calls_missing(site: Path, tmp: Path) -> None:
    _rewrite_calls(site, tmp, lambda c: "./.")


def ambiguous_phenotypes(site: Path, tmp: Path) -> None:
    lines = (site / "cohort.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("phenotype")
    for i in range(1, len(lines), 4):  # 0/1 plus some 2s: PLINK's coding or another trait?
        f = lines[i].split("\t")
        f[col] = "2"
        lines[i] = "\t".join(f)
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")


def settings_with_bom(site: Path, tmp: Path) -> None:
    toml = site / "site.toml"
    toml.write_bytes(b"\xef\xbb\xbf" + toml.read_bytes())


def _per_chromosome(site: Path, tmp: Path, reorder: bool) -> None:
    """The site's VCF as an imputation server writes it: one indexed file per chromosome.
    chr22.dose.vcf.gz holds its records; chr21.dose.vcf.gz the same people's records on a
    second contig (the reference gains a chr21 with chr22's sequence, so their REF agree)."""
    ref = site / "reference.fa"
    text = ref.read_text()
    ref.unlink()  # hard-linked from the shared cohort: replace, never edit in place
    Path(f"{ref}.fai").unlink()
    ref.write_text(text + text.replace(">chr22", ">chr21", 1))
    pysam.faidx(str(ref))
    lines = vcf_lines(site / "genotypes.vcf.gz")
    end = header_end(lines)
    contig = next(x for x in lines if x.startswith("##contig=<ID=chr22"))
    for chrom in ("chr22", "chr21"):
        head = [x for x in lines[:end] if not x.startswith("##contig")]
        head.append(contig.replace("chr22", chrom))
        body = [x.replace("chr22", chrom, 1) for x in lines[end + 1:]]
        names = lines[end]
        if reorder and chrom == "chr21":  # the same people, two of them swapped
            f = names.split("\t")
            f[9], f[10] = f[10], f[9]
            names = "\t".join(f)
        plain = tmp / f"{chrom}.vcf"
        plain.write_text("\n".join([*head, names, *body]) + "\n")
        out = site / f"{chrom}.dose.vcf.gz"
        pysam.tabix_compress(str(plain), str(out), force=True)
        pysam.tabix_index(str(out), preset="vcf", force=True)
    for name in ("genotypes.vcf.gz", "genotypes.vcf.gz.tbi"):
        (site / name).unlink()


def per_chromosome(site: Path, tmp: Path) -> None:
    _per_chromosome(site, tmp, reorder=False)


def per_chromosome_samples_reordered(site: Path, tmp: Path) -> None:
    _per_chromosome(site, tmp, reorder=True)


# name: (turn the site into it, check/training pass, scoring passes)
CASES: dict[str, tuple[Callable[[Path, Path], None], bool, bool]] = {
    f.__name__: (f, ok, scored) for f, ok, scored in (
        (as_is, True, True),
        (contig_without_chr, True, True),
        (fasta_without_chr, True, True),
        (vcf_4_4_phasing, True, True),
        (dosages_only, True, True),
        (bcf_with_csi, True, True),
        (settings_with_bom, True, True),
        (per_chromosome, True, True),
        (per_chromosome_samples_reordered, False, False),
        (no_index, False, False),
        (gvcf, False, False),
        (all_calls_missing, False, False),
        (ambiguous_phenotypes, False, True),
    )
}


@pytest.fixture(scope="module")
def checkpoint(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    site = tiny_cohort / "site-1"
    encoder = EncoderSettings()
    panel = read_panel(site / "panel.tsv")
    torch.manual_seed(0)
    model = RiskTransformer(model_config(len(panel), encoder, dim=16, layers=1))
    path = tmp_path_factory.mktemp("model") / "model.pt"
    Checkpoint.of(model, 1, encoder, "", panel.sha256).save(path)
    return path


def _reads(action: Callable[[], object]) -> bool:
    try:
        action()
    except GenofedError:
        return False
    return True


@pytest.mark.parametrize("case", list(CASES))
def test_check_training_and_scoring_agree(case: str, site: Path, tmp_path: Path,
                                          checkpoint: Path) -> None:
    turn, ok, scored = CASES[case]
    same = ("as_is", "dosages_only", "per_chromosome")  # read as the same genotypes
    plain = load_site(site, EncoderSettings()) if case in same else None
    turn(site, tmp_path)
    files = {**site_files(site), "vcf": SitePaths.in_folder(site).genotypes}
    report = check_site(**files, cohort_spec=SiteSettings.load(site).cohort)
    checked = report.ok
    trained = _reads(lambda: load_site(site, EncoderSettings()))
    out = tmp_path / "scores.tsv"
    predicted = _reads(lambda: predict_site(checkpoint, site, out))
    assert (checked, trained, predicted) == (ok, ok, scored), [f.line() for f in report.errors]
    if case in same[1:]:  # dosages near the calls, or the calls split by chromosome
        assert plain is not None
        np.testing.assert_array_equal(load_site(site, EncoderSettings()).genotypes,
                                      plain.genotypes)
    if case == "per_chromosome":
        assert len(files["vcf"]) == 2 and report.summary["vcf"]["records_per_contig"].keys() \
            == {"chr21", "chr22"}
        assert f"VCF        {site / 'chr21.dose.vcf.gz'} and 1 more: VCF" in format_report(
            report)[0]
    if case == "per_chromosome_samples_reordered":  # one line naming the file that differs
        assert [f.file for f in report.errors] == [str(site / "chr22.dose.vcf.gz")]
        with pytest.raises(GenofedError, match="chr22.dose.vcf.gz: per-chromosome files must "
                                               "list the same samples in the same order"):
            load_site(site, EncoderSettings())


def test_the_sites_imputation_quality_filter_is_applied_by_every_reader(
    site: Path, tmp_path: Path, checkpoint: Path
) -> None:
    """An imputation server's VCF states R2 per variant; the site's `min-imputation-quality`
    leaves the poorly imputed ones missing in the check, in training and in scoring alike."""
    lines = vcf_lines(site / "genotypes.vcf.gz")
    end = header_end(lines)
    out = lines[:end] + ['##INFO=<ID=R2,Number=1,Type=Float,Description="Imputation quality">',
                         lines[end]]
    for k, line in enumerate(lines[end + 1:]):
        f = line.split("\t")
        f[7] = f"R2={0.1 if k % 2 else 0.9}"  # every other variant poorly imputed
        out.append("\t".join(f))
    write_vcf(site, out, tmp_path)
    plain = load_site(site, EncoderSettings())
    predict_site(checkpoint, site, tmp_path / "all.tsv")
    toml = site / "site.toml"
    toml.write_text(toml.read_text() + "\n[genotypes]\nmin-imputation-quality = 0.3\n")
    own = SiteSettings.load(site)
    assert own.genotypes.min_imputation_quality == 0.3
    filtered = load_site(site, EncoderSettings())
    low = [h == "low-quality" for h in filtered.how]
    assert 0 < sum(low) < len(low) and not filtered.found[low].any()
    kept = ~np.array(low)
    np.testing.assert_array_equal(filtered.genotypes[:, kept], plain.genotypes[:, kept])
    report = check_site(**site_files(site), cohort_spec=own.cohort,
                        min_quality=own.genotypes.min_imputation_quality)
    assert report.ok and report.summary["panel"]["coverage"]["low_quality"] == sum(low)
    assert report.summary["panel"]["coverage"]["found"] == int(filtered.found.sum())
    predict_site(checkpoint, site, tmp_path / "filtered.tsv")  # scored without them too
    assert (tmp_path / "all.tsv").read_text() != (tmp_path / "filtered.tsv").read_text()
