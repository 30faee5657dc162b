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
import pandas as pd
import pysam
import pysam.bcftools
import pytest
import torch

from client.check import check_site, format_report
from client.data import SitePaths, load_site
from client.predict import predict_site
from client.settings import SiteSettings
from client.train import predict_logits
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.encoding import EncoderSettings, model_config
from shared.errors import GenofedError
from shared.genotypes import expected_dosage
from shared.model import RiskTransformer, genotype_tensor
from shared.panel import read_panel
from shared.tokenizer import GT_MISSING
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


def _imputed(site: Path, tmp: Path, fmt: str, by_count: tuple[str, str, str],
             number: str) -> None:
    """Every call replaced by an imputation server's value for its ALT count, GT dropped."""
    def value(cell: str) -> str:
        alleles = cell.split(":")[0].replace("|", "/").split("/")
        return "." if "." in alleles else by_count[sum(a == "1" for a in alleles)]

    _rewrite_calls(site, tmp, value, fmt, lambda h: h + [
        f'##FORMAT=<ID={fmt},Number={number},Type=Float,Description="imputed">'])


# What each ALT count becomes: fractional, yet nearest the call (the codes stay the calls').
FRACTIONAL_DS = ("0.1", "0.6", "1.7")
FRACTIONAL_GP = ("0.9,0.1,0", "0.35,0.55,0.1", "0,0.2,0.8")


def fractional_dosages(site: Path, tmp: Path) -> None:
    """minimac `--format DS`: expected dosages, no GT."""
    _imputed(site, tmp, "DS", FRACTIONAL_DS, "A")


def genotype_probabilities(site: Path, tmp: Path) -> None:
    """GP only (Beagle's or IMPUTE's genotype probabilities), no GT."""
    _imputed(site, tmp, "GP", FRACTIONAL_GP, "G")


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
        (fractional_dosages, True, True),
        (genotype_probabilities, True, True),
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


@pytest.mark.parametrize("case", ["fractional_dosages", "genotype_probabilities"])
def test_fractional_dosages_reach_the_model_alike_in_every_reader(
    case: str, site: Path, tmp_path: Path, checkpoint: Path
) -> None:
    """DS-only and GP-only VCFs: training's loader, `site predict` and the check's allele
    frequencies all read the same fractional dosages, and the model's scores move off the
    hard calls' (a het read as 0.6 is not a 1)."""
    ckpt = load_checkpoint(checkpoint)
    plain = load_site(site, EncoderSettings())
    assert plain.probs is None  # GT only: the model reads codes, as before
    predict_site(checkpoint, site, tmp_path / "hard.tsv")
    CASES[case][0](site, tmp_path)
    data = load_site(site, EncoderSettings())
    np.testing.assert_array_equal(data.genotypes, plain.genotypes)  # the nearest genotypes
    assert data.probs is not None
    dosage = expected_dosage(data.inputs)
    called = plain.genotypes != GT_MISSING
    np.testing.assert_array_equal(np.isnan(dosage), ~called)
    d = 0.6 if case == "fractional_dosages" else 0.75  # P(het) + 2 P(hom-alt)
    het = plain.genotypes == 1  # d, or 2 - d where the VCF has the panel's alleles swapped
    assert het.any() and np.isclose(dosage[het][:, None], [d, 2 - d], atol=1e-6).any(1).all()
    assert np.abs(dosage[called] - plain.genotypes[called]).max() <= 0.41

    # Training: the model input of the training split is these probabilities, as floats.
    g, _, _ = data.split("train")
    train = data.cohort.split == "train"
    x = genotype_tensor(g)
    assert x.dtype == torch.float32 and x.shape == (int(train.sum()), len(data.panel), 3)
    np.testing.assert_array_equal(x.numpy(), data.probs[train])

    # Scoring: `site predict` scores exactly these inputs, and not the hard calls.
    out = tmp_path / "soft.tsv"
    predict_site(checkpoint, site, out)
    scored = pd.read_csv(out, sep="\t").set_index("sample_id").loc[data.cohort.sample_id]
    logits = predict_logits(ckpt.model(), data.inputs, data.features, torch.device("cpu"))
    np.testing.assert_allclose(scored.risk_probability, 1 / (1 + np.exp(-logits)), atol=2e-6)
    hard = pd.read_csv(tmp_path / "hard.tsv", sep="\t").set_index("sample_id")
    assert (np.abs(hard.loc[scored.index].risk_probability - scored.risk_probability)
            > 1e-6).mean() > 0.5

    # The check: its per-ancestry allele frequencies are these dosages' means.
    report = check_site(**site_files(site), cohort_spec=SiteSettings.load(site).cohort)
    assert report.ok
    af = report.summary["allele_frequencies"]["by_ancestry"]
    ancestry = np.asarray(data.cohort.ancestry).astype(str)
    for label, freqs in af.items():
        mine = np.nanmean(dosage[ancestry == label], axis=0) / 2
        got = np.array([np.nan if f is None else f for f in freqs])
        np.testing.assert_allclose(got[data.found], mine[data.found], atol=2e-6)
        calls = expected_dosage(plain.genotypes)[ancestry == label]
        assert not np.allclose(got[data.found], np.nanmean(calls, axis=0)[data.found] / 2)


def test_the_disk_cache_keeps_the_genotype_probabilities(
    site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A later process reads the fractional dosages from the site's cache, not hard calls."""
    from client import data as data_module

    fractional_dosages(site, tmp_path)
    first = load_site(site, EncoderSettings(), tmp_path / "cache")
    assert first.probs is not None
    data_module._load.cache_clear()  # a new process: only the disk cache remains

    def no_vcf_reading(*args: object) -> None:
        raise AssertionError("the VCF was decoded again")

    monkeypatch.setattr(data_module, "harmonize_panel_genotypes", no_vcf_reading)
    again = load_site(site, EncoderSettings(), tmp_path / "cache")
    assert again.probs is not None
    np.testing.assert_array_equal(again.probs, first.probs)
    np.testing.assert_array_equal(again.genotypes, first.genotypes)


def test_dp_training_runs_on_fractional_dosages(site: Path, tmp_path: Path) -> None:
    """Opacus' Poisson loader, its empty batches and the per-sample clipping take the genotype
    probabilities as they take codes."""
    from client.randomness import DPRandomness
    from client.train import DPPlan, train_dp
    from shared.model import get_weights

    genotype_probabilities(site, tmp_path)
    data = load_site(site, EncoderSettings())
    g, y, _ = data.split("train")
    g, y = g[:16], y[:16]  # a few steps are enough
    assert g.ndim == 3
    torch.manual_seed(0)
    model = RiskTransformer(model_config(len(data.panel), EncoderSettings(), dim=16, layers=1))
    before = [w.copy() for w in get_weights(model)]
    plan = DPPlan.for_site(len(y), batch_size=1, epochs=1)  # about a third of batches empty
    result = train_dp(model, g, y, data.features, plan=plan, learning_rate=0.05,
                      noise_multiplier=1.0, max_grad_norm=1.0, device=torch.device("cpu"),
                      optimizer="sgd", randomness=DPRandomness(0, simulated=True))
    assert result.steps == plan.steps and result.empty_steps > 0
    assert np.isfinite(result.mean_loss)
    assert any(not np.allclose(a, b) for a, b in zip(before, get_weights(model), strict=True))
