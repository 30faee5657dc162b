"""`make bench`: genofed's benchmarks, one JSON file and a readable table.

    python -m deploy.bench --out bench-out [--only NAME[,NAME]] [--quick] [--keep-work]

Each section is a function `(work_dir: Path, quick: bool) -> dict` registered in `SECTIONS`;
its dict lands in `<out>/bench.json` under the section's name, with the runner's `wall_s` and
`date` and `code` (the git revision it measured, see `code_revision`) added. `meta` describes the
machine and the latest invocation. `--only` runs some
sections and merges them into an existing bench.json, keeping every other section. A section
that raises is recorded as `{"error": ...}` and makes the run exit 1 after the file is written.

Table units follow the key names: `*calls_per_s` -> M calls/s, `*_s` -> seconds,
`*_bytes` -> MB, `*_speedup` -> x, integer counts take the key's last word (`samples`).
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from deploy.bench.readme import targets as goals
from shared.cli import setup_logging
from shared.fsio import write_json

Section = Callable[[Path, bool], dict[str, Any]]
RESULT_NAME = "bench.json"
log = logging.getLogger(__name__)


def _lazy(module: str, attr: str = "run") -> Section:
    """A section imported only when it runs: sections pull in torch, Flower, Ray..."""

    def section(work_dir: Path, quick: bool) -> dict[str, Any]:
        return getattr(importlib.import_module(module), attr)(work_dir, quick)

    section.__doc__ = f"{module}.{attr}"
    return section


# Run in this order. Later sections (utility per ancestry, DP cost, federation cost, SecAgg+
# overhead, membership attack) register here.
SECTIONS: dict[str, Section] = {
    "data_path": _lazy("deploy.bench.data_path"),
    "utility": _lazy("deploy.bench.utility"),
    "designs": _lazy("deploy.bench.designs"),
    "dp_cost": _lazy("deploy.bench.dp_cost"),
    "panel_scale": _lazy("deploy.bench.panel_scale"),
    "membership_attack": _lazy("deploy.bench.membership_attack"),
    "privacy_audit": _lazy("deploy.bench.privacy_audit"),
    "federation": _lazy("deploy.bench.federation"),
    "explain": _lazy("deploy.bench.explain"),
}


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def code_revision(root: Path | None = None) -> dict[str, Any]:
    """The git commit the figures belong to, and whether tracked files differed from it.

    "The JSON holds every figure for the current code" can then be checked rather than
    believed; with `--only`, sections measured at different commits say so each. Outside a
    git checkout (an sdist, a copied tree) the commit is None.
    """
    where = root or Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            proc = subprocess.run(["git", *args], cwd=where, capture_output=True, text=True,
                                  timeout=30, check=False)
        except (OSError, subprocess.SubprocessError):
            return None
        return proc.stdout.strip() if proc.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def machine_info(argv: list[str], quick: bool) -> dict[str, Any]:
    """What the numbers were measured on (torch's version without importing torch)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "memory_bytes": memory,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": _version("torch"),
        "numpy": _version("numpy"),
        "pysam": _version("pysam"),
        "flwr": _version("flwr"),
        "opacus": _version("opacus"),
        "genofed": _version("genofed"),
        "quick": quick,
        "command": ["python", "-m", "deploy.bench", *argv],
    }


def run_section(name: str, work_root: Path, quick: bool, code: dict[str, Any]) -> dict[str, Any]:
    """Run one section in its own work folder; its result, or the error it raised."""
    work_dir = work_root / name
    work_dir.mkdir(parents=True, exist_ok=True)
    began = time.perf_counter()
    try:
        result = dict(SECTIONS[name](work_dir, quick))
    except Exception as err:  # recorded, and the run exits 1
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}"}
    result["wall_s"] = time.perf_counter() - began
    result["date"] = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    result["code"] = code
    return result


# --------------------------------------------------------------------------- table


