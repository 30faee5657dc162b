"""The report's three plots as hand-written inline SVG: AUROC per population and privacy loss
per site over rounds, calibration of the latest round.

Inline SVG keeps the page self-contained: it opens offline, with no scripts and nothing fetched
(its Content-Security-Policy forbids both). The plots draw from the validated
`shared.audit.report` model, so they only see finite numbers, and suppressed groups are not in
what they draw: `RoundData.calibration` holds shown groups only, and a suppressed row has no
AUROC.

Names in the plots (sites, groups) come from other institutions' ledger entries: each is escaped
with `markupsafe.escape` where it enters the SVG, and each plot is returned as
`markupsafe.Markup`, so the page template's autoescape inserts it as it is and escapes nothing
twice.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from markupsafe import Markup, escape

from shared.audit.report import ReportData, RoundData

# Okabe-Ito (colour-blind safe), without the yellow that vanishes on white; black is "overall".
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C564B")
_OVERALL_COLOR = "#222222"

_Series = tuple[bool, str]  # (is the overall row, name): a group may be called "overall" too


def _colors(keys: Iterable[_Series]) -> dict[_Series, str]:
    """Stable colours: groups in name order from the palette, the overall row dark grey."""
    out = {}
    for i, key in enumerate(sorted(key for key in set(keys) if not key[0])):
        out[key] = _PALETTE[i % len(_PALETTE)]
    out[(True, "overall")] = _OVERALL_COLOR
    return out


def _nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks, value = [], first
    while value <= hi + 1e-9 * step:
        ticks.append(round(value, 10))
        value += step
    return ticks


def _fmt_tick(value: float) -> str:
    return f"{value:g}"


class _Plot:
    """A small hand-written SVG line chart: axes, ticks, lines, bands, points, legend."""

    W, H = 760, 340
    LEFT, RIGHT, TOP, BOTTOM = 60, 170, 16, 48

    def __init__(
        self,
        plot_id: str,
        title: str,
        x_label: str,
        y_label: str,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
    ) -> None:
        self.plot_id, self.title = plot_id, title
        self.x_label, self.y_label = x_label, y_label
        self.x0, self.x1 = x_range
        self.y0, self.y1 = y_range
        self.parts: list[str] = []
        self.legend: list[tuple[str, str, bool]] = []

    def sx(self, x: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.LEFT + (x - self.x0) / span * (self.W - self.LEFT - self.RIGHT)

    def sy(self, y: float) -> float:
        span = self.y1 - self.y0 or 1.0
        y = min(max(y, self.y0), self.y1)
        return self.H - self.BOTTOM - (y - self.y0) / span * (self.H - self.TOP - self.BOTTOM)

    def axes(self, x_ticks: Sequence[float], y_ticks: Sequence[float]) -> None:
        left, right = self.LEFT, self.W - self.RIGHT
        top, bottom = self.TOP, self.H - self.BOTTOM
        p = self.parts
        for y in y_ticks:
            yy = self.sy(y)
            p.append(f'<line class="grid" x1="{left}" y1="{yy:.1f}" x2="{right}" y2="{yy:.1f}"/>')
            p.append(
                f'<text class="tick" x="{left - 6}" y="{yy + 4:.1f}" '
                f'text-anchor="end">{_fmt_tick(y)}</text>'
            )
        for x in x_ticks:
            xx = self.sx(x)
            p.append(
                f'<line class="axis" x1="{xx:.1f}" y1="{bottom}" x2="{xx:.1f}" y2="{bottom + 4}"/>'
            )
            p.append(
                f'<text class="tick" x="{xx:.1f}" y="{bottom + 17}" '
                f'text-anchor="middle">{_fmt_tick(x)}</text>'
            )
        p.append(
            f'<rect class="frame" x="{left}" y="{top}" width="{right - left}" '
            f'height="{bottom - top}"/>'
        )
        p.append(
            f'<text class="label" x="{(left + right) / 2:.1f}" y="{self.H - 10}" '
            f'text-anchor="middle">{escape(self.x_label)}</text>'
        )
        p.append(
            f'<text class="label" transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle">{escape(self.y_label)}</text>'
        )

    def line(self, points: Sequence[tuple[float, float]], color: str, dashed: bool = False) -> None:
        if len(points) < 2:
            return
        coords = " ".join(f"{self.sx(x):.1f},{self.sy(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if dashed else ""
        self.parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} points="{coords}"/>'
        )

    def band(self, points: Sequence[tuple[float, float, float]], color: str) -> None:
        """Shaded region between (x, lo) and (x, hi)."""
        if len(points) < 2:
            return
        upper = [f"{self.sx(x):.1f},{self.sy(hi):.1f}" for x, _, hi in points]
        lower = [f"{self.sx(x):.1f},{self.sy(lo):.1f}" for x, lo, _ in reversed(points)]
        self.parts.append(
            f'<polygon fill="{color}" fill-opacity="0.13" stroke="none" '
            f'points="{" ".join(upper + lower)}"/>'
        )

    def error_bar(self, x: float, lo: float, hi: float, color: str) -> None:
        xx = self.sx(x)
        self.parts.append(
            f'<line stroke="{color}" stroke-width="1.2" x1="{xx:.1f}" y1="{self.sy(lo):.1f}" '
            f'x2="{xx:.1f}" y2="{self.sy(hi):.1f}"/>'
        )
        for y in (lo, hi):
            yy = self.sy(y)
            self.parts.append(
                f'<line stroke="{color}" stroke-width="1.2" x1="{xx - 4:.1f}" y1="{yy:.1f}" '
                f'x2="{xx + 4:.1f}" y2="{yy:.1f}"/>'
            )

    def point(self, x: float, y: float, color: str, tooltip: str, radius: float = 3.5) -> None:
        self.parts.append(
            f'<circle cx="{self.sx(x):.1f}" cy="{self.sy(y):.1f}" r="{radius:.1f}" '
            f'fill="{color}" stroke="#fff" stroke-width="0.8"><title>{escape(tooltip)}</title>'
            "</circle>"
        )

    def reference_line(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        self.parts.append(
            f'<line class="ref" x1="{self.sx(a[0]):.1f}" y1="{self.sy(a[1]):.1f}" '
            f'x2="{self.sx(b[0]):.1f}" y2="{self.sy(b[1]):.1f}"/>'
        )

    def add_legend(self, name: str, color: str, dashed: bool = False) -> None:
        self.legend.append((name, color, dashed))

    def svg(self, empty_message: str | None = None) -> Markup:
        """The finished plot; `empty_message` is written across an empty one."""
        parts = list(self.parts)
        x = self.W - self.RIGHT + 14
        for i, (name, color, dashed) in enumerate(self.legend):
            y = self.TOP + 10 + 18 * i
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            label = name if len(name) <= 18 else name[:17] + "\u2026"
            parts.append(
                f'<line stroke="{color}" stroke-width="2.5"{dash} x1="{x}" y1="{y}" '
                f'x2="{x + 22}" y2="{y}"/>'
                f'<text class="legend" x="{x + 28}" y="{y + 4}"><title>{escape(name)}</title>'
                f"{escape(label)}</text>"
            )
        if empty_message:
            parts.append(
                f'<text class="label" x="{(self.LEFT + self.W - self.RIGHT) / 2:.1f}" '
                f'y="{self.H / 2:.1f}" text-anchor="middle">{escape(empty_message)}</text>'
            )
        return Markup(
            f'<svg id="{self.plot_id}" class="plot" viewBox="0 0 {self.W} {self.H}" '
            f'width="{self.W}" height="{self.H}" role="img" aria-label="{escape(self.title)}">'
            f"<title>{escape(self.title)}</title>" + "".join(parts) + "</svg>"
        )


def _segments(points: Sequence[tuple[float, Any]]) -> list[list[tuple[float, Any]]]:
    """Split a series at missing values (suppressed or undefined rounds)."""
    out: list[list[tuple[float, Any]]] = [[]]
    for x, value in points:
        if value is None:
            if out[-1]:
                out.append([])
        else:
            out[-1].append((x, value))
    return [seg for seg in out if seg]


def _x_ticks(xs: Sequence[int]) -> list[float]:
    lo, hi = min(xs), max(xs)
    step = max(1, math.ceil((hi - lo + 1) / 12))
    return [float(x) for x in range(lo, hi + 1, step)]


def _x_range(xs: Sequence[int]) -> tuple[float, float]:
    lo, hi = min(xs), max(xs)
    return (lo - 0.5, hi + 0.5) if lo == hi else (lo - 0.2, hi + 0.2)


def auroc_plot(data: ReportData) -> Markup:
    """Per-population AUROC over rounds, with the 95% CI as a band and error bars."""
    rounds = [r for r in data.rounds if r.has_metrics]
    series: dict[_Series, list[tuple[float, tuple[float, float | None, float | None] | None]]]
    series = {}
    for rnd in rounds:
        for row in rnd.rows:
            if row.kind not in ("group", "overall"):
                continue
            value = None if row.suppressed else row.values.get("auroc")
            entry = None
            if value is not None:
                entry = (
                    float(value),
                    row.values.get("auroc_ci_low"),
                    row.values.get("auroc_ci_high"),
                )
            key = (row.kind == "overall", row.population)
            series.setdefault(key, []).append((rnd.x, entry))
    shown = {name: pts for name, pts in series.items() if any(v for _, v in pts)}
    values = [
        bound
        for pts in shown.values()
        for _, v in pts
        if v is not None
        for bound in v
        if bound is not None
    ]
    y_lo = min([0.5, *values])
    y_lo = math.floor(y_lo * 10) / 10
    xs = [r.x for r in rounds] or [1]
    plot = _Plot(
        "plot-auroc",
        "AUROC per population over rounds (95% interval: DeLong plus the DP noise)",
        "round",
        "AUROC",
        _x_range(xs),
        (y_lo, 1.0),
    )
    plot.axes(_x_ticks(xs), _nice_ticks(y_lo, 1.0))
    plot.reference_line((plot.x0, 0.5), (plot.x1, 0.5))
    colors = _colors(shown)
    for key in sorted(shown):
        (dashed, name), color = key, colors[key]
        for seg in _segments(shown[key]):
            with_ci = [(x, v[1], v[2]) for x, v in seg if v[1] is not None and v[2] is not None]
            if not dashed:
                plot.band(with_ci, color)
            plot.line([(x, v[0]) for x, v in seg], color, dashed)
            for x, (auc, lo, hi) in seg:
                if lo is not None and hi is not None:
                    plot.error_bar(x, lo, hi, color)
                ci = (
                    f" (95% CI {lo:.3f}\u2013{hi:.3f})" if lo is not None and hi is not None else ""
                )
                plot.point(x, auc, color, f"{name}, round {x:g}: AUROC {auc:.3f}{ci}")
        plot.add_legend(name, color, dashed)
    return plot.svg(None if shown else "no unsuppressed AUROC in the verified records")


def calibration_plot(rnd: RoundData | None) -> Markup:
    """Observed event rate against mean prediction, per probability bin, for one round."""
    title = "Calibration per population" + (f", round {rnd.x}" if rnd else "")
    plot = _Plot(
        "plot-calibration",
        title,
        "predicted risk (bin midpoint)",
        "observed event rate",
        (0.0, 1.0),
        (0.0, 1.0),
    )
    ticks = [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    plot.axes(ticks, ticks)
    plot.reference_line((0.0, 0.0), (1.0, 1.0))
    curves: dict[_Series, list[tuple[float, float, int]]] = {}
    if rnd is not None:
        curves = {(False, n): pts for n, pts in rnd.calibration.items() if pts}
        if rnd.overall_calibration:
            curves[(True, "overall")] = rnd.overall_calibration
    colors = _colors(curves)
    biggest = max((c for pts in curves.values() for _, _, c in pts), default=1) or 1
    for key in sorted(curves):
        pts = sorted(curves[key])
        (dashed, name), color = key, colors[key]
        plot.line([(p, o) for p, o, _ in pts], color, dashed)
        for pred, obs, count in pts:
            radius = 2.5 + 5.0 * math.sqrt(count / biggest)
            plot.point(
                pred,
                obs,
                color,
                f"{name}: predicted {pred:.3f}, observed {obs:.3f}, n={count}",
                radius,
            )
        plot.add_legend(name, color, dashed)
    return plot.svg(None if curves else "no calibration curve in the latest verified round")


def epsilon_plot(data: ReportData) -> Markup:
    """Cumulative privacy loss epsilon each site reported, over rounds."""
    series: dict[str, list[tuple[float, float | None]]] = {}
    xs = [r.x for r in data.rounds] or [1]
    for rnd in data.rounds:
        for site in rnd.privacy:
            series.setdefault(site, [])
        for site in series:
            spent = rnd.privacy.get(site)
            series[site].append((rnd.x, spent["epsilon"] if spent else None))
    values = [v for pts in series.values() for _, v in pts if v is not None]
    top = max(values, default=1.0) * 1.1 or 1.0
    deltas = sorted(
        {s["delta"] for r in data.rounds for s in r.privacy.values() if s["delta"] is not None}
    )
    at = f" at \u03b4 = {', '.join(f'{d:g}' for d in deltas)}" if deltas else ""
    plot = _Plot(
        "plot-epsilon",
        f"Privacy loss \u03b5 per site over rounds{at}",
        "round",
        "\u03b5 spent (cumulative)",
        _x_range(xs),
        (0.0, top),
    )
    plot.axes(_x_ticks(xs), _nice_ticks(0.0, top))
    colors = _colors((False, site) for site in series)
    for site in sorted(series):
        color = colors[(False, site)]
        for seg in _segments(series[site]):
            plot.line(seg, color)
            for x, eps in seg:
                plot.point(x, eps, color, f"{site}, round {x:g}: \u03b5 = {eps:.3f}")
        plot.add_legend(site, color)
    return plot.svg(None if values else "no privacy records in the verified records")


def effects_plot(top: Sequence[Any], populations: Sequence[str]) -> Markup:
    """Swap effect per population of the most important variants (an `ExplanationView`'s
    `top` rows), one marker per population at each variant's position in that list."""
    values = [v for row in top for v in row.by_population.values() if v is not None]
    lo, hi = min([0.0, *values]), max([0.0, *values])
    pad = 0.08 * (hi - lo or 1.0)
    xs = list(range(1, len(top) + 1)) or [1]
    plot = _Plot(
        "plot-effects",
        "Logit change per added alt allele, per reference population, of the top variants",
        "variant (by importance; see the table)",
        "logit change per alt allele",
        _x_range(xs),
        (lo - pad, hi + pad),
    )
    plot.axes(_x_ticks(xs), _nice_ticks(lo - pad, hi + pad))
    plot.reference_line((plot.x0, 0.0), (plot.x1, 0.0))
    colors = _colors((False, p) for p in populations)
    for pop in sorted(populations):
        color = colors[(False, pop)]
        for x, row in enumerate(top, start=1):
            value = row.by_population.get(pop)
            if value is not None:
                plot.point(x, value, color, f"{row.variant}, {pop}: {value:+.3f}", 4.0)
        plot.add_legend(pop, color)
    return plot.svg(None if values else "no variant effect in the explanation")
