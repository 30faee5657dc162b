"""The report's variant-effect section: a `genofed model explain` output, read for display.

The explanation file is the auditor's own (written by `genofed model explain` on public
reference genotypes), but it is still read defensively, like ledger records: each value is
validated into plain typed rows here, so the page and its plot only see finite numbers and
strings (escaped by the template's autoescape). Its provenance is checked against the verified
ledger: the checkpoint's weights sha256 is looked up among the rounds' signed
`weights_sha256`, so the page says which signed round's model was explained, or that none was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shared.audit.report import ReportData, _int, _num, _text
from shared.errors import InputError

SHOWN = 10  # rows per table


@dataclass(frozen=True)
class VariantRow:
    variant: str
    rank: float | None
    importance: float | None
    effect: float | None
    ig_abs: float | None
    by_population: dict[str, float | None]  # signed swap effect per population
    spread: float | None


@dataclass(frozen=True)
class PairRow:
    variant_a: str
    variant_b: str
    rank: float | None
    interaction: float | None
    by_population: dict[str, float | None]
    n: int | None


@dataclass(frozen=True)
class ExplanationView:
    path: str
    checkpoint: dict[str, str]  # sha256, weights_sha256, round, panel_sha256
    reference: dict[str, str]  # genotypes / labels / fasta sha256 and paths
    signed_round: int | None  # the verified round whose weights these are, if any
    populations: list[str]
    people: dict[str, int]
    settings: dict[str, str]
    ig_max_gap: float | None
    top: list[VariantRow]  # by overall importance
    top_by_population: dict[str, list[VariantRow]]
    differ: list[VariantRow]  # largest spread of the effect across populations
    pairs: list[PairRow]


def _variant(item: dict[str, Any], pops: list[str]) -> VariantRow:
    by_pop = item.get("by_population") if isinstance(item.get("by_population"), dict) else {}
    return VariantRow(
        variant=_text(item.get("variant")), rank=_num(item.get("rank")),
        importance=_num(item.get("importance")), effect=_num(item.get("effect")),
        ig_abs=_num(item.get("ig_abs")),
        by_population={p: _num((by_pop.get(p) or {}).get("effect")
                               if isinstance(by_pop.get(p), dict) else None) for p in pops},
        spread=_num(item.get("population_spread")),
    )


def _pop_importance(item: dict[str, Any], pop: str) -> float:
    entry = (item.get("by_population") or {}).get(pop)
    value = _num(entry.get("importance")) if isinstance(entry, dict) else None
    return -1.0 if value is None else value


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _text(v) for k, v in value.items() if not isinstance(v, dict | list)}


def load_explanation(path: Path, data: ReportData) -> ExplanationView:
    """The explanation at `path`, validated; InputError naming the file if it is not one."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise InputError(path, "explanation file not found") from err
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise InputError(path, f"not a JSON explanation ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != "genofed.explanation":
        raise InputError(path, "not a genofed explanation (format genofed.explanation)")
    pops = [str(p) for p in doc.get("populations", []) if isinstance(p, str)]
    variants = [v for v in doc.get("variants", []) if isinstance(v, dict)]
    pairs = [p for p in doc.get("pairs", []) if isinstance(p, dict)]
    checkpoint = _strings(doc.get("checkpoint"))
    reference_doc = doc.get("reference") if isinstance(doc.get("reference"), dict) else {}
    reference = {f"{k}_{field}": _text(v.get(field)) for k, v in reference_doc.items()
                 if isinstance(v, dict) for field in ("path", "sha256")}
    reference.update(_strings(reference_doc))
    weights = checkpoint.get("weights_sha256", "")
    signed = next((rnd.x for rnd in data.rounds if weights and rnd.weights_sha256 == weights),
                  None)

    def by_rank(item: dict[str, Any]) -> float:
        rank = _num(item.get("rank"))
        return float("inf") if rank is None else rank

    def by_spread(item: dict[str, Any]) -> float:
        spread = _num(item.get("population_spread"))
        return -1.0 if spread is None else spread

    people = doc.get("people") if isinstance(doc.get("people"), dict) else {}
    return ExplanationView(
        path=str(path), checkpoint=checkpoint, reference=reference, signed_round=signed,
        populations=pops,
        people={str(k): v for k, v in people.items() if _int(v) is not None},
        settings=_strings(doc.get("settings")), ig_max_gap=_num(doc.get("ig_max_gap")),
        top=[_variant(v, pops) for v in sorted(variants, key=by_rank)[:SHOWN]],
        top_by_population={p: [_variant(v, pops) for v in sorted(
            variants, key=lambda v, p=p: -_pop_importance(v, p))[:SHOWN]] for p in pops},
        differ=[_variant(v, pops) for v in sorted(variants, key=by_spread, reverse=True)[:SHOWN]],
        pairs=[PairRow(
            variant_a=_text(p.get("variant_a")), variant_b=_text(p.get("variant_b")),
            rank=_num(p.get("rank")), interaction=_num(p.get("interaction")),
            by_population={q: _num((p.get("by_population") or {}).get(q))
                           if isinstance(p.get("by_population"), dict) else None for q in pops},
            n=_int(p.get("n")),
        ) for p in sorted(pairs, key=by_rank)[:SHOWN]],
    )
