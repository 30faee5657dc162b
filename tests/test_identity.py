"""Site identity end to end: an auditor re-checks every receipt a real strategy run embedded in
its ledger (`genofed audit verify --sites`), and catches a coordinator that rewrites what a
site signed, even when it re-signs its whole chain; a site's keys are private whatever the
umask; a site's ClientApp launcher installs and loads only the code the site approved."""

from __future__ import annotations

import hashlib
import os
import stat
import sys
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from client import launcher
from client.identity import AUTH_KEY, AUTH_PUB, CODE_ENV, RECEIPT_KEY, RECEIPT_PUB, keygen
from server.coordinator import open_ledger_records
from server.strategy import GenofedStrategy, failure_categories, initial_weights
from shared.cli import main
from shared.errors import GenofedError
from shared.ledger import (
    Ledger,
    ensure_signing_key,
    load_private_key,
    load_public_key,
    read_records,
    verify_with_records,
)
from shared.receipts import SiteRegistry, make_receipt
from shared.runconfig import RunSettings
from tests.strategy_kit import (
    CFG,
    KEYS,
    REGISTRY,
    RUN_ID,
    evaluation,
    flower_failure,
    result,
    shifted,
    site_scores,
)

# --- the auditor: receipts in the signed ledger -------------------------------------------------


def honest_run(tmp_path: Path, *, evaluated: bool = True) -> Path:
    """A coordinator's ledger as a real run of 2 rounds writes it: the genesis record with the
    sites' registry (server.coordinator), a run record, then the strategy's round records with
    s1's and s2's signed replies (`evaluate-rounds = all`: round 1's aggregate is scored on
    round 2's training message; round 2's in an evaluation message of its own, unless
    `evaluated` is False: the ledger then ends with round 1).

    Records: 0 genesis, 1 run, 2 round 1, 3 round 2."""
    key = tmp_path / "keys" / "ledger.key"
    ensure_signing_key(key, key.with_suffix(".pub"))
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, load_private_key(key))
    ledger_id = open_ledger_records(ledger, path, REGISTRY)
    settings = RunSettings(min_sites=1, num_server_rounds=2, evaluate_rounds="all",
                           suppression_k=2)
    strat = GenofedStrategy(settings, CFG, "p" * 64, tmp_path, ledger, initial_weights(CFG, 0),
                            registry=REGISTRY, run_id=RUN_ID, ledger_id=ledger_id)
    ledger.append({"kind": "run", "ledger_id": ledger_id, "run_id": RUN_ID,
                   "registry_sha256": REGISTRY.sha256(), "first_round": 1})
    g = strat.current
    strat.aggregate_fit(1, [result(strat, 1, "s1", shifted(g, 0.01), 10, epsilon=1.0),
                            result(strat, 1, "s2", shifted(g, 0.02), 20, epsilon=1.2)], [])
    g = strat.current
    strat.aggregate_fit(2, [
        result(strat, 2, "s1", shifted(g, 0.01), 10, epsilon=2.0, scores=site_scores(1)),
        result(strat, 2, "s2", shifted(g, 0.02), 20, epsilon=2.4, scores=site_scores(2)),
    ], [])
    if evaluated:
        strat.aggregate_evaluate(2, [evaluation(strat, 2, "s1", site_scores(3), epsilon=2.5),
                                     evaluation(strat, 2, "s2", site_scores(4), epsilon=2.9)],
                                 [])
    assert len(read_records(path)) == (4 if evaluated else 3)
    return path


def audit(tmp_path: Path, capsys: pytest.CaptureFixture, *sites: Path) -> tuple[int, str]:
    """`genofed audit verify LEDGER --key ledger.pub [--sites REGISTRY]`: exit code, output."""
    argv = ["audit", "verify", str(tmp_path / "ledger.jsonl"),
            "--key", str(tmp_path / "keys" / "ledger.pub")]
    for registry in sites:
        argv += ["--sites", str(registry)]
    capsys.readouterr()
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out + out.err


def sites_registry(tmp_path: Path) -> Path:
    """The auditor's own copy of the sites' public receipt keys, from the sites."""
    path = tmp_path / "auditor" / "site-registry.json"
    path.parent.mkdir()
    REGISTRY.save(path)
    return path


def rewrite_history(tmp_path: Path, bodies: list[dict]) -> None:
    """A coordinator rewriting its ledger consistently: every record re-signed with its own key
    and re-chained, so the chain itself verifies."""
    key = load_private_key(tmp_path / "keys" / "ledger.key")
    forged = tmp_path / "forged.jsonl"
    ledger = Ledger(forged, key)
    for body in bodies:
        ledger.append(body)
    forged.replace(tmp_path / "ledger.jsonl")
    check, _ = verify_with_records(tmp_path / "ledger.jsonl",
                                   load_public_key(tmp_path / "keys" / "ledger.pub"))
    assert check.ok and check.records == len(bodies)


