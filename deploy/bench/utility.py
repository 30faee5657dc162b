"""Benchmark section `utility`: how good is the federated, private model, per ancestry?

ONE simulated cohort (the demo's: `SimulationConfig(seed=0)`, three hospitals) and ONE set of
held-out people (every site's `test` split) for every method:

- `federated_dp`: the real federation (`deploy.federation.run_simulation`, Flower's simulation
  engine) with the demo's settings: 5 rounds x `local-epochs` (4) of DP-SGD per site, epsilon <= 8
  at delta = 1e-5, everything else the `[tool.flwr.app.config]` defaults. The final global weights
  (the coordinator's `checkpoints/latest.pt`) score the held-out people here. It trains
  FULL_FEDERATED_RUNS times with seeds seed, seed + 1, ... and reports the mean AUROC, each run
  under `federated_dp_runs`: one DP run alone moves a population's figure by up to ~0.05;
- `centralized`: the same transformer, same initial weights, trained on all sites' training
  people pooled, WITHOUT DP: plain Adam at `batch-size` (the sites' DP batches grow with their
  size, a remedy for DP noise it has none of), at PLAIN_LEARNING_RATE (not the sites' SGD rate,
  which suits noisy gradients) decayed to zero over the training (cosine, the usual non-private
  recipe), as many epochs as the federation's rounds x local epochs. It trains as many times as
  `federated_dp`, with the same seeds, and reports the mean AUROC, each run under
  `centralized_runs`. The decay makes it the reference a pooled
  analysis would really get: at a constant rate the last minibatches' noise set the weights
  (lab notebook, "The centralized reference decays its learning rate");
- `site_alone`: each site trains the same model alone with DP-SGD under its own epsilon = 8 over
  the same number of epochs (noise calibrated with `shared.privacy.calibrate_noise`), scored on
  ALL held-out people; per population the best single site is reported, each site under
  `site_alone_by_site`;
- `linear_prs`: L2-penalised logistic regression (scikit-learn) on the panel dosages (0/1/2,
  missing -> training mean, standardised), C chosen by 5-fold CV (AUROC) on the training people;
- `oracle`: the true genetic liability (`truth.tsv`), the ceiling.

Beside them, `interaction_reference`: the linear score given the simulation's true interaction
pairs (`cohort.json`) as extra features, products of centred dosages. Like the oracle it reads
the truth, so no real model can have it; it measures what the pairwise interactions are worth
over the linear score, i.e. what a model must find to beat it.

Per method and population: `auroc` (sklearn, pooled over the population's held-out people) and
`attainable` = (AUROC - 0.5) / (oracle AUROC - 0.5). `targets` checks the project's goals and
reports margins; nothing here is tuned to meet them. Each margin carries a 95% bootstrap interval
over the held-out people (`margin_intervals`): the evaluation's uncertainty, which on 500 people
per population is as large as the margins themselves.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from client.data import load_site
from client.release import public_center
from client.train import DPPlan, pick_device, predict_logits, train_dp
from deploy.bench import calibration as risk
from deploy.bench.baselines import meta_gwas, site_alone_plain
from deploy.bench.common import say
from deploy.bench.evaluation_noise import measure as measure_evaluation_noise
from deploy.bench.goals import (
    BEST_SITE_GAIN,
    CALIBRATION_INTERCEPT,
    CALIBRATION_SLOPE,
    FEDERATED_VS_CENTRALIZED,
    POOLED_GAP,
    WORST_VS_BEST,
)
from deploy.federation import run_simulation
from deploy.simulate import (
    POPULATIONS,
    SimulationConfig,
    fresh_copy,
    register_sites,
    simulate_cohort,
)
from server.outdir import RunFolder
from server.strategy import initial_weights
from shared.calibration import Recalibration
from shared.checkpoint import load_checkpoint
from shared.model import ModelConfig, PanelFeatures, RiskTransformer, set_weights
from shared.privacy import calibrate_noise, epsilon_for
from shared.protocol import RoundRecord, latest_privacy, read_rounds
from shared.runconfig import RunSettings
from shared.tokenizer import GT_MISSING

# The demo's cohort and run (`genofed deploy demo` defaults).
FULL = SimulationConfig(seed=0)
FULL_ROUNDS = 5
FULL_RUN: dict[str, object] = {}  # the pyproject defaults, like the demo
# Federated DP trainings (seeds seed, seed + 1, ...) whose AUROCs are averaged: one run moves a
# population's AUROC by up to ~0.05 (the seed sets initial weights, batches and DP noise). The
# centralized reference trains as many times with the same seeds.
FULL_FEDERATED_RUNS = 2
# Seconds, for the tests: 2 small sites, 2 rounds, a small model.
QUICK = SimulationConfig(
    seed=3, sites=2, people_per_population=120, sequence_length=200_000, panel_size=32,
    n_causal=8, n_interactions=2, prevalence=0.3,
)
QUICK_ROUNDS = 1
QUICK_RUN: dict[str, object] = {
    "batch-size": 32, "local-epochs": 1, "model-dim": 16, "model-layers": 1, "model-heads": 2,
    "suppression-k": 5,
}
QUICK_FEDERATED_RUNS = 2
METHODS = ("federated_dp", "centralized", "site_alone", "linear_prs", "oracle")
CV_FOLDS = 5
CV_CS = tuple(float(c) for c in np.logspace(-4, 2, 13))
# Non-private trainings (the centralized reference, the membership attack's non-DP model) use
log = logging.getLogger(__name__)

# Adam at this rate: without DP noise Adam is the better fit; the sites' DP-SGD default (SGD
# with momentum, `learning-rate` in pyproject.toml) is tuned for noisy gradients.
PLAIN_LEARNING_RATE = 0.01


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class People:
    """Encoded people of several sites, in site order."""

    genotypes: np.ndarray  # [N, T] int8 codes
    labels: np.ndarray  # [N] 0/1
    ancestry: np.ndarray  # [N] str
    sample_id: np.ndarray  # [N] str
    site: np.ndarray  # [N] str

    def subset(self, mask: np.ndarray) -> People:
        return People(*(getattr(self, f.name)[mask] for f in dataclasses.fields(self)))

    @classmethod
    def concat(cls, parts: list[People]) -> People:
        return cls(*(np.concatenate([getattr(p, f.name) for p in parts])
                     for f in dataclasses.fields(cls)))


@dataclass(frozen=True)
class CohortData:
    features: PanelFeatures
    n_variants: int
    train: People
    test: People
    sites: list[str]
    contig: np.ndarray | None = None  # [T] the panel's contigs (for clumping)


def load_cohort(cohort_dir: Path, settings: RunSettings) -> CohortData:
    """Every site's people, encoded exactly as the sites encode them (`client.data.load_site`)."""
    sites = sorted((p.name for p in cohort_dir.glob("site-*") if p.is_dir()),
                   key=lambda n: int(n.removeprefix("site-")))
    parts: dict[str, list[People]] = {"train": [], "test": []}
    features, n_variants, panel_sha, contig = None, 0, None, None
    for name in sites:
        data = load_site(cohort_dir / name, settings.encoder(), None)
        if panel_sha is None:
            features, n_variants, panel_sha = data.features, len(data.panel), data.panel.sha256
            contig = data.panel.chrom.astype(str)
        elif data.panel.sha256 != panel_sha:
            raise RuntimeError(f"{name} holds a different panel from site-1")
        for split in parts:
            mask = data.cohort.split == split
            parts[split].append(People(
                data.genotypes[mask], data.cohort.phenotype[mask].astype(np.int64),
                data.cohort.ancestry[mask].astype(str), data.cohort.sample_id[mask].astype(str),
                np.full(int(mask.sum()), name),
            ))
    assert features is not None
    return CohortData(features, n_variants, People.concat(parts["train"]),
                      People.concat(parts["test"]), sites, contig)


