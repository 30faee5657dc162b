"""Variant effects, attributions and interactions are recovered exactly from models whose
weights are set by hand, and from a known function of the genotypes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deploy.simulate import PUBLIC_LABELS, PUBLIC_VCF
from shared import cli
from shared.checkpoint import load_checkpoint
from shared.explain import (
    EXPLANATION_JSON,
    PAIRS_TSV,
    VARIANTS_TSV,
    explain,
    integrated_gradients,
    model_scorer,
    pair_interactions,
    patient_reasons,
    swap_effects,
)
from shared.fsio import sha256_file
from shared.model import ModelConfig, PanelFeatures, RiskTransformer
from shared.panel import read_panel
from shared.protocol import weights_sha256
from tests.helpers import additive_checkpoint

T = 7


def _panel(rng: np.random.Generator, af: np.ndarray | None) -> PanelFeatures:
    return PanelFeatures(
        context=torch.as_tensor(rng.integers(0, 10, size=(T, 3))),
        ref=torch.as_tensor(rng.integers(0, 4, size=T)),
        alt=torch.as_tensor(rng.integers(4, 8, size=T)),
        coord=torch.as_tensor(np.sort(rng.integers(1, 10**6, size=T)).astype(np.float64)),
        alt_freq=None if af is None else torch.as_tensor(af, dtype=torch.float32),
    )


def _model(seed: int = 0) -> RiskTransformer:
    torch.manual_seed(seed)
    return RiskTransformer(ModelConfig(n_variants=T, context_len=3, kmer_vocab=10, dim=8,
                                       layers=1, heads=2))


def _additive_only(w: np.ndarray) -> RiskTransformer:
    """Every transformer weight zero: the logit is the additive read-out alone, w . a(g)."""
    model = _model()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.additive.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None, :])
    return model


def _codes(rng: np.random.Generator, n: int) -> np.ndarray:
    codes = rng.integers(0, 3, size=(n, T)).astype(np.int8)
    codes[rng.random(size=codes.shape) < 0.05] = 3  # missing calls
    return codes


@pytest.mark.parametrize("with_af", [True, False])
def test_additive_model_effects_and_attributions_are_recovered_exactly(with_af: bool) -> None:
    rng = np.random.default_rng(1)
    af = rng.uniform(0.1, 0.6, size=T) if with_af else None
    w = rng.normal(size=T)
    features, model = _panel(rng, af), _additive_only(w)
    sd = np.sqrt(2 * af * (1 - af)) if with_af else np.ones(T)
    per_allele = w / sd  # the logit's change per alt allele, the same for everyone
    codes = _codes(rng, 40)
    pops = np.array(["A", "B"] * 20)

    base, effects = swap_effects(model_scorer(model, features), codes)
    swappable = codes < 2
    assert np.isnan(effects[~swappable]).all()
    assert np.allclose(effects[swappable], np.broadcast_to(per_allele, codes.shape)[swappable],
                       atol=1e-5)

    ig, gap = integrated_gradients(model, features, codes, steps=4)
    centre = 2 * af if with_af else np.ones(T)
    read_out = np.where(codes == 3, 0.0, (codes - centre) / sd)  # additive input; missing: 0
    expected = w * (read_out - (0 - centre) / sd)  # IG of a linear function: exact
    assert np.allclose(ig, expected, atol=1e-5)
    assert np.abs(gap).max() < 1e-5

    names = [f"v{i}" for i in range(T)]
    expl = explain(model_scorer(model, features), codes, pops, names, top=T, ig=ig, ig_gap=gap)
    assert np.allclose(expl.variants["effect"], per_allele, atol=1e-5)
    for pop in ("A", "B"):
        assert np.allclose(expl.variants[f"effect_{pop}"], per_allele, atol=1e-5)
    assert np.allclose(expl.variants["population_spread"], 0, atol=1e-5)
    assert len(expl.pairs) == T * (T - 1) // 2
    assert np.allclose(expl.pairs["interaction"], 0, atol=1e-5)
    assert (expl.pairs["rank"] == expl.pairs["rank"].iloc[0]).all()  # all tied: none ahead
    observed = np.where(codes == 3, np.nan, codes).astype(float)
    spread = np.sqrt(np.nanmean((observed - np.nanmean(observed, 0)) ** 2, 0))
    assert np.allclose(expl.variants["importance"], np.abs(per_allele) * spread, atol=1e-5)
    assert list(expl.top(3)["index"]) == list(np.argsort(-np.abs(per_allele) * spread)[:3])


def test_a_known_interaction_is_found_and_ranked_first() -> None:
    """logit = beta . d + gamma * d_a * d_b: the pair's interaction is gamma for everyone
    (per population too), every other pair's is zero, a's swap effect is beta_a + gamma d_b."""
    rng = np.random.default_rng(2)
    beta, (a, b), gamma = rng.normal(size=T), (1, 5), 0.7

    def score(codes: np.ndarray) -> np.ndarray:
        d = np.where(codes == 3, 0, codes).astype(float)
        return d @ beta + gamma * d[:, a] * d[:, b]

    codes = _codes(rng, 60)
    pops = np.repeat(["YRI", "CEU", "CHB"], 20)
    expl = explain(score, codes, pops, [f"v{i}" for i in range(T)], top=T)
    first = expl.pairs.iloc[0]
    assert (first["index_a"], first["index_b"]) == (a, b) and first["rank"] == 1
    assert first["interaction"] == pytest.approx(gamma)
    assert all(first[f"interaction_{p}"] == pytest.approx(gamma) for p in ("YRI", "CEU", "CHB"))
    assert np.allclose(expl.pairs["interaction"].iloc[1:], 0, atol=1e-12)
    base, effects = swap_effects(score, codes)
    rows = (codes[:, a] < 2) & (codes[:, b] != 3)
    assert np.allclose(effects[rows, a], beta[a] + gamma * codes[rows, b])
    inter = pair_interactions(score, codes, base, effects, [(a, b), (0, 2)])
    both = (codes[:, a] < 2) & (codes[:, b] < 2)
    assert np.allclose(inter[both, 0], gamma) and np.isnan(inter[~both, 0]).all()


def test_attributions_of_a_trained_shape_model_add_up_to_the_logit_change() -> None:
    """A random (non-additive) transformer: the hooks see every genotype path, so each
    person's attributions sum to logit(person) - logit(all hom-ref) up to the Riemann error."""
    rng = np.random.default_rng(3)
    model = _model(5)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(25)  # weights of a trained model's size, so the logit varies
    features = _panel(rng, rng.uniform(0.1, 0.5, size=T))
    codes = _codes(rng, 12)
    ig, gap = integrated_gradients(model, features, codes, steps=64)
    logits = model_scorer(model, features)(codes)
    baseline = model_scorer(model, features)(np.zeros((1, T), dtype=np.int8))[0]
    change = logits - baseline
    assert np.abs(change).max() > 0.1
    assert np.abs(gap).max() < 0.02 * np.abs(change).max()
    assert np.allclose(ig.sum(1), change, atol=0.02 * np.abs(change).max())


