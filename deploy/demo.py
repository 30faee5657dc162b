"""`genofed deploy demo`: the whole system on a built-in synthetic cohort, on one machine.

Simulates a three-ancestry cohort split over hospitals, runs the federation through Flower's
simulation engine (real SuperLink, real ClientApps, real Opacus), and prints per-ancestry AUROC
of the final global model, pooled from the sites' score histograms, and each site's epsilon.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from deploy.federation import run_simulation
from deploy.simulate import SimulationConfig, register_sites, simulate_cohort
from server.outdir import RunFolder
from shared.audit.page import write_html
from shared.audit.report import build_report
from shared.errors import FederationError
from shared.fsio import write_json
from shared.ledger import PUBLIC_KEY_NAME
from shared.protocol import latest_privacy, read_rounds

log = logging.getLogger(__name__)


def summarize(results: dict) -> dict:
    """The demo summary from the coordinator's results: last round's metrics, latest epsilons."""
    rounds = read_rounds(results["rounds"])
    last = next(r for r in reversed(rounds) if r.metrics)
    populations = {}
    for name, m in sorted(last.groups().items()):
        populations[name] = (
            {"suppressed": True} if m.get("suppressed") else {"n": int(m["n"]), "auroc": m["auroc"]}
        )
    return {"populations": populations, "sites": latest_privacy(rounds)}


def format_table(summary: dict, oracle: dict[str, float] | None = None) -> str:
    lines = ["Per-ancestry performance of the final global model (held-out people, all sites):",
             f"  {'ancestry':<10}{'n':>7}{'AUROC':>9}" + (f"{'oracle':>9}" if oracle else "")]
    for name, m in summary["populations"].items():
        if m.get("suppressed"):
            lines.append(f"  {name:<10}{'suppressed (fewer than k people or cases)':>30}")
            continue
        row = f"  {name:<10}{m['n']:>7}{m['auroc']:>9.3f}"
        if oracle and name in oracle:
            row += f"{oracle[name]:>9.3f}"
        lines.append(row)
    lines += ["Privacy spent per site (cumulative, all rounds):",
              f"  {'site':<10}{'epsilon':>9}{'delta':>10}"]
    for name, p in summary["sites"].items():
        lines.append(f"  {name:<10}{p['epsilon']:>9.3f}{p['delta']:>10.0e}")
    return "\n".join(lines)


def fresh_cohort(out: Path, sites: int, seed: int, people: int) -> dict:
    """Simulate the demo cohort into `out/cohort`, replacing earlier demo outputs."""
    for name in ("cohort", "run", "federation", "local"):
        if (out / name).exists():
            shutil.rmtree(out / name)  # our own outputs: a fresh cohort, fresh privacy budgets
    t0 = time.monotonic()
    log.info("Simulating a %d-site cohort (msprime, OutOfAfrica_3G09) into %s", sites,
             out / "cohort")
    meta = simulate_cohort(
        out / "cohort", SimulationConfig(seed=seed, sites=sites, people_per_population=people)
    )
    log.info("  done in %.0f s.", time.monotonic() - t0)
    register_sites(out / "cohort")
    return meta


def report_run(out: Path, run_dir: Path, ledger_key: Path, meta: dict) -> dict:
    """Summary table, summary.json, verified ledger and the audit report for a finished run."""
    results = json.loads(RunFolder(run_dir).results.read_text())
    summary = summarize(results)
    write_json(out / "summary.json", summary)
    print(format_table(summary, meta.get("oracle_auroc")))
    ledger = RunFolder(run_dir).ledger
    report = build_report(ledger, ledger_key)
    if not report.ok:
        raise FederationError(f"the run's own ledger does not verify: {report.reason}")
    write_html(report, out / "report.html")
    print(f"Summary: {out / 'summary.json'}   Results: {RunFolder(run_dir).results}")
    print(f"Ledger:  {ledger} - verified, {report.records} signed records (key {ledger_key})")
    print(f"Report:  {out / 'report.html'}   "
          f"(re-check: genofed audit verify {ledger} --key {ledger_key})")
    return summary


def run_demo(out: Path, sites: int, rounds: int, seed: int, people: int) -> dict:
    out = out.resolve()
    cohort_dir, run_dir = out / "cohort", out / "run"
    meta = fresh_cohort(out, sites, seed, people)
    log.info("Federating %d rounds in Flower's simulation engine ...", rounds)
    overrides = {
        "num-server-rounds": rounds,
        "min-sites": sites,
        "data-root": str(cohort_dir),
        "out-dir": str(run_dir),
        "seed": seed,
    }
    t1 = time.monotonic()
    run_simulation(overrides, sites, out / "federation")
    log.info("  federation finished in %.0f s.", time.monotonic() - t1)
    return report_run(out, run_dir, RunFolder(run_dir).ledger_pub, meta)


def run_local_demo(out: Path, sites: int, rounds: int, seed: int, people: int) -> dict:
    """The same, through real TLS SuperLink/SuperNode processes on loopback."""
    from deploy.local import run_local

    out = out.resolve()
    meta = fresh_cohort(out, sites, seed, people)
    names = [f"site-{i}" for i in range(1, sites + 1)]
    log.info("Starting a TLS SuperLink and %d authenticated SuperNodes on loopback; "
             "federating %d rounds ...", sites, rounds)
    t1 = time.monotonic()
    run_local(out / "local", out / "cohort", names, {
        "num-server-rounds": rounds, "min-sites": sites, "seed": seed,
        "panel-path": str(out / "cohort" / "panel.tsv"), "round-timeout": 600.0,
    })
    log.info("  federation finished in %.0f s.", time.monotonic() - t1)
    coordinator = out / "local" / "deployment" / "coordinator"
    return report_run(out, coordinator / "results", coordinator / PUBLIC_KEY_NAME, meta)
