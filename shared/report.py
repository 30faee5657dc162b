"""`genofed audit report`: a self-contained HTML page (plus CSV / JSON) for a hospital's auditor.

The report is built only from ledger records that verified against the coordinator's public key,
read and verified in one pass over the file's bytes so nothing can change in between. A ledger
that fails verification still gets a report: it shows the verified prefix (the records before
the first bad one) under a failure banner naming that record, and nothing after it.

The page needs no network to be viewed: no scripts, no external fonts or stylesheets, plots are
inline SVG written here, and a Content-Security-Policy forbids fetching anything. Everything
taken from the ledger (site and group names, reasons, times, hashes) is HTML-escaped, since the
ledger carries strings chosen by other institutions.

Small-cell suppression is kept everywhere: a group the coordinator suppressed
(``{"suppressed": true}``) shows as "suppressed (< k)" with no numbers in HTML, CSV and JSON,
and is left out of the plots; so is any entry flagged suppressed that carries numbers anyway.

API::

    data = build_report(Path("ledger.jsonl"), Path("ledger.pub"))
    html_text = render_html(data)
    write_csv(data, Path("report.csv"))
    write_json(data, Path("report.json"))
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from shared import fsio
from shared.ledger import (
    GENESIS_HASH,
    load_public_key,
    verify_with_records,
)

REPORT_FORMAT = "genofed.audit_report"
REPORT_VERSION = 1

# Columns of a metrics row, in table / CSV order.
METRIC_COLUMNS = (
    "n",
    "cases",
    "auroc",
    "auroc_ci_low",
    "auroc_ci_high",
    "auprc",
    "brier",
    "calibration_slope",
    "calibration_intercept",
    "ece",
    "sensitivity",
    "specificity",
    "ppv",
)
CSV_COLUMNS = ("seq", "round", "time", "population", "kind", "suppressed", *METRIC_COLUMNS)
# Metrics the coordinator summarises as max - min / min / max over shown groups.
_DISPARITY = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity", "ppv")
_FLOAT_METRICS = (
    "auroc",
    "auprc",
    "brier",
    "calibration_slope",
    "calibration_intercept",
    "ece",
    "sensitivity",
    "specificity",
    "ppv",
)
KINDS = ("group", "overall", "difference", "ratio", "vs_reference")


# --------------------------------------------------------------------------------------------
# Data model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricRow:
    """One population (or summary) row of one round.

    ``kind``: ``group`` (an ancestry group), ``overall`` (pooled shown groups), ``difference``
    (max - min over shown groups), ``ratio`` (min / max), ``vs_reference`` (group minus the
    reference group). ``values`` is empty for a suppressed row; otherwise it has every
    `METRIC_COLUMNS` key, ``None`` where the metric is undefined or not applicable.
    """

    population: str
    kind: str
    suppressed: bool
    values: dict[str, float | int | None] = field(default_factory=dict)


@dataclass
class RoundData:
    """What one verified ledger record says about its round, validated for display."""

    seq: int
    round: int | None
    time: str
    sites: list[str]
    declined: dict[str, str]
    rejected: dict[str, str]
    weights_sha256: str
    config_sha256: str
    panel_sha256: str
    privacy: dict[str, dict[str, float | None]]
    has_metrics: bool
    k: int | None
    threshold: float | None
    reference: str | None
    rows: list[MetricRow]
    calibration: dict[str, list[tuple[float, float, int]]]  # shown groups only
    overall_calibration: list[tuple[float, float, int]]

    @property
    def x(self) -> int:
        """Round number for plotting (record position + 1 if the body lacks one)."""
        return self.round if self.round is not None else self.seq + 1


@dataclass
class ReportData:
    """Everything the HTML, CSV and JSON outputs show. Only verified records are in ``rounds``."""

    ledger: str
    key_id: str | None
    ok: bool
    records: int
    first_bad: int | None
    reason: str | None
    last_hash: str
    generated: str
    rounds: list[RoundData]

    def latest(self) -> RoundData | None:
        """The last verified round that carries metrics."""
        for rnd in reversed(self.rounds):
            if rnd.has_metrics:
                return rnd
        return None


# --------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------


def build_report(ledger: Path, public_key: Path) -> ReportData:
    """Verify `ledger` against the PEM key at `public_key` and collect the verified prefix.

    Missing or unreadable files raise ``InputError`` (no report: that is a wrong path, not
    evidence). A ledger that fails verification is not an exception: ``ok`` is False, and
    ``first_bad`` / ``reason`` name the first bad record.
    """
    key = load_public_key(Path(public_key))
    # One read, verified in memory: `read_verified` would raise on a bad ledger, and a report
    # must still show the verified prefix then.
    result, bodies = verify_with_records(Path(ledger), key)
    return ReportData(
        ledger=str(ledger),
        key_id=result.key_id,
        ok=result.ok,
        records=result.records,
        first_bad=result.first_bad,
        reason=result.reason,
        last_hash=result.last_hash or GENESIS_HASH,
        generated=datetime.now(UTC).isoformat(timespec="seconds"),
        rounds=[_round_from_body(seq, body) for seq, body in enumerate(bodies)
                if body.get("kind", "round") == "round"],
    )


def _num(value: Any) -> float | None:
    """A finite float, or None for anything else (None, NaN, strings, bools)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _str_map(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): _text(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}


