"""`genofed site ...`: what a hospital's data steward runs beside its data."""

from __future__ import annotations

import argparse
from pathlib import Path


def _check(args: argparse.Namespace) -> int:
    from client.data import load_site
    from shared.runconfig import RunSettings

    data = load_site(Path(args.data), RunSettings().encoder())
    n = len(data.cohort)
    print(f"{args.data}: {n} people, {int(data.cohort.phenotype.sum())} cases, "
          f"{int(data.found.sum())}/{len(data.panel)} panel variants found")
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("site", help="a hospital's node: check data, score patients")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    check = sub.add_parser("check", help="validate a site's data folder before joining")
    check.add_argument("--data", required=True, help="site data folder")
    check.set_defaults(func=_check)
