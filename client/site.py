"""One site's federated work: train a round under its privacy budget, evaluate the global model.

This is where the site's rules are enforced, whatever the coordinator asks:

- every release (noisy counts, DP-SGD weights, noisy evaluation histograms) is costed against
  the site's persisted ledger before it is made, recorded before it leaves, and refused when it
  would take the site past its epsilon; the ledger is locked for the whole sequence;
- the noise is calibrated once per run so that everything ever spent on this data, including
  the evaluations the run plans, stays within the stricter of the site's and the coordinator's
  epsilon, and never below the site's minimum noise multiplier;
- all DP randomness is a secret of this process (`client.randomness`);
- only the fields of `shared.protocol` leave, and a failure leaves as a category; the detail,
  and everything exact (loss, timings, sizes), goes to the site's own log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from client.budget import SiteBudget
from client.data import SiteData, load_site
from client.privacy_state import open_ledger
from client.randomness import DPRandomness
from client.release import (
    COUNT_SENSITIVITY,
    CohortCounts,
    balancing_weights,
    public_center,
    release_counts,
    release_scores,
)
from client.settings import BALANCE_MODES, SITE_CONFIG, SiteSettings
from client.train import DPPlan, pick_device, predict_logits, train_dp
from shared.errors import GenofedError, InputError
from shared.model import RiskTransformer, get_weights, set_weights
from shared.privacy import PrivacyLedger, calibrate_noise, gaussian_release, sigma_for_share
from shared.protocol import site_version
from shared.runconfig import RunSettings

ACTIVITY_LOG = "activity.jsonl"

log = logging.getLogger(__name__)


class SiteFailure(GenofedError):
    """A failure the coordinator may hear about by its category (`shared.protocol.REFUSALS`);
    the message, which may name files, people or values, stays in the site's log."""

    def __init__(self, category: str, detail: str) -> None:
        super().__init__(detail)
        self.category = category


class Refused(Exception):  # noqa: N818 (a refusal, not an error of the site's code)
    """Raised inside a release when the budget does not allow it."""


@dataclass(frozen=True)
class FitReport:
    weights: list[np.ndarray]
    n_examples: int
    metrics: dict[str, float | int | str]


@dataclass(frozen=True)
class EvaluateReport:
    metrics: dict[str, float | int | str]


