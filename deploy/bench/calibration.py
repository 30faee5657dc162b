"""Calibrated risk on held-out people: what a clinician reading the probability gets.

- calibration: Cox's slope (logistic regression of the outcome on the predicted logit; 1 is
  ideal, < 1 over-confident) and calibration-in-the-large (the intercept of that regression with
  the logit as an offset; 0 is ideal), per ancestry;
- clinical cut-offs, per ancestry: of the people a population's top 5% / 10% of predicted risk
  flags, the share who are cases (PPV) and the share of cases flagged (sensitivity), and the odds
  ratio of the top decile against the middle fifth (40th-60th percentile), as PRS papers report.

The exact outcomes of held-out people are the bench's to read (simulated people), never a site's
to send.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy.optimize import minimize

TOP_SHARES = (0.05, 0.10)


def _nll(params: np.ndarray, x: np.ndarray, y: np.ndarray, offset: np.ndarray) -> float:
    eta = offset + params[0] + (params[1] * x if len(params) > 1 else 0.0)
    return float(np.sum(np.logaddexp(0.0, eta) - y * eta))


def calibration(y: np.ndarray, logit: np.ndarray) -> dict[str, float | None]:
    """Cox slope and calibration-in-the-large of predicted logits against 0/1 outcomes."""
    y = np.asarray(y, dtype=np.float64)
    logit = np.asarray(logit, dtype=np.float64)
    if len(y) < 2 or not 0 < y.sum() < len(y):
        return {"slope": None, "intercept": None}
    slope = minimize(_nll, np.array([0.0, 1.0]), args=(logit, y, np.zeros_like(y)),
                     method="BFGS").x[1]
    large = minimize(_nll, np.array([0.0]), args=(logit, y, logit), method="BFGS").x[0]
    return {"slope": float(slope), "intercept": float(large)}


def clinical(y: np.ndarray, score: np.ndarray) -> dict[str, float | None]:
    """PPV and sensitivity at the top 5% / 10% of risk; top-decile vs middle-fifth odds ratio."""
    y = np.asarray(y, dtype=np.float64)
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    n, cases = len(y), y.sum()
    out: dict[str, float | None] = {}
    for share in TOP_SHARES:
        k = max(1, math.ceil(share * n))
        flagged = y[order[:k]]
        tag = f"top{round(share * 100)}"
        out[f"{tag}_ppv"] = float(flagged.mean())
        out[f"{tag}_sensitivity"] = float(flagged.sum() / cases) if cases else None
    ranks = np.empty(n)
    ranks[order] = np.arange(n) / n  # 0 = highest risk
    top = y[ranks < 0.10]
    middle = y[(ranks >= 0.40) & (ranks < 0.60)]

    def odds(v: np.ndarray) -> float:
        a, b = v.sum() + 0.5, len(v) - v.sum() + 0.5  # Haldane's correction for empty cells
        return a / b

    out["or_top_decile_vs_middle"] = (float(odds(top) / odds(middle))
                                      if len(top) and len(middle) else None)
    return out


def intervals(y: np.ndarray, logit: np.ndarray, resamples: int, seed: int,
              level: float = 0.95) -> dict[str, list[float] | None]:
    """Percentile bootstrap intervals of the slope and calibration-in-the-large over the
    held-out people: how precisely this many people can measure calibration at all."""
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {"slope": [], "intercept": []}
    for _ in range(resamples):
        pick = rng.integers(0, len(y), len(y))
        got = calibration(y[pick], logit[pick])
        for key in draws:
            if got[key] is not None:
                draws[key].append(got[key])
    tail = (1 - level) / 2 * 100
    return {f"{key}_interval": (None if len(v) < resamples // 2 else
                                [float(q) for q in np.percentile(v, [tail, 100 - tail])])
            for key, v in draws.items()}


def by_population(y: np.ndarray, logit: np.ndarray, ancestry: np.ndarray,
                  populations: tuple[str, ...], resamples: int = 0, seed: int = 0,
                  ) -> dict[str, dict[str, Any]]:
    """Calibration and clinical cut-offs per population (the cut-offs within the population),
    with bootstrap intervals of the calibration figures when `resamples` > 0."""
    out: dict[str, dict[str, Any]] = {}
    for pop in populations:
        mask = ancestry == pop
        out[pop] = {**calibration(y[mask], logit[mask]), **clinical(y[mask], logit[mask]),
                    "n": int(mask.sum())}
        if resamples:
            out[pop].update(intervals(y[mask], logit[mask], resamples, seed))
    return out
