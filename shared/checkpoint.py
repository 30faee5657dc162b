"""The global model's checkpoint: what the coordinator writes after each round, what a site
scores its people with and what the coordinator resumes from. Written and read only here.

A checkpoint is a `torch.save` of plain tensors, numbers and strings, so it loads with
`weights_only=True` (no pickled code runs). It carries everything needed to rebuild the model
and to encode a site's genotypes the way the model was trained: the model config, the encoder
settings, and the hashes of the panel and run config it belongs to.
"""

from __future__ import annotations

import pickle
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from shared.calibration import Recalibration
from shared.encoding import EncoderSettings
from shared.errors import InputError
from shared.fsio import atomic_write
from shared.model import ModelConfig, RiskTransformer, get_weights


@dataclass(frozen=True)
class Checkpoint:
    round: int
    model_config: ModelConfig
    encoder: EncoderSettings
    state_dict: dict[str, torch.Tensor]
    run_config_sha256: str
    panel_sha256: str
    # Per-ancestry recalibration fitted from the DP evaluation of exactly these weights
    # (`shared.calibration`); empty until the sites have scored them.
    recalibration: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, model: RiskTransformer, server_round: int, encoder: EncoderSettings,
           run_config_sha256: str, panel_sha256: str) -> Checkpoint:
        return cls(server_round, model.cfg, encoder, model.state_dict(), run_config_sha256,
                   panel_sha256)

    def model(self, cfg: ModelConfig | None = None) -> RiskTransformer:
        """The model, built from `cfg` (default: the checkpoint's own config)."""
        model = RiskTransformer(cfg or self.model_config)
        model.load_state_dict(self.state_dict)
        return model

    def weights(self, cfg: ModelConfig | None = None) -> list[np.ndarray]:
        return get_weights(self.model(cfg))

    def recalibrated(self, recalibration: Recalibration) -> Checkpoint:
        return replace(self, recalibration=recalibration.to_dict())

    def calibration(self) -> Recalibration:
        return Recalibration.from_dict(self.recalibration)

    def save(self, path: Path) -> None:
        """Atomically: a reader never sees half a checkpoint."""
        doc: dict[str, Any] = {
            "round": self.round,
            "model_config": self.model_config.to_dict(),
            "encoder": asdict(self.encoder),
            "state_dict": self.state_dict,
            "run_config_sha256": self.run_config_sha256,
            "panel_sha256": self.panel_sha256,
            "recalibration": self.recalibration,
        }
        with atomic_write(path, "wb") as fh:
            torch.save(doc, fh)


def load_checkpoint(path: Path) -> Checkpoint:
    """The checkpoint at `path`; `InputError` naming the file if it is missing or not ours."""
    path = Path(path)
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        return Checkpoint(
            round=int(doc["round"]),
            model_config=ModelConfig(**doc["model_config"]),
            encoder=EncoderSettings(**doc["encoder"]),
            state_dict=dict(doc["state_dict"]),
            run_config_sha256=str(doc.get("run_config_sha256", "")),
            panel_sha256=str(doc.get("panel_sha256", "")),
            recalibration=dict(doc.get("recalibration") or {}),
        )
    except FileNotFoundError as err:
        raise InputError(path, "checkpoint not found") from err
    except (RuntimeError, KeyError, TypeError, ValueError, OSError, pickle.UnpicklingError) as err:
        raise InputError(path, f"not a genofed checkpoint ({str(err).splitlines()[0]})") from err
