"""The coordinator's strategy on its own: reply and update checks, declines, robust rules,
which rounds are evaluated, what is signed into the ledger when, and who may answer: a reply
counts only if a registered site signed its receipt (shared.receipts) for this run, this round
and these weights, from the node that name first answered from."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from flwr.app import Error
from flwr.common import (
    Code,
    FitRes,
    Status,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.common.constant import ErrorCode

from client.launcher import UnapprovedCode
from server.outdir import RunFolder
from server.strategy import (
    GenofedStrategy,
    check_update,
    failure_categories,
    update_norm,
    weights_sha256,
)
from shared import protocol
from shared.calibration import Recalibration
from shared.checkpoint import load_checkpoint
from shared.ledger import round_records
from shared.protocol import RoundRecord
from shared.receipts import verify_receipt
from shared.runconfig import RunSettings
from tests.strategy_kit import (
    CODE,
    KEYS,
    OUTSIDER,
    REGISTRY,
    RUN_ID,
    SIGMA,
    Proxy,
    evaluation,
    flower_failure,
    ledger_bodies,
    make_strategy,
    manager_with,
    result,
    shifted,
    site_scores,
)


def test_bad_updates_are_rejected_and_the_round_goes_on(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path, max_update_norm=50.0)
    g = strat.current
    nan = shifted(g, 0.0)
    nan[0] = np.full_like(nan[0], np.nan)
    wrong_shape = shifted(g, 0.0)
    wrong_shape[1] = np.zeros((3, 3), dtype=np.float32)
    huge = shifted(g, 10.0)
    declined = result(strat, 1, "d", g, 0, declined=1, reason="budget-exhausted")
    params, _ = strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
        result(strat, 1, "nan", nan), result(strat, 1, "shape", wrong_shape),
        result(strat, 1, "huge", huge), declined,
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
        1, [result(strat, 1, "a", before, 0, declined=1, reason="budget-exhausted")], [])
    assert params is None and strat.current is before
    assert strat.rounds[1].weights_sha256 == weights_sha256(before)


@pytest.mark.parametrize("rule", ["fedmedian", "fedtrimmedavg", "krum"])
def test_robust_rules_by_name_resist_one_outlier(tmp_path: Path, rule: str) -> None:
    strat = make_strategy(tmp_path, aggregation=rule)
    g = strat.current
    honest = [result(strat, 1, f"h{i}", shifted(g, 0.01 * (i + 1))) for i in range(4)]
    attacker = result(strat, 1, "evil", shifted(g, 5.0))
    params, _ = strat.aggregate_fit(1, [*honest, attacker], [])
    assert sorted(strat.rounds[1].sites) == ["evil", "h0", "h1", "h2", "h3"]  # all signed
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
    "code not text": ({"code": 7}, "field 'code' must be str"),
    "receipt not text": ({"receipt": 7}, "field 'receipt' must be str"),
}


def check_round_went_on(strat: GenofedStrategy, tmp_path: Path, g: list[np.ndarray],
                        rejected_node: str, why: str) -> None:
    """Round 1 counted good-1 and good-2 (FedAvg by their 10 and 30 examples), refused only
    the reply from `rejected_node` (keyed by the node: a refused reply's self-given name is
    not believed), and signed exactly that into the ledger, with the counted sites' receipts."""
    rec = strat.rounds[1]
    assert sorted(rec.sites) == ["good-1", "good-2"] and not rec.declined
    assert list(rec.rejected) == [f"node {rejected_node}"]
    reason = rec.rejected[f"node {rejected_node}"]
    assert reason.startswith("refused reply (as ") and why in reason, reason
    assert set(rec.privacy) == set(rec.receipts) == set(rec.code) == {"good-1", "good-2"}
    np.testing.assert_allclose(strat.current[0], g[0] + 0.025, rtol=1e-5, atol=1e-6)
    # Not an evaluated round (evaluate-rounds = last): signed at aggregation, reason included.
    (body,) = ledger_bodies(tmp_path)
    assert body["round"] == 1 and body["metrics"] is None
    assert body["sites"] == ["good-1", "good-2"] and body["rejected"] == rec.rejected
    assert set(body["privacy"]) == set(body["receipts"]) == {"good-1", "good-2"}


