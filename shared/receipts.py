"""Round receipts: what a site says it did, signed with a key only the site holds.

With every reply a site sends a receipt: which run and round, its name, what kind of message
it answered, the hash of the weights it received and of those it sent back, the epsilon it had
spent after answering and the code it ran. It signs the canonical JSON of that body with its
own Ed25519 key (made at the site: `genofed site keygen`); the coordinator holds only the
sites' public keys (the site registry). The coordinator counts a reply only if its receipt
verifies under the key registered for the name the reply gives and agrees with the reply, and
embeds the receipt in the signed ledger; an auditor re-verifies every receipt against the
sites' public keys (`genofed audit verify --sites`). So what the ledger says a site did, the
site signed, and no site can answer in another's name.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from shared.errors import InputError
from shared.fsio import write_json
from shared.ledger import canonical_json, key_id

FORMAT = "genofed.receipt/1"
REGISTRY_FORMAT = "genofed.site-registry/1"
KINDS = ("fit", "evaluate")
_BODY_KEYS = frozenset({"format", "run_id", "round", "site", "kind", "weights_in",
                        "weights_out", "epsilon", "delta", "code"})
MAX_RECEIPT_CHARS = 4096


class ReceiptError(ValueError):
    """A receipt that does not parse, verify or agree with what it came with."""


def make_receipt(key: Ed25519PrivateKey, *, run_id: str, round: int, site: str, kind: str,
                 weights_in: str, weights_out: str, epsilon: float, delta: float,
                 code: str) -> str:
    """The signed receipt, as the text that travels in a reply."""
    body = {"format": FORMAT, "run_id": str(run_id), "round": int(round), "site": site,
            "kind": kind, "weights_in": weights_in, "weights_out": weights_out,
            "epsilon": float(epsilon), "delta": float(delta), "code": code}
    signature = key.sign(canonical_json(body))
    return canonical_json({"body": body,
                           "signature": base64.b64encode(signature).decode("ascii")}).decode()


def parse_receipt(text: object) -> dict[str, Any]:
    """The receipt's {"body", "signature"}, shape-checked (not yet verified)."""
    if not isinstance(text, str) or len(text) > MAX_RECEIPT_CHARS:
        raise ReceiptError("receipt must be text of at most 4096 characters")
    try:
        doc = json.loads(text, parse_constant=_no_constant)
    except ValueError as err:
        raise ReceiptError(f"receipt is not valid JSON ({err})") from None
    if not isinstance(doc, dict) or set(doc) != {"body", "signature"}:
        raise ReceiptError("receipt must hold exactly body and signature")
    body = doc["body"]
    if not isinstance(body, dict) or set(body) != _BODY_KEYS or body["format"] != FORMAT:
        raise ReceiptError(f"receipt body must be a {FORMAT} object")
    if body["kind"] not in KINDS or type(body["round"]) is not int:
        raise ReceiptError("receipt kind or round is malformed")
    for name in ("epsilon", "delta"):
        if type(body[name]) not in (int, float) or not math.isfinite(body[name]):
            raise ReceiptError(f"receipt {name} is not a finite number")
    return doc


def verify_receipt(receipt: Mapping[str, Any] | str, public_key: Ed25519PublicKey
                   ) -> dict[str, Any]:
    """The receipt's body if its signature verifies under `public_key`; ReceiptError if not."""
    doc = parse_receipt(receipt if isinstance(receipt, str) else canonical_json(
        dict(receipt)).decode())
    try:
        signature = base64.b64decode(doc["signature"], validate=True)
        public_key.verify(signature, canonical_json(doc["body"]))
    except (binascii.Error, TypeError, InvalidSignature):
        raise ReceiptError("receipt signature does not verify") from None
    return doc["body"]


def load_pem_public(pem: str) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode())
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("receipt key must be Ed25519")
    return key


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


