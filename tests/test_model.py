"""The transformer: shapes, Opacus compatibility, attention modes, weight exchange."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from opacus import GradSampleModule
from opacus.validators import ModuleValidator

from shared.model import (
    GT_MISSING,
    ModelConfig,
    PanelFeatures,
    RiskTransformer,
    additive_input,
    get_weights,
    register_grad_samplers,
    set_weights,
)

T, C, V = 40, 7, 69


def panel() -> PanelFeatures:
    g = torch.Generator().manual_seed(0)
    return PanelFeatures(
        context=torch.randint(0, V, (T, C), generator=g),
        ref=torch.randint(1, 5, (T,), generator=g),
        alt=torch.randint(1, 5, (T,), generator=g),
        coord=torch.arange(T, dtype=torch.float64) * 5000 + 2e7,
        alt_freq=torch.rand(T, generator=g) * 0.9 + 0.05,
    )


def cfg(**kw: object) -> ModelConfig:
    return ModelConfig(n_variants=T, context_len=C, kmer_vocab=V, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize("attention", ["full", "local"])
def test_shapes_and_validator(attention: str) -> None:
    model = RiskTransformer(cfg(attention=attention, window=8))
    assert ModuleValidator.validate(model, strict=False) == []
    x = torch.randint(0, 4, (5, T))
    out = model(x, panel())
    assert out.shape == (5,)
    assert torch.isfinite(out).all()


def test_local_attention_is_local() -> None:
    """A variant's genotype can reach a far variant only through CLS, not directly."""
    torch.manual_seed(0)
    model = RiskTransformer(cfg(attention="local", window=4, layers=1)).eval()
    x = torch.zeros(1, T, dtype=torch.long)
    features = panel()
    captured = {}
    model.blocks[0].register_forward_hook(lambda m, i, o: captured.__setitem__("h", o))
    model(x, features)
    base = captured["h"].clone()
    x2 = x.clone()
    x2[0, 0] = 2  # change variant 0 (block 0)
    model(x2, features)
    diff = (captured["h"] - base).abs().sum(-1)[0]  # per token (index 0 is CLS)
    assert diff[1] > 0  # variant 0 itself
    assert diff[1 + 5] > 0  # variant 5 sits in block 1 and attends to block 0
    assert diff[1 + 20] == 0  # variant 20 (block 5) cannot see block 0 in one layer


def test_full_and_local_agree_when_window_covers_panel() -> None:
    torch.manual_seed(0)
    full = RiskTransformer(cfg(attention="full"))
    local = RiskTransformer(cfg(attention="local", window=T))
    local.load_state_dict(full.state_dict())
    x = torch.randint(0, 4, (3, T))
    torch.testing.assert_close(full(x, panel()), local(x, panel()), atol=1e-5, rtol=1e-5)


def test_per_sample_gradients_match_brute_force() -> None:
    torch.manual_seed(0)
    model = RiskTransformer(cfg(attention="local", window=8))
    register_grad_samplers()
    gsm = GradSampleModule(model, loss_reduction="sum")
    x = torch.randint(0, 4, (4, T))
    x[0, 3] = GT_MISSING
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    loss = torch.nn.functional.binary_cross_entropy_with_logits(gsm(x, panel()), y, reduction="sum")
    loss.backward()
    for i in range(len(x)):
        model.zero_grad()
        single = RiskTransformer(model.cfg)
        single.load_state_dict(model.state_dict())
        li = torch.nn.functional.binary_cross_entropy_with_logits(
            single(x[i:i + 1], panel()), y[i:i + 1], reduction="sum"
        )
        li.backward()
        for (name, p), q in zip(model.named_parameters(), single.parameters(), strict=True):
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-5, rtol=1e-4,
                                       msg=lambda m, n=name: f"{n}: {m}")


def test_dp_step_is_the_mean_of_clipped_per_person_gradients() -> None:
    """`client.train.make_private` takes per-sample gradients from a summed loss; the update must
    still be DP-SGD's: each person's gradient clipped to C, summed, divided by the batch size."""
    from torch.utils.data import DataLoader, TensorDataset

    from client.randomness import DPRandomness
    from client.train import make_private

    torch.manual_seed(0)
    model = RiskTransformer(cfg(dim=16, layers=1, heads=2))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randint(0, 3, (6, T))
    y = torch.tensor([0.0, 1.0, 1.0, 0.0, 1.0, 0.0])
    clip = 0.05  # well below the per-person gradient norms, so clipping is exercised
    loader = DataLoader(TensorDataset(x, y), batch_size=len(x))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    dp_model, dp_optimizer = make_private(
        model, optimizer, loader, noise_multiplier=0.0, max_grad_norm=clip,
        randomness=DPRandomness.secret(),
    )
    xb, yb = next(iter(loader))
    loss = torch.nn.functional.binary_cross_entropy_with_logits(
        dp_model(xb, panel()), yb, reduction="sum")
    loss.backward()
    dp_optimizer.step()
    got = {name: p.grad.clone() for name, p in model.named_parameters()}

    expected = {name: torch.zeros_like(g) for name, g in got.items()}
    norms = []
    for i in range(len(x)):
        single = RiskTransformer(model.cfg)
        single.load_state_dict(start)
        torch.nn.functional.binary_cross_entropy_with_logits(
            single(x[i:i + 1], panel()), y[i:i + 1], reduction="sum").backward()
        grads = dict(single.named_parameters())
        norm = torch.sqrt(sum((p.grad ** 2).sum() for p in grads.values()))
        norms.append(float(norm))
        for name, p in grads.items():
            expected[name] += p.grad * min(1.0, clip / (float(norm) + 1e-6)) / len(x)
    assert min(norms) > clip
    for name in got:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-4,
                                   msg=lambda m, n=name: f"{n}: {m}")


