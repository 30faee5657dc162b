"""Local training with sample-level DP-SGD (Opacus), and scoring, on the site's own machine."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from shared.model import PanelFeatures, RiskTransformer, register_grad_samplers
from shared.runconfig import OPTIMIZERS

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

# Opacus' notice that its default RNG is not cryptographically secure, and torch's notice when
# an empty Poisson batch backpropagates into no input: both expected, neither actionable here.
warnings.filterwarnings("ignore", message=".*[Ss]ecure RNG.*")
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def pick_device() -> torch.device:
    """CUDA when the site has it, else CPU: the same code runs on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class DPPlan:
    """What one round of local DP-SGD will do: known before training, so it can be costed.

    Mirrors Opacus' Poisson loader exactly: `steps_per_epoch` is the length of a plain loader
    with `batch_size`, and each person is sampled with probability 1 / steps_per_epoch.
    """

    batch_size: int
    steps_per_epoch: int
    epochs: int

    @classmethod
    def for_site(
        cls, n_train: int, batch_size: int, epochs: int, max_steps_per_epoch: int = 0
    ) -> DPPlan:
        """`batch_size` people per step, grown where needed so an epoch takes at most
        `max_steps_per_epoch` steps (0: no cap).

        Why the cap: at a given ε the noise multiplier depends on the sample rate and the step
        count, not on the site's size, so at a fixed batch a large site takes many small steps,
        each carrying the same noise. Capping its steps gives it larger batches instead, whose
        averaged gradient carries less noise per person (validation cohorts: +0.02 AUROC in
        YRI, see the README's benchmark section).
        """
        if max_steps_per_epoch > 0:
            batch_size = max(batch_size, math.ceil(n_train / max_steps_per_epoch))
        batch_size = max(1, min(batch_size, n_train))
        return cls(batch_size, math.ceil(n_train / batch_size), epochs)

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.steps_per_epoch

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass(frozen=True)
class TrainResult:
    steps: int
    sample_rate: float
    mean_loss: float
    n_examples: int
    empty_steps: int = 0  # Poisson batches that drew nobody: noise-only steps, still spent


def local_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], learning_rate: float
) -> torch.optim.Optimizer:
    """The site's update rule for its DP-SGD steps: `sgd` (momentum 0.9) or `adam`.

    Why SGD by default: a DP step's gradient is the clipped sum plus Gaussian noise of the same
    size in every coordinate. Adam divides each coordinate by its running gradient scale, which
    under that noise is the noise's own scale, so a weight with no signal still moves a full
    learning rate each step, as far as one with signal. SGD moves each weight in proportion to
    its noisy gradient, and momentum averages that noise over about ten steps. Measured at
    learning rate 0.05 against Adam at 0.01, same ε: a gain on some cohorts, a wash on others,
    and a gain for each site training alone (figures: the README's benchmark section).
    """
    if name == "sgd":
        return torch.optim.SGD(params, lr=learning_rate, momentum=0.9)
    if name == "adam":
        return torch.optim.Adam(params, lr=learning_rate)
    raise ValueError(f"unknown optimizer {name!r}: one of {', '.join(OPTIMIZERS)}")


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    poisson_sampling: bool = True,
    grad_sample_mode: str = "hooks",
) -> tuple[torch.nn.Module, DPOptimizer, DataLoader]:
    """Opacus' DP-SGD around a model, its optimizer and its loader; the loss must be SUMMED.

    Per-sample gradients come from a summed loss as they are: from a mean loss Opacus multiplies
    every backprop it captures by the batch size, a quarter of the DP step's extra time on the
    demo model. The optimizer still divides the clipped, noised sum by the expected batch size
    (Opacus' "mean" reduction), so each update is the same as with a mean loss.
    Opacus is imported here, not with the module: scoring and evaluating never load it.
    """
    from opacus import PrivacyEngine

    register_grad_samplers()
    engine = PrivacyEngine(accountant="prv")
    dp_model, dp_optimizer, dp_loader = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        poisson_sampling=poisson_sampling, grad_sample_mode=grad_sample_mode,
        loss_reduction="sum",
    )
    dp_optimizer.loss_reduction = "mean"
    return dp_model, dp_optimizer, dp_loader


