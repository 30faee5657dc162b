"""genofed ClientApp: a hospital's node in the federation. Wiring only.

Built on Flower's NumPyClient so that Flower's SecAgg+ (`secaggplus_mod`) can mask the update
when the coordinator asks for secure aggregation. Flower's mod fails on plain train messages, so
it is engaged only for messages that carry SecAgg+ stage configs.
The data folder comes from the SuperNode's node config (`data-path`); in the simulation engine,
site i reads `<data-root>/site-<i+1>` from the run config.

Every reply is checked against `shared.protocol` before it leaves. A refusal or failure leaves
as its category only: Flower forwards an exception's text to the coordinator, so the detail is
logged here and the exception raised to Flower carries nothing but the category.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flwr.app import Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Context
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from client.identity import sign_reply
from client.settings import SiteSettings
from client.site import Site, SiteFailure
from shared import protocol
from shared.errors import GenofedError
from shared.runconfig import RunSettings

log = logging.getLogger(__name__)
T = TypeVar("T")


class SiteError(Exception):
    """What Flower reports to the coordinator when a site fails: a category, nothing else."""


def guarded(site_name: str, work: Callable[[], T]) -> T:
    try:
        return work()
    except SiteFailure as err:
        log.error("site %s: %s: %s", site_name, err.category, err)
        raise SiteError(err.category) from None
    except Exception:
        log.exception("site %s: internal error", site_name)
        raise SiteError("internal-error") from None


def failure_reply(site: str, category: str) -> dict[str, Any]:
    return {"site": site, "version": protocol.site_version(), "declined": 1, "reason": category}


class SiteClient(NumPyClient):
    def __init__(self, site: Site, run_id: str) -> None:
        self.site = site
        self.run_id = run_id

    def _instructions(self, config: dict) -> dict[str, Any]:
        return {
            "panel_sha256": str(config.get(protocol.PANEL_SHA256, "")),
            "min_group": float(config.get(protocol.MIN_GROUP_SIZE, 0)),
            "center": float(config.get(protocol.SCORE_CENTER, 0.0)),
        }

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        server_round = int(config[protocol.SERVER_ROUND])
        scored = bool(int(config.get(protocol.EVALUATE_RECEIVED, 0)))

        def work():  # type: ignore[no-untyped-def]
            try:
                report = self.site.fit(parameters, server_round, self.run_id,
                                       evaluate_received=scored, **self._instructions(config))
            except SiteFailure as err:  # the round goes on without this site, told why
                log.error("site %s: %s: %s", self.site.name, err.category, err)
                return parameters, 0, failure_reply(self.site.name, err.category)
            return report.weights, report.n_examples, report.metrics

        weights, n, metrics = guarded(self.site.name, work)
        received = protocol.weights_sha256(parameters)
        if "scores" in metrics:  # the previous round's model, scored before training
            metrics = self._sign(metrics, "evaluate", server_round - 1, received, "",
                                 "evaluation_receipt")
        metrics = self._sign(metrics, "fit", server_round, received,
                             protocol.weights_sha256(weights))
        protocol.check_reply(metrics, protocol.FIT_METRICS)
        return weights, n, metrics

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        server_round = int(config.get(protocol.SERVER_ROUND, 0))

        def work():  # type: ignore[no-untyped-def]
            try:
                return self.site.evaluate(parameters, self.run_id, server_round,
                                          **self._instructions(config)).metrics
            except SiteFailure as err:
                log.error("site %s: %s: %s", self.site.name, err.category, err)
                return failure_reply(self.site.name, err.category)

        metrics = guarded(self.site.name, work)
        metrics = self._sign(metrics, "evaluate", server_round,
                             protocol.weights_sha256(parameters), "")
        protocol.check_reply(metrics, protocol.EVALUATE_METRICS)
        return 0.0, 0, metrics

    def _sign(self, metrics: dict, kind: str, server_round: int, weights_in: str,
              weights_out: str, field: str = "receipt") -> dict:
        return guarded(self.site.name, lambda: sign_reply(
            self.site.state_path, metrics, run_id=self.run_id, round=server_round, kind=kind,
            weights_in=weights_in, weights_out=weights_out, field=field))


def site_from_context(context: Context) -> Site:
    try:
        return _site_from_context(context)
    except (GenofedError, ValueError) as err:  # the run config or the site's settings
        raise SiteFailure("config-error", str(err)) from err


def _site_from_context(context: Context) -> Site:
    settings = RunSettings.from_run_config(context.run_config)
    node = context.node_config
    if "data-path" in node:
        data_path = Path(str(node["data-path"]))
    else:
        data_path = Path(settings.data_root) / f"site-{int(node['partition-id']) + 1}"
    name = str(node["site-id"]) if "site-id" in node else None
    state = str(node["state-path"]) if "state-path" in node else None
    return Site(data_path, settings, name=name, state_path=state,
                own=SiteSettings.load(data_path, node))


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return SiteClient(guarded(str(context.node_config.get("site-id", "site")),
                              lambda: site_from_context(context)),
                      str(context.run_id)).to_client()


def secagg_when_asked(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ protocol messages through Flower's mod, everything else straight on."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=client_fn, mods=[secagg_when_asked])
