"""A real federation through Flower's simulation engine: SuperLink, ServerApp, ClientApps."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import deploy.federation
from deploy.federation import run_simulation
from deploy.simulate import fresh_copy
from shared.calibration import Recalibration
from shared.checkpoint import load_checkpoint
from shared.cli import main as cli_main
from shared.errors import FederationError
from shared.ledger import load_public_key, read_records, round_records, verify_ledger
from tests.helpers import generous, no_stray_flower_processes, with_privacy

pytestmark = pytest.mark.integration


def overrides(cohort: Path, out: Path, **extra: object) -> dict[str, object]:
    return {
        "num-server-rounds": 2, "min-sites": 2, "data-root": str(cohort), "out-dir": str(out),
        "batch-size": 32, "local-epochs": 1, "model-dim": 16, "model-layers": 1,
        "suppression-k": 5, **extra,
    }


def test_two_sites_two_rounds(
    tiny_cohort: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "run"
    cohort = generous(fresh_copy(tiny_cohort, tmp_path / "cohort"))
    # Every status check is a `flwr ls` process (~1 CPU-second) competing with the sites:
    # the end of the log stream must be what tells us the run finished, not polling.
    status_checks = []
    real_run_status = deploy.federation.run_status

    def counted_run_status(env: dict[str, str], run_id: int) -> deploy.federation.RunOutcome:
        status_checks.append(run_id)
        return real_run_status(env, run_id)

    monkeypatch.setattr(deploy.federation, "run_status", counted_run_status)
    began = time.monotonic()
    outcome = run_simulation(overrides(cohort, out, **{"target-epsilon": 50.0}), 2,
                             tmp_path / "fed", timeout=600)
    elapsed = time.monotonic() - began
    assert outcome.ok
    assert 1 <= len(status_checks) <= 1 + elapsed / deploy.federation.STATUS_POLL_S
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed"
    rounds = results["rounds"]
    assert [r["round"] for r in rounds] == [1, 2]
    for r in rounds:
        assert sorted(r["sites"]) == ["site-1", "site-2"]
        for p in r["privacy"].values():
            assert p["epsilon"] > 0 and p["delta"] == 1e-5
        assert not {"train_s", "evaluate_s", "train_loss"} & set(r)  # nothing exact leaves
    # Only the final model is scored (the default schedule): a DP release the sites pay for.
    assert rounds[0]["metrics"] is None and rounds[0]["evaluated_by"] == []
    assert sorted(rounds[1]["evaluated_by"]) == ["site-1", "site-2"]
    assert rounds[1]["metrics"]["by_group"] and rounds[1]["metrics"]["dp"]["mechanism"]
    # Each site's own seconds of work stay in its own log: trained twice, then scored.
    for site in ("site-1", "site-2"):
        log = [json.loads(line) for line in
               (cohort / site / ".genofed-state" / "activity.jsonl").read_text().splitlines()]
        assert [e["event"] for e in log] == ["train", "train", "evaluate"]
        assert all(0 < e.get("train_s", e.get("evaluate_s")) < elapsed for e in log)
        assert log[1]["train_ended_at"] < log[2]["evaluate_ended_at"] <= time.time()
    eps = {s: [r["privacy"][s]["epsilon"] for r in rounds] for s in ("site-1", "site-2")}
    assert all(e[1] > e[0] for e in eps.values())  # cumulative, never reset
    assert all(e[-1] <= 50.0 for e in eps.values())
    assert (out / "checkpoints" / "round-002.pt").exists()
    # The final model carries the recalibration its DP evaluation fits (what `site predict`
    # turns into calibrated risk), the ledger's own numbers.
    latest = load_checkpoint(out / "checkpoints" / "latest.pt")
    assert latest.round == 2
    assert latest.calibration() == Recalibration.from_metrics(rounds[1]["metrics"])
    shown = [g for g, m in rounds[1]["metrics"]["by_group"].items() if not m.get("suppressed")]
    assert sorted(latest.calibration().by_group) == sorted(shown)
    key = load_public_key(out / "keys" / "ledger.pub")
    ledger = verify_ledger(out / "ledger.jsonl", key)
    # genesis (ledger id, site registry), this run's record, then one record per round
    assert ledger.ok and ledger.records == 4
    bodies = read_records(out / "ledger.jsonl")
    assert [b.get("kind") for b in bodies] == ["genesis", "run", "round", "round"]
    assert [b["round"] for b in round_records(bodies)] == [1, 2]
    # The real run's ledger: change one recorded epsilon and verification names that record.
    lines = (out / "ledger.jsonl").read_bytes().splitlines(keepends=True)
    at = lines[2].index(b'"epsilon":') + len(b'"epsilon":')
    digit = lines[2][at:at + 1]
    assert digit.isdigit()
    edited = lines[2][:at] + str((int(digit) + 1) % 10).encode() + lines[2][at + 1:]
    (out / "tampered.jsonl").write_bytes(lines[0] + lines[1] + edited)
    bad = verify_ledger(out / "tampered.jsonl", key)
    assert not bad.ok and bad.first_bad == 2
    assert no_stray_flower_processes(tmp_path / "fed")

    # The coordinator's view: rounds, verified ledger, and the model the ledger signed.
    assert cli_main(["coordinator", "status", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "completed, 2 of 2 rounds recorded" in shown and "ledger: verified" in shown
    assert f"model (weights as signed for round 2): {out / 'checkpoints' / 'round-002.pt'}" in shown
    for site in ("site-1", "site-2"):
        assert f"{site} ε {eps[site][-1]:.2f}" in shown
    # A checkpoint swapped for other weights is refused, in one line, exit non-zero.
    shutil.copyfile(out / "checkpoints" / "round-001.pt", out / "checkpoints" / "round-002.pt")
    assert cli_main(["coordinator", "status", str(out)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "differ from those the ledger signed for round 2" in err[0]
    (out / "ledger.jsonl").write_bytes(lines[0] + edited)  # and a tampered ledger
    assert cli_main(["coordinator", "status", str(out)]) == 1
    assert "DOES NOT VERIFY: record 1" in capsys.readouterr().out


def test_failed_run_is_loud(tiny_cohort: Path, tmp_path: Path) -> None:
    """Sites that cannot find their data make every round fail: the run must not pass as done."""
    bad = overrides(tiny_cohort / "no-such-folder", tmp_path / "run", **{"num-server-rounds": 1})
    bad["panel-path"] = str(tiny_cohort / "panel.tsv")
    bad["site-registry"] = str(tiny_cohort / "site-registry.json")
    with pytest.raises(FederationError, match="ended finished:failed"):
        run_simulation(bad, 2, tmp_path / "fed", timeout=600)
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["status"] == "failed"
    assert no_stray_flower_processes(tmp_path / "fed")


def test_cli_exit_code_on_failure(tmp_path: Path) -> None:
    """`genofed` turns a failure into one line and a non-zero exit, not a traceback."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent)}
    proc = subprocess.run(
        [sys.executable, "-m", "shared.cli", "site", "check", "--data", str(tmp_path / "nope")],
        capture_output=True, text=True, env=env,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "site data folder not found" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_one_site_federation_completes(tiny_cohort: Path, tmp_path: Path) -> None:
    cohort = with_privacy(fresh_copy(tiny_cohort, tmp_path / "cohort"), 'accountant = "rdp"')
    out = tmp_path / "run"
    settings = overrides(cohort, out, **{"num-server-rounds": 1, "min-sites": 1})
    assert run_simulation(settings, 1, tmp_path / "fed", timeout=300).ok
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed" and results["rounds"][0]["sites"] == ["site-1"]
