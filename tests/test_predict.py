"""A site scores its own people from a checkpoint, locally and atomically."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from client.predict import predict_site
from shared.calibration import Recalibration
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.cohort import read_cohort
from shared.encoding import EncoderSettings, model_config
from shared.errors import InputError
from shared.model import RiskTransformer
from shared.panel import read_panel
from tests.helpers import additive_checkpoint


def write_checkpoint(path: Path, site: Path, panel_sha: str,
                     encoder: EncoderSettings | None = None) -> Checkpoint:
    encoder = encoder or EncoderSettings()
    cfg = model_config(len(read_panel(site / "panel.tsv")), encoder, dim=16, layers=1)
    torch.manual_seed(0)
    ckpt = Checkpoint.of(RiskTransformer(cfg), 1, encoder, "run-config-hash", panel_sha)
    ckpt.save(path)
    return ckpt


def test_checkpoint_round_trip_keeps_every_encoder_setting(tiny_cohort: Path,
                                                           tmp_path: Path) -> None:
    site = tiny_cohort / "site-2"
    encoder = EncoderSettings(context_bases=5, kmer_size=2, kmer_stride=2)
    saved = write_checkpoint(tmp_path / "m.pt", site, "p" * 64, encoder)
    loaded = load_checkpoint(tmp_path / "m.pt")
    assert loaded.encoder == encoder and loaded.model_config == saved.model_config
    assert (loaded.round, loaded.panel_sha256, loaded.run_config_sha256) == (
        1, "p" * 64, "run-config-hash")
    assert all(torch.equal(a, b) for a, b in zip(
        loaded.model().state_dict().values(), saved.state_dict.values(), strict=True))
    (tmp_path / "cut.pt").write_bytes((tmp_path / "m.pt").read_bytes()[:500])
    with pytest.raises(InputError, match="cut.pt.*not a genofed checkpoint"):
        load_checkpoint(tmp_path / "cut.pt")


def test_predict_writes_one_score_per_person(tiny_cohort: Path, tmp_path: Path) -> None:
    site = tiny_cohort / "site-2"
    ckpt = tmp_path / "model.pt"
    write_checkpoint(ckpt, site, read_panel(site / "panel.tsv").sha256)
    out = tmp_path / "scores.tsv"
    n = predict_site(ckpt, site, out)
    table = pd.read_csv(out, sep="\t")
    assert n == len(table) == len(read_cohort(site / "cohort.tsv"))
    assert list(table.columns) == ["sample_id", "risk_probability", "calibration"]
    assert table.risk_probability.between(0, 1).all()
    assert table.risk_probability.nunique() > 1
    assert set(table.calibration) == {"none"}  # a checkpoint no site has evaluated yet


def test_predict_applies_the_checkpoints_recalibration_by_ancestry(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    """A checkpoint carrying per-ancestry fits: each person's risk is sigmoid(a + b * logit)
    with their ancestry's fit, the pooled fit for an ancestry without one, and the same risk
    whether the full cohort table or a `--people` list without the ancestry column named them."""
    site = tiny_cohort / "site-2"
    raw_ckpt = tmp_path / "raw.pt"
    ckpt = write_checkpoint(raw_ckpt, site, read_panel(site / "panel.tsv").sha256)
    raw_out = tmp_path / "raw.tsv"
    predict_site(raw_ckpt, site, raw_out)
    raw = pd.read_csv(raw_out, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    cohort = read_cohort(site / "cohort.tsv")
    groups = sorted(set(cohort.ancestry))
    fitted, pooled = groups[0], (-0.7, 0.5)
    recal = Recalibration({fitted: (1.5, 2.0)}, pooled)
    cal_ckpt = tmp_path / "cal.pt"
    ckpt.recalibrated(recal).save(cal_ckpt)
    assert load_checkpoint(cal_ckpt).calibration() == recal
    out = tmp_path / "cal.tsv"
    predict_site(cal_ckpt, site, out)
    cal = pd.read_csv(out, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    logit = np.log(raw.risk_probability / (1 - raw.risk_probability))
    ancestry = pd.Series(cohort.ancestry, index=cohort.sample_id.astype(str))
    for sid in cal.index:
        a, b = (1.5, 2.0) if ancestry[sid] == fitted else pooled
        assert cal.calibration[sid] == (fitted if ancestry[sid] == fitted else "overall")
        assert cal.risk_probability[sid] == pytest.approx(
            1 / (1 + np.exp(-(a + b * logit[sid]))), abs=2e-6)
    wanted = list(cal.index[::-2])
    (tmp_path / "people.csv").write_text("sample_id\n" + "\n".join(wanted) + "\n")
    predict_site(cal_ckpt, site, out, people=tmp_path / "people.csv")
    listed = pd.read_csv(out, sep="\t", dtype={"sample_id": str}).set_index("sample_id")
    assert np.allclose(listed.risk_probability, cal.risk_probability.loc[wanted], atol=2e-6)
    assert (listed.calibration == cal.calibration.loc[wanted]).all()


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


def test_predict_scores_everyone_listed_and_writes_nothing_into_the_data(
    tiny_cohort: Path, tmp_path: Path
) -> None:
    """People without a phenotype are scored too; a scoring list needs only the sample
    column; a FASTA without its .fai is refused, not indexed in the (read-only) data folder."""
    site = tmp_path / "site"
    shutil.copytree(tiny_cohort / "site-2", site, ignore=shutil.ignore_patterns(".genofed-*"))
    lines = (site / "cohort.tsv").read_text().splitlines()
    col = lines[0].split("\t").index("phenotype")
    f = lines[1].split("\t")
    f[col] = "NA"  # this person's phenotype is not known yet: the reason to score them
    lines[1] = "\t".join(f)
    (site / "cohort.tsv").write_text("\n".join(lines) + "\n")
    ckpt = tmp_path / "model.pt"
    write_checkpoint(ckpt, site, read_panel(site / "panel.tsv").sha256)
    before = {p.name: p.stat().st_mtime_ns for p in site.iterdir()}
    out = tmp_path / "scores.tsv"
    assert predict_site(ckpt, site, out) == len(lines) - 1
    scored = pd.read_csv(out, sep="\t", dtype={"sample_id": str})
    assert scored.sample_id.tolist() == [line.split("\t")[0] for line in lines[1:]]
    # A list of people to score: the sample column alone, in its own order.
    wanted = scored.sample_id.tolist()[::-3]
    (tmp_path / "people.csv").write_text("sample_id\n" + "\n".join(wanted) + "\n")
    assert predict_site(ckpt, site, out, people=tmp_path / "people.csv") == len(wanted)
    again = pd.read_csv(out, sep="\t", dtype={"sample_id": str})
    assert again.sample_id.tolist() == wanted
    assert np.allclose(again.risk_probability.to_numpy(),
                       scored.set_index("sample_id").loc[wanted].risk_probability.to_numpy())
    (site / "reference.fa.fai").unlink()
    before.pop("reference.fa.fai")
    with pytest.raises(InputError, match="no .fai index"):
        predict_site(ckpt, site, out)
    assert {p.name: p.stat().st_mtime_ns for p in site.iterdir()} == before


def test_site_predict_command(tiny_cohort: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    """`genofed site predict` end to end: one line saying what it wrote, or one clear error."""
    from shared.cli import main

    site = tiny_cohort / "site-2"
    ckpt = tmp_path / "model.pt"
    write_checkpoint(ckpt, site, read_panel(site / "panel.tsv").sha256)
    out = tmp_path / "scores.tsv"
    (tmp_path / "few.tsv").write_text("sample_id\n" + read_cohort(site / "cohort.tsv")
                                      .sample_id[0] + "\n")
    argv = ["site", "predict", "--model", str(ckpt), "--data", str(site), "--out", str(out)]
    assert main([*argv, "--people", str(tmp_path / "few.tsv")]) == 0
    assert capsys.readouterr().out == f"wrote 1 risk scores to {out}\n"
    assert main([*argv[:2], "--model", str(tmp_path / "none.pt"), *argv[4:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "none.pt: checkpoint not found" in err


def test_predict_explain_adds_each_persons_strongest_variants(tiny_cohort: Path,
                                                              tmp_path: Path) -> None:
    """A checkpoint whose logit is w_j * a_j(g) alone: every carrier's first reason is variant
    j, moved by exactly w_j * dosage / sd_j from the all-hom-ref genotype (a missing call, the
    panel's expected dosage 2p); the reasons stay in the site's own file."""
    site = tiny_cohort / "site-2"
    panel = read_panel(site / "panel.tsv")
    j, w = 7, np.zeros(len(panel))
    w[j], w[j + 20] = 2.0, 0.1
    ckpt, out = tmp_path / "model.pt", tmp_path / "scores.tsv"
    additive_checkpoint(ckpt, site / "panel.tsv", w)
    n = predict_site(ckpt, site, out, explain=2)
    table = pd.read_csv(out, sep="\t", dtype={"genotype_1": str, "genotype_2": str})
    assert n == len(table)
    assert list(table.columns) == ["sample_id", "risk_probability", "calibration", "reason_1",
                                   "genotype_1", "logit_1", "reason_2", "genotype_2", "logit_2"]
    name = f"{panel.chrom[j]}:{panel.pos[j]}:{panel.ref[j]}:{panel.alt[j]}"
    p = float(np.clip(panel.af[j], 0.01, 0.99))
    sd = np.sqrt(2 * p * (1 - p))
    carriers = table[table.reason_1 == name]
    assert 0 < len(carriers) < len(table)
    dose = carriers.genotype_1.map(lambda g: 2 * p if g == "." else float(g))
    assert np.allclose(carriers.logit_1, w[j] * dose / sd, atol=1e-4)
    assert (carriers.genotype_1 != "0").all()
    assert not list(site.glob("*scores*"))  # nothing written beside the data
