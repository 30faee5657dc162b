"""`genofed deploy init`: everything a consortium needs to run Flower for real.

One call writes, under ``out``:

- ``certs/``: a private CA (EC P-384) and the SuperLink's server certificate signed by it
  (serverAuth, SANs: every ``--host`` name, ``localhost``, ``127.0.0.1`` and every ``--ip``);
- ``coordinator/``: the ledger signing key (``shared.ledger``), a ``$FLWR_HOME/config.toml``
  with the ``genofed`` connection, the exact ``flower-superlink`` and ``flower-superexec``
  command lines, the SuperExec shared secret and an empty ``state/`` for the SuperLink database;
- ``sites/NAME/``: the bundle a hospital receives: its SuperNode authentication key pair
  (OpenSSH EC P-384, what ``ssh-keygen -t ecdsa -b 384`` writes and what
  ``flower-supernode --auth-supernode-private-key`` / ``flwr supernode register`` read), the CA
  certificate, a commented ``site.toml``, ``supernode.env`` with its ``flower-supernode``
  command line, and a SuperExec secret used by the Docker setup (``deploy/compose.yaml``);
- ``deployment.json``: every file (role, owner, mode, sha256 of the public ones), every port and
  every command line, for tools and tests.

All cryptography goes through ``cryptography``. Files are first written into a staging folder
inside ``out`` (temporary names, exclusive create, private keys 0600 from the first byte, fsync)
and then moved into place: without ``force`` by hard link, which fails on an existing name, so
an existing key is never replaced, and any refusal or error leaves no new file behind; with
``force`` by rename over the old file.

Flower 1.42 facts this relies on (``flower-superlink --help``, ``flower-supernode --help``, and
``flwr/superlink/main.py``): one HTTP port (``--host``/``--port``, default 127.0.0.1:8000)
serves the Fleet (``/v1/fleet/``), Control (``/v1/control/``) and Runtime (``/v1/runtime/``)
APIs; ``--enable-supernode-auth`` needs TLS; the SuperNode's own Runtime API is ``--host`` /
``--port`` (default 127.0.0.1:9094; ``--clientappio-api-address`` is rejected since the HTTP
move). In ``--isolation subprocess`` the SuperLink ignores ``--superexec-auth-secret-file``, so
the Runtime API's ``acquire-task`` on the shared port answers anyone; we therefore run the
SuperLink with ``--isolation process`` and a SuperExec shared secret, and start the ServerApp's
``flower-superexec`` ourselves.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from shared.errors import GenofedError
from shared.ledger import generate_signing_key, key_id, load_public_key

FLOWER_VERSION = "1.42.0"
FORMAT = "genofed-deployment/1"
CONNECTION = "genofed"  # the same connection name deploy.federation uses
DEFAULT_PORT = 9092
"""The SuperLink port we write into every command line. Flower 1.42's own default is 8000; we
always pass ``--port`` explicitly, and 8000 is the port every development web server takes."""
SUPERNODE_RUNTIME_PORT = 9094  # flower-supernode's default Runtime API port
DEFAULT_BIND = "0.0.0.0"
DEFAULT_DATA_PATH = "/srv/genofed/data"
DEFAULT_STATE_PATH = "/srv/genofed/state"
DEFAULT_DAYS = 3650
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_UNSAFE_IN_NODE_CONFIG = set("\"'\n\r\t")

# Environment every Flower process of ours gets (see deploy.federation.flower_env).
FLOWER_ENV = {
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
}


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def validate_site_names(sites: Iterable[str]) -> list[str]:
    """Site names as given, or a one-line GenofedError.

    Letters, digits, ``-`` and ``_``; starting with a letter or digit (so a name never reads as
    a flag); at most 63 characters; unique, also ignoring case (``Hospital-A`` and
    ``hospital-a`` would be one folder on a case-insensitive file system).
    """
    if isinstance(sites, str):  # "a,b" from a caller that did not split it
        sites = [s.strip() for s in sites.split(",")]
    names = [str(s) for s in sites]
    if not names:
        raise GenofedError("give at least one site name (--sites hospital-a,hospital-b)")
    seen: dict[str, str] = {}
    for name in names:
        if not SITE_NAME.fullmatch(name):
            raise GenofedError(
                f"site name {name!r} is not allowed: use letters, digits, '-' and '_', "
                "starting with a letter or digit, at most 63 characters"
            )
        if name.lower() in seen:
            raise GenofedError(f"site name {name!r} is given twice (as {seen[name.lower()]!r})")
        seen[name.lower()] = name
    return names


def _validate_hosts(
    hosts: Sequence[str], ips: Sequence[str]
) -> tuple[list[str], list[ipaddress.IPv4Address | ipaddress.IPv6Address]]:
    """(DNS names, IP addresses) for the server certificate; GenofedError on a bad one."""
    if not hosts:
        raise GenofedError("give the SuperLink's host name (--host superlink.example.org)")
    dns: list[str] = []
    addrs: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for host in hosts:
        try:
            addrs.append(ipaddress.ip_address(host))
            continue
        except ValueError:
            pass
        name = host.rstrip(".").lower()
        if len(name) > 253 or not all(_DNS_LABEL.fullmatch(p) for p in name.split(".")):
            raise GenofedError(f"--host {host!r} is neither a DNS name nor an IP address")
        dns.append(name)
    for ip in ips:
        try:
            addrs.append(ipaddress.ip_address(ip))
        except ValueError:
            raise GenofedError(f"--ip {ip!r} is not an IPv4 or IPv6 address") from None
    dns = list(dict.fromkeys([*dns, "localhost"]))
    addrs = list(dict.fromkeys([*addrs, ipaddress.ip_address("127.0.0.1")]))
    return dns, addrs


def _validate_node_path(value: str, what: str) -> str:
    if not value.startswith("/") or _UNSAFE_IN_NODE_CONFIG & set(value):
        raise GenofedError(
            f"{what} {value!r} must be an absolute path without quotes, tabs or newlines "
            "(it goes into flower-supernode --node-config)"
        )
    return value


def host_port(host: str, port: int) -> str:
    """``host:port``, with IPv6 literals in brackets."""
    with contextlib.suppress(ValueError):
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    return f"{host}:{port}"


# --------------------------------------------------------------------------------------------
# Keys and certificates
# --------------------------------------------------------------------------------------------


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
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
    start = _now() - dt.timedelta(minutes=5)  # tolerate a little clock skew at the sites
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
    start = _now() - dt.timedelta(minutes=5)
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


# --------------------------------------------------------------------------------------------
# Command lines and config files
# --------------------------------------------------------------------------------------------


def node_config_arg(site: str, data_path: str, state_path: str) -> str:
    """The ``--node-config`` value client/app.py reads (``site-id``, ``data-path``, ...)."""
    return f'site-id="{site}" data-path="{data_path}" state-path="{state_path}"'


def superlink_argv(
    ca: str, cert: str, key: str, secret: str, database: str, bind: str, port: int
) -> list[str]:
    return [
        "flower-superlink",
        "--ssl-ca-certfile", ca, "--ssl-certfile", cert, "--ssl-keyfile", key,
        "--enable-supernode-auth",
        "--disable-runtime-dependency-installation",
        "--isolation", "process", "--superexec-auth-secret-file", secret,
        "--database", database,
        "--host", bind, "--port", str(port),
    ]


def superexec_argv(runtime_address: str, ca: str, secret: str) -> list[str]:
    """The ServerApp's executor: connects to the SuperLink's Runtime API with the secret."""
    return [
        "flower-superexec", "--runtime-api-address", runtime_address,
        "--root-certificates", ca, "--superexec-auth-secret-file", secret,
    ]


def supernode_argv(
    superlink: str, ca: str, auth_key: str, node_config: str,
    runtime_host: str = "127.0.0.1", runtime_port: int = SUPERNODE_RUNTIME_PORT,
) -> list[str]:
    return [
        "flower-supernode", "--superlink", superlink, "--root-certificates", ca,
        "--auth-supernode-private-key", auth_key, "--node-config", node_config,
        "--isolation", "subprocess", "--host", runtime_host, "--port", str(runtime_port),
    ]


def _command_text(argv: Sequence[str], indent: str = "  ") -> str:
    """``argv`` as a shell command, one flag (with its value) per continuation line."""
    parts: list[str] = [shlex.quote(argv[0])]
    i = 1
    while i < len(argv):
        item = shlex.quote(argv[i])
        if argv[i].startswith("--") and i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            item += " " + shlex.quote(argv[i + 1])
            i += 1
        parts.append(item)
        i += 1
    return (" \\\n" + indent).join(parts)


def read_command_file(path: Path) -> list[str]:
    """The argv of a ``*.args`` file we wrote: comments dropped, continuations joined."""
    text = "\n".join(
        line for line in Path(path).read_text().splitlines() if not line.lstrip().startswith("#")
    )
    return shlex.split(text.replace("\\\n", " "))


def _toml_str(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


def _flwr_config(address: str, ca_path: Path) -> str:
    return "\n".join([
        "# $FLWR_HOME/config.toml for the coordinator's `flwr` CLI (genofed deploy init).",
        f"# `flwr run . {CONNECTION}`, `flwr supernode register sites/NAME/auth.pub {CONNECTION}`,",
        f"# `flwr ls {CONNECTION}` ... reach the SuperLink's Control API over TLS with this CA.",
        "[superlink]",
        f"default = {_toml_str(CONNECTION)}",
        "",
        f"[superlink.{CONNECTION}]",
        f"address = {_toml_str(address)}",
        f"root-certificates = {_toml_str(str(ca_path))}",  # flwr requires an absolute path
        "",
    ])


def _site_toml(site: str) -> str:
    from client.budget import SiteBudget
    from shared.cohort import CohortSpec

    budget, spec = SiteBudget(), CohortSpec()
    ancestries = "default (1000 Genomes populations and superpopulations, OTHER)"
    return "\n".join([
        f"# genofed settings of site {site!r}. genofed reads this file as `site.toml` in the",
        "# site's DATA folder (the node config's data-path): copy it there. Settings given in",
        "# flower-supernode --node-config (max-epsilon=..., delta=...) win over this file.",
        "# Everything is commented out: the values shown are the defaults.",
        "",
        "[privacy]",
        "# The most privacy loss (epsilon at delta) this site ever spends, over all runs",
        "# together. No coordinator setting can loosen it; a round that would overspend is",
        "# declined. The history lives in the state folder (state-path): keep it.",
        f"# max-epsilon = {budget.max_epsilon!r}",
        f"# delta = {budget.delta!r}",
        "# Never train with less DP-SGD noise than this (0: whatever the budget allows).",
        f"# min-noise-multiplier = {budget.min_noise_multiplier!r}",
        f"# accountant = {_toml_str(budget.accountant)}  # or \"rdp\"",
        "# Shares of each run's budget for scoring the global model on held-out people, and",
        "# for the noisy counts of each version of the cohort table; the rest funds DP-SGD.",
        f"# evaluation-share = {budget.evaluation_share!r}",
        f"# count-share = {budget.count_share!r}",
        "# Withhold ancestry groups with fewer held-out cases or controls than this.",
        f"# min-group-size = {budget.min_group_size!r}",
        "",
        "[cohort]",
        "# How to read cohort.tsv when its columns are named differently.",
        f"# sample-col = {_toml_str(spec.sample_col)}",
        f"# ancestry-col = {_toml_str(spec.ancestry_col)}",
        f"# phenotype-col = {_toml_str(spec.phenotype_col)}",
        f"# split-col = {_toml_str(spec.split_col or '')}  # \"\": always generate the split",
        "# covariates = []",
        f"# phenotype-coding = {_toml_str(spec.phenotype_coding)}  # 01, case-control, plink",
        f"# ancestries = \"default\"  # {ancestries}; or [\"AFR\", ...], or \"any\"",
        "# (the site's releases are broken down by these labels: list only the ones you hold)",
        f"# test-fraction = {spec.test_fraction!r}",
        f"# seed = {spec.seed!r}",
        "",
    ])


def _supernode_env(
    site: str, superlink: str, argv: Sequence[str], data_path: str, state_path: str
) -> str:
    lines = [
        f"# genofed SuperNode of site {site!r} (Flower {FLOWER_VERSION}; genofed deploy init).",
        "#",
        "# Run it in this folder (ca.crt and auth.key are named relative to it), with genofed",
        "# and its dependencies installed, so that the ClientApp can run as its subprocess:",
        "#",
        *("#   " + line for line in _command_text(argv, "    ").splitlines()),
        "#",
        f"# Outbound only: this machine opens HTTPS connections to {superlink}; nothing",
        f"# connects to it. The SuperNode's own Runtime API listens on 127.0.0.1:"
        f"{SUPERNODE_RUNTIME_PORT} only.",
        f"# Data folder (read-only is enough): {data_path}. State folder (read-write: privacy",
        f"# ledger, genotype cache): {state_path}. Check the data first:",
        f"#   genofed site check --data {data_path}",
        "#",
        "# The same settings as variables (systemd EnvironmentFile=, docker compose env_file):",
        f"GENOFED_SITE_ID={site}",
        f"GENOFED_SUPERLINK={superlink}",
        "GENOFED_ROOT_CERTIFICATES=ca.crt",
        "GENOFED_AUTH_KEY=auth.key",
        f"GENOFED_DATA_PATH={data_path}",
        f"GENOFED_STATE_PATH={state_path}",
        *(f"{k}={v}" for k, v in FLOWER_ENV.items()),
        "",
    ]
    return "\n".join(lines)


def _args_file(title: str, argv: Sequence[str], notes: Sequence[str]) -> str:
    return "\n".join([
        f"# {title} (Flower {FLOWER_VERSION}; genofed deploy init).",
        *(f"# {n}" if n else "#" for n in notes),
        "# Run with: sh THIS_FILE   (or copy the command into a systemd unit)",
        _command_text(argv),
        "",
    ])


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclass
class _Planned:
    rel: str
    data: bytes
    mode: int
    role: str
    owner: str
    secret: bool = False


@dataclass
class _Plan:
    files: list[_Planned] = field(default_factory=list)
    dirs: list[tuple[str, int]] = field(default_factory=list)

    def add(self, rel: str, data: bytes | str, role: str, owner: str, secret: bool = False,
            mode: int | None = None) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.files.append(_Planned(rel, raw, mode or (0o600 if secret else 0o644), role, owner,
                                   secret))


def _write_new(path: Path, data: bytes, mode: int) -> None:
    """Create `path` exclusively with `mode` from the start, write, fsync."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # umask may have taken bits away
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _existing(out: Path, rels: Iterable[str]) -> list[str]:
    return [r for r in rels if (out / r).exists() or (out / r).is_symlink()]