@pytest.mark.parametrize("name", list(BAD_REPLIES))
def test_malformed_reply_is_rejected_and_the_round_goes_on(tmp_path: Path, name: str) -> None:
    bad_metrics, why = BAD_REPLIES[name]
    strat = make_strategy(tmp_path, num_server_rounds=3)
    g = strat.current
    bad = result(strat, 1, "bad", shifted(g, 5.0), 1000)  # would dominate if averaged
    bad[1].metrics.update(bad_metrics)  # after signing: the site's signer never saw these
    params, _ = strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        bad,
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "bad", why)
    np.testing.assert_allclose(parameters_to_ndarrays(params)[0], g[0] + 0.025,
                               rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["nan epsilon", "string epsilon", "delta out of range"])
def test_malformed_values_are_refused_even_when_signed(tmp_path: Path, name: str) -> None:
    """The same values in a reply whose receipt the site signed over them (as far as a receipt
    can carry them): the protocol check refuses the reply before the receipt is read."""
    bad_metrics, why = BAD_REPLIES[name]
    strat = make_strategy(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "bad", shifted(g, 5.0), 1000, **bad_metrics),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "bad", why)


def test_protocol_reasons_are_accepted_as_declines(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    g = strat.current
    replies = [result(strat, 1, f"s{i}", g, 0, declined=1, reason=why)
               for i, why in enumerate(protocol.REFUSALS)]
    strat.aggregate_fit(1, [*replies, result(strat, 1, "ok", shifted(g, 0.01))], [])
    rec = strat.rounds[1]
    assert rec.declined == {f"s{i}": why for i, why in enumerate(protocol.REFUSALS)}
    assert rec.sites == ["ok"] and not rec.rejected
    # A decline is the site's signed word too.
    assert set(rec.receipts) == {"ok", *(f"s{i}" for i in range(len(protocol.REFUSALS)))}


# --- who answered: registered names, one reply each, one node each, signed receipts -----------


def test_a_site_answering_in_anothers_name_is_refused(tmp_path: Path) -> None:
    """A registered site ("evil", on its own node, with its own key) answers as good-1: its
    receipt does not verify under good-1's key, so the reply is refused, and good-1's own reply
    from its own node still counts."""
    strat = make_strategy(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    g = strat.current
    strat.aggregate_fit(2, [
        result(strat, 2, "good-1", shifted(g, 0.01), 10),
        result(strat, 2, "good-2", shifted(g, 0.03), 30),
        result(strat, 2, "good-1", shifted(g, 5.0), 1000, node="evil", key=KEYS["evil"]),
    ], [])
    rec = strat.rounds[2]
    assert sorted(rec.sites) == ["good-1", "good-2"]
    assert list(rec.rejected) == ["node evil"]
    np.testing.assert_allclose(strat.current[0], g[0] + 0.025, rtol=1e-5, atol=1e-6)


def test_an_impostor_answering_first_does_not_lock_the_site_out(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path, num_server_rounds=2)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 5.0), 1000, node="evil", key=KEYS["evil"]),
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "evil", "receipt signature does not verify")
    g = strat.current
    strat.aggregate_fit(2, [result(strat, 2, "good-1", shifted(g, 0.01))], [])
    assert strat.rounds[2].sites == ["good-1"]


def test_a_site_with_the_wrong_key_is_refused(tmp_path: Path) -> None:
    """From good-1's own node and under its name, but signed with good-2's key."""
    strat = make_strategy(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "bad", shifted(g, 5.0), 1000, key=KEYS["good-2"]),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "bad", "receipt: receipt signature does not verify")


def test_an_unregistered_name_is_refused(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "intruder", shifted(g, 5.0), 1000, node="bad", key=OUTSIDER),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "bad", "site name not in the site registry")
    assert "intruder" not in strat.nodes


