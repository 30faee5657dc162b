"""The benchmark sections behind issue 7's figures: their arithmetic, their JSON, the README.

The full-size numbers come from `make bench`; here every section runs at quick sizes through the
real runner (real Flower simulation, real Opacus, real attack) and its JSON is checked for the
keys the README and the goals are read from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deploy.bench import calibration as risk
from deploy.bench import readme as readme_table
from deploy.bench.federation import (
    busy_s,
    median_round,
    phase_s,
    round_costs,
    steady_round_s,
)
from deploy.bench.utility import (
    SITE_PLAIN,
    People,
    add_intervals,
    attainable,
    auroc_by_population,
    best_candidate,
    calibration_goal,
    linear_prs,
    load_cohort,
    margin_intervals,
    mean_auroc,
    method_table,
    targets,
    train_plain,
    true_pair_products,
)
from deploy.simulate import POPULATIONS, SimulationConfig, simulate_cohort
from shared.model import RiskTransformer
from shared.runconfig import RunSettings
from shared.tokenizer import GT_MISSING
from tests import test_model

ROOT = Path(__file__).resolve().parents[1]


def _table(fed: list[float], cen: list[float], lin: list[float], oracle: float = 0.9) -> dict:
    def method(aurocs: list[float]) -> dict:
        return {p: {"auroc": a, "attainable": attainable(a, oracle)}
                for p, a in zip(POPULATIONS, aurocs, strict=True)}

    return {"federated_dp": method(fed), "centralized": method(cen), "linear_prs": method(lin)}


def test_attainable_signal_is_relative_to_the_oracle() -> None:
    assert attainable(0.9, 0.9) == pytest.approx(1.0)
    assert attainable(0.5, 0.9) == pytest.approx(0.0)
    assert attainable(0.7, 0.9) == pytest.approx(0.5)
    assert attainable(0.7, 0.5) is None  # no signal to attain
    assert attainable(None, 0.9) is None


def test_federated_runs_average_per_population_over_the_runs_that_scored_it() -> None:
    runs = [{"CEU": 0.70, "CHB": 0.80, "YRI": None}, {"CEU": 0.80, "CHB": 0.60, "YRI": None},
            {"CEU": 0.90, "CHB": None, "YRI": None}]
    mean = mean_auroc(runs)
    assert mean["CEU"] == pytest.approx(0.80) and mean["CHB"] == pytest.approx(0.70)
    assert mean["YRI"] is None


def test_utility_targets_report_margins_both_ways() -> None:
    met = targets(_table(fed=[0.85, 0.84, 0.83], cen=[0.86, 0.86, 0.85],
                         lin=[0.80, 0.80, 0.80]))
    assert met["federated_vs_centralized"]["met"] is True
    assert met["worst_vs_best_population"]["met"] is True
    # 0.83 -> attainable 0.825; best 0.875 -> need 0.7: margin 0.125
    assert met["worst_vs_best_population"]["margin"] == pytest.approx(0.825 - 0.8 * 0.875)
    # Within 0.02 of the better pooled model (here the transformer) in every population.
    assert met["federated_vs_pooled"]["by_population"][POPULATIONS[0]]["margin"] == (
        pytest.approx(0.85 - 0.86 + 0.02))
    assert met["federated_vs_pooled"]["by_population"][POPULATIONS[0]]["pooled_auroc"] == 0.86
    assert "federated_vs_best_site" not in met  # no site-alone baseline measured

    missed = targets(_table(fed=[0.85, 0.84, 0.60], cen=[0.86, 0.86, 0.85],
                            lin=[0.80, 0.80, 0.80]))
    assert missed["federated_vs_centralized"]["met"] is False
    need = 0.9 * attainable(0.85, 0.9)
    assert missed["federated_vs_centralized"]["margin"] == pytest.approx(
        attainable(0.60, 0.9) - need)
    assert missed["federated_vs_pooled"]["margin"] == pytest.approx(0.60 - 0.85 + 0.02)
    assert missed["federated_vs_pooled"]["met"] is False
    assert missed["worst_vs_best_population"]["worst_population"] == POPULATIONS[2]
    assert missed["worst_vs_best_population"]["met"] is False


def test_the_best_single_site_and_the_gwas_scores_are_what_joining_must_beat() -> None:
    """Per population the best of every site's own non-private models, + 0.02; the better of the
    single- and multi-ancestry meta-analysed GWAS scores."""
    def method(aurocs: list[float]) -> dict:
        return {p: {"auroc": a, "attainable": attainable(a, 0.9)}
                for p, a in zip(POPULATIONS, aurocs, strict=True)}

    table = _table(fed=[0.80, 0.80, 0.80], cen=[0.81, 0.81, 0.81], lin=[0.80, 0.80, 0.80])
    table["site_plain:site-1:linear"] = method([0.70, 0.79, 0.60])
    table["site_plain:site-2:transformer"] = method([0.77, 0.60, 0.60])
    table["meta_gwas"] = method([0.75, 0.75, 0.81])
    table["meta_gwas_multi"] = method([0.78, 0.70, 0.70])
    goals = targets(table)
    best = best_candidate(table, SITE_PLAIN)
    assert best[POPULATIONS[0]] == {**table["site_plain:site-2:transformer"][POPULATIONS[0]],
                                    "site": "site-2", "model": "transformer"}
    rows = goals["federated_vs_best_site"]["by_population"]
    assert rows[POPULATIONS[0]]["margin"] == pytest.approx(0.80 - 0.77 - 0.02)
    assert rows[POPULATIONS[1]]["margin"] == pytest.approx(0.80 - 0.79 - 0.02)
    assert goals["federated_vs_best_site"]["met"] is False
    gwas = goals["federated_vs_meta_gwas"]["by_population"]
    assert gwas[POPULATIONS[0]]["meta_gwas_auroc"] == 0.78  # the multi-ancestry score
    assert gwas[POPULATIONS[2]]["margin"] == pytest.approx(0.80 - 0.81)
    assert goals["federated_vs_meta_gwas"]["met"] is False
    rows = {g["name"]: g for g in readme_table.targets({"utility": {"targets": goals}})}
    assert f"{POPULATIONS[0]} 0.800 vs 0.780" in rows["federated_vs_meta_gwas"]["measured"]


def test_the_calibration_goal_needs_every_population_and_run_within_bounds() -> None:
    good = {p: {"slope": 1.05, "intercept": 0.02} for p in POPULATIONS}
    assert calibration_goal([good, good])["met"] is True
    assert calibration_goal([good])["margin"] == pytest.approx(0.08)
    off = {**good, POPULATIONS[1]: {"slope": 1.4, "intercept": 0.0}}
    found = calibration_goal([good, off])
    assert found["met"] is False and found["margin"] == pytest.approx(1.25 - 1.4)
    unknown = {**good, POPULATIONS[2]: {"slope": None, "intercept": None}}
    assert calibration_goal([unknown])["met"] is False


def test_calibration_intervals_say_how_precisely_the_held_out_people_measure_it() -> None:
    """A calibrated score measured on 500 people: its intervals hold slope 1 and intercept 0,
    and a miss whose intervals reach into the bounds is flagged as within measurement error,
    while one whose intervals do not is not."""
    rng = np.random.default_rng(3)
    logit = rng.normal(-1.2, 1.1, 500)
    y = (rng.random(500) < 1 / (1 + np.exp(-logit))).astype(float)
    got = risk.intervals(y, logit, resamples=200, seed=0)
    lo, hi = got["slope_interval"]
    assert lo < 1 < hi and hi - lo < 1.0
    lo, hi = got["intercept_interval"]
    assert lo < 0 < hi and 0.1 < hi - lo < 0.8
    row = {"slope": 1.0, "intercept": 0.15, "slope_interval": [0.8, 1.2],
           "intercept_interval": [-0.05, 0.35]}
    near = calibration_goal([{p: row for p in POPULATIONS}])
    assert near["met"] is False and near["within_measurement_error"] is True
    far = {**row, "intercept": 0.9, "intercept_interval": [0.7, 1.1]}
    assert calibration_goal([{p: far for p in POPULATIONS}])["within_measurement_error"] is False
    assert calibration_goal([{p: {"slope": 1.0, "intercept": 0.0} for p in POPULATIONS}]
                            )["within_measurement_error"] is None
    table = "\n".join(readme_table._calibration_table(
        {"federated_dp_raw": [{p: row for p in POPULATIONS}],
         "federated_dp_recalibrated": [{p: row for p in POPULATIONS}]}))
    assert "0.15 (-0.05 to 0.35)" in table


def _held_out(n_per_pop: int = 400, seed: int = 0) -> tuple[People, np.ndarray]:
    """Held-out people of the three populations (about a quarter cases) and a latent risk."""
    rng = np.random.default_rng(seed)
    n = 3 * n_per_pop
    risk = rng.normal(size=n)
    labels = (risk + rng.normal(size=n) > 0.9).astype(np.int64)
    people = People(np.zeros((n, 1), np.int8), labels, np.repeat(np.array(POPULATIONS), n_per_pop),
                    np.arange(n).astype(str), np.full(n, "site-1"))
    return people, risk


def _scores(people: People, risk: np.ndarray, noise: dict[str, float], seed: int = 1) -> dict:
    rng = np.random.default_rng(seed)
    return {m: [risk + s * rng.normal(size=len(risk)) for _ in range(2 if m in
                ("federated_dp", "centralized") else 1)] for m, s in noise.items()}


def _point(scores: dict, people: People) -> dict:
    oracle = mean_auroc([auroc_by_population(s, people) for s in scores["oracle"]])
    return targets({m: method_table(mean_auroc([auroc_by_population(s, people) for s in runs]),
                                    oracle) for m, runs in scores.items()})


def test_margin_intervals_cover_each_margin_and_resolve_a_clear_win() -> None:
    """The federated model far better than the linear score: every population's margin interval
    lies above 0 and around its margin; a far worse one: below."""
    people, risk = _held_out()
    scores = _scores(people, risk, {"oracle": 0.0, "federated_dp": 0.3, "centralized": 0.3,
                                    "linear_prs": 0.3, "meta_gwas": 2.0})
    point = _point(scores, people)
    found = margin_intervals(scores, people, resamples=120, seed=0)
    beats = found["federated_vs_meta_gwas"]
    lo, hi = beats["interval"]
    assert 0 < lo <= point["federated_vs_meta_gwas"]["margin"] <= hi
    for pop in POPULATIONS:
        lo, hi = beats["by_population"][pop]
        assert 0 < lo <= point["federated_vs_meta_gwas"]["by_population"][pop]["margin"] <= hi
    for goal in ("federated_vs_centralized", "worst_vs_best_population"):
        lo, hi = found[goal]["interval"]
        assert lo <= point[goal]["margin"] <= hi and lo < hi, goal
    worse = _scores(people, risk, {"oracle": 0.0, "federated_dp": 2.0, "centralized": 0.3,
                                   "linear_prs": 0.3, "meta_gwas": 0.3})
    assert margin_intervals(worse, people, 120, 0)["federated_vs_meta_gwas"][
        "interval"][1] < 0


def test_margin_intervals_are_paired_across_methods() -> None:
    """The same resampled people score every method: a federated model whose scores are the
    GWAS score's has a margin of exactly 0 in every resample, where resampling the methods
    apart would give an interval some hundredths wide."""
    people, risk = _held_out()
    scores = _scores(people, risk, {"oracle": 0.0, "centralized": 0.5, "linear_prs": 1.0,
                                    "meta_gwas": 1.0})
    scores["federated_dp"] = [scores["meta_gwas"][0]] * 2
    found = margin_intervals(scores, people, resamples=50, seed=0)
    assert found["federated_vs_meta_gwas"]["interval"] == [0.0, 0.0]
    for pop in POPULATIONS:
        assert found["federated_vs_meta_gwas"]["by_population"][pop] == [0.0, 0.0]


def test_a_resample_without_cases_is_left_out_not_the_whole_interval() -> None:
    """YRI with 2 cases: about 13% of resamples draw none and cannot score it; the interval comes
    from the others instead of turning into nothing."""
    people, risk = _held_out(n_per_pop=60)
    yri = np.flatnonzero(people.ancestry == "YRI")
    people.labels[yri] = 0
    people.labels[yri[:2]] = 1
    scores = _scores(people, risk, {"oracle": 0.0, "federated_dp": 0.3, "centralized": 0.3,
                                    "linear_prs": 0.3, "meta_gwas": 2.0})
    found = margin_intervals(scores, people, resamples=100, seed=0)
    lo, hi = found["federated_vs_meta_gwas"]["by_population"]["YRI"]
    margin = _point(scores, people)["federated_vs_meta_gwas"]["by_population"]["YRI"]["margin"]
    assert lo <= margin <= hi and lo < hi


def test_margin_intervals_land_in_the_json_and_the_goal_rows() -> None:
    people, risk = _held_out(seed=2)
    scores = _scores(people, risk, {"oracle": 0.0, "federated_dp": 1.0, "centralized": 0.5,
                                    "linear_prs": 0.9, "meta_gwas": 0.9})
    goals = _point(scores, people)
    add_intervals(goals, margin_intervals(scores, people, 60, 0), 60)
    assert "percentile bootstrap" in goals["interval_method"]
    rows = {g["name"]: g for g in readme_table.targets({"utility": {"targets": goals}})}
    beats = goals["federated_vs_meta_gwas"]
    assert rows["federated_vs_meta_gwas"]["interval"] == tuple(beats["margin_interval"])
    lo, hi = beats["by_population"]["CHB"]["margin_interval"]
    assert f"(margin {lo:+.3f} to {hi:+.3f})" in rows["federated_vs_meta_gwas"]["measured"]
    section = readme_table.render({"utility": {"targets": goals}})
    g_lo, g_hi = beats["margin_interval"]
    assert f"{beats['margin']:+.3f} [{g_lo:+.3f}, {g_hi:+.3f}]" in section
    assert "Margins in brackets: 95% percentile bootstrap" in section


def test_interaction_reference_reads_the_true_pairs_and_measures_what_they_are_worth(
    tmp_path: Path,
) -> None:
    """The products sit at cohort.json's pairs; on a trait that is mostly those pairs, the linear
    score given them beats the linear score without them by a wide margin."""
    cohort = tmp_path / "cohort"
    meta = simulate_cohort(cohort, SimulationConfig(
        seed=11, sites=2, people_per_population=300, sequence_length=300_000, panel_size=32,
        n_causal=6, n_interactions=2, interaction_share=0.9, prevalence=0.3,
    ))
    data = load_cohort(cohort, RunSettings.from_run_config({}))
    train, test = true_pair_products(cohort, data)
    panel = pd.read_csv(cohort / "panel.tsv", sep="\t")
    for k, (a, b) in enumerate(meta["interaction_pairs"]):
        ia, ib = (int(np.flatnonzero(panel["pos"] == bp)[0]) for bp in (a, b))
        dose = {split: np.where(people.genotypes[:, [ia, ib]] == GT_MISSING, np.nan,
                                people.genotypes[:, [ia, ib]]).astype(float)
                for split, people in (("train", data.train), ("test", data.test))}
        mean = np.nanmean(dose["train"], axis=0)  # held-out people are centred like training
        for split, got in (("train", train), ("test", test)):
            centred = dose[split] - mean
            called = ~np.isnan(centred).any(axis=1)
            assert np.allclose(got[called, k], (centred[:, 0] * centred[:, 1])[called]), split
            assert np.isnan(got[~called, k]).all(), split

    plain, _ = linear_prs(data, 0)
    given, _ = linear_prs(data, 0, (train, test))
    gain = [auroc_by_population(given, data.test)[p] - auroc_by_population(plain, data.test)[p]
            for p in POPULATIONS]
    assert min(gain) > 0.05, gain


def test_the_centralized_reference_decays_its_learning_rate_to_zero() -> None:
    """With `cosine` the rate Adam actually stepped with falls every epoch, to near zero at the
    last step; without it, it stays put. Both fit the training people."""
    genotypes = np.random.default_rng(0).integers(0, 3, (96, test_model.T)).astype(np.int8)
    labels = (genotypes[:, :3].sum(axis=1) > 3).astype(np.int64)
    for cosine in (True, False):
        model = RiskTransformer(test_model.cfg(dim=16, layers=1, heads=2))
        losses, rates = train_plain(model, genotypes, labels, test_model.panel(), epochs=8,
                                    batch_size=16, learning_rate=0.01, seed=0, cosine=cosine)
        assert len(losses) == len(rates) == 8 and losses[-1] < 0.8 * losses[0], losses
        if cosine:
            assert np.all(np.diff(rates) < 0) and rates[-1] < 1e-3, rates
        else:
            assert rates == [0.01] * 8


def test_readme_says_where_the_true_pairs_could_not_close_the_gap() -> None:
    """Computed from the JSON: pairs worth less than the federated gap to the linear score."""
    def rows(values: list[float]) -> dict:
        return {p: {"auroc": v} for p, v in zip(POPULATIONS, values, strict=True)}

    util = {"federated_dp": rows([0.70, 0.75, 0.80]), "linear_prs": rows([0.75, 0.76, 0.78]),
            "interaction_reference": rows([0.77, 0.80, 0.79]),
            "interaction_reference_fit": {"pairs": 4}}
    section = readme_table.render({"utility": util})
    # CEU: pairs +0.02 < gap 0.05; CHB: +0.04 > 0.01; YRI: the federated model is ahead.
    assert f"In {POPULATIONS[0]} the pairs are worth less" in section
    util["interaction_reference"] = rows([0.85, 0.80, 0.79])
    assert "worth less than the federated" not in readme_table.render({"utility": util})


def test_readme_lists_each_training_behind_an_averaged_row() -> None:
    shown = readme_table.POPULATIONS  # the README's column order

    def runs(values: list[list[float]]) -> list[dict]:
        return [{"seed": 10 + i, "auroc": dict(zip(shown, v, strict=True))}
                for i, v in enumerate(values)]

    util = {"federated_dp_runs": runs([[0.70, 0.71, 0.72], [0.74, 0.75, 0.76]]),
            "centralized_runs": runs([[0.80, 0.81, 0.82], [0.78, 0.79, 0.83]])}
    section = readme_table.render({"utility": util})
    a, b, c = shown
    assert (f"The federated DP row is the mean of 2 trainings (seeds 10, 11), which scored "
            f"{a} 0.700 / 0.740; {b} 0.710 / 0.750; {c} 0.720 / 0.760.") in section
    assert (f"The centralized row is the mean of 2 trainings (seeds 10, 11), which scored "
            f"{a} 0.800 / 0.780; {b} 0.810 / 0.790; {c} 0.820 / 0.830.") in section
    del util["centralized_runs"]
    assert "centralized row" not in readme_table.render({"utility": util})


def test_steady_round_time_comes_from_checkpoint_times(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    for r, t in ((1, 100.0), (2, 103.0), (3, 107.0)):
        path = ckpt / f"round-{r:03d}.pt"
        path.write_bytes(b"x")
        os.utime(path, ns=(int(t * 1e9), int(t * 1e9)))
    assert steady_round_s(tmp_path, 2) == pytest.approx([3.0])
    assert steady_round_s(tmp_path, 3) == pytest.approx([3.0, 4.0])


def test_each_steady_round_is_split_and_the_median_round_is_reported() -> None:
    """Round r's sites' work is their evaluation of round r-1 (kept under r-1) plus their
    training in round r, timed by when each ended; the reported round is the one with the
    median overhead share."""
    def rec(r: int, train: dict, evaluate: dict) -> dict:
        # {site: (seconds, ended at)}
        return {"round": r, "train_s": {k: v[0] for k, v in train.items()},
                "train_ended_at": {k: v[1] for k, v in train.items()},
                "evaluate_s": {k: v[0] for k, v in evaluate.items()},
                "evaluate_ended_at": {k: v[1] for k, v in evaluate.items()}}

    # Checkpoints at 10, 13, 15, 19: rounds 2, 3, 4 run 10-13, 13-15, 15-19.
    records = [
        rec(1, {"a": (9.0, 9.5), "b": (9.0, 9.6)}, {"a": (0.2, 10.4), "b": (0.2, 10.5)}),
        # round 2: a evaluates 10.2-10.4, trains 10.4-12.4; b 10.3-10.5, then 11.2-12.2 after a
        # wait: busy 10.2-12.4 = 2.2 s of 3 s, as is the bound (a's 2.2 s).
        rec(2, {"a": (2.0, 12.4), "b": (1.0, 12.2)}, {"a": (0.1, 13.2), "b": (0.1, 13.3)}),
        # round 3: a 13.1-13.2 then 13.2-14.5, b 13.2-13.3 then 13.3-14.0: busy 1.4 s of 2 s.
        rec(3, {"a": (1.3, 14.5), "b": (0.7, 14.0)}, {"a": (0.5, 15.5), "b": (0.5, 16.0)}),
        # round 4: evaluations 15.0-15.5, 15.5-16.0; trainings 16.0-17.0 and 17.0-18.0, one
        # after the other (one worker idle): busy 15.0-18.0 = 3 s, the bound only 1.5 s.
        rec(4, {"a": (1.0, 17.0), "b": (1.0, 18.0)}, {"a": (7.0, 30.0), "b": (7.0, 30.0)}),
    ]
    costs = round_costs([10.0, 13.0, 15.0, 19.0], records, workers=2)
    assert [c["round"] for c in costs] == [2, 3, 4]
    assert [c["round_s"] for c in costs] == pytest.approx([3.0, 2.0, 4.0])
    assert [c["local_s"] for c in costs] == pytest.approx([2.2, 1.4, 3.0])
    assert [c["local_bound_s"] for c in costs] == pytest.approx([2.2, 1.4, 1.5])
    assert [c["overhead_fraction"] for c in costs] == pytest.approx([0.8 / 3, 0.6 / 2, 1.0 / 4])
    assert costs[2]["sites_evaluate_sum_s"] == pytest.approx(1.0)  # not round 4's own scoring
    reported = median_round(costs)
    assert reported["round"] == 2 and reported["overhead_s"] == pytest.approx(0.8)
    assert median_round(costs[1:])["round"] == 4  # even count: the lower middle
    with pytest.raises(RuntimeError, match="not the same sites"):
        round_costs([10.0, 13.0], [records[0], {**records[1], "train_s": {"a": 2.0}}], workers=2)
    with pytest.raises(RuntimeError, match="not when their work ended"):
        round_costs([10.0, 13.0], [records[0], {**records[1], "train_ended_at": {}}], workers=2)
    with pytest.raises(RuntimeError, match="no record of round 2"):
        round_costs([10.0, 13.0], records[:1], workers=2)


def test_busy_time_is_the_union_of_the_intervals_within_the_window() -> None:
    assert busy_s([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0)], (0.0, 10.0)) == pytest.approx(4.0)
    assert busy_s([(-5.0, 1.0), (9.0, 12.0)], (0.0, 10.0)) == pytest.approx(2.0)  # clipped
    assert busy_s([(0.0, 4.0), (1.0, 2.0)], (0.0, 10.0)) == pytest.approx(4.0)  # nested
    assert busy_s([(11.0, 12.0)], (0.0, 10.0)) == 0.0


def test_a_phase_lasts_at_least_its_slowest_site_and_its_share_per_worker() -> None:
    """The federation section's 'sites' own work' per phase of a round, from the sites' seconds."""
    assert phase_s([3.0, 1.0, 1.0, 1.0], workers=2) == pytest.approx(3.0)  # the slowest site
    assert phase_s([1.0, 1.0, 1.0, 1.0], workers=2) == pytest.approx(2.0)  # two at a time
    assert phase_s([1.5, 0.5], workers=4) == pytest.approx(1.5)  # fewer sites than workers
    with pytest.raises(RuntimeError, match="no site reported"):
        phase_s([], workers=2)


