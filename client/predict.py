"""`genofed site predict`: a hospital scores its own people with a global model checkpoint.

Runs entirely at the site; the scores are written to a local file and sent nowhere.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from client.data import load_site
from client.train import pick_device, predict_logits
from shared.encoding import EncoderSettings
from shared.errors import InputError
from shared.fsio import atomic_write
from shared.model import ModelConfig, RiskTransformer


def load_checkpoint(path: Path) -> tuple[RiskTransformer, EncoderSettings, str]:
    """Model, encoder settings and panel hash from a coordinator checkpoint (no pickle code)."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        cfg = ModelConfig(**doc["model_config"])
        encoder = EncoderSettings(**doc["encoder"])
        model = RiskTransformer(cfg)
        model.load_state_dict(doc["state_dict"])
    except FileNotFoundError as err:
        raise InputError(path, "checkpoint not found") from err
    except (RuntimeError, KeyError, TypeError, ValueError, OSError, pickle.UnpicklingError) as err:
        raise InputError(path, f"not a genofed checkpoint ({str(err).splitlines()[0]})") from err
    return model, encoder, str(doc.get("panel_sha256", ""))


def predict_site(checkpoint: Path, data: Path, out: Path) -> int:
    """Write `sample_id, risk_probability` for everyone in the site's cohort table."""
    model, encoder, panel_sha = load_checkpoint(Path(checkpoint))
    site = load_site(data, encoder)
    if panel_sha and site.panel.sha256 != panel_sha:
        raise InputError(Path(data) / "panel.tsv", "panel differs from the checkpoint's")
    logits = predict_logits(model, site.genotypes, site.features, pick_device())
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    table = pd.DataFrame({"sample_id": site.cohort.sample_id, "risk_probability": probs})
    with atomic_write(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.6f")
    return len(table)
