"""`genofed site predict`: a hospital scores its own people with a global model checkpoint.

Runs entirely at the site; the scores are written to a local file and sent nowhere. Everyone
listed is scored, with or without a phenotype: scoring is what a model is for. With `explain`,
each person's few strongest variants (`shared.explain.patient_reasons`) join their row in that
same file: per-person reasons are the site's own, like the scores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from client.data import SitePaths
from client.settings import SiteSettings
from client.train import pick_device, predict_logits
from shared.checkpoint import load_checkpoint
from shared.cohort import CohortSpec, read_people, read_people_ancestry
from shared.encoding import encode_panel
from shared.errors import InputError
from shared.explain import patient_reasons, variant_names
from shared.fsio import atomic_write
from shared.genotypes import harmonize_panel_genotypes, require_calls
from shared.panel import read_panel


def predict_site(checkpoint: Path, data: Path, out: Path, people: Path | None = None,
                 explain: int = 0) -> int:
    """Write `sample_id, risk_probability, calibration` for everyone the site's cohort table
    (or the list `people`, a table with at least the sample column) names, with or without a
    phenotype. The probability is recalibrated with the checkpoint's per-ancestry fit where the
    table gives the person's ancestry and the fit exists (`calibration` names the fit used:
    the ancestry, "overall", or "none" for the model's raw probability). With `explain` = K > 0,
    also reason_i, genotype_i and logit_i for i = 1..K."""
    ckpt = load_checkpoint(Path(checkpoint))
    paths = SitePaths.in_folder(data)
    paths.require(cohort=people is None)
    panel = read_panel(paths.panel)
    if ckpt.panel_sha256 and panel.sha256 != ckpt.panel_sha256:
        raise InputError(paths.panel, "panel differs from the checkpoint's")
    own = SiteSettings.load(paths.root)
    table_path = people or paths.cohort
    ids = read_people(table_path, own.cohort)
    ancestry = _ancestry(ids, table_path, paths.cohort, own.cohort)
    features = encode_panel(panel, paths.reference, ckpt.encoder)
    genotypes = harmonize_panel_genotypes(paths.genotypes, panel, list(ids), paths.reference,
                                          own.genotypes.min_imputation_quality)
    require_calls(genotypes.codes, genotypes.found, paths.vcf)
    model = ckpt.model()
    logits = predict_logits(model, genotypes.model_input, features, pick_device())
    calibrated, used = ckpt.calibration().apply(logits, ancestry)
    probs = 1.0 / (1.0 + np.exp(-calibrated))
    table = pd.DataFrame({"sample_id": ids, "risk_probability": probs, "calibration": used})
    if explain > 0:  # genotype swaps act on calls: imputed dosages enter as their nearest call
        reasons = patient_reasons(model.cpu(), features, np.asarray(genotypes.codes),
                                  variant_names(panel), explain)
        table = pd.concat([table, reasons], axis=1)
    with atomic_write(out) as fh:
        table.to_csv(fh, sep="\t", index=False, float_format="%.6f")
    return len(table)


def _ancestry(ids: np.ndarray, table: Path, cohort: Path, spec: CohortSpec) -> np.ndarray | None:
    """Each person's ancestry label: from the table scored, else (a `--people` list without
    the column) from the site's cohort table, so a person's calibrated risk does not depend on
    which list named them."""
    labels = read_people_ancestry(table, spec)
    if labels is not None or table == cohort or not cohort.exists():
        return labels
    known = read_people_ancestry(cohort, spec)
    if known is None:
        return None
    by_id = dict(zip(read_people(cohort, spec), known, strict=True))
    return np.array([by_id.get(i, "") for i in ids], dtype=object).astype(str)
