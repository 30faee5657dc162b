"""`genofed deploy ...`: stand a federation up on this machine."""

from __future__ import annotations

import argparse
import json
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


def _add_site(args: argparse.Namespace) -> int:
    import shlex

    from deploy.init import REGISTRY, add_site_keys

    out = Path(args.out)
    register = add_site_keys(out, args.site, Path(args.auth_pub), Path(args.receipt_pub),
                             force=args.force)
    doc = json.loads((out / "deployment.json").read_text())
    keys = doc["sites"][args.site]["keys"]
    print(f"added {args.site}'s public keys to {out} (receipt key id {keys['receipt_key_id']}, "
          f"auth.pub sha256 {keys['auth_pub_sha256'][:16]}); site registry: {out / REGISTRY}")
    print(f"  next, let its SuperNode join (flwr CLI set up as init printed): "
          f"{shlex.join(register)}")
    if args.force:
        print("  if the site's old key was registered, remove that node: flwr supernode list "
              f"{register[-1]}; flwr supernode unregister NODE_ID {register[-1]}")
    print("  the ServerApp reads the registry when a run starts: runs already going keep "
          "the old one")
    return 0


def _add_init(sub: argparse._SubParsersAction) -> None:
    from deploy import init as defaults

    init = sub.add_parser(
        "init", help="create the CA, certificates, keys and configs for a real consortium",
        description="Write a private CA and the SuperLink's TLS certificate, one config bundle "
        "per site, the coordinator's ledger key, an empty site registry, and the exact "
        "flower-superlink / flower-superexec / flower-supernode command lines. No site key: "
        "each site makes its own (genofed site keygen) and sends only the public halves "
        "(genofed deploy add-site). Refuses to touch an existing deployment unless --force.",
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
                      help="replace an existing deployment's files (new CA and coordinator "
                      "keys: every site must get its new bundle; registered site keys are kept)")
    init.set_defaults(func=_init)

    add = sub.add_parser(
        "add-site", help="register a site's public keys (auth.pub, receipt.pub)",
        description="Check the public keys a site made with `genofed site keygen` (auth.pub: "
        "OpenSSH ecdsa-sha2-nistp384; receipt.pub: Ed25519 PEM), copy them to "
        "coordinator/sites/NAME/, add the receipt key to coordinator/site-registry.json and "
        "print the `flwr supernode register` command. Private keys are refused: they never "
        "leave the site.",
    )
    add.add_argument("--out", required=True, help="the deployment folder (init's --out)")
    add.add_argument("--site", required=True, help="the site's name in the deployment")
    add.add_argument("--auth-pub", required=True, metavar="FILE",
                     help="the site's SuperNode public key (auth.pub)")
    add.add_argument("--receipt-pub", required=True, metavar="FILE",
                     help="the site's receipt public key (receipt.pub)")
    add.add_argument("--force", action="store_true",
                     help="replace keys the site registered before (a lost or stolen key)")
    add.set_defaults(func=_add_site)


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