def test_a_second_reply_under_the_same_name_is_refused(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path)
    g = strat.current
    first = result(strat, 1, "good-1", shifted(g, 0.01), 10)
    strat.aggregate_fit(1, [
        first,
        result(strat, 1, "good-1", shifted(g, 5.0), 1000),  # validly signed, same node
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "good-1",
                        "a second reply in this round under the same name")
    # The ledger keeps the receipt of the reply that counted.
    (body,) = ledger_bodies(tmp_path)
    assert body["receipts"]["good-1"] == json.loads(first[1].metrics["receipt"])


def test_a_name_answering_from_another_node_is_refused(tmp_path: Path) -> None:
    """The names' nodes are fixed by their first answer in this strategy's life: later a
    validly signed reply under good-1's name from another node is refused, in training and in
    evaluation."""
    strat = make_strategy(tmp_path, num_server_rounds=2, suppression_k=2)
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "good-1", shifted(g, 0.01), node="node-1"),
                            result(strat, 1, "good-2", shifted(g, 0.01))], [])
    assert strat.nodes == {"good-1": "node-1", "good-2": "good-2"}
    g = strat.current
    strat.aggregate_fit(2, [result(strat, 2, "good-1", shifted(g, 0.01), node="node-9"),
                            result(strat, 2, "good-2", shifted(g, 0.01))], [])
    rec = strat.rounds[2]
    assert rec.sites == ["good-2"] and list(rec.rejected) == ["node node-9"]
    assert "name already answered from another node" in rec.rejected["node node-9"]
    strat.aggregate_evaluate(2, [evaluation(strat, 2, "good-1", site_scores(1), node="node-9"),
                                 evaluation(strat, 2, "good-2", site_scores(2))], [])
    assert rec.evaluated_by == ["good-2"] and set(rec.evaluation_receipts) == {"good-2"}
    # From its own node, good-1 is heard again.
    strat.aggregate_evaluate(2, [evaluation(strat, 2, "good-1", site_scores(1), node="node-1")],
                             [])
    assert rec.evaluated_by == ["good-2", "good-1"]


RECEIPT_MISMATCHES = {
    "another run": ({"run_id": "run-41"}, "disagrees with the reply on run_id"),
    "another round": ({"round": 2}, "disagrees with the reply on round"),
    "other weights received": ({"weights_in": "0" * 64}, "disagrees with the reply on weights_in"),
    "other weights sent": ({"weights_out": "0" * 64}, "receipt: not the weights sent"),
    "another epsilon": ({"epsilon": 0.5}, "disagrees with the reply on epsilon"),
    "another delta": ({"delta": 1e-6}, "disagrees with the reply on delta"),
    "another kind": ({"kind": "evaluate"}, "disagrees with the reply on kind"),
    "other code": ({"code": "installed:" + "0" * 64}, "disagrees with the reply on code"),
    "another site's name inside": ({"site": "good-2"}, "disagrees with the reply on site"),
}


@pytest.mark.parametrize("name", list(RECEIPT_MISMATCHES))
def test_a_receipt_that_disagrees_with_its_reply_is_refused(tmp_path: Path, name: str) -> None:
    tamper, why = RECEIPT_MISMATCHES[name]
    strat = make_strategy(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [
        result(strat, 1, "good-1", shifted(g, 0.01), 10),
        result(strat, 1, "bad", shifted(g, 5.0), 1000, tamper=tamper),
        result(strat, 1, "good-2", shifted(g, 0.03), 30),
    ], [])
    check_round_went_on(strat, tmp_path, g, "bad", why)


@pytest.mark.parametrize("receipt", [None, "", "{}", "not json", "x" * 5000])
def test_a_reply_without_a_valid_receipt_is_refused(tmp_path: Path, receipt: str | None) -> None:
    strat = make_strategy(tmp_path)
    g = strat.current
    bad = result(strat, 1, "bad", shifted(g, 5.0), 1000)
    if receipt is None:
        del bad[1].metrics["receipt"]
    else:
        bad[1].metrics["receipt"] = receipt
    strat.aggregate_fit(1, [result(strat, 1, "good-1", shifted(g, 0.01), 10), bad,
                            result(strat, 1, "good-2", shifted(g, 0.03), 30)], [])
    check_round_went_on(strat, tmp_path, g, "bad", "receipt")


