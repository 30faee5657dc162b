"""`genofed site ...`: what a hospital's data steward runs beside its data."""

from __future__ import annotations

import argparse
from pathlib import Path

from shared.errors import InputError

_FILES = ("vcf", "cohort", "panel", "reference")


def _site_files(args: argparse.Namespace) -> dict[str, Path | tuple[Path, ...]]:
    """The four files to check: the data folder's, overridden by any explicit flag."""
    explicit = {name: getattr(args, name) for name in _FILES}
    files: dict[str, Path] = {}
    if args.data is not None:
        from client.data import SitePaths

        paths = SitePaths.in_folder(args.data)
        files = {name: getattr(paths, name) for name in _FILES}
        files["vcf"] = paths.genotypes  # per-chromosome files: all of them
    files.update({name: Path(value) for name, value in explicit.items() if value is not None})
    missing = [name for name in _FILES if name not in files]
    if missing:
        flags = ", ".join(f"--{name}" for name in missing)
        raise InputError(None, f"give --data DIR or all of --vcf, --cohort, --panel and "
                               f"--reference (missing: {flags})")
    return files


def _check(args: argparse.Namespace) -> int:
    from client.check import check_site, format_report
    from client.settings import SiteSettings
    from shared.fsio import write_json

    own = SiteSettings()  # the folder's site.toml says how to read it, as for training
    if args.data is not None:
        own = SiteSettings.load(Path(args.data))
    report = check_site(**_site_files(args), cohort_spec=own.cohort if args.data else None,
                        min_quality=own.genotypes.min_imputation_quality,
                        min_group_size=own.privacy.min_group_size,
                        ancestry_groups=own.ancestry.groups)
    for line in format_report(report):
        print(line)
    if args.json:
        write_json(args.json, report.to_dict())
        print(f"wrote the summary and findings to {args.json}")
    return 0 if report.ok else 1


def _predict(args: argparse.Namespace) -> int:
    from client.predict import predict_site

    n = predict_site(checkpoint=Path(args.model), data=Path(args.data), out=Path(args.out),
                     people=Path(args.people) if args.people else None,
                     explain=args.explain)
    why = f", each with its {args.explain} strongest variants" if args.explain else ""
    print(f"wrote {n} risk scores{why} to {args.out}")
    return 0


def _state(args: argparse.Namespace) -> Path:
    return Path(args.state) if args.state else Path(args.data) / ".genofed-state"


def _budget(args: argparse.Namespace) -> int:
    from client.privacy_state import open_ledger
    from client.settings import SiteSettings

    budget = SiteSettings.load(Path(args.data)).privacy
    with open_ledger(Path(args.data), _state(args), budget.accountant) as ledger:
        spent = ledger.epsilon(budget.delta)
        print(f"privacy ledger {ledger.ledger_id} ({ledger.path}): epsilon {spent:.3f} of "
              f"{budget.max_epsilon:g} spent at delta {budget.delta:g} over "
              f"{len(ledger.history)} releases in {len(ledger.runs)} runs")
    return 0


def _reset_budget(args: argparse.Namespace) -> int:
    from client.privacy_state import reset_budget
    from client.settings import SiteSettings

    budget = SiteSettings.load(Path(args.data)).privacy
    new = reset_budget(Path(args.data), _state(args), budget.accountant, args.reason)
    print(f"new privacy ledger {new} for {args.data}; the reset and its reason are recorded "
          "in the data folder's binding file")
    return 0


def _keygen(args: argparse.Namespace) -> int:
    from client.identity import IDENTITY, keygen

    folder = Path(args.out) if args.out else Path(args.state) / IDENTITY
    paths = keygen(folder, args.name)
    print(f"wrote {folder} (mode 0700): {', '.join(p.name for p in paths.values())}")
    print(f"send the coordinator ONLY {paths['auth.pub']} (it registers your SuperNode) and "
          f"{paths['receipt.pub']} (it checks your signed receipts); the .key files never "
          "leave this machine")
    return 0


def _approve(args: argparse.Namespace) -> int:
    from client.launcher import approve

    what = approve(Path(args.state), fab=Path(args.fab) if args.fab else None,
                   app=Path(args.app) if args.app else None, installed=args.installed,
                   note=args.note or "")
    print(f"approved {what} for this site (recorded in {Path(args.state)})")
    return 0


def _join(args: argparse.Namespace) -> int:
    from client.join import join

    return join(name=args.name, data=Path(args.data), state=Path(args.state),
                superlink=args.superlink, root_certificates=args.root_certificates,
                port=args.port)


