"""The simulated cohort must look, on disk, like what hospitals hold: every later stage (site
loaders, the coordinator's panel, fairness audits) reads these real files, so the tests read
them back the way those stages will."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pysam
import pytest

import shared.cli as cli
from deploy.simulate import POPULATIONS, SimulationConfig, simulate_cohort
from shared.errors import InputError
from shared.panel import read_panel

SMALL = SimulationConfig(
    seed=7,
    people_per_population=150,
    sequence_length=200_000,
    panel_size=64,
    n_causal=10,
    n_interactions=2,
)
SITES = ["site-1", "site-2", "site-3"]
SITE_FILES = [
    "genotypes.vcf.gz",
    "genotypes.vcf.gz.tbi",
    "reference.fa",
    "reference.fa.fai",
    "panel.tsv",
    "panel.ancestry.json",
    "cohort.tsv",
]


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sim") / "cohort"
    return out, simulate_cohort(out, SMALL)


def _read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype={"sample_id": str})


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_files_exist_and_open(cohort: tuple[Path, dict]) -> None:
    out, meta = cohort
    for name in ["panel.tsv", "panel.ancestry.json", "truth.tsv", "reference.fa",
                 "reference.fa.fai", "cohort.json"]:
        assert (out / name).is_file(), name
    for site in SITES:
        for name in SITE_FILES:
            assert (out / site / name).is_file(), f"{site}/{name}"
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == SITES
    assert not list(out.parent.glob(".cohort.*")), "temporary build directory left behind"
    assert json.loads((out / "cohort.json").read_text()) == meta
    with pysam.FastaFile(str(out / "reference.fa")) as fasta:
        assert list(fasta.references) == ["chr22"]
        assert fasta.get_reference_length("chr22") == SMALL.start + SMALL.sequence_length
    # The index works: a region query returns only records inside it.
    lo, hi = SMALL.start + 50_000, SMALL.start + 60_000
    with pysam.VariantFile(str(out / "site-1" / "genotypes.vcf.gz")) as vcf:
        hits = [rec.pos for rec in vcf.fetch("chr22", lo, hi)]
    assert hits and all(lo < pos <= hi for pos in hits)


def test_vcf_matches_cohort_and_reference(cohort: tuple[Path, dict]) -> None:
    out, meta = cohort
    missing = calls = 0
    for site in SITES:
        folder = out / site
        samples = _read_tsv(folder / "cohort.tsv")["sample_id"].tolist()
        with (
            pysam.VariantFile(str(folder / "genotypes.vcf.gz")) as vcf,
            pysam.FastaFile(str(folder / "reference.fa")) as fasta,
        ):
            assert list(vcf.header.samples) == samples
            assert vcf.header.contigs["chr22"].length == fasta.get_reference_length("chr22")
            seq = fasta.fetch("chr22")
            positions = []
            for rec in vcf:
                assert rec.chrom == "chr22"
                assert len(rec.alts) == 1 and rec.ref in "ACGT" and rec.alts[0] in "ACGT"
                assert len(rec.ref) == 1 and rec.ref != rec.alts[0]
                assert seq[rec.pos - 1] == rec.ref, f"{site}: REF mismatch at {rec.pos}"
                assert SMALL.start < rec.pos <= SMALL.start + SMALL.sequence_length
                positions.append(rec.pos)
                if site == "site-1":
                    gts = [rec.samples[s]["GT"] for s in samples]
                    assert all(rec.samples[s].phased for s in samples[:5])
                    missing += sum(gt == (None, None) for gt in gts)
                    calls += len(gts)
        assert positions == sorted(positions) and len(positions) == meta["n_variants"]
    assert 0 < missing / calls < 5 * SMALL.missing_rate


def test_panel_in_vcfs_and_contains_trait_variants(cohort: tuple[Path, dict]) -> None:
    out, meta = cohort
    panel = _read_tsv(out / "panel.tsv")
    assert list(panel.columns) == ["chrom", "pos", "ref", "alt", "af"]
    assert len(panel) == SMALL.panel_size and panel["pos"].is_monotonic_increasing
    for site in SITES:
        assert (out / site / "panel.tsv").read_bytes() == (out / "panel.tsv").read_bytes()
    with pysam.VariantFile(str(out / "site-2" / "genotypes.vcf.gz")) as vcf:
        records = {(r.chrom, r.pos, r.ref, r.alts[0]) for r in vcf}
    assert set(panel[["chrom", "pos", "ref", "alt"]].itertuples(index=False, name=None)) <= records
    panel_pos = set(panel["pos"])
    assert len(meta["causal_positions"]) == SMALL.n_causal
    assert set(meta["causal_positions"]) <= panel_pos
    assert len(meta["interaction_pairs"]) == SMALL.n_interactions
    for a, b in meta["interaction_pairs"]:
        assert {a, b} <= panel_pos and abs(a - b) >= SMALL.sequence_length / 4
    # The panel spans the region rather than clustering around the causal variants.
    span = panel["pos"].max() - panel["pos"].min()
    assert span > 0.8 * SMALL.sequence_length


def test_panel_af_comes_from_a_public_sample_outside_the_cohort(
    cohort: tuple[Path, dict],
) -> None:
    """The af column is the frequency in people no site holds: close to the cohort's own
    frequency (same populations), but not equal to it, which it would be if it were computed
    from the sites' people."""
    out, _ = cohort
    panel = _read_tsv(out / "panel.tsv")
    truth = _read_tsv(out / "truth.tsv")
    assert len(truth) == 3 * SMALL.people_per_population  # the public people are in no site
    counts = np.zeros(len(panel))
    n = 0
    for site in SITES:
        with pysam.VariantFile(str(out / site / "genotypes.vcf.gz")) as vcf:
            n += len(vcf.header.samples)
            by_pos = {r.pos: sum(a or 0 for s in r.samples.values() for a in s["GT"]) for r in vcf}
        counts += [by_pos[p] for p in panel["pos"]]
    cohort_freq = counts / (2 * n)  # missing calls count as ref: a ~0.2% downward bias
    af = panel["af"].to_numpy()
    assert ((af >= 0) & (af <= 1)).all()
    # 300 public haplotypes per population: sd of a frequency estimate <= 0.017.
    assert np.abs(af - cohort_freq).max() < 0.1
    assert np.abs(af - cohort_freq).mean() < 0.03
    assert not np.allclose(af, cohort_freq, atol=1e-3)


