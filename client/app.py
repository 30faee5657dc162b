"""genofed ClientApp: a hospital's node in the federation.

Built on Flower's NumPyClient so that Flower's SecAgg+ (`secaggplus_mod`) can mask the update
when the coordinator asks for secure aggregation. Flower's mod fails on plain train messages, so
it is engaged only for messages that carry SecAgg+ stage configs.
The data folder comes from the SuperNode's node config (`data-path`); in the simulation engine,
site i reads `<data-root>/site-<i+1>` from the run config.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import Message
from flwr.client import ClientApp, NumPyClient
from flwr.client.mod import secaggplus_mod
from flwr.clientapp.typing import ClientAppCallable
from flwr.common import Context
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS

from client.budget import SiteBudget
from client.site import Site
from shared.runconfig import EVALUATE_RECEIVED, RunSettings


class SiteClient(NumPyClient):
    def __init__(self, site: Site, run_id: str) -> None:
        self.site = site
        self.run_id = run_id

    def fit(self, parameters, config):  # type: ignore[no-untyped-def]
        evaluation: dict = {}
        if int(config.get(EVALUATE_RECEIVED, 0)):
            # The previous round's aggregate: scored here, before training, so the coordinator
            # needs no separate evaluation round-trip for it.
            _, _, evaluation = self.site.evaluate(parameters, str(config["panel-sha256"]))
        report = self.site.fit(
            parameters, int(config["server-round"]), self.run_id, str(config["panel-sha256"])
        )
        return report.weights, report.n_examples, {**evaluation, **report.metrics}

    def evaluate(self, parameters, config):  # type: ignore[no-untyped-def]
        return self.site.evaluate(parameters, str(config["panel-sha256"]))


def site_from_context(context: Context) -> Site:
    settings = RunSettings.from_run_config(context.run_config)
    node = context.node_config
    if "data-path" in node:
        data_path = Path(str(node["data-path"]))
    else:
        data_path = Path(settings.data_root) / f"site-{int(node['partition-id']) + 1}"
    name = str(node["site-id"]) if "site-id" in node else None
    state = str(node["state-path"]) if "state-path" in node else None
    budget = SiteBudget.load(data_path, node)
    balance = str(node["balance"]) if "balance" in node else None
    return Site(data_path, settings, name=name, state_path=state, budget=budget, balance=balance)


def client_fn(context: Context):  # type: ignore[no-untyped-def]
    return SiteClient(site_from_context(context), str(context.run_id)).to_client()


def secagg_when_asked(msg: Message, ctxt: Context, call_next: ClientAppCallable) -> Message:
    """Route SecAgg+ protocol messages through Flower's mod, everything else straight on."""
    if RECORD_KEY_CONFIGS in msg.content.config_records:
        return secaggplus_mod(msg, ctxt, call_next)
    return call_next(msg, ctxt)


app = ClientApp(client_fn=client_fn, mods=[secagg_when_asked])
