"""The coordinator's run folder (`out-dir`): every file name in it, defined once.

    ledger.jsonl           the signed round ledger (genesis, run and round records)
    results.json           the rounds as the coordinator saw them (rewritten after each round)
    run-config.json        the run config of the latest run
    checkpoints/round-NNN.pt, checkpoints/latest.pt   the global model after each round
    keys/ledger.key, keys/ledger.pub                   the default ledger signing key

Status, resumption, the demo and the benchmarks read the folder through `RunFolder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.ledger import PRIVATE_KEY_NAME, PUBLIC_KEY_NAME

LEDGER = "ledger.jsonl"
RESULTS = "results.json"
RUN_CONFIG = "run-config.json"
CHECKPOINTS = "checkpoints"
KEYS = "keys"


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def ledger(self) -> Path:
        return self.root / LEDGER

    @property
    def results(self) -> Path:
        return self.root / RESULTS

    @property
    def run_config(self) -> Path:
        return self.root / RUN_CONFIG

    def checkpoint(self, server_round: int) -> Path:
        return self.root / CHECKPOINTS / f"round-{server_round:03d}.pt"

    @property
    def latest(self) -> Path:
        return self.root / CHECKPOINTS / "latest.pt"

    @property
    def ledger_key(self) -> Path:
        return self.root / KEYS / PRIVATE_KEY_NAME

    @property
    def ledger_pub(self) -> Path:
        return self.root / KEYS / PUBLIC_KEY_NAME
