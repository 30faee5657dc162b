"""A real TLS federation on loopback: flower-superlink with --enable-supernode-auth, registered
flower-supernodes, the app through flwr run; and what a real consortium must survive."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
from pathlib import Path

import pytest

from deploy.federation import ProcessGroup, flower_env, kill_tree
from deploy.init import init_deployment
from deploy.local import start_local
from shared.ledger import load_public_key, read_records, verify_ledger
from tests.conftest import fresh_copy
from tests.test_federation import no_stray_flower_processes

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_loopback_federation_with_auth_tls_and_a_site_lost(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    cohort = fresh_copy(tiny_cohort, tmp_path / "cohort")
    for extra, src in (("site-3", "site-2"), ("site-4", "site-1"), ("site-5", "site-1")):
        shutil.copytree(cohort / src, cohort / extra)
    work = tmp_path / "work"
    other_ca = init_deployment(tmp_path / "other", ["x"], host="localhost")["root"]
    with ProcessGroup(flower_env(work / "flwr-home"), work / "logs") as group:
        fed = start_local(work, [f"site-{i}" for i in range(1, 6)], cohort, group)
        for name in ("site-1", "site-2", "site-3"):
            fed.register(name)
        nodes = {name: fed.start_site(name) for name in ("site-1", "site-2", "site-3")}
        unregistered = fed.start_site("site-4")  # its key was never registered
        wrong_ca = fed.start_site("site-5", ca=Path(other_ca) / "certs" / "ca.crt")

        out = Path(fed.doc["coordinator"]["run_config"]["out-dir"])
        ledger = out / "ledger.jsonl"

        def lose_site_3() -> None:  # site-3's machine dies once round 1 is recorded
            wait_for(lambda: ledger.exists() and ledger.read_bytes().count(b"\n") >= 1, 400,
                     "round 1")
            kill_tree(nodes["site-3"].pid, signal.SIGKILL)

        killer = threading.Thread(target=lose_site_3, daemon=True)
        time.sleep(4)  # let the registered SuperNodes activate before round 1 samples them
        killer.start()
        fed.run({"num-server-rounds": 2, "min-sites": 2, "round-timeout": 45.0,
                 "panel-path": str(cohort / "panel.tsv"), "batch-size": 32, "model-dim": 16,
                 "model-layers": 1, "suppression-k": 5}, timeout=600)
        killer.join(5)

        results = json.loads((out / "results.json").read_text())
        assert results["status"] == "completed"
        rounds = results["rounds"]
        assert sorted(rounds[0]["sites"]) == ["site-1", "site-2", "site-3"]  # registered ones
        assert sorted(rounds[1]["sites"]) == ["site-1", "site-2"]  # the run went on without 3
        assert "site-4" not in json.dumps(rounds) and "site-5" not in json.dumps(rounds)
        key = load_public_key(Path(fed.root) / fed.doc["coordinator"]["ledger_pub"])
        assert verify_ledger(ledger, key).ok and len(read_records(ledger)) == 2

        wrong_ca_log = (work / "logs" / "supernode-site-5.log").read_text()
        unregistered_log = (work / "logs" / "supernode-site-4.log").read_text()
        assert wrong_ca.poll() is not None or "certificate" in wrong_ca_log.lower()
        assert "Failed to activate" in unregistered_log or unregistered.poll() not in (None, 0)
    assert no_stray_flower_processes(work)
