"""User-facing errors.

A hospital's data steward must get one line that names the file, the record and the problem,
not a traceback. Code that finds bad input raises `InputError`; the CLI prints its message and
exits non-zero.
"""

from __future__ import annotations

from pathlib import Path


class GenofedError(Exception):
    """An expected failure whose message is complete on one line."""

    exit_code = 2


class InputError(GenofedError):
    """Bad input data: names the file, the record (if any) and the problem."""

    def __init__(self, path: str | Path | None, problem: str, record: str | None = None) -> None:
        self.path = str(path) if path is not None else None
        self.problem = problem
        self.record = record
        parts = [p for p in (self.path, record) if p]
        where = ": ".join(parts)
        super().__init__(f"{where}: {problem}" if where else problem)


class FederationError(GenofedError):
    """A federated run that failed, halted or ended without the rounds it was asked for."""

    exit_code = 3
