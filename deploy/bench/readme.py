"""The README's generated sections and the benchmark report (never typed by hand).

    python -m deploy.bench.readme deploy/bench/bench.json README.md           # rewrite them
    python -m deploy.bench.readme deploy/bench/bench.json README.md --check   # exit 1 if stale

`make bench` copies its JSON to `deploy/bench/bench.json` (the committed record of the numbers) and
runs this: the README gets the goals table between the `bench:start` and `bench:end` markers
and the run config's key table (from `RunSettings`) between `config:start` and `config:end`;
every table of the benchmark goes to `deploy/bench/BENCH.md`. `targets(doc)` judges the project's
goals from the JSON; a missed goal shows by how much and what would close it, and points to the
lab notebook (`deploy/bench/NOTEBOOK.md`) for what was tried.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from deploy.bench import gain_curve
from deploy.bench.goals import (
    BENCH_BUDGET_S,
    COORDINATOR_OVERHEAD,
    DP_STEP_RATIO,
    EVALUATION_COVERAGE,
    LOAD_MEMORY_CONSTANT_BYTES,
    LOAD_MEMORY_FACTOR,
    LOCAL_ATTENTION_GROWTH,
)
from deploy.simulate import POPULATIONS as SIMULATED
from shared.fsio import atomic_write

POPULATIONS = tuple(sorted(SIMULATED))  # table columns, in name order
START = "<!-- bench:start -->"
END = "<!-- bench:end -->"
CONFIG_START = "<!-- config:start -->"
CONFIG_END = "<!-- config:end -->"
REPORT = "BENCH.md"  # beside bench.json

METHODS = {
    "federated_dp": "federated transformer, DP (ε ≤ 8, δ = 1e-5)",
    "centralized": "same transformer, pooled data, no DP (learning rate decayed)",
    "site_alone": "best single site alone, DP",
    "site_alone_plain": "best single site alone, no DP (its own L2 logistic or transformer)",
    "meta_gwas": "meta-analysed GWAS, C+T score",
    "meta_gwas_multi": "meta-analysed GWAS per ancestry, C+T scores combined",
    "linear_prs": "linear polygenic score (L2 logistic), pooled, no DP",
    "oracle": "oracle: true genetic liability",
}

# What would close a missed goal: one short sentence per goal, written by people, shown in the
# goals table only while the goal is missed. What was tried and what it measured lives in the lab
# notebook (NOTEBOOK below), never here: the rendered section links to it.
NOTEBOOK = "deploy/bench/NOTEBOOK.md"
REMEDIES = {
    "federated_vs_centralized": (
        "more people per site, or a larger ε: DP noise on about 1,500 people per site is the "
        "gap, and no change to training tried so far lifts a population by more than one DP "
        "training's spread (see the lab notebook)"
    ),
    "federated_vs_best_site": (
        "more sites holding the population, or a larger ε: the best site alone trains without "
        "noise on its own people (see the lab notebook)"
    ),
    "federated_vs_meta_gwas": (
        "more people per site or a larger ε: the C+T score pays no DP noise (see the lab "
        "notebook)"
    ),
    "federated_vs_pooled": (
        "more people per site, or a larger ε: DP noise on about 1,500 people per site is the "
        "gap (see the lab notebook)"
    ),
    "calibrated_risk": (
        "larger evaluation splits per ancestry: from DP-noised histograms of a few hundred "
        "people the fit cannot always tell a slope of 0.6 from 1, and the ±0.1 intercept "
        "bound is narrower than 500 held-out people measure (about ±0.25; see the lab "
        "notebook)"
    ),
    "worst_vs_best_population": (
        "ancestry reweighting (`balance = \"reweight\"` in site.toml) or more sites holding "
        "that group: the group with the fewest training people at the sites gets the fewest DP "
        "steps, and one DP training's spread is as large as this margin"
    ),
    "dp_step_time": "a GPU, where the per-sample gradients' matmuls are cheap",
    "dp_step_memory": "smaller batches: per-sample gradients of the largest tables dominate",
    "panel_scale_local_growth": (
        "a step whose activations stay in the CPU's cache (fewer people per step on large "
        "panels: untested) or a GPU: local attention's work grows with the panel, but on "
        "large panels the batch's activations outgrow the cache and the memory-bound steps "
        "grow faster (see the lab notebook)"
    ),
    "panel_scale_dp_memory": (
        "smaller batches on large panels: the per-variant tables' per-sample gradients grow "
        "with the panel"
    ),
    "coordinator_overhead_10_sites": "more local work per round, or sites on their own machines",
    "sites_100_run": "fewer CPUs per simulated site, or fewer people per site",
    "bench_under_60_min": (
        "fewer trainings in the utility section: its federated and centralized runs take most "
        "of the time"
    ),
    "evaluation_interval_coverage": (
        "bins where the model's scores are: centre them on the global model's median logit "
        "over people drawn from the panel's public allele frequencies (computed alike at every "
        "site), not on a fixed logit; the binning alone costs the interval its coverage here"
    ),
}


# SecAgg+ costs three more message stages per round than plain FedAvg (setup, key shares,
# unmasking), so a ratio under 1 can only be the single runs' noise; say so rather than let it
# read as a free lunch.
SECAGG_UNDER_ONE = (
    " One run of each: a ratio under 1 is run-to-run noise (SecAgg+ adds three message stages "
    "per round), not a saving."
)


def _get(doc: dict[str, Any], *path: str) -> Any:
    for key in path:
        if not isinstance(doc, dict) or key not in doc:
            return None
        doc = doc[key]
    return doc


def _num(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _goal(name: str, rule: str, measured: str, margin: float | None, met: bool | None,
          interval: tuple[float, float] | None = None) -> dict:
    return {"name": name, "rule": rule, "measured": measured,
            "margin": margin, "met": bool(met) if met is not None else False,
            "interval": interval,
            "remedy": None if met or name not in REMEDIES else REMEDIES[name]}


def _pair(value: Any) -> tuple[float, float] | None:
    """A JSON [lo, hi] as numbers, or None where it is missing or not finite."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    lo, hi = _num(value[0]), _num(value[1])
    return None if lo is None or hi is None else (lo, hi)


