"""`genofed deploy init`: certificates, keys, configs, refusal to overwrite, and compose.yaml.

Flags are checked against the real `--help` of Flower 1.42's programs, compose mounts against
the files `init_deployment` writes. The generated command lines run for real (TLS, SuperNode
authentication, process-isolated SuperLink) in tests/test_deploy_local.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import json
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
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from flwr.common.config import parse_config_args

from client.budget import SiteBudget
from client.data import cohort_spec
from deploy.federation import flower_env
from deploy.init import (
    DEFAULT_DATA_PATH,
    DEFAULT_PORT,
    DEFAULT_STATE_PATH,
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

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "deploy" / "compose.yaml"
BIN = Path(sys.executable).parent
HOST = "superlink.example.org"
SITES = ["hospital-a", "hospital-b"]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("deploy") / "dep"
    doc = init_deployment(out, SITES, [HOST, "fl.internal"], ips=["10.1.2.3", "fd00::5"])
    return out, doc


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
        for leaf in ("auth.key", "auth.pub", "ca.crt", "site.toml", "supernode.env"):
            assert f"sites/{name}/{leaf}" in rels
    for rel in ("certs/ca.crt", "certs/ca.key", "certs/superlink.crt", "certs/superlink.key",
                "coordinator/ledger.key", "coordinator/ledger.pub",
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


def test_auth_keys_are_openssh_p384(deployment: tuple[Path, dict]) -> None:
    from flwr.supercore.primitives.asymmetric import uses_nist_ec_curve

    out, doc = deployment
    seen = set()
    for name in SITES:
        raw = (out / f"sites/{name}/auth.key").read_bytes()
        assert raw.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
        # What flower-supernode --auth-supernode-private-key does with it:
        key = serialization.load_ssh_private_key(raw, None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        assert isinstance(key.curve, ec.SECP384R1)
        line = (out / f"sites/{name}/auth.pub").read_bytes()
        assert line.startswith(b"ecdsa-sha2-nistp384 ") and line.endswith(b"\n")
        assert len(line.splitlines()) == 1
        # What `flwr supernode register` does with it:
        pub = serialization.load_ssh_public_key(line.strip())
        assert isinstance(pub, ec.EllipticCurvePublicKey) and uses_nist_ec_curve(pub)
        assert pub.public_numbers() == key.public_key().public_numbers()
        assert doc["sites"][name]["auth_pub_sha256"] == hashlib.sha256(line).hexdigest()
        seen.add(line)
    assert len(seen) == len(SITES)  # one key pair per site


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
    assert doc["coordinator"]["run_config"]["ledger-key"] == str(key_path.resolve())


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
    assert value_of(sl["argv"], "--port") == str(DEFAULT_PORT)
    assert value_of(sl["superexec_argv"], "--runtime-api-address") == f"127.0.0.1:{DEFAULT_PORT}"
    assert (value_of(sl["argv"], "--superexec-auth-secret-file")
            == value_of(sl["superexec_argv"], "--superexec-auth-secret-file"))

    config = tomllib.loads((out / "coordinator/flwr-config.toml").read_text())
    conn = config["superlink"][config["superlink"]["default"]]
    assert config["superlink"]["default"] == doc["connection"] == "genofed"
    assert conn == {"address": sl["address"],
                    "root-certificates": str(out.resolve() / "certs/ca.crt")}

    for name in SITES:
        site = doc["sites"][name]
        cwd = out / site["cwd"]
        argv = site["argv"]
        assert value_of(argv, "--superlink") == sl["address"]
        assert (cwd / value_of(argv, "--root-certificates")).read_bytes() == (
            out / "certs/ca.crt").read_bytes()
        assert (cwd / value_of(argv, "--auth-supernode-private-key")) == out / site["auth_key"]
        # flwr's own parser reads back exactly the node config client/app.py expects.
        node = parse_config_args([value_of(argv, "--node-config")])
        assert node == site["node_config"] == {
            "site-id": name, "data-path": DEFAULT_DATA_PATH, "state-path": DEFAULT_STATE_PATH}
        env_text = (cwd / "supernode.env").read_text()
        commented = [line[1:].strip() for line in env_text.splitlines()
                     if line.startswith("#   ")]
        assert read_command_file_from_lines(commented) == argv
        assert f"GENOFED_SITE_ID={name}" in env_text.splitlines()
        assert site["register"] == ["flwr", "supernode", "register", site["auth_pub"], "genofed"]


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
    assert doc == {"privacy": {}, "cohort": {}}
    data = tmp_path / "data"
    data.mkdir()
    (data / "site.toml").write_text(text)
    assert SiteBudget.load(data) == SiteBudget()
    assert cohort_spec(data) == CohortSpec()
    # Uncommenting every setting gives a file genofed accepts, with the same values.
    (data / "site.toml").write_text(re.sub(r"(?m)^# ([a-z-]+ = )", r"\1", text))
    assert SiteBudget.load(data) == SiteBudget()
    uncommented = tomllib.loads((data / "site.toml").read_text())
    assert set(uncommented["privacy"]) == {f.name.replace("_", "-")
                                           for f in dataclasses.fields(SiteBudget)}
    spec = cohort_spec(data)
    assert spec.sample_col == "sample_id" and spec.test_fraction == 0.25
    # A site's own limit then wins over the defaults, node config over the file.
    (data / "site.toml").write_text(text.replace("# max-epsilon = 8.0", "max-epsilon = 2.0"))
    assert SiteBudget.load(data).max_epsilon == 2.0
    assert SiteBudget.load(data, {"max-epsilon": 1.0}).max_epsilon == 1.0


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


def test_one_existing_key_blocks_everything(tmp_path: Path) -> None:
    out = tmp_path / "dep"
    (out / "sites/hospital-b").mkdir(parents=True)
    (out / "sites/hospital-b/auth.key").write_text("a key someone made by hand\n")
    before = tree(out)
    with pytest.raises(GenofedError, match="auth.key"):
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
    """Mount target -> long-syntax volume (we use only bind mounts in long syntax)."""
    result = {}
    for vol in service.get("volumes", []):
        assert isinstance(vol, dict) and vol["type"] == "bind", vol
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
        assert compose["networks"][name] == {"internal": True}
    assert "FROM flwr/superexec:1.42.0" in services["serverapp"]["build"]["dockerfile_inline"]
    published = {n: s["ports"] for n, s in services.items() if "ports" in s}
    assert list(published) == ["superlink"]  # the only port that leaves the host
    (port,) = published["superlink"]
    bind, host_port, container_port = port.split(":")
    assert bind == "127.0.0.1" and host_port == container_port == str(DEFAULT_PORT)
    argv = services["superlink"]["command"]
    assert value_of(argv, "--port") == container_port
    for net in ("consortium", "coordinator"):
        assert services["superlink"]["networks"][net]["aliases"] == [HOST]
    for service in services.values():
        assert "FLWR_TELEMETRY_ENABLED" in service["environment"]


def test_compose_flags_are_real_and_match_init(
    compose: dict, deployment: tuple[Path, dict], help_flags: dict[str, set[str]],
) -> None:
    _, doc = deployment
    services = compose["services"]
    for name, service in services.items():
        (prog,) = service["entrypoint"]
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
    assert value_of(serverapp, "--runtime-api-address") == doc["superlink"]["address"]

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
    assert server["/app/keys/ledger.key"]["source"] == str(out / "coordinator/ledger.key")
    assert server["/app/keys/ledger.pub"]["source"] == str(out / "coordinator/ledger.pub")
    assert "read_only" not in server["/app/results"]

    for name in SITES:
        site = doc["sites"][name]
        node = mounts(services[f"supernode-{name}"])
        assert node["/app/keys/auth.key"]["source"] == str(out / site["auth_key"])
        assert node["/app/certs/ca.crt"]["source"] == str(out / site["ca_crt"])
        # The SuperNode (network-facing) never sees the data; the ClientApp does, read-only.
        assert not any(t.startswith("/srv/") for t in node)
        app = mounts(services[f"clientapp-{name}"])
        data, state = site["node_config"]["data-path"], site["node_config"]["state-path"]
        assert app[data]["read_only"] is True
        assert "read_only" not in app[state]
        assert app["/app/secrets/superexec.secret"]["source"] == str(
            out / site["superexec_secret"])
        assert not any(t.startswith("/app/keys") for t in app)  # no auth key beside the data
