"""Calibrated risk: the global model's logits recalibrated per ancestry from DP statistics.

A model trained with DP-SGD on case-enriched, ancestry-skewed sites ranks people well but its
probabilities are off (shifted and over- or under-confident), differently in each ancestry. The
coordinator already holds, for every evaluated round, each ancestry group's recalibration
``logit P(y) = a + b * logit(p)`` computed from the sites' DP-noised score histograms
(`shared.metrics.recalibration_fit`: the simplest of no update, intercept only, or intercept and
slope that the statistics support): post-processing of released statistics, so recalibrating
costs no privacy budget. `Recalibration` carries those fits with the checkpoint they were
measured on, and a site applies them to its own people's logits when it scores them.

Groups suppressed in the evaluation (below the floor) have no fit of their own; their people get
the pooled fit over the shown groups (`overall`), or none when nothing was shown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OVERALL = "overall"


def _fit(metrics: dict[str, Any]) -> tuple[float, float] | None:
    """A group's (intercept, slope); ledgers written before `recalibration_fit` carry only
    Cox's two-parameter fit, which is then used."""
    if metrics.get("suppressed"):
        return None
    chosen = metrics.get("recalibration")
    if isinstance(chosen, dict):
        a, b = chosen.get("intercept"), chosen.get("slope")
    else:
        a, b = metrics.get("calibration_intercept"), metrics.get("calibration_slope")
    if not all(isinstance(v, int | float) and math.isfinite(v) for v in (a, b)):
        return None
    return float(a), float(b)


@dataclass(frozen=True)
class Recalibration:
    """Per-group (intercept, slope) fits and the pooled fit for everybody else."""

    by_group: dict[str, tuple[float, float]] = field(default_factory=dict)
    overall: tuple[float, float] | None = None

    @classmethod
    def from_metrics(cls, metrics: dict[str, Any]) -> Recalibration:
        """From a round's metric report (`MetricFrame.to_dict()`, as the ledger holds it)."""
        groups = {name: fit for name, m in (metrics.get("by_group") or {}).items()
                  if (fit := _fit(m)) is not None}
        return cls(groups, _fit(metrics.get("overall") or {"suppressed": True}))

    def __bool__(self) -> bool:
        return bool(self.by_group) or self.overall is not None

    def apply(self, logits: np.ndarray, groups: np.ndarray | None = None,
              ) -> tuple[np.ndarray, np.ndarray]:
        """(recalibrated logits, the fit each person got: a group name, "overall" or "none")."""
        logits = np.asarray(logits, dtype=np.float64)
        out = logits.copy()
        used = np.full(len(logits), "none", dtype=object)
        if self.overall is not None:
            a, b = self.overall
            out = a + b * logits
            used[:] = OVERALL
        if groups is not None:
            groups = np.asarray(groups).astype(str)
            for name, (a, b) in self.by_group.items():
                mask = groups == name
                out[mask] = a + b * logits[mask]
                used[mask] = name
        return out, used

    def to_dict(self) -> dict[str, Any]:
        """Plain str/float containers only: a checkpoint loads with `weights_only=True`."""
        return {"by_group": {str(k): [float(a), float(b)] for k, (a, b) in self.by_group.items()},
                "overall": None if self.overall is None else [float(v) for v in self.overall]}

    @classmethod
    def from_dict(cls, doc: dict[str, Any] | None) -> Recalibration:
        if not doc:
            return cls()
        pairs = {str(k): (float(v[0]), float(v[1])) for k, v in doc.get("by_group", {}).items()}
        overall = doc.get("overall")
        return cls(pairs, None if overall is None else (float(overall[0]), float(overall[1])))