def _privacy(value: Any) -> dict[str, dict[str, float | None]]:
    if not isinstance(value, dict):
        return {}
    out = {}
    for site, spent in sorted(value.items(), key=lambda kv: str(kv[0])):
        spent = spent if isinstance(spent, dict) else {}
        out[str(site)] = {"epsilon": _num(spent.get("epsilon")), "delta": _num(spent.get("delta"))}
    return out


def _is_suppressed(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj.get("suppressed"))


def _group_values(obj: Any) -> dict[str, float | int | None]:
    obj = obj if isinstance(obj, dict) else {}
    ci = obj.get("auroc_ci")
    lo, hi = (ci[0], ci[1]) if isinstance(ci, list) and len(ci) == 2 else (None, None)
    values: dict[str, float | int | None] = {name: None for name in METRIC_COLUMNS}
    values.update(
        n=_int(obj.get("n")),
        cases=_int(obj.get("cases")),
        auroc_ci_low=_num(lo),
        auroc_ci_high=_num(hi),
    )
    for name in _FLOAT_METRICS:
        values[name] = _num(obj.get(name))
    return values


def _summary_values(obj: Any) -> dict[str, float | int | None]:
    obj = obj if isinstance(obj, dict) else {}
    values: dict[str, float | int | None] = {name: None for name in METRIC_COLUMNS}
    for name in _DISPARITY:
        values[name] = _num(obj.get(name))
    return values


def _row(population: str, kind: str, obj: Any) -> MetricRow:
    if _is_suppressed(obj):
        return MetricRow(population, kind, True)
    values = _group_values(obj) if kind in ("group", "overall") else _summary_values(obj)
    return MetricRow(population, kind, False, values)


def _curve(obj: Any) -> list[tuple[float, float, int]]:
    points = []
    raw = obj.get("calibration_curve") if isinstance(obj, dict) else None
    for item in raw if isinstance(raw, list) else []:
        if not (isinstance(item, list) and len(item) == 3):
            continue
        pred, obs, count = _num(item[0]), _num(item[1]), _int(item[2])
        if pred is not None and obs is not None and count is not None:
            points.append((pred, obs, count))
    return points


