"""`genofed deploy init`: everything a consortium needs to run Flower for real.

One call writes, under ``out``:

- ``certs/``: a private CA (EC P-384) and the SuperLink's server certificate signed by it
  (serverAuth, SANs: every ``--host`` name, ``localhost``, ``127.0.0.1`` and every ``--ip``);
- ``coordinator/``: the ledger signing key (``shared.ledger``), a ``$FLWR_HOME/config.toml``
  with the ``genofed`` connection, the exact ``flower-superlink`` and ``flower-superexec``
  command lines, the SuperExec shared secret, an empty ``state/`` for the SuperLink database
  and an empty site registry (``site-registry.json``: the sites' public receipt keys, which the
  ServerApp checks every reply against; run config ``site-registry``);
- ``sites/NAME/``: the bundle a hospital receives: the CA certificate, a commented
  ``site.toml``, ``supernode.env`` with its ``flower-supernode`` command line, and a SuperExec
  secret used by the Docker setup (``deploy/compose.yaml``). No key of the site's: the
  coordinator never holds a site's private key, or it could join (and sign receipts) as that
  hospital. Each site makes its own with ``genofed site keygen`` (``client.identity``) into
  ``<state-path>/identity/``, which is where its command line looks for ``auth.key``;
- ``deployment.json``: every file (role, owner, mode, sha256 of the public ones), every port and
  every command line, for tools and tests; ``sites.NAME.keys`` is null until the site is
  registered.

`add_site_keys` (``genofed deploy add-site``) then takes a site's two public keys (its SuperNode
authentication key ``auth.pub``, OpenSSH EC P-384, and its receipt key ``receipt.pub``,
Ed25519 PEM), checks them, keeps copies in ``coordinator/sites/NAME/``, adds the receipt key to
the site registry and returns the ``flwr supernode register`` command for the auth key.

The CA, the server certificate and the checks on the sites' public keys live in
``deploy.pki``. Files are first written into a staging folder inside ``out`` (temporary names,
exclusive create, private keys 0600 from the first byte, fsync) and then moved into place:
without ``force`` by hard link, which fails on an existing name, so an existing key is never
replaced, and any refusal or error leaves no new file behind; with ``force`` by rename over the
old file.

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
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shlex
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from client.identity import AUTH_KEY, AUTH_PUB, IDENTITY, RECEIPT_PUB
from deploy.federation import CONNECTION, connection_toml
from deploy.pki import (
    DEFAULT_DAYS,
    cert_info,
    make_ca,
    make_server_cert,
    pem_key,
    read_auth_pub,
    read_receipt_pub,
    utc_now,
)
from server.outdir import RunFolder
from shared.errors import GenofedError, InputError
from shared.fsio import atomic_write, fsync_dir
from shared.ledger import (
    PRIVATE_KEY_NAME,
    PUBLIC_KEY_NAME,
    generate_signing_key,
    key_id,
    load_public_key,
)
from shared.receipts import SiteRegistry

FLOWER_VERSION = "1.42.0"
FORMAT = "genofed-deployment/1"
DEFAULT_PORT = 9092
"""The SuperLink port we write into every command line. Flower 1.42's own default is 8000; we
always pass ``--port`` explicitly, and 8000 is the port every development web server takes."""
SUPERNODE_RUNTIME_PORT = 9094  # flower-supernode's default Runtime API port
DEFAULT_BIND = "0.0.0.0"
DEFAULT_DATA_PATH = "/srv/genofed/data"
DEFAULT_STATE_PATH = "/srv/genofed/state"
SITE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,62}")
_DNS_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_UNSAFE_IN_NODE_CONFIG = set("\"'\n\r\t")
REGISTRY = "coordinator/site-registry.json"
SITE_KEYS = "coordinator/sites"  # the public keys each site sent: SITE_KEYS/NAME/auth.pub ...

# Every folder we create gets one of these modes with os.chmod, whatever the umask: a umask of
# 000 must never leave a folder others can write to (swap a key, plant a command file).
# coordinator/ and each site bundle hold secrets (0700). certs/ and sites/ only hold files that
# protect themselves (0600 keys, public certificates) and must stay traversable for the Docker
# containers' user (GUIDE, Docker). coordinator/sites/ holds public keys only (see
# add_site_keys).
DIR_MODES = {
    ".": 0o755,
    "certs": 0o755,
    "coordinator": 0o700,
    "coordinator/state": 0o700,
    "coordinator/results": 0o700,
    SITE_KEYS: 0o755,
    "sites": 0o755,
}
SITE_DIR_MODE = 0o700

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
        f"# `flwr run . {CONNECTION}`, `flwr ls {CONNECTION}`,",
        f"# `flwr supernode register coordinator/sites/NAME/auth.pub {CONNECTION}` ... reach",
        "# the SuperLink's Control API over TLS with this CA.",
        connection_toml(address, ca_path),
    ])


def _site_toml(site: str) -> str:
    from client.budget import SiteBudget
    from client.settings import AncestryOptions, GenotypeOptions, TrainingOptions
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
        "[training]",
        "# \"reweight\": equal loss weight per ancestry group (from the DP-released counts).",
        f"# balance = {_toml_str(TrainingOptions().balance)}",
        "",
        "[genotypes]",
        "# Imputed variants whose record states a quality (INFO R2, DR2 or INFO) below this are",
        "# read as missing (0: use every variant).",
        f"# min-imputation-quality = {GenotypeOptions().min_imputation_quality!r}",
        "# The genotype files, when not genotypes.vcf.gz (or .bcf, .pgen, .bed) or chr1.*.vcf.gz",
        "# ...: names or globs in the data folder; several are per-chromosome files read as one.",
        f"# files = {list(GenotypeOptions().files)!r}",
        "",
        "[ancestry]",
        "# The groups the site's releases are broken down by: \"declared\" (the cohort table's",
        "# ancestry column), \"genetic\" (each person's most similar population in the panel's",
        "# public ancestry reference, panel.ancestry.json, or \"unassigned\") or \"auto\" (the",
        "# column when the table has one, else genetic). `site check` shows how they agree.",
        f"# groups = {_toml_str(AncestryOptions().groups)}",
        "",
    ])


def site_auth_key(state_path: str) -> str:
    """Where a site's own SuperNode key lives on its machine: ``<state-path>/identity/auth.key``
    (``genofed site keygen --state`` writes it there; the coordinator never sees it)."""
    return f"{state_path.rstrip('/')}/{IDENTITY}/{AUTH_KEY}"


def _supernode_env(
    site: str, superlink: str, argv: Sequence[str], data_path: str, state_path: str
) -> str:
    auth_key = site_auth_key(state_path)
    identity = auth_key.rsplit("/", 1)[0]
    lines = [
        f"# genofed SuperNode of site {site!r} (Flower {FLOWER_VERSION}; genofed deploy init).",
        "#",
        "# First, once, make the site's own keys (they never leave this machine):",
        f"#   genofed site keygen --name {shlex.quote(site)} --state {shlex.quote(state_path)}",
        f"# and send the coordinator ONLY the public halves, {AUTH_PUB} and {RECEIPT_PUB}, from",
        f"# {identity}/ (it runs genofed deploy add-site and flwr supernode register).",
        "#",
        "# Run it in this folder (ca.crt is named relative to it), with genofed and its",
        "# dependencies installed, so that the ClientApp can run as its subprocess:",
        "#",
        *("#   " + line for line in _command_text(argv, "    ").splitlines()),
        "#",
        f"# Outbound only: this machine opens HTTPS connections to {superlink}; nothing",
        f"# connects to it. The SuperNode's own Runtime API listens on 127.0.0.1:"
        f"{SUPERNODE_RUNTIME_PORT} only.",
        f"# Data folder (read-only is enough): {data_path}. State folder (read-write: privacy",
        f"# ledger, genotype cache, the site's keys in {IDENTITY}/): {state_path}. Check the data:",
        f"#   genofed site check --data {data_path}",
        "#",
        "# The same settings as variables (systemd EnvironmentFile=, docker compose env_file):",
        f"GENOFED_SITE_ID={site}",
        f"GENOFED_SUPERLINK={superlink}",
        "GENOFED_ROOT_CERTIFICATES=ca.crt",
        f"GENOFED_AUTH_KEY={auth_key}",
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
    dirs: list[str] = field(default_factory=list)  # made (mode: _dir_mode) even when empty

    def add(self, rel: str, data: bytes | str, role: str, owner: str, secret: bool = False,
            mode: int | None = None) -> None:
        raw = data.encode() if isinstance(data, str) else data
        self.files.append(_Planned(rel, raw, mode or (0o600 if secret else 0o644), role, owner,
                                   secret))


def _dir_mode(out: Path, folder: Path) -> int:
    """The mode of a folder we create in (or above) the deployment `out` (see DIR_MODES)."""
    try:
        rel = folder.relative_to(out).as_posix()
    except ValueError:
        return DIR_MODES["."]  # a missing parent of `out`
    if rel.startswith(f"{SITE_KEYS}/"):
        # coordinator/sites/NAME/ holds the site's public keys only: meant to be shown
        # (auditors, `flwr supernode register`), so 0755 hides nothing worth hiding; what
        # matters is that no one else can replace them, which 0755 ensures as well as 0700,
        # and coordinator/ (0700) keeps other users out anyway.
        return 0o755
    if rel.startswith("sites/") and rel.count("/") == 1:
        return SITE_DIR_MODE  # a site bundle: its SuperExec secret
    return DIR_MODES.get(rel, 0o700)  # anything unforeseen: private


def _mkdirs(path: Path, out: Path) -> list[Path]:
    """Create `path` and its missing parents, each chmod-ed to its `_dir_mode` (so the umask,
    even 000, decides nothing); return the folders made, outermost first."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    made: list[Path] = []
    for folder in reversed(missing):
        mode = _dir_mode(out, folder)
        try:
            os.mkdir(folder, mode)
        except FileExistsError:
            continue  # made by someone else meanwhile: not ours to chmod or remove
        os.chmod(folder, mode)
        made.append(folder)
    return made


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