@pytest.mark.parametrize("tamper", [{"epsilon": 1.5}, {"round": 2}, {"kind": "fit"},
                                    {"weights_in": "0" * 64}, {"run_id": "run-41"}])
def test_an_evaluation_whose_receipt_disagrees_is_not_taken(tmp_path: Path,
                                                            tamper: dict) -> None:
    strat = make_strategy(tmp_path, num_server_rounds=1, suppression_k=2)
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "good-1", shifted(g, 0.01), epsilon=1.0),
                            result(strat, 1, "good-2", shifted(g, 0.01), epsilon=1.0)], [])
    strat.aggregate_evaluate(1, [
        evaluation(strat, 1, "good-1", site_scores(1), epsilon=2.0),
        evaluation(strat, 1, "good-2", site_scores(2), epsilon=2.0, tamper=tamper),
    ], [])
    rec = strat.rounds[1]
    assert rec.evaluated_by == ["good-1"] and set(rec.evaluation_receipts) == {"good-1"}
    # The refused evaluation's epsilon is not taken either.
    assert rec.privacy["good-1"]["epsilon"] == 2.0 and rec.privacy["good-2"]["epsilon"] == 1.0
    assert abs(rec.metrics["by_group"]["A"]["n"] - 100) <= 15  # one site's 100 people


def test_a_riding_evaluation_with_a_bad_receipt_is_not_taken(tmp_path: Path) -> None:
    """`evaluate-rounds = all`: a training reply's scores of the previous round need their own
    receipt, for that round; the training itself still counts on its own receipt."""
    strat = make_strategy(tmp_path, num_server_rounds=3, suppression_k=2, evaluate_rounds="all")
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "good-1", shifted(g, 0.01)),
                            result(strat, 1, "good-2", shifted(g, 0.01))], [])
    g = strat.current
    strat.aggregate_fit(2, [
        result(strat, 2, "good-1", shifted(g, 0.01), scores=site_scores(1)),
        result(strat, 2, "good-2", shifted(g, 0.01), scores=site_scores(2),
               eval_tamper={"round": 2}),
        result(strat, 2, "s1", shifted(g, 0.01), scores=site_scores(3),
               eval_tamper={"weights_in": weights_sha256(g)[::-1]}),
    ], [])
    assert strat.rounds[1].evaluated_by == ["good-1"]
    assert sorted(strat.rounds[2].sites) == ["good-1", "good-2", "s1"]
    (body,) = ledger_bodies(tmp_path)
    assert set(body["evaluation_receipts"]) == {"good-1"}


# --- what the ledger keeps of each reply ---------------------------------------------------------


def test_the_round_record_embeds_what_the_sites_signed(tmp_path: Path) -> None:
    strat = make_strategy(tmp_path, num_server_rounds=2, suppression_k=2, evaluate_rounds="all")
    strat.ledger_id = "ledger-1"
    g = strat.current
    round_1 = [result(strat, 1, "s1", shifted(g, 0.01), epsilon=1.0),
               result(strat, 1, "s2", g, 0, epsilon=1.5, declined=1, reason="budget-exhausted")]
    strat.aggregate_fit(1, round_1, [])
    g = strat.current
    round_2 = [result(strat, 2, "s1", shifted(g, 0.01), epsilon=2.0, scores=site_scores(1)),
               result(strat, 2, "s2", shifted(g, 0.01), epsilon=2.5, scores=site_scores(2))]
    strat.aggregate_fit(2, round_2, [])
    evaluations = [evaluation(strat, 2, "s1", site_scores(3), epsilon=2.2)]
    strat.aggregate_evaluate(2, evaluations, [])
    first, second = ledger_bodies(tmp_path)
    for body, fits, evals in ((first, round_1, round_2), (second, round_2, evaluations)):
        assert body["kind"] == "round" and body["run_id"] == RUN_ID
        assert body["ledger_id"] == "ledger-1"
        field = "evaluation_receipt" if evals is round_2 else "receipt"
        assert body["receipts"] == {res.metrics["site"]: json.loads(res.metrics["receipt"])
                                    for _, res in fits}
        assert body["evaluation_receipts"] == {
            res.metrics["site"]: json.loads(res.metrics[field]) for _, res in evals}
        assert body["code"] == {site: CODE for site in body["receipts"]}
        for site, receipt in body["receipts"].items():
            signed = verify_receipt(receipt, REGISTRY.keys[site])
            assert (signed["kind"], signed["round"], signed["site"]) == ("fit", body["round"],
                                                                        site)
        for site, receipt in body["evaluation_receipts"].items():
            signed = verify_receipt(receipt, REGISTRY.keys[site])
            assert (signed["kind"], signed["round"]) == ("evaluate", body["round"])
            assert signed["weights_in"] == body["weights_sha256"]
    assert first["sites"] == ["s1"] and first["declined"] == {"s2": "budget-exhausted"}
    assert verify_receipt(first["receipts"]["s2"], REGISTRY.keys["s2"])["epsilon"] == 1.5
    # Round 2's training receipts name round 1's weights as those they received.
    for receipt in second["receipts"].values():
        assert receipt["body"]["weights_in"] == first["weights_sha256"]