def dosages(codes: np.ndarray) -> np.ndarray:
    """Alt-allele dosage 0/1/2 as float, missing calls as NaN."""
    out = np.clip(codes, 0, 2).astype(np.float64)
    out[codes == GT_MISSING] = np.nan
    return out


# --------------------------------------------------------------------------- metrics


def auroc_by_population(scores: np.ndarray, people: People) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for pop in POPULATIONS:
        mask = people.ancestry == pop
        y = people.labels[mask]
        out[pop] = (float(roc_auc_score(y, scores[mask]))
                    if mask.any() and 0 < y.sum() < len(y) else None)
    return out


def mean_auroc(runs: list[dict[str, float | None]]) -> dict[str, float | None]:
    """Per population, the mean over the runs that could score it (None if none could)."""
    out: dict[str, float | None] = {}
    for pop in POPULATIONS:
        values = [r[pop] for r in runs if r.get(pop) is not None]
        out[pop] = float(np.mean(values)) if values else None
    return out


def attainable(auroc: float | None, oracle: float | None) -> float | None:
    """(AUROC - 0.5) / (oracle - 0.5): the share of the attainable discrimination reached."""
    if auroc is None or oracle is None or oracle <= 0.5:
        return None
    return (auroc - 0.5) / (oracle - 0.5)


def method_table(auroc: dict[str, float | None], oracle: dict[str, float | None]) -> dict:
    return {pop: {"auroc": auroc[pop], "attainable": attainable(auroc[pop], oracle[pop])}
            for pop in POPULATIONS}


def _margin_check(margins: dict[str, float | None], strict: bool = False) -> dict[str, Any]:
    """Met when every margin is known and >= 0 (> 0 if `strict`); the margin is the smallest."""
    known = [m for m in margins.values() if m is not None]
    ok = all(m > 0 if strict else m >= 0 for m in known)
    return {"met": bool(known) and len(known) == len(margins) and ok,
            "margin": min(known) if known else None}


# Score keys of each site's own non-private models: site_plain:SITE:MODEL.
SITE_PLAIN = "site_plain:"


