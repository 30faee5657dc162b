"""`genofed deploy ...`: stand a federation up on this machine."""

from __future__ import annotations

import argparse
from pathlib import Path


def _demo(args: argparse.Namespace) -> int:
    from deploy.demo import run_demo

    run_demo(Path(args.out), args.sites, args.rounds, args.seed, args.people)
    return 0


def _local(args: argparse.Namespace) -> int:
    from deploy.demo import run_local_demo

    run_local_demo(Path(args.out), args.sites, args.rounds, args.seed, args.people)
    return 0


def _init(args: argparse.Namespace) -> int:
    from deploy.init import init_deployment, summary_lines

    sites = [name for item in args.sites for name in item.split(",") if name]
    out = Path(args.out)
    doc = init_deployment(
        out, sites, args.host, args.ip, args.port, args.force, bind=args.bind,
        data_path=args.data_path, state_path=args.state_path, days=args.days,
    )
    for line in summary_lines(doc, out):
        print(line)
    return 0


def _add_init(sub: argparse._SubParsersAction) -> None:
    from deploy import init as defaults

    init = sub.add_parser(
        "init", help="create the CA, certificates, keys and configs for a real consortium",
        description="Write a private CA and the SuperLink's TLS certificate, one SuperNode "
        "authentication key pair and config bundle per site, the coordinator's ledger key, "
        "and the exact flower-superlink / flower-superexec / flower-supernode command lines. "
        "Refuses to touch an existing deployment unless --force.",
    )
    init.add_argument("--out", required=True, help="output folder")
    init.add_argument("--sites", required=True, nargs="+", metavar="NAMES",
                      help="site names, comma- or space-separated (letters, digits, - and _)")
    init.add_argument("--host", required=True, action="append", metavar="HOST",
                      help="the SuperLink's DNS name as sites reach it (repeat for more "
                      "certificate names; the first is the address sites dial)")
    init.add_argument("--ip", action="append", default=[], metavar="IP",
                      help="an IP address of the SuperLink for its certificate (repeatable)")
    init.add_argument("--port", type=int, default=defaults.DEFAULT_PORT,
                      help="the SuperLink's one port: Fleet, Control and Runtime APIs "
                      f"(default {defaults.DEFAULT_PORT})")
    init.add_argument("--bind", default=defaults.DEFAULT_BIND,
                      help="address the SuperLink listens on (default %(default)s; use the "
                      "interface only the consortium network reaches)")
    init.add_argument("--data-path", default=defaults.DEFAULT_DATA_PATH,
                      help="each site's data folder on its own machine; {site} stands for the "
                      "site's name (default %(default)s)")
    init.add_argument("--state-path", default=defaults.DEFAULT_STATE_PATH,
                      help="each site's state folder (privacy ledger, genotype cache; "
                      "default %(default)s)")
    init.add_argument("--days", type=int, default=defaults.DEFAULT_DAYS,
                      help="validity of the CA and server certificates (default %(default)s)")
    init.add_argument("--force", action="store_true",
                      help="replace an existing deployment's files (new CA and keys: every "
                      "site must get its new bundle and be registered again)")
    init.set_defaults(func=_init)


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
    local = sub.add_parser(
        "local", help="the demo through real TLS SuperLink/SuperNode processes on loopback"
    )
    local.add_argument("--out", default="demo-out", help="output folder (generated)")
    local.add_argument("--sites", type=int, default=3)
    local.add_argument("--rounds", type=int, default=3)
    local.add_argument("--seed", type=int, default=0)
    local.add_argument("--people", type=int, default=1000, help="people per ancestry")
    local.set_defaults(func=_local)
    _add_init(sub)
