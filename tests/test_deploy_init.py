"""`genofed deploy init` and `add-site`: certificates, keys, configs, refusals, compose.yaml.

Sites make their own keys (`client.identity.keygen`, as `genofed site keygen` does) and the
coordinator only ever receives the public halves (`add_site_keys`). Flags are checked against
the real `--help` of Flower 1.42's programs, compose mounts against the files `init_deployment`
writes. The generated command lines run for real (TLS, SuperNode authentication,
process-isolated SuperLink) in tests/test_deploy_local.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from flwr.common.config import parse_config_args

from client.budget import SiteBudget
from client.identity import keygen
from client.settings import SiteSettings
from deploy.federation import flower_env
from deploy.init import (
    DEFAULT_DATA_PATH,
    DEFAULT_PORT,
    DEFAULT_STATE_PATH,
    REGISTRY,
    add_site_keys,
    init_deployment,
    read_command_file,
)
from shared.cli import main
from shared.cohort import CohortSpec
from shared.errors import GenofedError
from shared.ledger import (
    Ledger,
    ensure_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    verify_ledger,
)
from shared.receipts import ReceiptError, SiteRegistry, make_receipt, verify_receipt

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
BIN = Path(sys.executable).parent
HOST = "superlink.example.org"
SITES = ["hospital-a", "hospital-b"]


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each site's own key folder (`<state>/identity`), made at the site: never under `out`."""
    state = tmp_path_factory.mktemp("site-state")
    return {name: keygen(state / name / "identity", name)["auth.key"].parent for name in SITES}


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory,
               identities: dict[str, Path]) -> tuple[Path, dict]:
    """init, then every site's public halves through add_site_keys (as `deploy add-site`)."""
    out = tmp_path_factory.mktemp("deploy") / "dep"
    first = init_deployment(out, SITES, [HOST, "fl.internal"], ips=["10.1.2.3", "fd00::5"])
    assert all(site["keys"] is None for site in first["sites"].values())
    for name, folder in identities.items():
        register = add_site_keys(out, name, folder / "auth.pub", folder / "receipt.pub")
        assert register == ["flwr", "supernode", "register",
                            str(out.resolve() / f"coordinator/sites/{name}/auth.pub"), "genofed"]
    return out, json.loads((out / "deployment.json").read_text())


def register_site(out: Path, name: str, state: Path, force: bool = False) -> Path:
    """Make `name`'s keys at the site (`state`/identity) and give the coordinator the public
    halves; the identity folder."""
    folder = state / name / "identity"
    if not (folder / "auth.pub").exists():
        keygen(folder, name)
    add_site_keys(out, name, folder / "auth.pub", folder / "receipt.pub", force=force)
    return folder