def best_candidate(results: dict[str, dict], prefix: str) -> dict[str, dict]:
    """Per population, the best-scoring of the methods whose key starts with `prefix` (with
    the site and model it came from)."""
    out: dict[str, dict] = {}
    for pop in POPULATIONS:
        scored = [(key, t[pop]) for key, t in results.items()
                  if key.startswith(prefix) and _finite(t[pop]["auroc"])]
        if not scored:
            out[pop] = {"auroc": None, "attainable": None, "site": None, "model": None}
            continue
        key, row = max(scored, key=lambda item: item[1]["auroc"])
        _, site, model = key.split(":")
        out[pop] = {**row, "site": site, "model": model}
    return out


def _versus(fed: dict, rivals: list[dict], shift: float, name: str) -> dict[str, Any]:
    """Per population: margin = federated AUROC - (best rival AUROC + shift)."""
    out: dict[str, Any] = {}
    for pop in POPULATIONS:
        f = fed[pop]["auroc"]
        known = [r[pop]["auroc"] for r in rivals if _finite(r[pop]["auroc"])]
        rival = max(known) if known and len(known) == len(rivals) else None
        out[pop] = {"federated_auroc": f, f"{name}_auroc": rival,
                    "margin": None if f is None or rival is None else f - rival - shift}
    return out


def targets(results: dict[str, dict]) -> dict[str, Any]:
    """The project's utility goals, with margins (>= 0 met; < 0 missed by that much)."""
    fed, cen, lin = results["federated_dp"], results["centralized"], results["linear_prs"]

    vs_cen: dict[str, Any] = {}
    for pop in POPULATIONS:
        f, c = fed[pop]["attainable"], cen[pop]["attainable"]
        need = None if c is None else FEDERATED_VS_CENTRALIZED * c
        vs_cen[pop] = {"federated_attainable": f, "required": need,
                       "margin": None if f is None or need is None else f - need}
    att = {pop: fed[pop]["attainable"] for pop in POPULATIONS}
    known = {p: a for p, a in att.items() if a is not None}
    worst_best: dict[str, Any] = {"met": False, "margin": None}
    if len(known) == len(att):
        worst, best = min(known, key=known.get), max(known, key=known.get)  # type: ignore[arg-type]
        margin = known[worst] - WORST_VS_BEST * known[best]
        worst_best = {
            "met": margin >= 0, "margin": margin, "worst_population": worst,
            "worst_attainable": known[worst], "best_population": best,
            "best_attainable": known[best], "required": WORST_VS_BEST * known[best],
        }
    goals: dict[str, Any] = {
        "federated_vs_centralized": {
            "rule": f"federated_dp attainable >= {FEDERATED_VS_CENTRALIZED:g} x centralized "
                    "attainable, every population",
            **_margin_check({p: v["margin"] for p, v in vs_cen.items()}), "by_population": vs_cen,
        },
        "worst_vs_best_population": {
            "rule": f"federated_dp: worst-population attainable >= {WORST_VS_BEST:g} x "
                    "best-population",
            **worst_best,
        },
    }
    comparisons = {
        "federated_vs_best_site": (
            [best_candidate(results, SITE_PLAIN)], BEST_SITE_GAIN, "best_site",
            f"federated_dp AUROC >= the best single site's own non-private score + "
            f"{BEST_SITE_GAIN:g}, every population"),
        "federated_vs_meta_gwas": (
            [results[m] for m in ("meta_gwas", "meta_gwas_multi") if m in results], 0.0,
            "meta_gwas", "federated_dp AUROC >= the meta-analysed GWAS C+T score (single- and "
                         "multi-ancestry), every population"),
        "federated_vs_pooled": (
            [cen, lin], -POOLED_GAP, "pooled",
            f"federated_dp AUROC >= the pooled non-private ceiling (transformer or L2 "
            f"logistic) - {POOLED_GAP:g}, every population"),
    }
    if not any(key.startswith(SITE_PLAIN) for key in results):
        del comparisons["federated_vs_best_site"]
    for goal, (rivals, shift, name, rule) in comparisons.items():
        if not rivals:
            continue
        rows = _versus(fed, rivals, shift, name)
        goals[goal] = {"rule": rule, **_margin_check({p: v["margin"] for p, v in rows.items()}),
                       "by_population": rows}
    return goals


def calibration_goal(by_run: list[dict[str, dict]]) -> dict[str, Any]:
    """Recalibrated risk within the calibration bounds in every population and every federated
    run: margin = the smallest distance to a bound (negative: outside by that much)."""
    lo, hi = CALIBRATION_SLOPE
    margins: list[float] = []
    for run in by_run:
        for row in run.values():
            slope, large = row.get("slope"), row.get("intercept")
            if slope is None or large is None:
                margins.append(-math.inf)
                continue
            margins += [slope - lo, hi - slope, CALIBRATION_INTERCEPT - abs(large)]
    margin = min(margins) if margins else None
    return {"rule": f"recalibrated risk: calibration slope in [{lo:g}, {hi:g}] and "
                    f"|calibration-in-the-large| <= {CALIBRATION_INTERCEPT:g}, every population",
            "met": margin is not None and margin >= 0,
            "margin": None if margin is None or not math.isfinite(margin) else margin,
            "within_measurement_error": _intervals_reach_bounds(by_run)}


