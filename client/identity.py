"""A site's own keys, made at the site: the coordinator only ever receives their public halves.

- `auth.key` / `auth.pub`: the SuperNode's authentication key pair (OpenSSH EC P-384, what
  `ssh-keygen -t ecdsa -b 384` writes and `flower-supernode --auth-supernode-private-key` /
  `flwr supernode register` read): the coordinator registers the public half with its
  SuperLink, so only this site's SuperNode can join as this site's node.
- `receipt.key` / `receipt.pub`: the Ed25519 key the site signs its round receipts with
  (`shared.receipts`): the coordinator's site registry holds the public half, and a reply
  counts only if its receipt verifies under the key of the name it gives.

`genofed site keygen` writes both into the site's identity folder (mode 0700, private keys 0600
whatever the umask); a site that never ran it gets a receipt key on first use, whose public
half it must then give the coordinator.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.errors import GenofedError
from shared.fsio import create_exclusive
from shared.ledger import generate_signing_key, load_private_key

IDENTITY = "identity"
AUTH_KEY, AUTH_PUB = "auth.key", "auth.pub"
RECEIPT_KEY, RECEIPT_PUB = "receipt.key", "receipt.pub"
# Set by the site's own ClientApp launcher (client.launcher) to the code it approved and ran.
CODE_ENV = "GENOFED_RUNNING_CODE"

log = logging.getLogger(__name__)


def make_auth_keypair(comment: str) -> tuple[bytes, bytes]:
    """A SuperNode key pair as ``ssh-keygen -t ecdsa -b 384 -N ""`` writes it.

    (OpenSSH private key, ``ecdsa-sha2-nistp384 AAAA... comment`` public key line).
    """
    key = ec.generate_private_key(ec.SECP384R1())
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    return private, public + f" {comment}\n".encode()


def identity_dir(state_path: Path) -> Path:
    """The site's identity folder in its state folder, created private (0700)."""
    folder = Path(state_path) / IDENTITY
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    return folder


def keygen(folder: Path, site: str) -> dict[str, Path]:
    """Both key pairs in `folder` (created 0700); an existing key is never replaced.

    A pair already there whole is kept (a receipt key the site made on first use); half a pair,
    or both pairs already made, is refused before anything is written."""
    folder = Path(folder)
    pairs = ((AUTH_KEY, AUTH_PUB), (RECEIPT_KEY, RECEIPT_PUB))
    present = {name: (folder / name).exists() for pair in pairs for name in pair}
    for key, pub in pairs:
        if present[key] != present[pub]:
            raise GenofedError(f"{folder}: {key} and {pub} must both exist or neither")
    if all(present.values()):
        raise GenofedError(f"{folder}: already holds this site's keys; refusing to replace them")
    folder.mkdir(parents=True, exist_ok=True)
    os.chmod(folder, 0o700)
    if not present[AUTH_KEY]:
        private, public = make_auth_keypair(f"genofed-{site}")
        create_exclusive(folder / AUTH_KEY, private, 0o600)
        create_exclusive(folder / AUTH_PUB, public, 0o644)
    if not present[RECEIPT_KEY]:
        generate_signing_key(folder / RECEIPT_KEY, folder / RECEIPT_PUB)
    return {name: folder / name for pair in pairs for name in pair}


def receipt_key(state_path: Path) -> Ed25519PrivateKey:
    """The site's receipt signing key, made on first use if the site has none yet."""
    folder = identity_dir(state_path)
    path = folder / RECEIPT_KEY
    if not path.exists():
        generate_signing_key(path, folder / RECEIPT_PUB)
        log.warning("made a new receipt key %s: give %s to the coordinator's site registry",
                    path, folder / RECEIPT_PUB)
    return load_private_key(path)


@functools.cache
def installed_code() -> str:
    """`installed:<sha256>` over the installed client and shared packages' source files."""
    import client
    import shared

    h = hashlib.sha256()
    for package in (client, shared):
        root = Path(package.__file__).parent
        for path in sorted(root.glob("*.py")):
            h.update(f"{package.__name__}/{path.name}\n".encode())
            h.update(path.read_bytes())
    return f"installed:{h.hexdigest()}"


def running_code() -> str:
    """What code answers this message: the approved bundle the launcher says it loaded, or the
    installed packages."""
    return os.environ.get(CODE_ENV) or installed_code()


def sign_reply(state_path: Path, metrics: dict, *, run_id: str, round: int, kind: str,
               weights_in: str, weights_out: str, field: str = "receipt") -> dict:
    """`metrics` with the code the site ran and its signed receipt (`shared.receipts`)."""
    from shared.receipts import make_receipt

    code = running_code()
    receipt = make_receipt(
        receipt_key(state_path), run_id=run_id, round=round, site=str(metrics["site"]),
        kind=kind, weights_in=weights_in, weights_out=weights_out,
        epsilon=float(metrics.get("epsilon", 0.0)), delta=float(metrics.get("delta", 0.0)),
        code=code)
    return {**metrics, "code": code, field: receipt}
