"""The coordinator's strategy on its own: update checks, declines, robust rules, outputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.client_proxy import ClientProxy

from server.strategy import GenofedStrategy, check_update, update_norm
from shared.ledger import Ledger, ensure_signing_key, load_private_key, load_public_key
from shared.ledger import verify_ledger as verify
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


def result(site: str, arrays: list[np.ndarray], n: int = 10, **metrics: object):
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n,
                 {"site": site, "declined": 0, "epsilon": 1.0, "delta": 1e-5, **metrics})
    return Proxy(site), res


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
    declined = result("d", g, 0, declined=1, reason="over budget")
    params, _ = strat.aggregate_fit(1, [
        result("good-1", shifted(g, 0.01), 10), result("good-2", shifted(g, 0.03), 30),
        result("nan", nan), result("shape", wrong_shape), result("huge", huge), declined,
    ], [])
    rec = strat.rounds[1]
    assert sorted(rec.sites) == ["good-1", "good-2"]
    assert set(rec.rejected) == {"nan", "shape", "huge"}
    assert "non-finite" in rec.rejected["nan"] and "exceeds the bound" in rec.rejected["huge"]
    assert rec.declined == {"d": "over budget"}
    new = parameters_to_ndarrays(params)
    np.testing.assert_allclose(new[0], g[0] + 0.025, rtol=1e-5, atol=1e-6)  # weighted by n
    assert (tmp_path / "checkpoints" / "round-001.pt").exists()


def test_all_declined_leaves_weights_unchanged(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    before = strat.current
    params, _ = strat.aggregate_fit(1, [result("a", before, 0, declined=1, reason="x")], [])
    assert params is None and strat.current is before


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


def test_ledger_written_per_evaluated_round(tmp_path: Path) -> None:
    from flwr.common import EvaluateRes

    from shared.metrics import GroupedScores

    strat = make_strategy(tmp_path, suppression_k=2)
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = GroupedScores.from_predictions(rng.normal(y, 1.0), y, np.array(["A", "B"] * 100))
    ev = EvaluateRes(Status(Code.OK, ""), 0.5, 200, {"site": "s1",
                                                      "scores": scores.to_json(min_count=2)})
    strat.aggregate_fit(1, [result("s1", shifted(strat.current, 0.01))], [])
    strat.aggregate_evaluate(1, [(Proxy("s1"), ev)], [])
    bad = EvaluateRes(Status(Code.OK, ""), 0.5, 200, {"site": "s2", "scores": "{not json"})
    strat.aggregate_evaluate(2, [(Proxy("s2"), bad)], [])
    check = verify(tmp_path / "ledger.jsonl", load_public_key(tmp_path / "keys" / "ledger.pub"))
    assert check.ok and check.records == 2
    assert set(strat.rounds[1].metrics["by_group"]) == {"A", "B"}


def test_each_aggregate_is_scored_on_the_next_rounds_message(tmp_path: Path) -> None:
    """One round-trip per round: round r's training message asks the sites to score round r-1's
    aggregate first; only the last round gets an evaluation message of its own, and a round is
    signed into the ledger once its scores are in."""
    from flwr.common import EvaluateRes
    from flwr.server.client_manager import SimpleClientManager

    from shared.metrics import GroupedScores
    from shared.runconfig import EVALUATE_RECEIVED

    strat = make_strategy(tmp_path, suppression_k=2, num_server_rounds=3)
    manager = SimpleClientManager()
    for site in ("s1", "s2"):
        manager.register(Proxy(site))
    params = ndarrays_to_parameters(strat.current)
    asked = [{ins.config[EVALUATE_RECEIVED] for _, ins in strat.configure_fit(r, params, manager)}
             for r in (1, 2, 3)]
    assert asked == [{0}, {1}, {1}]
    assert [len(strat.configure_evaluate(r, params, manager)) for r in (1, 2, 3)] == [0, 0, 2]

    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    scores = GroupedScores.from_predictions(rng.normal(y, 1.0), y, np.array(["A", "B"] * 100))
    scored = {"scores": scores.to_json(min_count=2), "evaluate_s": 0.25}
    pub = load_public_key(tmp_path / "keys" / "ledger.pub")
    strat.aggregate_fit(1, [result("s1", shifted(strat.current, 0.01))], [])
    round_1 = strat.rounds[1].weights_sha256
    assert not (tmp_path / "ledger.jsonl").exists()  # trained, not yet evaluated
    strat.aggregate_fit(2, [result("s1", shifted(strat.current, 0.01), **scored),
                            result("s2", shifted(strat.current, 0.02), declined=1, reason="x",
                                   **scored)], [])
    check = verify(tmp_path / "ledger.jsonl", pub)
    assert check.ok and check.records == 1  # round 1, scored by both sites, even the decliner
    assert strat.rounds[1].evaluate_s == {"s1": 0.25, "s2": 0.25}
    assert strat.rounds[1].metrics["by_group"]["A"]["n"] == 200  # two sites' 100 A's merged
    assert strat.rounds[1].weights_sha256 == round_1 != strat.rounds[2].weights_sha256
    assert strat.rounds[2].metrics is None
    ev = EvaluateRes(Status(Code.OK, ""), 0.5, 200, {"site": "s1", **scored})
    strat.aggregate_evaluate(2, [(Proxy("s1"), ev)], [])
    assert verify(tmp_path / "ledger.jsonl", pub).records == 2
