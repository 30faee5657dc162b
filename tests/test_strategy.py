"""The coordinator's strategy on its own: reply and update checks, declines, robust rules,
which rounds are evaluated, and what is signed into the ledger when."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from server.strategy import GenofedStrategy, check_update, update_norm, weights_sha256
from shared import protocol
from shared.ledger import (
    Ledger,
    ensure_signing_key,
    load_private_key,
    load_public_key,
    verify_with_records,
)
from shared.metrics import GroupedScores
from shared.model import ModelConfig
from shared.runconfig import RunSettings

CFG = ModelConfig(n_variants=6, context_len=3, kmer_vocab=10, dim=8, layers=1, heads=2)


class Proxy(ClientProxy):
    """Only the id matters to the strategy; Flower never calls these in aggregation."""

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


def make_strategy(tmp_path: Path, **settings: object) -> GenofedStrategy:
    from server.strategy import initial_weights

    key = tmp_path / "keys" / "ledger.key"
    ensure_signing_key(key, key.with_suffix(".pub"))
    ledger = Ledger(tmp_path / "ledger.jsonl", load_private_key(key))
    s = RunSettings(min_sites=1, **settings)  # type: ignore[arg-type]
    return GenofedStrategy(s, CFG, "p" * 64, tmp_path, ledger, initial_weights(CFG, 0))


def result(site: str, arrays: list[np.ndarray], n: int = 10, /, **metrics: object):
    """A training reply as a site sends it: protocol fields only (`shared.protocol`)."""
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n,
                 {"site": site, "version": "test", "declined": 0, "epsilon": 1.0,
                  "delta": 1e-5, **metrics})
    return Proxy(site), res


def evaluation(site: str, scores: str, /, **metrics: object):
    """An evaluation reply: the noisy score histograms plus the site's budget after them."""
    res = EvaluateRes(Status(Code.OK, ""), 0.0, 0,
                      {"site": site, "version": "test", "declined": 0, "epsilon": 2.0,
                       "delta": 1e-5, "scores": scores, **metrics})
    return Proxy(site), res


SIGMA = 0.5


