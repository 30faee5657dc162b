"""`genofed audit`: what a hospital's auditor runs, holding only the coordinator's public key.

The auditor never needs the coordinator's cooperation: `verify` checks the signed round ledger
(see `shared.ledger`) offline and names the first record that was altered, moved, removed or
cut off. `report` turns the verified records into a self-contained HTML page (and CSV / JSON)
with per-population metrics, plots and the round log (`shared.audit.report` for the data,
`shared.audit.page` for the page). `keygen` is for the coordinator, to create the signing key
once before the first run.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from shared.errors import GenofedError
from shared.ledger import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    verify_with_records,
)
from shared.receipts import SiteRegistry, check_round, load_pem_public


def _cmd_verify(args: argparse.Namespace) -> int:
    """Exit 0 for a sound ledger, 1 for a tampered one, 2 (via InputError) for wrong paths.

    Distinct codes let a scheduled audit job tell "the evidence is bad" from "the job is
    misconfigured".
    """
    public_key = load_public_key(args.key)
    result, bodies = verify_with_records(args.ledger, public_key)
    if not result.ok:
        index = result.first_bad if result.first_bad is not None else result.records
        print(f"FAILED: record {index} (line {index + 1}): {result.reason}")
        return 1
    registry, source = _registry(args, bodies)
    previous = None
    for index, body in enumerate(bodies):
        if body.get("kind", "round") != "round" or registry is None:
            continue
        problem = check_round(body, registry, previous)
        previous = body
        if problem:
            print(f"FAILED: record {index} (line {index + 1}): site receipts: {problem}")
            return 1
    print(f"OK: {result.records} records, signed by key {result.key_id}")
    print(f"site receipts: {source}")
    # A hash chain cannot show records cut off its end; comparing this value with one
    # recorded earlier can.
    print(f"last hash: {result.last_hash}")
    return 0


def _registry(args: argparse.Namespace, bodies: list[dict]) -> tuple[SiteRegistry | None, str]:
    """The sites' keys to check receipts with: the auditor's own copy (--sites), else the
    ledger's genesis record, which only the coordinator vouches for."""
    if args.sites is not None:
        return SiteRegistry.load(args.sites), f"verified against {args.sites}"
    genesis = bodies[0] if bodies and bodies[0].get("kind") == "genesis" else None
    if genesis is None:
        return None, "NOT checked (no genesis record and no --sites)"
    registry = SiteRegistry({name: load_pem_public(entry["receipt_pub"])
                             for name, entry in genesis["sites"]["sites"].items()})
    return registry, ("verified against the keys in the ledger's genesis record (as the "
                      "coordinator recorded them; pass --sites with keys from the sites)")


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
    p.add_argument(
        "--sites", type=Path, metavar="REGISTRY",
        help="the sites' public receipt keys (site-registry.json, from the sites themselves): "
        "every site's receipt in every round is checked against them",
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


def _cmd_report(args: argparse.Namespace) -> int:
    """Write the report; exit 0 if the ledger verified, 1 if not (the report is still written,
    showing the verified prefix under a failure banner), 2 (InputError) for wrong paths or key.
    """
    # Imported here so `genofed audit verify` does not pay for the report's imports (Jinja2).
    from shared.audit import page, report

    if args.out is None and args.csv is None and args.json is None:
        raise GenofedError("audit report: give at least one of --out, --csv, --json")
    data = report.build_report(args.ledger, args.key)
    view = None
    if args.explanation is not None:
        from shared.audit.explanation import load_explanation

        view = load_explanation(args.explanation, data)
    if args.out is not None:
        page.write_html(data, args.out, view)
        print(f"wrote {args.out}")
    if args.csv is not None:
        report.write_csv(data, args.csv)
        print(f"wrote {args.csv}")
    if args.json is not None:
        report.write_json(data, args.json)
        print(f"wrote {args.json}")
    if data.ok:
        print(f"OK: {data.records} records, signed by key {data.key_id}")
        print(f"last hash: {data.last_hash}")
        return 0
    index = data.first_bad if data.first_bad is not None else data.records
    print(f"FAILED: record {index} (line {index + 1}): {data.reason}")
    plural = "" if data.records == 1 else "s"
    print(f"the report shows only the {data.records} verified record{plural} before it")
    return 1


def _register_report(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "report",
        help="write an auditor's HTML report (and CSV / JSON) of a verified ledger",
        description="Verify a round ledger and write a self-contained HTML report: "
        "verification status, per-population metrics of the latest round, AUROC / calibration "
        "/ privacy plots and the round log. A ledger that fails verification still gets a "
        "report of its verified prefix under a failure banner. Exit 0: intact; 1: tampered or "
        "truncated; 2: bad paths or key.",
    )
    p.add_argument("ledger", type=Path, metavar="LEDGER", help="the ledger (JSON lines)")
    p.add_argument(
        "--key",
        type=Path,
        required=True,
        metavar="PUBKEY",
        help="the coordinator's public key (PEM, e.g. ledger.pub)",
    )
    p.add_argument("--out", type=Path, metavar="HTML", help="write the HTML report here")
    p.add_argument(
        "--csv", type=Path, metavar="FILE", help="write per round x population metrics as CSV"
    )
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report data as JSON")
    p.add_argument(
        "--explanation", type=Path, metavar="FILE",
        help="add the variant-effect section from `genofed model explain`'s explanation.json",
    )
    p.set_defaults(func=_cmd_report)


# One entry per `genofed audit` sub-command.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction], None], ...] = (
    _register_verify,
    _register_report,
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
