"""Writing files so that a crash never leaves a half-written one behind.

Everything genofed persists (checkpoints, privacy ledgers, results, caches) goes through
`atomic_write`: write to a temporary file in the same directory, fsync, then rename.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from shared.errors import GenofedError, InputError


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "w", perms: int | None = None) -> Iterator[IO[Any]]:
    """Yield a file object; on clean exit it replaces `path` atomically, on error it vanishes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        if perms is not None:
            os.fchmod(fd, perms)
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj: Any, perms: int | None = None) -> None:
    """Atomically write `obj` as indented JSON (mode `perms`, else mkstemp's 0600)."""
    with atomic_write(path, perms=perms) as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)
        fh.write("\n")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file's bytes, streamed."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def create_exclusive(path: Path, data: bytes, perms: int) -> None:
    """Write `path` atomically, failing if it exists, never replacing it.

    `atomic_write` renames over its target; for a key an existing file must win even if it
    appears between our check and our write, so the finished temporary file is hard-linked
    into place (``link`` fails on an existing name) instead of renamed. `perms` is set on the
    file descriptor, so the umask cannot widen it.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, perms)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:
            raise GenofedError(f"{path}: already exists; refusing to overwrite it") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make a new directory entry survive a crash (best effort: not every FS allows it)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def read_input(path: str | Path, what: str) -> bytes:
    """The bytes of a file a user named as `what`; one `InputError` naming it otherwise."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, f"no such file (expected {what})") from None
    except IsADirectoryError:
        raise InputError(path, f"is a folder, expected {what}") from None
    except OSError as err:
        raise InputError(path, f"cannot read {what}: {err.strerror}") from None