def _doc() -> dict:
    return {
        "meta": {"date": "2026-11-28", "cpus_usable": 2, "processor": "x86_64"},
        "utility": {"targets": targets(_table([0.85, 0.84, 0.60], [0.86, 0.86, 0.85],
                                              [0.80, 0.80, 0.80])),
                    **_table([0.85, 0.84, 0.60], [0.86, 0.86, 0.85], [0.80, 0.80, 0.80]),
                    "wall_s": 600.0},
        "dp_cost": {"time_ratio": 1.12, "memory_ratio": 1.45, "modes": {}, "wall_s": 100.0},
        "federation": {"sites": {"10": {"round_s": 4.0, "local_s": 3.8, "overhead_s": 0.2,
                                        "overhead_fraction": 0.05},
                                 "100": {"error": "RuntimeError: out of memory"}},
                       "wall_s": 1200.0},
        "membership_attack": {"dp_auroc": 0.51, "nondp_auroc": 0.74, "wall_s": 50.0},
    }


def test_the_federation_table_says_it_shows_the_median_of_several_rounds() -> None:
    doc = _doc()
    assert "steady rounds" not in readme_table.render(doc)  # one round each: nothing to say
    doc["federation"]["sites"]["10"]["per_round"] = [
        {"overhead_fraction": f} for f in (0.062, 0.05, 0.102)]
    text = readme_table.render({**doc, "federation": {**doc["federation"], "workers": 2}})
    assert "2 sites at a time; the median of 3 steady rounds)" in text
    assert "| 10 | 4.00 s | 3.80 s | 5.0% (rounds 5.0-10.2%) |" in text