def test_audit_passes_an_honest_run(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path)
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 0, out
    assert "OK: 4 records" in out and "verified against" in out
    code, out = audit(tmp_path, capsys)  # the keys in the genesis record
    assert code == 0, out
    assert "genesis record" in out


def test_audit_passes_an_honest_run_up_to_its_first_round(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path, evaluated=False)
    registry = sites_registry(tmp_path)
    code, out = audit(tmp_path, capsys, registry)
    assert code == 0, out
    assert "OK: 3 records" in out and f"site receipts: verified against {registry}" in out
    code, out = audit(tmp_path, capsys)
    assert code == 0, out
    assert "keys in the ledger's genesis record" in out


def test_audit_catches_a_rewritten_epsilon_even_when_re_signed(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The coordinator lowers s2's epsilon in round 1, in its report and in the receipt s2
    signed, and re-signs its whole chain: only s2's signature gives it away."""
    honest_run(tmp_path)
    bodies = read_records(tmp_path / "ledger.jsonl")
    assert bodies[2]["round"] == 1 and bodies[2]["receipts"]["s2"]["body"]["epsilon"] == 1.2
    bodies[2]["receipts"]["s2"]["body"]["epsilon"] = 0.5
    bodies[2]["privacy"]["s2"]["epsilon"] = 0.5
    rewrite_history(tmp_path, bodies)
    registry = sites_registry(tmp_path)
    for sites in ((registry,), ()):
        code, out = audit(tmp_path, capsys, *sites)
        assert code == 1, out
        assert out.startswith("FAILED: record 2 (line 3): site receipts: s2's fit receipt: "
                              "receipt signature does not verify"), out


def test_audit_catches_a_reported_epsilon_that_is_not_the_signed_one(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path)
    bodies = read_records(tmp_path / "ledger.jsonl")
    bodies[2]["privacy"]["s2"]["epsilon"] = 0.5
    rewrite_history(tmp_path, bodies)
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 1
    assert out.startswith("FAILED: record 2 (line 3): site receipts: s2: epsilon 0.5 is not "
                          "one it signed"), out


def test_audit_catches_a_receipt_signed_with_another_sites_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path)
    bodies = read_records(tmp_path / "ledger.jsonl")
    body = dict(bodies[2]["receipts"]["s2"]["body"])
    del body["format"]
    bodies[2]["receipts"]["s2"] = make_receipt(KEYS["s1"], **body)  # same words, s1's key
    rewrite_history(tmp_path, bodies)
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 1
    assert out.startswith("FAILED: record 2 (line 3): site receipts: s2's fit receipt: "
                          "receipt signature does not verify"), out


def test_audit_catches_a_site_counted_without_its_receipt(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path)
    bodies = read_records(tmp_path / "ledger.jsonl")
    assert bodies[2]["sites"] == ["s1", "s2"]
    del bodies[2]["receipts"]["s1"]
    rewrite_history(tmp_path, bodies)
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 1
    assert out.startswith("FAILED: record 2 (line 3): site receipts: s1: counted without a "
                          "receipt"), out


