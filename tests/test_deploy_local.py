"""A real TLS federation on loopback: flower-superlink with --enable-supernode-auth, registered
flower-supernodes, the app through flwr run; and what a real consortium must survive."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from deploy.demo import fresh_copy
from deploy.federation import ProcessGroup, flower_env, kill_tree, run_status, stop_run
from deploy.init import init_deployment
from deploy.local import start_local
from server.coordinator import Coordinator
from shared.errors import GenofedError
from shared.ledger import load_public_key, read_records, verify_ledger
from shared.privacy import PrivacyLedger
from tests.helpers import no_stray_flower_processes, with_privacy

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def test_loopback_federation_with_auth_tls_site_lost_and_coordinator_resumed(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    """3 registered sites, one unregistered key, one site without our CA; site-3 dies after
    round 1, the coordinator (SuperExec and its ServerApp) dies once round 2 is signed, and the
    next run resumes at round 3 (trained and, as the last, evaluated)."""
    cohort = with_privacy(fresh_copy(tiny_cohort, tmp_path / "cohort"), 'accountant = "rdp"')
    for extra, src in (("site-3", "site-2"), ("site-4", "site-1"), ("site-5", "site-1")):
        shutil.copytree(cohort / src, cohort / extra)
    work = tmp_path / "work"
    other_ca = init_deployment(tmp_path / "other", ["x"], host="localhost")["root"]
    with ProcessGroup(flower_env(work / "flwr-home"), work / "logs") as group:
        fed = start_local(work, [f"site-{i}" for i in range(1, 6)], cohort, group)
        port = fed.doc["superlink"]["port"]
        stranger = subprocess.run(
            ["flower-superexec", "--runtime-api-address", f"127.0.0.1:{port}",
             "--root-certificates", str(fed.root / "certs" / "ca.crt")],
            env=flower_env(tmp_path / "stranger"), capture_output=True, text=True, timeout=60)
        # Without the SuperExec secret the Runtime API turns a would-be ServerApp away.
        assert "401" in (work / "logs" / "superlink.log").read_text(), stranger.stdout[-500:]
        for name in ("site-1", "site-2", "site-3"):
            fed.register(name)
        nodes = {name: fed.start_site(name) for name in ("site-1", "site-2", "site-3")}
        unregistered = fed.start_site("site-4")  # its key was never registered
        wrong_ca = fed.start_site("site-5", ca=Path(other_ca) / "certs" / "ca.crt")

        out = Path(fed.doc["coordinator"]["run_config"]["out-dir"])
        ledger = out / "ledger.jsonl"
        overrides = {"num-server-rounds": 3, "min-sites": 2, "round-timeout": 30.0,
                     "panel-path": str(cohort / "panel.tsv"), "batch-size": 32,
                     "local-epochs": 1, "model-dim": 16, "model-layers": 1, "suppression-k": 5}

        def recorded() -> int:
            return ledger.read_bytes().count(b"\n") if ledger.exists() else 0

        time.sleep(4)  # let the registered SuperNodes activate before round 1 samples them
        first = fed.submit(overrides)
        # Round 1 is aggregated: its checkpoint is written before round 2's instructions go out.
        wait_for((out / "checkpoints" / "round-001.pt").exists, 400, "round 1")
        kill_tree(nodes["site-3"].pid, signal.SIGKILL)  # site-3's machine dies
        # Round 2 enters the ledger once it is aggregated (only the last round is scored).
        wait_for(lambda: recorded() >= 2, 400, "round 2")
        superexec = json.loads((work / "logs" / "pids.json").read_text())["superexec"]
        kill_tree(superexec, signal.SIGKILL)  # the coordinator dies without warning
        assert recorded() == 2
        # The operator's restart: stop the orphaned run (so the sites drop its pending round),
        # start the coordinator again, submit the same run config.
        stop_run(fed.env, first)
        fed.start_coordinator()
        fed.run(overrides, timeout=600)  # a new run: resumes at round 3 from the signed ledger

        results = json.loads((out / "results.json").read_text())
        assert results["status"] == "completed"
        rounds = results["rounds"]
        assert [r["round"] for r in rounds] == [1, 2, 3]  # none lost, none counted twice
        assert sorted(rounds[0]["sites"]) == ["site-1", "site-2", "site-3"]  # registered ones
        assert sorted(rounds[1]["sites"]) == ["site-1", "site-2"]  # went on without site-3
        assert sorted(rounds[2]["sites"]) == ["site-1", "site-2"]
        assert "site-4" not in json.dumps(rounds) and "site-5" not in json.dumps(rounds)
        key = load_public_key(Path(fed.root) / fed.doc["coordinator"]["ledger_pub"])
        assert verify_ledger(ledger, key).ok
        records = read_records(ledger)
        assert [r["round"] for r in records] == [1, 2, 3]
        for name in ("site-1", "site-2"):
            eps = [r["privacy"][name]["epsilon"] for r in records]
            assert eps == sorted(eps) and eps[0] > 0
            spent = PrivacyLedger.load(work / "site-state" / name / "privacy-ledger.json", "rdp")
            # A site counts every step it took, including a round the dead coordinator never
            # recorded: its own account is never below what the ledger shows.
            assert spent.epsilon(1e-5) >= eps[-1] - 1e-9
        with pytest.raises(GenofedError, match="already completed"):
            Coordinator.from_run_config({**fed.doc["coordinator"]["run_config"], **overrides})

        wrong_ca_log = (work / "logs" / "supernode-site-5.log").read_text()
        unregistered_log = (work / "logs" / "supernode-site-4.log").read_text()
        assert wrong_ca.poll() is not None or "certificate" in wrong_ca_log.lower()
        assert "Failed to activate" in unregistered_log or unregistered.poll() not in (None, 0)
        # The dead coordinator's run never counts as completed.
        assert run_status(fed.env, first).sub_status != "completed"
    assert no_stray_flower_processes(work)