def test_the_dp_cost_rows_show_the_middle_half_of_the_pairs() -> None:
    doc = _doc()
    assert "(pairs" not in readme_table.render(doc)  # measured before pairing: nothing to add
    doc["dp_cost"].update(timed_pairs=40, time_ratio_iqr=[1.05, 1.2], modes={"hooks": {
        "time_ratio": 1.12, "time_ratio_iqr": [1.05, 1.2], "memory_ratio": 1.45,
        "samples_per_s": 250.0}})
    text = readme_table.render(doc)
    assert "| hooks | 1.12x (pairs 1.05-1.20x) | 1.45x | 250 |" in text
    assert "| 1.12x (pairs 1.05-1.20x) | +0.180 | yes |" in text
    assert "the median of 40 steps alternating with plain ones" in text


def test_the_dp_cost_goal_holds_only_at_every_batch_measured() -> None:
    """A larger batch (what a capped site trains on) gets its own row, and its ratio counts
    against the goal: fine at 64 but 1.4x at 256 is a miss, by the larger ratio."""
    doc = _doc()
    doc["dp_cost"].update(batch_size=64, memory_ratio=1.2, at_batch={"256": {
        "time_ratio": 1.1, "time_ratio_iqr": [1.0, 1.2], "memory_ratio": 1.4,
        "samples_per_s": 90.0}})
    text = readme_table.render(doc)
    assert "| hooks, batch 256 | 1.10x (pairs 1.00-1.20x) | 1.40x | 90 |" in text
    assert "| 1.20x at batch 64; 1.40x at batch 256 | -0.100 | **no** |" in text
    assert "| 1.12x at batch 64; 1.10x at batch 256 | +0.180 | yes |" in text
    doc["dp_cost"]["at_batch"]["256"]["memory_ratio"] = 1.25
    assert "| 1.20x at batch 64; 1.25x at batch 256 | +0.050 | yes |" in readme_table.render(doc)
    doc["dp_cost"]["at_batch"]["256"] = {"error": "MemoryError"}  # unmeasured is not met
    assert "| 1.20x at batch 64; fails at batch 256 |  | **no** |" in readme_table.render(doc)


