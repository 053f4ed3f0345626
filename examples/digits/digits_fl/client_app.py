"""The collaborator's ClientApp: trains only on the data its owner committed to (every byte read is checked
against the provisioned commitment) and signs every reply with its attested key."""

from __future__ import annotations

from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from digits_fl.task import evaluate, load_split, train
from fedattest.flower import attested_signing_mod, committed_dataset

app = ClientApp(mods=[attested_signing_mod])


def _split(context: Context, name: str):
    return load_split(committed_dataset(context).read_bytes(name))


@app.train()
def train_fn(msg: Message, context: Context) -> Message:
    x, y = _split(context, "train.npz")
    weights = msg.content["arrays"].to_numpy_ndarrays()
    cfg = context.run_config
    new, loss = train(weights, x, y, float(cfg["learning-rate"]), int(cfg["local-epochs"]))
    content = RecordDict({"arrays": ArrayRecord(new), "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate_fn(msg: Message, context: Context) -> Message:
    x, y = _split(context, "test.npz")
    loss, accuracy = evaluate(msg.content["arrays"].to_numpy_ndarrays(), x, y)
    content = RecordDict({"metrics": MetricRecord({"eval_loss": loss, "eval_acc": accuracy, "num-examples": len(y)})})
    return Message(content=content, reply_to=msg)
