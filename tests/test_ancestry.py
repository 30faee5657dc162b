"""Genetic ancestry measured against the panel's public reference, not only declared.

Starts from the simulated cohort, whose panel ships `panel.ancestry.json` fitted on the public
reference sample (people in no site): the labels it gives the sites' people must match their
true population, an outlier must be unassigned, a table without an ancestry column must get
genetic groups, `site check` must show the declared x genetic agreement with small cells
withheld, and a reference for another panel must be one clear line.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from client.ancestry import format_agreement
from client.check import check_site
from client.data import load_site
from client.settings import SiteSettings
from deploy.simulate import SimulationConfig, simulate_cohort
from shared.ancestry import (
    UNASSIGNED,
    agreement,
    ancestry_path,
    fit_reference,
    read_reference,
)
from shared.cli import main
from shared.encoding import EncoderSettings
from shared.errors import InputError
from shared.genotypes import harmonize_panel_genotypes
from shared.panel import read_panel
from tests.helpers import site_files

# Like the tests' tiny cohort, on a region and panel long enough for the three populations to
# separate (the tiny one's 48 variants in 300 kb hold too little ancestry signal for CEU/CHB).
SEPARATED = SimulationConfig(
    seed=7, sites=2, people_per_population=100, sequence_length=1_000_000, panel_size=128,
    n_causal=8, n_interactions=2, prevalence=0.3,
)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("separated") / "cohort"
    simulate_cohort(out, SEPARATED)
    return out


@pytest.fixture()
def site(cohort: Path, tmp_path: Path) -> Path:
    """A private copy of the mixed site (site-2: every population well represented); the large
    reference hard-linked, as no test writes it."""
    def copy(src: str, dst: str) -> None:
        if Path(src).name.startswith("reference.fa"):
            os.link(src, dst)
        else:
            shutil.copy2(src, dst)

    return Path(shutil.copytree(cohort / "site-2", tmp_path / "site", copy_function=copy))


def _truth(cohort: Path) -> dict[str, str]:
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype=str)
    return dict(zip(truth["sample_id"], truth["ancestry"], strict=True))


def _codes(site: Path) -> tuple[list[str], np.ndarray]:
    people = pd.read_csv(site / "cohort.tsv", sep="\t", dtype=str)["sample_id"].tolist()
    panel = read_panel(site / "panel.tsv")
    read = harmonize_panel_genotypes(site / "genotypes.vcf.gz", panel, people,
                                     site / "reference.fa")
    return people, read.codes


def _drop_ancestry_column(site: Path) -> None:
    table = pd.read_csv(site / "cohort.tsv", sep="\t", dtype=str)
    table.drop(columns="ancestry").to_csv(site / "cohort.tsv", sep="\t", index=False)


def test_genetic_labels_match_the_true_population(cohort: Path) -> None:
    truth = _truth(cohort)
    for name in ("site-1", "site-2"):
        site = cohort / name
        panel = read_panel(site / "panel.tsv")
        reference = read_reference(ancestry_path(site / "panel.tsv"), panel)
        people, codes = _codes(site)
        labels = reference.assign(codes)
        true = np.array([truth[p] for p in people])
        assert set(reference.populations) == {"CEU", "CHB", "YRI"}
        assert (labels == true).mean() >= 0.9, name
        assert (labels == UNASSIGNED).mean() < 0.05, name


def test_reference_people_are_in_no_site(cohort: Path) -> None:
    """The centroids come from the public sample: as many people per population as the
    simulation set aside, none of them a site's person."""
    panel = read_panel(cohort / "panel.tsv")
    reference = read_reference(ancestry_path(cohort / "panel.tsv"), panel)
    assert reference.counts == (SEPARATED.public_people_per_population,) * 3
    for name in ("site-1", "site-2"):  # each site holds the same file
        assert (cohort / name / "panel.ancestry.json").read_bytes() == (
            cohort / "panel.ancestry.json").read_bytes()


