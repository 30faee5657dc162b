"""Benchmark section `explain`: do the models' variant effects find the true causal variants?

On a simulated cohort whose causal variants and interacting pairs are known (`cohort.json`),
three models are explained with `shared.explain` on the simulation's public reference sample
(`public-reference.vcf.gz`, people in no site), exactly as `genofed model explain` does:

- `federated_dp`: the federation's final checkpoint (Flower's simulation engine, the demo's
  run settings, `utility`'s recipe);
- `centralized`: the same transformer trained on the pooled training people without DP
  (`utility.train_plain`, Adam with cosine decay, as many epochs as the federation);
- `linear_prs`: `utility`'s L2 logistic regression on standardized dosages (C by CV), explained
  through its decision function, so its effects are its weights per allele.

Per model: precision and recall of the top-k variants by importance (k = the number of causal
variants, and 2k) against the causal set, the same for integrated gradients (transformers), and
for each true interacting pair its rank among every scored pair (pairs among the `TOP` most
important variants; `null` when one of its variants is not among them). `chance_precision` is
what a random ranking gets. Nothing here is tuned; the figures are reported whatever they show.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from deploy.bench.common import say
from deploy.bench.utility import (
    PLAIN_LEARNING_RATE,
    federated_model,
    fresh_model,
    linear_search,
    load_cohort,
    train_plain,
)
from deploy.federation import run_simulation
from deploy.simulate import (
    PUBLIC_LABELS,
    PUBLIC_VCF,
    SimulationConfig,
    register_sites,
    simulate_cohort,
)
from shared.explain import (
    Explanation,
    ScoreFn,
    dosage,
    explain,
    integrated_gradients,
    model_scorer,
    ranks,
    read_reference,
    variant_names,
)
from shared.panel import read_panel
from shared.runconfig import RunSettings

FULL = SimulationConfig(seed=0)  # the demo's cohort
FULL_ROUNDS = 5
FULL_RUN: dict[str, object] = {}
FULL_PER_POPULATION = 50  # of the 100 public people per population: pairs cost N forwards each
FULL_TOP = 40  # 780 pairs
QUICK = SimulationConfig(
    seed=3, sites=2, people_per_population=120, sequence_length=200_000, panel_size=32,
    n_causal=8, n_interactions=2, prevalence=0.3, public_people_per_population=30,
)
QUICK_ROUNDS = 1
QUICK_RUN: dict[str, object] = {
    "batch-size": 32, "local-epochs": 1, "model-dim": 16, "model-layers": 1, "model-heads": 2,
    "suppression-k": 5,
}
QUICK_PER_POPULATION = 30
QUICK_TOP = 16
IG_STEPS = 16


def precision_recall(order: np.ndarray, truth: set[int], k: int) -> dict[str, float]:
    """Of the first `k` variants in `order`, the share that is causal and the share of causal
    variants found."""
    hits = len(set(int(i) for i in order[:k]) & truth)
    return {"k": k, "precision": hits / k, "recall": hits / max(len(truth), 1)}


def pair_ranks(expl: Explanation, pairs: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Each true pair's rank among the scored pairs (1 = strongest interaction), or None."""
    index = {(int(a), int(b)): i for i, (a, b) in
             enumerate(zip(expl.pairs["index_a"], expl.pairs["index_b"], strict=True))}
    out = []
    for a, b in pairs:
        row = index.get((min(a, b), max(a, b)))
        out.append({
            "pair": [a, b],
            "rank": None if row is None else float(expl.pairs["rank"].iloc[row]),
            "interaction": None if row is None else float(expl.pairs["interaction"].iloc[row]),
            "scored_pairs": len(expl.pairs),
        })
    return out


def recovery(expl: Explanation, causal: set[int], pairs: list[tuple[int, int]],
             ig: np.ndarray | None = None) -> dict[str, Any]:
    """Recovery figures of one explained model against the truth."""
    k = len(causal)
    by_importance = expl.top(len(expl.variants))["index"].to_numpy()
    out: dict[str, Any] = {
        "swap": [precision_recall(by_importance, causal, k),
                 precision_recall(by_importance, causal, 2 * k)],
        "pairs": pair_ranks(expl, pairs),
        "causal_in_top": len(causal & {int(i) for i in expl.top(_top_count(expl))["index"]}),
    }
    if ig is not None:
        order = np.argsort(ranks(np.abs(ig).mean(0)), kind="stable")
        out["integrated_gradients"] = [precision_recall(order, causal, k),
                                       precision_recall(order, causal, 2 * k)]
        out["ig_max_gap"] = expl.ig_max_gap
    return out


def _top_count(expl: Explanation) -> int:
    """How many variants the scored pairs were drawn from."""
    return len(set(expl.pairs["index_a"]) | set(expl.pairs["index_b"]))


