"""The aggregator's ServerApp: FedAvg with the policy's server-side DP, counting only updates signed by
attested collaborators, for the number of rounds the policy sets; each round is recorded by the coordinator
and the model is scored on the public benchmark set shipped in the app (no patient data leaves a hospital)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from digits_fl.task import evaluate, initial_weights
from fedattest.flower import attested_strategy, dp_strategy, provisioned_for

HOLDOUT = Path(__file__).with_name("holdout.json")
app = ServerApp()


def score(server_round: int, arrays: ArrayRecord) -> MetricRecord:
    doc = json.loads(HOLDOUT.read_text())
    x, y = np.asarray(doc["x"], dtype=np.float64) / 16.0, np.asarray(doc["y"], dtype=np.int64)
    loss, accuracy = evaluate(arrays.to_numpy_ndarrays(), x, y)
    if server_round > 0:
        # The wall-clock stamp lets benchmarks/flower_overhead.py time rounds from the streamed log.
        print(f"fedattest-example: round {server_round}: accuracy {accuracy:.3f} (t={time.time():.3f})", flush=True)
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
