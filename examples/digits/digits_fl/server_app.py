"""The aggregator's ServerApp: FedAvg with the policy's server-side DP, counting only updates signed by
attested collaborators, for the number of rounds the policy sets; each round is recorded by the coordinator."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits_fl.task import initial_weights
from fedattest.flower import attested_strategy, dp_strategy, provisioned_for

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    provisioned = provisioned_for(context)
    sampled = provisioned.dp.sampled_clients
    fedavg = FedAvg(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=sampled,
        min_evaluate_nodes=sampled,
        min_available_nodes=sampled,
    )
    strategy = attested_strategy(dp_strategy(fedavg, context), context)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_weights()),
        num_rounds=provisioned.rounds,
        train_config=ConfigRecord({}),
    )
    for rnd, metrics in sorted(result.evaluate_metrics_clientapp.items()):
        print(f"fedattest-example: round {rnd}: accuracy {float(metrics['eval_acc']):.3f}", flush=True)
