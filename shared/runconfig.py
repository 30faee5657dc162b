"""The federated run's configuration, as both coordinator and sites read it.

Flower hands each app a flat `run_config` (from `[tool.flwr.app.config]` in pyproject.toml plus
`--run-config` overrides). Parsing it in one place keeps the coordinator and the sites agreeing
on the model architecture and training settings; its hash goes into every ledger record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

from shared.encoding import EncoderSettings
from shared.encoding import model_config as _model_config
from shared.model import ModelConfig

AGGREGATIONS = ("fedavg", "fedmedian", "fedtrimmedavg", "krum")
OPTIMIZERS = ("sgd", "adam")  # a site's local DP-SGD update rule (client.train.local_optimizer)
# Which rounds' global models the sites score on their held-out people. Every evaluation is a
# DP release the sites pay for, so by default only the final model is scored.
EVALUATE_ROUNDS = ("last", "all")


@dataclass(frozen=True)
class RunSettings:
    num_server_rounds: int = 5
    min_sites: int = 2
    local_epochs: int = 4
    batch_size: int = 64
    max_steps_per_epoch: int = 10  # a larger site grows its batch instead; 0 = no cap
    optimizer: str = "sgd"  # sgd (momentum 0.9) | adam
    learning_rate: float = 0.05
    max_grad_norm: float = 1.0
    target_epsilon: float = 8.0
    target_delta: float = 1e-5
    model_dim: int = 32
    model_layers: int = 2
    model_heads: int = 4
    attention: str = "full"
    attention_window: int = 32
    context_bases: int = 8
    kmer_size: int = 3
    suppression_k: int = 10
    evaluate_rounds: str = "last"  # last | all
    score_center: float = 0.0  # logit the evaluation histograms are binned around
    seed: int = 0  # the initial weights' (public); never a source of any site's DP noise
    data_root: str = "demo-out/cohort"
    out_dir: str = "demo-out/run"
    panel_path: str = ""  # coordinator's panel; default "<data-root>/panel.tsv"
    ledger_key: str = ""  # coordinator's Ed25519 key; default "<out-dir>/keys/ledger.key"
    site_registry: str = ""  # sites' public receipt keys; default "<data-root>/site-registry.json"
    ledger_signer: str = ""  # the ledger signer's socket; set, the ServerApp never holds the key
    secagg: bool = False
    aggregation: str = "fedavg"  # fedavg | fedmedian | fedtrimmedavg | krum
    max_update_norm: float = 0.0  # L2 bound on (site weights - global weights); 0 = no bound
    round_timeout: float = 0.0  # seconds to wait for sites in a round; 0 = wait for all

    @classmethod
    def from_run_config(cls, run_config: Mapping[str, object]) -> RunSettings:
        """Parse Flower's dashed keys; unknown keys are an error, not silently ignored."""
        known = {f.name: f for f in fields(cls)}
        values: dict[str, object] = {}
        for key, value in run_config.items():
            name = key.replace("-", "_")
            if name not in known:
                raise ValueError(f"unknown run config key {key!r}")
            kind = type(getattr(cls(), name))
            if kind is bool and isinstance(value, str):
                value = value.lower() in ("1", "true", "yes")
            values[name] = kind(value)
        settings = cls(**values)  # type: ignore[arg-type]
        if settings.suppression_k < 1:
            raise ValueError("suppression-k must be at least 1")
        if settings.max_steps_per_epoch < 0:
            raise ValueError("max-steps-per-epoch must be 0 (no cap) or more")
        if settings.evaluate_rounds not in EVALUATE_ROUNDS:
            raise ValueError(f"evaluate-rounds must be one of {', '.join(EVALUATE_ROUNDS)}")
        if not abs(settings.score_center) <= 20:
            raise ValueError("score-center must be a logit within +-20")
        if settings.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
        if settings.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}")
        if settings.secagg and settings.min_sites < 3:
            raise ValueError("SecAgg+ needs min-sites >= 3: with two, each site can subtract "
                             "its own update from the sum and learn the other's")
        if settings.secagg and settings.aggregation != "fedavg":
            raise ValueError("robust aggregation needs each site's update; SecAgg+ hides them")
        return settings

    def encoder(self) -> EncoderSettings:
        return EncoderSettings(context_bases=self.context_bases, kmer_size=self.kmer_size)

    def model_config(self, n_variants: int) -> ModelConfig:
        """The model these settings train on a panel of `n_variants`."""
        return _model_config(n_variants, self.encoder(), **self.architecture())

    def architecture(self) -> dict[str, object]:
        return {
            "dim": self.model_dim,
            "layers": self.model_layers,
            "heads": self.model_heads,
            "attention": self.attention,
            "window": self.attention_window,
        }

    def sha256(self) -> str:
        """Hash of everything that defines the run (paths excluded: they differ by machine)."""
        local = ("data_root", "out_dir", "panel_path", "ledger_key", "site_registry",
                 "ledger_signer")
        doc = {k: v for k, v in asdict(self).items() if k not in local}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
