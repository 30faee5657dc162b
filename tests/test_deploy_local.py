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

from deploy.federation import ProcessGroup, flower_env, kill_tree, run_status, stop_run
from deploy.init import init_deployment
from deploy.local import start_local
from deploy.simulate import fresh_copy
from server.coordinator import Coordinator
from shared.errors import FederationError, GenofedError, InputError
from shared.ledger import load_public_key, read_records, round_records, verify_ledger
from shared.privacy import PrivacyLedger
from tests.helpers import no_stray_flower_processes, with_privacy

pytestmark = pytest.mark.integration


def wait_for(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.3)


def approval_hash() -> str:
    from flwr.cli.build import build_fab_from_disk

    from client.launcher import fab_sha256
    from deploy.federation import PROJECT_ROOT

    return fab_sha256(build_fab_from_disk(PROJECT_ROOT))


def copy_app(dst: Path) -> Path:
    from deploy.federation import PROJECT_ROOT

    shutil.copytree(PROJECT_ROOT, dst, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*-out", ".pytest_cache", ".ruff_cache", "*.egg-info"))
    return dst


def https_status(host: str, port: int, path: str, ca: str) -> int | None:
    """The HTTP status of a POST to `path` over TLS, or None if nothing listens there."""
    import http.client
    import ssl

    context = ssl.create_default_context(cafile=ca)
    context.check_hostname = False
    try:
        conn = http.client.HTTPSConnection(host, port, context=context, timeout=10)
        conn.request("POST", path, body=b"", headers={"Content-Type": "application/protobuf"})
        return conn.getresponse().status
    except (ConnectionRefusedError, OSError):
        return None


def test_loopback_federation_with_auth_tls_site_lost_and_coordinator_resumed(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    """3 registered sites, one unregistered key, one site without our CA; site-3 dies after
    round 1, the coordinator (SuperExec and its ServerApp) dies once round 2 is signed, and the
    next run resumes at round 3 (trained and, as the last, evaluated). The sites dial a proxy
    that passes only the Fleet API, and run only the app bundle they approved: a bundle with
    one line changed is refused at every site."""
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
            """Rounds in the ledger (after its genesis and run records)."""
            try:
                return len(round_records(read_records(ledger))) if ledger.exists() else 0
            except InputError:  # a record being appended right now
                return 0

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
        # Every site ran the bundle it approved, and the ledger says so, signed by the sites.
        approved = f"fab:{approval_hash()}"
        for r in read_records(ledger)[2:]:
            if r.get("kind") == "round":
                assert set(r["code"].values()) == {approved}, r["code"]
        rounds = results["rounds"]
        assert [r["round"] for r in rounds] == [1, 2, 3]  # none lost, none counted twice
        assert sorted(rounds[0]["sites"]) == ["site-1", "site-2", "site-3"]  # registered ones
        assert sorted(rounds[1]["sites"]) == ["site-1", "site-2"]  # went on without site-3
        assert sorted(rounds[2]["sites"]) == ["site-1", "site-2"]
        assert "site-4" not in json.dumps(rounds) and "site-5" not in json.dumps(rounds)
        key = load_public_key(Path(fed.root) / fed.doc["coordinator"]["ledger_pub"])
        assert verify_ledger(ledger, key).ok
        records = round_records(read_records(ledger))
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

        # The Control API is not reachable where the sites dial, only the Fleet API is; the
        # SuperLink itself listens on the coordinator's own address only.
        public = fed.doc["proxy"]["listen"]
        host, public_port = public.rsplit(":", 1)
        assert host == "127.0.0.2" != fed.doc["superlink"]["bind"] == "127.0.0.1"
        ca = str(fed.root / "certs" / "ca.crt")
        assert https_status(host, int(public_port), "/v1/control/list-runs", ca) == 403
        assert https_status(host, int(public_port), "/v1/runtime/pull-messages", ca) == 403
        assert https_status(host, int(public_port), "/v1/fleet/get-run", ca) not in (403, None)
        assert https_status(host, fed.doc["superlink"]["port"], "/", ca) is None  # refused

        # A bundle the sites did not approve (one changed line) is refused before it runs.
        tampered = copy_app(tmp_path / "tampered-app")
        site_py = tampered / "client" / "site.py"
        site_py.write_text(site_py.read_text() + "\n# changed\n")
        bad_out = tmp_path / "tampered-run"
        with pytest.raises(FederationError):
            fed.run({**overrides, "num-server-rounds": 1, "out-dir": str(bad_out),
                     # its own ledger, signed in-process: the signer keeps the main run's
                     "ledger-signer": "", "ledger-key": str(fed.root / "coordinator/ledger.key")},
                    timeout=300, app_dir=tampered)
        bad = json.loads((bad_out / "results.json").read_text())["rounds"][0]
        assert bad["sites"] == [] and bad["failure_reasons"] == {"unapproved-code": 2}
        for name in ("site-1", "site-2"):
            log = (work / "logs" / f"supernode-{name}.log").read_text()
            assert "REFUSED app bundle" in log

        wrong_ca_log = (work / "logs" / "supernode-site-5.log").read_text()
        unregistered_log = (work / "logs" / "supernode-site-4.log").read_text()
        assert wrong_ca.poll() is not None or "certificate" in wrong_ca_log.lower()
        assert "Failed to activate" in unregistered_log or unregistered.poll() not in (None, 0)
        # The dead coordinator's run never counts as completed.
        assert run_status(fed.env, first).sub_status != "completed"
    assert no_stray_flower_processes(work)