def test_only_the_sites_own_keys_catch_a_coordinator_that_swapped_a_key(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """The coordinator lowers s2's epsilon, forges all of s2's receipts with a key of its own
    and puts that key in its genesis record: checked against the genesis record the forgery
    passes (and the output says whose keys those were); against the sites' own keys (--sites)
    it fails."""
    honest_run(tmp_path, evaluated=False)
    bodies = read_records(tmp_path / "ledger.jsonl")
    fake = Ed25519PrivateKey.generate()
    for field in ("receipts", "evaluation_receipts"):
        body = dict(bodies[2][field]["s2"]["body"])
        del body["format"]
        if field == "receipts":
            body["epsilon"] = 0.5
        bodies[2][field]["s2"] = make_receipt(fake, **body)
    bodies[2]["privacy"]["s2"]["epsilon"] = 0.5
    swapped = SiteRegistry({**REGISTRY.keys, "s2": fake.public_key()})
    bodies[0]["sites"] = swapped.to_json()
    rewrite_history(tmp_path, bodies)
    code, out = audit(tmp_path, capsys)
    assert code == 0 and "as the coordinator recorded them" in out, out
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 1
    assert out.startswith("FAILED: record 2 (line 3): site receipts: s2's fit receipt: "
                          "receipt signature does not verify"), out


def test_audit_catches_a_site_that_scored_other_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    honest_run(tmp_path, evaluated=False)
    bodies = read_records(tmp_path / "ledger.jsonl")
    body = dict(bodies[2]["evaluation_receipts"]["s2"]["body"], weights_in="0" * 64)
    del body["format"]
    bodies[2]["evaluation_receipts"]["s2"] = make_receipt(KEYS["s2"], **body)  # s2's own word
    rewrite_history(tmp_path, bodies)
    code, out = audit(tmp_path, capsys, sites_registry(tmp_path))
    assert code == 1 and out.startswith("FAILED: record 2 (line 3)"), out


# --- a site's keys ------------------------------------------------------------------------


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_keygen_keeps_private_keys_private_whatever_the_umask(tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.mkdir(mode=0o777)
    old = os.umask(0)
    try:
        made = keygen(tmp_path / "state" / "identity", "site-1")
        keygen(existing, "site-2")
        assert mode(existing) == 0o700  # an existing folder is made private too
    finally:
        os.umask(old)
    folder = tmp_path / "state" / "identity"
    assert mode(folder) == 0o700
    assert set(made) == {AUTH_KEY, AUTH_PUB, RECEIPT_KEY, RECEIPT_PUB}
    assert {name: mode(path) for name, path in made.items()} == {
        AUTH_KEY: 0o600, RECEIPT_KEY: 0o600, AUTH_PUB: 0o644, RECEIPT_PUB: 0o644}
    assert all(made[name].parent == folder for name in made)
    # Real keys: the receipt pair matches, the SuperNode key is OpenSSH EC P-384.
    receipt = load_private_key(made[RECEIPT_KEY])
    public = load_public_key(made[RECEIPT_PUB])
    assert isinstance(public, Ed25519PublicKey)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    assert receipt.public_key().public_bytes(*raw) == public.public_bytes(*raw)
    auth = serialization.load_ssh_private_key(made[AUTH_KEY].read_bytes(), password=None)
    assert isinstance(auth, ec.EllipticCurvePrivateKey) and auth.curve.name == "secp384r1"
    line = made[AUTH_PUB].read_text()
    assert line.startswith("ecdsa-sha2-nistp384 ") and line.endswith(" genofed-site-1\n")
    assert serialization.load_ssh_public_key(line.rsplit(" ", 1)[0].encode()).public_numbers() \
        == auth.public_key().public_numbers()

    before = {name: path.read_bytes() for name, path in made.items()}
    with pytest.raises(GenofedError, match="already holds"):
        keygen(folder, "site-1")
    assert {name: path.read_bytes() for name, path in made.items()} == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(made)  # no strays left


# --- the site's ClientApp launcher ---------------------------------------------------------


@pytest.fixture
def code_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No GENOFED_RUNNING_CODE during the test, and whatever it had restored after it."""
    monkeypatch.setenv(CODE_ENV, "")  # records the original value for monkeypatch to restore
    monkeypatch.delenv(CODE_ENV)


@pytest.fixture
def genofed_modules():
    """The launcher drops genofed's modules after installing a bundle, so the bundle's own are
    imported: put this process's back afterwards."""
    saved = dict(sys.modules)
    yield
    for name in set(sys.modules) - set(saved):
        if name.split(".")[0] in ("client", "server", "shared", "deploy"):
            del sys.modules[name]
    sys.modules.update(saved)


def fake_runtime() -> tuple[types.SimpleNamespace, list]:
    """Flower's ClientApp runtime module, as far as the launcher touches it."""
    calls: list = []

    def install_from_fab(content, *args, **kwargs):
        calls.append(("install", content, args, kwargs))
        return "installed-at"

    def get_load_client_app_fn(*args, **kwargs):
        calls.append(("loader", args, kwargs))
        return lambda *a: ("bundle app", a)

    return types.SimpleNamespace(install_from_fab=install_from_fab,
                                 get_load_client_app_fn=get_load_client_app_fn), calls


def test_the_launcher_patches_what_flowers_clientapp_process_calls() -> None:
    """guard() replaces module globals: they must be the names run_clientapp looks up."""
    import flwr.supernode.runtime.run_clientapp as runtime

    names = runtime.run_clientapp.__code__.co_names
    assert {"install_from_fab", "get_load_client_app_fn"} <= set(names)
    assert callable(runtime.install_from_fab) and callable(runtime.get_load_client_app_fn)


def test_an_unapproved_bundle_is_refused_before_it_is_installed(code_env: None) -> None:
    runtime, calls = fake_runtime()
    launcher.guard(runtime, {"installed": False, "fabs": {"0" * 64: {}}})
    with pytest.raises(launcher.UnapprovedCode) as caught:
        runtime.install_from_fab(b"a bundle nobody approved", skip_prompt=True)
    assert str(caught.value) == "unapproved-code"
    assert calls == [] and CODE_ENV not in os.environ
    # What Flower makes of it on its way to the coordinator: counted as that category.
    assert failure_categories([flower_failure(caught.value)]) == {"unapproved-code": 1}


def test_an_approved_bundle_is_installed_and_named(code_env: None, genofed_modules: None) -> None:
    content = b"the reviewed bundle"
    digest = hashlib.sha256(content).hexdigest()
    runtime, calls = fake_runtime()
    launcher.guard(runtime, {"installed": False, "fabs": {digest: {"note": "reviewed"}}})
    assert runtime.install_from_fab(content, skip_prompt=True) == "installed-at"
    assert calls == [("install", content, (), {"skip_prompt": True})]
    assert os.environ[CODE_ENV] == f"fab:{digest}"
    assert "shared.protocol" not in sys.modules  # the bundle's own copy will be imported
    load = runtime.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    assert load("fab-id", "1.0", digest) == ("bundle app", ("fab-id", "1.0", digest))
    assert calls[1] == ("loader", (), {"default_app_ref": "", "app_path": None,
                                       "multi_app": True})


def test_installed_approval_never_installs_and_loads_the_sites_app(code_env: None) -> None:
    import client.app
    from client.identity import installed_code

    runtime, calls = fake_runtime()
    launcher.guard(runtime, {"installed": True, "fabs": {}})
    assert runtime.install_from_fab(b"whatever the coordinator sent", skip_prompt=True) is None
    assert os.environ[CODE_ENV] == installed_code()
    assert installed_code().startswith("installed:") and len(installed_code()) == 10 + 64
    load = runtime.get_load_client_app_fn(default_app_ref="", app_path=None, multi_app=True)
    assert load("fab-id", "1.0", "hash") is client.app.app
    assert calls == []  # neither Flower's installer nor its loader ran


def tiny_app(folder: Path) -> Path:
    """The smallest Flower app `flwr build` accepts."""
    (folder / "tinyapp").mkdir(parents=True)
    (folder / "pyproject.toml").write_text(
        '[project]\nname = "tinyapp"\nversion = "1.0.0"\n\n'
        '[tool.flwr.app]\npublisher = "test"\n\n'
        '[tool.flwr.app.components]\nserverapp = "tinyapp.server:app"\n'
        'clientapp = "tinyapp.client:app"\n')
    (folder / "tinyapp" / "client.py").write_text("app = None\n")
    (folder / "tinyapp" / "server.py").write_text("app = None\n")
    return folder


def test_approving_an_app_folder_approves_the_bundle_flwr_builds(
        tmp_path: Path, capsys: pytest.CaptureFixture, code_env: None,
        genofed_modules: None) -> None:
    from flwr.cli.build import build_fab_from_disk

    app = tiny_app(tmp_path / "tinyapp")
    state = tmp_path / "state"
    state.mkdir()
    bundle = build_fab_from_disk(app)
    digest = hashlib.sha256(bundle).hexdigest()
    assert launcher.approve(state, app=app, note="reviewed by A") == f"fab:{digest}"
    approvals = launcher.read_approvals(state / launcher.APPROVALS)
    assert approvals["installed"] is False and list(approvals["fabs"]) == [digest]
    assert approvals["fabs"][digest]["note"] == "reviewed by A"
    # The same through the CLI, for a bundle file.
    (tmp_path / "other.fab").write_bytes(b"another bundle")
    assert main(["site", "approve", "--state", str(state), "--fab",
                 str(tmp_path / "other.fab")]) == 0
    other = hashlib.sha256(b"another bundle").hexdigest()
    assert f"approved fab:{other}" in capsys.readouterr().out

    runtime, calls = fake_runtime()
    launcher.guard(runtime, launcher.read_approvals(state / launcher.APPROVALS))
    runtime.install_from_fab(bundle, skip_prompt=True)
    assert os.environ[CODE_ENV] == f"fab:{digest}" and len(calls) == 1
    # One changed line in the app is another bundle: refused.
    (app / "tinyapp" / "client.py").write_text("app = 'changed'\n")
    with pytest.raises(launcher.UnapprovedCode):
        runtime.install_from_fab(build_fab_from_disk(app), skip_prompt=True)
    assert len(calls) == 1