def test_a_secagg_ratio_under_one_is_called_noise() -> None:
    doc = _doc()
    for plain, secure, noted in ((4.0, 4.4, False), (4.7, 4.15, True)):
        doc["federation"]["secagg_overhead"] = {"plain_round_s": plain, "secagg_round_s": secure,
                                                "ratio": secure / plain}
        text = readme_table.render(doc)
        assert f"SecAgg+: {secure:.2f} s per round vs {plain:.2f} s plain" in text
        assert (readme_table.SECAGG_UNDER_ONE in text) is noted


def test_missed_goals_point_to_the_lab_notebook_under_the_table() -> None:
    doc = _doc()
    text = readme_table.render(doc)
    table_end = text.index("What was tried for the missed goals")
    goals = {g["name"]: g for g in readme_table.targets(doc)}
    missed = goals["federated_vs_centralized"]
    assert not missed["met"] and missed["remedy"] in text[:table_end]  # short answer in table
    assert "](NOTEBOOK.md)" in text[table_end:text.index("## Disease-risk")]
    assert (ROOT / readme_table.NOTEBOOK).is_file()
    # A met goal's remedy stays out.
    assert goals["coordinator_overhead_10_sites"]["met"]
    assert readme_table.REMEDIES["coordinator_overhead_10_sites"] not in text


