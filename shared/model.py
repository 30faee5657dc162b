"""The genofed risk model: a transformer encoder over one person's variant tokens.

One token per panel variant. A token is the sum of
  - the person's genotype at that variant (hom-ref, het, hom-alt, missing),
  - a learned per-variant vector scaled by the alt-allele dosage, so an additive polygenic
    score is one linear read-out away (DP-SGD has little signal to spare),
  - a learned per-variant identity,
  - the variant's reference context (mean of k-mer embeddings around it) and its REF/ALT bases,
  - a fixed sinusoidal encoding of its genomic coordinate (bp), so attention knows distance.
A [CLS] token reads the sequence out into one disease-risk logit. Attention is what lets the
model combine variants far apart on the genome (epistasis), which an additive score cannot.

How genotypes enter: as codes [B, T] long (GT calls: 0, 1, 2 ALT copies, 3 missing), or, where a
site's VCF holds imputed dosages (DS or GP, `shared.genotypes`), as genotype probabilities
[B, T, 3] float P(0, 1, 2 ALT copies), all zero where missing. Soft input enters both places a
genotype does: the genotype token is the probability-weighted mixture of the hom-ref, het and
hom-alt token vectors (the missing token where the weights are all zero), and the dosage that
scales the per-variant vector and feeds the additive read-out is the expected one, P(1) + 2 P(2),
fractional. One-hot probabilities give exactly the codes' logits, so hard-call data is read
exactly as codes (and the reader hands the model codes whenever every call is hard).

Written for Opacus: apart from `VariantEmbedding` (which brings its own grad sampler, see
`register_grad_samplers`) only nn.Linear and nn.Embedding hold parameters, attention is
`F.scaled_dot_product_attention`, and every parameterised layer sees a batch dimension first,
so per-sample gradients are exact. Per-variant inputs (context, alleles, coordinates) are the same
for everyone and travel as `PanelFeatures`, not as weights: the exchanged weights never encode data.

Shapes: B batch, T panel variants, C context tokens per variant, D model width, H heads.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn as nn
import torch.nn.functional as F

from shared.tokenizer import GT_HOM_ALT, GT_MISSING, N_GENOTYPE_TOKENS

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class ModelConfig:
    n_variants: int  # T: variants in the panel the model is defined on
    context_len: int  # C: k-mer tokens of reference context per variant
    kmer_vocab: int  # size of the context tokenizer's vocabulary
    allele_vocab: int = 8  # ids from shared.tokenizer.allele_id
    dim: int = 32  # D
    layers: int = 2
    heads: int = 4  # H; D must be divisible by H
    mlp_ratio: int = 4
    attention: str = "full"  # "full" or "local" (block-local windows + a global CLS)
    window: int = 32  # block size for local attention

    def __post_init__(self) -> None:
        if self.dim % self.heads:
            raise ValueError(f"model dim {self.dim} is not divisible by heads {self.heads}")
        if self.attention not in ("full", "local"):
            raise ValueError(f"attention must be 'full' or 'local', not {self.attention!r}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class PanelFeatures:
    """Per-variant model inputs derived from the panel and the reference FASTA (no person data)."""

    context: torch.Tensor  # [T, C] long, k-mer ids around each variant
    ref: torch.Tensor  # [T] long, allele ids
    alt: torch.Tensor  # [T] long
    coord: torch.Tensor  # [T] float64, genomic position in bp
    alt_freq: torch.Tensor | None = None  # [T] float32, public alt-allele frequency, if known

    def to(self, device: torch.device | str) -> PanelFeatures:
        parts = (self.context, self.ref, self.alt, self.coord, self.alt_freq)
        return PanelFeatures(*(None if t is None else t.to(device) for t in parts))


def coordinate_encoding(coord: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoids of the bp coordinate with wavelengths from 10 bp to 10 Mb: [T] -> [T, D].

    Relative distances between variants become linear functions of these features, as with
    token positions in the original transformer, but measured along the genome.
    """
    half = dim // 2
    wavelengths = torch.logspace(1, 7, half, dtype=torch.float64, device=coord.device)
    angles = 2 * math.pi * coord.to(torch.float64)[:, None] / wavelengths[None, :]  # [T, D/2]
    enc = torch.cat([angles.sin(), angles.cos()], dim=-1)
    if enc.shape[-1] < dim:
        enc = F.pad(enc, (0, dim - enc.shape[-1]))
    return enc.to(torch.float32)


