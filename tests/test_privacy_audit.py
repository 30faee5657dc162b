"""The empirical privacy audit (one training run): its bound, its power, and the site's claim."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from client.budget import SiteBudget
from client.site import Site
from deploy.bench.canary_audit import (
    AuditSetup,
    audit_scores,
    canary_people_audit,
    epsilon_lower_bound,
    gradient_canary_audit,
)
from deploy.simulate import fresh_copy
from shared.runconfig import RunSettings

SMALL = dict(batch_size=32, local_epochs=1, model_dim=16, model_layers=1, suppression_k=5,
             num_server_rounds=1)


def test_lower_bound_matches_the_pure_dp_closed_form() -> None:
    """All r guesses right with delta = 0: P[Binomial(r, q) = r] = q^r <= 0.05 gives
    q = 0.05^(1/r) and epsilon = log(q / (1 - q))."""
    for r in (10, 100, 1000):
        q = 0.05 ** (1 / r)
        assert epsilon_lower_bound(r, r, r, 0.0) == pytest.approx(math.log(q / (1 - q)), rel=1e-6)
    assert epsilon_lower_bound(100, 100, 50, 1e-5) == 0.0  # chance level proves nothing
    # delta loosens the bound, and more canaries guessed right tighten it
    assert epsilon_lower_bound(1000, 1000, 1000, 1e-5) < epsilon_lower_bound(1000, 1000, 1000, 0)
    assert epsilon_lower_bound(100, 100, 90, 1e-5) < epsilon_lower_bound(1000, 1000, 900, 1e-5)


def test_guessing_uses_the_extremes() -> None:
    rng = np.random.default_rng(0)
    included = rng.random(400) < 0.5
    perfect = audit_scores(included.astype(float) + rng.normal(0, 0.01, 400), included, 1e-5)
    assert perfect["correct"] == perfect["r"] and perfect["epsilon_lb"] > 2
    noise = audit_scores(rng.normal(size=400), included, 1e-5)
    assert noise["epsilon_lb"] < 0.5


@pytest.fixture(scope="module")
def setup(tiny_cohort: Path, tmp_path_factory: pytest.TempPathFactory) -> AuditSetup:
    site_dir = fresh_copy(tiny_cohort / "site-1", tmp_path_factory.mktemp("audit") / "s")
    settings = RunSettings(**SMALL)
    site = Site(site_dir, settings)
    data = site.data()
    g, y, _ = data.split("train")
    cfg = settings.model_config(len(data.panel))
    return AuditSetup(genotypes=g, labels=y, features=data.features, model_cfg=cfg,
                      batch_size=64, epochs=4, learning_rate=0.5, max_grad_norm=1.0,
                      accountant="rdp")  # faster to calibrate; the bench audits PRV


def test_the_audit_catches_noise_the_coordinator_can_replay(setup: AuditSetup) -> None:
    """Seeded as the reviewed code seeded it, the site's noise is replayed by the coordinator
    and the canaries are told apart: the lower bound exceeds the claimed epsilon."""
    result = gradient_canary_audit(setup, 2.0, m=200, public_seed_training=True,
                                   rng=np.random.default_rng(1))
    assert result["scorers"]["replay"]["epsilon_lb"] > 2.0


def test_the_sites_dp_sgd_holds_its_claim_against_both_scorers(setup: AuditSetup) -> None:
    for claimed in (1.0, 2.0):
        result = gradient_canary_audit(setup, claimed, m=200, rng=np.random.default_rng(2))
        for name, scored in result["scorers"].items():
            assert scored["epsilon_lb"] <= claimed, (name, scored)


def test_canary_people_attack_on_everything_the_coordinator_receives(
        tiny_cohort: Path, tmp_path: Path) -> None:
    site_dir = fresh_copy(tiny_cohort / "site-1", tmp_path / "s")
    settings = RunSettings(**SMALL, target_epsilon=2.0)
    result = canary_people_audit(site_dir, settings, m=120, rng=np.random.default_rng(3),
                                 budget=SiteBudget(accountant="rdp", max_epsilon=2.0,
                                                   min_group_size=1))
    assert result["included"] > 30
    claimed = result["epsilon_after_evaluation"]
    assert 0 < claimed <= 2.0 * 1.001
    for name, scored in result["scorers"].items():
        assert scored["r"] > 0 and scored["epsilon_lb"] <= claimed, (name, scored)