def test_an_outlier_far_from_every_population_is_unassigned(cohort: Path) -> None:
    panel = read_panel(cohort / "panel.tsv")
    reference = read_reference(ancestry_path(cohort / "panel.tsv"), panel)
    # Homozygous, at every variant, for the allele that pushes along the last principal axis
    # (one that separates no population): far out where no reference person lies.
    outlier = np.where(reference.loadings[:, -1] > 0, 2, 0)[None, :].astype(np.int8)
    _, codes = _codes(cohort / "site-1")
    assert reference.assign(outlier).tolist() == [UNASSIGNED]
    assert reference.distances(outlier).min() > reference.max_spreads
    assert UNASSIGNED not in set(reference.assign(codes[:20]).tolist())


def test_fit_recovers_well_separated_groups() -> None:
    """On synthetic groups with very different allele frequencies, every person is assigned
    to their own group; a person beyond the groups on their axes, and people of a group the
    reference lacks, are unassigned."""
    rng = np.random.default_rng(0)
    t = 200
    freqs = {g: rng.uniform(0.05, 0.95, size=t) for g in "ABCD"}
    codes = np.vstack([rng.binomial(2, freqs[g], size=(80, t)) for g in "ABC"]).astype(np.int8)
    labels = np.repeat(list("ABC"), 80)

    class _Panel:  # fit_reference reads only these three attributes
        sha256, build = "0" * 64, None

        def __len__(self) -> int:
            return t

    reference = fit_reference(codes, labels, _Panel())  # type: ignore[arg-type]
    fresh = np.vstack([rng.binomial(2, freqs[g], size=(50, t)) for g in "ABC"]).astype(np.int8)
    assert (reference.assign(fresh) == np.repeat(list("ABC"), 50)).mean() >= 0.98
    # Every allele pushing away from B past A: beyond A on the axis between them, nobody's.
    a, b = (reference.populations.index(g) for g in "AB")
    away = reference.loadings @ (reference.centroids[a] - reference.centroids[b])
    genotype = np.where(away > 0, 2, 0)[None, :].astype(np.int8)
    assert reference.assign(genotype).tolist() == [UNASSIGNED]
    # A group the reference does not span lies off its axes: unassigned by its residual.
    other = rng.binomial(2, freqs["D"], size=(50, t)).astype(np.int8)
    assert (reference.assign(other) == UNASSIGNED).mean() >= 0.9
    assert (reference.residuals(other) > reference.max_residual).mean() >= 0.9
    # Missing calls are mean-imputed, not read as a genotype.
    holes = fresh.copy()
    holes[:, : t // 3] = 3
    assert (reference.assign(holes) == np.repeat(list("ABC"), 50)).mean() >= 0.9


def test_a_cohort_without_ancestry_column_gets_genetic_groups(
    site: Path, cohort: Path,
) -> None:
    _drop_ancestry_column(site)
    data = load_site(site, EncoderSettings())
    truth = _truth(cohort)
    true = np.array([truth[p] for p in data.cohort.sample_id])
    assert not data.cohort.ancestry_declared
    assert (data.cohort.ancestry == true).mean() >= 0.9
    assert data.vocabulary == ("CEU", "CHB", "YRI", UNASSIGNED)
    # The generated split is stratified by the genetic groups: each has its held-out share.
    for group in ("CEU", "CHB", "YRI"):
        members = data.cohort.split[data.cohort.ancestry == group]
        assert abs((members == "test").sum() - 0.25 * len(members)) <= 1, group


def test_without_reference_a_missing_ancestry_column_is_still_an_error(site: Path) -> None:
    _drop_ancestry_column(site)
    (site / "panel.ancestry.json").unlink()
    with pytest.raises(InputError, match="lacks column"):
        load_site(site, EncoderSettings())


def test_groups_setting_chooses_genetic_or_declared(site: Path, cohort: Path) -> None:
    table = pd.read_csv(site / "cohort.tsv", sep="\t", dtype=str)
    table.assign(ancestry="CEU").to_csv(site / "cohort.tsv", sep="\t", index=False)  # all CEU
    declared = load_site(site, EncoderSettings())
    assert declared.cohort.ancestry_declared and set(declared.cohort.ancestry) == {"CEU"}
    (site / "site.toml").write_text((site / "site.toml").read_text()
                                    + '\n[ancestry]\ngroups = "genetic"\n')
    assert SiteSettings.load(site).ancestry.groups == "genetic"
    genetic = load_site(site, EncoderSettings())
    assert UNASSIGNED in genetic.vocabulary
    truth = _truth(cohort)
    true = np.array([truth[p] for p in genetic.cohort.sample_id])
    assert (genetic.cohort.ancestry == true).mean() >= 0.9
    assert declared.vocabulary == ("YRI", "CEU", "CHB")  # the simulated site.toml's list
    assert genetic.vocabulary == ("CEU", "CHB", "YRI", UNASSIGNED)
    (site / "site.toml").write_text('[ancestry]\ngroups = "measured"\n')
    with pytest.raises(InputError, match="groups must be one of auto, declared, genetic"):
        SiteSettings.load(site)


def test_genetic_groups_must_be_among_the_site_ancestries(site: Path) -> None:
    (site / "site.toml").write_text('[cohort]\nancestries = ["CEU", "YRI", "CHB", "AFR"]\n'
                                    '[ancestry]\ngroups = "genetic"\n')
    assert UNASSIGNED in load_site(site, EncoderSettings()).vocabulary
    _drop_ancestry_column(site)  # (declared labels are checked against the list on reading)
    (site / "site.toml").write_text('[cohort]\nancestries = ["CEU", "YRI"]\n')
    with pytest.raises(InputError, match="'CHB' is not among the site's"):
        load_site(site, EncoderSettings())


def test_agreement_withholds_small_cells() -> None:
    declared = np.array(["CEU"] * 30 + ["YRI"] * 25 + ["CEU"] * 3 + ["YRI"] * 12)
    genetic = np.array(["CEU"] * 30 + ["YRI"] * 25 + ["YRI"] * 3 + [UNASSIGNED] * 12)
    table = agreement(declared, genetic, floor=10)
    assert table["cells"] == {"CEU": {"CEU": 30, "YRI": None, UNASSIGNED: 0},
                              "YRI": {"CEU": 0, "YRI": 25, UNASSIGNED: 12}}
    assert table["withheld_cells"] == 1 and table["agreeing"] == 55
    # Three people disagreeing in all would be readable off the agreeing count: withheld.
    assert agreement(declared[:58], genetic[:58], floor=10)["agreeing"] is None


def test_check_reports_agreement_with_small_cells_withheld(
    site: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    files = site_files(site)
    report = check_site(**files, min_group_size=10)
    assert report.ok, [f.line() for f in report.findings]
    table = report.summary["ancestry"]["agreement"]
    cells = [v for row in table["cells"].values() for v in row.values()]
    assert all(v is None or v == 0 or v >= 10 for v in cells)
    diagonal = sum(table["cells"][p].get(p) or 0 for p in table["declared"])
    assert diagonal >= 0.9 * table["people"]
    # With a floor above every off-diagonal cell, all of them are withheld, none shown.
    strict = check_site(**files, min_group_size=1000).summary["ancestry"]["agreement"]
    assert all(v in (None, 0) for row in strict["cells"].values() for v in row.values())
    # The CLI prints it (floor from site.toml: the default 10).
    assert main(["site", "check", "--data", str(site)]) == 0
    out = capfd.readouterr().out
    assert "agreement  declared (rows) x genetic (columns)" in out
    assert any(line.split()[:1] == ["CEU"] for line in out.splitlines())
    lines = format_agreement(report.summary["ancestry"])
    assert len(lines) == 3 + len(table["declared"])


def test_check_uses_genetic_labels_without_ancestry_column(site: Path) -> None:
    _drop_ancestry_column(site)
    report = check_site(**site_files(site), min_group_size=10)
    assert report.ok, [f.line() for f in report.findings]
    summary = report.summary["ancestry"]
    assert summary["groups"] == "genetic" and "agreement" not in summary
    assert sum(v or 0 for v in summary["genetic"].values()) >= 0.9 * report.summary["cohort"][
        "people"]
    assert set(report.summary["allele_frequencies"]["by_ancestry"]) <= {
        "CEU", "CHB", "YRI", UNASSIGNED}


def _other_panel_reference(site: Path) -> None:
    """The site's panel with one variant dropped: its reference no longer pairs with it."""
    lines = (site / "panel.tsv").read_text().splitlines(keepends=True)
    (site / "panel.tsv").write_text("".join(lines[:-1]))


def test_a_reference_for_another_panel_is_one_line(
    site: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    _other_panel_reference(site)
    panel = read_panel(site / "panel.tsv")
    with pytest.raises(InputError) as err:
        read_reference(ancestry_path(site / "panel.tsv"), panel)
    assert "fitted on another panel" in str(err.value) and "\n" not in str(err.value)
    assert str(err.value).startswith(str(site / "panel.ancestry.json"))
    # While the table declares ancestry, training does not need it: a warning in the check.
    report = check_site(**site_files(site))
    assert report.ok and [f.problem for f in report.warnings
                          if "fitted on another panel" in f.problem]
    # Training needs the labels when the table declares none: it stops on that one line.
    _drop_ancestry_column(site)
    with pytest.raises(InputError, match="fitted on another panel"):
        load_site(site, EncoderSettings())
    rc = main(["site", "check", "--data", str(site)])
    out, err_text = capfd.readouterr()
    assert rc == 1 and "Traceback" not in out + err_text
    assert any("panel.ancestry.json: panel_sha256: ancestry reference was fitted on another "
               "panel" in line for line in out.splitlines())


@pytest.mark.parametrize("breakage, problem", [
    (lambda doc: "{not json", "not a JSON ancestry reference"),
    (lambda doc: {**doc, "format": "pca"}, "not an ancestry reference"),
    (lambda doc: {**doc, "center": doc["center"][:-1]}, "center: has shape"),
    (lambda doc: {**doc, "max_spreads": -1}, "max_spreads -1 is not a positive number"),
    (lambda doc: {k: v for k, v in doc.items() if k != "max_residual"},
     "max_residual None is not a positive number"),
    (lambda doc: {**doc, "populations": {"CEU": {"centroid": [0.0], "spread": 1.0}}},
     "populations.CEU.centroid: has shape"),
])
def test_a_malformed_reference_is_one_line(site: Path, breakage, problem: str) -> None:
    path = site / "panel.ancestry.json"
    doc = json.loads(path.read_text())
    broken = breakage(doc)
    path.write_text(broken if isinstance(broken, str) else json.dumps(broken))
    with pytest.raises(InputError) as err:
        read_reference(path, read_panel(site / "panel.tsv"))
    assert problem in str(err.value) and "\n" not in str(err.value)


def test_the_sites_noisy_counts_are_broken_down_by_genetic_groups(site: Path) -> None:
    """What a site releases about a table without ancestry: counts over the reference
    populations and `unassigned`, a fixed public vocabulary, never the declared-label list."""
    from client.budget import SiteBudget
    from client.site import Site
    from shared.runconfig import RunSettings

    _drop_ancestry_column(site)
    node = Site(site, RunSettings(), budget=SiteBudget(accountant="rdp"))
    data = node.data()
    with node.ledger() as ledger:
        counts = node.counts(ledger, data)
    assert counts.groups == ("CEU", "CHB", "YRI", UNASSIGNED)
    exact = {g: int((data.cohort.ancestry == g).sum()) for g in counts.groups}
    noisy = {g: sum(counts.group_size(g, s) for s in ("train", "test")) for g in counts.groups}
    for g in ("CEU", "CHB", "YRI"):
        assert exact[g] >= 40 and abs(noisy[g] - exact[g]) < 6 * 2 * counts.sigma, g


def test_coordinator_fits_a_reference_from_public_files(
    cohort: Path, tmp_path: Path, capfd: pytest.CaptureFixture[str],
) -> None:
    """`genofed coordinator ancestry-reference` from a VCF and a population table (here
    site-2's people stand in for the public panel) labels site-1's people as the simulation's
    own reference does."""
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype=str)
    public = truth[truth["site"] == "site-2"].rename(
        columns={"sample_id": "sample", "ancestry": "pop"})
    public[["sample", "pop"]].to_csv(tmp_path / "pops.tsv", sep="\t", index=False)
    out = tmp_path / "panel.ancestry.json"
    rc = main(["coordinator", "ancestry-reference", "--panel", str(cohort / "panel.tsv"),
               "--genotypes", str(cohort / "site-2" / "genotypes.vcf.gz"),
               "--populations", str(tmp_path / "pops.tsv"), "--out", str(out)])
    assert rc == 0 and f"wrote {out}" in capfd.readouterr().out
    reference = read_reference(out, read_panel(cohort / "panel.tsv"))
    assert reference.counts == tuple((public["pop"] == p).sum() for p in reference.populations)
    people, codes = _codes(cohort / "site-1")
    true = np.array([_truth(cohort)[p] for p in people])
    assert (reference.assign(codes) == true).mean() >= 0.9
    # A population table without the named column: one line, nothing written.
    rc = main(["coordinator", "ancestry-reference", "--panel", str(cohort / "panel.tsv"),
               "--genotypes", str(cohort / "site-1" / "genotypes.vcf.gz"),
               "--populations", str(tmp_path / "pops.tsv"), "--population-col", "super_pop",
               "--out", str(tmp_path / "other.json")])
    err = capfd.readouterr().err
    assert rc == 2 and "pops.tsv: line 1: population table lacks column(s) super_pop" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "other.json").exists()


def test_people_of_a_population_the_reference_lacks_are_mostly_unassigned(
    cohort: Path, tmp_path: Path,
) -> None:
    """A reference fitted without CHB (site-2's YRI and CEU people stand in for the public
    ones): site-2's CHB people lie off its axes and are left unassigned far more often than
    the out-of-sample YRI and CEU people of site-1, who keep their label."""
    truth = pd.read_csv(cohort / "truth.tsv", sep="\t", dtype=str)
    public = truth[(truth["site"] == "site-2") & (truth["ancestry"] != "CHB")]
    public.rename(columns={"sample_id": "sample", "ancestry": "pop"}).to_csv(
        tmp_path / "pops.tsv", sep="\t", index=False)
    from shared.ancestry import fit_reference_files

    reference = fit_reference_files(cohort / "panel.tsv", cohort / "site-2" / "genotypes.vcf.gz",
                                    tmp_path / "pops.tsv")
    assert reference.populations == ("CEU", "YRI")
    labels = {}
    for name in ("site-1", "site-2"):
        people, codes = _codes(cohort / name)
        labels.update(zip(people, reference.assign(codes), strict=True))
    site1 = truth[(truth["site"] == "site-1") & (truth["ancestry"] != "CHB")]
    kept = np.array([labels[p] for p in site1["sample_id"]]) == site1["ancestry"].to_numpy()
    chb = truth[(truth["site"] == "site-2") & (truth["ancestry"] == "CHB")]["sample_id"]
    lost = np.array([labels[p] for p in chb]) == UNASSIGNED
    assert kept.mean() >= 0.9 and lost.mean() >= 0.3, (kept.mean(), lost.mean())
