"""genofed ServerApp: the coordinator.

Flower's legacy workflow (`LegacyContext` + `DefaultWorkflow`) drives our FedAvg strategy, so
switching on SecAgg+ (`secagg = true` in the run config) swaps only the fit workflow.
"""

from __future__ import annotations

from flwr.common import Context
from flwr.server import LegacyContext, ServerApp, ServerConfig
from flwr.server.workflow import DefaultWorkflow, SecAggPlusWorkflow

from server.coordinator import Coordinator

app = ServerApp()


@app.main()
def main(grid, context: Context) -> None:  # type: ignore[no-untyped-def]
    coordinator = Coordinator.from_run_config(context.run_config, context.run_id)
    legacy = LegacyContext(
        context=context,
        config=ServerConfig(
            num_rounds=coordinator.rounds_left,
            round_timeout=coordinator.settings.round_timeout or None,
        ),
        strategy=coordinator.strategy,
    )
    fit_workflow = None
    if coordinator.settings.secagg:
        n = coordinator.settings.min_sites
        fit_workflow = SecAggPlusWorkflow(num_shares=n, reconstruction_threshold=max(2, n - 1))
    DefaultWorkflow(fit_workflow=fit_workflow)(grid, legacy)
    coordinator.finish()