def test_the_public_sample_is_written_as_a_reference_vcf_with_its_populations(
    cohort: tuple[Path, dict],
) -> None:
    """What `genofed model explain --reference` reads: the public people at the panel's
    variants, whose alt-allele frequency is exactly the panel's af, and each one's population."""
    from deploy.simulate import PUBLIC_LABELS, PUBLIC_VCF

    out, _ = cohort
    panel = _read_tsv(out / "panel.tsv")
    labels = pd.read_csv(out / PUBLIC_LABELS, sep="\t", dtype=str)
    assert list(labels.columns) == ["sample", "pop"]
    assert labels["pop"].value_counts().to_dict() == {
        p: SMALL.public_people_per_population for p in ("YRI", "CEU", "CHB")}
    with pysam.VariantFile(str(out / PUBLIC_VCF)) as vcf:
        assert list(vcf.header.samples) == labels["sample"].tolist()
        records = list(vcf)
    assert [r.pos for r in records] == panel["pos"].tolist()
    freq = [sum(a for s in r.samples.values() for a in s["GT"]) / (2 * len(labels))
            for r in records]
    assert np.allclose(freq, panel["af"], atol=1e-6)
    truth = _read_tsv(out / "truth.tsv")
    assert not set(labels["sample"]) & set(truth["sample_id"])


def test_no_public_sample_no_af_column(tmp_path: Path) -> None:
    config = dataclasses.replace(SMALL, public_people_per_population=0, sites=1)
    simulate_cohort(tmp_path / "c", config)
    panel = _read_tsv(tmp_path / "c" / "panel.tsv")
    assert list(panel.columns) == ["chrom", "pos", "ref", "alt"]
    assert read_panel(tmp_path / "c" / "panel.tsv").af is None
    assert not list((tmp_path / "c").rglob("panel.ancestry.json"))  # no public people to fit


def test_every_sample_in_exactly_one_site(cohort: tuple[Path, dict]) -> None:
    out, meta = cohort
    truth = _read_tsv(out / "truth.tsv")
    assert len(truth) == 3 * SMALL.people_per_population
    assert truth["sample_id"].is_unique
    assert truth["sample_id"].str.fullmatch(r"S\d{7}").all()
    seen: list[str] = []
    for site in SITES:
        rows = _read_tsv(out / site / "cohort.tsv")
        assert list(rows.columns) == ["sample_id", "ancestry", "phenotype", "split"]
        expected = truth[truth["site"] == site]
        assert rows["sample_id"].tolist() == expected["sample_id"].tolist()
        assert rows["phenotype"].tolist() == expected["phenotype"].tolist()
        assert set(rows["split"]) == {"train", "test"}
        assert meta["sites"][site]["n"] == len(rows)
        seen += rows["sample_id"].tolist()
    assert sorted(seen) == sorted(truth["sample_id"])
    counts = truth.groupby("ancestry").size()
    assert all(counts[pop] == SMALL.people_per_population for pop in POPULATIONS)


def test_sites_differ_in_ancestry_mix_and_size(cohort: tuple[Path, dict]) -> None:
    _, meta = cohort
    sites = meta["sites"]
    assert len({info["n"] for info in sites.values()}) == 3
    mix = {name: info["by_ancestry"] for name, info in sites.items()}
    assert mix["site-1"]["CEU"] > 0.7 * sites["site-1"]["n"]
    assert mix["site-2"]["YRI"] > 0.7 * sites["site-2"]["n"]
    assert all(n > 0 for n in mix["site-3"].values())
    assert max(mix["site-3"].values()) < 0.7 * sites["site-3"]["n"]