class SelfAttention(nn.Module):
    """Multi-head self-attention, full or block-local, with the CLS token (index 0) global."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.heads = cfg.heads
        self.local = cfg.attention == "local"
        self.window = cfg.window
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim)
        self.proj = nn.Linear(cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, S, D = x.shape  # S = 1 + T
        q, k, v = self.qkv(x).split(D, dim=2)
        # [B, S, D] -> [B, H, S, D/H]
        q, k, v = (t.view(B, S, self.heads, D // self.heads).transpose(1, 2) for t in (q, k, v))
        y = self._local(q, k, v) if self.local else F.scaled_dot_product_attention(q, k, v)
        y = y.transpose(1, 2).contiguous().view(B, S, D)
        return self.proj(y)

    def _local(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Each block of `window` variants attends to itself, the previous block and CLS.

        Chunking keeps cost O(T * window) on CPU, where a banded mask would stay dense. CLS
        attends to everything so the read-out still sees the whole panel.
        """
        B, H, S, E = q.shape
        T, W = S - 1, self.window
        cls_out = F.scaled_dot_product_attention(q[:, :, :1], k, v)  # [B, H, 1, E]
        nb = (T + W - 1) // W
        pad = nb * W - T

        def blocks(t: torch.Tensor) -> torch.Tensor:  # [B, H, T, E] -> [B, H, nb, W, E]
            return F.pad(t[:, :, 1:], (0, 0, 0, pad)).view(B, H, nb, W, E)

        qb, kb, vb = blocks(q), blocks(k), blocks(v)
        prev = lambda t: F.pad(t, (0, 0, 0, 0, 1, 0))[:, :, :nb]  # noqa: E731 - block j-1
        cls_k = k[:, :, :1].unsqueeze(2).expand(B, H, nb, 1, E)
        cls_v = v[:, :, :1].unsqueeze(2).expand(B, H, nb, 1, E)
        keys = torch.cat([cls_k, prev(kb), kb], dim=3)  # [B, H, nb, 1 + 2W, E]
        vals = torch.cat([cls_v, prev(vb), vb], dim=3)
        # Key validity: CLS always; previous block absent for block 0; padding at the end.
        idx = torch.arange(nb * W, device=q.device).view(nb, W)
        valid_prev = torch.cat([torch.zeros(1, W, dtype=torch.bool, device=q.device),
                                (idx < T)[:-1]], dim=0)
        valid = torch.cat([torch.ones(nb, 1, dtype=torch.bool, device=q.device),
                           valid_prev, idx < T], dim=1)  # [nb, 1 + 2W]
        mask = valid[:, None, :].expand(nb, W, 1 + 2 * W)
        out = F.scaled_dot_product_attention(qb, keys, vals, attn_mask=mask)  # [B,H,nb,W,E]
        out = out.reshape(B, H, nb * W, E)[:, :, :T]
        return torch.cat([cls_out, out], dim=2)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.dim, cfg.mlp_ratio * cfg.dim)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.dim, cfg.dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(F.gelu(self.fc(x)))


def layer_norm(dim: int) -> nn.LayerNorm:
    """LayerNorm without its own gain and bias: every one here feeds an nn.Linear, which absorbs
    them exactly (W(g*x + b) + c = (W diag g)x + (Wb + c)). Under DP-SGD they would only add
    noised parameters and a per-sample gradient pass each, for no expressiveness."""
    return nn.LayerNorm(dim, elementwise_affine=False)


class Block(nn.Module):
    """Pre-norm transformer block."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = layer_norm(cfg.dim)
        self.attn = SelfAttention(cfg)
        self.ln_2 = layer_norm(cfg.dim)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x


def _dosage(genotypes: torch.Tensor) -> torch.Tensor:
    """Alt-allele dosage, missing calls as 0: codes [B, T] long -> [B, T] long 0/1/2, or
    probabilities [B, T, 3] -> [B, T] float, the expected dosage P(1) + 2 P(2)."""
    if genotypes.is_floating_point():
        return genotypes[..., 1] + 2 * genotypes[..., 2]
    return genotypes.clamp(max=GT_HOM_ALT).masked_fill(genotypes == GT_MISSING, 0)


def _missing(genotypes: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: no call (code 3, or probabilities all zero)."""
    if genotypes.is_floating_point():
        return genotypes.sum(dim=-1) == 0
    return genotypes == GT_MISSING


def genotype_weights(genotypes: torch.Tensor) -> torch.Tensor:
    """Weights [B, T, 4] over the genotype tokens (hom-ref, het, hom-alt, missing): one-hot for
    codes; for probabilities, themselves plus 1 on the missing token where they are all zero."""
    if genotypes.is_floating_point():
        return torch.cat([genotypes, _missing(genotypes).unsqueeze(-1).to(genotypes.dtype)], -1)
    return F.one_hot(genotypes, N_GENOTYPE_TOKENS).to(torch.float32)