def _replace(path: Path, data: bytes, mode: int) -> None:
    """Atomically replace `path` (shared.fsio.atomic_write) with `mode` whatever the umask."""
    with atomic_write(path, "wb", perms=mode) as fh:
        fh.write(data)
    fsync_dir(path.parent)


def _existing(out: Path, rels: Iterable[str]) -> list[str]:
    return [r for r in rels if (out / r).exists() or (out / r).is_symlink()]


def _install(out: Path, stage: Path, rels: Sequence[str], force: bool) -> None:
    """Move staged files into place: link (never replaces) or, with force, rename over."""
    placed: list[Path] = []
    made: list[Path] = []
    try:
        for rel in rels:
            src, dst = stage / rel, out / rel
            made += _mkdirs(dst.parent, out)
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
        fsync_dir(directory)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keys_entry(name: str, auth: bytes, receipt: Ed25519PublicKey) -> dict[str, str]:
    """deployment.json's ``sites.NAME.keys`` for a registered site."""
    base = f"{SITE_KEYS}/{name}"
    return {"auth_pub": f"{base}/{AUTH_PUB}", "auth_pub_sha256": _sha256(auth),
            "receipt_pub": f"{base}/{RECEIPT_PUB}", "receipt_key_id": key_id(receipt)}


def _registry_bytes(registry: SiteRegistry) -> bytes:
    """The registry file, byte for byte what `SiteRegistry.save` writes."""
    return (json.dumps(registry.to_json(), indent=2, sort_keys=True) + "\n").encode()


