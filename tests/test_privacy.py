"""Cumulative DP accounting: persistence, composition, calibration against Opacus."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from opacus.accountants.utils import get_noise_multiplier

from shared.errors import InputError
from shared.privacy import PrivacyLedger, calibrate_noise, epsilon_for, gaussian_release

DELTA = 1e-5


def test_ledger_persists_and_epsilon_only_grows(tmp_path: Path) -> None:
    path = tmp_path / "state" / "privacy-ledger.json"
    ledger = PrivacyLedger.load(path)
    assert ledger.epsilon(DELTA) == 0.0
    eps = []
    for _ in range(3):
        ledger.record((1.1, 0.02, 50))
        eps.append(ledger.epsilon(DELTA))
        ledger = PrivacyLedger.load(path)  # a restart between rounds
        assert ledger.epsilon(DELTA) == pytest.approx(eps[-1])
    assert eps[0] > 0 and eps[0] < eps[1] < eps[2]
    assert len(json.loads(path.read_text())["history"]) == 3


def test_projection_equals_recording(tmp_path: Path) -> None:
    ledger = PrivacyLedger.load(tmp_path / "l.json")
    ledger.record((1.0, 0.05, 40))
    projected = ledger.projected_epsilon(DELTA, (1.0, 0.05, 40))
    ledger.record((1.0, 0.05, 40))
    assert ledger.epsilon(DELTA) == pytest.approx(projected)


@pytest.mark.parametrize("accountant", ["prv", "rdp"])
def test_calibration_agrees_with_opacus_for_a_fresh_site(accountant: str) -> None:
    ours = calibrate_noise(3.0, DELTA, 0.0159, 630, accountant=accountant, tol=0.005)
    opacus = get_noise_multiplier(target_epsilon=3.0, target_delta=DELTA, sample_rate=0.0159,
                                  steps=630, accountant=accountant, epsilon_tolerance=0.005)
    assert ours == pytest.approx(opacus, abs=0.02)
    assert epsilon_for([(ours, 0.0159, 630)], DELTA, accountant) <= 3.0


def test_calibration_accounts_for_earlier_runs_and_rounds() -> None:
    prior = [(0.8, 0.05, 100)]
    fresh = calibrate_noise(6.0, DELTA, 0.05, 20, blocks=5)
    after = calibrate_noise(6.0, DELTA, 0.05, 20, prior=prior, blocks=5)
    assert after > fresh  # budget already partly spent: more noise needed
    assert epsilon_for(prior + [(after, 0.05, 20)] * 5, DELTA, "prv") <= 6.0
    with pytest.raises(ValueError, match="already spent"):
        calibrate_noise(0.5, DELTA, 0.05, 20, prior=prior)


def test_corrupt_or_mismatched_ledger_is_one_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "l.json"
    path.write_text("{not json")
    with pytest.raises(InputError, match="unreadable privacy ledger"):
        PrivacyLedger.load(path)
    PrivacyLedger(path=path, accountant="rdp").save()
    with pytest.raises(InputError, match="rdp accountant"):
        PrivacyLedger.load(path, accountant="prv")


def analytic_gaussian_epsilon(sigma: float, delta: float) -> float:
    """Balle & Wang (2018): the exact epsilon of the Gaussian mechanism with sensitivity 1,
    solved from delta(eps) = Phi(1/(2s) - eps*s) - e^eps * Phi(-1/(2s) - eps*s)."""
    from scipy.optimize import brentq
    from scipy.stats import norm

    def excess(eps: float) -> float:
        return (norm.cdf(0.5 / sigma - eps * sigma)
                - np.exp(eps) * norm.cdf(-0.5 / sigma - eps * sigma) - delta)

    return brentq(excess, 1e-9, 100.0)


@pytest.mark.parametrize("sigma", [1.0, 2.0, 5.0])
def test_a_gaussian_release_costs_what_the_gaussian_mechanism_costs(sigma: float) -> None:
    """Released counts and histograms enter the accountant as a subsampled Gaussian at rate 1:
    the plain Gaussian mechanism, whose exact epsilon is known in closed form."""
    for accountant, slack in (("prv", 0.02), ("rdp", None)):
        eps = epsilon_for([gaussian_release(sigma)], DELTA, accountant)
        exact = analytic_gaussian_epsilon(sigma, DELTA)
        if slack is None:
            assert eps >= exact  # RDP is an upper bound, never below the truth
        else:
            assert eps == pytest.approx(exact, abs=slack)


def test_releases_compose_with_training_and_raise_its_noise() -> None:
    """A run that also plans evaluations must calibrate more DP-SGD noise for the same epsilon,
    and what it records stays within that epsilon."""
    evaluations = [gaussian_release(2.0)] * 3
    plain = calibrate_noise(6.0, DELTA, 0.05, 20, blocks=3)
    with_evals = calibrate_noise(6.0, DELTA, 0.05, 20, blocks=3, also=evaluations)
    assert with_evals > plain
    assert epsilon_for([(with_evals, 0.05, 20)] * 3 + evaluations, DELTA, "prv") <= 6.0
