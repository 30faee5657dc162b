"""Local training with sample-level DP-SGD (Opacus), and scoring, on the site's own machine."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from client.randomness import DPRandomness
from shared.model import PanelFeatures, RiskTransformer, genotype_tensor, register_grad_samplers
from shared.runconfig import OPTIMIZERS

if TYPE_CHECKING:
    from opacus.optimizers import DPOptimizer

# torch's notice when an empty Poisson batch backpropagates into no input: expected here.
warnings.filterwarnings("ignore", message="Full backward hook is firing")


def pick_device() -> torch.device:
    """CUDA when the site has it, else CPU: the same code runs on both."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class DPPlan:
    """What one round of local DP-SGD will do: known before training, so it can be costed.

    Made from the site's RELEASED (noisy) training-set size, never the exact one: the sample
    rate, the step count and the batch the noisy gradient sum is divided by are then all
    post-processing of a DP release, so neither the epsilon a site reports nor the update's
    scale tells the coordinator the exact size. Each person is sampled with probability
    1 / steps_per_epoch (Opacus' Poisson sampling over the site's real people).
    """

    batch_size: int
    steps_per_epoch: int
    epochs: int

    @classmethod
    def for_site(
        cls, n_train: float, batch_size: int, epochs: int, max_steps_per_epoch: int = 0
    ) -> DPPlan:
        """`batch_size` people per step, grown where needed so an epoch takes at most
        `max_steps_per_epoch` steps (0: no cap).

        Why the cap: at a given epsilon the noise multiplier depends on the sample rate and the
        step count, not on the site's size, so at a fixed batch a large site takes many small
        steps, each carrying the same noise. Capping its steps gives it larger batches instead,
        whose averaged gradient carries less noise per person (lab notebook, "At most 10 DP-SGD
        steps per epoch").
        """
        n = max(1, int(round(n_train)))
        if max_steps_per_epoch > 0:
            batch_size = max(batch_size, math.ceil(n / max_steps_per_epoch))
        batch_size = max(1, min(batch_size, n))
        return cls(batch_size, math.ceil(n / batch_size), epochs)

    @property
    def sample_rate(self) -> float:
        return 1.0 / self.steps_per_epoch

    @property
    def steps(self) -> int:
        return self.steps_per_epoch * self.epochs


@dataclass(frozen=True)
class TrainResult:
    """What happened in one round of local DP-SGD, for the site's own log (never sent)."""

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
    and a gain for each site training alone (lab notebook, "SGD with momentum instead of Adam at
    the sites").
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
    randomness: DPRandomness,
    expected_batch_size: int | None = None,
    grad_sample_mode: str = "hooks",
) -> tuple[torch.nn.Module, DPOptimizer]:
    """Opacus' DP-SGD around a model and its optimizer; the loss must be SUMMED.

    `loader` is used as it is: a site passes its `poisson_loader`, whose sampling is drawn
    from the same secret `randomness` as the noise (`client.randomness`). The noise is drawn in
    Opacus' secure mode (four Gaussian draws summed, against floating-point attacks on the
    noise) from a generator on the training device seeded by `randomness`, never from torch's
    global generator, which anyone who knows a seed could replay.

    Per-sample gradients come from a summed loss as they are: from a mean loss Opacus multiplies
    every backprop it captures by the batch size. The optimizer still divides the clipped, noised
    sum by `expected_batch_size` (Opacus' "mean" reduction), so each update is the same as with
    a mean loss. Opacus is imported here, not with the module: scoring never loads it.
    """
    from opacus import PrivacyEngine

    register_grad_samplers()
    device = next(model.parameters()).device
    with warnings.catch_warnings():
        # Its advice is to turn on secure_mode (torchcsprng); the randomness here is secret
        # already, and the noise is drawn in secure mode below.
        warnings.filterwarnings("ignore", message="Secure RNG turned off")
        engine = PrivacyEngine(accountant="prv")  # its accountant is unused: the site's is
    dp_model, dp_optimizer, _ = engine.make_private(
        module=model, optimizer=optimizer, data_loader=loader,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm,
        poisson_sampling=False, grad_sample_mode=grad_sample_mode, loss_reduction="sum",
        noise_generator=randomness.torch_generator(device, "noise"),
    )
    dp_optimizer.secure_mode = True
    dp_optimizer.loss_reduction = "mean"
    if expected_batch_size is not None:
        dp_optimizer.expected_batch_size = expected_batch_size
    return dp_model, dp_optimizer


