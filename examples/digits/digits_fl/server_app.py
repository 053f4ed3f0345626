"""The aggregator's ServerApp: FedAvg with the policy's server-side DP, counting only updates signed by
attested collaborators, for the number of rounds the policy sets; each round is recorded by the coordinator
and the model is scored on the public benchmark set shipped in the app (no patient data leaves a hospital)."""

from __future__ import annotations

from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits_fl.task import initial_weights, score_on_holdout
from fedattest.flower import attested_strategy, dp_strategy, provisioned_for

app = ServerApp()


def score(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    loss, accuracy = score_on_holdout(server_round, arrays.to_numpy_ndarrays())
    return MetricRecord({"accuracy": accuracy, "loss": loss})


@app.main()
def main(grid: Grid, context: Context) -> None:
    provisioned = provisioned_for(context)
    sampled = provisioned.dp.sampled_clients
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=sampled, min_available_nodes=sampled)
    strategy = attested_strategy(dp_strategy(fedavg, context), context)
    strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial_weights()),
        num_rounds=provisioned.rounds,
        train_config=ConfigRecord({}),
        evaluate_fn=score,
    )