def _round_from_body(seq: int, body: dict[str, Any]) -> RoundData:
    metrics = body.get("metrics")
    has_metrics = isinstance(metrics, dict) and isinstance(metrics.get("by_group"), dict)
    rows: list[MetricRow] = []
    calibration: dict[str, list[tuple[float, float, int]]] = {}
    overall_calibration: list[tuple[float, float, int]] = []
    k = threshold = reference = None
    if has_metrics:
        assert isinstance(metrics, dict)
        k, threshold = _int(metrics.get("k")), _num(metrics.get("threshold"))
        ref = metrics.get("reference")
        reference = ref if isinstance(ref, str) else None
        by_group = metrics["by_group"]
        for name in sorted(by_group, key=str):
            rows.append(_row(str(name), "group", by_group[name]))
            if not _is_suppressed(by_group[name]):
                calibration[str(name)] = _curve(by_group[name])
        if "overall" in metrics:
            rows.append(_row("overall", "overall", metrics["overall"]))
            if not _is_suppressed(metrics["overall"]):
                overall_calibration = _curve(metrics["overall"])
        for kind in ("difference", "ratio"):
            if isinstance(metrics.get(kind), dict) and metrics[kind]:
                rows.append(_row(kind, kind, metrics[kind]))
        vs_ref = metrics.get("vs_reference")
        if isinstance(vs_ref, dict):
            for name in sorted(vs_ref, key=str):
                rows.append(_row(str(name), "vs_reference", vs_ref[name]))
    return RoundData(
        seq=seq,
        round=_int(body.get("round")),
        time=_text(body.get("time")),
        sites=[_text(s) for s in body.get("sites", [])]
        if isinstance(body.get("sites"), list)
        else [],
        declined=_str_map(body.get("declined")),
        rejected=_str_map(body.get("rejected")),
        weights_sha256=_text(body.get("weights_sha256")),
        config_sha256=_text(body.get("config_sha256")),
        panel_sha256=_text(body.get("panel_sha256")),
        privacy=_privacy(body.get("privacy")),
        has_metrics=has_metrics,
        k=k,
        threshold=threshold,
        reference=reference,
        rows=rows,
        calibration=calibration,
        overall_calibration=overall_calibration,
    )


# --------------------------------------------------------------------------------------------
# CSV and JSON
# --------------------------------------------------------------------------------------------


