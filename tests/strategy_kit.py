"""What the strategy and identity tests share: registered sites with their keys, and the
Flower results a site would send (signed receipts, scores), built through the real protocol."""


from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from flwr.app import Error
from flwr.common import (
    Code,
    EvaluateRes,
    FitRes,
    Status,
    ndarrays_to_parameters,
)
from flwr.common.constant import ErrorCode
from flwr.server.client_manager import SimpleClientManager
from flwr.server.client_proxy import ClientProxy

from server.outdir import RunFolder
from server.strategy import (
    GenofedStrategy,
    weights_sha256,
)
from shared.ledger import (
    Ledger,
    ensure_signing_key,
    load_private_key,
    load_public_key,
    verify_with_records,
)
from shared.metrics import GroupedScores
from shared.model import ModelConfig
from shared.receipts import SiteRegistry, make_receipt
from shared.runconfig import RunSettings

CFG = ModelConfig(n_variants=6, context_len=3, kmer_vocab=10, dim=8, layers=1, heads=2)

# --- the sites: their own receipt keys, the coordinator's registry of the public halves --------

RUN_ID = "run-42"
CODE = "fab:" + "c" * 64  # what the sites' launcher says they run
SITES = ("good-1", "good-2", "nan", "shape", "huge", "d", "a", "ok", "bad", "evil",
         *(f"h{i}" for i in range(4)), *(f"s{i}" for i in range(8)))
KEYS = {name: Ed25519PrivateKey.generate() for name in SITES}
OUTSIDER = Ed25519PrivateKey.generate()  # a key no registry holds
REGISTRY = SiteRegistry({name: key.public_key() for name, key in KEYS.items()})


class Proxy(ClientProxy):
    """Only the id (the Flower node) matters to the strategy; Flower never calls these in
    aggregation."""

    def get_properties(self, *a, **k): raise NotImplementedError
    def get_parameters(self, *a, **k): raise NotImplementedError
    def fit(self, *a, **k): raise NotImplementedError
    def evaluate(self, *a, **k): raise NotImplementedError
    def reconnect(self, *a, **k): raise NotImplementedError


def make_strategy(tmp_path: Path, **settings: object) -> GenofedStrategy:
    from server.strategy import initial_weights

    folder = RunFolder(tmp_path)
    ensure_signing_key(folder.ledger_key, folder.ledger_pub)
    ledger = Ledger(folder.ledger, load_private_key(folder.ledger_key))
    s = RunSettings(min_sites=1, **settings)  # type: ignore[arg-type]
    return GenofedStrategy(s, CFG, "p" * 64, tmp_path, ledger, initial_weights(CFG, 0),
                           registry=REGISTRY, run_id=RUN_ID)


def _number(value: object) -> float:
    """What a site's signer puts in its receipt for a reply value (0 where it is not a finite
    number: such a reply is refused by the protocol check anyway)."""
    ok = type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]
    return float(value) if ok else 0.0  # type: ignore[arg-type]


def sign(metrics: dict, *, kind: str, rnd: int, weights_in: str, weights_out: str,
         field: str = "receipt", key: Ed25519PrivateKey | None = None,
         tamper: dict | None = None) -> dict:
    """`metrics` with the code run and a signed receipt, as client.identity.sign_reply adds
    them: signed with the key of the name the reply gives (or `key`); `tamper` overrides
    fields of the signed body."""
    site = str(metrics["site"])
    code = metrics.get("code", CODE)
    body = {"run_id": RUN_ID, "round": rnd, "site": site, "kind": kind,
            "weights_in": weights_in, "weights_out": weights_out,
            "epsilon": _number(metrics.get("epsilon")), "delta": _number(metrics.get("delta")),
            "code": str(code), **(tamper or {})}
    return {**metrics, "code": code,
            field: make_receipt(key or KEYS.get(site, OUTSIDER), **body)}


def result(strat: GenofedStrategy, rnd: int, site: str, arrays: list[np.ndarray],
           n: int = 10, /, *, node: str | None = None, key: Ed25519PrivateKey | None = None,
           tamper: dict | None = None, eval_tamper: dict | None = None, **metrics: object):
    """A training reply to Flower's round `rnd` as a site sends it (protocol fields only,
    `shared.protocol`), signed as client/app.py signs it: a "fit" receipt over the hashes of
    the weights received (the strategy's current ones) and sent; scores riding along (the
    received weights evaluated) get an "evaluate" receipt for the previous round."""
    metrics = {"site": site, "version": "test", "declined": 0, "epsilon": 1.0, "delta": 1e-5,
               **metrics}
    received, server_round = weights_sha256(strat.current), rnd + strat.offset
    if "scores" in metrics:
        metrics = sign(metrics, kind="evaluate", rnd=server_round - 1, weights_in=received,
                       weights_out="", field="evaluation_receipt", key=key, tamper=eval_tamper)
    metrics = sign(metrics, kind="fit", rnd=server_round, weights_in=received,
                   weights_out=weights_sha256(arrays), key=key, tamper=tamper)
    res = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(arrays), n, metrics)
    return Proxy(node or site), res


def evaluation(strat: GenofedStrategy, rnd: int, site: str, scores: str, /, *,
               node: str | None = None, key: Ed25519PrivateKey | None = None,
               tamper: dict | None = None, **metrics: object):
    """An evaluation reply: the noisy score histograms plus the site's budget after them,
    with its "evaluate" receipt over the weights it scored (the strategy's current ones)."""
    metrics = {"site": site, "version": "test", "declined": 0, "epsilon": 2.0, "delta": 1e-5,
               "scores": scores, **metrics}
    metrics = sign(metrics, kind="evaluate", rnd=rnd + strat.offset,
                   weights_in=weights_sha256(strat.current), weights_out="", key=key,
                   tamper=tamper)
    return Proxy(node or site), EvaluateRes(Status(Code.OK, ""), 0.0, 0, metrics)


SIGMA = 0.5


def site_scores(seed: int, center: float = 0.0) -> str:
    """One site's DP release of 200 held-out people, 100 per group, as it would send it."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 200)
    exact = GroupedScores.from_predictions(rng.normal(y, 1.0) + center, y,
                                           np.array(["A", "B"] * 100), center=center)
    return exact.with_groups(["A", "B"]).with_noise(SIGMA, rng).to_json()


def ledger_bodies(tmp_path: Path) -> list[dict]:
    """The ledger's record bodies; every record must verify against the coordinator's key."""
    folder = RunFolder(tmp_path)
    if not folder.ledger.exists():
        return []
    check, bodies = verify_with_records(folder.ledger, load_public_key(folder.ledger_pub))
    assert check.ok and check.records == len(bodies)
    return bodies


def manager_with(*sites: str) -> SimpleClientManager:
    manager = SimpleClientManager()
    for site in sites:
        manager.register(Proxy(site))
    return manager


def shifted(base: list[np.ndarray], by: float) -> list[np.ndarray]:
    return [(a + by).astype(a.dtype) for a in base]


def flower_failure(ex: Exception) -> Exception:
    """A site's exception as Flower's legacy workflow hands it to the strategy: the ClientApp
    process reports `str(type(ex)) + ":<'" + str(ex) + "'>"` as an Error
    (flwr/supernode/runtime/run_clientapp.py), which default_workflows.py wraps as
    `Exception(msg.error)`."""
    reason = str(type(ex)) + ":<'" + str(ex) + "'>"
    return Exception(Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, reason))