def linear_score(data: Any, seed: int) -> tuple[ScoreFn, dict[str, Any]]:
    """`utility`'s linear score, fitted the same way, as a function of genotype codes."""
    search = linear_search(seed)
    search.fit(dosage(data.train.genotypes), data.train.labels)
    return (lambda codes: search.decision_function(dosage(codes)),
            {"C": float(search.best_params_["logisticregression__C"])})


def run(work_dir: Path, quick: bool) -> dict[str, Any]:
    config = QUICK if quick else FULL
    rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    extra = QUICK_RUN if quick else FULL_RUN
    per_pop = QUICK_PER_POPULATION if quick else FULL_PER_POPULATION
    top = QUICK_TOP if quick else FULL_TOP
    cohort_dir = work_dir / "cohort"
    timings: dict[str, float] = {}

    say("explain", f"simulating the cohort ({config.sites} sites)")
    meta = simulate_cohort(cohort_dir, config, force=True)
    register_sites(cohort_dir)
    overrides = {"num-server-rounds": rounds, "min-sites": config.sites,
                 "data-root": str(cohort_dir), "out-dir": str(work_dir / "run"),
                 "seed": config.seed, **extra}
    settings = RunSettings.from_run_config(overrides)
    say("explain", f"federated_dp: {rounds} rounds through Flower's simulation engine")
    began = time.perf_counter()
    run_simulation(overrides, config.sites, work_dir / "federation", timeout=3000)
    timings["federated_dp_s"] = time.perf_counter() - began

    data = load_cohort(cohort_dir, settings)
    cfg = settings.model_config(data.n_variants)
    epochs = settings.num_server_rounds * settings.local_epochs
    say("explain", f"centralized: {epochs} epochs on the pooled training people, no DP")
    began = time.perf_counter()
    centralized = fresh_model(cfg, settings.seed)
    train_plain(centralized, data.train.genotypes, data.train.labels, data.features,
                epochs=epochs, batch_size=settings.batch_size,
                learning_rate=PLAIN_LEARNING_RATE, seed=settings.seed, cosine=True)
    timings["centralized_s"] = time.perf_counter() - began
    linear, linear_info = linear_score(data, settings.seed)

    panel = read_panel(cohort_dir / "panel.tsv")
    ref = read_reference(cohort_dir / PUBLIC_VCF, cohort_dir / PUBLIC_LABELS, panel,
                         cohort_dir / "reference.fa", per_population=per_pop)
    row = {int(p): i for i, p in enumerate(panel.pos)}
    causal = {row[int(p)] for p in meta["causal_positions"]}
    pairs = [(row[int(a)], row[int(b)]) for a, b in meta["interaction_pairs"]]
    names = variant_names(panel)
    features = data.features.to("cpu")

    models: dict[str, Any] = {}
    for name, model in (("federated_dp", federated_model(work_dir / "run")),
                        ("centralized", centralized.cpu())):
        say("explain", f"{name}: swap effects, integrated gradients, pairs of the top {top}")
        began = time.perf_counter()
        ig, gap = integrated_gradients(model, features, ref.codes, IG_STEPS)
        expl = explain(model_scorer(model, features), ref.codes, ref.populations, names,
                       top=top, ig=ig, ig_gap=gap)
        models[name] = recovery(expl, causal, pairs, ig)
        timings[f"{name}_explain_s"] = time.perf_counter() - began
    say("explain", "linear_prs: swap effects of the linear score")
    began = time.perf_counter()
    models["linear_prs"] = {**recovery(explain(linear, ref.codes, ref.populations, names,
                                               top=top), causal, pairs), **linear_info}
    timings["linear_prs_explain_s"] = time.perf_counter() - began

    k = len(causal)
    flat = {f"{m}_precision_at_{k}": r["swap"][0]["precision"] for m, r in models.items()}
    flat.update({f"{m}_recall_at_{2 * k}": r["swap"][1]["recall"] for m, r in models.items()})
    return {
        "models": models,
        **flat,
        "chance_precision": k / len(panel),
        "truth": {"causal": sorted(causal), "pairs": [list(p) for p in pairs],
                  "interaction_effects": meta["interaction_effects"]},
        "reference_people": {p: int((ref.populations == p).sum())
                             for p in sorted(set(ref.populations))},
        "settings": {"cohort": dataclasses.asdict(config), "rounds": rounds, "top": top,
                     "ig_steps": IG_STEPS, "per_population": per_pop,
                     "architecture": settings.architecture(), "epochs": epochs},
        "note": "importance = mean |logit change per added alt allele| x dosage sd in the "
                "public reference; pair rank among the scored pairs (1 = strongest), null when "
                "a variant is outside the top",
        **timings,
    }