def test_goals_are_judged_from_the_json() -> None:
    goals = {g["name"]: g for g in readme_table.targets(_doc())}
    assert goals["dp_step_time"]["met"] and goals["dp_step_time"]["margin"] == pytest.approx(0.18)
    assert not goals["dp_step_memory"]["met"]
    assert goals["dp_step_memory"]["margin"] == pytest.approx(-0.15)
    assert goals["dp_step_memory"]["remedy"]  # a missed goal says what would close it
    assert goals["coordinator_overhead_10_sites"]["met"]
    assert goals["coordinator_overhead_10_sites"]["measured"] == "5.0% (0.20 s) of 4.00 s"
    assert not goals["sites_100_run"]["met"]
    assert "out of memory" in goals["sites_100_run"]["measured"]
    assert "membership_attack_dp" not in goals  # issue 31: the privacy audit replaces it
    assert goals["federated_vs_centralized"]["met"] is False
    assert goals["bench_under_60_min"]["measured"] == "32.5 min"


def test_attack_interval_is_delong_on_raw_scores_and_covers_its_spread() -> None:
    """The membership attack's 95% interval is centred on sklearn's AUROC (ties count 1/2) and
    its width matches how much the AUROC of 200 vs 200 people really moves between draws."""
    from sklearn.metrics import roc_auc_score

    from deploy.bench.membership_attack import delong_ci

    rng = np.random.default_rng(7)
    truth = np.r_[np.ones(200), np.zeros(200)]
    aurocs, halves = [], []
    for draw in range(300):
        score = rng.normal(truth * 0.35, 1.0)
        if draw % 2:
            score = np.round(score, 1)  # heavy ties
        lo, hi = delong_ci(truth, score)
        auc = roc_auc_score(truth, score)
        assert (lo + hi) / 2 == pytest.approx(auc, abs=1e-12)
        aurocs.append(auc)
        halves.append((hi - lo) / 2)
    # AUROC ~0.6: the interval's half-width / 1.96 is the standard error DeLong estimates.
    assert np.std(aurocs) == pytest.approx(np.mean(halves) / 1.96, rel=0.15)
    assert 0.02 < np.std(aurocs) < 0.04


def test_the_attack_table_says_how_uncertain_each_attack_is() -> None:
    doc = _doc()
    doc["membership_attack"]["dp_runs"] = [
        {"auroc": 0.55, "auroc_ci": [0.49, 0.61]}, {"auroc": 0.53, "auroc_ci": [0.48, 0.58]},
    ]
    assert "0.550 [0.49, 0.61] / 0.530 [0.48, 0.58]" in readme_table.render(doc)
    del doc["membership_attack"]["dp_runs"][0]["auroc_ci"]  # older JSON: no interval, no claim
    assert "0.550 / 0.530 [0.48, 0.58]" in readme_table.render(doc)


