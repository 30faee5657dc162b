"""Why the model says so: variant effects of a risk model, measured on genotypes it may see.

Three measurements, each defined once here and used by `genofed model explain` (on public
reference genotypes: no site's people, no privacy budget), `genofed site predict --explain` (on
a site's own patients, written only to the site's file) and `make bench` (`explain` section):

- **swap effect**: the change of the risk logit when one person's genotype at one variant gains
  an alt allele (0 -> 1 or 1 -> 2), everything else kept. It is what the model does, not an
  approximation of it; hom-alt and missing calls have no swap. Averaged per population.
- **integrated gradients** (Sundararajan et al. 2017) from the all-hom-ref genotype to the
  person's, along the straight line between their token embeddings and additive read-out
  inputs (`RiskTransformer.embed`'s output and `RiskTransformer.additive`'s input, replaced by
  forward hooks, so the model's own code is used unchanged). Per person the attributions add
  up to logit(person) - logit(all hom-ref), up to the Riemann sum's error, which is reported.
- **pair interaction**: logit(double swap) - logit(swap a) - logit(swap b) + logit(person), per
  person where both swaps exist; zero for any additive model.

A variant's `importance` is its mean |swap effect| times the standard deviation of its dosage in
the genotypes explained: the logit spread it causes there, on the scale of a linear score's
standardized weights. Ranks use it; ties share the mean rank.

Every output names the checkpoint (file sha256, and the weights' sha256 the ledger signs) and
the reference files (sha256) it came from, so an auditor can reproduce it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from shared.errors import InputError
from shared.fsio import atomic_write, sha256_file, write_json
from shared.model import PanelFeatures, RiskTransformer
from shared.panel import Panel
from shared.tokenizer import GT_HOM_ALT, GT_MISSING

log = logging.getLogger(__name__)

EXPLANATION_FORMAT = "genofed.explanation"
EXPLANATION_VERSION = 1
VARIANTS_TSV, PAIRS_TSV, EXPLANATION_JSON = "variants.tsv", "pairs.tsv", "explanation.json"
IG_STEPS = 32  # Riemann midpoints along the integration path
TOP_VARIANTS = 20  # variants whose pairs are scored (K*(K-1)/2 pairs)
ALL = "all"  # the pooled row beside the populations
SAMPLE_COL = "sample"  # 1000 Genomes' sample table (integrated_call_samples_*.panel) names

ScoreFn = Callable[[np.ndarray], np.ndarray]  # genotype codes [N, T] int8 -> logits [N] float64


# --------------------------------------------------------------------------- scoring


def model_scorer(model: RiskTransformer, features: PanelFeatures, batch_size: int = 512) -> ScoreFn:
    """The model's logits as a plain function of genotype codes (CPU, no gradients)."""
    model.eval()

    def score(codes: np.ndarray) -> np.ndarray:
        out = []
        with torch.no_grad():
            for lo in range(0, len(codes), batch_size):
                x = torch.as_tensor(np.asarray(codes[lo:lo + batch_size]), dtype=torch.long)
                out.append(model(x, features).double().numpy())
        return np.concatenate(out) if out else np.empty(0)

    return score


def dosage(codes: np.ndarray) -> np.ndarray:
    """Alt-allele dosage as float, missing calls NaN."""
    out = np.clip(codes, 0, GT_HOM_ALT).astype(np.float64)
    out[codes == GT_MISSING] = np.nan
    return out