def _margin_interval(row: dict[str, Any], before: str, after: str = "") -> str:
    """'{before}lo to hi{after}' from a population's bootstrap interval of its margin, or
    nothing."""
    pair = _pair(row.get("margin_interval"))
    return "" if pair is None else f"{before}{pair[0]:+.3f} to {pair[1]:+.3f}{after}"


def _fmt(value: Any, digits: int = 3) -> str:
    v = _num(value)
    return "n/a" if v is None else f"{v:.{digits}f}"


UTILITY_GOALS = ("federated_vs_best_site", "federated_vs_meta_gwas", "federated_vs_pooled",
                 "federated_vs_centralized", "worst_vs_best_population", "calibrated_risk")


def _rival(row: dict[str, Any]) -> Any:
    """The AUROC a federated row is compared with (its one `*_auroc` key besides its own)."""
    return next((v for k, v in row.items() if k.endswith("_auroc") and k != "federated_auroc"),
                None)


def _calibration_text(cal: dict[str, Any]) -> str:
    """Per population: recalibrated slope and calibration-in-the-large, the worst run's."""
    runs = cal.get("federated_dp_recalibrated") or []
    parts = []
    for pop in POPULATIONS:
        rows = [r.get(pop) or {} for r in runs]
        slopes = [v for r in rows if (v := _num(r.get("slope"))) is not None]
        larges = [v for r in rows if (v := _num(r.get("intercept"))) is not None]
        if slopes and larges:
            parts.append(f"{pop} slope {min(slopes, key=lambda v: -abs(v - 1)):.2f}, "
                         f"intercept {max(larges, key=abs):+.2f}")
    return "; ".join(parts) or "not measured"


