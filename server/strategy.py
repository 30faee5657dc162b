"""The coordinator's aggregation strategy: FedAvg weighted by examples, plus what a consortium
needs around it: reply and update checks, declined rounds, a checkpoint per round, merged
per-ancestry evaluation and a signed ledger record per round.

Built on Flower's legacy `FedAvg` so Flower's SecAgg+ workflow can drive it unchanged. Every
evaluation is a DP release the sites pay for, so the run config's `evaluate-rounds` chooses
which global models are scored: `last` (the default) scores only the final one, in an
evaluation message after the last round; `all` scores each, at one round-trip per round: round
r's training message carries round r-1's aggregate, which the sites score before training on
it, so round r-1 is evaluated and signed when round r's updates arrive. A round that will not be
evaluated is signed as soon as it is aggregated.

Site replies are read only through `shared.protocol` (every field validated); a malformed reply
is rejected with its reason and the round goes on with the others.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from logging import INFO, WARNING
from pathlib import Path

import numpy as np
import torch
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitRes,
    Parameters,
    Scalar,
    log,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server.client_manager import ClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum

from server.outdir import RunFolder
from server.signer import RemoteLedger
from shared import protocol
from shared.calibration import Recalibration
from shared.checkpoint import Checkpoint, load_checkpoint
from shared.fsio import write_json
from shared.ledger import Ledger
from shared.metrics import GroupedScores, MetricFrame
from shared.model import ModelConfig, RiskTransformer, get_weights, set_weights
from shared.protocol import RoundRecord, weights_sha256
from shared.receipts import ReceiptError, SiteRegistry, verify_receipt
from shared.runconfig import RunSettings


def check_update(
    arrays: list[np.ndarray], reference: list[np.ndarray], max_norm: float = 0.0
) -> str | None:
    """Why an update must be rejected, or None: wrong count, shape, dtype, non-finite values, or
    (with `max_norm` > 0) an L2 distance from the reference weights beyond the bound."""
    if len(arrays) != len(reference):
        return f"{len(arrays)} arrays where the model has {len(reference)}"
    for i, (a, r) in enumerate(zip(arrays, reference, strict=True)):
        if a.shape != r.shape:
            return f"array {i} has shape {a.shape}, expected {r.shape}"
        if not np.issubdtype(a.dtype, np.floating):
            return f"array {i} has dtype {a.dtype}"
        if not np.isfinite(a).all():
            return f"array {i} has non-finite values"
    if max_norm > 0:
        norm = update_norm(arrays, reference)
        if norm > max_norm:
            return f"update norm {norm:.3g} exceeds the bound {max_norm:g}"
    return None


def update_norm(arrays: list[np.ndarray], reference: list[np.ndarray]) -> float:
    """L2 norm of the whole update, all arrays together."""
    sq = sum(float(np.sum((a.astype(np.float64) - r) ** 2))
             for a, r in zip(arrays, reference, strict=True))
    return float(np.sqrt(sq))


_Res = FitRes | EvaluateRes  # both carry the sites' metrics


def failure_categories(failures: list) -> dict[str, int]:
    """Flower's failures, counted by the refusal category a site's launcher raised (only the
    category ever leaves a site, see client.launcher), else "other"."""
    counts: dict[str, int] = {}
    for failure in failures:
        text = str(failure) if isinstance(failure, BaseException) else ""
        found = next((c for c in protocol.REFUSALS if f"<'{c}'>" in text), "other")
        counts[found] = counts.get(found, 0) + 1
    return counts


def make_aggregator(name: str) -> FedAvg:
    """Flower's own aggregation rule by name (all are FedAvg subclasses in the legacy API)."""
    rules = {
        "fedavg": FedAvg,
        "fedmedian": FedMedian,
        "fedtrimmedavg": lambda: FedTrimmedAvg(beta=0.2),
        "krum": lambda: Krum(num_malicious_clients=0, num_clients_to_keep=0),
    }
    return rules[name]()


