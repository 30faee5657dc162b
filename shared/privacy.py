"""Cumulative differential-privacy accounting that survives rounds, runs and restarts.

Flower's Opacus example builds a fresh PrivacyEngine every round, so the epsilon it reports
covers one round. A site must instead compose every release ever made from its data. The
`PrivacyLedger` keeps Opacus' accountant history, `(noise_multiplier, sample_rate, steps)`, in a
JSON file on the site, rewritten atomically, and computes epsilon with Opacus' own accountants
(PRV by default: tighter than RDP at the same noise; lab notebook, "PRV accountant instead of
RDP").

Every kind of release is an entry of that one history: a DP-SGD block is `(sigma, q, steps)`; a
Gaussian release of counts or histograms whose L2 sensitivity is 1 (one person moves one cell
by one) is `(sigma, 1.0, 1)`, the subsampled Gaussian at sampling rate 1, i.e. the plain
Gaussian mechanism. Composition over all of them is what the site's epsilon reports.
"""

from __future__ import annotations

import functools
import json
import math
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shared.errors import InputError
from shared.fsio import write_json

ACCOUNTANTS = ("prv", "rdp")
_MAX_SIGMA = 1e4

Entry = tuple[float, float, int]  # (noise multiplier, sample rate, steps)


def gaussian_release(sigma: float, sensitivity: float = 1.0) -> Entry:
    """The history entry of one Gaussian release with noise `sigma` on every coordinate and
    L2 sensitivity `sensitivity`: the same mechanism as noise sigma / sensitivity at 1."""
    return (float(sigma) / float(sensitivity), 1.0, 1)


def rho_for(epsilon: float, delta: float) -> float:
    """The zero-concentrated DP budget rho whose (epsilon, delta) conversion is `epsilon`:
    epsilon = rho + 2 sqrt(rho log(1/delta)) (Bun & Steinke 2016).

    Used only to SPLIT a budget between releases (Gaussian mechanisms' rho add up: one with
    sensitivity 1 and noise sigma costs 1 / (2 sigma^2)); what a site spends is always
    composed exactly by the accountant.
    """
    root = math.sqrt(epsilon + math.log(1 / delta)) - math.sqrt(math.log(1 / delta))
    return root * root


def sigma_for_share(share: float, epsilon: float, delta: float, releases: int = 1) -> float:
    """Noise of each of `releases` sensitivity-1 Gaussian releases that together take `share`
    of the budget (epsilon, delta), counted in rho."""
    return math.sqrt(releases / (2 * share * rho_for(epsilon, delta)))


def compact(history: list[Entry]) -> list[Entry]:
    """The same composition with one entry per (noise multiplier, sample rate): steps add up.

    Composition does not depend on order, and k steps then m steps of one mechanism are k + m
    steps of it. The PRV accountant pays per entry (an FFT composition each: 1.3 s for 3 entries,
    24 s for 30 here), so a site's ledger after many rounds of one run would otherwise make every
    epsilon query, and every noise calibration, slower round after round.
    """
    steps: dict[tuple[float, float], int] = {}
    for s, q, n in history:
        key = (float(s), float(q))
        steps[key] = steps.get(key, 0) + int(n)
    return [(s, q, n) for (s, q), n in steps.items()]