def _intervals_reach_bounds(by_run: list[dict[str, dict]]) -> bool | None:
    """Whether every population's bootstrap intervals reach into the bounds: the held-out
    people cannot tell such a miss from a met goal. None without intervals."""
    (lo, hi), bound = CALIBRATION_SLOPE, CALIBRATION_INTERCEPT
    reach = []
    for run in by_run:
        for row in run.values():
            slope, large = row.get("slope_interval"), row.get("intercept_interval")
            if slope is None or large is None:
                return None
            reach.append(slope[1] >= lo and slope[0] <= hi
                         and large[1] >= -bound and large[0] <= bound)
    return all(reach) if reach else None


INTERVAL_LEVEL = 0.95
FULL_DRAWS = 400  # DP evaluation releases simulated per population and setting
QUICK_DRAWS = 40
FULL_RESAMPLES = 2000
QUICK_RESAMPLES = 200
FULL_CALIBRATION_RESAMPLES = 400  # two fits per resample, per population and run
QUICK_CALIBRATION_RESAMPLES = 20
# Per-population margins given an interval beside each goal's smallest margin.
PER_POPULATION = ("federated_vs_centralized", "federated_vs_best_site", "federated_vs_meta_gwas",
                  "federated_vs_pooled")


def margin_intervals(
    scores: dict[str, list[np.ndarray]], people: People, resamples: int, seed: int,
) -> dict[str, Any]:
    """Percentile-bootstrap intervals of every utility goal's margins over the held-out people.

    Why: on 500 held-out people per population (about 100 cases) one AUROC is uncertain by a few
    hundredths, as much as the margins the goals are judged by, so a reader needs to tell a miss
    from the evaluation's own noise. The people are resampled within each population and the
    same draw scores every method, as the goals compare methods on the same people (their errors
    are correlated, which an interval per method would ignore). `scores` holds each method's
    held-out scores, one array per training; a resample scores each training and averages, as
    the table does. Training randomness is not in these intervals: the repeated trainings show
    it. A resample in which a population has one class only is left out of the intervals of
    the margins it cannot score.
    """
    from scipy.stats import DegenerateDataWarning, bootstrap

    groups = [np.flatnonzero(people.ancestry == pop) for pop in POPULATIONS]

    def results(picks: tuple[np.ndarray, ...]) -> dict[str, dict]:
        idx = np.concatenate(picks)
        drawn = people.subset(idx)

        def auroc(score: np.ndarray) -> dict[str, float | None]:
            return auroc_by_population(score[idx], drawn)

        oracle = mean_auroc([auroc(s) for s in scores["oracle"]])
        return {m: method_table(mean_auroc([auroc(s) for s in runs]), oracle)
                for m, runs in scores.items()}

    def margins(t: dict[str, Any]) -> list[float]:
        values = [t[goal]["margin"] for goal in t]
        values += [t[goal]["by_population"][pop]["margin"]
                   for goal in PER_POPULATION if goal in t for pop in POPULATIONS]
        return [math.nan if v is None else float(v) for v in values]

    def statistic(*picks: np.ndarray) -> np.ndarray:
        return np.asarray(margins(targets(results(tuple(p.astype(np.int64) for p in picks)))))

    goals = list(targets(results(tuple(groups))))
    # Only the resampled margins are used: scipy's own interval, which a margin some resamples
    # cannot score turns into NaN (with a warning), is not.
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateDataWarning)
        draws = bootstrap(tuple(groups), statistic, n_resamples=resamples, paired=False,
                          vectorized=False, method="percentile", confidence_level=INTERVAL_LEVEL,
                          rng=seed).bootstrap_distribution  # [margins, resamples]
    tail = 100 * (1 - INTERVAL_LEVEL) / 2

    def pair(k: int) -> list[float] | None:
        """The percentile interval over the resamples that could score the margin; none where
        fewer than half could (a population too small to say)."""
        known = draws[k][np.isfinite(draws[k])]
        if len(known) < resamples / 2:
            return None
        return [float(np.percentile(known, tail)), float(np.percentile(known, 100 - tail))]

    out: dict[str, Any] = {goal: {"interval": pair(k)} for k, goal in enumerate(goals)}
    k = len(goals)
    for goal in (g for g in PER_POPULATION if g in out):
        out[goal]["by_population"] = {}
        for pop in POPULATIONS:
            out[goal]["by_population"][pop] = pair(k)
            k += 1
    return out


def add_intervals(goals: dict[str, Any], intervals: dict[str, Any], resamples: int) -> None:
    """Each goal's margin interval (and its populations') beside its margin, in `goals`."""
    for goal, found in intervals.items():
        goals[goal]["margin_interval"] = found["interval"]
        for pop, pair in found.get("by_population", {}).items():
            goals[goal]["by_population"][pop]["margin_interval"] = pair
    goals["interval_method"] = (
        f"{INTERVAL_LEVEL:.0%} percentile bootstrap over the held-out people ({resamples} "
        "resamples within each population, the same people for every method): the "
        "evaluation's uncertainty, not the training's"
    )


# --------------------------------------------------------------------------- methods


