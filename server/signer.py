"""The ledger signer: the only process that holds the coordinator's ledger key.

The ServerApp is code submitted with `flwr run`. In a deployment it never holds the ledger key:
it sends each record it wants signed over a Unix socket to this process (`genofed coordinator
signer`), which appends the record only if it is well formed. A round record must be backed by
the sites' own receipts (`shared.receipts.check_round`, against the site registry this process
was started with), follow the previous round of its run, and be of a run the ledger announced.
So whoever submits a ServerApp can at worst withhold records; it cannot make the ledger say what
a site did not sign, nor sign anything without the key's holder seeing it.

Protocol: one JSON object per line each way. Request `{"append": BODY}` or `{"count": true}`;
answer `{"record": RECORD}` / `{"count": N}`, or `{"error": TEXT}`.
"""

from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

from shared.errors import GenofedError
from shared.ledger import Ledger, read_records
from shared.receipts import SiteRegistry, check_round

MAX_REQUEST_BYTES = 16 * 1024 * 1024
log = logging.getLogger(__name__)


class SignerCore:
    """What the signer checks before it signs (kept apart from the socket, to test it)."""

    def __init__(self, ledger: Ledger, registry: SiteRegistry) -> None:
        self.ledger = ledger
        self.registry = registry
        self.lock = threading.Lock()
        bodies = read_records(ledger.path) if ledger.path.exists() else []
        self.runs = {str(b.get("run_id")) for b in bodies if b.get("kind") == "run"}
        rounds = [b for b in bodies if b.get("kind", "round") == "round" and "round" in b]
        self.last: dict[str, Any] | None = rounds[-1] if rounds else None

    def append(self, body: object) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise ValueError("a record body must be a JSON object")
        with self.lock:
            kind = body.get("kind")
            if kind == "genesis":
                if len(self.ledger):
                    raise ValueError("a genesis record only opens a new ledger")
            elif kind == "run":
                if not len(self.ledger):
                    raise ValueError("a run record needs a genesis record first")
                self.runs.add(str(body.get("run_id")))
            elif kind == "round":
                self._check_round(body)
            else:
                raise ValueError("unknown record kind")
            record = self.ledger.append(body)
            if kind == "round":
                self.last = body
            return record

    def _check_round(self, body: dict[str, Any]) -> None:
        if str(body.get("run_id")) not in self.runs:
            raise ValueError("a round of a run the ledger never announced")
        rnd = body.get("round")
        last = self.last["round"] if self.last else 0
        if type(rnd) is not int or rnd != last + 1:
            raise ValueError(f"round {rnd!r} does not follow round {last}")
        problem = check_round(body, self.registry, self.last)
        if problem:
            raise ValueError(f"site receipts: {problem}")


def serve(socket_path: Path, core: SignerCore) -> socketserver.UnixStreamServer:
    """A Unix-socket server around `core` (mode 0600: only this user's processes connect)."""
    socket_path = Path(socket_path)
    if socket_path.exists():
        socket_path.unlink()

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                if len(line) > MAX_REQUEST_BYTES:
                    answer: dict[str, Any] = {"error": "request too large"}
                else:
                    answer = _answer(core, line)
                self.wfile.write(json.dumps(answer).encode() + b"\n")
                self.wfile.flush()

    server = socketserver.ThreadingUnixStreamServer(str(socket_path), Handler)
    os.chmod(socket_path, 0o600)
    return server


def _answer(core: SignerCore, line: bytes) -> dict[str, Any]:
    try:
        request = json.loads(line)
        if not isinstance(request, dict):
            raise ValueError("a request must be a JSON object")
        if request.get("count"):
            return {"count": len(core.ledger), "path": str(core.ledger.path.resolve())}
        return {"record": core.append(request.get("append"))}
    except (ValueError, TypeError, GenofedError) as err:
        log.warning("refused to sign: %s", err)
        return {"error": str(err)}


class RemoteLedger:
    """The ServerApp's side: `append` and `len` as on a `Ledger`, signed by the signer."""

    def __init__(self, socket_path: str | Path, path: Path) -> None:
        self.socket_path = str(socket_path)
        self.path = Path(path)  # the ledger file, readable here, written by the signer only

    def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        import socket

        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            try:
                sock.connect(self.socket_path)
            except OSError as err:
                raise GenofedError(f"{self.socket_path}: ledger signer not reachable "
                                   f"({err.strerror})") from err
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = json.loads(sock.makefile("rb").readline() or b"{}")
        if "error" in answer or not answer:
            raise GenofedError(f"ledger signer refused: {answer.get('error', 'no answer')}")
        return answer

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._call({"append": body})["record"]

    def __len__(self) -> int:
        answer = self._call({"count": True})
        if answer.get("path") != str(self.path.resolve()):
            raise GenofedError(f"the ledger signer keeps {answer.get('path')}, not {self.path}: "
                               "give the run the signer's out-dir")
        return int(answer["count"])
