"""What a coordinator checks after (or during) a run: how far it got, whether its ledger and its
model agree, and where the verified model is.

The model file is only named when its weights hash to what the ledger signed for the last
round: the coordinator hands on exactly the model the auditors can verify.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.coordinator import signed_checkpoint
from server.outdir import RunFolder
from shared.errors import InputError
from shared.ledger import key_id, load_public_key, round_records, verify_with_records
from shared.protocol import RoundRecord


@dataclass
class RunStatus:
    out_dir: Path
    rounds_planned: int | None
    status: str
    key_id: str
    ledger_ok: bool
    ledger_problem: str | None
    records: list[dict[str, Any]] = field(default_factory=list)
    # The checkpoint whose weights the ledger signed last: set whenever the ledger verifies and
    # has records (`run_status` raises rather than name a checkpoint that does not match).
    model: Path | None = None


def run_status(out_dir: Path, public_key: Path | None = None) -> RunStatus:
    out_dir = Path(out_dir)
    folder = RunFolder(out_dir)
    ledger = folder.ledger
    if not ledger.exists():
        raise InputError(ledger, "no ledger: not a coordinator's out-dir, or no round ran yet")
    key = load_public_key(public_key or folder.ledger_pub)
    verdict, bodies = verify_with_records(ledger, key)
    records = round_records(bodies)
    results_path = folder.results
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    config_path = folder.run_config
    planned = None
    if config_path.exists():
        run_config = json.loads(config_path.read_text()).get("run_config", {})
        planned = int(run_config.get("num-server-rounds", 0)) or None
    problem = None if verdict.ok else f"record {verdict.first_bad}: {verdict.reason}"
    status = RunStatus(out_dir, planned, str(results.get("status", "unknown")), key_id(key),
                       verdict.ok, problem, records)
    if records and verdict.ok:
        _, status.model = signed_checkpoint(out_dir, records[-1])
    return status


def format_status(s: RunStatus) -> list[str]:
    done = len(s.records)
    lines = [
        f"run in {s.out_dir}: {s.status}, {done} of {s.rounds_planned or '?'} rounds recorded",
        f"ledger: {'verified' if s.ledger_ok else 'DOES NOT VERIFY: ' + str(s.ledger_problem)}"
        f" (key {s.key_id})",
    ]
    if s.records:
        last = RoundRecord.from_body(s.records[-1])
        shown = []
        for pop, m in sorted(last.groups().items()):
            if m.get("suppressed"):
                shown.append(f"{pop} suppressed")
            elif last.group_auroc(pop) is not None:
                shown.append(f"{pop} {last.group_auroc(pop):.3f} (n {m.get('n', '?')})")
        lines.append(f"round {last.round} AUROC by ancestry: {', '.join(shown) or 'none'}")
        lines.append("privacy spent: " + ", ".join(
            f"{site} ε {p['epsilon']:.2f} (δ {p['delta']:g})"
            for site, p in sorted(last.privacy.items())))
    if s.model is not None:
        lines.append(f"model (weights as signed for round {s.records[-1]['round']}): {s.model}")
    return lines
