"""`genofed model`: what anyone holding a checkpoint may run on public data.

`explain` measures a model's variant effects (`shared.explain`) on public reference genotypes
(1000 Genomes, or the simulation's `public-reference.vcf.gz`): no site's people, no privacy
budget. Its explanation.json names the checkpoint and reference files by sha256;
`genofed audit report --explanation` shows it beside the ledger.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.explain import EXPLANATION_JSON, IG_STEPS, TOP_VARIANTS


def _cmd_explain(args: argparse.Namespace) -> int:
    from shared.explain import explain_checkpoint

    doc = explain_checkpoint(
        args.model, args.reference, args.populations, args.panel, args.fasta, args.out,
        population_col=args.population_col, per_population=args.per_population, top=args.top,
        ig_steps=args.ig_steps,
    )
    print(f"explained {len(doc['variants'])} variants and {len(doc['pairs'])} pairs on "
          f"{sum(doc['people'].values())} reference people; wrote {args.out / EXPLANATION_JSON}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `model` group to the top-level `genofed` parser (called by `shared.cli`)."""
    group = subparsers.add_parser("model", help="inspect a model checkpoint on public data",
                                  description="Inspect a global model checkpoint.")
    commands = group.add_subparsers(dest="model_command", metavar="COMMAND", required=True)
    p = commands.add_parser(
        "explain", help="variant effects, attributions and interactions on public genotypes",
        description="Per panel variant: the logit change of an added alt allele, averaged per "
        "reference population, and integrated gradients; per pair among the top variants: "
        "the interaction. Writes DIR/variants.tsv, DIR/pairs.tsv, DIR/explanation.json.",
    )
    p.add_argument("--model", type=Path, required=True, metavar="CHECKPOINT")
    p.add_argument("--reference", type=Path, required=True, metavar="GENOTYPES",
                   help="public reference genotypes (VCF/BCF or PLINK), e.g. 1000 Genomes")
    p.add_argument("--populations", type=Path, required=True, metavar="TABLE",
                   help="tab-separated sample table with a `sample` column and a population "
                   "column (1000 Genomes' integrated_call_samples_*.panel)")
    p.add_argument("--population-col", default="pop",
                   help="the table's population column (default pop; 1000 Genomes: super_pop)")
    p.add_argument("--panel", type=Path, required=True, help="the run's variant panel")
    p.add_argument("--fasta", type=Path, required=True, help="the reference genome FASTA")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--per-population", type=int, default=100, metavar="N",
                   help="people per population explained (0: all; default 100)")
    p.add_argument("--top", type=int, default=TOP_VARIANTS, metavar="K",
                   help=f"pairs among the K most important variants (default {TOP_VARIANTS})")
    p.add_argument("--ig-steps", type=int, default=IG_STEPS, metavar="S",
                   help=f"integrated-gradients steps (default {IG_STEPS})")
    p.set_defaults(func=_cmd_explain)
