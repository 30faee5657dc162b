"""`genofed site predict`: a hospital scores its own people with a global model checkpoint.

Runs entirely at the site; the scores are written to a local file and sent nowhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from client.data import load_site
from client.train import pick_device, predict_logits
from shared.checkpoint import load_checkpoint
from shared.errors import InputError
from shared.fsio import atomic_write


def predict_site(checkpoint: Path, data: Path, out: Path) -> int:
    """Write `sample_id, risk_probability` for everyone in the site's cohort table."""
    ckpt = load_checkpoint(Path(checkpoint))
    model, encoder, panel_sha = ckpt.model(), ckpt.encoder, ckpt.panel_sha256
    site = load_site(data, encoder)
    if panel_sha and site.panel.sha256 != panel_sha:
        raise InputError(Path(data) / "panel.tsv", "panel differs from the checkpoint's")
    logits = predict_logits(model, site.genotypes, site.features, pick_device())
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    table = pd.DataFrame({"sample_id": site.cohort.sample_id, "risk_probability": probs})
    with atomic_write(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.6f")
    return len(table)
