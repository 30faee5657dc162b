"""`genofed audit report`'s HTML page: one self-contained file an auditor can open anywhere.

The page needs no network to be viewed: no scripts, no external fonts or stylesheets, the plots
are inline SVG (`shared.audit.plots`), and a Content-Security-Policy forbids fetching anything.

The markup lives in the Jinja2 template ``templates/report.html.j2``, rendered with autoescape on.
The ledger carries strings chosen by other institutions (site and group names, reasons, times,
hashes), so escaping is the template engine's job wherever a value is inserted, not something each
piece of hand-built HTML has to remember. Only the plots arrive as markup, already escaped, as
`markupsafe.Markup`. `StrictUndefined` makes a misspelt name in the template an error instead of
an empty cell in a report someone relies on.

API::

    data = shared.audit.report.build_report(Path("ledger.jsonl"), Path("ledger.pub"))
    html_text = render_html(data)
    write_html(data, Path("report.html"))
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from pathlib import Path

import jinja2

from shared import fsio
from shared.audit.explanation import ExplanationView
from shared.audit.plots import auroc_plot, calibration_plot, effects_plot, epsilon_plot
from shared.audit.report import ReportData

TEMPLATE = "report.html.j2"


@functools.cache
def _environment() -> jinja2.Environment:
    """The template environment, built on first use (`genofed audit verify` never needs it)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("shared.audit", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _distinct(values: Iterable[str]) -> list[str]:
    """The different non-empty values, sorted: a run should show exactly one."""
    return sorted({value for value in values if value})


def render_html(data: ReportData, explanation: ExplanationView | None = None) -> str:
    """The whole report as one self-contained HTML document (inline CSS and SVG, no scripts);
    with `explanation`, its variant-effect section too."""
    latest = data.latest()
    template = _environment().get_template(TEMPLATE)
    return template.render(
        data=data,
        latest=latest,
        config_hashes=_distinct(rnd.config_sha256 for rnd in data.rounds),
        panel_hashes=_distinct(rnd.panel_sha256 for rnd in data.rounds),
        auroc_svg=auroc_plot(data),
        calibration_svg=calibration_plot(latest),
        epsilon_svg=epsilon_plot(data),
        explanation=explanation,
        effects_svg=None if explanation is None else effects_plot(explanation.top,
                                                                  explanation.populations),
    )


def write_html(data: ReportData, path: Path, explanation: ExplanationView | None = None) -> None:
    """Atomically write `render_html`, UTF-8 encoded as the page's ``<meta charset>`` says."""
    with fsio.atomic_write(Path(path), "wb") as fh:
        fh.write(render_html(data, explanation).encode("utf-8"))