def genotype_tensor(
    genotypes: np.ndarray | torch.Tensor, device: torch.device | str | None = None
) -> torch.Tensor:
    """The model's input from the reader's (`PanelGenotypes.model_input`, numpy or torch):
    codes as long, genotype probabilities as float32."""
    t = torch.as_tensor(genotypes, device=device)
    return t.to(torch.float32) if t.is_floating_point() else t.to(torch.long)


MIN_ALT_FREQ = 0.01  # public frequencies are clamped to [1%, 99%] before standardizing


def additive_input(genotypes: torch.Tensor, alt_freq: torch.Tensor | None) -> torch.Tensor:
    """The additive read-out's input, codes [B, T] or probabilities [B, T, 3] -> [B, T]
    float32: the (expected, so possibly fractional) dosage standardized
    with the panel's public alt-allele frequency p, (d - 2p) / sqrt(2p(1 - p)), or d - 1 without
    one. Missing calls become 0, the expected value.

    Why standardize: a weight w on the raw dosage moves the logit's spread by w * sqrt(2p(1-p)),
    so a variant with p = 0.05 needs twice the weight of one with p = 0.5 for the same effect
    per standard deviation. On raw dosages DP-SGD's few noisy steps teach the rarer variants
    slowest, whatever the update rule: under the noise Adam moves every weight by about the
    learning rate, and SGD moves a rarer variant's weight less still, its dosage (hence its
    gradient) varying less. Standardized, a step moves every variant's effect per standard
    deviation alike, as the linear score baseline's scaler arranges. p must come from
    a public reference (the panel's `af` column), never from a site's people: it is a model
    input all sites share, and a site's own frequencies would describe its patients.
    Clamping p keeps a variant rare in the reference but common at a site from dominating.
    """
    dose = _dosage(genotypes).to(torch.float32)
    if alt_freq is None:
        centred = dose - 1
    else:
        p = alt_freq.to(torch.float32).clamp(MIN_ALT_FREQ, 1 - MIN_ALT_FREQ)  # [T]
        centred = (dose - 2 * p) / torch.sqrt(2 * p * (1 - p))
    return centred.masked_fill(_missing(genotypes), 0)