def targets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Every goal of the project judged from the JSON: margin >= 0 means met."""
    goals = []
    util = _get(doc, "utility", "targets") or {}
    for name in UTILITY_GOALS:
        if name not in util:
            continue  # a goal the committed numbers predate: not judged until measured
        t = util[name]
        by_pop = t.get("by_population", {})
        if name == "worst_vs_best_population":
            measured = (f"worst {t.get('worst_population', '?')} "
                        f"{_fmt(t.get('worst_attainable'))} vs best "
                        f"{t.get('best_population', '?')} {_fmt(t.get('best_attainable'))}")
        elif name == "federated_vs_centralized":
            measured = ", ".join(
                f"{p} {_fmt(v.get('federated_attainable'))} (need {_fmt(v.get('required'))}"
                f"{_margin_interval(v, '; margin ')})" for p, v in by_pop.items())
        elif name == "calibrated_risk":
            measured = _calibration_text(_get(doc, "utility", "calibration") or {})
            if t.get("within_measurement_error") and not t.get("met"):
                measured += " (every interval reaches the bounds)"
        else:
            measured = ", ".join(
                f"{p} {_fmt(v.get('federated_auroc'))} vs {_fmt(_rival(v))}"
                + _margin_interval(v, " (margin ", ")") for p, v in by_pop.items())
        goals.append(_goal(name, t.get("rule", name), measured or "not measured",
                           _num(t.get("margin")), t.get("met"),
                           _pair(t.get("margin_interval"))))

    cost = doc.get("dp_cost", {})
    larger = cost.get("at_batch") or {}  # a failed row fails the goal: nothing was measured
    for name, key in (("dp_step_time", "time_ratio"), ("dp_step_memory", "memory_ratio")):
        ratio = _num(cost.get(key))
        spread = _pairs_spread(cost) if key == "time_ratio" else ""
        measured = f"{_fmt(ratio, 2)}x{spread}"
        ratios = [ratio]
        if larger:  # the goal holds only if it holds at every batch measured
            measured = f"{measured} at batch {cost.get('batch_size', '?')}" + "".join(
                f"; fails at batch {b}" if "error" in row
                else f"; {_fmt(_num(row.get(key)), 2)}x at batch {b}"
                for b, row in larger.items())
            ratios += [_num(row.get(key)) for row in larger.values()]
        worst = None if any(r is None for r in ratios) else max(ratios)
        goals.append(_goal(
            name, f"DP-SGD step {key.split('_')[0]} ≤ {DP_STEP_RATIO:g} × the non-private step "
                  f"({cost.get('default_mode', 'hooks')} mode)",
            measured, None if worst is None else DP_STEP_RATIO - worst,
            worst is not None and worst <= DP_STEP_RATIO))

    goals += _scale_goals(doc.get("panel_scale") or {})

    ten = _get(doc, "federation", "sites", "10") or {}
    frac = _num(ten.get("overhead_fraction"))
    goals.append(_goal(
        "coordinator_overhead_10_sites",
        f"coordinator overhead ≤ {COORDINATOR_OVERHEAD:.0%} of a round at 10 sites",
        f"{_fmt(None if frac is None else 100 * frac, 1)}% ({_fmt(ten.get('overhead_s'), 2)} s) "
        f"of {_fmt(ten.get('round_s'), 2)} s",
        None if frac is None else COORDINATOR_OVERHEAD - frac,
        frac is not None and frac <= COORDINATOR_OVERHEAD))
    hundred = _get(doc, "federation", "sites", "100") or {}
    ran = _num(hundred.get("round_s")) is not None
    goals.append(_goal(
        "sites_100_run", "100 simulated sites run on this machine",
        f"{_fmt(hundred.get('round_s'), 1)} s per round" if ran
        else hundred.get("error", "not measured"), None, ran))

    audit = doc.get("privacy_audit") or {}
    bounds = _audit_bounds(audit)
    worst = max(bounds, key=lambda b: b[1] - b[2]) if bounds else None
    caught = "caught" if audit.get("positive_control_caught") else "NOT caught"
    goals.append(_goal(
        "privacy_audit",
        "empirical ε lower bound ≤ the ε each site reports, every configuration and scorer",
        (f"largest bound {_fmt(worst[1], 2)} against ε {_fmt(worst[2], 2)} ({worst[0]}); "
         f"the replayable-noise control {caught}" if worst else "not measured"),
        None if worst is None else min(claim - lb for _, lb, claim in bounds),
        worst is not None and all(lb <= claim for _, lb, claim in bounds)))

    noise = _get(doc, "utility", "evaluation_noise", "default", "by_population") or {}
    cover = {p: _num(e.get("coverage")) for p, e in noise.items()}
    known = [c for c in cover.values() if c is not None]
    worst_cover = min(known) if known and len(known) == len(cover) else None
    goals.append(_goal(
        "evaluation_interval_coverage",
        f"the coordinator's DP-noised AUROC interval holds the exact AUROC in ≥ "
        f"{EVALUATION_COVERAGE:.0%} of releases, every population",
        ", ".join(f"{p} {_fmt(None if c is None else 100 * c, 0)}% (binned "
                  f"{_fmt(noise[p].get('binned_auroc'))} vs exact "
                  f"{_fmt(noise[p].get('exact_auroc'))})" for p, c in cover.items())
        or "not measured",
        None if worst_cover is None else worst_cover - EVALUATION_COVERAGE,
        worst_cover is not None and worst_cover >= EVALUATION_COVERAGE))

    memory = _get(doc, "data_path", "scale", "memory_goal")
    if memory:  # judged once the data-path section has measured its scale rows
        margin = _num(memory.get("margin_bytes"))
        goals.append(_goal(
            "load_memory",
            f"loading a site peaks at ≤ the people × variants codes × "
            f"{1 + LOAD_MEMORY_FACTOR:g} + {LOAD_MEMORY_CONSTANT_BYTES / 2**20:g} MiB, up to "
            "100,000 people or variants",
            f"tightest: {memory.get('worst') or 'not measured'}",
            None if margin is None else margin / 2**20, memory.get("met")))

    walls = [_num(v.get("wall_s")) for k, v in doc.items()
             if k not in ("meta", "targets") and isinstance(v, dict)]
    total = sum(w for w in walls if w is not None) if walls else None
    goals.append(_goal(
        "bench_under_60_min", f"`make bench` under {BENCH_BUDGET_S / 60:.0f} minutes here",
        f"{_fmt(None if total is None else total / 60, 1)} min",
        None if total is None else (BENCH_BUDGET_S - total) / 60,
        total is not None and total < BENCH_BUDGET_S))
    return goals


def _scale_goals(scale: dict[str, Any]) -> list[dict]:
    """Local attention's growth with the panel, and DP memory at every panel measured."""
    grow = scale.get("growth") or {}
    ratio = _num(grow.get("dp_step_ratio"))
    small, large = grow.get("from_variants"), grow.get("to_variants")
    rows = [(attention, int(v), row) for attention, by in (scale.get("rows") or {}).items()
            for v, row in by.items()]
    at = f" (batch {scale.get('batch_size', '?')})"
    if ratio is not None:
        iqr = _pair(grow.get("dp_step_ratio_iqr"))
        spread = "" if iqr is None else f"pairs {iqr[0]:.1f}-{iqr[1]:.1f}x; "
        measured = (f"{ratio:.1f}x ({spread}{_fmt(grow.get('from_step_s'))} s -> "
                    f"{_fmt(grow.get('to_step_s'))} s per step; plain step "
                    f"{_fmt(grow.get('plain_step_ratio'), 1)}x)")
    else:
        measured = grow.get("error", "not measured")
    goals = [_goal(
        "panel_scale_local_growth",
        f"local attention's DP-SGD step on {large or 16384:,} variants ≤ "
        f"{LOCAL_ATTENTION_GROWTH:g} × on {small or 1024:,}{at}",
        measured, None if ratio is None else LOCAL_ATTENTION_GROWTH - ratio,
        ratio is not None and ratio <= LOCAL_ATTENTION_GROWTH)]
    ratios = [_num(row.get("memory_ratio")) for _, _, row in rows if "skipped" not in row]
    failed = [f"fails at {a}, {v:,} variants" for a, v, row in rows if "error" in row]
    skipped = [f"{a} {v:,}" for a, v, row in sorted(rows) if "skipped" in row]
    known = [r for r in ratios if r is not None]
    worst = max(known) if known and len(known) == len(ratios) else None
    if known:
        measured = "; ".join([
            f"worst {max(known):.2f}x ({scale.get('worst_memory_at', '?')})", *failed,
            *([f"skipped: {', '.join(skipped)}"] if skipped else [])])
    else:
        measured = "; ".join(failed) or "not measured"
    goals.append(_goal(
        "panel_scale_dp_memory",
        f"DP-SGD step memory ≤ {DP_STEP_RATIO:g} × the non-private step at every panel size "
        f"measured, full and local attention{at}",
        measured, None if worst is None else DP_STEP_RATIO - worst,
        worst is not None and worst <= DP_STEP_RATIO))
    return goals