def test_patient_reasons_name_the_variants_that_moved_each_score_most() -> None:
    rng = np.random.default_rng(4)
    w = rng.normal(size=T)
    af = rng.uniform(0.1, 0.6, size=T)
    model, features = _additive_only(w), _panel(rng, af)
    codes = _codes(rng, 10)
    names = [f"chr1:{i}:A:G" for i in range(T)]
    table = patient_reasons(model, features, codes, names, k=2, steps=4)
    sd = np.sqrt(2 * af * (1 - af))
    moved = w * np.where(codes == 3, 2 * af, codes) / sd  # from the all-hom-ref genotype
    for person in range(len(codes)):
        best = np.argsort(-np.abs(moved[person]), kind="stable")[:2]
        assert [table.at[person, "reason_1"], table.at[person, "reason_2"]] == [
            names[i] for i in best]
        assert table.at[person, "logit_1"] == pytest.approx(moved[person, best[0]], abs=1e-5)
        g = codes[person, best[0]]
        assert table.at[person, "genotype_1"] == ("." if g == 3 else str(g))


# --------------------------------------------------------------------------- the command


def _explain_argv(cohort: Path, ckpt: Path, out: Path, labels: Path | None = None) -> list[str]:
    return ["model", "explain", "--model", str(ckpt), "--reference",
            str(cohort / PUBLIC_VCF), "--populations", str(labels or cohort / PUBLIC_LABELS),
            "--panel", str(cohort / "panel.tsv"), "--fasta", str(cohort / "reference.fa"),
            "--out", str(out), "--per-population", "20", "--top", "6", "--ig-steps", "4"]


