"""The ledger signer signs only what the sites' receipts back, through a real Unix socket."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from server.signer import RemoteLedger, SignerCore, serve
from shared.errors import GenofedError
from shared.ledger import (
    Ledger,
    generate_signing_key,
    load_private_key,
    load_public_key,
    verify_ledger,
)
from shared.protocol import weights_sha256
from shared.receipts import SiteRegistry, make_receipt

SITE_KEY = Ed25519PrivateKey.generate()
REGISTRY = SiteRegistry({"s1": SITE_KEY.public_key()})


def round_body(rnd: int, weights_in: str, weights_out: str, *, key=SITE_KEY,  # noqa: ANN001
               epsilon: float = 1.0) -> dict:
    receipt = make_receipt(key, run_id="run", round=rnd, site="s1", kind="fit",
                           weights_in=weights_in, weights_out="w", epsilon=epsilon, delta=1e-5,
                           code="installed:x")
    import json

    return {"kind": "round", "run_id": "run", "round": rnd, "sites": ["s1"],
            "receipts": {"s1": json.loads(receipt)}, "evaluation_receipts": {},
            "privacy": {"s1": {"epsilon": epsilon, "delta": 1e-5}},
            "weights_sha256": weights_out}


@pytest.fixture()
def signer(tmp_path: Path):  # type: ignore[no-untyped-def]
    generate_signing_key(tmp_path / "ledger.key", tmp_path / "ledger.pub")
    core = SignerCore(Ledger(tmp_path / "ledger.jsonl", load_private_key(tmp_path / "ledger.key")),
                      REGISTRY)
    server = serve(tmp_path / "signer.sock", core)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield RemoteLedger(tmp_path / "signer.sock", tmp_path / "ledger.jsonl")
    server.shutdown()
    server.server_close()


def test_signs_what_the_receipts_back_and_refuses_the_rest(signer: RemoteLedger,
                                                            tmp_path: Path) -> None:
    w0 = weights_sha256([np.zeros(3, dtype=np.float32)])
    assert len(signer) == 0
    with pytest.raises(GenofedError, match="needs a genesis"):
        signer.append({"kind": "run", "run_id": "run"})
    signer.append({"kind": "genesis", "ledger_id": "L", "sites": REGISTRY.to_json()})
    with pytest.raises(GenofedError, match="never announced"):
        signer.append(round_body(1, w0, "w1"))
    signer.append({"kind": "run", "run_id": "run"})
    signer.append(round_body(1, w0, "w1"))
    # A round the site did not sign: another key, or an epsilon the receipt does not say.
    with pytest.raises(GenofedError, match="signature"):
        signer.append(round_body(2, "w1", "w2", key=Ed25519PrivateKey.generate()))
    forged = round_body(2, "w1", "w2")
    forged["privacy"]["s1"]["epsilon"] = 0.5
    with pytest.raises(GenofedError, match="not one it signed"):
        signer.append(forged)
    with pytest.raises(GenofedError, match="does not follow"):
        signer.append(round_body(3, "w1", "w3"))
    with pytest.raises(GenofedError, match="previous round"):
        signer.append(round_body(2, "w-other", "w2"))
    signer.append(round_body(2, "w1", "w2"))
    assert len(signer) == 4
    check = verify_ledger(tmp_path / "ledger.jsonl", load_public_key(tmp_path / "ledger.pub"))
    assert check.ok and check.records == 4


def test_an_unreachable_signer_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(GenofedError, match="not reachable"):
        len(RemoteLedger(tmp_path / "nobody.sock", tmp_path / "ledger.jsonl"))