def _audit_bounds(audit: dict[str, Any]) -> list[tuple[str, float, float]]:
    """(configuration and scorer, lower bound, claimed epsilon) of every audit that must hold."""
    out = []
    for kind, claim_key in (("white_box", "claimed_epsilon"),
                            ("black_box", "epsilon_after_evaluation")):
        for run in audit.get(kind) or []:
            claim = _num(run.get(claim_key))
            for scorer, scored in (run.get("scorers") or {}).items():
                lb = _num(scored.get("epsilon_lb"))
                if lb is not None and claim is not None:
                    out.append((f"{kind.replace('_', '-')} {scorer} at ε {claim:.2g}", lb, claim))
    return out


def _cost_row(label: str, m: dict[str, Any]) -> str:
    """One row of the DP-cost table: a grad-sample mode's ratios, or why it failed."""
    if "error" in m:
        return f"| {label} | fails: {m['error'][:80]} | | |"
    return (f"| {label} | {_fmt(m.get('time_ratio'), 2)}x{_pairs_spread(m)} | "
            f"{_fmt(m.get('memory_ratio'), 2)}x | {_fmt(m.get('samples_per_s'), 0)} |")


def _scale_table(scale: dict[str, Any]) -> list[str]:
    """Per person, plain and DP step on every panel size and attention (BENCH.md only)."""
    if not scale.get("rows"):
        return []
    where = scale.get("device_name") or scale.get("device", "?")
    lines = ["", f"## Panel scale: one training step per person as the panel grows (batch "
                 f"{scale.get('batch_size', '?')}, {where}, {scale.get('default_mode', '?')} "
                 "mode; time: the median of steps alternating with plain ones)", "",
             "| attention | variants | plain ms/person | DP ms/person | DP/plain time | "
             "plain MB/person | DP MB/person | DP/plain memory |", "|---" * 8 + "|"]
    for attention, by in scale["rows"].items():
        for v, r in sorted(by.items(), key=lambda item: int(item[0])):
            head = f"| {attention} | {int(v):,} |"
            if "skipped" in r or "error" in r:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"fails: {r['error']}"
                lines.append(f"{head} {why[:160]} | | | | | |")
                continue
            ms = [None if _num(r.get(k)) is None else 1e3 * r[k]
                  for k in ("plain_s_per_sample", "dp_s_per_sample")]
            mb = [None if _num(r.get(k)) is None else r[k] / 1e6
                  for k in ("plain_memory_per_sample_bytes", "dp_memory_per_sample_bytes")]
            lines.append(f"{head} {_fmt(ms[0], 2)} | {_fmt(ms[1], 2)} | "
                         f"{_fmt(r.get('time_ratio'), 2)}x{_pairs_spread(r)} | "
                         f"{_fmt(mb[0], 1)} | {_fmt(mb[1], 1)} | "
                         f"{_fmt(r.get('memory_ratio'), 2)}x |")
    grow = scale.get("growth") or {}
    if _num(grow.get("dp_step_ratio")) is not None:
        lines += ["", f"From {grow['from_variants']:,} to {grow['to_variants']:,} variants "
                      f"({grow['to_variants'] / grow['from_variants']:g}x the panel) local "
                      f"attention's DP step takes {grow['dp_step_ratio']:.1f}x as long, its "
                      f"plain step {_fmt(grow.get('plain_step_ratio'), 1)}x (the median of "
                      f"{grow.get('pairs', '?')} steps of each panel alternating in one "
                      f"process, {grow.get('threads', '?')} thread(s))."]
    loads = [x for by in scale["rows"].values() for r in by.values()
             for x in r.get("load_average_1min") or [] if _num(x) is not None]
    if loads:
        lines += ["", f"The rows' times were taken at a 1-minute load average of "
                      f"{min(loads):.1f} to {max(loads):.1f}: other work shared the cores, "
                      "so compare times within a row (paired), not across rows."]
    return lines


def _pairs_spread(row: dict[str, Any]) -> str:
    """' (pairs 1.04-1.12x)': the middle half of the paired DP/plain step ratios, if measured."""
    iqr = row.get("time_ratio_iqr")
    if not iqr or row.get("error"):
        return ""
    return f" (pairs {_fmt(iqr[0], 2)}-{_fmt(iqr[1], 2)}x)"


def _auroc_cell(row: dict[str, Any] | None) -> str:
    if not row or _num(row.get("auroc")) is None:
        return "n/a"
    att = _num(row.get("attainable"))
    return f"{row['auroc']:.3f} ({att:.2f})" if att is not None else f"{row['auroc']:.3f}"


def _pairs_fall_short(util: dict[str, Any], pop: str) -> bool:
    """True where the interaction reference gains less over the linear score than the federated
    model trails it."""
    ref, lin, fed = (_num(_get(util, m, pop, "auroc"))
                     for m in ("interaction_reference", "linear_prs", "federated_dp"))
    return None not in (ref, lin, fed) and ref - lin < lin - fed  # type: ignore[operator]


def _interval(run: dict[str, Any]) -> tuple[float, float] | None:
    """A run's 95% `auroc_ci` as (lo, hi), or None where the JSON has none."""
    return _pair(run.get("auroc_ci"))


def _ci(run: dict[str, Any]) -> str:
    """' [lo, hi]' from a run's interval, or nothing."""
    ci = _interval(run)
    return "" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]"


def _commit_text(code: Any) -> str | None:
    if not isinstance(code, dict) or not code.get("commit"):
        return None
    return str(code["commit"])[:10] + (" with uncommitted changes" if code.get("dirty") else "")