@pytest.fixture(scope="session")
def help_flags(tmp_path_factory: pytest.TempPathFactory) -> dict[str, set[str]]:
    """Every `--flag` each Flower program lists in its own `--help`."""
    env = flower_env(tmp_path_factory.mktemp("flwr-home"))
    flags = {}
    for prog in ("flower-superlink", "flower-supernode", "flower-superexec"):
        out = subprocess.run([str(BIN / prog), "--help"], env=env, capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        flags[prog] = set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", out.stdout))
        assert "--help" in flags[prog]
    return flags


def flags_of(argv: list[str]) -> list[str]:
    return [a for a in argv[1:] if a.startswith("--")]


def value_of(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def tree(path: Path) -> dict[str, tuple[int, bytes]]:
    return {str(p.relative_to(path)): (p.stat().st_mode, p.read_bytes() if p.is_file() else b"")
            for p in sorted(path.rglob("*"))}


# --------------------------------------------------------------------------------------------
# Files, permissions, certificates, keys
# --------------------------------------------------------------------------------------------


def test_files_modes_and_hashes(deployment: tuple[Path, dict]) -> None:
    out, doc = deployment
    assert json.loads((out / "deployment.json").read_text()) == doc
    rels = {f["path"] for f in doc["files"]}
    for name in SITES:
        # The bundle a site receives: no key of the site's (it makes its own).
        assert {p.name for p in (out / "sites" / name).iterdir()} == {
            "ca.crt", "site.toml", "supernode.env", "superexec.secret"}
        for leaf in ("ca.crt", "site.toml", "supernode.env", "superexec.secret"):
            assert f"sites/{name}/{leaf}" in rels
        # What the coordinator keeps of it: the public halves it was given.
        for leaf in ("auth.pub", "receipt.pub"):
            assert f"coordinator/sites/{name}/{leaf}" in rels
        assert (out / f"coordinator/sites/{name}").stat().st_mode & 0o777 == 0o755
    for rel in ("certs/ca.crt", "certs/ca.key", "certs/superlink.crt", "certs/superlink.key",
                "coordinator/ledger.key", "coordinator/ledger.pub", REGISTRY,
                "coordinator/flwr-config.toml", "coordinator/superlink.args"):
        assert rel in rels
    for f in doc["files"]:
        path = out / f["path"]
        mode = path.stat().st_mode & 0o777
        assert f"{mode:04o}" == f["mode"], f["path"]
        if f["secret"]:
            assert mode == 0o600, f["path"]
            assert "sha256" not in f
        else:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    private = {f["path"] for f in doc["files"] if f["path"].endswith(".key")}
    assert private == {f["path"] for f in doc["files"] if f["role"].endswith("private-key")}
    assert all(f["secret"] for f in doc["files"] if f["path"] in private)
    for name in SITES:
        assert (out / "sites" / name).stat().st_mode & 0o777 == 0o700
    assert (out / "coordinator").stat().st_mode & 0o777 == 0o700
    assert not list(out.glob(".genofed-init-*"))  # no staging folder left behind


def test_server_certificate_chains_to_the_ca(deployment: tuple[Path, dict]) -> None:
    out, doc = deployment
    ca = x509.load_pem_x509_certificate((out / "certs/ca.crt").read_bytes())
    leaf = x509.load_pem_x509_certificate((out / "certs/superlink.crt").read_bytes())
    # The signature, checked with the CA's public key by hand ...
    ca_pub = ca.public_key()
    assert isinstance(ca_pub, ec.EllipticCurvePublicKey)
    assert isinstance(ca_pub.curve, ec.SECP384R1)
    ca_pub.verify(leaf.signature, leaf.tbs_certificate_bytes,
                  ec.ECDSA(leaf.signature_hash_algorithm))
    ca_pub.verify(ca.signature, ca.tbs_certificate_bytes, ec.ECDSA(ca.signature_hash_algorithm))
    leaf.verify_directly_issued_by(ca)
    # ... and by cryptography's (strict, web-PKI) path validation, for every name and address.
    store = Store([ca])
    for name in (HOST, "fl.internal", "localhost"):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName(name)).verify(leaf, [])
    for ip in ("127.0.0.1", "10.1.2.3", "fd00::5"):
        verifier = PolicyBuilder().store(store).build_server_verifier(
            x509.IPAddress(ipaddress.ip_address(ip)))
        verifier.verify(leaf, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(
            x509.DNSName("evil.example.org")).verify(leaf, [])

    basic = ca.extensions.get_extension_for_class(x509.BasicConstraints)
    assert basic.critical and basic.value.ca
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign
    assert (ca.not_valid_after_utc - ca.not_valid_before_utc).days >= 3650
    assert not leaf.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(san.get_values_for_type(x509.DNSName)) == {HOST, "fl.internal", "localhost"}
    assert {str(a) for a in san.get_values_for_type(x509.IPAddress)} == {
        "127.0.0.1", "10.1.2.3", "fd00::5"}
    assert leaf.not_valid_after_utc <= ca.not_valid_after_utc
    key = serialization.load_pem_private_key((out / "certs/superlink.key").read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and isinstance(key.curve, ec.SECP384R1)
    assert key.public_key().public_numbers() == leaf.public_key().public_numbers()
    assert doc["certificates"]["superlink"]["san_dns"] == san.get_values_for_type(x509.DNSName)
    for name in SITES:
        assert (out / f"sites/{name}/ca.crt").read_bytes() == (out / "certs/ca.crt").read_bytes()


def test_auth_keys_are_openssh_p384(deployment: tuple[Path, dict],
                                    identities: dict[str, Path]) -> None:
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    out, doc = deployment
    seen = set()
    for name in SITES:
        raw = (identities[name] / "auth.key").read_bytes()  # at the site, never under out
        assert raw.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        # What flower-supernode --auth-supernode-private-key does with it:
        key = serialization.load_ssh_private_key(raw, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP384R1)
        keys = doc["sites"][name]["keys"]
        line = (out / keys["auth_pub"]).read_bytes()  # the coordinator's copy
        assert line == (identities[name] / "auth.pub").read_bytes()
        assert line.startswith(b"ecdsa-sha2-nistp384 ") and line.endswith(b"\n")
        assert len(line.splitlines()) == 1
        # What `flwr supernode register` does with it:
        pub = serialization.load_ssh_public_key(line.strip())
        assert isinstance(pub, ec.EllipticCurvePublicKey) and uses_nist_ec_curve(pub)
        assert pub.public_numbers() == key.public_key().public_numbers()
        assert keys["auth_pub_sha256"] == hashlib.sha256(line).hexdigest()
        assert doc["sites"][name]["register"] == [
            "flwr", "supernode", "register", keys["auth_pub"], "genofed"]
        seen.add(line)
    assert len(seen) == len(SITES)  # one key pair per site


def test_no_private_key_under_the_coordinators_output(
    deployment: tuple[Path, dict], identities: dict[str, Path]
) -> None:
    out, _ = deployment
    site_secrets = [(identities[name] / leaf).read_bytes()
                    for name in SITES for leaf in ("auth.key", "receipt.key")]
    blobs = [b"".join(s.splitlines()[1:-1]) for s in site_secrets]  # the base64 inside
    holding = set()
    for path in out.rglob("*"):
        assert path.name not in ("auth.key", "receipt.key"), path
        if path.is_file():
            data = path.read_bytes()
            if b"PRIVATE KEY" in data:
                holding.add(str(path.relative_to(out)))
            flat = b"".join(data.split())
            assert not any(blob in flat for blob in blobs), f"{path} holds a site's private key"
    # Only the coordinator's own: its CA, its TLS server key, its ledger key.
    assert holding == {"certs/ca.key", "certs/superlink.key", "coordinator/ledger.key"}


def test_registry_verifies_the_sites_own_receipts(
    deployment: tuple[Path, dict], identities: dict[str, Path]
) -> None:
    out, doc = deployment
    path = Path(doc["coordinator"]["run_config"]["site-registry"])
    assert path == out.resolve() / REGISTRY and path.stat().st_mode & 0o777 == 0o644
    registry = SiteRegistry.load(path)
    assert sorted(registry.keys) == SITES
    for name in SITES:
        assert key_id(registry.keys[name]) == doc["sites"][name]["keys"]["receipt_key_id"]
        assert (out / doc["sites"][name]["keys"]["receipt_pub"]).read_bytes() == (
            identities[name] / "receipt.pub").read_bytes()
        receipt = make_receipt(
            load_private_key(identities[name] / "receipt.key"), run_id="7", round=1,
            site=name, kind="fit", weights_in="a" * 64, weights_out="b" * 64, epsilon=0.5,
            delta=1e-5, code="installed:x")
        assert verify_receipt(receipt, registry.keys[name])["site"] == name
        other = next(n for n in SITES if n != name)
        with pytest.raises(ReceiptError):  # no site can sign in another's name
            verify_receipt(receipt, registry.keys[other])


def test_ledger_keys_work_with_shared_ledger(deployment: tuple[Path, dict],
                                             tmp_path: Path) -> None:
    out, doc = deployment
    key_path, pub_path = out / "coordinator/ledger.key", out / "coordinator/ledger.pub"
    assert ensure_signing_key(key_path, pub_path) is False  # an existing, matching pair
    pub = load_public_key(pub_path)
    assert key_id(pub) == doc["coordinator"]["ledger_key_id"]
    ledger = Ledger(tmp_path / "ledger.jsonl", load_private_key(key_path))
    ledger.append({"round": 1, "sites": SITES})
    result = verify_ledger(tmp_path / "ledger.jsonl", pub)
    assert result.ok and result.records == 1
    # The ServerApp gets the signer's socket, never the key; the signer gets the key.
    run_config = doc["coordinator"]["run_config"]
    assert "ledger-key" not in run_config
    signer = doc["coordinator"]["signer_argv"]
    assert value_of(signer, "--key") == str(key_path.resolve())
    assert value_of(signer, "--socket") == run_config["ledger-signer"]
    assert value_of(signer, "--ledger") == str(Path(run_config["out-dir"]) / "ledger.jsonl")
    assert value_of(signer, "--registry") == run_config["site-registry"] == str(
        out.resolve() / REGISTRY)
    assert read_command_file(out / "coordinator/signer.args") == signer


# --------------------------------------------------------------------------------------------
# Config files and command lines
# --------------------------------------------------------------------------------------------


def test_command_files_match_deployment_json(deployment: tuple[Path, dict]) -> None:
    out, doc = deployment
    sl = doc["superlink"]
    assert read_command_file(out / "coordinator/superlink.args") == sl["argv"]
    assert read_command_file(out / "coordinator/superexec.args") == sl["superexec_argv"]
    assert sl["address"] == f"{HOST}:{DEFAULT_PORT}"
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile"):
        assert Path(value_of(sl["argv"], flag)).is_file()
    assert value_of(sl["argv"], "--ssl-keyfile") == str(out.resolve() / "certs/superlink.key")
    assert {"--enable-supernode-auth", "--disable-runtime-dependency-installation"} <= set(
        sl["argv"])
    assert "--insecure" not in sl["argv"]
    # The Control API is closed: the SuperLink listens on loopback, one port above the public
    # one, and only the proxy listens where the sites dial.
    inner = DEFAULT_PORT + 1
    assert (value_of(sl["argv"], "--host"), value_of(sl["argv"], "--port")) == (
        "127.0.0.1", str(inner))
    assert value_of(sl["superexec_argv"], "--runtime-api-address") == f"127.0.0.1:{inner}"
    assert (value_of(sl["argv"], "--superexec-auth-secret-file")
            == value_of(sl["superexec_argv"], "--superexec-auth-secret-file"))
    proxy = doc["proxy"]
    conf = (out / proxy["conf"]).read_text()
    assert proxy["listen"] == f"0.0.0.0:{DEFAULT_PORT}" and proxy["exposes"] == ["/v1/fleet/"]
    assert f"listen 0.0.0.0:{DEFAULT_PORT} ssl;" in conf
    assert f"proxy_pass https://127.0.0.1:{inner};" in conf
    assert conf.count("location ") == 2 and "location / {\n            return 403;" in conf

    config = tomllib.loads((out / "coordinator/flwr-config.toml").read_text())
    conn = config["superlink"][config["superlink"]["default"]]
    assert config["superlink"]["default"] == doc["connection"] == "genofed"
    assert conn == {"address": f"127.0.0.1:{inner}",
                    "root-certificates": str(out.resolve() / "certs/ca.crt")}

    for name in SITES:
        site = doc["sites"][name]
        cwd = out / site["cwd"]
        argv = site["argv"]
        assert value_of(argv, "--superlink") == sl["address"]
        assert (cwd / value_of(argv, "--root-certificates")).read_bytes() == (
            out / "certs/ca.crt").read_bytes()
        # The site's own key, in its state folder on its own machine (absolute).
        auth_key = f"{DEFAULT_STATE_PATH}/identity/auth.key"
        assert value_of(argv, "--auth-supernode-private-key") == site["auth_key_path"] == auth_key
        assert "auth_key" not in site and "auth_pub" not in site
        assert site["keygen"] == ["genofed", "site", "keygen", "--name", name,
                                  "--state", DEFAULT_STATE_PATH]
        # flwr's own parser reads back exactly the node config client/app.py expects.
        node = parse_config_args([value_of(argv, "--node-config")])
        assert node == site["node_config"] == {
            "site-id": name, "data-path": DEFAULT_DATA_PATH, "state-path": DEFAULT_STATE_PATH}
        env_text = (cwd / "supernode.env").read_text()
        commented = [line[1:].strip() for line in env_text.splitlines()
                     if line.startswith("#   ")]
        assert read_command_file_from_lines(commented) == argv
        assert f"GENOFED_SITE_ID={name}" in env_text.splitlines()
        assert f"GENOFED_AUTH_KEY={auth_key}" in env_text.splitlines()
        assert f"genofed site keygen --name {name} --state {DEFAULT_STATE_PATH}" in env_text
        assert site["register"] == ["flwr", "supernode", "register",
                                    f"coordinator/sites/{name}/auth.pub", "genofed"]


def read_command_file_from_lines(lines: list[str]) -> list[str]:
    """The command that starts at `flower-supernode` and goes on while lines end in `\\`."""
    start = next(i for i, line in enumerate(lines) if line.startswith("flower-supernode"))
    end = start
    while lines[end].endswith("\\"):
        end += 1
    return shlex.split(" ".join(line.removesuffix("\\") for line in lines[start:end + 1]))


def test_site_toml_is_commented_defaults(deployment: tuple[Path, dict], tmp_path: Path) -> None:
    out, _ = deployment
    text = (out / "sites/hospital-a/site.toml").read_text()
    doc = tomllib.loads(text)
    assert doc == {"privacy": {}, "cohort": {}, "training": {}, "genotypes": {}, "ancestry": {}}
    data = tmp_path / "data"
    data.mkdir()
    (data / "site.toml").write_text(text)
    assert SiteSettings.load(data).privacy == SiteBudget()
    assert SiteSettings.load(data).cohort == CohortSpec()
    # Uncommenting every setting gives a file genofed accepts, with the same values.
    (data / "site.toml").write_text(re.sub(r"(?m)^# ([a-z-]+ = )", r"\1", text))
    assert SiteSettings.load(data) == SiteSettings()
    uncommented = tomllib.loads((data / "site.toml").read_text())
    assert set(uncommented["privacy"]) == {f.name.replace("_", "-")
                                           for f in dataclasses.fields(SiteBudget)}
    spec = SiteSettings.load(data).cohort
    assert spec.sample_col == "sample_id" and spec.test_fraction == 0.25
    # A site's own limit then wins over the defaults, node config over the file.
    (data / "site.toml").write_text(text.replace("# max-epsilon = 8.0", "max-epsilon = 2.0"))
    assert SiteSettings.load(data).privacy.max_epsilon == 2.0
    assert SiteSettings.load(data, {"max-epsilon": 1.0}).privacy.max_epsilon == 1.0


def test_flags_are_real_flower_flags(deployment: tuple[Path, dict],
                                     help_flags: dict[str, set[str]]) -> None:
    _, doc = deployment
    commands = [doc["superlink"]["argv"], doc["superlink"]["superexec_argv"]]
    commands += [site["argv"] for site in doc["sites"].values()]
    for argv in commands:
        unknown = set(flags_of(argv)) - help_flags[argv[0]]
        assert not unknown, f"{argv[0]} has no {sorted(unknown)}"
    # Removed with Flower's move to HTTP (hidden, and rejected if given): the SuperNode's
    # Runtime API is --host/--port now.
    assert "--clientappio-api-address" not in help_flags["flower-supernode"]
    assert {"--host", "--port"} <= help_flags["flower-supernode"] & help_flags["flower-superlink"]


def test_site_paths_per_site_and_port(tmp_path: Path) -> None:
    doc = init_deployment(tmp_path / "d", ["a", "b"], "10.0.0.9", port=443,
                          data_path="/data/{site}", state_path="/state/{site}")
    assert doc["superlink"]["address"] == "10.0.0.9:443"
    assert doc["sites"]["b"]["node_config"]["data-path"] == "/data/b"
    assert value_of(doc["sites"]["b"]["argv"], "--auth-supernode-private-key") == (
        "/state/b/identity/auth.key")
    assert doc["certificates"]["superlink"]["san_dns"] == ["localhost"]
    assert "10.0.0.9" in doc["certificates"]["superlink"]["san_ip"]
    v6 = init_deployment(tmp_path / "v6", ["a"], "fd00::1")
    assert v6["superlink"]["address"] == f"[fd00::1]:{DEFAULT_PORT}"


# --------------------------------------------------------------------------------------------
# Refusals
# --------------------------------------------------------------------------------------------


def test_refuses_to_overwrite_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "dep"
    init_deployment(out, SITES, HOST)
    before = tree(out)
    with pytest.raises(GenofedError, match="refusing to overwrite"):
        init_deployment(out, SITES, HOST)
    with pytest.raises(GenofedError, match="refusing to overwrite"):
        init_deployment(out, ["hospital-c"], HOST)  # the coordinator's files are there
    assert tree(out) == before


@pytest.mark.parametrize("rel", ["certs/ca.key", "coordinator/ledger.key", REGISTRY])
def test_one_existing_key_blocks_everything(tmp_path: Path, rel: str) -> None:
    out = tmp_path / "dep"
    (out / rel).parent.mkdir(parents=True)
    (out / rel).write_text("a key someone made by hand\n")
    before = tree(out)
    with pytest.raises(GenofedError, match=Path(rel).name):
        init_deployment(out, SITES, HOST)
    assert tree(out) == before  # nothing half-written


def test_force_replaces_everything(tmp_path: Path) -> None:
    out = tmp_path / "dep"
    first = init_deployment(out, SITES, HOST)
    second = init_deployment(out, SITES, HOST, force=True)
    assert (first["certificates"]["ca"]["sha256_fingerprint"]
            != second["certificates"]["ca"]["sha256_fingerprint"])
    assert first["coordinator"]["ledger_key_id"] != second["coordinator"]["ledger_key_id"]
    for f in second["files"]:
        path = out / f["path"]
        assert f"{path.stat().st_mode & 0o777:04o}" == f["mode"]
        if not f["secret"]:
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f["sha256"]
    assert not list(out.glob(".genofed-init-*"))


def test_force_keeps_registered_site_keys(tmp_path: Path) -> None:
    """A new CA changes nothing about a site's own keys: a registered site stays registered."""
    out = tmp_path / "dep"
    init_deployment(out, SITES, HOST)
    folder = register_site(out, "hospital-a", tmp_path / "state")
    first = json.loads((out / "deployment.json").read_text())
    second = init_deployment(out, SITES, HOST, force=True)
    assert second["sites"]["hospital-a"]["keys"] == first["sites"]["hospital-a"]["keys"]
    assert second["sites"]["hospital-b"]["keys"] is None
    registry = SiteRegistry.load(out / REGISTRY)
    assert list(registry.keys) == ["hospital-a"]
    assert (out / "coordinator/sites/hospital-a/receipt.pub").read_bytes() == (
        folder / "receipt.pub").read_bytes()
    for f in second["files"]:
        if not f["secret"]:
            assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    # A copy that no longer matches what was registered is not carried over.
    (out / "coordinator/sites/hospital-a/auth.pub").write_text(
        (tmp_path / "state/hospital-a/identity/auth.pub").read_text().replace("genofed-", "x-"))
    third = init_deployment(out, SITES, HOST, force=True)
    assert third["sites"]["hospital-a"]["keys"] is None
    assert SiteRegistry.load(out / REGISTRY).keys == {}


def test_umask_000_leaves_nothing_writable_by_others(tmp_path: Path) -> None:
    state = tmp_path / "state"
    folder = state / "hospital-a" / "identity"
    keygen(folder, "hospital-a")  # at the site, under its own umask
    out = tmp_path / "new" / "deeper" / "dep"  # init makes the parents too
    old = os.umask(0)
    try:
        init_deployment(out, SITES, HOST)
        add_site_keys(out, "hospital-a", folder / "auth.pub", folder / "receipt.pub")
        init_deployment(out, SITES, HOST, force=True)
    finally:
        os.umask(old)
    made = [tmp_path / "new", tmp_path / "new/deeper", out, *out.rglob("*")]
    for path in made:
        mode = path.lstat().st_mode & 0o777
        assert not mode & 0o022, f"{path}: {mode:04o}"
        if path.name.endswith((".key", ".secret")):
            assert mode == 0o600, f"{path}: {mode:04o}"
    assert {(out / d).stat().st_mode & 0o777 for d in ("coordinator", "sites/hospital-a")} == {
        0o700}


# --------------------------------------------------------------------------------------------
# add_site_keys
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fresh(tmp_path: Path) -> tuple[Path, dict[str, Path]]:
    """A new deployment (no site registered) and both sites' own key folders."""
    out = tmp_path / "dep"
    init_deployment(out, SITES, HOST)
    folders = {name: tmp_path / "state" / name / "identity" for name in SITES}
    for name, folder in folders.items():
        keygen(folder, name)
    return out, folders


def one_line_error(excinfo: pytest.ExceptionInfo[GenofedError]) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_add_site_refuses_private_keys(fresh: tuple[Path, dict[str, Path]]) -> None:
    out, folders = fresh
    a = folders["hospital-a"]
    before = tree(out)
    with pytest.raises(GenofedError, match="PRIVATE key") as err:
        add_site_keys(out, "hospital-a", a / "auth.key", a / "receipt.pub")
    assert one_line_error(err).startswith(str(a / "auth.key"))
    with pytest.raises(GenofedError, match="PRIVATE key") as err:
        add_site_keys(out, "hospital-a", a / "auth.pub", a / "receipt.key")
    assert one_line_error(err).startswith(str(a / "receipt.key"))
    assert tree(out) == before


def test_add_site_refuses_wrong_key_types(fresh: tuple[Path, dict[str, Path]],
                                          tmp_path: Path) -> None:
    out, folders = fresh
    a = folders["hospital-a"]
    ssh = serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    pem = serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    wrong = {
        "ed25519.pub": ed25519.Ed25519PrivateKey.generate().public_key().public_bytes(*ssh),
        "p256.pub": ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(*ssh),
        "rsa.pem": rsa.generate_private_key(65537, 2048).public_key().public_bytes(*pem),
        "two.pub": (a / "auth.pub").read_bytes() * 2,
        "junk.pub": b"ecdsa-sha2-nistp384 bm90IGEga2V5\n",
        "empty.pub": b"",
    }
    for leaf, data in wrong.items():
        (tmp_path / leaf).write_bytes(data)
    before = tree(out)
    for leaf, match in [("ed25519.pub", "ssh-ed25519"), ("p256.pub", "ecdsa-sha2-nistp256"),
                        ("rsa.pem", "PEM key"), ("two.pub", "one OpenSSH public key line"),
                        ("junk.pub", "not a valid"), ("empty.pub", "not 0")]:
        with pytest.raises(GenofedError, match=match) as err:
            add_site_keys(out, "hospital-a", tmp_path / leaf, a / "receipt.pub")
        assert one_line_error(err).startswith(str(tmp_path / leaf))
    for leaf, match in [("rsa.pem", "RSA"), ("p256.pub", "OpenSSH key line")]:
        with pytest.raises(GenofedError, match=match) as err:
            add_site_keys(out, "hospital-a", a / "auth.pub", tmp_path / leaf)
        assert one_line_error(err).startswith(str(tmp_path / leaf))
    with pytest.raises(GenofedError, match="swapped"):  # receipt.pub where auth.pub goes
        add_site_keys(out, "hospital-a", a / "receipt.pub", a / "auth.pub")
    with pytest.raises(GenofedError, match="no such file"):
        add_site_keys(out, "hospital-a", tmp_path / "missing.pub", a / "receipt.pub")
    assert tree(out) == before


def test_add_site_refuses_unknown_sites_and_replacing_keys(
    fresh: tuple[Path, dict[str, Path]], tmp_path: Path
) -> None:
    out, folders = fresh
    a, b = folders["hospital-a"], folders["hospital-b"]
    with pytest.raises(GenofedError, match="no site 'hospital-c'") as err:
        add_site_keys(out, "hospital-c", a / "auth.pub", a / "receipt.pub")
    one_line_error(err)
    add_site_keys(out, "hospital-a", a / "auth.pub", a / "receipt.pub")
    registered = tree(out)
    add_site_keys(out, "hospital-a", a / "auth.pub", a / "receipt.pub")  # the same: no change
    assert tree(out) == registered
    # Another site's keys, under this site's name: refused, also with force for the other's.
    with pytest.raises(GenofedError, match="already has registered keys") as err:
        add_site_keys(out, "hospital-a", b / "auth.pub", b / "receipt.pub")
    one_line_error(err)
    with pytest.raises(GenofedError, match="receipt key of site 'hospital-a'"):
        add_site_keys(out, "hospital-b", b / "auth.pub", a / "receipt.pub")
    with pytest.raises(GenofedError, match="SuperNode key of site 'hospital-a'"):
        add_site_keys(out, "hospital-b", a / "auth.pub", b / "receipt.pub")
    assert tree(out) == registered
    # A lost key: the site makes new ones, the coordinator replaces them deliberately.
    new = tmp_path / "new-identity"
    keygen(new, "hospital-a")
    with pytest.raises(GenofedError, match="--force"):
        add_site_keys(out, "hospital-a", new / "auth.pub", new / "receipt.pub")
    assert tree(out) == registered
    add_site_keys(out, "hospital-a", new / "auth.pub", new / "receipt.pub", force=True)
    registry = SiteRegistry.load(out / REGISTRY)
    assert key_id(registry.keys["hospital-a"]) == key_id(load_public_key(new / "receipt.pub"))
    doc = json.loads((out / "deployment.json").read_text())
    assert doc["sites"]["hospital-b"]["keys"] is None
    for f in doc["files"]:
        if not f["secret"]:
            assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
            assert (out / f["path"]).stat().st_mode & 0o777 == 0o644, f["path"]


@pytest.mark.parametrize("names", [
    [], [""], ["../x"], ["a b"], ["-x"], ["a/b"], ["hôpital"], ["x" * 64], ["a.b"],
    ["a", "a"], ["Hospital-A", "hospital-a"],
])
def test_bad_site_names(tmp_path: Path, names: list[str]) -> None:
    with pytest.raises(GenofedError):
        init_deployment(tmp_path / "dep", names, HOST)
    assert not (tmp_path / "dep").exists()


@pytest.mark.parametrize("kwargs", [
    {"host": "bad host"}, {"host": "-x.org"}, {"ips": ["10.0.0.300"]}, {"port": 0},
    {"data_path": "relative/data"}, {"state_path": '/x"y'}, {"days": 0},
])
def test_bad_settings(tmp_path: Path, kwargs: dict) -> None:
    args = {"host": HOST, **kwargs}
    with pytest.raises(GenofedError):
        init_deployment(tmp_path / "dep", ["a"], **args)
    assert not (tmp_path / "dep").exists()


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dep"
    argv = ["deploy", "init", "--out", str(out), "--sites", "hospital-a,hospital-b",
            "--host", HOST, "--ip", "10.0.0.5"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "flwr supernode register" in printed
    doc = json.loads((out / "deployment.json").read_text())
    assert list(doc["sites"]) == SITES and "10.0.0.5" in doc["superlink"]["ips"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genofed: error:") and "--force" in err and len(err.splitlines()) == 1
    assert main([*argv, "--force"]) == 0
    capsys.readouterr()
    assert main(["deploy", "init", "--out", str(tmp_path / "x"), "--sites", "a", "a b",
                 "--host", HOST]) == 2
    assert "site name" in capsys.readouterr().err
    assert main(["deploy", "init", "--out", str(tmp_path / "y"), "--sites", "a", "b",
                 "--host", HOST, "--port", "8443"]) == 0
    assert json.loads((tmp_path / "y/deployment.json").read_text())["sites"].keys() == {"a", "b"}


def test_cli_add_site(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dep"
    assert main(["deploy", "init", "--out", str(out), "--sites", "hospital-a",
                 "--host", HOST]) == 0
    printed = capsys.readouterr().out
    assert "genofed site keygen --name hospital-a --state /srv/genofed/state" in printed
    assert "genofed deploy add-site" in printed
    state = tmp_path / "state"
    assert main(["site", "keygen", "--name", "hospital-a", "--state", str(state)]) == 0
    capsys.readouterr()
    identity = state / "identity"
    argv = ["deploy", "add-site", "--out", str(out), "--site", "hospital-a",
            "--auth-pub", str(identity / "auth.pub"), "--receipt-pub"]
    assert main([*argv, str(identity / "receipt.key")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("genofed: error:") and "PRIVATE key" in err
    assert len(err.splitlines()) == 1
    assert main([*argv, str(identity / "receipt.pub")]) == 0
    printed = capsys.readouterr().out
    pub = out.resolve() / "coordinator/sites/hospital-a/auth.pub"
    assert f"flwr supernode register {pub} genofed" in printed
    doc = json.loads((out / "deployment.json").read_text())
    assert doc["sites"]["hospital-a"]["keys"]["receipt_key_id"] in printed
    other = tmp_path / "other"
    keygen(other, "hospital-a")
    argv = ["deploy", "add-site", "--out", str(out), "--site", "hospital-a",
            "--auth-pub", str(other / "auth.pub"), "--receipt-pub", str(other / "receipt.pub")]
    assert main(argv) == 2
    assert "--force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0
    assert "unregister" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# deploy/compose.yaml
# --------------------------------------------------------------------------------------------

_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}")


def interpolate(value: object, env: dict[str, str]) -> object:
    """Compose's `${VAR}`, `${VAR:-default}` and `${VAR:?error}` (enough for our file)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if env.get(name):
            return env[name]
        if op == ":-":
            return arg
        raise KeyError(f"compose needs {name}: {arg or 'unset'}")

    return _VAR.sub(sub, value)


@pytest.fixture(scope="module")
def compose(deployment: tuple[Path, dict]) -> dict:
    out, _ = deployment
    raw = yaml.safe_load(COMPOSE.read_text())
    with pytest.raises(KeyError, match="GENOFED_DEPLOY"):
        interpolate(raw, {"GENOFED_SUPERLINK_HOST": HOST})
    return interpolate(raw, {"GENOFED_DEPLOY": str(out), "GENOFED_SUPERLINK_HOST": HOST})


def mounts(service: dict) -> dict[str, dict]:
    """Mount target -> long-syntax volume: bind mounts, and the signer's socket volume."""
    result = {}
    for vol in service.get("volumes", []):
        assert isinstance(vol, dict), vol
        assert vol["type"] == "bind" or vol == {"type": "volume", "source": "signer",
                                                "target": "/app/signer"}, vol
        result[vol["target"]] = vol
    return result


def test_compose_images_ports_and_networks(compose: dict) -> None:
    services = compose["services"]
    assert services["superlink"]["image"] == "flwr/superlink:1.42.0"
    sites = sorted(n.removeprefix("supernode-") for n in services if n.startswith("supernode-"))
    assert sites == SITES
    for name in sites:
        assert services[f"supernode-{name}"]["image"] == "flwr/supernode:1.42.0"
        app = services[f"clientapp-{name}"]
        assert "FROM flwr/superexec:1.42.0" in app["build"]["dockerfile_inline"]
        # The process that reads genotypes sits on its site's internal network only.
        assert app["networks"] == [name]
        # ... and runs only approved code: its `flwr-clientapp` is genofed's launcher, reading
        # the approvals in the site's state folder (mounted read-write for the site's tools).
        assert ('exec python -m client.launcher "$@"' in app["build"]["dockerfile_inline"]
                and '> "$(command -v flwr-clientapp)"' in app["build"]["dockerfile_inline"])
        approvals = app["environment"]["GENOFED_APPROVALS"]
        state = next(v["target"] for v in app["volumes"] if v["target"].endswith("/state"))
        assert approvals == f"{state}/approved-code.json"
        assert app["environment"]["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] == "1"
        assert compose["networks"][name] == {"internal": True}
    assert "FROM flwr/superexec:1.42.0" in services["serverapp"]["build"]["dockerfile_inline"]
    published = {n: s["ports"] for n, s in services.items() if "ports" in s}
    assert sorted(published) == ["proxy", "superlink"]
    # The sites' port is nginx's (the Fleet API only); the SuperLink's own port, with the
    # Control API, is published on the host's loopback only.
    (port,) = published["proxy"]
    bind, host_port, container_port = port.split(":")
    assert bind == "127.0.0.1" and host_port == container_port == str(DEFAULT_PORT)
    (inner,) = published["superlink"]
    assert inner == f"127.0.0.1:{DEFAULT_PORT + 1}:{DEFAULT_PORT + 1}"
    assert value_of(services["superlink"]["command"], "--port") == str(DEFAULT_PORT + 1)
    assert services["superlink"]["networks"] == ["coordinator"]
    assert services["proxy"]["networks"]["consortium"]["aliases"] == [HOST]
    assert services["proxy"]["image"] == "nginx:1.27-alpine"
    assert services["signer"]["network_mode"] == "none"
    for service in services.values():
        assert "FLWR_TELEMETRY_ENABLED" in service["environment"]


def test_compose_flags_are_real_and_match_init(
    compose: dict, deployment: tuple[Path, dict], help_flags: dict[str, set[str]],
) -> None:
    _, doc = deployment
    services = compose["services"]
    for name, service in services.items():
        (prog,) = service["entrypoint"]
        if prog not in help_flags:  # nginx and genofed's signer: checked below
            continue
        argv = [prog, *service["command"]]
        unknown = set(flags_of(argv)) - help_flags[prog]
        assert not unknown, f"{name}: {prog} has no {sorted(unknown)}"
        assert "--insecure" not in argv or name.startswith("clientapp-"), name

    superlink = services["superlink"]["command"]
    for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile",
                 "--enable-supernode-auth", "--disable-runtime-dependency-installation",
                 "--superexec-auth-secret-file"):
        assert flag in superlink
    assert value_of(superlink, "--isolation") == "process"
    # The same flags as the bare-metal command init writes (paths differ: container paths).
    assert set(flags_of(["x", *superlink])) == set(flags_of(doc["superlink"]["argv"]))
    serverapp = ["flower-superexec", *services["serverapp"]["command"]]
    assert set(flags_of(serverapp)) == set(flags_of(doc["superlink"]["superexec_argv"]))
    assert value_of(serverapp, "--runtime-api-address") == f"superlink:{DEFAULT_PORT + 1}"
    signer = ["genofed", *services["signer"]["command"]]
    assert set(flags_of(signer)) == set(flags_of(doc["coordinator"]["signer_argv"]))
    assert services["proxy"]["command"] == ["-c", "/etc/nginx/nginx.conf", "-g", "daemon off;"]

    for name in SITES:
        node = services[f"supernode-{name}"]["command"]
        site = doc["sites"][name]
        assert value_of(node, "--superlink") == doc["superlink"]["address"]
        assert parse_config_args([value_of(node, "--node-config")]) == site["node_config"]
        assert value_of(node, "--isolation") == "process"
        app = services[f"clientapp-{name}"]["command"]
        assert value_of(app, "--runtime-api-address") == (
            f"supernode-{name}:{value_of(node, '--port')}")


def test_compose_mounts(compose: dict, deployment: tuple[Path, dict]) -> None:
    out, doc = deployment
    roles = {str(out / f["path"]): f for f in doc["files"]}
    services = compose["services"]
    for name, service in services.items():
        argv = service["command"]
        mounted = mounts(service)
        for target, vol in mounted.items():
            source = vol["source"]
            if source.startswith(str(out)):
                assert Path(source).exists(), f"{name}: {source} is not written by init"
            role = roles.get(source, {}).get("role", "")
            assert role != "ca-private-key", f"{name} mounts the CA's private key"
            if role or target.startswith("/srv/genofed/data") or target.startswith(
                    "/srv/genofed/coordinator"):
                # keys, certificates, secrets and data: read-only
                assert vol.get("read_only") is True, f"{name}: {target} must be read-only"
        # Every path a flag names inside the container is mounted there.
        for flag in ("--ssl-ca-certfile", "--ssl-certfile", "--ssl-keyfile",
                     "--root-certificates", "--auth-supernode-private-key",
                     "--superexec-auth-secret-file"):
            if flag in argv:
                assert value_of(argv, flag) in mounted, f"{name}: {flag} not mounted"
    sl = mounts(services["superlink"])
    assert sl["/app/certs/superlink.key"]["source"] == str(out / "certs/superlink.key")
    assert sl["/app/certs/ca.crt"]["source"] == str(out / "certs/ca.crt")
    assert "read_only" not in sl["/app/state"]
    assert value_of(services["superlink"]["command"], "--database").startswith("/app/state/")
    server = mounts(services["serverapp"])
    # The ServerApp runs submitted code: the ledger key is the signer's alone.
    assert "/app/keys/ledger.key" not in server
    signer = mounts(services["signer"])
    assert signer["/app/keys/ledger.key"]["source"] == str(out / "coordinator/ledger.key")
    assert server["/app/signer"] == signer["/app/signer"]
    assert server["/app/keys/ledger.pub"]["source"] == str(out / "coordinator/ledger.pub")
    proxy = mounts(services["proxy"])
    conf = (out / "coordinator/nginx.compose.conf").read_text()
    assert proxy["/etc/nginx/nginx.conf"]["source"] == str(out / "coordinator/nginx.compose.conf")
    for target in ("/etc/genofed/ca.crt", "/etc/genofed/superlink.crt",
                   "/etc/genofed/superlink.key"):
        assert target in conf and proxy[target]["read_only"] is True
    assert f"proxy_pass https://superlink:{DEFAULT_PORT + 1};" in conf
    # The ServerApp checks every receipt against the site registry: public keys, read-only.
    assert server["/app/keys/site-registry.json"]["source"] == str(out / REGISTRY)
    assert server["/app/keys/site-registry.json"]["read_only"] is True
    assert "read_only" not in server["/app/results"]

    for name in SITES:
        site = doc["sites"][name]
        node = mounts(services[f"supernode-{name}"])
        app = mounts(services[f"clientapp-{name}"])
        data, state = site["node_config"]["data-path"], site["node_config"]["state-path"]
        # The site's own key comes from its state volume (where genofed site keygen wrote it,
        # the path init's command line names), never from the bundle the coordinator made.
        auth = node["/app/keys/auth.key"]
        assert auth["source"] == app[state]["source"] + "/identity/auth.key"
        assert auth["source"].endswith(site["auth_key_path"].removeprefix(state))
        assert not auth["source"].startswith(str(out)) and auth["read_only"] is True
        assert node["/app/certs/ca.crt"]["source"] == str(out / site["ca_crt"])
        # The SuperNode (network-facing) never sees the data; the ClientApp does, read-only.
        assert not any(t.startswith("/srv/") for t in node)
        assert app[data]["read_only"] is True
        assert "read_only" not in app[state]
        # The ClientApp shares the state folder, but finds nothing in the auth key's place.
        assert app[site["auth_key_path"]] == {"type": "bind", "source": "/dev/null",
                                              "target": site["auth_key_path"],
                                              "read_only": True}
        assert app["/app/secrets/superexec.secret"]["source"] == str(
            out / site["superexec_secret"])
        assert not any(t.startswith("/app/keys") for t in app)  # no auth key beside the data


# --------------------------------------------------------------------------------------------
# deploy/local.py: the loopback federation plays each site, then the coordinator
# --------------------------------------------------------------------------------------------


def test_local_federation_sites_make_their_own_keys(tmp_path: Path) -> None:
    """What `start_local` does before starting anything: no process is started here."""
    from deploy.local import LocalFederation

    doc = init_deployment(tmp_path / "dep", SITES, "localhost", force=True,
                          state_path=f"{tmp_path / 'site-state'}/{{site}}")
    fed = LocalFederation(doc, Path(doc["root"]), {}, None)  # type: ignore[arg-type]
    for name in SITES:
        fed.enroll(name)
        identity = tmp_path / "site-state" / name / "identity"
        assert fed.identity_dir(name) == identity
        assert value_of(fed.doc["sites"][name]["argv"], "--auth-supernode-private-key") == str(
            identity / "auth.key")
        assert (fed.root / f"coordinator/sites/{name}/auth.pub").read_bytes() == (
            identity / "auth.pub").read_bytes()
    assert sorted(SiteRegistry.load(fed.doc["coordinator"]["run_config"]["site-registry"]).keys
                  ) == SITES
    assert {p.name for p in fed.root.rglob("*.key")} == {"ca.key", "superlink.key", "ledger.key"}
    before = json.loads((fed.root / "deployment.json").read_text())["sites"]
    fed.enroll("hospital-a")  # again (a rerun): the site keeps its keys, nothing changes
    assert json.loads((fed.root / "deployment.json").read_text())["sites"] == before