def swap_effects(score: ScoreFn, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N], effects [N, T]): each person's logit change when variant t gains an alt
    allele; NaN where there is no swap (hom-alt or missing)."""
    codes = np.asarray(codes)
    base = score(codes)
    effects = np.full(codes.shape, np.nan)
    for t in range(codes.shape[1]):
        rows = np.flatnonzero(codes[:, t] < GT_HOM_ALT)
        if len(rows):
            x = codes[rows].copy()
            x[:, t] += 1
            effects[rows, t] = score(x) - base[rows]
    return base, effects


def pair_interactions(score: ScoreFn, codes: np.ndarray, base: np.ndarray,
                      effects: np.ndarray, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """[N, P] double swap minus the two single swaps, NaN where either swap is missing."""
    out = np.full((len(codes), len(pairs)), np.nan)
    for j, (a, b) in enumerate(pairs):
        rows = np.flatnonzero((codes[:, a] < GT_HOM_ALT) & (codes[:, b] < GT_HOM_ALT))
        if len(rows):
            x = codes[rows].copy()
            x[:, a] += 1
            x[:, b] += 1
            out[rows, j] = score(x) - base[rows] - effects[rows, a] - effects[rows, b]
    return out


def integrated_gradients(model: RiskTransformer, features: PanelFeatures, codes: np.ndarray,
                         steps: int = IG_STEPS, people: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """(attributions [N, T], completeness gap [N]) from the all-hom-ref genotype.

    The gap, sum of a person's attributions minus (logit - baseline logit), is the Riemann
    sum's error, or a genotype path the hooks do not see if the model grows one."""
    model.eval()
    codes = np.asarray(codes)
    n, t = codes.shape
    attributions, gaps = np.zeros((n, t)), np.zeros(n)
    alphas = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    grabbed: dict[str, torch.Tensor] = {}
    state: dict[str, Any] = {"mode": "grab"}

    def on_embed(module: torch.nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor | None:
        if state["mode"] != "path":
            if state["mode"] == "grab":
                grabbed["embed"] = out.detach()
            return None
        base, alpha = grabbed["embed"], state["alpha"][:, None, None]
        x = (base + alpha * (out.detach() - base)).requires_grad_(True)
        state["embed"] = (x, out.detach() - base)
        return x

    def on_additive(module: torch.nn.Module, args: tuple) -> tuple | None:
        if state["mode"] != "path":
            if state["mode"] == "grab":
                grabbed["additive"] = args[0].detach()
            return None
        base, alpha = grabbed["additive"], state["alpha"][:, None]
        x = (base + alpha * (args[0].detach() - base)).requires_grad_(True)
        state["additive"] = (x, args[0].detach() - base)
        return (x,)

    hooks = [model.embed.register_forward_hook(on_embed),
             model.additive.register_forward_pre_hook(on_additive)]
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():  # the baseline's embedding and additive input, [1, T, D] / [1, T]
            baseline = float(model(torch.zeros(1, t, dtype=torch.long), features)[0])
        for lo in range(0, n, people):
            g = torch.as_tensor(codes[lo:lo + people], dtype=torch.long)  # [b, T]
            b = len(g)
            state["mode"] = "off"
            with torch.no_grad():
                logits = model(g, features).double().numpy()
            state["mode"] = "path"
            state["alpha"] = alphas.repeat(b)  # [b * S], person-major
            with torch.enable_grad():
                model(g.repeat_interleave(steps, dim=0), features).sum().backward()
            total = torch.zeros(b, t, dtype=torch.float64)
            for key in ("embed", "additive"):
                x, diff = state.pop(key)
                contrib = diff * x.grad  # [b*S, T, D] or [b*S, T]
                if contrib.dim() == 3:
                    contrib = contrib.sum(-1)
                total += contrib.view(b, steps, t).mean(1).double()
            attributions[lo:lo + b] = total.numpy()
            gaps[lo:lo + b] = attributions[lo:lo + b].sum(1) - (logits - baseline)
    finally:
        for h in hooks:
            h.remove()
        for p, flag in zip(model.parameters(), flags, strict=True):
            p.requires_grad_(flag)
    return attributions, gaps


# --------------------------------------------------------------------------- summaries


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Column means over the finite entries; NaN for a column without one (no warning)."""
    finite = np.isfinite(values)
    count = finite.sum(0)
    total = np.where(finite, values, 0.0).sum(0)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _nanstd(values: np.ndarray) -> np.ndarray:
    mean = _nanmean(values)
    return np.sqrt(np.nan_to_num(_nanmean((values - mean) ** 2)))


RANK_DECIMALS = 5  # logits are float32: their rounding error on values of order 1 is ~1e-7


def ranks(scores: np.ndarray, decimals: int = RANK_DECIMALS) -> np.ndarray:
    """1 = largest |score|; NaN counts as 0; values equal to `decimals` places share their mean
    rank, so an all-zero column (an additive model's interactions) ranks nobody ahead."""
    rounded = pd.Series(np.round(np.nan_to_num(np.abs(scores)), decimals))
    return rounded.rank(method="average", ascending=False).to_numpy()


def _variant_summary(codes: np.ndarray, effects: np.ndarray) -> dict[str, np.ndarray]:
    absolute = _nanmean(np.abs(effects))
    return {
        "effect": _nanmean(effects),
        "effect_0to1": _nanmean(np.where(codes == 0, effects, np.nan)),
        "effect_1to2": _nanmean(np.where(codes == 1, effects, np.nan)),
        "abs_effect": absolute,
        "importance": np.nan_to_num(absolute) * _nanstd(dosage(codes)),
        "n": np.isfinite(effects).sum(0),
    }


def variant_names(panel: Panel) -> list[str]:
    return [f"{c}:{p}:{r}:{a}" for c, p, r, a in
            zip(panel.chrom, panel.pos, panel.ref, panel.alt, strict=True)]


@dataclass(frozen=True)
class Explanation:
    """What `explain` measured: `variants` in panel order, `pairs` by rank (1 = strongest)."""

    populations: list[str]
    variants: pd.DataFrame
    pairs: pd.DataFrame
    people: dict[str, int]
    ig_max_gap: float | None

    def top(self, k: int, population: str = ALL) -> pd.DataFrame:
        """The `k` variants with the largest importance in `population`."""
        column = "importance" if population == ALL else f"importance_{population}"
        return self.variants.sort_values([column, "index"], ascending=[False, True]).head(k)


def explain(score: ScoreFn, codes: np.ndarray, populations: Sequence[str], names: Sequence[str],
            *, top: int = TOP_VARIANTS, ig: np.ndarray | None = None,
            ig_gap: np.ndarray | None = None) -> Explanation:
    """Swap effects per variant and population, `ig` (per-person attributions) summarised
    beside them, and interactions of every pair among the `top` most important variants."""
    codes = np.asarray(codes)
    populations = np.asarray(populations, dtype=str)
    groups = sorted(set(populations.tolist()))
    log.info("explain: swap effects of %d variants in %d people", codes.shape[1], len(codes))
    base, effects = swap_effects(score, codes)
    table = pd.DataFrame({"index": np.arange(codes.shape[1]), "variant": list(names)})
    for key, values in _variant_summary(codes, effects).items():
        table[key] = values
    for pop in groups:
        rows = populations == pop
        for key, values in _variant_summary(codes[rows], effects[rows]).items():
            table[f"{key}_{pop}"] = values
    table["rank"] = ranks(table["importance"].to_numpy())
    per_pop = table[[f"effect_{p}" for p in groups]].to_numpy()
    table["population_spread"] = (np.nanmax(per_pop, 1) - np.nanmin(per_pop, 1)
                                  if np.isfinite(per_pop).any() else np.nan)
    if ig is not None:
        table["ig_mean"] = ig.mean(0)
        table["ig_abs"] = np.abs(ig).mean(0)
        table["ig_rank"] = ranks(table["ig_abs"].to_numpy())
    chosen = table.sort_values(["importance", "index"], ascending=[False, True]).head(top)
    chosen_idx = sorted(int(i) for i in chosen["index"])
    pair_idx = [(a, b) for i, a in enumerate(chosen_idx) for b in chosen_idx[i + 1:]]
    log.info("explain: interactions of %d pairs among the top %d variants", len(pair_idx),
             len(chosen_idx))
    inter = pair_interactions(score, codes, base, effects, pair_idx)
    pairs = pd.DataFrame({
        "variant_a": [names[a] for a, _ in pair_idx], "variant_b": [names[b] for _, b in pair_idx],
        "index_a": [a for a, _ in pair_idx], "index_b": [b for _, b in pair_idx],
        "interaction": _nanmean(inter), "abs_interaction": _nanmean(np.abs(inter)),
        "n": np.isfinite(inter).sum(0),
    })
    for pop in groups:
        pairs[f"interaction_{pop}"] = _nanmean(inter[populations == pop])
    pairs["rank"] = ranks(pairs["interaction"].to_numpy())
    pairs = pairs.sort_values(["rank", "index_a", "index_b"], ignore_index=True)
    people = {pop: int((populations == pop).sum()) for pop in groups}
    gap = None if ig_gap is None or not len(ig_gap) else float(np.abs(ig_gap).max())
    return Explanation(groups, table, pairs, people, gap)


# --------------------------------------------------------------------------- reference input


@dataclass(frozen=True)
class Reference:
    """Public genotypes to explain a model on, with each person's population label."""

    codes: np.ndarray  # [N, T] int8 at the panel's variants
    populations: np.ndarray  # [N] str
    samples: list[str]
    provenance: dict[str, Any]  # files and their sha256


def read_labels(path: Path, population_col: str) -> pd.DataFrame:
    """The sample table (`sample` and `population_col` columns, tab-separated, as 1000
    Genomes' `integrated_call_samples_*.panel`); one line naming the problem otherwise."""
    try:
        table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise InputError(path, "population table not found") from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise InputError(path, f"not a readable tab-separated table ({err})") from err
    for col in (SAMPLE_COL, population_col):
        if col not in table.columns:
            raise InputError(path, f"population table lacks column {col!r}")
    for i, (sample, pop) in enumerate(zip(table[SAMPLE_COL], table[population_col],
                                          strict=True), start=2):
        if not sample or not pop:
            raise InputError(path, "empty sample or population", f"line {i}")
    dup = table[SAMPLE_COL][table[SAMPLE_COL].duplicated()]
    if len(dup):
        raise InputError(path, f"sample {dup.iloc[0]!r} listed twice")
    return table[[SAMPLE_COL, population_col]].rename(columns={population_col: "population"})


def read_reference(genotypes: Path, labels: Path, panel: Panel, fasta: Path | None,
                   *, population_col: str = "pop", per_population: int = 0) -> Reference:
    """The first `per_population` people of each population in the table (0: all), read
    through the sites' own path (`harmonize_panel_genotypes`): same harmonization, same codes."""
    from shared.genotypes import harmonize_panel_genotypes, require_calls

    table = read_labels(Path(labels), population_col)
    if per_population:
        table = table.groupby("population", sort=False).head(per_population)
    samples = table[SAMPLE_COL].tolist()
    got = harmonize_panel_genotypes(genotypes, panel, samples, fasta)
    require_calls(got.codes, got.found, Path(genotypes))
    provenance = {
        "genotypes": {"path": str(genotypes), "sha256": sha256_file(genotypes)},
        "labels": {"path": str(labels), "sha256": sha256_file(labels)},
        "population_col": population_col,
        "per_population": per_population,
        "panel_sha256": panel.sha256,
        "variants_found": int(np.asarray(got.found).sum()),
    }
    return Reference(np.asarray(got.codes, dtype=np.int8),
                     table["population"].to_numpy(dtype=str), samples, provenance)


# --------------------------------------------------------------------------- outputs


def _clean(value: Any) -> Any:
    """JSON-safe: NaN -> None, numpy scalars -> Python."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def explanation_dict(expl: Explanation, provenance: dict[str, Any],
                     settings: dict[str, Any]) -> dict[str, Any]:
    """The JSON document: provenance first, then variants (panel order) and pairs (by rank)."""
    keys = ("effect", "effect_0to1", "effect_1to2", "abs_effect", "importance", "n")
    variants = []
    for row in expl.variants.to_dict("records"):
        item = {k: _clean(v) for k, v in row.items()
                if k in ("index", "variant", "rank", "population_spread", "ig_mean", "ig_abs",
                         "ig_rank") or k in keys}
        item["by_population"] = {p: {k: _clean(row[f"{k}_{p}"]) for k in keys}
                                 for p in expl.populations}
        variants.append(item)
    pairs = []
    for row in expl.pairs.to_dict("records"):
        item = {k: _clean(v) for k, v in row.items() if not k.startswith("interaction_")}
        item["by_population"] = {p: _clean(row[f"interaction_{p}"]) for p in expl.populations}
        pairs.append(item)
    return {
        "format": EXPLANATION_FORMAT,
        "version": EXPLANATION_VERSION,
        **provenance,
        "settings": settings,
        "populations": expl.populations,
        "people": expl.people,
        "ig_max_gap": expl.ig_max_gap,
        "variants": variants,
        "pairs": pairs,
    }


def write_outputs(expl: Explanation, out: Path, provenance: dict[str, Any],
                  settings: dict[str, Any]) -> dict[str, Any]:
    """variants.tsv, pairs.tsv and explanation.json in `out`, each written atomically."""
    out = Path(out)
    for name, frame in ((VARIANTS_TSV, expl.variants), (PAIRS_TSV, expl.pairs)):
        with atomic_write(out / name) as fh:
            frame.to_csv(fh, sep="\t", index=False, float_format="%.6g", lineterminator="\n")
    doc = explanation_dict(expl, provenance, settings)
    write_json(out / EXPLANATION_JSON, doc)
    return doc


def checkpoint_provenance(path: Path) -> dict[str, Any]:
    """The checkpoint an explanation came from: file hash, and the weights' hash as the ledger
    signs it (`shared.protocol.weights_sha256`), so the report can name the round."""
    from shared.checkpoint import load_checkpoint
    from shared.protocol import weights_sha256

    ckpt = load_checkpoint(path)
    return {"checkpoint": {
        "path": str(path), "sha256": sha256_file(path), "weights_sha256":
        weights_sha256(ckpt.weights()), "round": ckpt.round, "panel_sha256": ckpt.panel_sha256,
        "run_config_sha256": ckpt.run_config_sha256,
    }}


def explain_checkpoint(checkpoint: Path, genotypes: Path, labels: Path, panel_path: Path,
                       fasta: Path, out: Path, *, population_col: str = "pop",
                       per_population: int = 100, top: int = TOP_VARIANTS,
                       ig_steps: int = IG_STEPS) -> dict[str, Any]:
    """`genofed model explain`: explain a checkpoint on public reference genotypes."""
    from shared.checkpoint import load_checkpoint
    from shared.encoding import encode_panel
    from shared.panel import read_panel

    ckpt = load_checkpoint(checkpoint)
    panel = read_panel(panel_path)
    if ckpt.panel_sha256 and panel.sha256 != ckpt.panel_sha256:
        raise InputError(panel_path, "panel differs from the checkpoint's")
    features = encode_panel(panel, fasta, ckpt.encoder)
    ref = read_reference(genotypes, labels, panel, fasta, population_col=population_col,
                         per_population=per_population)
    model = ckpt.model()
    log.info("explain: integrated gradients of %d people (%d steps)", len(ref.codes), ig_steps)
    ig, gap = integrated_gradients(model, features, ref.codes, ig_steps)
    expl = explain(model_scorer(model, features), ref.codes, ref.populations,
                   variant_names(panel), top=top, ig=ig, ig_gap=gap)
    provenance = {**checkpoint_provenance(checkpoint),
                  "reference": {**ref.provenance, "fasta": {
                      "path": str(fasta), "sha256": sha256_file(fasta)}}}
    settings = {"top": top, "ig_steps": ig_steps, "ig_baseline": "all hom-ref",
                "per_population": per_population}
    return write_outputs(expl, out, provenance, settings)


# --------------------------------------------------------------------------- one person


def patient_reasons(model: RiskTransformer, features: PanelFeatures, codes: np.ndarray,
                    names: Sequence[str], k: int, steps: int = IG_STEPS) -> pd.DataFrame:
    """Per person, the `k` variants whose integrated gradient moved the logit most (from the
    all-hom-ref genotype): columns reason_i (variant), genotype_i (0/1/2/.), logit_i."""
    ig, _ = integrated_gradients(model, features, codes, steps)
    k = min(k, ig.shape[1])
    order = np.argsort(-np.abs(ig), axis=1, kind="stable")[:, :k]
    columns: dict[str, list] = {}
    names_arr = np.asarray(names)
    for i in range(k):
        idx = order[:, i]
        g = codes[np.arange(len(codes)), idx]
        columns[f"reason_{i + 1}"] = names_arr[idx].tolist()
        columns[f"genotype_{i + 1}"] = ["." if c == GT_MISSING else str(int(c)) for c in g]
        columns[f"logit_{i + 1}"] = ig[np.arange(len(codes)), idx].tolist()
    return pd.DataFrame(columns)
