"""`genofed deploy ...`: stand a federation up on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from deploy.demo import run_demo

    run_demo(Path(args.out), args.sites, args.rounds, args.seed, args.people)
    return 0


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("deploy", help="stand a federation up on this machine")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = sub.add_parser("demo", help="simulate a cohort and run the federation end to end")
    demo.add_argument("--out", default="demo-out", help="output folder (generated)")
    demo.add_argument("--sites", type=int, default=3)
    demo.add_argument("--rounds", type=int, default=5)
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--people", type=int, default=2000, help="people per ancestry")
    demo.set_defaults(func=_demo)
