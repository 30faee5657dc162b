"""The federated run's configuration, as both coordinator and sites read it.

Flower hands each app a flat `run_config` (from `[tool.flwr.app.config]` in pyproject.toml plus
`--run-config` overrides). Parsing it in one place keeps the coordinator and the sites agreeing
on the model architecture and training settings; its hash goes into every ledger record.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from shared.encoding import EncoderSettings
from shared.encoding import model_config as _model_config
from shared.model import ModelConfig

AGGREGATIONS = ("fedavg", "fedmedian", "fedtrimmedavg", "krum")
OPTIMIZERS = ("sgd", "adam")  # a site's local DP-SGD update rule (client.train.local_optimizer)
# Which rounds' global models the sites score on their held-out people. Every evaluation is a
# DP release the sites pay for, so by default only the final model is scored.
EVALUATE_ROUNDS = ("last", "all")
# Where the sites' evaluation histograms put their bins (shared.metrics): fixed bins cannot rank
# a model whose scores sit outside them, so by default they follow the model (public inputs).
SCORE_CENTERINGS = ("panel", "fixed")


def setting(default: object, doc: str) -> Any:
    """A run config key's default and its one-line meaning (the README's key table)."""
    return field(default=default, metadata={"doc": doc})


@dataclass(frozen=True)
class RunSettings:
    # Rounds
    num_server_rounds: int = setting(5, "rounds to run")
    min_sites: int = setting(2, "sites a round needs")
    round_timeout: float = setting(0.0, "seconds to wait for the sites in a round (0: for all)")
    # DP training at each site
    local_epochs: int = setting(4, "local epochs per round")
    batch_size: int = setting(64, "expected DP-SGD batch (Poisson sampling)")
    max_steps_per_epoch: int = setting(
        10, "a larger site grows its batch so an epoch takes at most this many steps (0: no cap)")
    optimizer: str = setting("sgd", "`sgd` (momentum 0.9) or `adam`")
    learning_rate: float = setting(0.05, "local learning rate")
    max_grad_norm: float = setting(1.0, "per-person gradient clipping norm")
    target_epsilon: float = setting(8.0, "the run's ε; a site's own `max-epsilon` may be lower")
    target_delta: float = setting(1e-5, "the run's δ; a site's own `delta` may be lower")
    seed: int = setting(0, "the initial weights' seed (public; never a source of DP noise)")
    # The model
    model_dim: int = setting(32, "transformer width")
    model_layers: int = setting(2, "transformer blocks")
    model_heads: int = setting(4, "attention heads")
    attention: str = setting("full", "`full`, or `local` within `attention-window` variants")
    attention_window: int = setting(32, "variants a `local` attention sees on each side")
    context_bases: int = setting(8, "reference bases on each side of a variant")
    kmer_size: int = setting(3, "k of the context's k-mer tokens")
    # Evaluation (each a DP release the sites pay for)
    evaluate_rounds: str = setting("last", "rounds whose model the sites score: `last` or `all`")
    score_centering: str = setting(
        "panel", "`panel`: the sites bin scores around the model's median logit over people drawn "
        "from the panel's public allele frequencies; `fixed`: around `score-center`")
    score_center: float = setting(0.0, "logit the evaluation histograms are binned around "
                                       "(`fixed`, or a panel without allele frequencies)")
    suppression_k: int = setting(10, "withhold smaller groups (raises each site's floor)")
    # Aggregation
    aggregation: str = setting(
        "fedavg", "`fedavg`, `fedmedian`, `fedtrimmedavg` or `krum` (robust ones see updates)")
    secagg: bool = setting(False, "SecAgg+ (3+ sites): the coordinator sees only the sum")
    max_update_norm: float = setting(
        0.0, "refuse a site update farther than this (L2) from the global weights (0: no bound)")
    # Files (machine-local: not part of the run's hash)
    data_root: str = setting("demo-out/cohort", "the simulated sites' folders (simulation only)")
    out_dir: str = setting("demo-out/run", "the coordinator's run folder; a rerun resumes it")
    panel_path: str = setting("", "the variant panel (default `<data-root>/panel.tsv`)")
    ledger_key: str = setting("", "the ledger's signing key (default `<out-dir>/keys/ledger.key`)")
    site_registry: str = setting(
        "", "the sites' public receipt keys (default `<data-root>/site-registry.json`)")
    ledger_signer: str = setting(
        "", "the ledger signer's socket: set, the ServerApp never holds the key")

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
        if settings.score_centering not in SCORE_CENTERINGS:
            raise ValueError(f"score-centering must be one of {', '.join(SCORE_CENTERINGS)}")
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

    @classmethod
    def key_table(cls) -> list[tuple[str, object, str]]:
        """(run config key, default, meaning) of every setting, in declaration order."""
        return [(f.name.replace("_", "-"), f.default, f.metadata["doc"]) for f in fields(cls)]

    def sha256(self) -> str:
        """Hash of everything that defines the run (paths excluded: they differ by machine)."""
        local = ("data_root", "out_dir", "panel_path", "ledger_key", "site_registry",
                 "ledger_signer")
        doc = {k: v for k, v in asdict(self).items() if k not in local}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()