def _revision(doc: dict[str, Any]) -> str:
    """" at commit X" and any section measured at another commit (a `--only` rerun)."""
    latest = _commit_text(doc.get("meta", {}).get("code"))
    if latest is None:
        return ""
    others = {
        name: text for name, section in doc.items()
        if name != "meta" and isinstance(section, dict)
        and (text := _commit_text(section.get("code"))) not in (None, latest)
    }
    extra = "".join(f"; {name} at {text}" for name, text in sorted(others.items()))
    return f" at commit {latest}{extra}"


GENERATED = ("<!-- generated by `python -m deploy.bench.readme` from deploy/bench/bench.json: "
             "do not edit by hand -->")


def _measured(doc: dict[str, Any]) -> str:
    meta = doc.get("meta", {})
    return (f"Measured {meta.get('date', '?')}{_revision(doc)} "
            f"on {meta.get('cpus_usable', '?')} CPU cores "
            f"({meta.get('processor', '?')}), torch {meta.get('torch', '?')}, "
            f"flwr {meta.get('flwr', '?')}, opacus {meta.get('opacus', '?')}"
            + (" — QUICK sizes, not the real benchmark" if meta.get("quick") else "") + ".")


def _goals_table(doc: dict[str, Any]) -> list[str]:
    lines = ["| goal | measured | margin | met | what would close it |", "|---|---|---|---|---|"]
    goals = targets(doc)
    for g in goals:
        margin = "" if g["margin"] is None else f"{g['margin']:+.3f}"
        if g["interval"] is not None:
            margin += f" [{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}]"
        lines.append(f"| {g['rule']} | {g['measured']} | {margin} | "
                     f"{'yes' if g['met'] else '**no**'} | {g['remedy'] or ''} |")
    method = _get(doc, "utility", "targets", "interval_method")
    if method and any(g["interval"] is not None for g in goals):
        lines += ["", f"Margins in brackets: {method}. A goal is judged by its margin; an "
                      "interval that spans 0 says the held-out people cannot tell that "
                      "outcome from the other."]
    return lines


def _headline_table(doc: dict[str, Any]) -> list[str]:
    """The goals, met or not, with their margins (what was measured: in BENCH.md)."""
    lines = ["| goal | margin | met |", "|---|---|---|"]
    for g in targets(doc):
        margin = "" if g["margin"] is None else f"{g['margin']:+.3f}"
        if g["interval"] is not None:
            margin += f" [{g['interval'][0]:+.3f}, {g['interval'][1]:+.3f}]"
        lines.append(f"| {g['rule']} | {margin} | {'yes' if g['met'] else '**no**'} |")
    return lines


def headline(doc: dict[str, Any]) -> str:
    """The README's benchmark section: when and where, the goals, and where the rest is."""
    curve = ([f"![AUROC per population as hospitals join](deploy/bench/{gain_curve.FILE})", ""]
             if gain_curve.svg(doc.get("designs") or {}) else [])
    return "\n".join([
        START, GENERATED, "", _measured(doc), "", *_headline_table(doc), "", *curve,
        f"What each goal measured, what would close a missed one, and every table: "
        f"[deploy/bench/{REPORT}](deploy/bench/{REPORT}); what was tried: [{NOTEBOOK}]"
        f"({NOTEBOOK}).", "", END])


def config_table() -> str:
    """The README's run-config key table, from `RunSettings` itself."""
    from shared.runconfig import RunSettings

    lines = [CONFIG_START, "<!-- generated from shared/runconfig.py by `python -m "
             "deploy.bench.readme`: do not edit by hand -->", "",
             "| key | default | meaning |", "|---|---|---|"]
    for key, default, doc in RunSettings.key_table():
        shown = str(default).lower() if isinstance(default, bool) else (
            f'"{default}"' if isinstance(default, str) else f"{default:g}")
        lines.append(f"| `{key}` | `{shown}` | {doc} |")
    return "\n".join([*lines, "", CONFIG_END])


