"""A coordinator killed after round k and restarted resumes at round k+1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deploy.federation import kill_tree, run_simulation
from shared.errors import GenofedError
from shared.ledger import load_public_key, read_records, verify_ledger
from shared.privacy import PrivacyLedger
from tests.conftest import fresh_copy

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parent.parent


def overrides(cohort: Path, out: Path) -> dict[str, object]:
    return {"num-server-rounds": 3, "min-sites": 2, "data-root": str(cohort), "out-dir": str(out),
            "batch-size": 32, "model-dim": 16, "model-layers": 1, "suppression-k": 5}


def test_killed_coordinator_resumes_at_the_next_round(tiny_cohort: Path, tmp_path: Path) -> None:
    cohort, out = fresh_copy(tiny_cohort, tmp_path / "cohort"), tmp_path / "run"
    ledger = out / "ledger.jsonl"
    script = (f"from deploy.federation import kill_tree, run_simulation as r; "
              f"r({overrides(cohort, out)!r}, 2, __import__('pathlib').Path({str(tmp_path)!r}) "
              f"/ 'fed-1', timeout=600)")
    first = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (ledger.exists() and ledger.read_bytes().count(b"\n") >= 1):
        assert first.poll() is None, "the first run ended before its first round"
        assert time.monotonic() < deadline
        time.sleep(0.2)
    # Kill the coordinator (the SuperLink and the ServerApp under it) without warning.
    pids = json.loads((tmp_path / "fed-1" / "logs" / "pids.json").read_text())
    kill_tree(pids["superlink"], signal.SIGKILL)
    assert first.wait(120) != 0  # the supervisor notices and fails loudly
    done_before = len(read_records(ledger))
    assert 1 <= done_before < 3

    run_simulation(overrides(cohort, out), 2, tmp_path / "fed-2", timeout=600)
    records = read_records(ledger)
    assert [r["round"] for r in records] == [1, 2, 3]  # none lost, none twice
    assert verify_ledger(ledger, load_public_key(out / "keys" / "ledger.pub")).ok
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed" and len(results["rounds"]) == 3
    for site in ("site-1", "site-2"):
        eps = [r["privacy"][site]["epsilon"] for r in records]
        assert eps == sorted(eps)
        spent = PrivacyLedger.load(cohort / site / ".genofed-state" / "privacy-ledger.json")
        assert spent.epsilon(1e-5) == pytest.approx(eps[-1])  # the site's own account agrees

    with pytest.raises(GenofedError, match="already completed"):
        from server.coordinator import Coordinator

        Coordinator.from_run_config(overrides(cohort, out))
