"""A site's ancestry groups: declared (its cohort table's column) or genetic (its people
projected onto the panel's public ancestry reference, `shared.ancestry`).

`[ancestry] groups` in site.toml chooses which labels the site's DP releases (counts, evaluation
histograms, balancing weights) are broken down by:

    auto      the cohort table's ancestry column; genetic labels when the table has none
    declared  always the column (a table without one is an error)
    genetic   always the genetic labels, even when the table declares ancestry

Genetic groups are the reference populations plus `unassigned` (people far from every
reference population: exactly who a fairness report should not lose). Nothing here leaves the
site; `site check` shows the declared x genetic agreement to the site's own steward.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from client.release import ALL
from shared.ancestry import UNASSIGNED, AncestryReference, ancestry_path, read_reference
from shared.cohort import Cohort, CohortSpec, relabel
from shared.errors import InputError
from shared.panel import Panel


def reads_without_ancestry(source: str, panel_path: Path) -> bool:
    """Whether the cohort table may lack its ancestry column: genetic labels can stand in."""
    return source == "genetic" or (source == "auto" and ancestry_path(panel_path).exists())


def uses_genetic(source: str, cohort: Cohort) -> bool:
    return source == "genetic" or (source == "auto" and not cohort.ancestry_declared)


def load_reference(panel: Panel, panel_path: Path) -> AncestryReference:
    """The panel's ancestry reference; one InputError when it is absent or does not fit."""
    path = ancestry_path(panel_path)
    if not path.exists():
        raise InputError(path, "no ancestry reference beside the panel: genetic ancestry labels "
                               "need the coordinator's panel.ancestry.json (or declare ancestry "
                               "in the cohort table)")
    return read_reference(path, panel)


def genetic_vocabulary(labels: tuple[str, ...], spec: CohortSpec, where: Path | None) -> dict:
    """Reference population -> the spelling the site's `ancestries` list gives it (all of them
    must be listed there: they become the groups of its releases)."""
    if spec.ancestries is None:
        return {p: p for p in labels}
    allowed = {a.strip().lower(): a.strip() for a in spec.ancestries}
    missing = [p for p in labels if p.lower() not in allowed]
    if missing:
        raise InputError(where, f"the panel's ancestry reference population {missing[0]!r} is "
                                "not among the site's [cohort] ancestries; list it there to use "
                                "genetic ancestry groups")
    return {p: allowed[p.lower()] for p in labels}


def site_groups(
    cohort: Cohort, codes: np.ndarray, panel: Panel, panel_path: Path, spec: CohortSpec,
    source: str, settings_path: Path | None,
) -> tuple[Cohort, tuple[str, ...]]:
    """(the cohort labelled with the groups the site releases by, its vocabulary)."""
    if not uses_genetic(source, cohort):
        return cohort, tuple(spec.ancestries) if spec.ancestries else (ALL,)
    reference = load_reference(panel, panel_path)
    names = genetic_vocabulary(reference.populations, spec, settings_path)
    labels = np.array([names.get(str(x), UNASSIGNED) for x in reference.assign(codes)], dtype=str)
    return relabel(cohort, labels, spec), (*names.values(), UNASSIGNED)


def format_agreement(summary: dict[str, Any]) -> list[str]:
    """`site check`'s lines for the declared x genetic table (rows declared, columns genetic)."""
    table = summary.get("agreement")
    under = f"<{summary['floor']:g}"
    lines = [f"ancestry   groups from {summary['groups']} labels; genetic: " + ", ".join(
        f"{k} {under if v is None else v}" for k, v in summary["genetic"].items())]
    if not table:
        return lines
    cols = table["genetic"]
    width = max(8, *(len(c) + 1 for c in cols), *(len(r) + 1 for r in table["declared"]))
    agreeing = table["agreeing"]
    share = ("withheld" if agreeing is None
             else f"{agreeing} of {table['people']} ({100 * agreeing / table['people']:.1f}%)")
    lines.append(f"agreement  declared (rows) x genetic (columns); cells under "
                 f"{table['floor']} withheld (-); same label: {share}")
    lines.append(" " * (11 + width) + "".join(f"{c:>{width}}" for c in cols))
    for r in table["declared"]:
        cells = "".join(f"{'-' if v is None else v:>{width}}" for v in table["cells"][r].values())
        lines.append(" " * 11 + f"{r:<{width}}" + cells)
    return lines