def render(doc: dict[str, Any]) -> str:
    """The whole benchmark report (deploy/bench/BENCH.md), from the JSON alone."""
    lines = [
        "# genofed benchmarks",
        "",
        GENERATED,
        "",
        _measured(doc),
        "",
        "## Goals",
        "",
        *_goals_table(doc),
    ]
    if any(not g["met"] for g in targets(doc)):
        lines += ["", "What was tried for the missed goals, and what it measured: the lab "
                      "notebook, [NOTEBOOK.md](NOTEBOOK.md)."]

    util = doc.get("utility", {})
    lines += [
        "", "## Disease-risk AUROC per ancestry on the same held-out people "
            "(fraction of attainable signal)", "",
        "| method | " + " | ".join(POPULATIONS) + " |",
        "|---|" + "---|" * len(POPULATIONS),
    ]
    ref, lin = util.get("interaction_reference"), util.get("linear_prs")
    for method, label in METHODS.items():
        cells = [_auroc_cell(_get(util, method, p)) for p in POPULATIONS]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if method == "linear_prs" and ref and lin:  # what the simulated interactions are worth
            pairs = _get(util, "interaction_reference_fit", "pairs")
            cells = [_auroc_cell(ref.get(p)) for p in POPULATIONS]
            lines.append(f"| linear score + the {'' if pairs is None else f'{pairs} '}true "
                         "interaction pairs (reads the truth, like the oracle) | "
                         + " | ".join(cells) + " |")
    short = [p for p in POPULATIONS if _pairs_fall_short(util, p)]
    if short:
        lines += ["", f"In {', '.join(short)} the pairs are worth less than the federated "
                      "model's gap to the linear score: finding them would not be enough."]
    for key, row in (("federated_dp_runs", "federated DP"), ("centralized_runs", "centralized")):
        runs = util.get(key) or []
        if runs:
            per_pop = "; ".join(f"{p} " + " / ".join(_fmt(_get(r, "auroc", p)) for r in runs)
                                for p in POPULATIONS)
            seeds = ", ".join(str(r.get("seed")) for r in runs)
            lines += ["", f"The {row} row is the mean of {len(runs)} trainings (seeds {seeds}), "
                          f"which scored {per_pop}."]
    held = util.get("held_out", {})
    if held:
        lines += ["", "Held-out people (cases): " + ", ".join(
            f"{p} {held[p]['n']} ({held[p]['cases']})" for p in POPULATIONS if p in held) + "."]

    lines += _calibration_table(util.get("calibration") or {})
    lines += _designs_table(doc.get("designs") or {})
    lines += _explain_table(doc.get("explain") or {})

    cost = doc.get("dp_cost", {})
    pairs = (f"; time: the median of {cost['timed_pairs']} steps alternating with plain ones, "
             "the middle half in brackets" if cost.get("timed_pairs") else "")
    lines += ["", "## DP-SGD step vs the same non-private step "
                  f"(batch {cost.get('batch_size', '?')}, {cost.get('panel_variants', '?')} "
                  f"variants{pairs})", "",
              "| Opacus grad-sample mode | time | memory | samples/s |", "|---|---|---|---|"]
    lines.append(f"| non-private | 1.00x | 1.00x | {_fmt(cost.get('nondp_samples_per_s'), 0)} |")
    lines += [_cost_row(mode, m) for mode, m in (cost.get("modes") or {}).items()]
    lines += [_cost_row(f"{cost.get('default_mode', 'hooks')}, batch {batch}", m)
              for batch, m in (cost.get("at_batch") or {}).items()]
    if cost.get("at_batch"):
        lines += ["", "A site larger than batch-size x max-steps-per-epoch trains on larger "
                      "batches; the last row measures the default mode at one."]

    lines += _scale_table(doc.get("panel_scale") or {})

    fed = doc.get("federation", {})
    steady = sorted({len(s.get("per_round") or [1]) for s in (fed.get("sites") or {}).values()
                     if "error" not in s})
    which = ""
    if len(steady) == 1 and steady[0] > 1:  # every site count ran the same steady rounds
        which = f"; the median of {steady[0]} steady rounds"
    lines += ["", "## Federation cost per round (Flower simulation engine, "
                  f"{fed.get('workers', '?')} sites at a time{which})", "",
              "| sites | round | sites' own work | coordinator overhead |", "|---|---|---|---|"]
    for n, s in sorted((fed.get("sites") or {}).items(), key=lambda item: int(item[0])):
        if "error" in s:
            lines.append(f"| {n} | fails: {s['error'][:80]} | | |")
        else:
            spread = [100 * f for c in s.get("per_round") or []
                      if (f := _num(c.get("overhead_fraction"))) is not None]
            rounds = (f" (rounds {_fmt(min(spread), 1)}-{_fmt(max(spread), 1)}%)"
                      if len(spread) > 1 else "")
            lines.append(f"| {n} | {_fmt(s.get('round_s'), 2)} s | {_fmt(s.get('local_s'), 2)} s"
                         f" | {_fmt(100 * s['overhead_fraction'], 1)}%{rounds} |")
    sec = fed.get("secagg_overhead") or {}
    bytes_ = _num(fed.get("bytes_per_update"))
    demo_bytes = _num(fed.get("bytes_per_update_demo_model"))
    lines += ["",
              f"Bytes per update: {bytes_:,.0f} (benchmark model), "
              f"{demo_bytes:,.0f} (demo model)." if bytes_ and demo_bytes else
              "Bytes per update: not measured.",
              f"SecAgg+: {_fmt(sec.get('secagg_round_s'), 2)} s per round vs "
              f"{_fmt(sec.get('plain_round_s'), 2)} s plain ({_fmt(sec.get('ratio'), 2)}x)."
              + (SECAGG_UNDER_ONE if (_num(sec.get("ratio")) or 1.0) < 1.0 else "")]

    audit = doc.get("privacy_audit") or {}
    if audit.get("white_box"):
        lines += ["", f"## Privacy audit (one training run, {audit.get('canaries', '?')} "
                      "canaries, 95% lower bounds on ε)", "",
                  "| release | claimed ε | scorer | lower bound |", "|---|---|---|---|"]
        for run in [*audit.get("white_box", []), audit.get("positive_control") or {}]:
            label = f"DP-SGD, {run.get('training_randomness', '?')} randomness"
            for scorer, scored in (run.get("scorers") or {}).items():
                lines.append(f"| {label} | {_fmt(run.get('claimed_epsilon'), 2)} | {scorer} | "
                             f"{_fmt(scored.get('epsilon_lb'), 2)} |")
        for run in audit.get("black_box", []):
            for scorer, scored in (run.get("scorers") or {}).items():
                lines.append(f"| site's round + evaluation (canary people) | "
                             f"{_fmt(run.get('epsilon_after_evaluation'), 2)} | {scorer} | "
                             f"{_fmt(scored.get('epsilon_lb'), 2)} |")
    noise = _get(doc, "utility", "evaluation_noise", "default") or {}
    if noise.get("by_population"):
        lines += ["", "## What the DP noise on evaluations costs per-ancestry AUROC "
                      f"(evaluation share {noise.get('evaluation_share')}, σ "
                      f"{_fmt(noise.get('sigma'), 2)} per bin and site, {noise.get('n_bins')} "
                      f"bins centred at logit {_fmt(noise.get('bin_center'), 2)})", "",
                  "| population | exact | binned | error RMSE | bias | interval covers | "
                  "interval width (DeLong alone) |", "|---|---|---|---|---|---|---|"]
        for pop, e in noise["by_population"].items():
            lines.append(f"| {pop} | {_fmt(e.get('exact_auroc'))} | {_fmt(e.get('binned_auroc'))}"
                         f" | {_fmt(e.get('rmse'))} | {_fmt(e.get('bias'))} | "
                         f"{_fmt(100 * (e.get('coverage') or 0), 0)}% | {_fmt(e.get('width'))} "
                         f"({_fmt(e.get('delong_width'))}) |")

    data = doc.get("data_path", {})
    mia = doc.get("membership_attack", {})
    bcf = _num(data.get("bcftools_calls_per_s"))
    lines += ["", "## Data path and membership inference", "",
              f"Genotype decoding: {_fmt((data.get('calls_per_s') or 0) / 1e6, 1)} M calls/s "
              f"(bcftools query: "
              + (f"{bcf / 1e6:.1f} M calls/s" if bcf else
                 f"not measured, {data.get('bcftools_reason', 'no bcftools')}") + "); "
              f"cached site load {_fmt(data.get('cached_load_s'), 2)} s vs cold "
              f"{_fmt(data.get('cold_load_s'), 2)} s.",
              f"Loss-threshold membership attack AUROC: {_fmt(mia.get('dp_auroc'))} with DP "
              f"(ε {_fmt(mia.get('epsilon'), 2)}"
              + (f"; mean of {len(mia['dp_runs'])} trainings: "
                 + " / ".join(_fmt(r.get("auroc")) + _ci(r) for r in mia["dp_runs"])
                 if mia.get("dp_runs") else "")
              + f"), {_fmt(mia.get('nondp_auroc'))}{_ci(mia.get('nondp') or {})} without "
              f"({mia.get('members', '?')} members vs as many non-members, "
              f"{mia.get('epochs', '?')} epochs).",
              ""]
    lines += _load_scale_table(data.get("scale") or {})
    return "\n".join(lines)


