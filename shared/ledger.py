"""The signed, append-only round ledger: what the coordinator did, provable to an auditor.

After each federated round the coordinator appends one record to a JSON-lines file. Every
record carries the sha256 of the previous line's exact bytes and an Ed25519 signature by the
coordinator's key, so a hospital's auditor holding only the public key can prove that no round
was edited, removed, inserted, reordered or duplicated after it was written.

Record format: one canonical-JSON object per line, terminated by ``"\\n"``::

    {"body": {...}, "key_id": "<16 hex>", "prev_hash": "<64 hex>", "seq": 0,
     "signature": "<base64>"}

- ``seq``: 0-based and consecutive, so a removed, inserted, duplicated or swapped record is
  named by the first line whose ``seq`` is not its position.
- ``prev_hash``: sha256 hex of the previous line's bytes (without the newline); 64 zeros for the
  first record.
- ``signature``: standard base64 of the Ed25519 signature over
  ``canonical_json({"seq", "prev_hash", "body"})``.
- ``key_id``: first 16 hex of sha256 over the raw public key bytes. Not signed itself, but it
  must match the auditor's key and is covered by the next record's ``prev_hash``; it lets an
  auditor see at once that a file was signed by some other key.

The ``body`` the coordinator writes (documented here, not enforced beyond being a dict)::

    {"round": int, "sites": [pseudonymous site ids], "weights_sha256": hex,
     "config_sha256": hex, "privacy": {site: {"epsilon": float, "delta": float}},
     "metrics": {...MetricFrame dict...}, "time": ISO-8601 UTC}

Bodies must hold only JSON types with ``str`` keys: convert numpy scalars with ``float()`` /
``int()`` first (``canonical_json`` raises ``TypeError`` otherwise, ``ValueError`` for NaN/inf).

Verification is strict: every line must be byte-for-byte the canonical encoding of the record it
holds, so even a change that leaves the parsed values alone (whitespace, ``1.0`` vs ``1.00``,
escapes) is caught. A last line without its newline is a failure too: appends write the line and
its newline in one ``write`` followed by ``fsync``, so a missing newline means a torn or cut
write, and the ``Ledger`` refuses to append after it until a person has looked.

What a hash chain cannot show on its own: records cut off the *end* of the file. An auditor who
needs that should compare ``VerifyResult.records`` and ``last_hash`` with a value published
outside the file (the CLI prints both).
"""

from __future__ import annotations

import base64
import binascii
import fcntl
import hashlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import GenofedError, InputError
from shared.fsio import create_exclusive, fsync_dir, read_input

GENESIS_HASH = "0" * 64
"""``prev_hash`` of the first record."""

RECORD_FIELDS = frozenset({"seq", "prev_hash", "body", "key_id", "signature"})
_HEX = frozenset("0123456789abcdef")


# --------------------------------------------------------------------------------------------
# Canonical JSON
# --------------------------------------------------------------------------------------------

PRIVATE_KEY_NAME = "ledger.key"  # the ledger signing key's file names, wherever it is kept
PUBLIC_KEY_NAME = "ledger.pub"


def _check_json_value(obj: Any, where: str = "$") -> None:
    """Reject what json.dumps would encode lossily, so a record always re-verifies.

    ``json.dumps`` silently turns int keys into strings (and sorts them differently from the
    strings they become) and writes NaN as a bare token, so the bytes signed at append time
    would not be the bytes an auditor recomputes from the parsed file.
    """
    if obj is None or isinstance(obj, (str, bool, int)):
        return
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"{where}: {obj!r} is not allowed in canonical JSON")
        return
    if isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise TypeError(f"{where}: key {key!r} is {type(key).__name__}, keys must be str")
            _check_json_value(value, f"{where}.{key}")
        return
    if isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            _check_json_value(value, f"{where}[{i}]")
        return
    raise TypeError(f"{where}: {type(obj).__name__} is not a JSON type")


def canonical_json(obj: Any) -> bytes:
    """One byte string per value, so a signature or hash means the same thing to everyone.

    Sorted keys, no whitespace, UTF-8 (not \\u escapes), floats in Python's shortest round-trip
    form. Raises ``ValueError`` for NaN/inf and ``TypeError`` for non-JSON types or non-str keys.
    """
    _check_json_value(obj)
    text = json.dumps(
        obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    )
    return text.encode("utf-8")


