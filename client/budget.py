"""The site's own privacy budget, which no coordinator setting can loosen.

A hospital sets its limits in its SuperNode's node config (`max-epsilon`, `delta`,
`min-noise-multiplier`, `accountant`, `evaluation-share`, `count-share`, `min-group-size`) or in
the `[privacy]` table of its `site.toml` (same keys; node config wins; read by
`client.settings`). The coordinator's run config may
ask for *less* privacy loss (a lower target epsilon or delta), never more: the effective budget
is the stricter of the two, the noise multiplier is never below the site's minimum, and the
small-group floor is the larger of the site's and the coordinator's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path

from shared.errors import InputError
from shared.privacy import ACCOUNTANTS


@dataclass(frozen=True)
class SiteBudget:
    max_epsilon: float = 8.0
    delta: float = 1e-5
    min_noise_multiplier: float = 0.0
    accountant: str = "prv"
    # The part of a run's budget (counted in zCDP rho, see shared.privacy.rho_for) that its
    # evaluations of the global model take together, and that a release of the cohort's counts
    # takes; the rest funds DP-SGD. More for evaluation: tighter per-ancestry metrics, noisier
    # training (the lab notebook measures both).
    evaluation_share: float = 0.1
    count_share: float = 0.05
    # Groups with fewer held-out cases or controls (noisy counts) are withheld from evaluations.
    min_group_size: float = 10.0

    @classmethod
    def from_mapping(cls, values: Mapping[str, object], where: Path | None = None) -> SiteBudget:
        known = {f.name: f.type for f in fields(cls)}
        kwargs: dict[str, object] = {}
        for key, value in values.items():
            name = key.replace("-", "_")
            if name not in known:
                raise InputError(where, f"unknown privacy setting {key!r}")
            try:
                kwargs[name] = str(value) if name == "accountant" else float(value)  # type: ignore[arg-type]
            except (TypeError, ValueError) as err:
                raise InputError(where, f"{key} must be a number, not {value!r}") from err
        budget = cls(**kwargs)  # type: ignore[arg-type]
        if not budget.max_epsilon > 0 or not 0 < budget.delta < 1:
            raise InputError(where, "max-epsilon must be > 0 and delta in (0, 1)")
        if not budget.min_noise_multiplier >= 0:
            raise InputError(where, "min-noise-multiplier must be >= 0")
        if not (0 < budget.evaluation_share < 1 and 0 < budget.count_share < 1
                and budget.evaluation_share + budget.count_share < 1):
            raise InputError(where, "evaluation-share and count-share must be in (0, 1), "
                                    "together below 1")
        if not budget.min_group_size >= 1:
            raise InputError(where, "min-group-size must be >= 1")
        if budget.accountant not in ACCOUNTANTS:
            raise InputError(where, f"accountant must be one of {', '.join(ACCOUNTANTS)}")
        return budget

    def effective(self, run_epsilon: float, run_delta: float) -> tuple[float, float]:
        """(epsilon, delta) for this run: the stricter of the site's and the coordinator's."""
        return min(self.max_epsilon, run_epsilon), min(self.delta, run_delta)
