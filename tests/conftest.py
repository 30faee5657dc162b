"""Shared fixtures: small but real cohorts, simulated once per test session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from deploy.simulate import SimulationConfig, simulate_cohort

TINY = SimulationConfig(
    seed=7, sites=2, people_per_population=150, sequence_length=300_000, panel_size=48,
    n_causal=8, n_interactions=2, prevalence=0.3,
)


@pytest.fixture(scope="session")
def tiny_cohort(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-site cohort (450 people, 48 panel variants) written as real VCF/FASTA/TSV files."""
    from deploy.simulate import register_sites

    out = tmp_path_factory.mktemp("cohort") / "cohort"
    simulate_cohort(out, TINY)
    register_sites(out)  # each site makes its keys; the coordinator's registry of them
    return out


@pytest.fixture()
def site(tiny_cohort: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny cohort's site-1's data (the large reference hard-linked: no
    test modifies it)."""
    dst = tmp_path / "site"
    dst.mkdir()
    for src in (tiny_cohort / "site-1").iterdir():
        if src.is_dir():  # the site's state (its keys): not data
            continue
        if src.name.startswith("reference.fa"):
            try:
                os.link(src, dst / src.name)
                continue
            except OSError:
                pass
        shutil.copy2(src, dst / src.name)
    return dst