class VariantEmbedding(nn.Module):
    """Every person's token vectors at the panel variants: [B, T] genotypes -> [B, T, D].

    token[b, t] = sum_k w[b, t, k] genotype[k] + dosage[b, t] * dosage_effect[t] + variant[t]
                  + mean_c context[ctx[t, c]] + allele[ref[t]] + allele[alt[t]]

    with w = `genotype_weights` (one-hot for codes, the probabilities for soft input) and the
    expected dosage (see the module docstring).

    One module rather than five nn.Embedding because most of a token (the variant's identity,
    reference context and alleles) is the same for everyone: it is computed once per batch, not
    once per person, and `_variant_embedding_grad_sample` gives Opacus each table's per-sample
    gradient in closed form from the token gradient, instead of nn.Embedding's generic sampler
    scattering B x T x C lookups into per-person copies of every table. It took the DP step's
    memory to about the plain step's; its time is set by the blocks' Linear layers
    (`make bench`, dp_cost).

    The panel arrives expanded over the batch (views, no copies) and the genotypes LAST: Opacus
    reads the batch size from a layer's last input.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        D, T = cfg.dim, cfg.n_variants
        self.genotype = nn.Parameter(torch.empty(N_GENOTYPE_TOKENS, D))
        self.dosage_effect = nn.Parameter(torch.empty(T, D))
        self.variant = nn.Parameter(torch.empty(T, D))
        self.context = nn.Parameter(torch.empty(cfg.kmer_vocab, D))
        self.allele = nn.Parameter(torch.empty(cfg.allele_vocab, D))
        for p in self.parameters():
            nn.init.normal_(p, std=0.02)

    def forward(
        self, context: torch.Tensor, ref: torch.Tensor, alt: torch.Tensor,
        genotypes: torch.Tensor,
    ) -> torch.Tensor:
        """context [P, T, C], ref/alt [P, T] (panel expanded over P = max(B, 1)), genotypes
        [B, T] codes or [B, T, 3] probabilities -> [B, T, D]."""
        shared = (
            self.variant
            + F.embedding(context[0], self.context).mean(dim=1)
            + F.embedding(ref[0], self.allele)
            + F.embedding(alt[0], self.allele)
        )  # [T, D]: the same for everyone
        dosage = _dosage(genotypes).unsqueeze(-1).to(shared.dtype)  # [B, T, 1]
        if genotypes.is_floating_point():  # a mixture of the genotype tokens
            token = genotype_weights(genotypes).to(shared.dtype) @ self.genotype  # [B, T, D]
        else:
            token = F.embedding(genotypes, self.genotype)
        return token + dosage * self.dosage_effect + shared


def _variant_embedding_grad_sample(
    layer: VariantEmbedding, activations: list[torch.Tensor], backprops: torch.Tensor,
) -> dict[nn.Parameter, torch.Tensor]:
    """Per-sample gradients of every table from the token gradient g = dL_b/dtoken [B, T, D]."""
    context, ref, alt, genotypes = activations
    g = backprops  # [B, T, D]
    ctx = context[0]  # [T, C]
    # How often each k-mer (allele) feeds each variant's token, with the context mean's 1/C.
    ctx_count = F.one_hot(ctx, layer.context.shape[0]).to(g.dtype).sum(dim=1) / ctx.shape[1]
    allele_count = (F.one_hot(ref[0], layer.allele.shape[0])
                    + F.one_hot(alt[0], layer.allele.shape[0])).to(g.dtype)  # [T, A]
    weights = genotype_weights(genotypes).to(g.dtype)  # [B, T, 4]: one-hot, or soft
    dosage = _dosage(genotypes).unsqueeze(-1).to(g.dtype)  # [B, T, 1]
    out = {
        layer.genotype: torch.einsum("btk,btd->bkd", weights, g),
        layer.dosage_effect: dosage * g,
        layer.variant: g,
        layer.context: torch.einsum("tv,btd->bvd", ctx_count, g),
        layer.allele: torch.einsum("ta,btd->bad", allele_count, g),
    }
    return {p: gs for p, gs in out.items() if p.requires_grad}


def register_grad_samplers() -> None:
    """Hand Opacus `VariantEmbedding`'s grad sampler (idempotent).

    DP training calls this (`client.train.make_private`) instead of this module doing it at
    import, so that scoring and evaluation never load Opacus: ~2 s of imports in every ClientApp
    process, and a Flower deployment starts one per message.
    """
    from opacus.grad_sample import register_grad_sampler

    register_grad_sampler(VariantEmbedding)(_variant_embedding_grad_sample)


class RiskTransformer(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.embed = VariantEmbedding(cfg)
        self.cls = nn.Embedding(1, D)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.ln_f = layer_norm(D)
        self.head = nn.Linear(D, 1)
        self.additive = nn.Linear(cfg.n_variants, 1, bias=False)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    def forward(self, genotypes: torch.Tensor, panel: PanelFeatures) -> torch.Tensor:
        """genotypes [B, T] long in {0,1,2,3=missing}, or [B, T, 3] float genotype
        probabilities (module docstring) -> risk logits [B]."""
        B, T = genotypes.shape[:2]
        C = panel.context.shape[1]
        P = max(B, 1)  # the panel's rows: an empty Poisson batch (B = 0) still reads row 0
        x = self.embed(
            panel.context.expand(P, T, C), panel.ref.expand(P, T), panel.alt.expand(P, T),
            genotypes,
        ) + coordinate_encoding(panel.coord, self.cfg.dim)  # [B, T, D]
        cls = self.cls(torch.zeros(B, 1, dtype=torch.long, device=genotypes.device))  # [B, 1, D]
        x = torch.cat([cls, x], dim=1)  # [B, 1 + T, D]
        for block in self.blocks:
            x = block(x)
        additive = self.additive(additive_input(genotypes, panel.alt_freq))  # [B, 1]
        return (self.head(self.ln_f(x[:, 0])) + additive).squeeze(-1)  # [B]


def get_weights(model: nn.Module) -> list:
    """Weights as numpy arrays in state_dict order: the only thing a site ever sends."""
    return [t.detach().cpu().numpy() for t in model.state_dict().values()]


def set_weights(model: nn.Module, arrays: list) -> None:
    """Load arrays in state_dict order, refusing wrong counts or shapes."""
    state = model.state_dict()
    if len(arrays) != len(state):
        raise ValueError(f"expected {len(state)} weight arrays, got {len(arrays)}")
    new = {}
    for (name, ref), arr in zip(state.items(), arrays, strict=True):
        t = torch.as_tensor(arr)
        if tuple(t.shape) != tuple(ref.shape):
            raise ValueError(f"weight {name}: shape {tuple(t.shape)} != {tuple(ref.shape)}")
        new[name] = t.to(ref.dtype)
    model.load_state_dict(new, strict=True)