def poisson_loader(dataset: TensorDataset, plan: DPPlan, randomness: DPRandomness) -> DataLoader:
    """Opacus' Poisson-sampling loader at the plan's rate, for the plan's step count, drawing
    from the secret `randomness`.

    The rate and count are the plan's (from the released size), not Opacus' own
    `1 / len(loader)`, which also floating-point rounds one step short for some sizes
    (int(1 / (1 / 117)) = 116).
    """
    from opacus.data_loader import DPDataLoader

    loader = DPDataLoader(dataset, sample_rate=plan.sample_rate,
                          generator=randomness.torch_generator("cpu", "sampling"))
    loader.batch_sampler.steps = plan.steps_per_epoch
    if len(loader) != plan.steps_per_epoch or loader.sample_rate != plan.sample_rate:
        raise RuntimeError("Opacus' loader disagrees with the costed DP plan")
    return loader


def run_dp_sgd(
    model: torch.nn.Module,
    dataset: TensorDataset,
    loss_fn: Callable[[torch.nn.Module, list[torch.Tensor]], torch.Tensor],
    *,
    plan: DPPlan,
    learning_rate: float,
    noise_multiplier: float,
    max_grad_norm: float,
    device: torch.device,
    optimizer: str,
    randomness: DPRandomness,
) -> TrainResult:
    """DP-SGD over `dataset` with the plan's Poisson sampling, steps and batch normalisation.

    `loss_fn(dp_model, batch)` returns the batch's SUMMED loss (batch tensors on `device`).
    Every sampled step is taken and noised, including empty batches, so the steps accounted
    for are exactly the steps released.
    """
    model.to(device).train()
    loader = poisson_loader(dataset, plan, randomness)
    dp_model, dp_optimizer = make_private(
        model, local_optimizer(optimizer, model.parameters(), learning_rate), loader,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, randomness=randomness,
        expected_batch_size=plan.batch_size,
    )
    steps, empty, loss_sum, seen = 0, 0, 0.0, 0
    for _ in range(plan.epochs):
        for batch in loader:
            batch = [t.to(device) for t in batch]
            dp_optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(dp_model, batch)
            if len(batch[0]):
                loss_sum += float(loss.detach())
                seen += len(batch[0])
            else:  # an empty Poisson batch: the step still happens, as pure noise
                empty += 1
            loss.backward()
            dp_optimizer.step()
            steps += 1
    dp_model.to_standard_module()  # no hooks or per-sample grads left on the plain model
    return TrainResult(steps, plan.sample_rate, loss_sum / max(seen, 1), len(dataset), empty)


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
    device: torch.device,
    optimizer: str,
    sample_weights: np.ndarray | None = None,
    randomness: DPRandomness | None = None,
) -> TrainResult:
    """DP-SGD of the risk model over the site's training people (`genotypes`: codes [N, T] or
    genotype probabilities [N, T, 3], as `SiteData.split` gives them).

    `sample_weights` scale each person's loss before per-sample clipping: the DP-compatible way
    to rebalance groups, since per-person sampling rates would break the accountant's uniform
    sampling; they must not depend on the exact data (`client.release.balancing_weights`).
    `randomness` defaults to a fresh secret; only simulations pass one.
    """
    features = features.to(device)
    weights = np.ones(len(labels)) if sample_weights is None else sample_weights
    ds = TensorDataset(
        genotype_tensor(genotypes), torch.as_tensor(labels, dtype=torch.float32),
        torch.as_tensor(weights, dtype=torch.float32),
    )

    def loss_fn(dp_model: torch.nn.Module, batch: list[torch.Tensor]) -> torch.Tensor:
        xb, yb, wb = batch
        logits = dp_model(xb, features)
        if not len(xb):
            return logits.sum()
        # Summed: see make_private (the optimizer still averages the noisy sum).
        return (wb * F.binary_cross_entropy_with_logits(logits, yb, reduction="none")).sum()

    return run_dp_sgd(
        model, ds, loss_fn, plan=plan, learning_rate=learning_rate,
        noise_multiplier=noise_multiplier, max_grad_norm=max_grad_norm, device=device,
        optimizer=optimizer, randomness=randomness or DPRandomness.secret(),
    )


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
        xb = genotype_tensor(genotypes[start:start + batch_size], device)
        out.append(model(xb, features).float().cpu().numpy())
    return np.concatenate(out) if out else np.empty(0, dtype=np.float32)
