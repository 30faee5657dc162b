"""`genofed coordinator ...`: what the consortium's coordinator runs beside `flwr run`."""

from __future__ import annotations

import argparse
from pathlib import Path


def _status(args: argparse.Namespace) -> int:
    from server.status import format_status, run_status

    status = run_status(Path(args.out_dir), Path(args.key) if args.key else None)
    for line in format_status(status):
        print(line)
    return 0 if status.ledger_ok else 1


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("coordinator", help="the aggregation server's run and model")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    status = sub.add_parser(
        "status",
        help="rounds done, ledger verified, per-ancestry AUROC, ε per site, the verified model",
        description="Verify a run's ledger and name the model checkpoint whose weights the "
        "ledger signed last. Exits 1 if the ledger does not verify.",
    )
    status.add_argument("out_dir", metavar="OUT_DIR", help="the run's out-dir")
    status.add_argument("--key", help="ledger public key (default OUT_DIR/keys/ledger.pub)")
    status.set_defaults(func=_status)