def _file_entry(rel: str, role: str, owner: str, data: bytes) -> dict[str, Any]:
    return {"path": rel, "role": role, "owner": owner, "secret": False, "mode": "0644",
            "sha256": _sha256(data)}


def _kept_keys(out: Path, names: Sequence[str]) -> dict[str, tuple[bytes, bytes, Any]]:
    """With ``force``: the registered public keys of the deployment being replaced.

    A new CA changes nothing about a site's own keys, and the SuperLink database (which
    remembers their registration) is kept, so a registered site stays registered: its copies
    in coordinator/sites/NAME/ are checked again against the old deployment.json and carried
    over as (auth.pub, receipt.pub PEM, key). Anything missing or changed is dropped: that site
    is simply added again (`add_site_keys`).
    """
    try:
        old = json.loads((out / "deployment.json").read_text())
        sites = old["sites"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    kept: dict[str, tuple[bytes, bytes, Any]] = {}
    for name in names:
        entry = sites.get(name) if isinstance(sites, dict) else None
        keys = entry.get("keys") if isinstance(entry, dict) else None
        if not isinstance(keys, dict):
            continue
        base = out / SITE_KEYS / name
        try:
            auth = read_auth_pub(base / AUTH_PUB)
            pem, receipt = read_receipt_pub(base / RECEIPT_PUB)
        except GenofedError:
            continue
        if (_sha256(auth), key_id(receipt)) == (keys.get("auth_pub_sha256"),
                                                keys.get("receipt_key_id")):
            kept[name] = (auth, pem, receipt)
    return kept


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    """Hold an exclusive lock on the deployment folder: two `add_site_keys` at once would each
    rewrite the registry and deployment.json from the same old copy, losing one site."""
    try:
        fd = os.open(root, os.O_RDONLY)
    except FileNotFoundError:
        raise GenofedError(f"{root}: no such folder (genofed deploy init --out writes one)"
                           ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _load_deployment(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise InputError(path, "no deployment here (genofed deploy init --out writes one)"
                         ) from None
    except (OSError, ValueError) as err:
        raise InputError(path, f"unreadable deployment description ({err})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
            not isinstance(doc.get("sites"), dict) or not isinstance(doc.get("files"), list):
        raise InputError(path, f"not a {FORMAT} file")
    return doc


def add_site_keys(root: Path, name: str, auth_pub: Path, receipt_pub: Path,
                  force: bool = False) -> list[str]:
    """Register a site's public keys with the deployment at `root`; return the
    ``flwr supernode register`` command that lets its SuperNode join.

    The coordinator only ever handles public halves: `auth_pub` (one OpenSSH
    ``ecdsa-sha2-nistp384`` line, the SuperNode's authentication key) and `receipt_pub` (the
    Ed25519 PEM key the site signs its receipts with), both as ``genofed site keygen`` wrote
    them at the site; a private key given by mistake is refused. They are copied to
    ``coordinator/sites/NAME/`` (0644), the receipt key is added to the site registry the
    ServerApp checks every reply against, and ``sites.NAME.keys`` is recorded in
    deployment.json, each file replaced atomically, deployment.json last. A site not in the
    deployment is refused, and so is a key another site already registered (one site could
    then sign for the other). Replacing a site's registered keys needs `force`: a stolen-key
    story must be a deliberate act, and the old SuperNode key must then be unregistered
    (``flwr supernode unregister``). Giving the same keys again changes nothing.
    """
    root = Path(root).resolve()
    doc_path = root / "deployment.json"
    with _locked(root):
        doc = _load_deployment(doc_path)
        sites = doc["sites"]
        if name not in sites:
            raise GenofedError(f"{doc_path}: no site {name!r} in this deployment (sites: "
                               f"{', '.join(sites) or 'none'})")
        auth = read_auth_pub(Path(auth_pub))
        pem, receipt = read_receipt_pub(Path(receipt_pub))
        registry_path = root / REGISTRY
        if not registry_path.exists():
            raise InputError(registry_path, "missing: this deployment predates site-made keys; "
                             "re-run genofed deploy init --force")
        registry = SiteRegistry.load(registry_path)
        entry = _keys_entry(name, auth, receipt)
        old = sites[name].get("keys")
        if old is not None or name in registry.keys:
            same = old == entry and name in registry.keys and \
                key_id(registry.keys[name]) == entry["receipt_key_id"]
            if not same and not force:
                held = key_id(registry.keys[name]) if name in registry.keys else \
                    (old.get("receipt_key_id") if isinstance(old, dict) else None)
                raise GenofedError(
                    f"{root}: site {name!r} already has registered keys (receipt key id "
                    f"{held}); refusing to replace them (use --force, then unregister its old "
                    "SuperNode: flwr supernode unregister)")
        for other, key in registry.keys.items():
            if other != name and key_id(key) == entry["receipt_key_id"]:
                raise InputError(receipt_pub, f"is the receipt key of site {other!r}: every "
                                 "site needs its own")
        blob = auth.split()[1]
        for other in sites:
            other_pub = root / SITE_KEYS / other / AUTH_PUB
            if other != name and other_pub.is_file() and \
                    other_pub.read_bytes().split()[1:2] == [blob]:
                raise InputError(auth_pub, f"is the SuperNode key of site {other!r}: every "
                                 "site needs its own")

        folder = root / SITE_KEYS / name
        _mkdirs(folder, root)
        os.chmod(folder, _dir_mode(root, folder))
        rels = {AUTH_PUB: f"{SITE_KEYS}/{name}/{AUTH_PUB}",
                RECEIPT_PUB: f"{SITE_KEYS}/{name}/{RECEIPT_PUB}"}
        _replace(root / rels[AUTH_PUB], auth, 0o644)
        _replace(root / rels[RECEIPT_PUB], pem, 0o644)
        registry_data = _registry_bytes(SiteRegistry({**registry.keys, name: receipt}))
        _replace(registry_path, registry_data, 0o644)

        sites[name]["keys"] = entry
        updates = {
            rels[AUTH_PUB]: _file_entry(rels[AUTH_PUB], "site-auth-public-key", "coordinator",
                                        auth),
            rels[RECEIPT_PUB]: _file_entry(rels[RECEIPT_PUB], "site-receipt-public-key",
                                           "coordinator", pem),
            REGISTRY: _file_entry(REGISTRY, "site-registry", "coordinator", registry_data),
        }
        files = [updates.pop(f["path"], f) for f in doc["files"]]
        doc["files"] = files + list(updates.values())
        _replace(doc_path, (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode(), 0o644)
    return ["flwr", "supernode", "register", str(root / rels[AUTH_PUB]),
            str(doc.get("connection", CONNECTION))]


# --------------------------------------------------------------------------------------------
# init
# --------------------------------------------------------------------------------------------


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
    open_control_api: bool = False,
    superlink_port: int | None = None,
) -> dict[str, Any]:
    """Write a consortium's certificates, keys and configs under `out`; return deployment.json.

    `host`: the name (or names; the first is the address sites dial) of the SuperLink as the
    sites reach it; `ips`: extra IP addresses for the server certificate. `bind`: the address
    the SuperLink listens on. `data_path` / `state_path`: each site's data and state folders
    (absolute, on the site's machine; ``{site}`` stands for the site's name), written into its
    ``--node-config``; the site's own SuperNode key is ``<state_path>/identity/auth.key``.
    No site key is made here (`add_site_keys` takes their public halves later). Without
    `force` any existing output file is a GenofedError and nothing is written; with `force`
    every file is replaced (new CA, new coordinator keys), except that sites already
    registered stay registered (their keys are theirs, see `_kept_keys`).

    The Control API is closed by default: the SuperLink listens on 127.0.0.1:`superlink_port`
    (default `port` + 1) and nginx (`coordinator/nginx.conf`, deploy.proxy) listens on
    `bind`:`port`, the address the sites dial, passing only `/v1/fleet/` through. With
    `open_control_api` the SuperLink itself listens on `bind`:`port` (all three APIs exposed).
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
    inner_port = int(port) if open_control_api else int(superlink_port or int(port) + 1)
    if not 1 <= inner_port <= 65535 or (inner_port == int(port) and not open_control_api):
        raise GenofedError(f"--superlink-port {inner_port} must be a TCP port other than --port")
    sl_bind = bind if open_control_api else "127.0.0.1"
    # The coordinator's own flwr commands and its SuperExec use the loopback address.
    control_address = address if open_control_api else host_port("127.0.0.1", inner_port)
    plan = _Plan()

    # --- certificates ------------------------------------------------------------------
    ca_key, ca_cert = make_ca(days)
    sl_key, sl_cert = make_server_cert(ca_key, ca_cert, dns, addrs, days)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    plan.add("certs/ca.crt", ca_pem, "ca-certificate", "coordinator")
    plan.add("certs/ca.key", pem_key(ca_key), "ca-private-key", "coordinator", secret=True)
    plan.add("certs/superlink.crt", sl_cert.public_bytes(serialization.Encoding.PEM),
             "superlink-certificate", "coordinator")
    plan.add("certs/superlink.key", pem_key(sl_key), "superlink-private-key", "coordinator",
             secret=True)

    # --- coordinator ---------------------------------------------------------------------
    coord = root / "coordinator"
    secret_hex = secrets.token_hex(32)
    plan.add("coordinator/superexec.secret", secret_hex, "superexec-secret", "coordinator",
             secret=True)
    sl_argv = superlink_argv(
        str(root / "certs/ca.crt"), str(root / "certs/superlink.crt"),
        str(root / "certs/superlink.key"), str(coord / "superexec.secret"),
        str(coord / "state/superlink.db"), sl_bind, inner_port,
    )
    runtime_address = host_port("127.0.0.1", inner_port)
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
    signer_argv = ["genofed", "coordinator", "signer", "--key", str(coord / PRIVATE_KEY_NAME),
                   "--ledger", str(RunFolder(coord / "results").ledger),
                   "--registry", str(root / REGISTRY), "--socket", str(coord / "signer.sock")]
    plan.add("coordinator/signer.args", _args_file("the ledger signer", signer_argv, [
        "The only process that reads ledger.key: the ServerApp (submitted with flwr run) asks",
        "it over signer.sock to sign each record, and it signs a round only if the sites'",
        "receipts back it. Run it as a user the ServerApp cannot act as; restart it after",
        "genofed deploy add-site (it reads the registry at start).",
    ]), "signer-command", "coordinator")
    plan.add("coordinator/superexec.args", _args_file("flower-superexec for the ServerApp",
        se_argv, [
            "Runs genofed's ServerApp for each run; needs genofed installed in its Python",
            "environment, and the ledger key, site registry and output folder named in the",
            "run config.",
        ]), "superexec-command", "coordinator")
    plan.add("coordinator/flwr-config.toml",
             _flwr_config(control_address, root / "certs/ca.crt"), "flwr-config", "coordinator")
    proxy_doc = None
    if not open_control_api:
        from deploy.proxy import NGINX_IMAGE, nginx_conf

        conf = nginx_conf(listen=host_port(bind, int(port)),
                          superlink=host_port("127.0.0.1", inner_port),
                          cert=str(root / "certs/superlink.crt"),
                          key=str(root / "certs/superlink.key"),
                          ca=str(root / "certs/ca.crt"), prefix=str(coord / "nginx"))
        plan.add("coordinator/nginx.conf", conf, "proxy-config", "coordinator")
        # The same for deploy/compose.yaml: container paths, the SuperLink by service name.
        plan.add("coordinator/nginx.compose.conf", nginx_conf(
            listen=f"0.0.0.0:{int(port)}", superlink=f"superlink:{inner_port}",
            cert="/etc/genofed/superlink.crt", key="/etc/genofed/superlink.key",
            ca="/etc/genofed/ca.crt", prefix="/tmp"), "proxy-config", "coordinator")
        plan.dirs += ["coordinator/nginx"]
        proxy_doc = {"conf": "coordinator/nginx.conf", "listen": host_port(bind, int(port)),
                     "upstream": host_port("127.0.0.1", inner_port), "image": NGINX_IMAGE,
                     "exposes": ["/v1/fleet/"],
                     "argv": ["nginx", "-p", str(coord / "nginx"), "-c",
                              str(coord / "nginx.conf"), "-g", "daemon off;"]}
    kept = _kept_keys(root, names) if force else {}
    for name, (auth, pem, _) in kept.items():
        plan.add(f"{SITE_KEYS}/{name}/{AUTH_PUB}", auth, "site-auth-public-key", "coordinator")
        plan.add(f"{SITE_KEYS}/{name}/{RECEIPT_PUB}", pem, "site-receipt-public-key",
                 "coordinator")
    registry = SiteRegistry({name: receipt for name, (_, _, receipt) in kept.items()})
    plan.add(REGISTRY, _registry_bytes(registry), "site-registry", "coordinator")
    plan.dirs += ["certs", "coordinator", "coordinator/state", "coordinator/results", SITE_KEYS,
                  "sites"]

    # --- sites -----------------------------------------------------------------------------
    node_cfg: dict[str, str] = {}
    site_entries: dict[str, Any] = {}
    for name in names:
        base = f"sites/{name}"
        plan.add(f"{base}/ca.crt", ca_pem, "ca-certificate", name)
        plan.add(f"{base}/site.toml", _site_toml(name), "site-config", name)
        plan.add(f"{base}/superexec.secret", secrets.token_hex(32), "superexec-secret", name,
                 secret=True)
        site_data = data_path.replace("{site}", name)
        site_state = state_path.replace("{site}", name)
        node_cfg[name] = node_config_arg(name, site_data, site_state)
        argv = supernode_argv(address, "ca.crt", site_auth_key(site_state), node_cfg[name])
        plan.add(f"{base}/supernode.env",
                 _supernode_env(name, address, argv, site_data, site_state),
                 "supernode-command", name)
        plan.dirs.append(base)
        auth, _, receipt = kept.get(name, (b"", b"", None))
        site_entries[name] = {
            "dir": base,
            "cwd": base,
            "argv": argv,
            "node_config": {"site-id": name, "data-path": site_data, "state-path": site_state},
            "auth_key_path": site_auth_key(site_state),  # on the site's machine, not here
            "keygen": ["genofed", "site", "keygen", "--name", name, "--state", site_state],
            "keys": _keys_entry(name, auth, receipt) if receipt is not None else None,
            "ca_crt": f"{base}/ca.crt",
            "site_toml": f"{base}/site.toml",
            "supernode_env": f"{base}/supernode.env",
            "superexec_secret": f"{base}/superexec.secret",
            "runtime_api": host_port("127.0.0.1", SUPERNODE_RUNTIME_PORT),
            "register": ["flwr", "supernode", "register", f"{SITE_KEYS}/{name}/{AUTH_PUB}",
                         CONNECTION],
        }

    ledger_rels = [f"coordinator/{PRIVATE_KEY_NAME}", f"coordinator/{PUBLIC_KEY_NAME}"]
    rels = [f.rel for f in plan.files] + ledger_rels
    if not force:
        existing = _existing(out, [*rels, "deployment.json"])
        if existing:
            shown = ", ".join(existing[:3]) + (" ..." if len(existing) > 3 else "")
            raise GenofedError(
                f"{out}: already holds a deployment ({shown}); refusing to overwrite keys "
                "(nothing was written; use --force to replace everything)"
            )

    made_out = _mkdirs(root, root)
    stage = Path(tempfile.mkdtemp(prefix=".genofed-init-", dir=out))
    try:
        for planned in plan.files:
            path = stage / planned.rel
            path.parent.mkdir(parents=True, exist_ok=True)  # inside the 0700 stage
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
            "created": utc_now().isoformat(),
            "root": str(root),
            "connection": CONNECTION,
            "superlink": {
                "address": address,
                "hosts": dns,
                "ips": [str(a) for a in addrs],
                "bind": sl_bind,
                "port": inner_port,
                "public_bind": bind,
                "public_port": int(port),
                "control_address": control_address,
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
                "site_registry": REGISTRY,
                "site_keys": SITE_KEYS,
                "results": "coordinator/results",
                "state": "coordinator/state",
                # The ServerApp never holds the ledger key: the signer does (signer.args).
                "run_config": {"ledger-signer": str(coord / "signer.sock"),
                               "out-dir": str(coord / "results"),
                               "site-registry": str(root / REGISTRY)},
                "signer_argv": signer_argv,
            },
            "sites": site_entries,
            "proxy": proxy_doc,
            "ports": [
                {"component": "superlink", "port": inner_port, "bind": sl_bind,
                 "protocol": "HTTPS (TLS, HTTP/1.1)", "apis": ["fleet", "control", "runtime"],
                 "reached_by": "the coordinator's host only (Control, Runtime APIs)"
                 if proxy_doc else "sites (Fleet API) and the coordinator (Control API)"},
                *([{"component": "proxy (nginx)", "port": int(port), "bind": bind,
                    "protocol": "HTTPS (TLS, HTTP/1.1)", "apis": ["fleet"],
                    "reached_by": "sites (Fleet API only; everything else 403)"}]
                  if proxy_doc else []),
                {"component": "supernode", "port": SUPERNODE_RUNTIME_PORT, "bind": "127.0.0.1",
                 "protocol": "HTTP", "apis": ["runtime"], "reached_by": "its own ClientApp"},
            ],
            "certificates": {"ca": cert_info(ca_cert), "superlink": cert_info(sl_cert)},
            "files": files,
        }
        body = json.dumps(doc, indent=2, sort_keys=True) + "\n"
        _write_new(stage / "deployment.json", body.encode(), 0o644)

        # deployment.json last: its presence says the rest is complete.
        _install(root, stage, [*rels, "deployment.json"], force)
        for rel in plan.dirs:
            _mkdirs(root / rel, root)
            os.chmod(root / rel, _dir_mode(root, root / rel))  # also an older folder's mode
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        for folder in reversed(made_out):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if we left it empty
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
        f"  send each site its {out}/sites/NAME/ folder (no private key in it); "
        f"keep {out}/certs/ca.key offline",
    ]
    for name, site in doc["sites"].items():
        register = f"flwr supernode register {out}/{site['register'][3]} {doc['connection']}"
        if site.get("keys"):
            lines.append(f"  {name}: keys registered earlier kept (receipt key id "
                         f"{site['keys']['receipt_key_id']}); if the SuperLink forgot them: "
                         f"{register}")
        else:
            lines.append(
                f"  {name}: at the site, {shlex.join(site['keygen'])}; it sends you auth.pub and "
                f"receipt.pub; then genofed deploy add-site --out {out} --site {name} "
                f"--auth-pub auth.pub --receipt-pub receipt.pub; {register}")
    lines.append(
        f"  ledger key id {doc['coordinator']['ledger_key_id']} "
        f"(auditors verify with {out}/coordinator/ledger.pub)")
    stale = sorted(str(p) for p in Path(out).glob("sites/*/auth.key"))
    if stale:
        lines.append(f"  an earlier genofed made site private keys here ({', '.join(stale)}): "
                     "delete them once the sites run on keys of their own")
    return lines