def test_the_spread_design_has_unequal_sites_with_every_ancestry_near_a_third(
    tmp_path: Path,
) -> None:
    """8 sites from the smallest to the largest of SPREAD_SIZES (in proportion), no ancestry
    above SPREAD_MAX_SHARE of any site, everyone in exactly one site."""
    from deploy.simulate import SPREAD_MAX_SHARE, SPREAD_SIZES, _spread_counts

    available = {"CEU": 2600, "CHB": 2500, "YRI": 2700}
    counts = _spread_counts(8, available)
    assert counts.sum(axis=0).tolist() == [available[p] for p in POPULATIONS]
    sizes = counts.sum(axis=1)
    assert np.all(np.diff(sizes) > 0)
    assert sizes.max() / sizes.min() == pytest.approx(SPREAD_SIZES[1] / SPREAD_SIZES[0], rel=0.02)
    assert (counts / sizes[:, None]).max() <= SPREAD_MAX_SHARE
    assert (counts / sizes[:, None]).min() > 0.25
    _, meta = cohort_of(tmp_path, dataclasses.replace(SMALL, sites=4, design="spread"))
    for info in meta["sites"].values():
        assert max(info["by_ancestry"].values()) <= SPREAD_MAX_SHARE * info["n"] + 1
    with pytest.raises(InputError, match="design must be one of"):
        simulate_cohort(tmp_path / "bad", dataclasses.replace(SMALL, design="even"))


def cohort_of(tmp_path: Path, config: SimulationConfig) -> tuple[Path, dict]:
    out = tmp_path / "spread"
    return out, simulate_cohort(out, config)


def test_phenotype_prevalence_split_and_signal(cohort: tuple[Path, dict]) -> None:
    out, meta = cohort
    truth = _read_tsv(out / "truth.tsv")
    assert set(truth["phenotype"]) == {0, 1}
    assert abs(truth["phenotype"].mean() - SMALL.prevalence) < 0.01
    assert abs((truth["split"] == "test").mean() - SMALL.test_fraction) < 0.03
    # Cases have the highest liabilities: a threshold model.
    assert truth.loc[truth["phenotype"] == 1, "liability"].min() >= (
        truth.loc[truth["phenotype"] == 0, "liability"].max()
    )
    assert np.corrcoef(truth["genetic_liability"], truth["phenotype"])[0, 1] > 0.2
    assert 0.3 < truth["genetic_liability"].var() < 0.7
    for pop in POPULATIONS:
        assert meta["oracle_auroc"][pop] > 0.6


def test_same_seed_same_files_other_seed_other_files(
    cohort: tuple[Path, dict], tmp_path: Path
) -> None:
    out, _ = cohort
    simulate_cohort(tmp_path / "again", SMALL)
    assert _all_files(tmp_path / "again") == _all_files(out)
    simulate_cohort(tmp_path / "other", dataclasses.replace(SMALL, seed=8))
    other = _all_files(tmp_path / "other")
    reference = _all_files(out)
    for name in ["site-1/genotypes.vcf.gz", "truth.tsv", "panel.tsv", "reference.fa"]:
        assert other[name] != reference[name], name


def test_bad_parameters_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="n-causal"):
        simulate_cohort(tmp_path / "a", dataclasses.replace(SMALL, n_causal=65))
    with pytest.raises(InputError, match="prevalence"):
        simulate_cohort(tmp_path / "b", dataclasses.replace(SMALL, prevalence=1.0))
    with pytest.raises(InputError, match="fewer than 10 people"):
        simulate_cohort(tmp_path / "c", dataclasses.replace(SMALL, people_per_population=5))
    assert not list(tmp_path.iterdir())


def test_failed_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import deploy.simulate as simulate

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(simulate, "_write_site", explode)
    with pytest.raises(RuntimeError, match="disk full"):
        simulate_cohort(tmp_path / "cohort", SMALL)
    assert not list(tmp_path.iterdir())


def _isolated_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dispatch through the real `main`, but only with the cohort group: other groups belong
    to other packages and must not make this test fail."""
    monkeypatch.setattr(cli, "_SHARED_GROUPS", {"cohort": "deploy.simulate"})
    monkeypatch.setattr(cli, "entry_points", lambda group: [])


def test_cli_simulates_and_refuses_non_empty_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _isolated_cli(monkeypatch)
    out = tmp_path / "cli"
    out.mkdir()  # an empty directory is fine
    args = [
        "cohort", "simulate", "--out", str(out), "--sites", "2", "--seed", "3",
        "--people-per-population", "100", "--sequence-length", "150000",
        "--panel-size", "32", "--n-causal", "8", "--n-interactions", "1",
    ]  # fmt: skip
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "site-1" in printed and "site-2" in printed and "oracle AUROC" in printed
    meta = json.loads((out / "cohort.json").read_text())
    assert meta["config"]["sites"] == 2 and meta["panel_size"] == 32
    before = _all_files(out)

    assert cli.main(args) == 2
    assert "not empty" in capsys.readouterr().err
    assert _all_files(out) == before

    assert cli.main([*args, "--seed", "4", "--force"]) == 0
    assert json.loads((out / "cohort.json").read_text())["config"]["seed"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cli"]
