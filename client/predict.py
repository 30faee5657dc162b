"""`genofed site predict`: a hospital scores its own people with a global model checkpoint.

Runs entirely at the site; the scores are written to a local file and sent nowhere. Everyone
listed is scored, with or without a phenotype: scoring is what a model is for.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from client.data import SitePaths
from client.settings import SiteSettings
from client.train import pick_device, predict_logits
from shared.checkpoint import load_checkpoint
from shared.cohort import read_people
from shared.encoding import encode_panel
from shared.errors import InputError
from shared.fsio import atomic_write
from shared.genotypes import harmonize_panel_genotypes, require_calls
from shared.panel import read_panel


def predict_site(checkpoint: Path, data: Path, out: Path, people: Path | None = None) -> int:
    """Write `sample_id, risk_probability` for everyone the site's cohort table (or the list
    `people`, a table with at least the sample column) names, with or without a phenotype."""
    ckpt = load_checkpoint(Path(checkpoint))
    paths = SitePaths.in_folder(data)
    paths.require(cohort=people is None)
    panel = read_panel(paths.panel)
    if ckpt.panel_sha256 and panel.sha256 != ckpt.panel_sha256:
        raise InputError(paths.panel, "panel differs from the checkpoint's")
    own = SiteSettings.load(paths.root)
    ids = read_people(people or paths.cohort, own.cohort)
    features = encode_panel(panel, paths.reference, ckpt.encoder)
    genotypes = harmonize_panel_genotypes(paths.vcf, panel, list(ids), paths.reference,
                                          own.genotypes.min_imputation_quality)
    require_calls(genotypes.codes, genotypes.found, paths.vcf)
    logits = predict_logits(ckpt.model(), genotypes.model_input, features, pick_device())
    probs = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    table = pd.DataFrame({"sample_id": ids, "risk_probability": probs})
    with atomic_write(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.6f")
    return len(table)