def test_model_explain_on_the_public_reference_recovers_the_set_effects(
    tiny_cohort: Path, tmp_path: Path, capsys
) -> None:
    panel = read_panel(tiny_cohort / "panel.tsv")
    w = np.zeros(len(panel))
    w[[3, 17, 30]] = [1.5, -0.8, 0.4]
    ckpt, out = tmp_path / "model.pt", tmp_path / "explained"
    additive_checkpoint(ckpt, tiny_cohort / "panel.tsv", w)
    assert cli.main(_explain_argv(tiny_cohort, ckpt, out)) == 0
    assert "explained" in capsys.readouterr().out
    doc = json.loads((out / EXPLANATION_JSON).read_text())
    p = np.clip(panel.af, 0.01, 0.99)
    per_allele = w / np.sqrt(2 * p * (1 - p))
    effects = np.array([v["effect"] for v in doc["variants"]], dtype=float)
    assert np.allclose(effects, per_allele, atol=1e-5)
    for pop in ("YRI", "CEU", "CHB"):
        assert doc["people"][pop] == 20
        rows = [v["by_population"][pop] for v in doc["variants"]]
        by_pop = np.array([r["effect"] for r in rows], float)  # None: everyone there hom-alt
        swapped = np.array([r["n"] for r in rows]) > 0
        assert np.isnan(by_pop[~swapped]).all()
        assert np.allclose(by_pop[swapped], per_allele[swapped], atol=1e-5)
    top3 = sorted(doc["variants"], key=lambda v: v["rank"])[:3]
    assert {v["index"] for v in top3} == {3, 17, 30}
    assert len(doc["pairs"]) == 15 and all(abs(q["interaction"]) < 1e-5 for q in doc["pairs"])
    assert doc["ig_max_gap"] < 1e-4
    # Provenance: the files an auditor needs to reproduce it, by hash.
    assert doc["checkpoint"]["sha256"] == sha256_file(ckpt)
    assert doc["checkpoint"]["weights_sha256"] == weights_sha256(load_checkpoint(ckpt).weights())
    assert doc["checkpoint"]["round"] == 3
    assert doc["reference"]["genotypes"]["sha256"] == sha256_file(tiny_cohort / PUBLIC_VCF)
    assert doc["reference"]["labels"]["sha256"] == sha256_file(tiny_cohort / PUBLIC_LABELS)
    assert doc["reference"]["panel_sha256"] == panel.sha256
    variants = pd.read_csv(out / VARIANTS_TSV, sep="\t")
    assert len(variants) == len(panel) and variants["variant"].iloc[0] == (
        f"{panel.chrom[0]}:{panel.pos[0]}:{panel.ref[0]}:{panel.alt[0]}")
    assert len(pd.read_csv(out / PAIRS_TSV, sep="\t")) == 15


def test_model_explain_refuses_a_table_without_the_population_column(
    tiny_cohort: Path, tmp_path: Path, capsys
) -> None:
    panel_path = tiny_cohort / "panel.tsv"
    ckpt, out = tmp_path / "model.pt", tmp_path / "explained"
    additive_checkpoint(ckpt, panel_path, np.ones(len(read_panel(panel_path))))
    labels = tmp_path / "labels.tsv"
    labels.write_text("sample\tsuper_pop\nPUB00000\tAFR\n")
    assert cli.main(_explain_argv(tiny_cohort, ckpt, out, labels)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"genofed: error: {labels}: population table lacks column 'pop'"]
    assert not out.exists()