# --- failures Flower reports without a reply ------------------------------------------------------


def test_failures_are_counted_by_the_category_the_site_raised(tmp_path: Path) -> None:
    from client.app import SiteError

    failures = [flower_failure(UnapprovedCode()), flower_failure(UnapprovedCode()),
                flower_failure(SiteError("budget-exhausted")),
                flower_failure(ZeroDivisionError("division by zero")),
                # a site name or free text is not a category
                flower_failure(ValueError("unapproved-code at site-1")),
                Exception(Error(ErrorCode.LOAD_CLIENT_APP_EXCEPTION, "An exception was raised "
                                "when attempting to load `ClientApp`")),
                (Proxy("x"), FitRes(Status(Code.FIT_NOT_IMPLEMENTED, ""), None, 0, {}))]
    assert "<'unapproved-code'>" in str(failures[0])
    expected = {"unapproved-code": 2, "budget-exhausted": 1, "other": 4}
    assert failure_categories(failures) == expected
    strat = make_strategy(tmp_path)
    strat.aggregate_fit(1, [result(strat, 1, "ok", shifted(strat.current, 0.01))], failures)
    (body,) = ledger_bodies(tmp_path)
    assert body["failure_reasons"] == expected and strat.rounds[1].failures == 7
    assert body["sites"] == ["ok"]


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
            result(strat, rnd, "s1", shifted(strat.current, 0.01), epsilon=float(rnd),
                   scores=site_scores(rnd)),
            result(strat, rnd, "s2", shifted(strat.current, 0.02), epsilon=float(rnd)),
        ], [])
        hashes.append(strat.rounds[rnd].weights_sha256)
        assert len(ledger_bodies(tmp_path)) == min(rnd, 2)  # the final round awaits its scores
    assert len(set(hashes)) == 3
    bodies = ledger_bodies(tmp_path)
    assert [(b["round"], b["metrics"]) for b in bodies] == [(1, None), (2, None)]
    assert [b["weights_sha256"] for b in bodies] == hashes[:2]
    assert [b["privacy"]["s1"]["epsilon"] for b in bodies] == [1.0, 2.0]
    assert [b["evaluation_receipts"] for b in bodies] == [{}, {}]

    strat.aggregate_evaluate(3, [
        evaluation(strat, 3, "s1", site_scores(10), epsilon=3.5),
        evaluation(strat, 3, "s2", site_scores(11), epsilon=3.7),
        evaluation(strat, 3, "s3", "{not json"),
        evaluation(strat, 3, "s4", site_scores(12), evaluate_s=0.25),  # outside the protocol
        evaluation(strat, 3, "s5", site_scores(13, center=1.0)),  # binned around another logit
        evaluation(strat, 3, "s6", site_scores(14), epsilon=math.nan),
    ], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1, 2, 3]
    final = bodies[-1]
    assert final["weights_sha256"] == hashes[2]
    assert strat.rounds[3].evaluated_by == ["s1", "s2"]
    assert set(final["evaluation_receipts"]) == {"s1", "s2"}
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

    strat.aggregate_fit(1, [result(strat, 1, "s1", shifted(strat.current, 0.01), epsilon=1.0)],
                        [])
    round_1 = strat.rounds[1].weights_sha256
    assert ledger_bodies(tmp_path) == []  # trained, not yet evaluated
    strat.aggregate_fit(2, [
        result(strat, 2, "s1", shifted(strat.current, 0.01), epsilon=2.0, scores=site_scores(1)),
        result(strat, 2, "s2", shifted(strat.current, 0.02), epsilon=2.0, declined=1,
               reason="budget-exhausted", scores=site_scores(2)),
        result(strat, 2, "s3", shifted(strat.current, 0.02), epsilon=2.0, scores=site_scores(3),
               train_loss=0.3),
    ], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1]
    # Scored by both valid replies, even the decliner's; the malformed one counts for nothing.
    assert strat.rounds[1].evaluated_by == ["s1", "s2"]
    assert set(bodies[0]["evaluation_receipts"]) == {"s1", "s2"}
    assert abs(bodies[0]["metrics"]["by_group"]["A"]["n"] - 200) <= 20
    assert "field 'train_loss' is not in the protocol" in strat.rounds[2].rejected["node s3"]
    assert strat.rounds[2].sites == ["s1"] and strat.rounds[2].declined == {
        "s2": "budget-exhausted"}
    assert bodies[0]["weights_sha256"] == round_1 != strat.rounds[2].weights_sha256
    # A training reply's epsilon is after that round's training: the next round's, not r-1's.
    assert bodies[0]["privacy"] == {"s1": {"epsilon": 1.0, "delta": 1e-5}}
    assert strat.rounds[2].metrics is None

    strat.aggregate_fit(3, [result(strat, 3, "s1", shifted(strat.current, 0.01), epsilon=3.0,
                                   scores=site_scores(4))], [])
    assert [b["round"] for b in ledger_bodies(tmp_path)] == [1, 2]
    strat.aggregate_evaluate(3, [evaluation(strat, 3, "s1", site_scores(5))], [])
    bodies = ledger_bodies(tmp_path)
    assert [b["round"] for b in bodies] == [1, 2, 3]
    assert all(b["metrics"] and set(b["metrics"]["by_group"]) == {"A", "B"} for b in bodies)
    assert [strat.rounds[r].evaluated_by for r in (1, 2, 3)] == [["s1", "s2"], ["s1"], ["s1"]]


