"""The site's own ClientApp process: it runs only code the site approved.

Flower's SuperNode starts a `flwr-clientapp` process for every message, and stock
`flwr-clientapp` installs the app bundle (FAB) pulled from the SuperLink and imports the
ClientApp from it, ahead of anything installed at the site: whoever runs `flwr run` chooses the
code that runs beside the hospital's data. `genofed site join` starts the SuperNode with a
private folder first on its PATH in which `flwr-clientapp` is this module. It runs Flower's own
ClientApp process (`flwr.supernode.runtime.run_clientapp`) with two changes:

- the bundle is hashed before a byte of it is unpacked and refused, with the category
  `unapproved-code` (the only thing the coordinator learns; the hash goes to the site's log),
  unless its sha256 is in the site's approvals (`genofed site approve --fab FILE | --app DIR`);
- with the approval `installed` the bundle is never unpacked or imported at all: the site runs
  its own installed, reviewed `client.app:app`, whatever the coordinator sent.

Either way the approved code's identity (`fab:<sha256>` or `installed:<sha256>`) is put in the
process environment for `client.identity.running_code`, so every reply and every signed receipt
says what the site ran, and the ledger records it.

Flower's `--trusted-entities` verifies signed FABs only for bundles from Flower Hub (a locally
built FAB is refused offline), so the approval by hash is the site's own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from client.identity import CODE_ENV
from shared.errors import InputError
from shared.fsio import write_json

APPROVALS = "approved-code.json"
APPROVALS_ENV = "GENOFED_APPROVALS"

log = logging.getLogger("genofed.launcher")


class UnapprovedCode(Exception):  # noqa: N818 (a refusal Flower reports by its text)
    """Raised instead of installing an unapproved bundle: its text is all Flower forwards."""

    def __init__(self) -> None:
        super().__init__("unapproved-code")


def fab_sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def read_approvals(path: Path) -> dict[str, Any]:
    """{"installed": bool, "fabs": {sha256: {...}}}; no file approves nothing."""
    if not path.exists():
        return {"installed": False, "fabs": {}}
    try:
        doc = json.loads(path.read_text())
        fabs = {str(k): dict(v) for k, v in doc.get("fabs", {}).items()}
        return {"installed": bool(doc.get("installed", False)), "fabs": fabs}
    except (OSError, ValueError, AttributeError, TypeError) as err:
        raise InputError(path, f"unreadable approvals ({err})") from err


def approve(state: Path, *, fab: Path | None = None, app: Path | None = None,
            installed: bool = False, note: str = "") -> str:
    """Record an approval in the site's state folder; returns what was approved."""
    path = Path(state) / APPROVALS
    doc = read_approvals(path)
    when = datetime.now(UTC).isoformat(timespec="seconds")
    if installed:
        from client.identity import installed_code

        doc["installed"] = True
        what = installed_code()
        doc["installed_at"] = {"code": what, "time": when, "note": note}
    else:
        if fab is not None:
            try:
                content = Path(fab).read_bytes()
            except OSError as err:
                raise InputError(fab, f"cannot read the app bundle ({err.strerror})") from err
        elif app is not None:
            from flwr.cli.build import build_fab_from_disk

            content = build_fab_from_disk(Path(app))
        else:
            raise InputError(None, "approve what: --fab FILE, --app DIR or --installed")
        digest = fab_sha256(content)
        doc["fabs"][digest] = {"time": when, "note": note,
                               "source": str(fab or app)}
        what = f"fab:{digest}"
    write_json(path, doc)
    return what


def _forget_packages() -> None:
    """Drop this process's genofed modules, so an approved bundle's own `client`, `server`,
    `shared` are imported from the bundle and not from the installed copy already loaded."""
    for name in list(sys.modules):
        if name.split(".")[0] in ("client", "server", "shared", "deploy"):
            del sys.modules[name]


def _load_installed(*_: Any) -> Any:
    from client.app import app

    return app


def guard(runtime: Any, approvals: dict[str, Any]) -> None:
    """Wrap Flower's ClientApp runtime so it installs and loads only approved code."""
    real_install: Callable[..., Any] = runtime.install_from_fab
    real_loader: Callable[..., Any] = runtime.get_load_client_app_fn

    def checked_install(content: bytes, *args: Any, **kwargs: Any) -> Any:
        digest = fab_sha256(content)
        if approvals["installed"]:
            from client.identity import installed_code

            os.environ[CODE_ENV] = installed_code()
            log.info("bundle %s received; running the site's installed code %s", digest,
                     os.environ[CODE_ENV])
            return None  # never unpacked
        if digest not in approvals["fabs"]:
            log.error("REFUSED app bundle %s: not approved at this site", digest)
            raise UnapprovedCode()
        os.environ[CODE_ENV] = f"fab:{digest}"
        log.info("running approved app bundle %s", digest)
        result = real_install(content, *args, **kwargs)
        _forget_packages()
        return result

    def loader(*args: Any, **kwargs: Any) -> Callable[[str, str, str], Any]:
        if approvals["installed"]:
            return _load_installed
        return real_loader(*args, **kwargs)

    runtime.install_from_fab = checked_install
    runtime.get_load_client_app_fn = loader


def main() -> None:
    """`flwr-clientapp`, as `genofed site join` puts it on the SuperNode's PATH."""
    logging.basicConfig(level=logging.INFO)
    path = os.environ.get(APPROVALS_ENV)
    if not path:
        raise SystemExit("genofed launcher: GENOFED_APPROVALS is not set (start the site "
                         "with `genofed site join`)")
    import flwr.supernode.runtime.run_clientapp as runtime
    from flwr.supernode.cli.flwr_clientapp import flwr_clientapp

    guard(runtime, read_approvals(Path(path)))
    flwr_clientapp()


if __name__ == "__main__":
    main()
