"""Resumption trusts the signed ledger, not results.json (written after it)."""

from __future__ import annotations

import json
from pathlib import Path

from server.coordinator import _completed_rounds


def test_rounds_come_from_the_ledger_when_results_lag(tmp_path: Path) -> None:
    ledger = [
        {"round": 1, "sites": ["a", "b"], "privacy": {"a": {"epsilon": 1.0, "delta": 1e-5}},
         "config_sha256": "x", "weights_sha256": "w1"},
        {"round": 2, "sites": ["a"], "privacy": {"a": {"epsilon": 2.0, "delta": 1e-5}},
         "config_sha256": "x", "weights_sha256": "w2"},
    ]
    # The coordinator died after signing round 2 but before rewriting results.json.
    (tmp_path / "results.json").write_text(json.dumps({"rounds": [
        {"round": 1, "sites": ["a", "b"], "evaluated_by": ["a"], "weights_sha256": "w1"}]}))
    rounds = _completed_rounds(tmp_path, ledger)
    assert [r.round for r in rounds] == [1, 2]
    assert rounds[0].evaluated_by == ["a"]  # results.json's fuller record where it has one
    assert rounds[1].sites == ["a"] and rounds[1].weights_sha256 == "w2"
    assert rounds[1].privacy["a"]["epsilon"] == 2.0
    assert _completed_rounds(tmp_path / "nowhere", ledger)[1].round == 2
