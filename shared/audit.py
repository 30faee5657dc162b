"""`genofed audit`: what a hospital's auditor runs, holding only the coordinator's public key.

The auditor never needs the coordinator's cooperation: `verify` checks the signed round ledger
(see `shared.ledger`) offline and names the first record that was altered, moved, removed or
cut off. `keygen` is for the coordinator, to create the signing key once before the first run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from shared.ledger import (
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    verify_ledger,
)

PRIVATE_KEY_NAME = "ledger.key"
PUBLIC_KEY_NAME = "ledger.pub"


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 for a sound ledger, 1 for a tampered one, 2 (via InputError) for wrong paths.

    Distinct codes let a scheduled audit job tell "the evidence is bad" from "the job is
    misconfigured".
    """
    public_key = load_public_key(args.key)
    result = verify_ledger(args.ledger, public_key)
    if result.ok:
        print(f"OK: {result.records} records, signed by key {result.key_id}")
        # A hash chain cannot show records cut off its end; comparing this value with one
        # recorded earlier can.
        print(f"last hash: {result.last_hash}")
        return 0
    index = result.first_bad if result.first_bad is not None else result.records
    print(f"FAILED: record {index} (line {index + 1}): {result.reason}")
    return 1


def _cmd_keygen(args: argparse.Namespace) -> int:
    """Create the coordinator's key pair; an existing key is never replaced (GenofedError)."""
    out = Path(args.out)
    private_path, public_path = out / PRIVATE_KEY_NAME, out / PUBLIC_KEY_NAME
    generate_signing_key(private_path, public_path)
    kid = key_id(load_private_key(private_path).public_key())
    print(f"wrote {private_path} (private, mode 0600: keep it on the coordinator)")
    print(f"wrote {public_path} (public: give it to auditors)")
    print(f"key id: {kid}")
    return 0


def _register_verify(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "verify",
        help="check a round ledger's hash chain and signatures",
        description="Verify every record of a round ledger. Exit 0: intact; 1: tampered or "
        "truncated (the first bad record is named); 2: bad paths or key.",
    )
    p.add_argument("ledger", type=Path, metavar="LEDGER", help="the ledger (JSON lines)")
    p.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="PUBKEY",
        help="the coordinator's public key (PEM, e.g. ledger.pub)",
    )
    p.set_defaults(func=_cmd_verify)


def _register_keygen(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "keygen",
        help="create the coordinator's ledger signing key",
        description=f"Write DIR/{PRIVATE_KEY_NAME} (mode 0600) and DIR/{PUBLIC_KEY_NAME}. "
        "Refuses to overwrite an existing key.",
    )
    p.add_argument(
        "--out",
        type=Path,
        required=True,
        metavar="DIR",
        help="directory for the key pair (created if missing)",
    )
    p.set_defaults(func=_cmd_keygen)


# One entry per `genofed audit` sub-command. A later `audit report` (a human-readable summary
# of a verified ledger: build it on `shared.ledger.read_verified`) adds its `_register_report`
# here.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_verify,
    _register_keygen,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `audit` group to the top-level `genofed` parser (called by `shared.cli`)."""
    group = subparsers.add_parser(
        "audit",
        help="verify the signed round ledger; manage its signing key",
        description="Audit a federation's signed round ledger.",
    )
    commands = group.add_subparsers(dest="audit_command", metavar="COMMAND", required=True)
    for add in _SUBCOMMANDS:
        add(commands)