@pytest.mark.parametrize("payload", ["oversized", "too many groups"])
def test_an_oversized_scores_payload_is_refused_before_it_is_allocated(
        tmp_path: Path, payload: str) -> None:
    """One site's evaluation far past the caps (size, groups) is refused by its reason; the
    round is signed with the other site's scores."""
    from shared.metrics import MAX_GROUPS, MAX_JSON_CHARS

    strat = make_strategy(tmp_path, suppression_k=2, num_server_rounds=1)
    strat.aggregate_fit(1, [result(strat, 1, "s1", shifted(strat.current, 0.01)),
                            result(strat, 1, "s2", shifted(strat.current, 0.01))], [])
    if payload == "oversized":
        huge = json.dumps({"pad": "x" * (MAX_JSON_CHARS + 1)})
    else:
        doc = json.loads(site_scores(3))
        one = doc["groups"]["A"]
        doc["groups"] = {f"g{i}": one for i in range(MAX_GROUPS + 1)}
        huge = json.dumps(doc)
    strat.aggregate_evaluate(1, [evaluation(strat, 1, "s1", site_scores(1)),
                                 evaluation(strat, 1, "s2", huge)], [])
    rec = strat.rounds[1]
    assert rec.evaluated_by == ["s1"] and set(rec.metrics["by_group"]) == {"A", "B"}
    assert ledger_bodies(tmp_path)[-1]["round"] == 1


