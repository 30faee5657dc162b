"""Everything the coordinator sets up around a run: panel, model, keys, outputs, the verdict."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from server.strategy import GenofedStrategy, initial_weights
from shared.encoding import model_config
from shared.errors import FederationError
from shared.fsio import write_json
from shared.ledger import Ledger, ensure_signing_key, load_private_key
from shared.panel import read_panel
from shared.runconfig import RunSettings


@dataclass
class Coordinator:
    settings: RunSettings
    strategy: GenofedStrategy
    out_dir: Path

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> Coordinator:
        settings = RunSettings.from_run_config(run_config)
        out_dir = Path(settings.out_dir).resolve()
        panel_path = Path(settings.panel_path or Path(settings.data_root) / "panel.tsv")
        panel = read_panel(panel_path)
        cfg = model_config(len(panel), settings.encoder(), **settings.architecture())
        key = Path(settings.ledger_key) if settings.ledger_key else out_dir / "keys" / "ledger.key"
        ensure_signing_key(key, key.with_suffix(".pub"))
        ledger = Ledger(out_dir / "ledger.jsonl", load_private_key(key))
        strategy = GenofedStrategy(
            settings, cfg, panel.sha256, out_dir, ledger, initial_weights(cfg, settings.seed)
        )
        write_json(out_dir / "run-config.json", {"run_config": dict(run_config),
                                                 "model_config": cfg.to_dict()})
        return cls(settings, strategy, out_dir)

    def finish(self) -> None:
        """Fail the run loudly unless every planned round trained and was evaluated."""
        planned = self.settings.num_server_rounds
        rounds = self.strategy.rounds
        trained = [r for r in range(1, planned + 1) if rounds.get(r) and rounds[r].sites]
        evaluated = [r for r in range(1, planned + 1) if rounds.get(r) and rounds[r].metrics]
        results = self.strategy.results()
        ok = len(trained) == planned and len(evaluated) == planned
        results["status"] = "completed" if ok else "failed"
        write_json(self.out_dir / "results.json", results)
        if not ok:
            raise FederationError(
                f"only {len(trained)} of {planned} rounds trained and {len(evaluated)} were "
                f"evaluated; see {self.out_dir / 'results.json'}"
            )
