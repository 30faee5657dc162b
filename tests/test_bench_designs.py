"""The spread design's federation-gain curve: who joins, what each point holds, how it renders."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from deploy.bench import gain_curve
from deploy.bench import readme as readme_table
from deploy.bench.designs import join_order, joined_cohort
from deploy.simulate import POPULATIONS, SimulationConfig, register_sites, simulate_cohort
from shared.receipts import SiteRegistry

SMALL = SimulationConfig(seed=5, sites=4, people_per_population=40, sequence_length=100_000,
                         panel_size=16, n_causal=4, n_interactions=1, prevalence=0.3,
                         public_people_per_population=10, design="spread")


def test_join_order_is_fixed_and_a_permutation() -> None:
    sites = [f"site-{k}" for k in range(1, 9)]
    order = join_order(sites)
    assert sorted(order) == sites and order == join_order(sites)
    assert order != sites or join_order(sites, seed=1) != sites


def test_a_joined_cohort_holds_only_its_sites_renamed_with_fresh_keys(tmp_path: Path) -> None:
    cohort = tmp_path / "cohort"
    simulate_cohort(cohort, SMALL)
    register_sites(cohort)
    dst = joined_cohort(cohort, ["site-3", "site-1"], tmp_path / "joined")
    assert sorted(p.name for p in dst.glob("site-*") if p.is_dir()) == ["site-1", "site-2"]
    # site-1 of the joined cohort is the original site-3: same people.
    assert (dst / "site-1" / "cohort.tsv").read_text() == (cohort / "site-3" / "cohort.tsv"
                                                             ).read_text()
    registry = SiteRegistry.load(dst / "site-registry.json")
    assert sorted(registry.keys) == ["site-1", "site-2"]
    original = json.loads((cohort / "site-registry.json").read_text())
    joined = json.loads((dst / "site-registry.json").read_text())
    assert joined != original  # new names, new keys: nothing of the old identities carried
    assert (dst / "panel.tsv").read_bytes() == (cohort / "panel.tsv").read_bytes()


def _doc() -> dict:
    def pops(values: list[float]) -> dict:
        return dict(zip(readme_table.POPULATIONS, values, strict=True))

    curve = [
        {"sites": 1, "n_train": 300, "federated_dp": pops([0.60, 0.61, 0.62]),
         "best_site_alone": {p: {"auroc": v, "site": "site-1"}
                             for p, v in pops([0.65, 0.64, 0.63]).items()},
         "pooled_linear": pops([0.65, 0.64, 0.63])},
        {"sites": 2, "n_train": 700, "federated_dp": pops([0.70, 0.71, 0.72]),
         "best_site_alone": {p: {"auroc": v, "site": "site-4"}
                             for p, v in pops([0.66, 0.65, 0.64]).items()},
         "pooled_linear": pops([0.72, 0.73, 0.74])},
    ]
    return {"designs": {"gain_curve": curve, "site_sizes": {"site-1": 300, "site-4": 400},
                        "all_sites": {"meta_gwas": pops([0.7, 0.7, 0.7]),
                                      "meta_gwas_multi": pops([0.71, 0.71, 0.71])}}}


def test_the_curve_is_drawn_and_tabled_from_the_json(tmp_path: Path) -> None:
    doc = _doc()
    svg = gain_curve.svg(doc["designs"])
    root = ET.fromstring(svg)  # well-formed
    lines = root.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2 * len(POPULATIONS)  # federated and site-alone per population
    assert gain_curve.svg({}) is None
    text = readme_table.render(doc)
    assert "| 2 | 700 | 0.700 / 0.660 / 0.720 | 0.710 / 0.650 / 0.730 |" in text
    assert f"![AUROC per population as hospitals join]({gain_curve.FILE})" in text
    assert "meta-analysed GWAS C+T" in text
    # `python -m deploy.bench.readme` writes the SVG beside the report and checks it.
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(doc))
    readme = tmp_path / "README.md"
    readme.write_text(f"{readme_table.CONFIG_START}\n{readme_table.CONFIG_END}\n"
                      f"{readme_table.START}\n{readme_table.END}\n")
    assert readme_table.main([str(bench), str(readme)]) == 0
    assert (tmp_path / gain_curve.FILE).read_text() == svg
    assert f"deploy/bench/{gain_curve.FILE}" in readme.read_text()
    assert readme_table.main([str(bench), str(readme), "--check"]) == 0
    (tmp_path / gain_curve.FILE).write_text("<svg/>")
    assert readme_table.main([str(bench), str(readme), "--check"]) == 1


@pytest.mark.parametrize("missing", ["federated_dp", "best_site_alone"])
def test_a_point_without_a_value_is_left_out_of_its_line(missing: str) -> None:
    doc = _doc()
    del doc["designs"]["gain_curve"][0][missing]
    root = ET.fromstring(gain_curve.svg(doc["designs"]))
    assert len(root.findall("{http://www.w3.org/2000/svg}polyline")) == len(POPULATIONS)


def test_the_explanation_figures_are_tabled_from_the_json() -> None:
    doc = {"explain": {
        "chance_precision": 0.25, "truth": {"causal": [1, 2], "pairs": [[1, 5]]},
        "models": {
            "federated_dp": {"swap": [{"precision": 0.5}, {"recall": 1.0}],
                             "integrated_gradients": [{"precision": 0.5}, {"recall": 0.5}],
                             "pairs": [{"pair": [1, 5], "rank": None, "scored_pairs": 6}]},
            "linear_prs": {"swap": [{"precision": 1.0}, {"recall": 1.0}],
                           "pairs": [{"pair": [1, 5], "rank": 3.5, "scored_pairs": 6}]},
        }}}
    text = readme_table.render(doc)
    assert "## Explanations against the truth (2 causal variants" in text
    assert "| 0.50 | 1.00 | 0.50 | not scored |" in text
    assert "| 1.00 | 1.00 | n/a | 3.5 of 6 |" in text
