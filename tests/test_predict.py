"""A site scores its own people from a checkpoint, locally and atomically."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from client.predict import predict_site
from shared.cohort import read_cohort
from shared.encoding import EncoderSettings, model_config
from shared.errors import InputError
from shared.model import RiskTransformer
from shared.panel import read_panel


def write_checkpoint(path: Path, site: Path, panel_sha: str) -> None:
    encoder = EncoderSettings()
    cfg = model_config(len(read_panel(site / "panel.tsv")), encoder, dim=16, layers=1)
    torch.manual_seed(0)
    torch.save({"round": 1, "model_config": cfg.to_dict(),
                "state_dict": RiskTransformer(cfg).state_dict(), "panel_sha256": panel_sha,
                "encoder": {"context_bases": encoder.context_bases,
                            "kmer_size": encoder.kmer_size}}, path)


def test_predict_writes_one_score_per_person(tiny_cohort: Path, tmp_path: Path) -> None:
    site = tiny_cohort / "site-2"
    ckpt = tmp_path / "model.pt"
    write_checkpoint(ckpt, site, read_panel(site / "panel.tsv").sha256)
    out = tmp_path / "scores.tsv"
    n = predict_site(ckpt, site, out)
    table = pd.read_csv(out, sep="\t")
    assert n == len(table) == len(read_cohort(site / "cohort.tsv"))
    assert list(table.columns) == ["sample_id", "risk_probability"]
    assert table.risk_probability.between(0, 1).all()
    assert table.risk_probability.nunique() > 1


def test_predict_refuses_other_panel_and_bad_checkpoint(tiny_cohort: Path, tmp_path: Path) -> None:
    site = tiny_cohort / "site-2"
    ckpt = tmp_path / "model.pt"
    write_checkpoint(ckpt, site, "0" * 64)
    out = tmp_path / "scores.tsv"
    with pytest.raises(InputError, match="panel differs"):
        predict_site(ckpt, site, out)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="not a genofed checkpoint"):
        predict_site(bad, site, out)
    assert not out.exists()