def test_results_and_ledger_read_back_as_the_same_round(tmp_path: Path) -> None:
    """results.json and the signed round body carry one RoundRecord (shared.protocol)."""
    strat = make_strategy(tmp_path, num_server_rounds=3)
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "good-1", shifted(g, 0.1), 20),
                            result(strat, 1, "good-2", shifted(g, -0.1), 30)], [])
    (body,) = round_records(ledger_bodies(tmp_path))
    saved = json.loads(RunFolder(tmp_path).results.read_text())["rounds"]
    from_ledger, from_results = RoundRecord.from_body(body), RoundRecord.from_body(saved[0])
    assert from_ledger == from_results == strat.rounds[1]
    assert from_ledger.sites == ["good-1", "good-2"] and from_ledger.run_id == RUN_ID
    assert from_ledger.epsilons() == {"good-1": 1.0, "good-2": 1.0}
    assert from_ledger.weights_sha256 == weights_sha256(strat.current)
    assert from_ledger.group_auroc("CEU") is None  # not evaluated: no metrics
    assert set(body) - set(from_ledger.to_json()) == {
        "kind", "ledger_id", "config_sha256", "panel_sha256", "time"}


def test_sites_bin_centres_are_taken_when_on_the_grid_and_shared(tmp_path: Path) -> None:
    """With `panel` centring each site's payload carries the centre it chose from public
    inputs: the coordinator takes the centre on the grid that most replies share, even when
    another site answers first, pools only those replies, and reads the merged metrics around
    it; `fixed` centring still demands its own."""
    strat = make_strategy(tmp_path, num_server_rounds=1)
    assert strat.settings.score_centering == "panel"
    centre = -3.25
    strat.aggregate_evaluate(1, [evaluation(strat, 1, "ok", site_scores(3, -1.0)),  # another, first
                                 evaluation(strat, 1, "good-1", site_scores(1, centre)),
                                 evaluation(strat, 1, "good-2", site_scores(2, centre)),
                                 evaluation(strat, 1, "d", site_scores(4, -3.3))],  # off-grid
                             [])
    rec = strat.rounds[1]
    assert sorted(rec.evaluated_by) == ["good-1", "good-2"]
    assert sorted(rec.evaluation_receipts) == ["good-1", "good-2"]
    assert rec.metrics["by_group"]["A"]["auroc"] > 0.6  # the two sites' people, ranked
    fixed = make_strategy(tmp_path / "fixed", num_server_rounds=1, score_centering="fixed")
    fixed.aggregate_evaluate(1, [evaluation(fixed, 1, "good-1", site_scores(1, centre)),
                                 evaluation(fixed, 1, "good-2", site_scores(2, 0.0))], [])
    assert fixed.rounds[1].evaluated_by == ["good-2"]


def test_each_evaluated_checkpoint_carries_the_recalibration_its_dp_evaluation_fits(
    tmp_path: Path,
) -> None:
    """Round 1's model, scored on round 2's training replies, gets its per-ancestry fits in
    round 1's checkpoint only; the latest checkpoint gets round 2's once round 2 is scored."""
    strat = make_strategy(tmp_path, num_server_rounds=2, suppression_k=2, evaluate_rounds="all")
    folder = RunFolder(tmp_path)
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "s1", shifted(g, 0.01), epsilon=1.0)], [])
    assert not load_checkpoint(folder.checkpoint(1)).calibration()
    g = strat.current
    strat.aggregate_fit(2, [result(strat, 2, "s1", shifted(g, 0.01), epsilon=2.0,
                                   scores=site_scores(1))], [])
    first = ledger_bodies(tmp_path)[0]
    expected = Recalibration.from_metrics(first["metrics"])
    assert set(expected.by_group) == {"A", "B"} and expected.overall is not None
    assert load_checkpoint(folder.checkpoint(1)).calibration() == expected
    assert not load_checkpoint(folder.latest).calibration()
    strat.aggregate_evaluate(2, [evaluation(strat, 2, "s1", site_scores(3), epsilon=2.2)], [])
    second = Recalibration.from_metrics(ledger_bodies(tmp_path)[1]["metrics"])
    latest = load_checkpoint(folder.latest)
    assert latest.round == 2 and latest.calibration() == second != expected
    # The fits are the ledger's own numbers: the closed-tested update per shown group.
    for name, (a, b) in second.by_group.items():
        shown = ledger_bodies(tmp_path)[1]["metrics"]["by_group"][name]["recalibration"]
        assert shown["update"] in ("none", "intercept", "logistic")
        assert (a, b) == (shown["intercept"], shown["slope"])