@dataclass(frozen=True)
class SiteRegistry:
    """The sites' public receipt keys, by name: all a coordinator or an auditor needs."""

    keys: dict[str, Ed25519PublicKey]

    @classmethod
    def load(cls, path: str | Path) -> SiteRegistry:
        path = Path(path)
        try:
            doc = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(path, "no site registry (the sites' public receipt keys)") from None
        except (OSError, ValueError) as err:
            raise InputError(path, f"unreadable site registry ({err})") from None
        if not isinstance(doc, dict) or doc.get("format") != REGISTRY_FORMAT or \
                not isinstance(doc.get("sites"), dict):
            raise InputError(path, f"not a {REGISTRY_FORMAT} file")
        keys = {}
        for name, entry in doc["sites"].items():
            try:
                key = serialization.load_pem_public_key(str(entry["receipt_pub"]).encode())
            except (KeyError, TypeError, ValueError, UnsupportedAlgorithm):
                raise InputError(path, "not a PEM public key", f"site {name!r}") from None
            if not isinstance(key, Ed25519PublicKey):
                raise InputError(path, "receipt key must be Ed25519", f"site {name!r}")
            keys[str(name)] = key
        return cls(keys)

    @classmethod
    def from_pem(cls, pems: Mapping[str, bytes]) -> SiteRegistry:
        keys = {}
        for name, pem in pems.items():
            key = serialization.load_pem_public_key(pem)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError(f"site {name!r}: receipt key must be Ed25519")
            keys[name] = key
        return cls(keys)

    def to_json(self) -> dict[str, Any]:
        return {"format": REGISTRY_FORMAT, "sites": {
            name: {"receipt_pub": key.public_bytes(
                serialization.Encoding.PEM,
                serialization.PublicFormat.SubjectPublicKeyInfo).decode(),
                "key_id": key_id(key)}
            for name, key in sorted(self.keys.items())}}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_json(), perms=0o644)  # public keys: anyone may read them

    def sha256(self) -> str:
        return hashlib.sha256(canonical_json(self.to_json())).hexdigest()


def check_round(body: Mapping[str, Any], registry: SiteRegistry,
                previous: Mapping[str, Any] | None = None) -> str | None:
    """Why a signed round record's receipts do not back what it says, or None.

    Every site the round counted must have a receipt of its own (signed with its registered
    key, for this run and round); every epsilon the record reports for a site must be one that
    site signed in this record; every site must have been sent the same weights, the previous
    round's (`previous`, the last round record before this one, when there is one); every
    evaluation must be of this round's weights.
    """
    privacy = body.get("privacy") or {}
    signed_eps: dict[str, set[float]] = {}
    sent: set[str] = set()
    for field, kind in (("receipts", "fit"), ("evaluation_receipts", "evaluate")):
        for site, receipt in (body.get(field) or {}).items():
            key = registry.keys.get(site)
            if key is None:
                return f"{site}: not in the site registry"
            try:
                signed = verify_receipt(receipt, key)
            except ReceiptError as err:
                return f"{site}'s {kind} receipt: {err}"
            expected = {"run_id": body.get("run_id"), "round": body.get("round"),
                        "site": site, "kind": kind}
            if kind == "evaluate":
                expected["weights_in"] = body.get("weights_sha256")
            wrong = sorted(k for k, v in expected.items() if signed.get(k) != v)
            if wrong:
                return f"{site}'s {kind} receipt disagrees on {', '.join(wrong)}"
            signed_eps.setdefault(site, set()).add(signed["epsilon"])
            if kind == "fit":
                sent.add(signed["weights_in"])
    unsigned = sorted(set(body.get("sites") or []) - set(body.get("receipts") or {}))
    if unsigned:
        return f"{', '.join(unsigned)}: counted without a receipt"
    for site, reported in privacy.items():
        if reported.get("epsilon") not in signed_eps.get(site, set()):
            return f"{site}: epsilon {reported.get('epsilon')} is not one it signed"
    if len(sent) > 1:
        return "the sites were sent different weights"
    if sent and previous is not None and previous.get("run_id") == body.get("run_id") and \
            sent != {previous.get("weights_sha256")}:
        return "the weights sent are not the previous round's"
    return None
