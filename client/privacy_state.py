"""The site's privacy ledger on disk: one writer at a time, bound to the data it accounts for.

Two guarantees a budget needs beyond the arithmetic in `shared.privacy`:

- **No lost spend under concurrency.** `open_ledger` holds an exclusive `flock` on a lock file
  beside the ledger for the whole load -> calibrate -> release -> record sequence, so two runs
  (or two rounds) on one site serialize instead of both starting from the same history.
- **No silent reset.** The data folder carries a marker (`BINDING`) naming the ledger that
  accounts for it. A ledger that is missing, or a state folder re-pointed elsewhere, is refused
  with one clear line until the data steward runs `genofed site reset-budget`, which is
  recorded in the marker with the time and the ledger it replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from shared.errors import InputError
from shared.fsio import write_json
from shared.privacy import PrivacyLedger

LEDGER_NAME = "privacy-ledger.json"
LOCK_NAME = "privacy-ledger.lock"
BINDING = ".genofed-privacy-binding.json"

log = logging.getLogger(__name__)


def _read_binding(data_path: Path) -> dict | None:
    path = data_path / BINDING
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
        str(doc["ledger_id"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise InputError(path, f"unreadable privacy binding ({err})") from err
    return doc


def _write_binding(data_path: Path, ledger: PrivacyLedger, previous: dict | None) -> None:
    doc = dict(previous or {})
    doc.update({"ledger_id": ledger.ledger_id, "ledger_path": str(ledger.path.resolve())})
    doc.setdefault("resets", [])
    try:
        write_json(data_path / BINDING, doc)
    except OSError as err:
        raise InputError(data_path, "cannot write the privacy binding into the data folder "
                                    f"({err.strerror}): run `genofed site budget --data "
                                    f"{data_path}` once with write access, which binds the "
                                    "ledger; the folder can be read-only after that") from err


@contextlib.contextmanager
def open_ledger(data_path: Path, state_path: Path, accountant: str) -> Iterator[PrivacyLedger]:
    """The site's ledger, exclusively locked until the block ends, checked against the data
    folder's binding (created on first use)."""
    data_path, state_path = Path(data_path), Path(state_path)
    state_path.mkdir(parents=True, exist_ok=True)
    with open(state_path / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            path = state_path / LEDGER_NAME
            binding = _read_binding(data_path)
            if binding is not None and not path.exists():
                raise InputError(
                    path, f"privacy ledger {binding['ledger_id']} of this data folder is "
                    f"missing (last seen at {binding.get('ledger_path')}); restore it, or run "
                    "`genofed site reset-budget` to start from zero (the reset is recorded)")
            ledger = PrivacyLedger.load(path, accountant)
            if binding is not None and binding["ledger_id"] != ledger.ledger_id:
                raise InputError(
                    path, f"this privacy ledger ({ledger.ledger_id}) is not the one bound to "
                    f"the data folder ({binding['ledger_id']}, at {binding.get('ledger_path')})"
                    "; point the site at that state folder, or run `genofed site reset-budget`")
            if not path.exists():
                ledger.save()
            if binding is None:
                _write_binding(data_path, ledger, binding)
            elif binding.get("ledger_path") != str(path.resolve()):
                # The same ledger, moved with its state folder: note where, if we may write.
                with contextlib.suppress(InputError):
                    _write_binding(data_path, ledger, binding)
            yield ledger
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def reset_budget(data_path: Path, state_path: Path, accountant: str, reason: str) -> str:
    """Start a new, empty ledger for this data folder and record why; returns its id.

    The old ledger file (if any) is kept beside the new one under its id, never deleted.
    """
    data_path, state_path = Path(data_path), Path(state_path)
    state_path.mkdir(parents=True, exist_ok=True)
    with open(state_path / LOCK_NAME, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            binding = _read_binding(data_path) or {}
            path = state_path / LEDGER_NAME
            if path.exists():
                old = PrivacyLedger.load(path, accountant)
                path.rename(state_path / f"privacy-ledger.{old.ledger_id}.json")
            ledger = PrivacyLedger(path=path, accountant=accountant)
            ledger.save()
            resets = list(binding.get("resets", []))
            resets.append({"time": datetime.now(UTC).isoformat(timespec="seconds"),
                           "replaced": binding.get("ledger_id"), "new": ledger.ledger_id,
                           "reason": reason})
            _write_binding(data_path, ledger, {**binding, "resets": resets})
            log.warning("privacy budget of %s reset: new ledger %s (replaced %s): %s",
                        data_path, ledger.ledger_id, binding.get("ledger_id"), reason)
            return ledger.ledger_id
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
