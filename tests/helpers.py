"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path


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
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            blob = (proc / "cmdline").read_bytes() + (proc / "environ").read_bytes()
        except OSError:
            continue
        if str(marker).encode() in blob:
            return False
    return True
