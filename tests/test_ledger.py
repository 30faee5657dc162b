"""The signed round ledger must catch every kind of after-the-fact edit and name where it starts.

Real Ed25519 keys and real files: the point is that an auditor with only the public key can
trust `verify_ledger`, so nothing here is mocked.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import stat
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared import audit
from shared.errors import GenofedError, InputError
from shared.ledger import (
    GENESIS_HASH,
    Ledger,
    VerifyResult,
    canonical_json,
    ensure_signing_key,
    generate_signing_key,
    key_id,
    load_private_key,
    load_public_key,
    read_records,
    read_verified,
    verify_ledger,
)

N = 5


def _body(i: int) -> dict:
    return {
        "round": i + 1,
        "sites": ["site-a1b2", "site-c3d4"],
        "weights_sha256": f"{i:x}" * 64,
        "config_sha256": "ab" * 32,
        "privacy": {"site-a1b2": {"epsilon": 0.5 * (i + 1), "delta": 1e-5}},
        "metrics": {"auc": 0.61 + i / 100, "note": "Zürich ✓"},
        "time": f"2025-01-0{i + 1}T12:00:00Z",
    }


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def ledger_path(tmp_path: Path, key: Ed25519PrivateKey) -> Path:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, key)
    for i in range(N):
        ledger.append(_body(i))
    return path


def _lines(path: Path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _write_lines(path: Path, lines: list[bytes]) -> None:
    path.write_bytes(b"".join(line + b"\n" for line in lines))


def _edit_record(path: Path, index: int, edit) -> None:
    """Apply `edit` to the parsed record and write it back canonically, so only meaning changes."""
    lines = _lines(path)
    record = json.loads(lines[index])
    edit(record)
    lines[index] = canonical_json(record)
    _write_lines(path, lines)


def _assert_bad(path: Path, key: Ed25519PrivateKey, index: int, words: str) -> VerifyResult:
    result = verify_ledger(path, key.public_key())
    assert not result.ok
    assert result.first_bad == index, result
    assert result.records == index
    assert words in result.reason, result.reason
    return result


# -- a sound ledger ---------------------------------------------------------------------------


def test_five_records_verify(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    result = verify_ledger(ledger_path, key.public_key())
    assert result == VerifyResult(True, N, None, None, key_id(key.public_key()), result.last_hash)
    assert read_records(ledger_path) == [_body(i) for i in range(N)]
    assert read_verified(ledger_path, key.public_key()) == [_body(i) for i in range(N)]


def test_record_format(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    records = [json.loads(line) for line in lines]
    assert [r["seq"] for r in records] == list(range(N))
    assert records[0]["prev_hash"] == GENESIS_HASH
    for prev, rec in zip(lines, records[1:], strict=False):
        assert rec["prev_hash"] == hashlib.sha256(prev).hexdigest()
    for line, rec in zip(lines, records, strict=True):
        assert canonical_json(rec) == line
        assert set(rec) == {"seq", "prev_hash", "body", "key_id", "signature"}
        assert rec["key_id"] == key_id(key.public_key()) and len(rec["key_id"]) == 16
        payload = canonical_json({k: rec[k] for k in ("seq", "prev_hash", "body")})
        key.public_key().verify(base64.b64decode(rec["signature"]), payload)
    assert "Zürich ✓".encode() in lines[0]  # ensure_ascii=False


def test_empty_file_is_zero_records(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b"")
    assert verify_ledger(path, key.public_key()) == VerifyResult(
        True, 0, None, None, key_id(key.public_key()), GENESIS_HASH
    )


def test_missing_file_is_input_error(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    with pytest.raises(InputError, match=r"nope.jsonl: no such file \(expected a ledger file\)"):
        verify_ledger(tmp_path / "nope.jsonl", key.public_key())
    with pytest.raises(InputError, match="is a folder, expected a ledger file"):
        verify_ledger(tmp_path, key.public_key())


# -- tampering: each names the first bad record -----------------------------------------------


def test_flipped_byte_in_body(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    line = bytearray(lines[2])
    at = line.index(b'"weights_sha256":"') + len(b'"weights_sha256":"')
    line[at] = ord("f") if line[at] != ord("f") else ord("e")  # still valid hex, still canonical
    lines[2] = bytes(line)
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 2, "bad signature")


@pytest.mark.parametrize(
    "edit",
    [
        lambda r: r["body"].update(round=99),
        lambda r: r["body"]["privacy"]["site-a1b2"].update(epsilon=0.1),
        lambda r: r["body"]["metrics"].update(auc=0.99),
        lambda r: r["body"]["sites"].pop(),
    ],
    ids=["round", "epsilon", "metric", "site-removed"],
)
def test_edited_value(ledger_path: Path, key: Ed25519PrivateKey, edit) -> None:
    _edit_record(ledger_path, 3, edit)
    _assert_bad(ledger_path, key, 3, "bad signature")


def test_number_edited_in_place_keeps_length(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    assert b'"round":4,' in lines[3]
    lines[3] = lines[3].replace(b'"round":4,', b'"round":7,')
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 3, "bad signature")


def test_non_canonical_rewrite(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    # Same values, different bytes: the signature alone would not notice.
    lines = _lines(ledger_path)
    lines[4] = json.dumps(json.loads(lines[4]), sort_keys=True).encode()
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 4, "altered")


def test_changed_signature(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    def flip(r: dict) -> None:
        sig = bytearray(base64.b64decode(r["signature"]))
        sig[10] ^= 0x01
        r["signature"] = base64.b64encode(bytes(sig)).decode()

    _edit_record(ledger_path, 1, flip)
    _assert_bad(ledger_path, key, 1, "bad signature")


def test_signature_padding_bits_cannot_be_changed(
    ledger_path: Path, key: Ed25519PrivateKey
) -> None:
    # 64 bytes -> 88 base64 chars ending "=="; the last data char carries 4 unused bits that
    # b64decode ignores. Changing them must still be caught.
    lines = _lines(ledger_path)
    rec = json.loads(lines[1])
    sig = rec["signature"]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(sig[-3])
    rec["signature"] = sig[:-3] + alphabet[last ^ 0x1] + "=="
    assert base64.b64decode(rec["signature"]) == base64.b64decode(sig)
    lines[1] = canonical_json(rec)
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 1, "canonical base64")


def test_changed_seq(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    _edit_record(ledger_path, 2, lambda r: r.update(seq=7))
    _assert_bad(ledger_path, key, 2, "seq is 7, expected 2")


def test_changed_prev_hash(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    _edit_record(ledger_path, 3, lambda r: r.update(prev_hash="1" * 64))
    _assert_bad(ledger_path, key, 3, "chain broken")
    _edit_record(ledger_path, 0, lambda r: r.update(prev_hash="1" * 64))
    _assert_bad(ledger_path, key, 0, "64 zeros")


def test_removed_middle_record(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    del lines[2]
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 2, "seq is 3, expected 2")


def test_removed_first_record(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    _write_lines(ledger_path, _lines(ledger_path)[1:])
    _assert_bad(ledger_path, key, 0, "seq is 1, expected 0")


def test_removed_last_record_needs_an_anchor(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    # A chain cannot see its own end cut off; `records`/`last_hash` are what to compare.
    full = verify_ledger(ledger_path, key.public_key())
    _write_lines(ledger_path, _lines(ledger_path)[:-1])
    cut = verify_ledger(ledger_path, key.public_key())
    assert cut.ok and cut.records == N - 1 and cut.last_hash != full.last_hash


def test_inserted_copy(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    lines.insert(2, lines[1])
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 2, "seq is 1, expected 2")


def test_duplicated_last_record(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    _write_lines(ledger_path, [*lines, lines[-1]])
    _assert_bad(ledger_path, key, N, f"seq is {N - 1}, expected {N}")


def test_swapped_records(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    lines[1], lines[3] = lines[3], lines[1]
    _write_lines(ledger_path, lines)
    _assert_bad(ledger_path, key, 1, "seq is 3, expected 1")


def test_truncated_mid_line(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    data = ledger_path.read_bytes()
    ledger_path.write_bytes(data[: len(data) - 40])
    _assert_bad(ledger_path, key, N - 1, "truncated")


def test_truncated_inside_middle_record(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    lines = _lines(ledger_path)
    ledger_path.write_bytes(b"".join(line + b"\n" for line in lines[:2]) + lines[2][:50])
    _assert_bad(ledger_path, key, 2, "truncated")


def test_missing_final_newline_is_a_failure(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    # Decided: appends write line + newline in one write, so a missing newline is a torn write
    # and fails verification even though the record itself is intact.
    ledger_path.write_bytes(ledger_path.read_bytes()[:-1])
    _assert_bad(ledger_path, key, N - 1, "no newline")


@pytest.mark.parametrize(
    "garbage",
    [b"hello world\n", b"{}\n", b"\n", b"[1,2]\n", b"\xff\xfe\n", b'{"seq":', b"NaN\n"],
    ids=["text", "empty-object", "blank-line", "array", "not-utf8", "cut-json", "nan"],
)
def test_appended_garbage(ledger_path: Path, key: Ed25519PrivateKey, garbage: bytes) -> None:
    with open(ledger_path, "ab") as fh:
        fh.write(garbage)
    _assert_bad(ledger_path, key, N, "")


def test_garbage_file(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    path.write_bytes(b"\x00\x01binary\n")
    _assert_bad(path, key, 0, "")


def test_resigned_with_other_key(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    forged = ledger_path.with_name("forged.jsonl")
    other = Ed25519PrivateKey.generate()
    ledger = Ledger(forged, other)
    for body in read_records(ledger_path):
        ledger.append(body)
    result = _assert_bad(forged, key, 0, "signed by key")
    assert key_id(other.public_key()) in result.reason
    assert verify_ledger(forged, other.public_key()).ok


def test_one_record_resigned_with_forged_key_id(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    other = Ed25519PrivateKey.generate()

    def resign(r: dict) -> None:
        r["body"]["round"] = 42
        payload = canonical_json({k: r[k] for k in ("seq", "prev_hash", "body")})
        r["signature"] = base64.b64encode(other.sign(payload)).decode()

    _edit_record(ledger_path, 2, resign)
    _assert_bad(ledger_path, key, 2, "bad signature")


def test_extra_field(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    _edit_record(ledger_path, 1, lambda r: r.update(note="x"))
    _assert_bad(ledger_path, key, 1, "unexpected note")


# -- appending --------------------------------------------------------------------------------


def test_reopen_continues_chain(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    before = verify_ledger(ledger_path, key.public_key())
    ledger = Ledger(ledger_path, key)
    assert len(ledger) == N and ledger.last_hash == before.last_hash
    record = ledger.append(_body(N))
    assert record["seq"] == N and record["prev_hash"] == before.last_hash
    assert len(ledger) == N + 1
    after = verify_ledger(ledger_path, key.public_key())
    assert after.ok and after.records == N + 1 and after.last_hash == ledger.last_hash
    assert json.loads(_lines(ledger_path)[-1]) == record


def test_new_ledger_starts_at_genesis(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    ledger = Ledger(tmp_path / "sub" / "ledger.jsonl", key)
    assert len(ledger) == 0 and ledger.last_hash == GENESIS_HASH
    record = ledger.append({"round": 1})
    assert record["seq"] == 0 and record["prev_hash"] == GENESIS_HASH


@pytest.mark.parametrize(
    "tamper",
    [
        lambda p: _edit_record(p, 2, lambda r: r["body"].update(round=0)),
        lambda p: p.write_bytes(p.read_bytes()[:-1]),
        lambda p: p.write_bytes(p.read_bytes() + b"junk\n"),
    ],
    ids=["edited", "no-final-newline", "garbage"],
)
def test_refuses_to_append_to_tampered(ledger_path: Path, key: Ed25519PrivateKey, tamper) -> None:
    tamper(ledger_path)
    before = ledger_path.read_bytes()
    with pytest.raises(GenofedError, match="refusing to append.*record"):
        Ledger(ledger_path, key)
    assert ledger_path.read_bytes() == before


def test_refuses_ledger_of_other_key(ledger_path: Path) -> None:
    with pytest.raises(GenofedError, match="signed by key"):
        Ledger(ledger_path, Ed25519PrivateKey.generate())


def test_refuses_when_file_changed_since_open(ledger_path: Path, key: Ed25519PrivateKey) -> None:
    first, second = Ledger(ledger_path, key), Ledger(ledger_path, key)
    first.append(_body(N))
    with pytest.raises(GenofedError, match="changed since it was opened"):
        second.append(_body(N))
    assert verify_ledger(ledger_path, key.public_key()).records == N + 1


def test_append_rejects_unrepresentable_bodies(tmp_path: Path, key: Ed25519PrivateKey) -> None:
    path = tmp_path / "ledger.jsonl"
    ledger = Ledger(path, key)
    with pytest.raises(ValueError):
        ledger.append({"epsilon": math.inf})
    with pytest.raises(TypeError):
        ledger.append({"privacy": {1: 0.5}})
    with pytest.raises(TypeError):
        ledger.append(["not", "a", "dict"])  # type: ignore[arg-type]
    assert len(ledger) == 0 and not path.exists()


# -- canonical JSON ---------------------------------------------------------------------------


def test_canonical_json() -> None:
    assert canonical_json({"b": 1, "a": [1.5, None, True], "é": "✓"}) == (
        '{"a":[1.5,null,true],"b":1,"é":"✓"}'.encode()
    )
    for x in (0.1, 1e-5, 1 / 3, 1e300, -0.0, 5e-324, 2.0**60):
        assert json.loads(canonical_json([x]))[0] == x
        assert canonical_json(json.loads(canonical_json([x]))) == canonical_json([x])
    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(ValueError):
            canonical_json({"x": bad})
    with pytest.raises(TypeError):
        canonical_json({1: "int key"})
    with pytest.raises(TypeError):
        canonical_json({"x": {1, 2}})


# -- keys -------------------------------------------------------------------------------------


def test_generate_signing_key(tmp_path: Path) -> None:
    priv, pub = tmp_path / "k" / "ledger.key", tmp_path / "k" / "ledger.pub"
    generate_signing_key(priv, pub)
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in priv.read_bytes()
    assert b"BEGIN PUBLIC KEY" in pub.read_bytes()
    assert key_id(load_private_key(priv).public_key()) == key_id(load_public_key(pub))
    before = priv.read_bytes(), pub.read_bytes()
    with pytest.raises(GenofedError, match="refusing to overwrite"):
        generate_signing_key(priv, pub)
    with pytest.raises(GenofedError, match="refusing to overwrite"):
        generate_signing_key(tmp_path / "other.key", pub)
    assert not (tmp_path / "other.key").exists()
    assert (priv.read_bytes(), pub.read_bytes()) == before
    assert [p.name for p in priv.parent.iterdir() if p.name.startswith(".")] == []


def test_ensure_signing_key(tmp_path: Path) -> None:
    priv, pub = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    assert ensure_signing_key(priv, pub) is True
    assert ensure_signing_key(priv, pub) is False
    pub.unlink()
    with pytest.raises(GenofedError, match="missing"):
        ensure_signing_key(priv, pub)
    generate_signing_key(tmp_path / "b.key", pub)
    with pytest.raises(GenofedError, match="does not match"):
        ensure_signing_key(priv, pub)


def test_bad_key_files(tmp_path: Path) -> None:
    priv, pub = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    generate_signing_key(priv, pub)
    junk = tmp_path / "junk.pem"
    junk.write_text("not a key\n")
    for loader in (load_private_key, load_public_key):
        with pytest.raises(InputError, match="no such"):
            loader(tmp_path / "missing.pem")
        with pytest.raises(InputError, match="not a PEM"):
            loader(junk)
    with pytest.raises(InputError, match="is a private key"):
        load_public_key(priv)
    with pytest.raises(InputError, match="not a PEM private key"):
        load_private_key(pub)
    for err_path in (tmp_path / "missing.pem", junk, priv):
        try:
            load_public_key(err_path)
        except InputError as err:
            assert "\n" not in str(err) and str(err_path) in str(err)


# -- CLI --------------------------------------------------------------------------------------


def _local_main(argv: list[str]) -> int:
    """What `shared.cli.main` does, with only the audit group: independent of other groups."""
    parser = argparse.ArgumentParser(prog="genofed")
    groups = parser.add_subparsers(dest="group", required=True)
    audit.register(groups)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except GenofedError as err:
        print(f"genofed: error: {err}", file=sys.stderr)
        return err.exit_code


def _real_main():
    """`shared.cli.main`, or skip while a group other engineers own does not import yet."""
    from shared import cli

    try:
        cli.build_parser()
    except ImportError as err:  # pragma: no cover - only while other groups are being written
        pytest.skip(f"shared.cli cannot build its parser yet: {err}")
    return cli.main


@pytest.fixture(params=["local", "shared.cli"])
def main(request):
    return _local_main if request.param == "local" else _real_main()


def test_cli_keygen_and_verify(tmp_path: Path, main, capsys) -> None:
    keys = tmp_path / "keys"
    assert main(["audit", "keygen", "--out", str(keys)]) == 0
    priv, pub = keys / "ledger.key", keys / "ledger.pub"
    assert stat.S_IMODE(priv.stat().st_mode) == 0o600
    kid = key_id(load_public_key(pub))
    assert kid in capsys.readouterr().out

    ledger = Ledger(tmp_path / "ledger.jsonl", load_private_key(priv))
    for i in range(N):
        ledger.append(_body(i))
    assert main(["audit", "verify", str(tmp_path / "ledger.jsonl"), "--key", str(pub)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == f"OK: {N} records, signed by key {kid}"

    _edit_record(tmp_path / "ledger.jsonl", 3, lambda r: r["body"].update(round=0))
    assert main(["audit", "verify", str(tmp_path / "ledger.jsonl"), "--key", str(pub)]) == 1
    out = capsys.readouterr().out
    assert out.startswith("FAILED: record 3 (line 4): bad signature")

    before = priv.read_bytes()
    assert main(["audit", "keygen", "--out", str(keys)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert priv.read_bytes() == before


def test_cli_bad_paths_exit_2(tmp_path: Path, main) -> None:
    priv, pub = tmp_path / "ledger.key", tmp_path / "ledger.pub"
    generate_signing_key(priv, pub)
    (tmp_path / "ledger.jsonl").write_bytes(b"")
    assert main(["audit", "verify", str(tmp_path / "nope.jsonl"), "--key", str(pub)]) == 2
    assert main(["audit", "verify", str(tmp_path / "ledger.jsonl"), "--key", str(priv)]) == 2
    assert main(["audit", "verify", str(tmp_path / "ledger.jsonl"), "--key", "/nope.pub"]) == 2
    assert main(["audit", "verify", str(tmp_path / "ledger.jsonl"), "--key", str(pub)]) == 0


def test_cli_verify_missing_key_is_usage_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        _local_main(["audit", "verify", str(tmp_path / "ledger.jsonl")])
    assert exc.value.code == 2
