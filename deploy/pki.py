"""The deployment's public-key infrastructure: its CA and the SuperLink's TLS certificate, and
the checks on the public keys each site hands the coordinator.

The coordinator makes the CA and the server certificate; it never makes a site's private key
(`genofed site keygen` does, at the site). A site's public keys are read here and refused when
they are private keys, of the wrong kind, or not what they claim to be.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import InputError
from shared.fsio import read_input

DEFAULT_DAYS = 3650  # certificates' validity
AUTH_KEY_TYPE = "ecdsa-sha2-nistp384"  # what `genofed site keygen` writes (OpenSSH EC P-384)


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(
    days: int = DEFAULT_DAYS, name: str = "genofed consortium CA"
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """A self-signed EC P-384 CA: CA:true (pathlen 0), keyCertSign + cRLSign, `days` valid."""
    key = ec.generate_private_key(ec.SECP384R1())
    subject = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genofed consortium"),
        x509.NameAttribute(NameOID.COMMON_NAME, name),
    ])
    start = utc_now() - dt.timedelta(minutes=5)  # tolerate a little clock skew at the sites
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA384())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, dns: Sequence[str],
    addrs: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address], days: int = DEFAULT_DAYS,
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """The SuperLink's EC P-384 server certificate, signed by the CA (never outliving it)."""
    key = ec.generate_private_key(ec.SECP384R1())
    start = utc_now() - dt.timedelta(minutes=5)
    end = min(start + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
    sans += [x509.IPAddress(a) for a in addrs]
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "genofed consortium"),
            x509.NameAttribute(NameOID.COMMON_NAME, dns[0] if dns else str(addrs[0])),
        ]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA384())
    )
    return key, cert


def cert_info(cert: x509.Certificate) -> dict[str, Any]:
    info: dict[str, Any] = {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "sha256_fingerprint": cert.fingerprint(hashes.SHA256()).hex(),
    }
    with contextlib.suppress(x509.ExtensionNotFound):
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        info["san_dns"] = san.get_values_for_type(x509.DNSName)
        info["san_ip"] = [str(a) for a in san.get_values_for_type(x509.IPAddress)]
    return info


def _key_kind(key: object) -> str:
    if isinstance(key, ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    return type(key).__name__.removeprefix("_").replace("PublicKey", "") or "unknown"


def _read_public_file(path: Path, what: str) -> bytes:
    """The bytes of a site's public key file; a private key is refused before anything else."""
    data = read_input(path, f"the site's {what}")
    if b"PRIVATE KEY" in data:
        raise InputError(path, f"is a PRIVATE key: give only the site's {what}; private keys "
                         "never leave the site (if it was sent, the site makes new keys)")
    if len(data) > 16384:
        raise InputError(path, f"too large for a {what}")
    return data


def read_auth_pub(path: Path) -> bytes:
    """A site's SuperNode public key as one ``ecdsa-sha2-nistp384 AAAA... comment`` line
    (newline-terminated), checked as `flwr supernode register` checks it; InputError if not."""
    path = Path(path)
    what = "SuperNode public key (auth.pub)"
    data = _read_public_file(path, what)
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise InputError(path, f"not an OpenSSH public key line (binary data); expected {what}"
                         ) from None
    if "-----BEGIN" in text:
        raise InputError(path, f"is a PEM key, expected one OpenSSH line '{AUTH_KEY_TYPE} "
                         "AAAA...' (auth.pub; were auth.pub and receipt.pub swapped?)")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) != 1:
        raise InputError(path, f"must hold exactly one OpenSSH public key line, not "
                         f"{len(lines)}")
    kind = lines[0].split(None, 1)[0]
    if kind != AUTH_KEY_TYPE:
        raise InputError(path, f"is a {kind[:40]!r} key, expected {AUTH_KEY_TYPE} (OpenSSH EC "
                         "P-384, as genofed site keygen writes)")
    try:
        key = serialization.load_ssh_public_key(lines[0].encode())
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(path, f"not a valid {AUTH_KEY_TYPE} public key") from None
    if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP384R1)):
        raise InputError(path, f"is a {_key_kind(key)} key, expected EC P-384")
    return (lines[0] + "\n").encode()


def read_receipt_pub(path: Path) -> tuple[bytes, Ed25519PublicKey]:
    """A site's receipt public key: (its canonical PEM, the key); InputError if it is not an
    Ed25519 PEM public key."""
    path = Path(path)
    what = "receipt public key (receipt.pub)"
    data = _read_public_file(path, what)
    if data.lstrip().startswith((b"ssh-", b"ecdsa-")):
        raise InputError(path, "is an OpenSSH key line, expected the Ed25519 PEM receipt key "
                         "(receipt.pub; were auth.pub and receipt.pub swapped?)")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm):
        raise InputError(path, f"not a PEM public key; expected the site's {what}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise InputError(path, f"is a {_key_kind(key)} key, expected an Ed25519 public key "
                         "(receipt.pub, as genofed site keygen writes)")
    pem = key.public_bytes(serialization.Encoding.PEM,
                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem, key