def test_additive_input_is_standardized_with_the_public_frequency() -> None:
    """Under Hardy-Weinberg with the panel's frequency p, every variant's additive input has mean
    0 and variance 1, whatever p; without p it is the centred dosage. Missing calls are 0."""
    p = torch.tensor([0.02, 0.1, 0.3, 0.5, 0.8])
    g = torch.Generator().manual_seed(1)
    alleles = (torch.rand(200_000, 5, 2, generator=g) < p[:, None]).sum(-1)  # [N, 5] in 0..2
    z = additive_input(alleles, p)
    torch.testing.assert_close(z.mean(0), torch.zeros(5), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(5), atol=0.02, rtol=0)
    raw = additive_input(alleles, None)
    assert raw.std(0)[0] < 0.25 and raw.std(0)[3] > 0.65  # raw spread follows p
    torch.testing.assert_close(raw, alleles.float() - 1)
    missing = torch.full((1, 5), GT_MISSING)
    assert not additive_input(missing, p).any() and not additive_input(missing, None).any()
    # A frequency of 0 or 1 in the reference is clamped, never a division by zero.
    assert torch.isfinite(additive_input(alleles[:4], torch.tensor([0.0, 1.0, 0.3, 0.5, 0.8])))\
        .all()


def test_weights_round_trip_and_refuse_bad_shapes() -> None:
    a, b = RiskTransformer(cfg()), RiskTransformer(cfg())
    set_weights(b, get_weights(a))
    x = torch.randint(0, 4, (2, T))
    torch.testing.assert_close(a(x, panel()), b(x, panel()))
    weights = get_weights(a)
    with pytest.raises(ValueError, match="expected"):
        set_weights(b, weights[:-1])
    weights[0] = np.zeros((1, 1), dtype=np.float32)
    with pytest.raises(ValueError, match="shape"):
        set_weights(b, weights)


def _probs_of(codes: torch.Tensor) -> torch.Tensor:
    """Codes [B, T] as genotype probabilities [B, T, 3] (one-hot, zeros where missing)."""
    return torch.nn.functional.one_hot(codes, 4)[..., :3].to(torch.float32)


def _fractional(n: int, seed: int = 0) -> torch.Tensor:
    """Genotype probabilities of n people: GP-like rows, DS-interpolated rows, a missing one."""
    g = torch.Generator().manual_seed(seed)
    probs = torch.distributions.Dirichlet(torch.ones(3)).sample((n, T))
    probs[:, ::3] = _probs_of(torch.randint(0, 3, (n, T), generator=g))[:, ::3]
    probs[0, 4] = 0.0  # missing
    return probs


def test_hard_calls_as_probabilities_give_the_same_logits_exactly() -> None:
    """The soft path reduces to the hard one: one-hot probabilities (zeros for missing) give the
    very logits the codes give, so hard-call sites are unchanged."""
    torch.manual_seed(0)
    model = RiskTransformer(cfg(dim=16, layers=1, heads=2)).eval()
    x = torch.randint(0, 4, (6, T))
    assert (x == GT_MISSING).any()
    assert torch.equal(model(x, panel()), model(_probs_of(x), panel()))
    assert torch.equal(additive_input(x, panel().alt_freq),
                       additive_input(_probs_of(x), panel().alt_freq))


def test_a_fractional_dosage_moves_the_prediction() -> None:
    """A het read as dosage 0.6 (0.4 hom-ref + 0.6 het) is not the hard call's 1: both the
    genotype token and the additive read-out see the fraction."""
    torch.manual_seed(0)
    model = RiskTransformer(cfg(dim=16, layers=1, heads=2)).eval()
    x = torch.zeros(1, T, dtype=torch.long)
    x[0, 5] = 1
    soft = _probs_of(x)
    soft[0, 5] = torch.tensor([0.4, 0.6, 0.0])
    z = additive_input(soft, None)
    assert z[0, 5].item() == pytest.approx(0.6 - 1)
    assert model(soft, panel()).item() != model(x, panel()).item()
    # Each path alone: the additive read-out and the genotype token.
    model.additive.weight.data.zero_()
    assert model(soft, panel()).item() != model(x, panel()).item()


@pytest.mark.parametrize("attention", ["full", "local"])
def test_per_sample_gradients_are_exact_on_fractional_input(attention: str) -> None:
    """Opacus' per-sample gradients (VariantEmbedding's own sampler included) equal autograd's,
    one person at a time, when the genotypes are soft."""
    torch.manual_seed(0)
    model = RiskTransformer(cfg(attention=attention, window=8, dim=16, heads=2))
    register_grad_samplers()
    gsm = GradSampleModule(model, loss_reduction="sum")
    x = _fractional(4)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0])
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    bce(gsm(x, panel()), y, reduction="sum").backward()
    for i in range(len(x)):
        single = RiskTransformer(model.cfg)
        single.load_state_dict(model.state_dict())
        bce(single(x[i:i + 1], panel()), y[i:i + 1], reduction="sum").backward()
        for (name, p), q in zip(model.named_parameters(), single.parameters(), strict=True):
            torch.testing.assert_close(p.grad_sample[i], q.grad, atol=1e-6, rtol=1e-4,
                                       msg=lambda m, n=name: f"{n}: {m}")
    assert model.embed.genotype.grad_sample[:, GT_MISSING].abs().sum() > 0  # person 0's gap