def test_readme_section_is_replaced_and_checked(tmp_path: Path) -> None:
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps(_doc()))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{readme_table.CONFIG_START}\nold\n{readme_table.CONFIG_END}\n"
                      f"\n{readme_table.START}\nold\n{readme_table.END}\n\ntail\n")
    assert readme_table.main([str(bench), str(readme), "--check"]) == 1
    assert readme_table.main([str(bench), str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith("# x\n\n") and text.endswith("\n\ntail\n") and "\nold\n" not in text
    assert "| coordinator overhead ≤ 10% of a round at 10 sites |" in text  # the goals
    assert "| `target-epsilon` | `8` | the run's ε;" in text  # the key table, from RunSettings
    report = (tmp_path / readme_table.REPORT).read_text()  # every table, beside the JSON
    assert "| 10 | 4.00 s | 3.80 s | 5.0% |" in report and "| 10 | 4.00 s" not in text
    assert readme_table.main([str(bench), str(readme), "--check"]) == 0
    (tmp_path / readme_table.REPORT).write_text(report + "edited by hand\n")
    assert readme_table.main([str(bench), str(readme), "--check"]) == 1
    readme.write_text("# no markers\n")
    assert readme_table.main([str(bench), str(readme)]) == 2


def test_committed_readme_matches_committed_bench_json() -> None:
    """The README's generated sections and deploy/bench/BENCH.md are exactly what
    deploy/bench/bench.json and shared/runconfig.py render to."""
    committed = ROOT / "deploy" / "bench" / "bench.json"
    doc = json.loads(committed.read_text())
    section = readme_table.render(doc)
    assert readme_table.main([str(committed), str(ROOT / "README.md"), "--check"]) == 0
    assert not doc["meta"].get("quick"), "the committed numbers must be a full `make bench`"
    for key in ("utility", "dp_cost", "federation", "data_path", "membership_attack",
                "privacy_audit"):
        assert key in doc and "error" not in doc[key], key
    # The empirical audit: every bound under its claim, and the audit able to catch the flaw.
    audit = doc["privacy_audit"]
    assert audit["claims_hold"] and audit["positive_control_caught"]
    assert {r["claimed_epsilon"] for r in audit["white_box"]} == {1.0, 2.0}
    assert "Privacy audit" in section and "What the DP noise on evaluations costs" in section
    util = doc["utility"]
    runs = util["federated_dp_runs"]
    assert len(runs) >= 2 and len({r["seed"] for r in runs}) == len(runs)
    for pop in POPULATIONS:  # the reported figure is the mean of the runs
        assert util["federated_dp"][pop]["auroc"] == pytest.approx(
            np.mean([r["auroc"][pop] for r in runs]), abs=1e-9), pop
    # The centralized reference is as many trainings, with the federated runs' seeds, averaged.
    central = util["centralized_runs"]
    assert [r["seed"] for r in central] == [r["seed"] for r in runs]
    for pop in POPULATIONS:
        assert util["centralized"][pop]["auroc"] == pytest.approx(
            np.mean([r["auroc"][pop] for r in central]), abs=1e-9), pop
    assert f"The centralized row is the mean of {len(central)} trainings" in section
    # The coordinator's AUROC from the sites' DP-noised histograms (what auditors see): its
    # noise-aware interval holds the AUROC of its final checkpoint on the pooled held-out people.
    for r in runs:
        assert r["reported"]["status"] == "completed"
        # Every training started on fresh site budgets: one round spends well under the total.
        first = r["reported"]["epsilon_round_1"]
        assert first and max(first.values()) < 0.75 * util["settings"]["target_epsilon"], first
        for pop in POPULATIONS:  # what the coordinator reported, with its interval
            lo, hi = r["reported"]["auroc_ci"][pop]
            assert 0 <= lo <= hi <= 1 and 0 < r["auroc"][pop] < 1, pop
    noise = util["evaluation_noise"]["default"]["by_population"]
    for pop in POPULATIONS:  # the noise's cost per ancestry, measured on the real model
        assert noise[pop]["rmse"] > 0 and 0 <= noise[pop]["coverage"] <= 1, pop
    # ... judged as a goal: whether the coordinator's interval holds the exact AUROC.
    goal = next(g for g in readme_table.targets(doc) if g["name"] == "evaluation_interval_coverage")
    assert goal["met"] == all(noise[p]["coverage"] >= 0.8 for p in POPULATIONS)
    assert goal["met"] or goal["remedy"] in section
    # Every utility goal's margin carries its bootstrap interval over the held-out people. A
    # percentile interval of the smallest of several margins (or of a worst/best ratio) need
    # not hold the point estimate: resampling moves which population is smallest.
    for name in ("federated_vs_centralized", "federated_vs_best_site", "federated_vs_meta_gwas",
                 "federated_vs_pooled", "worst_vs_best_population"):
        goal = util["targets"][name]
        lo, hi = goal["margin_interval"]
        assert lo <= hi and (hi - lo) < 0.5, name
    # The DP step's cost is measured at the larger batch a capped site trains on, too.
    assert [row["memory_ratio"] > 0 for row in doc["dp_cost"]["at_batch"].values()] == [True]
    for n in ("3", "10", "30", "100"):
        assert n in doc["federation"]["sites"], n
        site = doc["federation"]["sites"][n]  # the median of the steady rounds is reported
        fractions = [c["overhead_fraction"] for c in site["per_round"]]
        assert len(fractions) == doc["federation"]["rounds"] - 1 >= 3, n
        assert site["overhead_fraction"] == pytest.approx(float(np.median(fractions))), n
        for c in site["per_round"]:  # at most `workers` sites at once: busy >= the bound
            assert c["local_bound_s"] - 0.01 <= c["local_s"] < c["round_s"], (n, c)
    # The interaction reference is the linear score plus the true pairs' products.
    pairs = util["settings"]["cohort"]["n_interactions"]
    assert util["interaction_reference_fit"]["pairs"] == pairs
    assert f"linear score + the {pairs} true interaction pairs" in section
    # Every membership attack carries its interval over the people.
    for r in [*doc["membership_attack"]["dp_runs"], doc["membership_attack"]["nondp"]]:
        lo, hi = r["auroc_ci"]
        assert lo < r["auroc"] < hi


@pytest.mark.integration
def test_quick_bench_runner_writes_and_renders_a_section(tmp_path: Path) -> None:
    """`python -m deploy.bench --quick --only membership_attack`: the runner writes the section's
    keys with sane values and the README renderer marks the numbers as QUICK.
    (Federated runs are the integration tests' kind, DP cost's workers are timed below
    in-process; every section's full-size output: the committed JSON, checked above.)"""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    proc = subprocess.run(
        [sys.executable, "-m", "deploy.bench", "--out", str(tmp_path), "--quick", "--only",
         "membership_attack"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())

    mia = doc["membership_attack"]
    assert 0.0 <= mia["dp_auroc"] <= 1.0 and 0.0 <= mia["nondp_auroc"] <= 1.0
    runs = mia["dp_runs"]
    assert len(runs) >= 2 and len({r["seed"] for r in runs}) == len(runs)
    assert mia["dp_auroc"] == pytest.approx(np.mean([r["auroc"] for r in runs]))
    assert mia["epsilon"] <= mia["target_epsilon"] + 1e-6
    for r in [*runs, mia["nondp"]]:
        lo, hi = r["auroc_ci"]
        assert lo <= r["auroc"] <= hi and lo < hi

    section = readme_table.render(doc)
    assert "QUICK sizes" in section and "membership attack AUROC" in section


@pytest.mark.parametrize("mode", ["nondp", "hooks"])
def test_dp_cost_worker_measures_real_steps(mode: str) -> None:
    """One configuration's memory worker: real (DP-)SGD steps, positive measurements."""
    from deploy.bench.dp_cost import worker

    result = worker(mode, variants=16, batch=8, warmup=1, steps=2)
    assert 0 < result["rss_before_bytes"] <= result["peak_rss_bytes"]
    assert result["step_memory_bytes"] == result["peak_rss_bytes"] - result["rss_before_bytes"]


def test_the_dp_time_ratio_is_the_median_of_paired_steps() -> None:
    """A slow spell that doubles both steps of a pair leaves the ratio alone; one odd pair does
    not move the median."""
    from deploy.bench.dp_cost import paired_ratio

    steady = paired_ratio([0.2, 0.4, 0.2, 0.4], [0.22, 0.44, 0.22, 0.44])
    assert steady["time_ratio"] == pytest.approx(1.1)
    assert steady["time_ratio_iqr"] == pytest.approx([1.1, 1.1])
    assert steady["step_s"] == pytest.approx(0.33) and steady["pairs"] == 4
    # A spell that slows a single DP step only moves the upper quartile, never the median.
    spell = paired_ratio([0.2, 0.2, 0.2, 0.2, 0.2], [0.22, 0.22, 0.5, 0.22, 0.22])
    assert spell["time_ratio"] == pytest.approx(1.1)
    assert spell["time_ratio_iqr"] == pytest.approx([1.1, 1.1])
    with pytest.raises(ValueError, match="as many"):
        paired_ratio([0.2, 0.2], [0.2])


def test_dp_cost_times_both_steps_in_one_process() -> None:
    """The paired timer alternates real plain and DP-SGD steps (hooks, the sites' mode)."""
    from deploy.bench.dp_cost import paired

    result = paired("hooks", variants=16, batch=8, warmup=1, pairs=4)
    assert result["pairs"] == 4
    lo, hi = result["time_ratio_iqr"]
    assert 0 < lo <= result["time_ratio"] <= hi
    assert result["step_s"] > 0 and result["nondp_step_s"] > 0
    assert result["samples_per_s"] == pytest.approx(8 / result["step_s"])


def test_dp_cost_measures_the_default_mode_at_a_larger_batch(tmp_path: Path) -> None:
    """The larger-batch row runs its own fresh workers at that batch: real ratios, not copies of
    the batch-64 row."""
    from deploy.bench.dp_cost import DEFAULT_MODE, QUICK, _at_batch

    row = _at_batch(24, QUICK, tmp_path)
    assert "error" not in row, row
    assert row["time_ratio"] > 0 and row["memory_ratio"] > 0
    assert row["samples_per_s"] == pytest.approx(24 / row["step_s"])
    assert {p.name for p in tmp_path.iterdir()} == {
        "nondp-b24-0.json", f"{DEFAULT_MODE}-b24-0.json", f"{DEFAULT_MODE}-b24-paired.json"}


def test_dp_cost_worker_memory_is_its_own_not_its_parents(tmp_path: Path) -> None:
    """A worker started by a process holding a lot of memory measures its steps, not the parent.

    `getrusage().ru_maxrss` carried the parent's peak into every worker; the bench process holds
    a whole cohort when this section runs, so it must be measured from a big parent here too.
    """
    from deploy.bench.dp_cost import QUICK, _measure

    ballast = np.ones(1_500_000_000 // 8)  # 1.5 GB resident in this (the parent) process
    result = _measure("nondp", QUICK, tmp_path / "nondp.json")
    assert "error" not in result, result
    assert ballast.sum() > 0
    assert 0 < result["step_memory_bytes"] < result["peak_rss_bytes"] < 1_000_000_000
    assert result["peak_reset"] is True


def test_explain_recovery_scores_the_ranking_against_the_truth() -> None:
    """A known function: causal variants {0, 2, 5} with effects 3, 2, 1 and a pair (2, 6);
    variant 6 alone has no effect. Top-3 by importance are exactly the causal ones (precision
    and recall 1); the true pair is the only interaction (rank 1); a pair outside the top
    variants is reported unscored, not given a rank."""
    from deploy.bench.explain import recovery
    from shared.explain import explain

    rng = np.random.default_rng(0)
    codes = rng.integers(0, 3, size=(90, 8)).astype(np.int8)
    beta = np.array([3.0, 0, 2.0, 0, 0, 1.0, 0, 0])

    def score(x: np.ndarray) -> np.ndarray:
        return x @ beta + 0.5 * (x[:, 2] - 1.0) * (x[:, 6] - 1.0)

    expl = explain(score, codes, np.repeat(["A", "B", "C"], 30), [f"v{i}" for i in range(8)],
                   top=4)
    got = recovery(expl, {0, 2, 5}, [(2, 6), (1, 3)])
    assert got["swap"][0] == {"k": 3, "precision": 1.0, "recall": 1.0}
    assert got["swap"][1]["recall"] == 1.0 and got["swap"][1]["precision"] == 0.5
    assert got["pairs"][0]["rank"] == 1.0 and got["pairs"][0]["interaction"] == pytest.approx(0.5)
    assert got["pairs"][1]["rank"] is None and got["pairs"][1]["scored_pairs"] == 6
    assert got["causal_in_top"] == 3


def _scale_row(step_s: float, memory: float, plain_memory: float | None = None) -> dict:
    plain = memory if plain_memory is None else plain_memory
    return {"step_s": step_s, "nondp_step_s": step_s / 1.1, "step_memory_bytes": memory,
            "plain_step_memory_bytes": plain, "memory_ratio": memory / plain,
            "time_ratio": 1.1, "time_ratio_iqr": [1.05, 1.2], "plain_s_per_sample": 0.01,
            "dp_s_per_sample": 0.011, "plain_memory_per_sample_bytes": plain / 8,
            "dp_memory_per_sample_bytes": memory / 8}


def test_panel_scale_extrapolates_from_smaller_panels_and_skips_what_would_not_fit() -> None:
    """A panel is planned from the two below it (power law, exponent 1 to 2): one that would
    need more memory than allowed, or more time than the budget, is skipped with its reason,
    and so is every larger panel after it; the timed pairs fit the time budget."""
    from deploy.bench.panel_scale import FULL, extrapolate, plan

    assert extrapolate([], 1024) is None
    assert extrapolate([(256, 1.0)], 1024) == pytest.approx(4.0)  # one point: linear
    assert extrapolate([(256, 1.0), (1024, 16.0)], 4096) == pytest.approx(256.0)  # square
    assert extrapolate([(256, 1.0), (1024, 2.0)], 4096) == pytest.approx(8.0)  # at least 1
    assert extrapolate([(256, 1.0), (1024, 1e3)], 4096) == pytest.approx(16e3)  # at most 2
    assert plan([], 256, FULL, memory_cap=1e9) == {"pairs": FULL["pairs"][1],
                                                   "predicted_step_s": None}
    history = [(1024, _scale_row(0.1, 1e8)), (4096, _scale_row(0.4, 4e8))]
    ok = plan(history, 16384, FULL, memory_cap=2e9)
    assert ok["predicted_step_s"] == pytest.approx(1.6)
    assert ok["pairs"] == int(FULL["pair_budget_s"] / 3.2)
    too_big = plan(history, 16384, FULL, memory_cap=1e9)["skipped"]
    assert "about 1.6 GB" in too_big and "4,096 variants" in too_big and "1.0 GB" in too_big
    slow = [(1024, _scale_row(1.0, 1e8)), (4096, _scale_row(16.0, 4e8))]  # quadratic time
    assert "420 s budget" in plan(slow, 16384, FULL, memory_cap=1e12)["skipped"]
    after = plan([*history, (16384, {"skipped": "too big"})], 65536, FULL, 1e12)
    assert after == {"skipped": "the 16,384-variant panel was not measured"}
    assert "not measured" in plan([(1024, {"error": "boom"})], 4096, FULL, 1e12)["skipped"]


def _scale_doc(growth: float = 18.0, memory: float = 1.2) -> dict:
    doc = _doc()
    doc["panel_scale"] = {
        "batch_size": 8, "device": "cpu", "default_mode": "hooks",
        "worst_memory_at": "local, 65,536 variants",
        "rows": {"full": {"1024": _scale_row(0.2, 1e8), "16384": {"skipped": "too slow"}},
                 "local": {"1024": _scale_row(0.1, 1e8),
                           "16384": _scale_row(0.1 * growth, 1.6e9),
                           "65536": _scale_row(7.0, 6.4e9 * memory, 6.4e9)}},
        "growth": {"attention": "local", "from_variants": 1024, "to_variants": 16384,
                   "dp_step_ratio": growth, "dp_step_ratio_iqr": [growth - 1, growth + 1],
                   "plain_step_ratio": growth * 1.1, "pairs": 10, "from_step_s": 0.1,
                   "to_step_s": 0.1 * growth},
        "wall_s": 10.0}
    return doc


def test_panel_scale_goals_are_judged_from_the_json() -> None:
    """Local attention's growth from 1,024 to 16,384 variants against the 20x goal, and DP
    memory against 1.3x at every panel measured: a skipped panel does not count, a failed one
    fails the goal, a missing one is not met."""
    goals = {g["name"]: g for g in readme_table.targets(_scale_doc())}
    grow, memory = goals["panel_scale_local_growth"], goals["panel_scale_dp_memory"]
    assert grow["met"] and grow["margin"] == pytest.approx(2.0)
    assert grow["rule"] == ("local attention's DP-SGD step on 16,384 variants ≤ 20 × on "
                            "1,024 (batch 8)")
    assert grow["measured"].startswith("18.0x (pairs 17.0-19.0x; 0.100 s -> 1.800 s per step")
    assert memory["met"] and memory["margin"] == pytest.approx(0.1)
    assert memory["measured"] == ("worst 1.20x (local, 65,536 variants); skipped: full 16,384")
    goals = {g["name"]: g for g in readme_table.targets(_scale_doc(growth=25.0, memory=1.4))}
    assert not goals["panel_scale_local_growth"]["met"]
    assert goals["panel_scale_local_growth"]["margin"] == pytest.approx(-5.0)
    assert goals["panel_scale_local_growth"]["remedy"]
    assert goals["panel_scale_dp_memory"]["margin"] == pytest.approx(-0.1)
    doc = _scale_doc()
    doc["panel_scale"]["rows"]["local"]["65536"] = {"error": "MemoryError"}
    goals = {g["name"]: g for g in readme_table.targets(doc)}
    assert not goals["panel_scale_dp_memory"]["met"]
    assert "fails at local, 65,536 variants" in goals["panel_scale_dp_memory"]["measured"]
    doc["panel_scale"]["growth"] = {"error": "16,384 variants: skipped"}
    goals = {g["name"]: g for g in readme_table.targets(doc)}
    assert not goals["panel_scale_local_growth"]["met"]
    assert goals["panel_scale_local_growth"]["margin"] is None
    goals = {g["name"]: g for g in readme_table.targets(_doc())}  # never measured: not met
    assert not goals["panel_scale_local_growth"]["met"]
    assert goals["panel_scale_dp_memory"]["measured"] == "not measured"


def test_panel_scale_table_lists_every_panel_in_the_report_not_the_readme() -> None:
    doc = _scale_doc()
    report = readme_table.render(doc)
    assert "| local | 1,024 | 10.00 | 11.00 | 1.10x (pairs 1.05-1.20x) | 12.5 | 12.5 | 1.00x |" \
        in report
    assert "| full | 16,384 | skipped: too slow |" in report
    assert "local attention's DP step takes 18.0x as long, its plain step 19.8x (the median " \
        "of 10 steps of each panel" in report
    assert "load average" not in report  # none recorded, none claimed
    doc["panel_scale"]["rows"]["local"]["1024"]["load_average_1min"] = [1.5, 6.25]
    assert "a 1-minute load average of 1.5 to 6.2" in readme_table.render(doc)
    headline = readme_table.headline(doc)
    assert "| local | 1,024 |" not in headline and "local attention's DP-SGD step" in headline


@pytest.mark.integration
def test_quick_panel_scale_section_measures_every_panel_and_judges_its_goals(
        tmp_path: Path) -> None:
    """`python -m deploy.bench --quick --only panel_scale`: real plain and DP-SGD steps in
    fresh workers for both attentions at the quick panels; every row holds positive figures
    and both scale goals are judged from them."""
    from deploy.bench.panel_scale import QUICK

    proc = subprocess.run(
        [sys.executable, "-m", "deploy.bench", "--out", str(tmp_path), "--quick", "--only",
         "panel_scale"], cwd=ROOT, capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads((tmp_path / "bench.json").read_text())
    scale = doc["panel_scale"]
    assert scale["device"] in ("cpu", "cuda", "cuda:0") and scale["batch_size"] == QUICK["batch"]
    for attention in ("full", "local"):
        assert set(scale["rows"][attention]) == {str(v) for v in QUICK["variants"]}
        for v, row in scale["rows"][attention].items():
            assert "error" not in row and "skipped" not in row, (attention, v, row)
            for key in ("plain_s_per_sample", "dp_s_per_sample", "plain_memory_per_sample_bytes",
                        "dp_memory_per_sample_bytes", "time_ratio", "memory_ratio"):
                assert row[key] > 0, (attention, v, key)
            assert row["dp_s_per_sample"] == pytest.approx(row["step_s"] / QUICK["batch"])
    grow = scale["growth"]
    assert (grow["from_variants"], grow["to_variants"]) == QUICK["growth"]
    assert grow["pairs"] == QUICK["growth_pairs"]  # timed in pairs in one process
    assert grow["threads"] == 1  # no stall per step from threads waiting on shared cores
    lo, hi = grow["dp_step_ratio_iqr"]
    assert 0 < lo <= grow["dp_step_ratio"] <= hi and grow["plain_step_ratio"] > 0
    assert grow["rows_dp_step_ratio"] == pytest.approx(
        scale["rows"]["local"]["256"]["step_s"] / scale["rows"]["local"]["16"]["step_s"])
    goals = {g["name"]: g for g in doc["targets"]}
    assert goals["panel_scale_local_growth"]["margin"] == pytest.approx(
        20.0 - grow["dp_step_ratio"])
    assert goals["panel_scale_dp_memory"]["margin"] == pytest.approx(
        1.3 - scale["worst_memory_ratio"])