def _calibration_table(cal: dict[str, Any]) -> list[str]:
    """Calibration and clinical cut-offs on held-out people, per population (first run)."""
    raw, recal = cal.get("federated_dp_raw") or [], cal.get("federated_dp_recalibrated") or []
    if not raw or not recal:
        return []
    # Measured before closed testing, the checkpoint's fit was Cox's and had no rival column.
    cox = (cal.get("federated_dp_recalibrated_cox") or [{}])[0]
    heads = ["population", "slope raw", "slope recalibrated", "intercept raw",
             "intercept recalibrated", *(["Cox fit: slope, intercept"] if cox else []),
             "top 5% PPV", "top 10% sensitivity", "OR top decile vs middle"]
    lines = ["", "## Risk calibration and clinical cut-offs on held-out people (first "
                 "federated run; slope 1 and intercept 0 are ideal)", "",
             "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for pop in POPULATIONS:
        a, b, c = raw[0].get(pop) or {}, recal[0].get(pop) or {}, cox.get(pop) or {}
        cells = [pop, _fmt(a.get("slope"), 2),
                 f"{_fmt(b.get('slope'), 2)}{_span(b.get('slope_interval'))}",
                 _fmt(a.get("intercept"), 2),
                 f"{_fmt(b.get('intercept'), 2)}{_span(b.get('intercept_interval'))}",
                 *([f"{_fmt(c.get('slope'), 2)}, {_fmt(c.get('intercept'), 2)}"] if cox else []),
                 _fmt(b.get("top5_ppv"), 2), _fmt(b.get("top10_sensitivity"), 2),
                 _fmt(b.get("or_top_decile_vs_middle"), 1)]
        lines.append("| " + " | ".join(cells) + " |")
    if not cox:
        return lines + ["", "The recalibration is the checkpoint's own: Cox's intercept and "
                            "slope, fitted by the coordinator from the sites' DP-noised "
                            "evaluation histograms, per ancestry."]
    return lines + ["", "The recalibration is the checkpoint's own: fitted by the coordinator "
                        "from the sites' DP-noised evaluation histograms, per ancestry, as the "
                        "simplest update the statistics support (none, intercept only, or "
                        "intercept and slope); the Cox fit column applies the two-parameter fit "
                        "from the same releases instead. Intervals: 95% bootstrap over the "
                        "held-out people, i.e. how precisely they measure calibration."]


def _span(pair: Any) -> str:
    """' (lo to hi)' of a JSON [lo, hi], or nothing where it is missing."""
    got = _pair(pair)
    return "" if got is None else f" ({got[0]:.2f} to {got[1]:.2f})"


def _explain_table(ex: dict[str, Any]) -> list[str]:
    """How well each model's explained variant effects find the simulation's true causal
    variants and interacting pairs (`deploy.bench.explain`)."""
    models = ex.get("models") or {}
    if not models:
        return []
    k = len(_get(ex, "truth", "causal") or [])
    lines = ["", f"## Explanations against the truth ({k} causal variants; a random ranking's "
                 f"precision {_fmt(ex.get('chance_precision'), 2)})", "",
             f"| model | precision at {k} | recall at {2 * k} | integrated gradients: "
             f"precision at {k} | true pairs' ranks among scored pairs |", "|---|---|---|---|---|"]
    for name, r in models.items():
        swap = r.get("swap") or [{}, {}]
        ig = r.get("integrated_gradients") or [{}, {}]
        ranks = ", ".join("not scored" if p.get("rank") is None
                          else f"{p['rank']:g} of {p.get('scored_pairs')}"
                          for p in r.get("pairs") or [])
        lines.append(f"| {METHODS.get(name, name)} | {_fmt(swap[0].get('precision'), 2)} | "
                     f"{_fmt(swap[1].get('recall'), 2)} | {_fmt(ig[0].get('precision'), 2)} | "
                     f"{ranks or 'n/a'} |")
    lines += ["", "Importance: mean |logit change per added alt allele| x dosage sd on the "
                  "public reference people (`genofed model explain`); a pair is scored only when "
                  "both its variants are among the most important."]
    return lines


def _designs_table(designs: dict[str, Any]) -> list[str]:
    """The federation-gain curve of the spread design, as a table and the plot's link."""
    curve = designs.get("gain_curve") or []
    if not curve:
        return []
    sizes = designs.get("site_sizes") or {}
    lines = ["", f"## Federation gain: the spread design ({len(sizes)} sites of "
                 f"{min(sizes.values(), default=0)}-{max(sizes.values(), default=0)} people, "
                 "every ancestry near a third of each; AUROC on all sites' held-out people)", "",
             "| sites joined | people | " + " | ".join(
                 f"{p} federated DP / best site alone / pooled linear" for p in POPULATIONS)
             + " |", "|---|---|" + "---|" * len(POPULATIONS)]
    for point in curve:
        cells = [" / ".join(_fmt(gain_curve._auroc(point, key, p))
                            for key in ("federated_dp", "best_site_alone", "pooled_linear"))
                 for p in POPULATIONS]
        lines.append(f"| {point.get('sites')} | {point.get('n_train')} | "
                     + " | ".join(cells) + " |")
    every = designs.get("all_sites") or {}
    if every:
        lines += ["", "All sites, meta-analysed GWAS C+T: " + "; ".join(
            f"{p} {_fmt(_get(every, 'meta_gwas', p))} (per ancestry combined "
            f"{_fmt(_get(every, 'meta_gwas_multi', p))})" for p in POPULATIONS) + "."]
    lines += ["", f"![AUROC per population as hospitals join]({gain_curve.FILE})"]
    return lines


_SCALE_READERS = (("genofed_vcf", "genofed, VCF"), ("genofed_plink", "genofed, PLINK .bed"),
                  ("pgenlib", "pgenlib alone"), ("bcftools", "bcftools query"),
                  ("load_site", "load_site, cold"))


def _load_scale_table(scale: dict[str, Any]) -> list[str]:
    """Load time and peak memory per size and reader, and how time grows."""
    rows = scale.get("sizes") or []
    if not rows:
        return []
    lines = ["## Loading a site as it grows", "",
             "Seconds, and peak memory above the process before loading, in MiB (the "
             "people × variants codes themselves included).", "",
             "| people × variants | " + " | ".join(name for _, name in _SCALE_READERS) + " |",
             "|---|" + "---|" * len(_SCALE_READERS)]
    for row in rows:
        cells = []
        for key, _ in _SCALE_READERS:
            m = row.get(key) or {}
            seconds = _num(m.get("seconds"))
            cells.append("n/a" if seconds is None else
                         f"{seconds:.2f} s, {(m['peak_bytes'] - m['baseline_bytes']) / 2**20:.0f}"
                         " MiB")
        lines.append(f"| {row['people']:,} × {row['variants']:,} | " + " | ".join(cells) + " |")
    lines += ["", "| reader | ns per call (each size) | time ~ variants^b | time ~ people^b | "
                  "extra MiB per MiB of codes |", "|---|---|---|---|---|"]
    for key, name in _SCALE_READERS:
        g = (scale.get("growth") or {}).get(key)
        if not g:
            continue
        per_call = ", ".join(f"{v:.1f}" for v in g.get("ns_per_call", {}).values())
        lines.append(f"| {name} | {per_call} | {_fmt(g.get('time_exponent_variants'), 2)} | "
                     f"{_fmt(g.get('time_exponent_people'), 2)} | "
                     f"{_fmt(g.get('extra_per_output_byte'), 2)} |")
    return [*lines, ""]


def replace_section(text: str, section: str, start: str = START, end: str = END) -> str:
    if start not in text or end not in text:
        raise ValueError(f"the README has no {start} ... {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return head + section + tail


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(prog="python -m deploy.bench.readme")
    parser.add_argument("bench_json", type=Path)
    parser.add_argument("readme", type=Path)
    parser.add_argument("--report", type=Path,
                        help=f"the full benchmark report (default: {REPORT} beside bench_json)")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the README or the report is stale")
    args = parser.parse_args(argv)
    report = args.report or args.bench_json.with_name(REPORT)
    plot = report.with_name(gain_curve.FILE)
    try:
        doc = json.loads(args.bench_json.read_text())
        text = args.readme.read_text()
        new = replace_section(text, headline(doc))
        new = replace_section(new, config_table(), CONFIG_START, CONFIG_END)
        full = render(doc)
        old_report = report.read_text() if report.exists() else None
        curve = gain_curve.svg(doc.get("designs") or {})
        old_curve = plot.read_text() if plot.exists() else None
    except (OSError, ValueError) as err:
        print(f"readme_table: {err}", file=sys.stderr)
        return 2
    if args.check:
        stale = [str(p) for p, a, b in ((args.readme, new, text), (report, full, old_report),
                                        (plot, curve, old_curve if curve else None))
                 if a != b]
        if stale:
            print(f"readme_table: {', '.join(stale)} do(es) not match {args.bench_json} and "
                  f"shared/runconfig.py; run `python -m deploy.bench.readme {args.bench_json} "
                  f"{args.readme}`", file=sys.stderr)
            return 1
        return 0
    for path, content, old in ((args.readme, new, text), (report, full, old_report),
                               (plot, curve, old_curve)):
        if content is not None and content != old:
            with atomic_write(path) as fh:
                fh.write(content)
    return 0


if __name__ == "__main__":
    sys.exit(main())