class Site:
    """A hospital's node: its data folder, its state folder and its settings."""

    def __init__(
        self, data_path: str | Path, settings: RunSettings, name: str | None = None,
        state_path: str | Path | None = None, own: SiteSettings | None = None,
        budget: SiteBudget | None = None, balance: str | None = None,
    ) -> None:
        """`own`: the site's settings (default: its site.toml); `budget` and `balance` replace
        those two of them."""
        self.data_path = Path(data_path)
        self.settings = settings
        self.name = name or self.data_path.name
        self.state_path = Path(state_path) if state_path else self.data_path / ".genofed-state"
        self.own = own or SiteSettings.load(self.data_path)
        self.budget = budget or self.own.privacy
        self.balance = balance or self.own.training.balance
        if self.balance not in BALANCE_MODES:
            raise InputError(self.data_path / SITE_CONFIG,
                             f"balance must be one of {', '.join(BALANCE_MODES)}")
        self.device = pick_device()

    # --- inputs ------------------------------------------------------------------------------

    def data(self, panel_sha256: str = "") -> SiteData:
        """The site's encoded data; refuses a panel other than the coordinator's."""
        try:
            data = load_site(self.data_path, self.settings.encoder(), self.state_path / "cache",
                             spec=self.own.cohort,
                             min_quality=self.own.genotypes.min_imputation_quality,
                             groups=self.own.ancestry.groups)
        except GenofedError as err:
            raise SiteFailure("data-error", str(err)) from err
        if panel_sha256 and data.panel.sha256 != panel_sha256:
            raise SiteFailure("panel-mismatch", f"{self.data_path / 'panel.tsv'}: panel "
                                                "differs from the coordinator's (sha256)")
        return data

    def model(self, data: SiteData, weights: list[np.ndarray] | None) -> RiskTransformer:
        cfg = self.settings.model_config(len(data.panel))
        model = RiskTransformer(cfg)
        if weights is not None:
            set_weights(model, weights)
        return model

    @contextlib.contextmanager
    def ledger(self) -> Iterator[PrivacyLedger]:
        """The site's privacy ledger, locked and checked against the data folder."""
        try:
            with open_ledger(self.data_path, self.state_path, self.budget.accountant) as ledger:
                yield ledger
        except InputError as err:
            raise SiteFailure("ledger-error", str(err)) from err

    def budget_for_run(self) -> tuple[float, float]:
        s = self.settings
        return self.budget.effective(s.target_epsilon, s.target_delta)

    # --- releases ----------------------------------------------------------------------------

    def _charge(self, ledger: PrivacyLedger, *entries: tuple[float, float, int]) -> float:
        """Record `entries` before they are released, or refuse them if over budget; the
        epsilon spent once they are."""
        epsilon, delta = self.budget_for_run()
        projected = ledger.projected_epsilon(delta, *entries)
        if projected > epsilon * 1.001:
            raise Refused(f"release would spend epsilon to {projected:.3f}, over the budget "
                          f"{epsilon:g}")
        ledger.record(*entries)
        return projected

    def counts(self, ledger: PrivacyLedger, data: SiteData) -> CohortCounts:
        """The noisy counts of this version of the cohort table: released once, then reused."""
        key = f"counts:{data.fingerprint()}"
        if key in ledger.releases:
            return CohortCounts.from_json(ledger.releases[key])
        epsilon, delta = self.budget_for_run()
        # Its sensitivity is sqrt(2): it costs what two sensitivity-1 releases cost.
        sigma = sigma_for_share(self.budget.count_share, epsilon, delta, releases=2)
        self._charge(ledger, gaussian_release(sigma, COUNT_SENSITIVITY))
        rng = DPRandomness.for_release(f"{self.name}/{key}").numpy("counts")
        c = data.cohort
        counts = release_counts(data.groups, c.split, c.phenotype, data.vocabulary, sigma, rng)
        ledger.releases[key] = counts.to_json()
        ledger.save()
        return counts

    def _planned_evaluations(self, server_round: int) -> int:
        """Evaluations this run will still ask of the site, by its public schedule."""
        s = self.settings
        if s.evaluate_rounds == "all":
            return max(1, s.num_server_rounds - server_round + 1)
        return 1

    def _run(self, ledger: PrivacyLedger, run_id: str, server_round: int) -> dict[str, float]:
        """This run's noise settings, fixed when the site first hears of the run: the
        evaluations' sigma (their share of the budget, spread over the evaluations the run's
        public schedule plans) and, once it trains, its DP-SGD noise multiplier."""
        run = ledger.runs.setdefault(run_id, {})
        if "evaluation_noise" not in run:
            epsilon, delta = self.budget_for_run()
            run["evaluations"] = self._planned_evaluations(server_round)
            run["evaluation_noise"] = sigma_for_share(
                self.budget.evaluation_share, epsilon, delta, releases=int(run["evaluations"]))
            ledger.save()
        return run

    def _run_sigma(
        self, ledger: PrivacyLedger, plan: DPPlan, run_id: str, server_round: int
    ) -> float:
        run = self._run(ledger, run_id, server_round)
        if "noise_multiplier" in run:
            return run["noise_multiplier"]
        # Calibrate once per run for all its rounds and its planned evaluations, on top of
        # what earlier runs and releases spent.
        epsilon, delta = self.budget_for_run()
        remaining = max(1, self.settings.num_server_rounds - server_round + 1)
        evaluations = [gaussian_release(run["evaluation_noise"])] * int(run["evaluations"])
        try:
            sigma = calibrate_noise(
                epsilon, delta, plan.sample_rate, plan.steps, accountant=ledger.accountant,
                prior=ledger.history, blocks=remaining, also=evaluations,
            )
        except ValueError as err:
            raise Refused(f"privacy budget epsilon {epsilon:g} cannot fund this run: {err}") \
                from err
        run["noise_multiplier"] = max(sigma, self.budget.min_noise_multiplier)
        ledger.save()
        return run["noise_multiplier"]

    def _declined(self, ledger: PrivacyLedger, why: Refused) -> dict[str, Any]:
        log.warning("site %s declined: %s", self.name, why)
        epsilon, delta = ledger.epsilon(self.budget_for_run()[1]), self.budget_for_run()[1]
        return {"site": self.name, "version": site_version(), "declined": 1,
                "reason": "budget-exhausted", "epsilon": epsilon, "delta": delta}

    def fit(
        self, weights: list[np.ndarray], server_round: int, run_id: str, panel_sha256: str = "",
        evaluate_received: bool = False, min_group: float = 0, center: float = 0.0,
    ) -> FitReport:
        """One round of local DP-SGD on the received weights; optionally scores them first."""
        began = time.perf_counter()
        s = self.settings
        with self.ledger() as ledger:
            evaluation: dict[str, Any] = {}
            data = self.data(panel_sha256)
            if evaluate_received:  # the previous round's model
                evaluation = self._evaluate(ledger, data, weights, run_id, server_round,
                                            min_group, center, model_round=server_round - 1)
            try:
                counts = self.counts(ledger, data)
                plan = DPPlan.for_site(counts.n_train, s.batch_size, s.local_epochs,
                                       s.max_steps_per_epoch)
                sigma = self._run_sigma(ledger, plan, run_id, server_round)
                epsilon = self._charge(ledger, (sigma, plan.sample_rate, plan.steps))
            except Refused as why:
                return FitReport(weights, 0, {**evaluation, **self._declined(ledger, why)})
            g, y, groups = data.split("train")
            sample_weights = None
            if self.balance == "reweight":
                sample_weights = balancing_weights(groups, counts, self.budget.min_group_size)
            model = self.model(data, weights)
            randomness = DPRandomness.for_release(f"{self.name}/{server_round}/train")
            result = train_dp(
                model, g, y, data.features, plan=plan, learning_rate=s.learning_rate,
                noise_multiplier=sigma, max_grad_norm=s.max_grad_norm, device=self.device,
                optimizer=s.optimizer, sample_weights=sample_weights, randomness=randomness,
            )
            if result.steps != plan.steps:  # the ledger already holds the plan's steps
                raise SiteFailure("internal-error", f"took {result.steps} DP-SGD steps where "
                                                    f"{plan.steps} were costed")
            delta = self.budget_for_run()[1]
        self._log_activity(run_id=run_id, round=server_round, event="train",
                           train_s=time.perf_counter() - began, train_ended_at=time.time(),
                           loss=result.mean_loss, steps=result.steps,
                           empty_steps=result.empty_steps, noise_multiplier=sigma,
                           epsilon=epsilon)
        return FitReport(get_weights(model), max(1, int(round(counts.n_train))), {
            **evaluation, "site": self.name, "version": site_version(), "declined": 0,
            "epsilon": epsilon, "delta": delta, "noise_multiplier": sigma,
        })

    def evaluate(
        self, weights: list[np.ndarray], run_id: str, server_round: int,
        panel_sha256: str = "", min_group: float = 0, center: float = 0.0,
    ) -> EvaluateReport:
        """Score the held-out people; release only noisy per-ancestry histograms."""
        with self.ledger() as ledger:
            data = self.data(panel_sha256)
            metrics = self._evaluate(ledger, data, weights, run_id, server_round, min_group,
                                     center, model_round=server_round)
        return EvaluateReport(metrics)

    def _evaluate(
        self, ledger: PrivacyLedger, data: SiteData, weights: list[np.ndarray], run_id: str,
        server_round: int, min_group: float, center: float, model_round: int,
    ) -> dict[str, Any]:
        began = time.perf_counter()
        try:
            counts = self.counts(ledger, data)
            sigma = self._run(ledger, run_id, server_round)["evaluation_noise"]
            epsilon = self._charge(ledger, gaussian_release(sigma))
        except Refused as why:
            return self._declined(ledger, why)
        g, y, groups = data.split("test")
        model = self.model(data, weights)
        logits = predict_logits(model, g, data.features, self.device)
        center = self._bin_center(model, data, center)
        floor = max(self.budget.min_group_size, float(min_group))
        rng = DPRandomness.for_release(f"{self.name}/evaluate/{len(ledger.history)}")
        scores = release_scores(logits, y, groups, counts, floor, sigma, center,
                                rng.numpy("scores"))
        delta = self.budget_for_run()[1]
        self._log_activity(run_id=run_id, model_round=model_round, event="evaluate",
                           evaluate_s=time.perf_counter() - began,
                           evaluate_ended_at=time.time(), epsilon=epsilon,
                           withheld=sorted(set(counts.groups) - set(scores.groups)))
        return {"site": self.name, "version": site_version(), "declined": 0,
                "epsilon": epsilon, "delta": delta, "scores": scores.to_json()}

    def _bin_center(self, model: RiskTransformer, data: SiteData, configured: float) -> float:
        """Where the evaluation histograms' bins go: around the model's median logit over
        people drawn under Hardy-Weinberg from the panel's public allele frequencies, with a
        seed everyone knows. Public inputs only (the weights, the panel, the reference), so it
        costs no budget and every site gets the same centre, which travels in the payload.
        Fixed bins around `configured` cannot rank a model whose scores sit outside them."""
        if self.settings.score_centering != "panel" or data.features.alt_freq is None:
            return configured
        return public_center(model, data.features, self.device)

    def _log_activity(self, **event: Any) -> None:
        """The site's own record of its work (exact, local, never sent)."""
        self.state_path.mkdir(parents=True, exist_ok=True)
        with open(self.state_path / ACTIVITY_LOG, "a") as fh:
            fh.write(json.dumps({"site": self.name, **event}) + "\n")