def train_plain(
    model: RiskTransformer, genotypes: np.ndarray, labels: np.ndarray, features: PanelFeatures,
    *, epochs: int, batch_size: int, learning_rate: float, seed: int, cosine: bool = False,
) -> tuple[list[float], list[float]]:
    """Ordinary (non-private) minibatch Adam, shuffled each epoch: (mean loss, learning rate of
    the epoch's last step) per epoch.

    `cosine`: decay the learning rate to zero over the training, step by step, so that the
    final weights are not set by the last few minibatches' noise."""
    device = pick_device()
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    model.to(device).train()
    features = features.to(device)
    x = torch.as_tensor(genotypes, dtype=torch.long)
    y = torch.as_tensor(labels, dtype=torch.float32)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    steps = epochs * math.ceil(len(y) / batch_size)
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(steps, 1))
                if cosine else None)
    losses, rates = [], []
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=order)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = perm[start:start + batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = F.binary_cross_entropy_with_logits(model(xb, features), yb)
            loss.backward()
            rate = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if schedule is not None:
                schedule.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / max(len(y), 1))
        rates.append(float(rate))
    return losses, rates


def fresh_model(cfg: ModelConfig, seed: int) -> RiskTransformer:
    """The federation's initial global model (same seed, same weights)."""
    model = RiskTransformer(cfg)
    set_weights(model, initial_weights(cfg, seed))
    return model


def dp_alone(
    cfg: ModelConfig, data: CohortData, people: People, settings: RunSettings, epochs: int,
    seed: int,
) -> tuple[RiskTransformer, dict[str, Any]]:
    """One site's DP-SGD training on its own people under its whole budget, `epochs` epochs."""
    plan = DPPlan.for_site(len(people.labels), settings.batch_size, epochs,
                           settings.max_steps_per_epoch)
    sigma = calibrate_noise(settings.target_epsilon, settings.target_delta, plan.sample_rate,
                            plan.steps)
    model = fresh_model(cfg, settings.seed)
    result = train_dp(
        model, people.genotypes, people.labels, data.features, plan=plan,
        learning_rate=settings.learning_rate, noise_multiplier=sigma,
        max_grad_norm=settings.max_grad_norm, device=pick_device(),
        optimizer=settings.optimizer,
    )
    eps = epsilon_for([(sigma, result.sample_rate, result.steps)], settings.target_delta, "prv")
    return model, {"n_train": len(people.labels), "noise_multiplier": sigma, "epsilon": eps,
                   "delta": settings.target_delta, "steps": result.steps, "epochs": epochs}


def true_pair_products(cohort_dir: Path, data: CohortData) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) [N, pairs] products of centred dosages at the simulation's true
    interaction pairs, the form the simulator scores, centred at the training people's means
    (NaN where a call is missing, which the imputer then fills)."""
    pairs = json.loads((cohort_dir / "cohort.json").read_text())["interaction_pairs"]
    row = {int(bp): i for i, bp in enumerate(data.features.coord.numpy().astype(np.int64))}
    missing = [bp for pair in pairs for bp in pair if int(bp) not in row]
    if missing:
        raise RuntimeError(f"interaction positions {missing} are not panel variants")
    train, test = dosages(data.train.genotypes), dosages(data.test.genotypes)
    mean = np.nanmean(train, axis=0)

    def products(dose: np.ndarray) -> np.ndarray:
        return np.stack([(dose[:, row[a]] - mean[row[a]]) * (dose[:, row[b]] - mean[row[b]])
                         for a, b in pairs], axis=1)

    return products(train), products(test)


def linear_search(seed: int):  # noqa: ANN201 (sklearn's GridSearchCV)
    """The linear score's model, unfitted: mean-imputed, standardised dosages into an L2
    logistic regression whose C is chosen by CV_FOLDS-fold CV AUROC over CV_CS."""
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, StratifiedKFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipe = make_pipeline(SimpleImputer(strategy="mean"), StandardScaler(),
                         LogisticRegression(max_iter=5000))
    return GridSearchCV(
        pipe, {"logisticregression__C": list(CV_CS)}, scoring="roc_auc",
        cv=StratifiedKFold(CV_FOLDS, shuffle=True, random_state=seed), n_jobs=1,
    )


def linear_prs(
    data: CohortData, seed: int, extra: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Held-out scores of an L2 logistic regression on dosages, C by CV on the training people.

    `extra`: (training, held-out) feature columns appended to the dosages."""
    search = linear_search(seed)
    train, test = dosages(data.train.genotypes), dosages(data.test.genotypes)
    if extra is not None:
        train, test = np.hstack([train, extra[0]]), np.hstack([test, extra[1]])
    search.fit(train, data.train.labels)
    scores = search.decision_function(test)
    return scores, {"C": float(search.best_params_["logisticregression__C"]),
                    "cv_auroc": float(search.best_score_), "cv_folds": CV_FOLDS,
                    "C_grid": [min(CV_CS), max(CV_CS), len(CV_CS)],
                    "model": "StandardScaler + LogisticRegression (L2), dosages, "
                             "missing -> training mean"}


