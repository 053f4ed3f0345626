"""A Flower app that is not fedattest's: what a developer brings. The tests write it into a temporary directory
(it is not an app of this repository) and run it under ``fedattest flower dev`` and under Flower's own simulation
engine. It is a numpy linear regression; each site's data is ``xy.npy`` (features, then the target)."""

from __future__ import annotations

import io
from pathlib import Path

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "linreg"
version = "1.0.0"
description = "Federated linear regression (a developer's own app)"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "a-developer"

[tool.flwr.app.components]
serverapp = "linreg.server_app:app"
clientapp = "linreg.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 2
lr = 0.1
local-steps = 10
sim-data = ""
"""

CLIENT = """\
import io
from pathlib import Path

import numpy as np
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from fedattest.flower import attested_signing_mod, committed_dataset

app = ClientApp(mods=[attested_signing_mod])


def _data(context: Context):
    # Deployed: the SuperNode's data directory. In Flower's simulation engine: a directory per partition.
    fallback = Path(str(context.run_config["sim-data"])) / f"site-{context.node_config.get('partition-id', 0)}"
    xy = np.load(io.BytesIO(committed_dataset(context, default_dir=fallback).read_bytes("xy.npy")))
    return xy[:, :-1], xy[:, -1]


@app.train()
def train(msg: Message, context: Context) -> Message:
    x, y = _data(context)
    w = msg.content["arrays"].to_numpy_ndarrays()[0]
    for _ in range(int(context.run_config["local-steps"])):
        w = w - float(context.run_config["lr"]) * 2 * x.T @ (x @ w - y) / len(y)
    loss = float(np.mean((x @ w - y) ** 2))
    content = RecordDict({"arrays": ArrayRecord([w]), "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
"""

SERVER = """\
import numpy as np
from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

from fedattest.flower import attested_strategy, dp_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    fedavg = FedAvg(fraction_train=1.0, fraction_evaluate=0.0, min_train_nodes=2, min_available_nodes=2)
    strategy = attested_strategy(dp_strategy(fedavg, context), context)
    result = strategy.start(grid=grid, initial_arrays=ArrayRecord([np.zeros(3)]),
                            num_rounds=int(context.run_config["num-server-rounds"]))
    print("linreg: final weights", np.round(result.arrays.to_numpy_ndarrays()[0], 3).tolist(), flush=True)
"""

# The developer's next version: written as plain Flower (no signing mod, a bare FedAvg asking for 4 rounds).
PLAIN_CLIENT = CLIENT.replace("from fedattest.flower import attested_signing_mod, committed_dataset",
                              "from fedattest.flower import committed_dataset").replace(
                              "ClientApp(mods=[attested_signing_mod])", "ClientApp()")  # fmt: skip
PLAIN_SERVER = SERVER.replace("from fedattest.flower import attested_strategy, dp_strategy\n", "").replace(
    "attested_strategy(dp_strategy(fedavg, context), context)", "fedavg").replace(
    'int(context.run_config["num-server-rounds"])', "4")  # fmt: skip


def write_app(directory: Path, *, plain: bool = False) -> Path:
    """The app in ``directory`` (created): its pyproject and package ``linreg``."""
    package = directory / "linreg"
    package.mkdir(parents=True, exist_ok=True)
    (directory / "pyproject.toml").write_text(PYPROJECT)
    (package / "__init__.py").write_text("")
    (package / "client_app.py").write_text(PLAIN_CLIENT if plain else CLIENT)
    (package / "server_app.py").write_text(PLAIN_SERVER if plain else SERVER)
    return directory


def write_sites(directory: Path, sites: int = 2, rows: int = 64) -> dict[str, Path]:
    """``site-N/xy.npy`` for each site: y = x . (1, 2, 3) plus a little noise, a different sample per site."""
    import numpy as np

    out = {}
    for i in range(sites):
        rng = np.random.default_rng(i)
        x = rng.normal(size=(rows, 3))
        y = x @ np.array([1.0, 2.0, 3.0]) + rng.normal(scale=0.01, size=rows)
        site = directory / f"site-{i}"
        site.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        np.save(buffer, np.column_stack([x, y]))
        (site / "xy.npy").write_bytes(buffer.getvalue())
        out[f"site-{i}"] = site
    return out
