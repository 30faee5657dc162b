"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import psutil
import pysam


def generous(cohort: Path) -> Path:
    """The tiny cohort's sites with a large budget and a floor of 1: only then are its handful
    of held-out people per group large enough for a DP evaluation to show them. The RDP
    accountant (a few times faster to calibrate than PRV) keeps the integration tests quick;
    tests/test_privacy.py checks PRV itself."""
    return with_privacy(cohort, 'max-epsilon = 50.0\nmin-group-size = 1\naccountant = "rdp"')


def with_privacy(cohort: Path, settings: str) -> Path:
    """Every site of `cohort` with these `[privacy]` settings in its site.toml."""
    for site in (p for p in cohort.glob("site-*") if p.is_dir()):
        toml = (site / "site.toml").read_text()
        (site / "site.toml").write_text(f"[privacy]\n{settings}\n" + toml)
    return cohort


def no_stray_flower_processes(marker: Path) -> bool:
    """No process left whose command line or environment mentions this run's folder."""
    needle = str(marker)
    for proc in psutil.process_iter():
        try:
            if needle in " ".join(proc.cmdline()) or any(
                    needle in value for value in proc.environ().values()):
                return False
        except psutil.Error:  # exited meanwhile, or a zombie
            continue
    return True


def site_files(site: Path, vcf: str = "genotypes.vcf.gz") -> dict[str, Path]:
    return {"vcf": site / vcf, "cohort": site / "cohort.tsv", "panel": site / "panel.tsv",
            "reference": site / "reference.fa"}


def vcf_lines(path: Path) -> list[str]:
    with pysam.BGZFile(str(path), "rb") as fh:
        return fh.read().decode().splitlines()


def header_end(lines: list[str]) -> int:
    """Index of the #CHROM line."""
    return next(i for i, line in enumerate(lines) if line.startswith("#CHROM"))


def write_vcf(site: Path, lines: list[str], tmp: Path, *, index: bool = True) -> Path:
    """bgzip `lines` into the site's genotypes.vcf.gz (old index removed), tabix it if asked."""
    plain = tmp / "plain.vcf"
    plain.write_text("\n".join(lines) + "\n")
    out = site / "genotypes.vcf.gz"
    for old in (out, Path(f"{out}.tbi"), Path(f"{out}.csi")):
        old.unlink(missing_ok=True)
    pysam.tabix_compress(str(plain), str(out), force=True)
    if index:
        pysam.tabix_index(str(out), preset="vcf", force=True)
    return out


def additive_checkpoint(path: Path, panel_path: Path, w: np.ndarray) -> None:
    """A checkpoint on the panel whose logit is w . a(g): every other weight zero."""
    import torch

    from shared.checkpoint import Checkpoint
    from shared.encoding import EncoderSettings, model_config
    from shared.model import RiskTransformer
    from shared.panel import read_panel

    panel = read_panel(panel_path)
    encoder = EncoderSettings()
    cfg = model_config(len(panel), encoder, dim=8, layers=1, heads=2)
    model = RiskTransformer(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.additive.weight.copy_(torch.as_tensor(w, dtype=torch.float32)[None, :])
    Checkpoint.of(model, 3, encoder, "run-config-hash", panel.sha256).save(path)