def oracle_scores(cohort_dir: Path, test: People) -> np.ndarray:
    truth = pd.read_csv(cohort_dir / "truth.tsv", sep="\t", dtype={"sample_id": str})
    liability = truth.set_index("sample_id")["genetic_liability"]
    held_out = set(truth.loc[truth["split"] == "test", "sample_id"])
    if held_out != set(test.sample_id):
        raise RuntimeError("the sites' test split and truth.tsv's disagree")
    return liability.loc[test.sample_id].to_numpy()


def run_results(run_dir: Path) -> tuple[dict[str, Any], list[RoundRecord]]:
    """A federated run's results.json and its rounds."""
    results = json.loads(RunFolder(run_dir).results.read_text())
    return results, read_rounds(results["rounds"])


def cox_recalibration(run_dir: Path) -> Recalibration:
    """Cox's two-parameter fits of the run's last evaluation: the recalibration before closed
    testing, from the same DP releases the checkpoint's own recalibration came from."""
    _, rounds = run_results(run_dir)
    last = next(r for r in reversed(rounds) if r.metrics)

    def cox(metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in metrics.items() if k != "recalibration"}

    return Recalibration.from_metrics({
        "overall": cox(last.metrics.get("overall") or {"suppressed": True}),
        "by_group": {g: cox(m) for g, m in (last.metrics.get("by_group") or {}).items()}})


def federated_model(run_dir: Path) -> RiskTransformer:
    return load_checkpoint(RunFolder(run_dir).latest).model()


def federation_reported(run_dir: Path) -> dict[str, Any]:
    """What the coordinator itself reported for its last round (AUROC from the sites' DP-noised
    histograms, with its noise-aware interval), and each site's epsilon after the first and the
    last round."""
    results, rounds = run_results(run_dir)
    last = next(r for r in reversed(rounds) if r.metrics)
    first = next((r for r in rounds if r.privacy), RoundRecord(round=0))
    return {
        "status": results.get("status"),
        "auroc": {p: last.group_auroc(p) for p in POPULATIONS},
        "auroc_ci": {p: last.groups().get(p, {}).get("auroc_ci") for p in POPULATIONS},
        "epsilon": {s: p["epsilon"] for s, p in latest_privacy(rounds).items()},
        "epsilon_round_1": first.epsilons(),
    }


