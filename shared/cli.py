"""The one `genofed` command, with a sub-command group per role.

`audit` and `model` belong to `shared`. The role groups (`site`, `coordinator`, `deploy`, and
`cohort`, the simulator in `deploy`) are found through the `genofed.commands` entry points, so
`shared` never imports `client`, `server` or `deploy`. Each group module exposes
`register(subparsers)`, adding one parser whose sub-commands set `func(args) -> int`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from importlib.metadata import entry_points

from shared.errors import GenofedError

# Groups that live in `shared` itself: name -> module exposing `register(subparsers)`.
_SHARED_GROUPS = {"audit": "shared.audit", "model": "shared.model_cli"}


# genofed's own loggers; progress goes to stderr through them, results to stdout.
LOGGERS = ("shared", "client", "server", "deploy")


def setup_logging(level: int = logging.INFO) -> None:
    """Progress messages of genofed's modules on stderr, as plain lines (idempotent)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.propagate = False  # Flower and Ray configure the root logger: print once
        if not any(getattr(h, "genofed", False) for h in logger.handlers):
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(message)s"))
            handler.genofed = True  # type: ignore[attr-defined]
            logger.addHandler(handler)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="genofed",
        description="Federated DP training of genomic disease-risk transformers.",
    )
    groups = parser.add_subparsers(dest="group", metavar="GROUP", required=True)
    for module in _SHARED_GROUPS.values():
        importlib.import_module(module).register(groups)
    for ep in sorted(entry_points(group="genofed.commands"), key=lambda e: e.name):
        ep.load()(groups)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    setup_logging()
    func = getattr(args, "func", None)
    if func is None:
        parser.parse_args([args.group, "--help"])
        return 2
    try:
        return int(func(args) or 0)
    except GenofedError as err:
        print(f"genofed: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("genofed: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