def _csv_text(value: str) -> str:
    """Defuse spreadsheet formulas: ledger strings come from other institutions."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _csv_number(value: float | int | None) -> str:
    return "" if value is None else repr(value)


def csv_rows(data: ReportData) -> list[list[str]]:
    """Header plus one row per round x population (summary rows included)."""
    rows = [list(CSV_COLUMNS)]
    for rnd in data.rounds:
        for row in rnd.rows:
            cells = [
                str(rnd.seq),
                "" if rnd.round is None else str(rnd.round),
                _csv_text(rnd.time),
                _csv_text(row.population),
                row.kind,
                "true" if row.suppressed else "false",
            ]
            cells += [
                "" if row.suppressed else _csv_number(row.values.get(c)) for c in METRIC_COLUMNS
            ]
            rows.append(cells)
    return rows


def write_csv(data: ReportData, path: Path) -> None:
    """Atomically write per round x population metrics; suppressed rows have empty metrics."""
    with fsio.atomic_write(Path(path), "w") as fh:
        csv.writer(fh, lineterminator="\n").writerows(csv_rows(data))


def report_dict(data: ReportData) -> dict[str, Any]:
    """The report as JSON-ready data: verification, then each verified round."""
    rounds = []
    for rnd in data.rounds:
        metrics = []
        for row in rnd.rows:
            item: dict[str, Any] = {
                "population": row.population,
                "kind": row.kind,
                "suppressed": row.suppressed,
            }
            if not row.suppressed:
                item.update(row.values)
            metrics.append(item)
        rounds.append(
            {
                "seq": rnd.seq,
                "round": rnd.round,
                "time": rnd.time,
                "sites": rnd.sites,
                "declined": rnd.declined,
                "rejected": rnd.rejected,
                "weights_sha256": rnd.weights_sha256,
                "config_sha256": rnd.config_sha256,
                "panel_sha256": rnd.panel_sha256,
                "privacy": rnd.privacy,
                "k": rnd.k,
                "threshold": rnd.threshold,
                "reference": rnd.reference,
                "metrics": metrics,
                "calibration_curves": {
                    "by_group": {
                        name: [list(p) for p in pts] for name, pts in rnd.calibration.items()
                    },
                    "overall": [list(p) for p in rnd.overall_calibration],
                },
            }
        )
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "ledger": data.ledger,
        "generated": data.generated,
        "verification": {
            "ok": data.ok,
            "records": data.records,
            "first_bad": data.first_bad,
            "reason": data.reason,
            "key_id": data.key_id,
            "last_hash": data.last_hash,
        },
        "rounds": rounds,
    }


def write_json(data: ReportData, path: Path) -> None:
    """Atomically write `report_dict` as indented JSON."""
    fsio.write_json(Path(path), report_dict(data))


def write_html(data: ReportData, path: Path) -> None:
    """Atomically write `render_html`."""
    with fsio.atomic_write(Path(path), "w") as fh:
        fh.write(render_html(data))


# --------------------------------------------------------------------------------------------
# SVG plots
# --------------------------------------------------------------------------------------------

# Okabe-Ito (colour-blind safe), without the yellow that vanishes on white; black is "overall".
_PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#8C564B")
_OVERALL_COLOR = "#222222"


def _e(value: Any) -> str:
    return html.escape(_text(value), quote=True)


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
            f'text-anchor="middle">{_e(self.x_label)}</text>'
        )
        p.append(
            f'<text class="label" transform="translate(16 {(top + bottom) / 2:.1f}) rotate(-90)" '
            f'text-anchor="middle">{_e(self.y_label)}</text>'
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
            f'fill="{color}" stroke="#fff" stroke-width="0.8"><title>{_e(tooltip)}</title>'
            "</circle>"
        )

    def reference_line(self, a: tuple[float, float], b: tuple[float, float]) -> None:
        self.parts.append(
            f'<line class="ref" x1="{self.sx(a[0]):.1f}" y1="{self.sy(a[1]):.1f}" '
            f'x2="{self.sx(b[0]):.1f}" y2="{self.sy(b[1]):.1f}"/>'
        )

    def add_legend(self, name: str, color: str, dashed: bool = False) -> None:
        self.legend.append((name, color, dashed))

    def svg(self, empty_message: str | None = None) -> str:
        parts = list(self.parts)
        x = self.W - self.RIGHT + 14
        for i, (name, color, dashed) in enumerate(self.legend):
            y = self.TOP + 10 + 18 * i
            dash = ' stroke-dasharray="6 4"' if dashed else ""
            label = name if len(name) <= 18 else name[:17] + "\u2026"
            parts.append(
                f'<line stroke="{color}" stroke-width="2.5"{dash} x1="{x}" y1="{y}" '
                f'x2="{x + 22}" y2="{y}"/>'
                f'<text class="legend" x="{x + 28}" y="{y + 4}"><title>{_e(name)}</title>'
                f"{_e(label)}</text>"
            )
        if empty_message:
            parts.append(
                f'<text class="label" x="{(self.LEFT + self.W - self.RIGHT) / 2:.1f}" '
                f'y="{self.H / 2:.1f}" text-anchor="middle">{_e(empty_message)}</text>'
            )
        return (
            f'<svg id="{self.plot_id}" class="plot" viewBox="0 0 {self.W} {self.H}" '
            f'width="{self.W}" height="{self.H}" role="img" aria-label="{_e(self.title)}">'
            f"<title>{_e(self.title)}</title>" + "".join(parts) + "</svg>"
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


def auroc_plot(data: ReportData) -> str:
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


def calibration_plot(rnd: RoundData | None) -> str:
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


def epsilon_plot(data: ReportData) -> str:
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


# --------------------------------------------------------------------------------------------
# HTML
# --------------------------------------------------------------------------------------------

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
 color:#1b1b1b;margin:24px auto;max-width:1100px;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;
 border-bottom:1px solid #ddd;padding-bottom:4px}
.meta{color:#555;margin:0 0 12px;word-break:break-all}
.banner{border-radius:6px;padding:12px 16px;margin:12px 0;font-size:15px}
.banner.ok{background:#e7f5ea;border:2px solid #2e7d32;color:#1b5e20}
.banner.failed{background:#fdecea;border:3px solid #c62828;color:#8e0000;font-size:17px}
.banner strong{font-size:1.1em}.banner code{word-break:break-all}
table{border-collapse:collapse;margin:8px 0;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d0d0;padding:4px 8px;text-align:right;vertical-align:top}
th{background:#f3f3f3}th[scope=row],th.text,td.text{text-align:left}
#metrics td{white-space:nowrap}#rounds th{text-align:left}
#rounds td.nowrap{white-space:nowrap}h3{font-size:15px;margin:18px 0 4px}
tr.overall{font-weight:600;background:#fafafa}
tr.summary td,tr.summary th{background:#f7f9fc;color:#333}
td.suppressed{text-align:left;color:#777;font-style:italic}
td.na{color:#999}ul.reasons{margin:0;padding-left:16px;text-align:left}
code{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12px}
figure{margin:12px 0 20px}figcaption{color:#555;font-size:13px;max-width:760px}
svg.plot{max-width:100%;height:auto;background:#fff}
svg .grid{stroke:#e6e6e6;stroke-width:1}svg .axis{stroke:#555}
svg .frame{fill:none;stroke:#999}svg .ref{stroke:#999;stroke-dasharray:3 3}
svg text{font-family:system-ui,sans-serif;fill:#333}svg .tick{font-size:11px}
svg .label{font-size:12px}svg .legend{font-size:12px}
.note{color:#555;font-size:13px;max-width:900px}
"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def _fmt(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return '<td class="na" title="undefined">\u2014</td>'
    if isinstance(value, int):
        return f"<td>{value}</td>"
    return f"<td>{value:.{digits}f}</td>"


def _auroc_cell(values: dict[str, float | int | None]) -> str:
    auc, lo, hi = values.get("auroc"), values.get("auroc_ci_low"), values.get("auroc_ci_high")
    if auc is None:
        return '<td class="na" title="undefined">\u2014</td>'
    ci = f" ({lo:.3f}\u2013{hi:.3f})" if lo is not None and hi is not None else ""
    return f"<td>{auc:.3f}{ci}</td>"


def _row_label(row: MetricRow, reference: str | None) -> str:
    if row.kind == "difference":
        return "Difference (max \u2212 min)"
    if row.kind == "ratio":
        return "Ratio (min / max)"
    if row.kind == "vs_reference":
        return f"{row.population} \u2212 {reference or 'reference'}"
    if row.kind == "overall":
        return "Overall (shown groups)"
    return row.population


def _metrics_table(rnd: RoundData) -> str:
    head = (
        '<tr><th scope="col" class="text">Population</th><th>n</th><th>cases</th>'
        "<th>AUROC (95% CI)</th><th>AUPRC</th><th>Brier</th><th>Calibration slope</th>"
        "<th>Calibration intercept</th><th>ECE</th><th>Sensitivity</th><th>Specificity</th>"
        "<th>PPV</th></tr>"
    )
    body = []
    span = 11  # n, cases, AUROC (CI), AUPRC, Brier, slope, intercept, ECE, sens, spec, PPV
    for row in rnd.rows:
        classes = {"group": "group", "overall": "overall"}.get(row.kind, "summary")
        attrs = (
            f'class="{classes}" data-kind="{row.kind}" data-population="{_e(row.population)}"'
            f' data-suppressed="{"true" if row.suppressed else "false"}"'
        )
        label = f'<th scope="row">{_e(_row_label(row, rnd.reference))}</th>'
        if row.suppressed:
            k = f" (&lt; {rnd.k})" if rnd.k is not None else ""
            body.append(
                f'<tr {attrs}>{label}<td class="suppressed" colspan="{span}">'
                f"suppressed{k}</td></tr>"
            )
            continue
        v = row.values
        if row.kind in ("group", "overall"):
            cells = [_fmt(v["n"]), _fmt(v["cases"]), _auroc_cell(v)]
            cells += [_fmt(v[name]) for name in _FLOAT_METRICS[1:]]
        else:
            blank = '<td class="na"></td>'
            cells = [
                blank,
                blank,
                _fmt(v["auroc"]),
                _fmt(v["auprc"]),
                _fmt(v["brier"]),
                blank,
                blank,
                _fmt(v["ece"]),
                _fmt(v["sensitivity"]),
                _fmt(v["specificity"]),
                _fmt(v["ppv"]),
            ]
        body.append(f"<tr {attrs}>{label}{''.join(cells)}</tr>")
    return f'<table id="metrics"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _reasons(reasons: dict[str, str]) -> str:
    if not reasons:
        return '<td class="text na">\u2014</td>'
    items = "".join(f"<li><b>{_e(site)}</b>: {_e(why)}</li>" for site, why in reasons.items())
    return f'<td class="text"><ul class="reasons">{items}</ul></td>'


def _rounds_table(data: ReportData) -> str:
    head = (
        "<tr><th>Round</th><th>Record</th><th>Sites aggregated</th><th>Declined</th>"
        "<th>Rejected</th><th>\u03b5 per site</th><th>Weights sha256</th><th>Time (UTC)</th></tr>"
    )
    body = []
    for rnd in data.rounds:
        sites = ", ".join(_e(s) for s in rnd.sites) or "\u2014"
        eps = (
            "<br>".join(
                f"{_e(site)}: {spent['epsilon']:.3f}"
                if spent["epsilon"] is not None
                else f"{_e(site)}: \u2014"
                for site, spent in rnd.privacy.items()
            )
            or "\u2014"
        )
        digest = rnd.weights_sha256
        short = _e(digest[:12] + ("\u2026" if len(digest) > 12 else "")) or "\u2014"
        body.append(
            f'<tr data-seq="{rnd.seq}"><td>{_e(rnd.round if rnd.round is not None else "?")}</td>'
            f'<td>{rnd.seq}</td><td class="text">{sites}</td>{_reasons(rnd.declined)}'
            f'{_reasons(rnd.rejected)}<td class="text nowrap">{eps}</td>'
            f'<td class="text nowrap"><code title="{_e(digest)}">{short}</code></td>'
            f'<td class="text nowrap">{_e(rnd.time)}</td></tr>'
        )
    if not body:
        body.append('<tr><td colspan="8" class="text na">no verified records</td></tr>')
    return f'<table id="rounds"><thead>{head}</thead><tbody>{"".join(body)}</tbody></table>'


def _banner(data: ReportData) -> str:
    kid = _e(data.key_id or "?")
    if data.ok:
        return (
            '<div id="verification" class="banner ok" data-status="ok">'
            f"<strong>Ledger verified: OK</strong> \u2014 {data.records} records, every hash link "
            f"and Ed25519 signature checked against key <code>{kid}</code>.<br>"
            f"Last hash: <code>{_e(data.last_hash)}</code> (compare it with a value published "
            "outside the file: a hash chain alone cannot show records cut off its end).</div>"
        )
    index = data.first_bad if data.first_bad is not None else data.records
    shown = (
        f"Only the {data.records} verified record{'s' if data.records != 1 else ''} before it "
        "are shown below"
        if data.records
        else "No record verified, so no round is shown"
    )
    return (
        '<div id="verification" class="banner failed" role="alert" data-status="failed" '
        f'data-first-bad="{index}">'
        f"<strong>\u26a0 LEDGER VERIFICATION FAILED: record {index} (line {index + 1}): "
        f"{_e(data.reason)}</strong><br>{shown}; record {index} and everything after it are "
        f"untrusted and left out. Key <code>{kid}</code>. "
        f"Hash of the last good record: <code>{_e(data.last_hash)}</code>.</div>"
    )


def _distinct(values: Iterable[str]) -> str:
    seen = sorted({v for v in values if v})
    if not seen:
        return "\u2014"
    note = " (same in every round)" if len(seen) == 1 else f" ({len(seen)} different values!)"
    return ", ".join(f"<code>{_e(v)}</code>" for v in seen) + note


def render_html(data: ReportData) -> str:
    """The whole report as one self-contained HTML document (inline CSS and SVG, no scripts)."""
    latest = data.latest()
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        "<title>genofed audit report</title>",
        f"<style>{_CSS}</style></head><body>",
        "<header><h1>genofed audit report</h1>",
        f'<p class="meta">Ledger <code>{_e(data.ledger)}</code> \u00b7 report generated '
        f"{_e(data.generated)}</p></header>",
        _banner(data),
        '<section id="summary"><h2>Summary</h2><p class="note">',
        f"Verified rounds shown: {len(data.rounds)}. "
        f"Run configuration sha256: {_distinct(r.config_sha256 for r in data.rounds)}. "
        f"Variant panel sha256: {_distinct(r.panel_sha256 for r in data.rounds)}.</p></section>",
    ]
    if latest is not None:
        k = f"fewer than {latest.k}" if latest.k is not None else "too few"
        thr = f"{latest.threshold:g}" if latest.threshold is not None else "?"
        out += [
            f'<section id="latest"><h2>Per-population metrics \u2014 round {_e(latest.x)} '
            "(latest verified)</h2>",
            _metrics_table(latest),
            '<p class="note">Pooled over all sites from the sum of their score histograms '
            "(never an average of per-site values). Each site adds Gaussian noise to every bin "
            "of what it releases (differential privacy for its held-out patients): n and cases "
            "are noisy counts, every metric is computed from the noisy histograms, and the 95% "
            "AUROC interval adds the noise's variance to DeLong's. Sensitivity, specificity "
            f"and PPV call p \u2265 {thr} positive (nearest bin edge). Groups with {k} (noisy) "
            "people, cases or controls are suppressed and left out of the overall row, the "
            "differences and the plots. "
            "\u2014 marks a metric that is undefined for that group (or, in a difference/ratio "
            "row, for at least one shown group).</p></section>",
        ]
    else:
        out.append(
            '<section id="latest"><h2>Per-population metrics</h2><p class="note">'
            "No verified round carries metrics.</p></section>"
        )
    out += [
        '<section id="plots"><h2>Plots</h2>',
        "<h3>AUROC per population over rounds</h3>",
        f"<figure>{auroc_plot(data)}<figcaption>AUROC of the global model per population after "
        "each round; shaded band and bars: 95% interval (DeLong plus the DP noise); dashed: "
        "overall (shown groups)."
        " Gaps: suppressed or undefined.</figcaption></figure>",
        f"<h3>Calibration per population, round {_e(latest.x if latest else '?')}</h3>",
        f"<figure>{calibration_plot(latest)}<figcaption>Calibration of the latest verified "
        "round: observed event rate against each score bin's midpoint risk (marker "
        "area grows with the bin's people; bins under k people are not published). Dotted: "
        "perfect calibration.</figcaption></figure>",
        "<h3>Privacy loss \u03b5 per site over rounds</h3>",
        f"<figure>{epsilon_plot(data)}<figcaption>Cumulative differential-privacy loss \u03b5 "
        "each site reported after each round.</figcaption></figure></section>",
        '<section id="round-log"><h2>Rounds</h2>',
        _rounds_table(data),
        "</section></body></html>",
    ]
    return "\n".join(out) + "\n"