def _install(out: Path, stage: Path, rels: Sequence[str], force: bool) -> None:
    """Move staged files into place: link (never replaces) or, with force, rename over."""
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for rel in rels:
            src, dst = stage / rel, out / rel
            missing = [p for p in (dst.parent, *dst.parent.parents) if not p.exists()]
            dst.parent.mkdir(parents=True, exist_ok=True)
            made += reversed(missing)
            if force:
                os.replace(src, dst)
            else:
                try:
                    os.link(src, dst)
                except FileExistsError:
                    raise GenofedError(
                        f"{dst}: appeared while writing; refusing to overwrite it "
                        "(nothing was written; use --force to replace)"
                    ) from None
                placed.append(dst)
    except BaseException:
        for path in placed:  # a refusal leaves nothing of ours behind
            with contextlib.suppress(OSError):
                path.unlink()
        for directory in reversed(made):  # deepest first; only the empty ones we made
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise
    for directory in {(out / r).parent for r in rels}:
        _fsync_dir(directory)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cert_info(cert: x509.Certificate) -> dict[str, Any]:
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


def init_deployment(
    out: Path,
    sites: Sequence[str],
    host: str | Sequence[str],
    ips: Sequence[str] = (),
    port: int = DEFAULT_PORT,
    force: bool = False,
    *,
    bind: str = DEFAULT_BIND,
    data_path: str = DEFAULT_DATA_PATH,
    state_path: str = DEFAULT_STATE_PATH,
    days: int = DEFAULT_DAYS,
) -> dict[str, Any]:
    """Write a consortium's certificates, keys and configs under `out`; return deployment.json.

    `host`: the name (or names; the first is the address sites dial) of the SuperLink as the
    sites reach it; `ips`: extra IP addresses for the server certificate. `bind`: the address
    the SuperLink listens on. `data_path` / `state_path`: each site's data and state folders
    (absolute, on the site's machine; ``{site}`` stands for the site's name), written into its
    ``--node-config``. Without `force` any existing output file is a GenofedError and nothing
    is written; with `force` every file is replaced (new CA and keys).
    """
    out = Path(out)
    names = validate_site_names(sites)
    hosts = [host] if isinstance(host, str) else list(host)
    dns, addrs = _validate_hosts(hosts, list(ips))
    if not 1 <= int(port) <= 65535:
        raise GenofedError(f"--port {port} is not a TCP port (1-65535)")
    if days < 1:
        raise GenofedError(f"--days {days} must be at least 1")
    if not bind or any(c.isspace() for c in bind):
        raise GenofedError(f"--bind {bind!r} is not an address")
    _validate_node_path(data_path, "--data-path")
    _validate_node_path(state_path, "--state-path")
    if out.exists() and not out.is_dir():
        raise GenofedError(f"{out}: exists and is not a folder")

    root = out.resolve()
    address = host_port(hosts[0].rstrip("."), int(port))
    plan = _Plan()

    # --- certificates ------------------------------------------------------------------
    ca_key, ca_cert = make_ca(days)
    sl_key, sl_cert = make_server_cert(ca_key, ca_cert, dns, addrs, days)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    plan.add("certs/ca.crt", ca_pem, "ca-certificate", "coordinator")
    plan.add("certs/ca.key", _pem_key(ca_key), "ca-private-key", "coordinator", secret=True)
    plan.add("certs/superlink.crt", sl_cert.public_bytes(serialization.Encoding.PEM),
             "superlink-certificate", "coordinator")
    plan.add("certs/superlink.key", _pem_key(sl_key), "superlink-private-key", "coordinator",
             secret=True)

    # --- coordinator ---------------------------------------------------------------------
    coord = root / "coordinator"
    secret_hex = secrets.token_hex(32)
    plan.add("coordinator/superexec.secret", secret_hex, "superexec-secret", "coordinator",
             secret=True)
    sl_argv = superlink_argv(
        str(root / "certs/ca.crt"), str(root / "certs/superlink.crt"),
        str(root / "certs/superlink.key"), str(coord / "superexec.secret"),
        str(coord / "state/superlink.db"), bind, int(port),
    )
    runtime_address = host_port("127.0.0.1", int(port))
    se_argv = superexec_argv(runtime_address, str(root / "certs/ca.crt"),
                             str(coord / "superexec.secret"))
    plan.add("coordinator/superlink.args", _args_file("flower-superlink", sl_argv, [
        "TLS on the one port that serves the Fleet (/v1/fleet/), Control (/v1/control/) and",
        "Runtime (/v1/runtime/) APIs; only registered SuperNodes may connect",
        "(flwr supernode register); ServerApps run in the separate flower-superexec of",
        "superexec.args, which must present superexec.secret. Set --host to the address only",
        "the consortium network reaches (see deploy/GUIDE.md, Exposure).",
        "Environment: " + " ".join(f"{k}={v}" for k, v in FLOWER_ENV.items()),
    ]), "superlink-command", "coordinator")
    plan.add("coordinator/superexec.args", _args_file("flower-superexec for the ServerApp",
        se_argv, [
            "Runs genofed's ServerApp for each run; needs genofed installed in its Python",
            "environment, and the ledger key and output folder named in the run config.",
        ]), "superexec-command", "coordinator")
    plan.add("coordinator/flwr-config.toml", _flwr_config(address, root / "certs/ca.crt"),
             "flwr-config", "coordinator")
    plan.dirs.append(("coordinator", 0o700))
    plan.dirs.append(("coordinator/state", 0o700))
    plan.dirs.append(("coordinator/results", 0o700))

    # --- sites -----------------------------------------------------------------------------
    node_cfg: dict[str, str] = {}
    site_entries: dict[str, Any] = {}
    for name in names:
        base = f"sites/{name}"
        priv, pub = make_auth_keypair(f"genofed-{name}")
        plan.add(f"{base}/auth.key", priv, "supernode-auth-private-key", name, secret=True)
        plan.add(f"{base}/auth.pub", pub, "supernode-auth-public-key", name)
        plan.add(f"{base}/ca.crt", ca_pem, "ca-certificate", name)
        plan.add(f"{base}/site.toml", _site_toml(name), "site-config", name)
        plan.add(f"{base}/superexec.secret", secrets.token_hex(32), "superexec-secret", name,
                 secret=True)
        site_data = data_path.replace("{site}", name)
        site_state = state_path.replace("{site}", name)
        node_cfg[name] = node_config_arg(name, site_data, site_state)
        argv = supernode_argv(address, "ca.crt", "auth.key", node_cfg[name])
        plan.add(f"{base}/supernode.env",
                 _supernode_env(name, address, argv, site_data, site_state),
                 "supernode-command", name)
        plan.dirs.append((base, 0o700))
        site_entries[name] = {
            "dir": base,
            "cwd": base,
            "argv": argv,
            "node_config": {"site-id": name, "data-path": site_data, "state-path": site_state},
            "auth_key": f"{base}/auth.key",
            "auth_pub": f"{base}/auth.pub",
            "auth_pub_sha256": _sha256(pub),
            "ca_crt": f"{base}/ca.crt",
            "site_toml": f"{base}/site.toml",
            "supernode_env": f"{base}/supernode.env",
            "superexec_secret": f"{base}/superexec.secret",
            "runtime_api": host_port("127.0.0.1", SUPERNODE_RUNTIME_PORT),
            "register": ["flwr", "supernode", "register", f"{base}/auth.pub", CONNECTION],
        }

    ledger_rels = ["coordinator/ledger.key", "coordinator/ledger.pub"]
    rels = [f.rel for f in plan.files] + ledger_rels
    if not force:
        existing = _existing(out, [*rels, "deployment.json"])
        if existing:
            shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
            raise GenofedError(
                f"{out}: already holds a deployment ({shown}); refusing to overwrite keys "
                "(nothing was written; use --force to replace everything)"
            )

    created_out = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".genofed-init-", dir=out))
    try:
        for planned in plan.files:
            path = stage / planned.rel
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_new(path, planned.data, planned.mode)
        generate_signing_key(stage / ledger_rels[0], stage / ledger_rels[1])
        ledger_pub = (stage / ledger_rels[1]).read_bytes()
        ledger_key_id = key_id(load_public_key(stage / ledger_rels[1]))

        files = [
            {"path": f.rel, "role": f.role, "owner": f.owner, "secret": f.secret,
             "mode": f"{f.mode:04o}", **({} if f.secret else {"sha256": _sha256(f.data)})}
            for f in plan.files
        ]
        files += [
            {"path": ledger_rels[0], "role": "ledger-private-key", "owner": "coordinator",
             "secret": True, "mode": "0600"},
            {"path": ledger_rels[1], "role": "ledger-public-key", "owner": "coordinator",
             "secret": False, "mode": "0644", "sha256": _sha256(ledger_pub)},
        ]
        doc: dict[str, Any] = {
            "format": FORMAT,
            "flwr_version": FLOWER_VERSION,
            "created": _now().isoformat(),
            "root": str(root),
            "connection": CONNECTION,
            "superlink": {
                "address": address,
                "hosts": dns,
                "ips": [str(a) for a in addrs],
                "bind": bind,
                "port": int(port),
                "apis": {"fleet": "/v1/fleet/", "control": "/v1/control/",
                         "runtime": "/v1/runtime/"},
                "argv": sl_argv,
                "superexec_argv": se_argv,
                "command_file": "coordinator/superlink.args",
                "superexec_command_file": "coordinator/superexec.args",
                "database": "coordinator/state/superlink.db",
                "env": dict(FLOWER_ENV),
            },
            "coordinator": {
                "flwr_config": "coordinator/flwr-config.toml",
                "ledger_key": ledger_rels[0],
                "ledger_pub": ledger_rels[1],
                "ledger_key_id": ledger_key_id,
                "results": "coordinator/results",
                "state": "coordinator/state",
                "run_config": {"ledger-key": str(coord / "ledger.key"),
                               "out-dir": str(coord / "results")},
            },
            "sites": site_entries,
            "ports": [
                {"component": "superlink", "port": int(port), "bind": bind,
                 "protocol": "HTTPS (TLS, HTTP/1.1)", "apis": ["fleet", "control", "runtime"],
                 "reached_by": "sites (Fleet API) and the coordinator (Control API)"},
                {"component": "supernode", "port": SUPERNODE_RUNTIME_PORT, "bind": "127.0.0.1",
                 "protocol": "HTTP", "apis": ["runtime"], "reached_by": "its own ClientApp"},
            ],
            "certificates": {"ca": _cert_info(ca_cert), "superlink": _cert_info(sl_cert)},
            "files": files,
        }
        body = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        _write_new(stage / "deployment.json", body.encode(), 0o644)

        # deployment.json last: its presence says the rest is complete.
        _install(out, stage, [*rels, "deployment.json"], force)
        for rel, mode in plan.dirs:
            (out / rel).mkdir(parents=True, exist_ok=True)
            os.chmod(out / rel, mode)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created_out:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if we left it empty
        raise
    shutil.rmtree(stage, ignore_errors=True)
    return doc


def summary_lines(doc: dict[str, Any], out: Path) -> list[str]:
    """What `genofed deploy init` prints: where things are and what to do next."""
    sl = doc["superlink"]
    names = ", ".join(sl["hosts"] + sl["ips"])
    lines = [
        f"wrote a {len(doc['sites'])}-site deployment to {out} "
        f"(files, ports, commands: {out}/deployment.json)",
        f"  SuperLink {sl['address']}, listening on {host_port(sl['bind'], sl['port'])}; "
        f"certificate names: {names}",
        f"  coordinator: sh {out}/coordinator/superlink.args; "
        f"sh {out}/coordinator/superexec.args",
        f"  flwr CLI: cp {out}/coordinator/flwr-config.toml \"$FLWR_HOME/config.toml\"",
    ]
    lines += [f"  register: flwr supernode register {out}/{site['auth_pub']} {doc['connection']}"
              for site in doc["sites"].values()]
    lines += [
        f"  ledger key id {doc['coordinator']['ledger_key_id']} "
        f"(auditors verify with {out}/coordinator/ledger.pub)",
        f"  send each site its {out}/sites/NAME/ folder (it holds the site's private key); "
        f"keep {out}/certs/ca.key offline",
    ]
    return lines