def register(groups: argparse._SubParsersAction) -> None:
    parser = groups.add_parser("site", help="a hospital's node: check data, score patients")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    check = sub.add_parser(
        "check",
        help="validate a site's data before joining a federation",
        description="Check a site's VCF/BCF (+ index), cohort table, panel and reference FASTA. "
        "Prints a summary and one line per problem; exits 0 when there is no error (warnings "
        "do not fail), 1 when there is one. Writes nothing except --json.",
    )
    check.add_argument("--data", help="site data folder (genotypes.vcf.gz or genotypes.bcf, "
                       "reference.fa, cohort.tsv, panel.tsv)")
    check.add_argument("--vcf", help="genotypes VCF/BCF (overrides the folder's)")
    check.add_argument("--cohort", help="cohort table (overrides the folder's)")
    check.add_argument("--panel", help="variant panel TSV (overrides the folder's)")
    check.add_argument("--reference", help="reference FASTA with .fai (overrides the folder's)")
    check.add_argument("--json", metavar="FILE", help="also write the summary and findings as "
                       "JSON")
    check.set_defaults(func=_check)

    predict = sub.add_parser("predict", help="score the site's people with a model checkpoint")
    predict.add_argument("--model", required=True, metavar="CHECKPOINT",
                         help="global model checkpoint from the coordinator")
    predict.add_argument("--data", required=True, help="site data folder")
    predict.add_argument("--out", required=True, metavar="FILE",
                         help="where to write sample_id, risk_probability (TSV)")
    predict.add_argument("--people", metavar="TABLE",
                         help="score the people this table lists (its sample column only is "
                              "needed) instead of the cohort table's")
    predict.add_argument("--explain", type=int, nargs="?", const=3, default=0, metavar="K",
                         help="add each person's K (default 3) variants that moved their score "
                              "most (integrated gradients from the all-hom-ref genotype), in "
                              "the same local file: nothing leaves the site")
    predict.set_defaults(func=_predict)

    keys = sub.add_parser(
        "keygen", help="make this site's own keys (SuperNode authentication, receipts)",
        description="Make the site's SuperNode authentication key pair and its receipt "
        "signing key pair, private keys mode 0600 in a 0700 folder. The coordinator receives "
        "only the public halves.",
    )
    keys.add_argument("--name", required=True, help="the site's name in the federation")
    keys.add_argument("--state", help="state folder (keys go to STATE/identity)")
    keys.add_argument("--out", help="folder for the keys instead of STATE/identity")
    keys.set_defaults(func=_keygen)

    approve = sub.add_parser(
        "approve", help="approve the code this site will run (an app bundle, or its own)",
        description="A site runs only code it approved: the sha256 of an app bundle it "
        "reviewed (--fab FILE, or --app DIR to build the bundle from a reviewed source tree "
        "exactly as `flwr run` does), or --installed: always its own installed genofed, "
        "whatever bundle the coordinator sends. Enforced by `genofed site join`.",
    )
    approve.add_argument("--state", required=True, help="the site's state folder")
    which = approve.add_mutually_exclusive_group(required=True)
    which.add_argument("--fab", help="an app bundle file (.fab) to approve by hash")
    which.add_argument("--app", help="a reviewed app source folder (pyproject.toml) to approve")
    which.add_argument("--installed", action="store_true",
                       help="run this machine's installed genofed, never a bundle's code")
    approve.add_argument("--note", help="why, by whom (recorded)")
    approve.set_defaults(func=_approve)

    join = sub.add_parser(
        "join", help="start this site's SuperNode, running only approved code",
        description="Starts flower-supernode with TLS and this site's own authentication key "
        "(STATE/identity/auth.key), its data and state folders, and a ClientApp launcher that "
        "refuses any app bundle the site has not approved (genofed site approve).",
    )
    join.add_argument("--name", required=True, help="the site's name in the federation")
    join.add_argument("--data", required=True, help="site data folder")
    join.add_argument("--state", required=True, help="site state folder")
    join.add_argument("--superlink", required=True, metavar="HOST:PORT")
    join.add_argument("--root-certificates", required=True, metavar="CA",
                      help="the consortium CA certificate")
    join.add_argument("--port", type=int, default=9094,
                      help="the SuperNode's local Runtime API port (loopback only)")
    join.set_defaults(func=_join)

    spent = sub.add_parser("budget", help="show the privacy budget spent on this data")
    spent.add_argument("--data", required=True, help="site data folder")
    spent.add_argument("--state", help="state folder (default: DATA/.genofed-state)")
    spent.set_defaults(func=_budget)

    reset = sub.add_parser(
        "reset-budget",
        help="start a new privacy ledger for this data (only after a ledger was lost)",
        description="The data folder names the privacy ledger that accounts for it; a site "
        "whose ledger is missing refuses to train or evaluate. This starts a new, empty "
        "ledger, keeps the old file if there is one, and records the reset, its time and "
        "reason in the data folder. Everything spent before is NOT forgotten by the patients' "
        "privacy: only reset when the ledger is truly lost and you accept that.",
    )
    reset.add_argument("--data", required=True, help="site data folder")
    reset.add_argument("--state", help="state folder (default: DATA/.genofed-state)")
    reset.add_argument("--reason", required=True, help="why (recorded)")
    reset.set_defaults(func=_reset_budget)
