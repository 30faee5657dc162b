"""`genofed coordinator ...`: what the consortium's coordinator runs."""

from __future__ import annotations

import argparse


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("coordinator", help="the aggregation server")
    parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