def train_dp(
    model: RiskTransformer,
    genotypes: np.ndarray,
    labels: np.ndarray,
    features: PanelFeatures,
    *,
    plan: DPPlan,
    learning_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    seed: int,
    device: torch.device,
    optimizer: str,
    sample_weights: np.ndarray | None = None,
) -> TrainResult:
    """DP-SGD over the site's training people with Poisson sampling at `plan.sample_rate`.

    Every sampled step is taken and noised, including empty batches, so the steps we account
    for are exactly the steps released. `sample_weights` (mean 1) scale each person's loss
    before per-sample clipping: the DP-compatible way to rebalance groups, since per-person
    sampling rates would break the accountant's uniform-sampling assumption.
    """
    torch.manual_seed(seed)
    model.to(device).train()
    features = features.to(device)
    weights = np.ones(len(labels)) if sample_weights is None else sample_weights
    ds = TensorDataset(
        torch.as_tensor(genotypes, dtype=torch.long), torch.as_tensor(labels, dtype=torch.float32),
        torch.as_tensor(weights, dtype=torch.float32),
    )
    loader = DataLoader(ds, batch_size=plan.batch_size)
    dp_model, dp_optimizer, loader = make_private(
        model, local_optimizer(optimizer, model.parameters(), learning_rate), loader,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, poisson_sampling=True,
    )
    # Opacus sizes its Poisson sampler as int(1 / sample_rate), which floating point rounds one
    # short for some sizes (1 / (1 / 117) = 116.99999999999999: a site of 7,449 people at batch
    # 64). The sampler takes its step count as a parameter; it gets the plan's, the count the
    # accountant is told.
    loader.batch_sampler.steps = plan.steps_per_epoch
    if len(loader) != plan.steps_per_epoch or loader.sample_rate != plan.sample_rate:
        raise RuntimeError("Opacus' loader disagrees with the costed DP plan")
    steps, empty, loss_sum, seen = 0, 0, 0.0, 0
    for _ in range(plan.epochs):
        for xb, yb, wb in loader:
            xb, yb, wb = xb.to(device), yb.to(device), wb.to(device)
            dp_optimizer.zero_grad(set_to_none=True)
            logits = dp_model(xb, features)
            if len(xb):
                # Summed: see make_private (the optimizer still averages the noisy sum).
                loss = (wb * F.binary_cross_entropy_with_logits(logits, yb, reduction="none"))
                loss = loss.sum()
                loss_sum += float(loss.detach())
                seen += len(xb)
            else:  # an empty Poisson batch: the step still happens, as pure noise
                loss = logits.sum()
                empty += 1
            loss.backward()
            dp_optimizer.step()
            steps += 1
    dp_model.to_standard_module()  # no hooks or per-sample grads left on the plain model
    return TrainResult(steps, plan.sample_rate, loss_sum / max(seen, 1), len(ds), empty)


@torch.no_grad()
def predict_logits(
    model: RiskTransformer,
    genotypes: np.ndarray,
    features: PanelFeatures,
    device: torch.device,
    batch_size: int = 256,
) -> np.ndarray:
    """Risk logits [N] for the site's own people; these never leave the site."""
    model.to(device).eval()
    features = features.to(device)
    out = []
    for start in range(0, len(genotypes), batch_size):
        xb = torch.as_tensor(genotypes[start:start + batch_size], dtype=torch.long, device=device)
        out.append(model(xb, features).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)


def balancing_weights(groups: np.ndarray) -> np.ndarray:
    """Per-person weights, mean 1, giving every ancestry group the same total weight."""
    names, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = len(groups) / (len(names) * counts)
    return w[inverse]
