"""`genofed audit report`'s data: what the verified ledger says, ready for every output.

The report is built only from ledger records that verified against the coordinator's public key,
read and verified in one pass over the file's bytes so nothing can change in between. A ledger
that fails verification still gets a report: it shows the verified prefix (the records before
the first bad one) under a failure banner naming that record, and nothing after it.

Each record body is validated here, once, into plain typed values (`RoundData`, `MetricRow`):
the ledger carries strings and numbers chosen by other institutions, and the outputs (the HTML
page of `shared.audit.page`, its plots in `shared.audit.plots`, the CSV and JSON written here)
then never see a malformed value. Ledger strings stay raw in this model; each output escapes
them for its own format (HTML by the page template's autoescape, CSV against spreadsheet
formulas here).

Small-cell suppression is kept everywhere: a group the coordinator suppressed
(``{"suppressed": true}``) becomes a `MetricRow` without numbers, so it shows as
"suppressed (< k)" with no numbers in HTML, CSV and JSON, and is left out of the plots; so is
any entry flagged suppressed that carries numbers anyway.

API::

    data = build_report(Path("ledger.jsonl"), Path("ledger.pub"))
    write_csv(data, Path("report.csv"))
    write_json(data, Path("report.json"))
    shared.audit.page.write_html(data, Path("report.html"))
"""

from __future__ import annotations

import csv
import math
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

# The metrics of a group, in table order.
_FLOAT_METRICS = ("auroc", "auprc", "brier", "calibration_slope", "calibration_intercept", "ece",
                  "sensitivity", "specificity", "ppv")
# Columns of a metrics row, in table / CSV order (the AUROC's interval beside it).
METRIC_COLUMNS = ("n", "cases", "auroc", "auroc_ci_low", "auroc_ci_high", *_FLOAT_METRICS[1:])
CSV_COLUMNS = ("seq", "round", "time", "population", "kind", "suppressed", *METRIC_COLUMNS)
# Metrics the coordinator summarises as max - min / min / max over shown groups.
_DISPARITY = ("auroc", "auprc", "brier", "ece", "sensitivity", "specificity", "ppv")
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