def _reject_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed in canonical JSON")


def _parse_line(raw: bytes) -> Any:
    """Parse strictly: NaN/Infinity tokens are errors, not floats."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def _sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _signed_payload(seq: int, prev_hash: str, body: dict[str, Any]) -> bytes:
    return canonical_json({"seq": seq, "prev_hash": prev_hash, "body": body})


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint an auditor can compare by eye: sha256 of the raw key, 16 hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _sha256_hex(raw)[:16]


def generate_signing_key(private_path: Path, public_path: Path) -> None:
    """Create the coordinator's Ed25519 key pair; never replaces an existing file.

    Replacing a signing key silently would orphan every ledger it signed, so an existing file
    (either one) is a ``GenofedError``. The private key is PKCS8 PEM, unencrypted (the
    coordinator must sign unattended), mode 0600; the public key is SubjectPublicKeyInfo PEM.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    if private_path.resolve() == public_path.resolve():
        raise GenofedError(f"{private_path}: private and public key paths must differ")
    for path in (private_path, public_path):
        if path.exists() or path.is_symlink():
            raise GenofedError(f"{path}: already exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    private_path.parent.mkdir(parents=True, exist_ok=True)
    public_path.parent.mkdir(parents=True, exist_ok=True)
    create_exclusive(private_path, private_pem, 0o600)
    try:
        create_exclusive(public_path, public_pem, 0o644)
    except BaseException:
        # We created this private key a moment ago; without its public half it is useless.
        private_path.unlink()
        raise


def ensure_signing_key(private_path: Path, public_path: Path) -> bool:
    """Create the key pair on first use; return True if it was created.

    Half a pair (one file present) is an error rather than a reason to generate: a fresh
    private key next to an old public key would produce a ledger nobody can verify.
    """
    private_path, public_path = Path(private_path), Path(public_path)
    have_private, have_public = private_path.exists(), public_path.exists()
    if not have_private and not have_public:
        generate_signing_key(private_path, public_path)
        return True
    if not (have_private and have_public):
        missing = public_path if have_private else private_path
        raise GenofedError(
            f"{missing}: missing while its key pair partner exists; "
            "restore it rather than generating a new key"
        )
    private = load_private_key(private_path)
    if key_id(private.public_key()) != key_id(load_public_key(public_path)):
        raise GenofedError(f"{public_path}: does not match private key {private_path}")
    return False


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """Load the coordinator's unencrypted PEM Ed25519 key; one-line InputError otherwise."""
    data = read_input(path, "a private key file")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise InputError(path, "private key is encrypted; genofed needs it unencrypted") from None
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(path, "not a PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise InputError(path, f"is a {type(key).__name__}, expected an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a PEM Ed25519 public key; one-line InputError otherwise."""
    data = read_input(path, "a public key file")
    if b"PRIVATE KEY" in data:
        raise InputError(path, "is a private key; verify with the public key (ledger.pub)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(path, "not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(path, f"is a {type(key).__name__}, expected an Ed25519 public key")
    return key


# --------------------------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------------------------


@dataclass
class VerifyResult:
    """Outcome of `verify_ledger`.

    ``records`` counts the records that verified (all of them when ``ok``; the records before
    ``first_bad`` otherwise). ``first_bad`` is the 0-based record index, which is also the
    0-based line index (line ``first_bad + 1`` for humans). ``last_hash`` is the hash the next
    record would link to, i.e. of the last good record: publish it to pin the ledger's length.
    """

    ok: bool
    records: int
    first_bad: int | None
    reason: str | None
    key_id: str | None = None
    last_hash: str = GENESIS_HASH


def _is_hex(value: Any, length: int) -> bool:
    return isinstance(value, str) and len(value) == length and set(value) <= _HEX


def _check_record(
    raw: bytes, index: int, prev_hash: str, public_key: Ed25519PublicKey, kid: str
) -> tuple[str | None, dict[str, Any] | None]:
    """Return (problem, None) for a bad line, or (None, body) for a good one.

    Checks run from the cheapest and most specific to the signature, so the reason names the
    kind of damage (a moved record says "seq", not just "bad signature").
    """
    if not raw.strip():
        return "empty line", None
    try:
        record = _parse_line(raw)
    except UnicodeDecodeError:
        return "not UTF-8 text", None
    except (ValueError, RecursionError) as err:
        return f"not valid JSON ({err})", None
    if not isinstance(record, dict):
        return "not a JSON object", None
    if set(record) != RECORD_FIELDS:
        missing = sorted(RECORD_FIELDS - set(record))
        extra = sorted(set(record) - RECORD_FIELDS)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + (
            [f"unexpected {', '.join(extra)}"] if extra else []
        )
        return f"wrong fields: {'; '.join(parts)}", None
    seq, prev, body = record["seq"], record["prev_hash"], record["body"]
    if type(seq) is not int:
        return "seq is not an integer", None
    if not _is_hex(prev, 64):
        return "prev_hash is not 64 lowercase hex digits", None
    if not isinstance(body, dict):
        return "body is not a JSON object", None
    if not isinstance(record["key_id"], str) or not isinstance(record["signature"], str):
        return "key_id and signature must be strings", None
    try:
        canonical = canonical_json(record)
    except (TypeError, ValueError) as err:
        return f"not canonical JSON ({err})", None
    if canonical != raw:
        return "bytes differ from the record's canonical encoding (line was altered)", None
    if seq != index:
        return (
            f"seq is {seq}, expected {index} (record removed, inserted, duplicated or reordered)"
        ), None
    if prev != prev_hash:
        if index == 0:
            return "prev_hash of the first record is not 64 zeros", None
        return "prev_hash does not match the previous record (chain broken)", None
    if record["key_id"] != kid:
        return f"signed by key {record['key_id']}, not by the given key {kid}", None
    try:
        signature = base64.b64decode(record["signature"], validate=True)
    except (binascii.Error, ValueError):
        return "signature is not base64", None
    # b64decode ignores stray padding bits: insist on the one encoding so no byte can change.
    if base64.b64encode(signature).decode("ascii") != record["signature"] or len(signature) != 64:
        return "signature is not a canonical base64 Ed25519 signature", None
    try:
        public_key.verify(signature, _signed_payload(seq, prev, body))
    except InvalidSignature:
        return "bad signature (record content changed or signed by another key)", None
    return None, body


def _verify_bytes(
    data: bytes, public_key: Ed25519PublicKey
) -> tuple[VerifyResult, list[dict[str, Any]]]:
    """Verify a whole ledger held in memory; also return the good bodies, in order."""
    kid = key_id(public_key)
    bodies: list[dict[str, Any]] = []
    if not data:
        return VerifyResult(True, 0, None, None, kid, GENESIS_HASH), bodies
    terminated = data.endswith(b"\n")
    lines = data.split(b"\n")
    if terminated:
        lines.pop()
    prev_hash = GENESIS_HASH
    for index, raw in enumerate(lines):
        unterminated = not terminated and index == len(lines) - 1
        problem, body = _check_record(raw, index, prev_hash, public_key, kid)
        if unterminated:
            if problem is None:
                problem = "last line has no newline (truncated write?)"
            elif problem.startswith(("not valid JSON", "not UTF-8")):
                problem = "truncated: last line is cut short and has no newline"
        if problem is not None:
            return VerifyResult(False, index, index, problem, kid, prev_hash), bodies
        assert body is not None
        bodies.append(body)
        prev_hash = _sha256_hex(raw)
    return VerifyResult(True, len(lines), None, None, kid, prev_hash), bodies


def verify_ledger(path: Path, public_key: Ed25519PublicKey) -> VerifyResult:
    """Check every record of the ledger at `path` against `public_key`; stop at the first bad one.

    A missing or unreadable file raises ``InputError`` (the auditor named the wrong path; that is
    not evidence about the ledger). An empty file is a valid ledger of 0 records: the coordinator
    may have started but not finished a round.
    """
    result, _ = _verify_bytes(read_input(path, "a ledger file"), public_key)
    return result


def verify_with_records(
    path: Path, public_key: Ed25519PublicKey
) -> tuple[VerifyResult, list[dict[str, Any]]]:
    """The verdict and the bodies of the records before any bad one, from one read: a report
    shows what verified and says where verification stopped."""
    return _verify_bytes(read_input(path, "a ledger file"), public_key)


def read_verified(path: Path, public_key: Ed25519PublicKey) -> list[dict[str, Any]]:
    """Bodies of a ledger verified in the same read, so nothing can change in between.

    Prefer this to `verify_ledger` + `read_records` for reports. Raises ``GenofedError`` naming
    the first bad record.
    """
    result, bodies = verify_with_records(path, public_key)
    if not result.ok:
        raise GenofedError(_describe_failure(path, result))
    return bodies


def round_records(bodies: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The round bodies among a ledger's records (not its genesis or run records)."""
    return [b for b in bodies if b.get("kind", "round") == "round" and "round" in b]


def read_records(path: Path) -> list[dict[str, Any]]:
    """Record bodies, in order, WITHOUT checking signatures or links: verify first.

    Raises ``InputError`` naming the record for a line that is not a ledger record at all.
    """
    data = read_input(path, "a ledger file")
    bodies: list[dict[str, Any]] = []
    lines = data.split(b"\n")
    if lines and not lines[-1]:
        lines.pop()
    for index, raw in enumerate(lines):
        try:
            record = _parse_line(raw)
        except (ValueError, RecursionError):
            raise InputError(path, "not valid JSON", f"record {index} (line {index + 1})") from None
        if not isinstance(record, dict) or not isinstance(record.get("body"), dict):
            raise InputError(path, "not a ledger record", f"record {index} (line {index + 1})")
        bodies.append(record["body"])
    return bodies


def _describe_failure(path: Path, result: VerifyResult) -> str:
    index = result.first_bad or 0
    return f"{path}: record {index} (line {index + 1}): {result.reason}"


# --------------------------------------------------------------------------------------------
# Appending
# --------------------------------------------------------------------------------------------


class Ledger:
    """The coordinator's handle on its ledger: verifies what is there, then appends signed records.

    Opening verifies the whole existing file with the key's own public half and refuses a broken
    chain (``GenofedError``): appending would bury the damage under valid-looking records. It
    also refuses a ledger signed by another key, so a key cannot be rotated mid-ledger; start a
    new ledger file for a new key. The file need not exist; the first append creates it.

    Only one process should append; an exclusive ``flock`` plus a size check per append turns a
    second writer (or an edit since opening) into an error instead of a forked chain.
    """

    def __init__(self, path: Path, private_key: Ed25519PrivateKey) -> None:
        self.path = Path(path)
        self._key = private_key
        self._public = private_key.public_key()
        self.key_id = key_id(self._public)
        if self.path.exists():
            data = read_input(self.path, "a ledger file")
            result, _ = _verify_bytes(data, self._public)
            if not result.ok:
                raise GenofedError(
                    f"refusing to append to a broken ledger: {_describe_failure(self.path, result)}"
                )
            self._count, self.last_hash, self._size = result.records, result.last_hash, len(data)
        else:
            self._count, self.last_hash, self._size = 0, GENESIS_HASH, 0

    def __len__(self) -> int:
        return self._count

    def append(self, body: dict[str, Any]) -> dict[str, Any]:
        """Sign `body` as the next record, write it durably, and return the full record."""
        if not isinstance(body, dict):
            raise TypeError(f"ledger body must be a dict, not {type(body).__name__}")
        seq, prev_hash = self._count, self.last_hash
        signature = self._key.sign(_signed_payload(seq, prev_hash, body))
        record = {
            "seq": seq,
            "prev_hash": prev_hash,
            "body": body,
            "key_id": self.key_id,
            "signature": base64.b64encode(signature).decode("ascii"),
        }
        line = canonical_json(record)
        # Written bytes must re-verify; catch anything JSON would not round-trip before it is
        # on disk for good.
        problem, _ = _check_record(line, seq, prev_hash, self._public, self.key_id)
        if problem is not None:
            raise ValueError(f"ledger body does not round-trip through JSON: {problem}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            size = os.fstat(fd).st_size
            if size != self._size:
                raise GenofedError(
                    f"{self.path}: changed since it was opened ({self._size} -> {size} bytes); "
                    "another writer? refusing to append"
                )
            data = line + b"\n"
            written = os.write(fd, data)  # one write: a crash leaves no half record + newline
            while written < len(data):
                written += os.write(fd, data[written:])
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            fsync_dir(self.path.parent)
        self._count, self.last_hash = seq + 1, _sha256_hex(line)
        self._size += len(data)
        return record
