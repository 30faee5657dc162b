"""What a site releases about its people besides the weights: noisy counts and noisy scores.

Both are Gaussian mechanisms with L2 sensitivity 1 (one person moves one cell by one) over a
FIXED set of cells: the ancestry vocabulary the site declared in its settings (or one group,
"ALL", when it accepts any label), never the groups that happen to be present, since which
groups exist is itself a fact about people.

- `release_counts`: people per split and per (group, split, class), released once per version
  of the cohort table and kept in the privacy ledger. One person moves one split total and one
  cell, so the release's L2 sensitivity is sqrt(2); the totals spare the training size the
  noise of summing every cell of a long vocabulary. Everything the site derives from sizes is
  a function of these noisy counts, so it is post-processing: the DP-SGD plan (batch size and
  sample rate), FedAvg's example count, the ancestry weights of `balance = "reweight"` and which
  groups are large enough to be evaluated. None of them depends on one person beyond what the
  counts' noise already pays for.
- `release_scores`: the held-out people's score histograms per group and class
  (`shared.metrics`), noised, with groups under the site's floor withheld.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from client.train import predict_logits
from shared.metrics import GroupedScores, snap_center
from shared.model import PanelFeatures, RiskTransformer
from shared.panel import public_sample

ALL = "ALL"  # the one group of a site that declares no ancestry vocabulary
SPLITS = ("train", "test")
CLASSES = ("case", "control")
MAX_WEIGHT = 10.0  # a balancing weight never exceeds this, however small a group's count


def cohort_fingerprint(sample_id: np.ndarray, groups: np.ndarray, phenotype: np.ndarray,
                       split: np.ndarray) -> str:
    """A hash of everything the counts depend on: a new version of the table, a new release."""
    h = hashlib.sha256()
    for column in (sample_id, groups, phenotype, split):
        h.update("\x1f".join(map(str, column)).encode())
        h.update(b"\x1e")
    return h.hexdigest()


COUNT_SENSITIVITY = math.sqrt(2)  # one split total and one cell per person
GHOST_MARGIN = 2.0  # noise sd a group's counts must clear beyond the floor


@dataclass(frozen=True)
class CohortCounts:
    """Noisy numbers of people per split and per (group, split, class); every number got
    N(0, sigma^2)."""

    groups: tuple[str, ...]
    cells: dict[str, float]  # "group/split/class" and "split" -> noisy count
    sigma: float

    def get(self, group: str, split: str, cls: str) -> float:
        return self.cells[f"{group}/{split}/{cls}"]

    def group_size(self, group: str, split: str) -> float:
        return sum(self.get(group, split, c) for c in CLASSES)

    @property
    def n_train(self) -> float:
        return self.cells["train"]

    def evaluable(self, floor: float) -> list[str]:
        """Groups whose held-out cases and controls both reach `floor` plus GHOST_MARGIN noise
        standard deviations (noisy counts): a group that is absent, or far under the floor,
        then almost never passes on noise alone."""
        bar = floor + GHOST_MARGIN * self.sigma
        return [g for g in self.groups
                if min(self.get(g, "test", "case"), self.get(g, "test", "control")) >= bar]

    def to_json(self) -> dict[str, Any]:
        return {"groups": list(self.groups), "cells": self.cells, "sigma": self.sigma}

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> CohortCounts:
        return cls(tuple(doc["groups"]), {str(k): float(v) for k, v in doc["cells"].items()},
                   float(doc["sigma"]))


def release_counts(
    groups: np.ndarray, split: np.ndarray, phenotype: np.ndarray, vocabulary: tuple[str, ...],
    sigma: float, rng: np.random.Generator,
) -> CohortCounts:
    """Gaussian noise on each split's total and on every cell of vocabulary x split x class
    (present or not)."""
    cells = {s: float(np.sum(split == s) + rng.normal(0.0, sigma)) for s in SPLITS}
    for g in vocabulary:
        for s in SPLITS:
            for c, label in zip(CLASSES, (1, 0), strict=True):
                exact = int(np.sum((groups == g) & (split == s) & (phenotype == label)))
                cells[f"{g}/{s}/{c}"] = float(exact + rng.normal(0.0, sigma))
    return CohortCounts(tuple(vocabulary), cells, float(sigma))


def balancing_weights(groups: np.ndarray, counts: CohortCounts, floor: float) -> np.ndarray:
    """Per-person loss weights giving each group with at least `floor` (noisy) training people
    the same total weight, computed from the released counts only.

    Why not from the exact counts: then removing one person would change everyone's weight,
    and the sum of clipped gradients would move by more than the clipping norm the accountant
    assumes. From released counts the weights are fixed before training (post-processing), so
    each person still moves the sum by at most the clipping norm. Groups under the floor keep
    weight 1; no weight exceeds MAX_WEIGHT.
    """
    sizes = {g: counts.group_size(g, "train") for g in counts.groups}
    present = [g for g, n in sizes.items() if n >= floor]
    weights = np.ones(len(groups))
    if not present:
        return weights
    total = sum(sizes[g] for g in present)
    for g in present:
        weights[groups == g] = min(MAX_WEIGHT, total / (len(present) * sizes[g]))
    return weights


def release_scores(
    logits: np.ndarray, labels: np.ndarray, groups: np.ndarray, counts: CohortCounts,
    floor: float, sigma: float, center: float, rng: np.random.Generator,
) -> GroupedScores:
    """The held-out people's noisy score histograms, groups under `floor` withheld."""
    exact = GroupedScores.from_predictions(logits, labels, groups, center=center)
    noisy = exact.with_groups(counts.groups).with_noise(sigma, rng)
    return noisy.keep(counts.evaluable(floor))


def public_center(model: RiskTransformer, features: PanelFeatures, device: torch.device) -> float:
    """The model's median logit over people drawn under Hardy-Weinberg from the panel's public
    allele frequencies, with a seed everyone knows, on the grid of bin centres: where a site's
    evaluation histograms put their bins. Public inputs only (weights, panel, reference), so it
    costs no budget and every site computes the same centre."""
    assert features.alt_freq is not None
    people = public_sample(features.alt_freq.numpy())
    return snap_center(float(np.median(predict_logits(model, people, features, device))))