def site_scores(seed: int, center: float = 0.0) -> str:
    """One site's DP release of 200 held-out people, 100 per group, as it would send it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    exact = GroupedScores.from_predictions(rng.normal(y, 1.0) + center, y,
                                           np.array(["A", "B"] * 100), center=center)
    return exact.with_groups(["A", "B"]).with_noise(SIGMA, rng).to_json()


def ledger_bodies(tmp_path: Path) -> list[dict]:
    """The ledger's record bodies; every record must verify against the coordinator's key."""
    if not (tmp_path / "ledger.jsonl").exists():
        return []
    check, bodies = verify_with_records(tmp_path / "ledger.jsonl",
                                        load_public_key(tmp_path / "keys" / "ledger.pub"))
    assert check.ok and check.records == len(bodies)
    return bodies


def manager_with(*sites: str) -> SimpleClientManager:
    manager = SimpleClientManager()
    for site in sites:
        manager.register(Proxy(site))
    return manager


def shifted(base: list[np.ndarray], by: float) -> list[np.ndarray]:
    return [(a + by).astype(a.dtype) for a in base]


def test_bad_updates_are_rejected_and_the_round_goes_on(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path, max_update_norm=50.0)
    g = strat.current
    nan = shifted(g, 0.0)
    nan[0] = np.full_like(nan[0], np.nan)
    wrong_shape = shifted(g, 0.0)
    wrong_shape[1] = np.zeros((3, 3), dtype=np.float32)
    huge = shifted(g, 10.0)
    declined = result("d", g, 0, declined=1, reason="budget-exhausted")
    params, _ = strat.aggregate_fit(1, [
        result("good-1", shifted(g, 0.01), 10), result("good-2", shifted(g, 0.03), 30),
        result("nan", nan), result("shape", wrong_shape), result("huge", huge), declined,
    ], [])
    rec = strat.rounds[1]
    assert sorted(rec.sites) == ["good-1", "good-2"]
    assert set(rec.rejected) == {"nan", "shape", "huge"}
    assert "non-finite" in rec.rejected["nan"] and "exceeds the bound" in rec.rejected["huge"]
    assert rec.declined == {"d": "budget-exhausted"}
    assert set(rec.privacy) == {"good-1", "good-2", "nan", "shape", "huge", "d"}
    new = parameters_to_ndarrays(params)
    np.testing.assert_allclose(new[0], g[0] + 0.025, rtol=1e-5, atol=1e-6)  # weighted by n
    assert (tmp_path / "checkpoints" / "round-001.pt").exists()


def test_all_declined_leaves_weights_unchanged(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    before = strat.current
    params, _ = strat.aggregate_fit(
        1, [result("a", before, 0, declined=1, reason="budget-exhausted")], [])
    assert params is None and strat.current is before
    assert strat.rounds[1].weights_sha256 == weights_sha256(before)


@pytest.mark.parametrize("rule", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_rules_by_name_resist_one_outlier(tmp_path: Path, rule: str) -> None:
    strat = make_strategy(tmp_path, aggregation=rule)
    g = strat.current
    honest = [result(f"h{i}", shifted(g, 0.01 * (i + 1))) for i in range(4)]
    attacker = result("evil", shifted(g, 5.0))
    params, _ = strat.aggregate_fit(1, [*honest, attacker], [])
    moved = update_norm(parameters_to_ndarrays(params), g)
    fedavg = update_norm(shifted(g, 1.02), g)  # what plain averaging would do: mean shift 1.02
    assert moved < 0.2 * fedavg


def test_robust_rules_refuse_secagg() -> None:
    with pytest.raises(ValueError, match="SecAgg"):
        RunSettings.from_run_config({"secagg": True, "aggregation": "krum"})


def test_check_update_bounds() -> None:
    ref = [np.zeros(4, dtype=np.float32)]
    assert check_update([np.ones(4, dtype=np.float32)], ref, max_norm=2.0) is None
    assert "exceeds" in check_update([np.ones(4, dtype=np.float32) * 2], ref, max_norm=2.0)
    assert "dtype" in check_update([np.ones(4, dtype=np.int64)], ref)




# --- replies are read through shared.protocol --------------------------------------------------

BAD_REPLIES = {
    "nan epsilon": ({"epsilon": math.nan}, "field 'epsilon' must be float"),
    "infinite epsilon": ({"epsilon": math.inf}, "field 'epsilon' must be float"),
    "string epsilon": ({"epsilon": "1.0"}, "field 'epsilon' must be float"),
    "negative epsilon": ({"epsilon": -0.5}, "epsilon out of range"),
    "unknown field": ({"train_loss": 0.31}, "field 'train_loss' is not in the protocol"),
    "timing field": ({"train_s": 1.5}, "field 'train_s' is not in the protocol"),
    "free-text reason": ({"declined": 1, "reason": "cannot read /data/site.vcf"},
                         "refusal categories"),
    "declined not 0 or 1": ({"declined": 2}, "declined must be 0 or 1"),
    "bool declined": ({"declined": True}, "field 'declined' must be int"),
    "delta out of range": ({"delta": 1.5}, "delta must be in (0, 1)"),
    "scores not text": ({"scores": 3}, "field 'scores' must be str"),
    "long site name": ({"site": "x" * 101}, "site name"),
}


@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_malformed_reply_is_rejected_and_the_round_goes_on(tmp_path: Path, name: str) -> None:
    bad_metrics, why = BAD_REPLIES[name]
    strat = make_strategy(tmp_path, num_server_rounds=3)
    g = strat.current
    params, _ = strat.aggregate_fit(1, [
        result("good-1", shifted(g, 0.01), 10),
        result("bad", shifted(g, 5.0), 1000, **bad_metrics),  # would dominate if averaged
        result("good-2", shifted(g, 0.03), 30),
    ], [])
    rec = strat.rounds[1]
    assert sorted(rec.sites) == ["good-1", "good-2"] and not rec.declined
    assert list(rec.rejected) == ["bad"]  # keyed by the node: its self-given name is unread
    assert rec.rejected["bad"].startswith("malformed reply: ") and why in rec.rejected["bad"]
    assert set(rec.privacy) == {"good-1", "good-2"}
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], g[0] + 0.025,
                               rtol=1e-5, atol=1e-6)
    # Not an evaluated round (evaluate-rounds = last): signed at aggregation, reason included.
    (body,) = ledger_bodies(tmp_path)
    assert body["round"] == 1 and body["metrics"] is None
    assert body["sites"] == ["good-1", "good-2"] and body["rejected"] == rec.rejected
    assert set(body["privacy"]) == {"good-1", "good-2"}


def test_protocol_reasons_are_accepted_as_declines(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    g = strat.current
    replies = [result(f"s{i}", g, 0, declined=1, reason=why)
               for i, why in enumerate(protocol.REFUSALS)]
    strat.aggregate_fit(1, [*replies, result("ok", shifted(g, 0.01))], [])
    rec = strat.rounds[1]
    assert rec.declined == {f"s{i}": why for i, why in enumerate(protocol.REFUSALS)}
    assert rec.sites == ["ok"] and not rec.rejected


# --- which rounds are evaluated, and when they are signed --------------------------------------


def test_last_mode_scores_only_the_final_model(tmp_path: Path) -> None:
    """Default `evaluate-rounds = last`: no training message asks for scores, only the final
    round gets an evaluation message, every other round is signed as soon as it is aggregated,
    and the final round once its (validated, merged) scores are in."""
    strat = make_strategy(tmp_path, suppression_k=2, num_server_rounds=3)
    assert strat.settings.evaluate_rounds == "last"
    manager = manager_with("s1", "s2")
    params = ndarrays_to_parameters(strat.current)
    fit_configs = [[ins.config for _, ins in strat.configure_fit(r, params, manager)]
                   for r in (1, 2, 3)]
    assert [{c[protocol.EVALUATE_RECEIVED] for c in cs} for cs in fit_configs] == [{0}] * 3
    assert [{c[protocol.SERVER_ROUND] for c in cs} for cs in fit_configs] == [{1}, {2}, {3}]
    for c in (c for cs in fit_configs for c in cs):
        assert c[protocol.MIN_GROUP_SIZE] == 2 and c[protocol.SCORE_CENTER] == 0.0
        assert c[protocol.PANEL_SHA256] == "p" * 64
    asked = [strat.configure_evaluate(r, params, manager) for r in (1, 2, 3)]
    assert [len(a) for a in asked] == [0, 0, 2]
    assert {ins.config[protocol.SERVER_ROUND] for _, ins in asked[2]} == {3}

    hashes = []
    for rnd in (1, 2, 3):
        strat.aggregate_fit(rnd, [
            # Scores on a training reply were not asked for in this mode: not taken.
            result("s1", shifted(strat.current, 0.01), epsilon=float(rnd),
                   scores=site_scores(rnd)),
            result("s2", shifted(strat.current, 0.02), epsilon=float(rnd)),
        ], [])
        hashes.append(strat.rounds[rnd].weights_sha256)
        assert len(ledger_bodies(tmp_path)) == min(rnd, 2)  # the final round awaits its scores
    assert len(set(hashes)) == 3
    bodies = ledger_bodies(tmp_path)
    assert [(b["round"], b["metrics"]) for b in bodies] == [(1, None), (2, None)]
    assert [b["weights_sha256"] for b in bodies] == hashes[:2]
    assert [b["privacy"]["s1"]["epsilon"] for b in bodies] == [1.0, 2.0]

    strat.aggregate_evaluate(3, [
        evaluation("s1", site_scores(10), epsilon=3.5),
        evaluation("s2", site_scores(11), epsilon=3.7),
        evaluation("s3", "{not json"),
        evaluation("s4", site_scores(12), evaluate_s=0.25),  # a field outside the protocol
        evaluation("s5", site_scores(13, center=1.0)),  # binned around another logit
        evaluation("s6", site_scores(14), epsilon=math.nan),
    ], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1, 2, 3]
    final = bodies[-1]
    assert final["weights_sha256"] == hashes[2]
    assert strat.rounds[3].evaluated_by == ["s1", "s2"]
    # The evaluation's epsilon supersedes the training reply's; rejected sites add nothing.
    assert final["privacy"] == {"s1": {"epsilon": 3.5, "delta": 1e-5},
                                "s2": {"epsilon": 3.7, "delta": 1e-5}}
    by_group = final["metrics"]["by_group"]
    assert set(by_group) == {"A", "B"}
    for group in ("A", "B"):  # two sites' 100 people each, noisy counts
        assert abs(by_group[group]["n"] - 200) <= 20
        assert by_group[group]["noise_sd"] == pytest.approx(SIGMA * math.sqrt(2))
    assert final["metrics"]["dp"]["mechanism"] == "gaussian"
    assert final["metrics"] == strat.rounds[3].metrics
    results = json.loads((tmp_path / "results.json").read_text())
    assert [r["evaluated_by"] for r in results["rounds"]] == [[], [], ["s1", "s2"]]
    assert not {"train_s", "evaluate_s", "train_loss"} & set(results["rounds"][0])


def test_all_mode_scores_each_aggregate_on_the_next_rounds_message(tmp_path: Path) -> None:
    """`evaluate-rounds = all`: one round-trip per round. Round r's training message asks the
    sites to score round r-1's aggregate first; only the last round gets an evaluation message
    of its own, and a round is signed into the ledger once its scores are in."""
    strat = make_strategy(tmp_path, suppression_k=2, num_server_rounds=3, evaluate_rounds="all")
    manager = manager_with("s1", "s2")
    params = ndarrays_to_parameters(strat.current)
    asked = [{ins.config[protocol.EVALUATE_RECEIVED]
              for _, ins in strat.configure_fit(r, params, manager)} for r in (1, 2, 3)]
    assert asked == [{0}, {1}, {1}]
    assert [len(strat.configure_evaluate(r, params, manager)) for r in (1, 2, 3)] == [0, 0, 2]

    strat.aggregate_fit(1, [result("s1", shifted(strat.current, 0.01), epsilon=1.0)], [])
    round_1 = strat.rounds[1].weights_sha256
    assert ledger_bodies(tmp_path) == []  # trained, not yet evaluated
    strat.aggregate_fit(2, [
        result("s1", shifted(strat.current, 0.01), epsilon=2.0, scores=site_scores(1)),
        result("s2", shifted(strat.current, 0.02), epsilon=2.0, declined=1,
               reason="budget-exhausted", scores=site_scores(2)),
        result("s3", shifted(strat.current, 0.02), epsilon=2.0, scores=site_scores(3),
               train_loss=0.3),
    ], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1]
    # Scored by both valid replies, even the decliner's; the malformed one counts for nothing.
    assert strat.rounds[1].evaluated_by == ["s1", "s2"]
    assert abs(bodies[0]["metrics"]["by_group"]["A"]["n"] - 200) <= 20
    assert "field 'train_loss' is not in the protocol" in strat.rounds[2].rejected["s3"]
    assert strat.rounds[2].sites == ["s1"] and strat.rounds[2].declined == {
        "s2": "budget-exhausted"}
    assert bodies[0]["weights_sha256"] == round_1 != strat.rounds[2].weights_sha256
    # A training reply's epsilon is after that round's training: the next round's, not r-1's.
    assert bodies[0]["privacy"] == {"s1": {"epsilon": 1.0, "delta": 1e-5}}
    assert strat.rounds[2].metrics is None

    strat.aggregate_fit(3, [result("s1", shifted(strat.current, 0.01), epsilon=3.0,
                                   scores=site_scores(4))], [])
    assert [b["round"] for b in ledger_bodies(tmp_path)] == [1, 2]
    strat.aggregate_evaluate(3, [evaluation("s1", site_scores(5))], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1, 2, 3]
    assert all(b["metrics"] and set(b["metrics"]["by_group"]) == {"A", "B"} for b in bodies)
    assert [strat.rounds[r].evaluated_by for r in (1, 2, 3)] == [["s1", "s2"], ["s1"], ["s1"]]
