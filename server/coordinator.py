"""Everything the coordinator sets up around a run: panel, model, keys, outputs, resumption, and
the verdict.

Resumption: the signed ledger is the source of truth for which rounds are done. Restarted with
the same out-dir and run config, the coordinator verifies its ledger, reloads the checkpoint of
the last recorded round (checking it against the weights hash the ledger signed) and carries on
at the next round: no round lost, none counted twice.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.outdir import RunFolder
from server.signer import RemoteLedger
from server.strategy import GenofedStrategy, initial_weights, weights_sha256
from shared.checkpoint import load_checkpoint
from shared.errors import FederationError, GenofedError, InputError
from shared.fsio import write_json
from shared.ledger import (
    Ledger,
    ensure_signing_key,
    load_private_key,
    read_records,
    round_records,
)
from shared.model import ModelConfig
from shared.panel import read_panel
from shared.protocol import RoundRecord
from shared.receipts import SiteRegistry
from shared.runconfig import RunSettings


@dataclass
class Coordinator:
    settings: RunSettings
    strategy: GenofedStrategy
    out_dir: Path

    @property
    def rounds_left(self) -> int:
        return self.settings.num_server_rounds - self.strategy.offset

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object], run_id: object = "") -> Coordinator:
        settings = RunSettings.from_run_config(run_config)
        out_dir = Path(settings.out_dir).resolve()
        panel_path = Path(settings.panel_path or Path(settings.data_root) / "panel.tsv")
        panel = read_panel(panel_path)
        cfg = settings.model_config(len(panel))
        registry = SiteRegistry.load(settings.site_registry
                                     or Path(settings.data_root) / "site-registry.json")
        ledger_path = RunFolder(out_dir).ledger
        ledger: Ledger | RemoteLedger
        if settings.ledger_signer:  # the key is in another process, which checks what it signs
            ledger = RemoteLedger(settings.ledger_signer, ledger_path)
        else:
            ledger = Ledger(ledger_path, signing_key(settings, out_dir, ledger_path))
        ledger_id = open_ledger_records(ledger, ledger_path, registry)
        weights, completed = resume_point(out_dir, settings, panel.sha256, cfg)
        strategy = GenofedStrategy(
            settings, cfg, panel.sha256, out_dir, ledger, weights, registry=registry,
            run_id=str(run_id), completed=completed, ledger_id=ledger_id,
        )
        if strategy.offset >= settings.num_server_rounds:
            raise GenofedError(f"{out_dir}: this run already completed its "
                               f"{settings.num_server_rounds} rounds")
        ledger.append({"kind": "run", "ledger_id": ledger_id, "run_id": str(run_id),
                       "config_sha256": settings.sha256(), "panel_sha256": panel.sha256,
                       "registry_sha256": registry.sha256(), "first_round": strategy.offset + 1,
                       "time": datetime.now(UTC).isoformat(timespec="seconds")})
        write_json(RunFolder(out_dir).run_config, {"run_config": dict(run_config),
                                                 "model_config": cfg.to_dict()})
        return cls(settings, strategy, out_dir)

    def finish(self) -> None:
        """Fail the run loudly unless every planned round trained and every round the schedule
        evaluates was evaluated by at least one site."""
        planned = self.settings.num_server_rounds
        self.strategy.sign_unsigned()
        rounds = self.strategy.rounds
        trained = [r for r in range(1, planned + 1) if rounds.get(r) and rounds[r].sites]
        due = [r for r in range(1, planned + 1) if self.strategy.evaluates(r)]
        evaluated = [r for r in due if rounds.get(r) and rounds[r].evaluated_by]
        results = self.strategy.results()
        ok = len(trained) == planned and len(evaluated) == len(due)
        results["status"] = "completed" if ok else "failed"
        write_json(RunFolder(self.out_dir).results, results)
        if not ok:
            raise FederationError(
                f"only {len(trained)} of {planned} rounds trained and {len(evaluated)} of "
                f"{len(due)} were evaluated; see {RunFolder(self.out_dir).results}"
            )


def signing_key(settings: RunSettings, out_dir: Path, ledger_path: Path) -> Ed25519PrivateKey:
    """The coordinator's ledger key. A configured key must exist (never silently replaced by a
    new one); the default one is made only for a ledger that does not exist yet."""
    if settings.ledger_key:
        return load_private_key(Path(settings.ledger_key))
    key = RunFolder(out_dir).ledger_key
    if not key.exists() and ledger_path.exists():
        raise GenofedError(f"{key}: missing, but {ledger_path} exists: restore the key that "
                           "signed it (a new key cannot continue that ledger)")
    ensure_signing_key(key, key.with_suffix(".pub"))
    return load_private_key(key)


def open_ledger_records(ledger: Ledger | RemoteLedger, path: Path, registry: SiteRegistry) -> str:
    """The ledger's id: from its genesis record, or a new genesis naming the id and the sites'
    public receipt keys for a new ledger."""
    if len(ledger):
        genesis = read_records(path)[0]
        if genesis.get("kind") != "genesis" or not genesis.get("ledger_id"):
            raise GenofedError(f"{path}: its first record is not a genesis record")
        return str(genesis["ledger_id"])
    ledger_id = uuid.uuid4().hex
    ledger.append({"kind": "genesis", "ledger_id": ledger_id, "sites": registry.to_json(),
                   "time": datetime.now(UTC).isoformat(timespec="seconds")})
    return ledger_id


def resume_point(
    out_dir: Path, settings: RunSettings, panel_sha256: str, cfg: ModelConfig
) -> tuple[list, list[RoundRecord]]:
    """Initial weights and completed rounds: fresh, or from the last round the ledger signed."""
    where = RunFolder(out_dir).ledger
    records = round_records(read_records(where)) if where.exists() else []
    if not records:
        return initial_weights(cfg, settings.seed), []
    last = records[-1]
    if last.get("config_sha256") != settings.sha256():
        raise GenofedError(f"{where}: recorded under another run config; use a new out-dir")
    if last.get("panel_sha256") != panel_sha256:
        raise GenofedError(f"{where}: recorded for another panel; use a new out-dir")
    weights, _ = signed_checkpoint(out_dir, last, cfg)
    return weights, _completed_rounds(out_dir, records)


def signed_checkpoint(
    out_dir: Path, record: dict, cfg: ModelConfig | None = None
) -> tuple[list, Path]:
    """The weights of a ledger record's round and their checkpoint file, refused unless they
    hash to what the ledger signed. `cfg` defaults to the checkpoint's own model config."""
    done = int(record["round"])
    ckpt = RunFolder(out_dir).checkpoint(done)
    try:
        weights = load_checkpoint(ckpt).weights(cfg)
    except (InputError, RuntimeError) as err:
        raise GenofedError(f"{ckpt}: cannot load round {done}'s model ({err})") from err
    if weights_sha256(weights) != record.get("weights_sha256"):
        raise GenofedError(f"{ckpt}: weights differ from those the ledger signed for round {done}")
    return weights, ckpt


def _completed_rounds(out_dir: Path, records: list[dict]) -> list[RoundRecord]:
    """One record per round the LEDGER signed: results.json's where it has the round, else
    rebuilt from the ledger (results.json is written after the ledger, so a coordinator killed
    in between has a ledger one round ahead of it)."""
    path = RunFolder(out_dir).results
    saved = json.loads(path.read_text()).get("rounds", []) if path.exists() else []
    by_round = {int(r["round"]): r for r in saved}
    kept = []
    for rec in records:
        source = by_round.get(int(rec["round"]), rec)
        kept.append(RoundRecord.from_body(source))
    return kept