class GenofedStrategy(FedAvg):
    def __init__(
        self,
        settings: RunSettings,
        model_cfg: ModelConfig,
        panel_sha256: str,
        out_dir: Path,
        ledger: Ledger | RemoteLedger,
        initial_weights: list[np.ndarray],
        registry: SiteRegistry,
        run_id: str,
        completed: list[RoundRecord] | None = None,
        ledger_id: str = "",
    ) -> None:
        """`completed` holds the rounds of an interrupted run being resumed: Flower then counts
        its rounds from 1 again, and we number them on from the last completed one.
        `registry` holds the sites' public receipt keys: a reply counts only if it carries a
        receipt its site signed for this run, this round and these weights."""
        self.registry = registry
        self.run_id = str(run_id)
        self.ledger_id = ledger_id
        self.nodes: dict[str, str] = {}  # site name -> the Flower node it first answered from
        self.settings = settings
        self.model_cfg = model_cfg
        self.panel_sha256 = panel_sha256
        self.out_dir = out_dir
        self.ledger = ledger
        self.current = initial_weights
        self.rounds: dict[int, RoundRecord] = {r.round: r for r in completed or []}
        self.offset = max(self.rounds, default=0)
        self.signed: set[int] = set(self.rounds)  # rounds already in the ledger
        self.aggregator = make_aggregator(settings.aggregation)
        round_config: Callable[[int], dict[str, Scalar]] = lambda rnd: {  # noqa: E731
            protocol.SERVER_ROUND: rnd + self.offset, protocol.PANEL_SHA256: panel_sha256,
            protocol.MIN_GROUP_SIZE: settings.suppression_k,
            protocol.SCORE_CENTER: settings.score_center,
        }

        def fit_config(rnd: int) -> dict[str, Scalar]:
            # With `evaluate-rounds = all`, from this run's second round on, the weights sent
            # are the previous round's aggregate, not yet evaluated: the sites score them first.
            return {**round_config(rnd), protocol.EVALUATE_RECEIVED: int(self._scored_on_fit(rnd))}

        k = settings.min_sites
        super().__init__(
            fraction_fit=1.0,
            fraction_evaluate=1.0,
            min_fit_clients=k,
            min_evaluate_clients=k,
            min_available_clients=k,
            on_fit_config_fn=fit_config,
            on_evaluate_config_fn=round_config,
            initial_parameters=ndarrays_to_parameters(initial_weights),
            accept_failures=True,
        )

    def _record(self, server_round: int) -> RoundRecord:
        return self.rounds.setdefault(server_round, RoundRecord(round=server_round))

    def _scored_on_fit(self, rnd: int) -> bool:
        """Whether (this run's) round `rnd`'s training message asks for the previous aggregate
        to be scored first."""
        return self.settings.evaluate_rounds == "all" and rnd > 1

    def _last(self, server_round: int) -> bool:
        return server_round >= self.settings.num_server_rounds

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Only after the run's last round. With `evaluate-rounds = all`, every earlier
        aggregate is scored by the sites when the next round's training instructions deliver
        it: one round-trip per round instead of two, a SuperNode polling interval saved every
        round in a real deployment."""
        if server_round < self.settings.num_server_rounds - self.offset:
            return []
        return super().configure_evaluate(server_round, parameters, client_manager)

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list,
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        if self._scored_on_fit(server_round):
            # The sites scored the previous round's aggregate before training on it.
            self._evaluated(server_round - 1 + self.offset, results, from_fit=True)
        server_round += self.offset
        rec = self._record(server_round)
        rec.run_id = self.run_id
        rec.failures = len(failures)
        rec.failure_reasons = failure_categories(failures)
        sent = weights_sha256(self.current)
        accepted = []
        seen: set[str] = set()
        for proxy, res in results:
            try:
                reply = protocol.read_reply(res.metrics, protocol.FIT_METRICS, proxy.cid)
                receipt = self._check_identity(reply, reply.receipt, proxy, seen, "fit",
                                               server_round, sent)
                if not reply.declined and not self.settings.secagg:
                    # Under SecAgg+ the coordinator holds only the sum, not this update.
                    out = weights_sha256(parameters_to_ndarrays(res.parameters))
                    if receipt["weights_out"] != out:
                        raise protocol.ProtocolError("receipt: not the weights sent")
            except protocol.ProtocolError as err:
                who = ascii(str(res.metrics.get("site", "?"))[:40])
                key = f"node {proxy.cid}"
                key += f" ({sum(k.startswith(key) for k in rec.rejected) + 1})" \
                    if key in rec.rejected else ""
                rec.rejected[key] = f"refused reply (as {who}): {err}"
                log(WARNING, "round %d: reply from node %s rejected: %s", server_round,
                    proxy.cid, err)
                continue
            site = reply.site
            rec.receipts[site] = json.loads(str(reply.receipt))
            rec.code[site] = str(reply.code)
            if reply.epsilon is not None and reply.delta is not None:
                rec.privacy[site] = {"epsilon": reply.epsilon, "delta": reply.delta}
            if reply.declined:
                rec.declined[site] = reply.reason or "declined"
                log(WARNING, "round %d: site %s declined: %s", server_round, site,
                    rec.declined[site])
                continue
            # Under SecAgg+ every result carries the same (already aggregated) parameters, so
            # this check then applies to the aggregate, the only update the coordinator sees.
            problem = check_update(parameters_to_ndarrays(res.parameters), self.current,
                                   self.settings.max_update_norm)
            if problem:
                rec.rejected[site] = problem
                log(WARNING, "round %d: update from %s rejected: %s", server_round, site, problem)
                continue
            rec.sites.append(site)
            accepted.append((proxy, res))
        params = None
        if accepted:
            params, _ = self.aggregator.aggregate_fit(server_round, accepted, [])
        if params is None:
            log(WARNING, "round %d: no site update was accepted; weights unchanged", server_round)
        else:
            self.current = parameters_to_ndarrays(params)
        rec.weights_sha256 = weights_sha256(self.current)
        self._checkpoint(server_round)  # every round, so a resumed run finds its weights
        if not self.evaluates(server_round):
            self._append_ledger(rec)  # nobody will score this round's model: sign it now
            self._write_results()
        return params, {}

    def evaluates(self, server_round: int) -> bool:
        """Whether round `server_round`'s model will be scored by the sites."""
        return self.settings.evaluate_rounds == "all" or self._last(server_round)

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list,
    ) -> tuple[float | None, dict[str, Scalar]]:
        self._evaluated(server_round + self.offset, results)
        return None, {}

    def _evaluated(
        self, server_round: int, results: list[tuple[ClientProxy, _Res]], from_fit: bool = False
    ) -> None:
        """Merge the sites' noisy per-ancestry scores of one round's model (from evaluation
        or, with `evaluate-rounds = all`, the next round's training replies), then sign the
        round into the ledger: such a round is complete once it is trained and evaluated."""
        rec = self._record(server_round)
        # With `panel` centring the sites chose the bins' centre from public inputs: any on the
        # grid is accepted, and the replies pooled are those sharing the centre most sites
        # chose, so one site binning elsewhere (first to answer or not) cannot set it for all.
        fixed = self.settings.score_centering == "fixed"
        accepted: list[tuple[protocol.SiteReply, str, GroupedScores]] = []
        seen: set[str] = set()
        for proxy, res in results:
            try:
                reply = protocol.read_reply(res.metrics, {**protocol.FIT_METRICS,
                                                          **protocol.EVALUATE_METRICS}, proxy.cid)
                if reply.scores is None:
                    raise ValueError(f"no scores ({reply.reason or 'none sent'})")
                receipt_text = reply.evaluation_receipt if from_fit else reply.receipt
                self._check_identity(reply, receipt_text, proxy, seen, "evaluate", server_round,
                                     rec.weights_sha256 or weights_sha256(self.current),
                                     check_epsilon=not from_fit)
                scores = GroupedScores.from_json(
                    reply.scores, center=self.settings.score_center if fixed else None)
            except ValueError as err:  # ProtocolError is a ValueError
                log(WARNING, "round %d: evaluation from %s rejected: %s", server_round,
                    res.metrics.get("site", proxy.cid), err)
                continue
            accepted.append((reply, str(receipt_text), scores))
        merged = GroupedScores(groups={}, center=self.settings.score_center)
        centres = Counter(scores.center for _, _, scores in accepted if scores.groups)
        # The most common centre; a tie goes to the one the earliest of them sent.
        centre = max(centres, key=centres.__getitem__) if centres else None
        for reply, receipt_text, scores in accepted:
            if scores.groups and scores.center != centre:
                log(WARNING, "round %d: evaluation from %s rejected: binned around %g where "
                    "most sites binned around %g", server_round, reply.site, scores.center,
                    centre)
                continue
            merged = merged.merge(scores)
            rec.evaluated_by.append(reply.site)
            rec.evaluation_receipts[reply.site] = json.loads(receipt_text)
            # A training reply's epsilon is after that round's training: the next round's.
            if not from_fit and reply.epsilon is not None and reply.delta is not None:
                rec.privacy[reply.site] = {"epsilon": reply.epsilon, "delta": reply.delta}
        frame = MetricFrame.from_scores(merged, k=self.settings.suppression_k)
        rec.metrics = frame.to_dict()
        self._recalibrate(server_round, rec.metrics)
        rec.weights_sha256 = rec.weights_sha256 or weights_sha256(self.current)
        self._append_ledger(rec)
        self._write_results()
        by_group = rec.metrics["by_group"]
        shown = {g: round(v["auroc"], 3) for g, v in by_group.items()
                 if not v.get("suppressed") and v.get("auroc") is not None}
        log(INFO, "round %d: AUROC by ancestry %s (DP-noised)", server_round, shown)

    def _checkpoint(self, server_round: int) -> None:
        model = RiskTransformer(self.model_cfg)
        set_weights(model, self.current)
        ckpt = Checkpoint.of(model, server_round, self.settings.encoder(),
                             self.settings.sha256(), self.panel_sha256)
        folder = RunFolder(self.out_dir)
        for path in (folder.checkpoint(server_round), folder.latest):
            ckpt.save(path)

    def _recalibrate(self, server_round: int, metrics: dict) -> None:
        """The evaluated round's checkpoint gets the per-ancestry recalibration its DP
        evaluation supports, so a site scoring with it reports calibrated risk."""
        recalibration = Recalibration.from_metrics(metrics)
        folder = RunFolder(self.out_dir)
        path = folder.checkpoint(server_round)
        if not recalibration or not path.exists():
            return
        ckpt = load_checkpoint(path).recalibrated(recalibration)
        ckpt.save(path)
        if folder.latest.exists() and load_checkpoint(folder.latest).round == server_round:
            ckpt.save(folder.latest)

    def _check_identity(
        self, reply: protocol.SiteReply, receipt_text: str | None, proxy: ClientProxy,
        seen: set[str], kind: str, server_round: int, weights_in: str,
        check_epsilon: bool = True,
    ) -> dict:
        """The reply's receipt body if the reply really is its site's, else ProtocolError:
        the name must be registered, answer once per round from the node it first answered
        from, and carry a receipt signed with that name's key for this run, round and
        weights, agreeing with the reply."""
        site = reply.site
        key = self.registry.keys.get(site)
        if key is None:
            raise protocol.ProtocolError("site name not in the site registry")
        if site in seen:
            raise protocol.ProtocolError("a second reply in this round under the same name")
        if self.nodes.get(site, str(proxy.cid)) != str(proxy.cid):
            raise protocol.ProtocolError("name already answered from another node")
        if not reply.code or not receipt_text:
            raise protocol.ProtocolError("no code or no receipt")
        try:
            body = verify_receipt(str(receipt_text), key)
        except ReceiptError as err:
            raise protocol.ProtocolError(f"receipt: {err}") from None
        expected = {"run_id": self.run_id, "round": server_round, "site": site, "kind": kind,
                    "weights_in": weights_in, "code": reply.code}
        if check_epsilon:
            expected.update(epsilon=reply.epsilon, delta=reply.delta)
        wrong = sorted(k for k, v in expected.items() if v is not None and body.get(k) != v)
        if wrong:
            raise protocol.ProtocolError(f"receipt disagrees with the reply on {', '.join(wrong)}")
        # Pinned only now: an impostor's refused reply must not lock the real site out.
        self.nodes.setdefault(site, str(proxy.cid))
        seen.add(site)
        return body

    def sign_unsigned(self) -> None:
        """Sign every trained round not yet in the ledger (its evaluation never came, e.g. too
        few sites were left to ask), so the ledger records all the training that happened."""
        for r in sorted(self.rounds):
            if r not in self.signed and self.rounds[r].weights_sha256:
                self._append_ledger(self.rounds[r])
        self._write_results()

    def _append_ledger(self, rec: RoundRecord) -> None:
        self.signed.add(rec.round)
        self.ledger.append(rec.ledger_body(
            ledger_id=self.ledger_id, run_id=rec.run_id or self.run_id,
            config_sha256=self.settings.sha256(), panel_sha256=self.panel_sha256,
            time=datetime.now(UTC).isoformat(timespec="seconds")))

    def results(self) -> dict:
        rounds = [self.rounds[r].to_json() for r in sorted(self.rounds)]
        return {
            "run_config_sha256": self.settings.sha256(),
            "panel_sha256": self.panel_sha256,
            "num_rounds_planned": self.settings.num_server_rounds,
            "rounds": json.loads(json.dumps(rounds)),
        }

    def _write_results(self) -> None:
        write_json(RunFolder(self.out_dir).results, self.results())


def initial_weights(cfg: ModelConfig, seed: int) -> list[np.ndarray]:
    torch.manual_seed(seed)
    return get_weights(RiskTransformer(cfg))
