"""One site's federated work: train a round under its privacy budget, evaluate the global model.

This is where the site's rules are enforced, whatever the coordinator asks: the noise is
calibrated so that everything ever spent on this data stays within the site's epsilon, each
round is costed before it runs, and only weights and aggregate statistics are returned.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from client.budget import SITE_CONFIG, SiteBudget, training_option
from client.data import SiteData, load_site
from client.train import DPPlan, balancing_weights, pick_device, predict_logits, train_dp
from shared.encoding import model_config
from shared.errors import InputError
from shared.metrics import GroupedScores
from shared.model import RiskTransformer, get_weights, set_weights
from shared.privacy import PrivacyLedger, calibrate_noise
from shared.runconfig import RunSettings

PRIVACY_LEDGER = "privacy-ledger.json"
BALANCE_MODES = ("none", "reweight")


@dataclass(frozen=True)
class FitReport:
    weights: list[np.ndarray]
    n_examples: int
    metrics: dict[str, float | int | str]


class Site:
    """A hospital's node: its data folder, its state folder and its settings."""

    def __init__(
        self, data_path: str | Path, settings: RunSettings, name: str | None = None,
        state_path: str | Path | None = None, budget: SiteBudget | None = None,
        balance: str | None = None,
    ) -> None:
        self.data_path = Path(data_path)
        self.settings = settings
        self.name = name or self.data_path.name
        self.state_path = Path(state_path) if state_path else self.data_path / ".genofed-state"
        self.budget = budget or SiteBudget.load(self.data_path)
        # Ancestry balancing in training: "none" or "reweight" (site.toml [training] balance).
        self.balance = balance or training_option(self.data_path, "balance", "none")
        if self.balance not in BALANCE_MODES:
            raise InputError(self.data_path / SITE_CONFIG,
                             f"balance must be one of {', '.join(BALANCE_MODES)}")
        self.device = pick_device()

    def data(self, panel_sha256: str = "") -> SiteData:
        """The site's encoded data; refuses a panel other than the coordinator's."""
        data = load_site(self.data_path, self.settings.encoder(), self.state_path / "cache")
        if panel_sha256 and data.panel.sha256 != panel_sha256:
            raise InputError(self.data_path / "panel.tsv",
                             "panel differs from the coordinator's (sha256 mismatch)")
        return data

    def model(self, data: SiteData, weights: list[np.ndarray] | None) -> RiskTransformer:
        cfg = model_config(len(data.panel), self.settings.encoder(), **self.settings.architecture())
        model = RiskTransformer(cfg)
        if weights is not None:
            set_weights(model, weights)
        return model

    def ledger(self) -> PrivacyLedger:
        return PrivacyLedger.load(self.state_path / PRIVACY_LEDGER, self.budget.accountant)

    def _seed(self, server_round: int) -> int:
        digest = hashlib.sha256(f"{self.name}/{self.settings.seed}/{server_round}".encode())
        return int.from_bytes(digest.digest()[:4], "little")

    def fit(
        self, weights: list[np.ndarray], server_round: int, run_id: str, panel_sha256: str = ""
    ) -> FitReport:
        began = time.perf_counter()
        s = self.settings
        epsilon, delta = self.budget.effective(s.target_epsilon, s.target_delta)
        data = self.data(panel_sha256)
        g, y, ancestry = data.split("train")
        plan = DPPlan.for_site(len(y), s.batch_size, s.local_epochs, s.max_steps_per_epoch)
        ledger = self.ledger()
        spent = ledger.epsilon(delta)

        def decline(reason: str) -> FitReport:
            return FitReport(weights, 0, {
                "site": self.name, "declined": 1, "epsilon": spent, "delta": delta,
                "reason": reason,
            })

        sigma = ledger.runs.get(run_id)
        if sigma is None:
            # Calibrate once per run for all its rounds, on top of what earlier runs spent.
            remaining = max(1, s.num_server_rounds - server_round + 1)
            try:
                sigma = calibrate_noise(
                    epsilon, delta, plan.sample_rate, plan.steps,
                    accountant=ledger.accountant, prior=ledger.history, blocks=remaining,
                )
            except ValueError as err:
                return decline(f"privacy budget epsilon {epsilon:g} cannot fund this run: {err}")
            sigma = max(sigma, self.budget.min_noise_multiplier)
            ledger.runs[run_id] = sigma
            ledger.save()
        projected = ledger.projected_epsilon(delta, sigma, plan.sample_rate, plan.steps)
        if projected > epsilon * 1.001:
            return decline(f"round would spend epsilon to {projected:.3f}, "
                           f"over the site's budget {epsilon:g}")
        model = self.model(data, weights)
        result = train_dp(
            model, g, y, data.features, plan=plan, learning_rate=s.learning_rate,
            noise_multiplier=sigma, max_grad_norm=s.max_grad_norm,
            seed=self._seed(server_round), device=self.device, optimizer=s.optimizer,
            sample_weights=balancing_weights(ancestry) if self.balance == "reweight" else None,
        )
        ledger.record(sigma, result.sample_rate, result.steps)
        return FitReport(get_weights(model), result.n_examples, {
            "site": self.name,
            "declined": 0,
            "epsilon": ledger.epsilon(delta),
            "delta": delta,
            "noise_multiplier": sigma,
            "train_loss": result.mean_loss,
            # Wall seconds of this round's work here (data, accounting, DP-SGD) and when it
            # ended (Unix time): let the coordinator tell a slow site from a slow network.
            "train_s": time.perf_counter() - began,
            "train_ended_at": time.time(),
        })

    def evaluate(
        self, weights: list[np.ndarray], panel_sha256: str = ""
    ) -> tuple[float, int, dict[str, str | int | float]]:
        """Score held-out people; return only per-ancestry aggregates above the suppression k."""
        began = time.perf_counter()
        data = self.data(panel_sha256)
        g, y, ancestry = data.split("test")
        model = self.model(data, weights)
        logits = predict_logits(model, g, data.features, self.device)
        loss = float(torch.nn.functional.binary_cross_entropy_with_logits(
            torch.as_tensor(logits), torch.as_tensor(y, dtype=torch.float32)
        )) if len(y) else 0.0
        scores = GroupedScores.from_predictions(logits, y, ancestry)
        return loss, len(y), {
            "site": self.name,
            "scores": scores.to_json(min_count=self.settings.suppression_k),
            "evaluate_s": time.perf_counter() - began,
            "evaluate_ended_at": time.time(),
        }
