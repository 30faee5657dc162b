"""Helpers several test modules share (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import psutil


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