def _unit_and_text(key: str, value: Any) -> tuple[str, str] | None:
    """(value text, unit) for one table row, or None for values not shown in the table."""
    if value is None:
        return "n/a", ""
    if isinstance(value, bool):
        return ("yes" if value else "NO"), ""
    if isinstance(value, int):
        if key.endswith("_bytes"):
            return (f"{value / 1e6:,.1f}", "MB") if value >= 1e6 else (f"{value:,}", "bytes")
        return f"{value:,}", key.rsplit("_", 1)[-1]
    if isinstance(value, float):
        if key.endswith("calls_per_s"):
            return f"{value / 1e6:,.2f}", "M calls/s"
        if key.endswith("_per_s"):
            return f"{value:,.1f}", "/s"
        if key.endswith("_s"):
            return f"{value:,.3f}", "s"
        if key.endswith("_speedup") or key.endswith("_x"):
            return f"{value:,.1f}", "x"
        return f"{value:,.4g}", ""
    if isinstance(value, str) and key != "date":
        return value, ""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "; ".join(value), ""
    return None  # nested settings: in the JSON only


def format_table(results: dict[str, dict[str, Any]]) -> str:
    """One row per measurement: section, measurement, value, unit (notes left-aligned)."""
    rows = []
    for section, values in results.items():
        for key, value in values.items():
            shown = _unit_and_text(key, value)
            if shown is not None:
                rows.append((section, key, *shown))
    header = ("section", "measurement", "value", "unit")
    w0 = max(len(r[0]) for r in [header, *rows])
    w1 = max(len(r[1]) for r in [header, *rows])
    numeric = [r for r in rows if r[2][:1].isdigit() or r[2] in ("n/a", "yes", "NO")]
    w2 = max([len(header[2])] + [len(r[2]) for r in numeric])
    lines = [f"{header[0]:<{w0}}  {header[1]:<{w1}}  {header[2]:>{w2}}  {header[3]}"]
    lines.append("-" * (len(lines[0]) + 10))
    for row in rows:
        section, key, text, unit = row
        cell = text.rjust(w2) if row in numeric else text
        lines.append(f"{section:<{w0}}  {key:<{w1}}  {cell}  {unit}".rstrip())
    return "\n".join(lines)


# --------------------------------------------------------------------------- CLI


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m deploy.bench", description=__doc__.split(
        "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="bench-out", help=f"folder for {RESULT_NAME}")
    parser.add_argument(
        "--only", default=None, metavar="NAME[,NAME]",
        help="run only these sections and merge them into an existing bench.json",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes (for tests)")
    parser.add_argument("--list", action="store_true", help="list the sections and exit")
    parser.add_argument(
        "--keep-work", action="store_true",
        help="keep the sections' scratch data (simulated cohorts) under <out>/work",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parse(argv)
    setup_logging()
    if args.list:
        print("\n".join(SECTIONS))
        return 0
    names = list(SECTIONS)
    if args.only is not None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in SECTIONS]
        if unknown or not names:
            print(
                f"bench: unknown section(s) {', '.join(unknown) or '(none given)'}; "
                f"available: {', '.join(SECTIONS)}", file=sys.stderr,
            )
            return 2

    out = Path(args.out)
    path = out / RESULT_NAME
    document: dict[str, Any] = {}
    if args.only is not None and path.exists():
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            print(f"bench: cannot merge into {path} ({err}); move it away", file=sys.stderr)
            return 2
        if not isinstance(document, dict):
            print(f"bench: {path} is not a JSON object; move it away", file=sys.stderr)
            return 2
    out.mkdir(parents=True, exist_ok=True)

    meta = machine_info(argv, args.quick)
    meta["sections_run"] = names
    meta["code"] = code_revision()
    if args.keep_work:
        work_root = out / "work"
        work_root.mkdir(exist_ok=True)
    else:
        work_root = Path(tempfile.mkdtemp(prefix="genofed-bench-"))
    results: dict[str, dict[str, Any]] = {}
    try:
        for name in names:
            log.info("bench: %s%s", name, " (quick)" if args.quick else "")
            results[name] = run_section(name, work_root, args.quick, meta["code"])
            log.info("bench: %s took %.1f s", name, results[name]["wall_s"])
    finally:
        if not args.keep_work:
            shutil.rmtree(work_root, ignore_errors=True)

    document.update(results)
    document["meta"] = meta
    document["targets"] = goals(document)
    write_json(path, document)
    print(format_table(results))
    print(f"\nwritten to {path}")
    failed = [n for n, r in results.items() if "error" in r]
    if failed:
        print(f"bench: section(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
