"""Reading genotypes and reference context through pysam, checked against pysam's own API."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pysam
import pytest

from client.data import load_site
from shared.cohort import read_cohort
from shared.encoding import EncoderSettings, encode_panel
from shared.errors import InputError
from shared.genotypes import gt_code, read_panel_genotypes
from shared.panel import read_panel
from shared.tokenizer import GT_HET, GT_HOM_ALT, GT_HOM_REF, GT_MISSING, DNATokenizer


@pytest.mark.parametrize(
    ("gt", "n_alleles", "alt", "code"),
    [
        ("0|0", 2, 1, GT_HOM_REF), ("0/1", 2, 1, GT_HET), ("1|0", 2, 1, GT_HET),
        ("1/1", 2, 1, GT_HOM_ALT), ("./.", 2, 1, GT_MISSING), (".|1", 2, 1, GT_MISSING),
        ("1", 2, 1, GT_HOM_ALT), ("0", 2, 1, GT_HOM_REF),  # haploid
        ("0/2", 3, 2, GT_HET), ("1/2", 3, 2, GT_HET), ("2/2", 3, 2, GT_HOM_ALT),  # multi-allelic
    ],
)
def test_gt_codes(gt: str, n_alleles: int, alt: int, code: int) -> None:
    assert gt_code(gt, n_alleles, alt) == code


def test_allele_index_out_of_range() -> None:
    with pytest.raises(ValueError, match="out of range"):
        gt_code("0/3", 2, 1)


def test_vectorised_reader_matches_pysam_per_sample(tiny_cohort: Path) -> None:
    site = tiny_cohort / "site-1"
    panel = read_panel(site / "panel.tsv")
    cohort = read_cohort(site / "cohort.tsv")
    samples = list(cohort.sample_id[::-1])  # a different order than the VCF's
    codes, found = read_panel_genotypes(site / "genotypes.vcf.gz", panel, samples)
    assert codes.shape == (len(samples), len(panel)) and found.all()
    with pysam.VariantFile(str(site / "genotypes.vcf.gz")) as vf:
        for j in range(0, len(panel), 7):
            rec = next(r for r in vf.fetch(panel.chrom[j], panel.pos[j] - 1, panel.pos[j]))
            for i in range(0, len(samples), 11):
                gt = rec.samples[samples[i]]["GT"]
                expect = GT_MISSING if None in gt else sum(gt)
                assert codes[i, j] == expect


def test_context_tokens_come_from_the_reference(tiny_cohort: Path) -> None:
    site = tiny_cohort / "site-1"
    panel = read_panel(site / "panel.tsv")
    settings = EncoderSettings(context_bases=4, kmer_size=3)
    features = encode_panel(panel, site / "reference.fa", settings)
    tok = DNATokenizer(k=3)
    with pysam.FastaFile(str(site / "reference.fa")) as fa:
        seq = fa.fetch(panel.chrom[0], int(panel.pos[0]) - 5, int(panel.pos[0]) + 4)
    assert features.context[0].tolist() == tok.encode(seq)
    assert features.context.shape == (len(panel), settings.context_len())
    assert seq[4] == panel.ref[0]


def test_ref_mismatch_names_the_variant(tiny_cohort: Path, tmp_path: Path) -> None:
    site = tiny_cohort / "site-1"
    bad = tmp_path / "panel.tsv"
    lines = (site / "panel.tsv").read_text().splitlines()
    chrom, pos, ref, alt, af = lines[3].split("\t")
    wrong = next(b for b in "ACGT" if b not in (ref, alt))
    lines[3] = "\t".join([chrom, pos, wrong, alt, af])
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=f"{chrom}:{pos}.*disagrees with the FASTA"):
        encode_panel(read_panel(bad), site / "reference.fa", EncoderSettings())


def test_site_loader_aligns_people_and_caches(tiny_cohort: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    shutil.copytree(tiny_cohort / "site-2", site)
    data = load_site(site, EncoderSettings())
    assert data.genotypes.shape == (len(data.cohort), len(data.panel))
    assert load_site(site, EncoderSettings()) is data  # unchanged files: cached
    g, y, anc = data.split("test")
    assert len(g) == len(y) == len(anc) == int((data.cohort.split == "test").sum())
    assert set(np.unique(data.genotypes)) <= {0, 1, 2, 3}
    (site / "cohort.tsv").write_text((site / "cohort.tsv").read_text())  # touch: new mtime
    assert load_site(site, EncoderSettings()) is not data


def test_disk_cache_is_keyed_by_content(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    shutil.copytree(tiny_cohort / "site-1", site)
    cache = tmp_path / "cache"
    first = load_site(site, EncoderSettings(), cache)
    entries = sorted(cache.glob("*.npz"))
    assert len(entries) == 1
    from client import data as data_module

    data_module._load.cache_clear()  # a new process: only the disk cache remains

    def no_vcf_reading(*args: object) -> None:
        raise AssertionError("the VCF was decoded again")

    with monkeypatch.context() as m:
        m.setattr(data_module, "harmonize_panel_genotypes", no_vcf_reading)
        again = load_site(site, EncoderSettings(), cache)
    np.testing.assert_array_equal(again.genotypes, first.genotypes)
    assert sorted(cache.glob("*.npz")) == entries
    # Any change to an input (here one phenotype in the cohort table) gives a new key.
    text = (site / "cohort.tsv").read_text().splitlines()
    cols = text[1].split("\t")
    cols[2] = "1" if cols[2] == "0" else "0"
    text[1] = "\t".join(cols)
    (site / "cohort.tsv").write_text("\n".join(text) + "\n")
    load_site(site, EncoderSettings(), cache)
    assert len(list(cache.glob("*.npz"))) == 2
    # Other encoder settings too.
    load_site(site, EncoderSettings(context_bases=4), cache)
    assert len(list(cache.glob("*.npz"))) == 3


def test_site_config_describes_a_hospitals_own_cohort_table(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    import pandas as pd

    site = tmp_path / "site"
    shutil.copytree(tiny_cohort / "site-1", site)
    table = pd.read_csv(site / "cohort.tsv", sep="\t", dtype=str)
    own = pd.DataFrame({
        "IID": table.sample_id, "pop": table.ancestry,
        "status": table.phenotype.map({"0": "control", "1": "case"}),
    })
    own.loc[0, "status"] = "NA"  # one person without a phenotype
    own.to_csv(site / "cohort.tsv", sep="\t", index=False)
    (site / "site.toml").write_text(
        '[cohort]\nsample-col = "IID"\nancestry-col = "pop"\nphenotype-col = "status"\n'
        'split-col = ""\n\n[privacy]\nmax-epsilon = 4.0\n'
    )
    data = load_site(site, EncoderSettings())
    assert len(data.cohort) == len(table) - 1 and data.cohort.n_missing_phenotype == 1
    assert set(data.cohort.split) == {"train", "test"}
    assert data.genotypes.shape[0] == len(table) - 1
