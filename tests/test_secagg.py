"""Flower SecAgg+ as a switch: same model as plain FedAvg up to quantization; dropouts tolerated."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from client.randomness import SIMULATION_SEED_ENV
from deploy.federation import run_simulation
from deploy.simulate import fresh_copy, register_sites
from tests.helpers import generous

pytestmark = pytest.mark.integration

# SecAgg+ quantizes each update to 2**22 levels over [-8, 8] (step 3.8e-6) before masking.
TOLERANCE = 1e-4


def overrides(cohort: Path, out: Path, sites: int, **extra: object) -> dict[str, object]:
    return {"num-server-rounds": 1, "min-sites": sites, "data-root": str(cohort),
            "out-dir": str(out), "batch-size": 32, "local-epochs": 1, "model-dim": 16,
            "model-layers": 1, "suppression-k": 5, "target-epsilon": 50.0, **extra}


def round_one(out: Path) -> dict[str, torch.Tensor]:
    return torch.load(out / "checkpoints" / "round-001.pt", weights_only=True)["state_dict"]


def three_sites(tiny_cohort: Path, dst: Path) -> Path:
    cohort = fresh_copy(tiny_cohort, dst)
    shutil.copytree(cohort / "site-2", cohort / "site-3",
                    ignore=shutil.ignore_patterns(".genofed-state"))  # a site of its own
    register_sites(cohort)
    return cohort


def test_secagg_survives_a_dropout_and_matches_plain_fedavg(
    tiny_cohort: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Plain FedAvg over sites 1-3, then SecAgg+ over sites 1-4 where site-4 fails in the middle
    of each round (after the key exchange, when it must train: it cannot open its data). With
    reconstruction threshold three, the other three sites' masked sum is still recovered, and it
    is the plain run's model up to SecAgg+'s quantization. For that comparison the sites' DP
    noise is made reproducible (`GENOFED_SIMULATION_SEED`, the sites' own environment: a test
    where every site runs here), so each site's update depends only on its data, its name and
    the round."""
    monkeypatch.setenv(SIMULATION_SEED_ENV, "11")
    plain_cohort = generous(three_sites(tiny_cohort, tmp_path / "cohort-plain"))
    run_simulation(overrides(plain_cohort, tmp_path / "run-plain", 3), 3, tmp_path / "fed-plain",
                   timeout=600)
    cohort = generous(three_sites(tiny_cohort, tmp_path / "cohort-secagg"))
    shutil.copytree(cohort / "site-1", cohort / "site-4",
                    ignore=shutil.ignore_patterns(".genofed-state"))
    register_sites(cohort)
    (cohort / "site-4" / "genotypes.vcf.gz.tbi").unlink()  # it fails when it opens its data
    out = tmp_path / "run-secagg"
    run_simulation(overrides(cohort, out, 4, secagg=True), 4, tmp_path / "fed-secagg",
                   timeout=600)
    results = json.loads((out / "results.json").read_text())
    assert results["status"] == "completed"
    assert sorted(results["rounds"][0]["sites"]) == ["site-1", "site-2", "site-3"]
    # The final model was scored by the three sites that could (the default schedule).
    last = results["rounds"][-1]
    assert sorted(last["evaluated_by"]) == ["site-1", "site-2", "site-3"]
    assert last["metrics"]["by_group"]
    assert last["declined"].get("site-4") == "data-error"  # told by category only
    plain, masked = round_one(tmp_path / "run-plain"), round_one(out)
    worst = max(float((plain[k] - masked[k]).abs().max()) for k in plain)
    assert worst < TOLERANCE
    assert any(float((plain[k] - masked[k]).abs().max()) > 0 for k in plain)  # really masked


def test_secagg_with_two_sites_is_refused() -> None:
    from shared.runconfig import RunSettings

    with pytest.raises(ValueError, match="min-sites >= 3"):
        RunSettings.from_run_config({"secagg": True, "min-sites": 2})