def epsilon_for(history: list[Entry], delta: float, accountant: str) -> float:
    """Epsilon at `delta` after composing every entry of `history`."""
    if not history:
        return 0.0
    # Imported here: only a site that trains needs Opacus, scoring and evaluating do not.
    from opacus.accountants import create_accountant

    acc = create_accountant(accountant)
    acc.history = compact(history)
    # PRV at sample rate 1 (a plain Gaussian release) takes log(0) on a branch it then discards.
    with np.errstate(divide="ignore"):
        return float(acc.get_epsilon(delta=delta))


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    sample_rate: float,
    steps: int,
    accountant: str = "prv",
    prior: list[Entry] | None = None,
    blocks: int = 1,
    tol: float = 0.01,
    also: list[Entry] | None = None,
) -> float:
    """Smallest noise multiplier for `blocks` rounds of `steps` at `sample_rate`, after `prior`
    and with the other releases the run plans (`also`, e.g. its evaluations) composed in.

    A root search over Opacus' accountant rather than `get_noise_multiplier`, because the latter
    cannot compose with what the site already spent in earlier runs. The rounds are composed
    exactly as they will be recorded (`epsilon_for` compacts both the same way), and the result
    is checked against the target, so the calibrated run ends at the target and not a PRV
    rounding error past it. Brent's method: each PRV query costs about a second, and Brent
    needs about half the queries bisection does. Never below 0.3.
    """
    from scipy.optimize import brentq

    prior = list(prior or []) + list(also or [])
    # RDP bounds PRV from above and is quick: only a prior it calls spent needs the exact check.
    if prior and epsilon_for(prior, delta, "rdp") >= target_epsilon and \
            epsilon_for(prior, delta, accountant) >= target_epsilon:
        raise ValueError("the privacy budget is already spent")

    @functools.cache
    def excess(sigma: float) -> float:
        history = prior + [(sigma, sample_rate, steps)] * blocks
        return epsilon_for(history, delta, accountant) - target_epsilon

    lo, hi = 0.3, 1.0
    if excess(lo) <= 0:
        return lo
    while excess(hi) > 0:
        lo, hi = hi, hi * 2
        if hi > _MAX_SIGMA:
            raise ValueError(f"no noise multiplier below {_MAX_SIGMA} reaches {target_epsilon}")
    sigma = brentq(excess, lo, hi, xtol=tol / 2) + tol / 2
    while excess(sigma) > 0:  # Brent's root is within xtol of the crossing, on either side
        sigma += tol / 2
    return float(min(sigma, hi))


@dataclass
class PrivacyLedger:
    """A site's full release history on one dataset, persisted after every release.

    `ledger_id` names this history; the data folder's binding marker records it, so a ledger
    that goes missing is noticed instead of silently restarting at zero (client/privacy_state).
    `runs` keeps each run's calibrated noise (DP-SGD's multiplier, the evaluations' sigma), so
    rounds of one run agree; `releases` keeps DP releases that later rounds and runs reuse as
    they are (post-processing costs nothing), e.g. the noisy counts of one cohort version.
    """

    path: Path
    accountant: str = "prv"
    history: list[Entry] = field(default_factory=list)
    runs: dict[str, dict[str, float]] = field(default_factory=dict)
    releases: dict[str, Any] = field(default_factory=dict)
    ledger_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @classmethod
    def load(cls, path: str | Path, accountant: str = "prv") -> PrivacyLedger:
        path = Path(path)
        if accountant not in ACCOUNTANTS:
            raise ValueError(f"accountant must be one of {ACCOUNTANTS}")
        if not path.exists():
            return cls(path=path, accountant=accountant)
        try:
            doc = json.loads(path.read_text())
            history = [(float(s), float(q), int(n)) for s, q, n in doc["history"]]
            runs = {str(k): ({"noise_multiplier": float(v)} if isinstance(v, int | float)
                             else {str(a): float(b) for a, b in v.items()})
                    for k, v in doc.get("runs", {}).items()}
            releases = dict(doc.get("releases", {}))
            stored = doc["accountant"]
            ledger_id = str(doc.get("ledger_id") or uuid.uuid4().hex)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InputError(path, f"unreadable privacy ledger ({err})") from err
        if stored != accountant:
            raise InputError(
                path, f"privacy ledger uses the {stored} accountant, not {accountant}"
            )
        return cls(path=path, accountant=stored, history=history, runs=runs,
                   releases=releases, ledger_id=ledger_id)

    def epsilon(self, delta: float) -> float:
        return epsilon_for(self.history, delta, self.accountant)

    def projected_epsilon(self, delta: float, *entries: Entry) -> float:
        """Epsilon if `entries` were released too: the cost check before any release."""
        return epsilon_for(self.history + list(entries), delta, self.accountant)

    def record(self, *entries: Entry) -> None:
        """Append releases and persist at once (atomic rewrite). Called BEFORE the release
        leaves the site: a crash after it leaves the spend recorded, never the reverse."""
        for sigma, rate, steps in entries:
            if steps > 0:
                self.history.append((float(sigma), float(rate), int(steps)))
        self.save()

    def save(self) -> None:
        write_json(self.path, {
            "ledger_id": self.ledger_id, "accountant": self.accountant,
            "history": self.history, "runs": self.runs, "releases": self.releases,
        })