# --------------------------------------------------------------------------- section


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    config = QUICK if quick else FULL
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    extra = QUICK_RUN if quick else FULL_RUN
    runs = QUICK_FEDERATED_RUNS if quick else FULL_FEDERATED_RUNS
    cohort_dir = work_dir / "cohort"
    timings: dict[str, float] = {}

    began = time.perf_counter()
    say("utility", f"simulating the cohort ({config.sites} sites, "
                   f"{config.people_per_population} people per population)")
    meta = simulate_cohort(cohort_dir, config, force=True)
    register_sites(cohort_dir)  # each site's keys; the coordinator's registry
    timings["simulate_s"] = time.perf_counter() - began

    def overrides(run: int) -> dict[str, object]:
        # Each training gets its own copy of the site folders: a site's privacy ledger lives
        # beside its data and is rightly spent by the first run, so a second run there would
        # only get what is left of epsilon (measured: AUROC ~0.6 from round 1 at epsilon 7.98).
        root = cohort_dir if run == 0 else fresh_copy(cohort_dir, work_dir / f"cohort-{run}")
        return {"num-server-rounds": rounds, "min-sites": config.sites,
                "data-root": str(root), "out-dir": str(work_dir / f"run-{run}"),
                "seed": config.seed + run, **extra}

    settings = RunSettings.from_run_config(overrides(0))
    epochs = settings.num_server_rounds * settings.local_epochs

    fed_runs: list[dict[str, Any]] = []
    for run in range(runs):
        say("utility", f"federated_dp run {run + 1} of {runs} (seed {config.seed + run}): "
                       f"{rounds} rounds through Flower's simulation engine")
        began = time.perf_counter()
        run_simulation(overrides(run), config.sites, work_dir / f"federation-{run}",
                       timeout=3000)
        fed_runs.append({"seed": config.seed + run, "run_dir": work_dir / f"run-{run}",
                         "seconds": time.perf_counter() - began})
    timings["federated_dp_s"] = sum(r["seconds"] for r in fed_runs) / runs

    data = load_cohort(cohort_dir, settings)
    cfg = settings.model_config(data.n_variants)
    device = pick_device()
    oracle = oracle_scores(cohort_dir, data.test)
    oracle_auroc = auroc_by_population(oracle, data.test)
    results: dict[str, dict] = {
        "oracle": {pop: {"auroc": oracle_auroc[pop], "attainable": 1.0} for pop in POPULATIONS},
    }
    scores: dict[str, list[np.ndarray]] = {"oracle": [oracle], "federated_dp": [],
                                           "centralized": []}
    fed_models, recalibrations, cox_fits = [], [], []
    for r in fed_runs:
        fed = federated_model(r["run_dir"])
        fed_models.append(fed)
        recalibrations.append(load_checkpoint(RunFolder(r["run_dir"]).latest).calibration())
        cox_fits.append(cox_recalibration(r["run_dir"]))
        scores["federated_dp"].append(
            predict_logits(fed, data.test.genotypes, data.features, device))
        r["auroc"] = auroc_by_population(scores["federated_dp"][-1], data.test)
        r["reported"] = federation_reported(r.pop("run_dir"))
    results["federated_dp"] = method_table(
        mean_auroc([r["auroc"] for r in fed_runs]), oracle_auroc)

    cen_runs: list[dict[str, Any]] = []
    began = time.perf_counter()
    for run, fed in enumerate(fed_runs):
        seed = fed["seed"]  # the federated run's seed: same initial weights
        say("utility", f"centralized run {run + 1} of {runs} (seed {seed}): "
                       f"{len(data.train.labels)} pooled people, {epochs} epochs, no DP, "
                       "cosine learning-rate decay")
        model = fresh_model(cfg, seed)
        losses, rates = train_plain(
            model, data.train.genotypes, data.train.labels, data.features, epochs=epochs,
            batch_size=settings.batch_size, learning_rate=PLAIN_LEARNING_RATE, seed=seed,
            cosine=True)
        scores["centralized"].append(
            predict_logits(model, data.test.genotypes, data.features, device))
        cen_runs.append({"seed": seed, "train_loss": losses, "learning_rate": rates,
                         "auroc": auroc_by_population(scores["centralized"][-1], data.test)})
    results["centralized"] = method_table(
        mean_auroc([r["auroc"] for r in cen_runs]), oracle_auroc)
    timings["centralized_s"] = (time.perf_counter() - began) / runs

    by_site: dict[str, dict] = {}
    site_privacy: dict[str, dict] = {}
    began = time.perf_counter()
    for k, name in enumerate(data.sites):
        say("utility", f"site_alone: {name}, DP-SGD, {epochs} epochs")
        model, info = dp_alone(cfg, data, data.train.subset(data.train.site == name), settings,
                               epochs, seed=settings.seed + 101 * (k + 1))
        site_privacy[name] = info
        by_site[name] = method_table(
            auroc_by_population(predict_logits(model, data.test.genotypes, data.features, device),
                                data.test), oracle_auroc)
    timings["site_alone_s"] = time.perf_counter() - began
    best: dict[str, dict] = {}
    for pop in POPULATIONS:
        scored = [(s, t[pop]) for s, t in by_site.items() if _finite(t[pop]["auroc"])]
        if scored:
            site, row = max(scored, key=lambda item: item[1]["auroc"])
            best[pop] = {**row, "site": site}
        else:
            best[pop] = {"auroc": None, "attainable": None, "site": None}
    results["site_alone"] = best

    say("utility", "linear_prs: L2 logistic regression on dosages, C by CV")
    began = time.perf_counter()
    linear, linear_info = linear_prs(data, settings.seed)
    scores["linear_prs"] = [linear]
    results["linear_prs"] = method_table(auroc_by_population(linear, data.test), oracle_auroc)
    timings["linear_prs_s"] = time.perf_counter() - began

    say("utility", "site_alone_plain: each site's own models, without DP")
    began = time.perf_counter()
    plain, plain_info = site_alone_plain(data, cfg, settings, epochs, PLAIN_LEARNING_RATE,
                                         settings.seed)
    plain_tables: dict[str, dict[str, dict]] = {}
    for site, models in plain.items():
        for model_name, site_scores in models.items():
            key = f"{SITE_PLAIN}{site}:{model_name}"
            scores[key] = [site_scores]
            results[key] = method_table(auroc_by_population(site_scores, data.test),
                                        oracle_auroc)
            plain_tables.setdefault(site, {})[model_name] = results[key]
    results["site_alone_plain"] = best_candidate(results, SITE_PLAIN)
    timings["site_alone_plain_s"] = time.perf_counter() - began

    say("utility", "meta_gwas: per-site GWAS, inverse-variance meta-analysis, C+T")
    began = time.perf_counter()
    assert data.contig is not None
    gwas = meta_gwas(data, data.contig, POPULATIONS, settings.seed)
    for key, part in (("meta_gwas", gwas["single"]), ("meta_gwas_multi", gwas["multi"])):
        scores[key] = [part["scores"]]
        results[key] = method_table(auroc_by_population(part["scores"], data.test),
                                    oracle_auroc)
    timings["meta_gwas_s"] = time.perf_counter() - began

    say("utility", "calibration: the federated model's risk, raw and recalibrated from the "
                   "sites' DP evaluation statistics")
    y, anc = data.test.labels, data.test.ancestry
    raw_cal = [risk.by_population(y, s, anc, POPULATIONS) for s in scores["federated_dp"]]
    cal_resamples = QUICK_CALIBRATION_RESAMPLES if quick else FULL_CALIBRATION_RESAMPLES
    recal = [risk.by_population(y, fit.apply(s, anc)[0], anc, POPULATIONS, cal_resamples,
                                settings.seed)
             for s, fit in zip(scores["federated_dp"], recalibrations, strict=True)]
    calibrated = {
        "federated_dp_raw": raw_cal,
        "federated_dp_recalibrated": recal,
        "recalibration": [fit.to_dict() for fit in recalibrations],
        "federated_dp_recalibrated_cox": [
            risk.by_population(y, fit.apply(s, anc)[0], anc, POPULATIONS)
            for s, fit in zip(scores["federated_dp"], cox_fits, strict=True)],
        "recalibration_cox": [fit.to_dict() for fit in cox_fits],
        "centralized": [risk.by_population(y, s, anc, POPULATIONS)
                        for s in scores["centralized"]],
        "linear_prs": risk.by_population(y, linear, anc, POPULATIONS),
        "meta_gwas": {pop: risk.clinical(y[anc == pop], gwas["single"]["scores"][anc == pop])
                      for pop in POPULATIONS},
        "oracle": {pop: risk.clinical(y[anc == pop], oracle[anc == pop]) for pop in POPULATIONS},
        "note": ("the recalibration is each federated run's final checkpoint's own (fitted by "
                 "the coordinator from the sites' DP-noised histograms of their held-out "
                 "people: two numbers per ancestry, closed-tested: no update, intercept "
                 "only, or intercept and slope); *_cox is Cox's two-parameter fit from the same "
                 "releases; slope and calibration-in-the-large are measured on the bench's "
                 "held-out people's exact outcomes, with bootstrap intervals over those "
                 "people (how precisely they can measure calibration); the clinical cut-offs "
                 "(top 5%/10%, top decile vs 40th-60th percentile) are within each "
                 "population; the C+T score is not a probability, so only its cut-offs are shown"),
    }

    say("utility", "interaction_reference: the linear score plus the true interaction pairs")
    extra = true_pair_products(cohort_dir, data)
    with_pairs, reference_info = linear_prs(data, settings.seed, extra)
    reference = method_table(auroc_by_population(with_pairs, data.test), oracle_auroc)

    say("utility", "evaluation noise: the sites' DP evaluation releases of the federated model")
    began = time.perf_counter()
    largest = max(int((data.train.site == s).sum()) for s in data.sites)
    centre = (public_center(fed_models[0], data.features, device)
              if settings.score_centering == "panel" and data.features.alt_freq is not None
              else settings.score_center)
    evaluation = measure_evaluation_noise(
        scores["federated_dp"][0], data.test.labels, data.test.ancestry, data.test.site,
        largest, settings, QUICK_DRAWS if quick else FULL_DRAWS, settings.seed, centre)
    timings["evaluation_noise_s"] = time.perf_counter() - began

    resamples = QUICK_RESAMPLES if quick else FULL_RESAMPLES
    say("utility", f"margin intervals: {resamples} bootstrap resamples of the held-out people")
    began = time.perf_counter()
    goals = targets(results)
    add_intervals(goals, margin_intervals(scores, data.test, resamples, settings.seed),
                  resamples)
    goals["calibrated_risk"] = calibration_goal(recal)
    timings["intervals_s"] = time.perf_counter() - began

    n_test = {pop: {"n": int((data.test.ancestry == pop).sum()),
                    "cases": int(data.test.labels[data.test.ancestry == pop].sum())}
              for pop in POPULATIONS}
    return {
        **{m: results[m] for m in METHODS},
        "site_alone_by_site": by_site,
        "site_alone_plain": results["site_alone_plain"],
        "site_alone_plain_by_site": plain_tables,
        "site_alone_plain_fit": plain_info,
        "meta_gwas": results["meta_gwas"],
        "meta_gwas_multi": results["meta_gwas_multi"],
        "meta_gwas_fit": {"single": gwas["single"]["fit"], "multi": gwas["multi"]["fit"]},
        "calibration": calibrated,
        "targets": goals,
        "evaluation_noise": evaluation,
        "held_out": n_test,
        "n_train": int(len(data.train.labels)),
        "cohort_oracle_auroc": meta.get("oracle_auroc"),
        "federated_dp_runs": fed_runs,
        "site_alone_privacy": site_privacy,
        "centralized_runs": cen_runs,
        "linear_prs_fit": linear_info,
        "interaction_reference": reference,
        "interaction_reference_fit": {**reference_info, "pairs": int(extra[0].shape[1]),
                                      "features": "dosages + (d_a - mean) * (d_b - mean) at each "
                                      "true pair (cohort.json: the truth, like the oracle)"},
        "settings": {
            "cohort": dataclasses.asdict(config),
            "rounds": settings.num_server_rounds, "local_epochs": settings.local_epochs,
            "epochs": epochs, "batch_size": settings.batch_size,
            "optimizer": settings.optimizer, "learning_rate": settings.learning_rate,
            "plain_learning_rate": PLAIN_LEARNING_RATE, "target_epsilon": settings.target_epsilon,
            "target_delta": settings.target_delta, "architecture": settings.architecture(),
            "max_grad_norm": settings.max_grad_norm,
        },
        "note": (
            "every method is scored on the same held-out people (all sites' test split) with "
            "sklearn's roc_auc_score per population; federated_dp uses the coordinator's final "
            "checkpoint; attainable = (AUROC - 0.5) / (oracle AUROC - 0.5)"
        ),
        **timings,
    }
