"""Driving an attested Flower strategy by hand, as Flower's ServerApp would: a Grid's nodes, one round's
instructions, and a collaborator's signed reply to one of them. Flower is imported inside each function."""

from __future__ import annotations

from typing import Any

from fedattest.flower import UpdateSigner


class Nodes:
    """What FedAvg.configure_train asks of Flower's Grid: the connected nodes."""

    def __init__(self, n: int) -> None:
        self.n = n

    def get_node_ids(self) -> list[int]:
        return list(range(1, self.n + 1))


def signed_reply(
    instruction: Any, signer: UpdateSigner, arrays: list[Any], examples: float = 10, metrics: dict[str, float] | None = None
) -> Any:
    from flwr.app import ArrayRecord, Message, MetricRecord, RecordDict

    from fedattest.flower.mods import signing_mod

    def train(message: Any, context: object) -> Any:
        content = {"arrays": ArrayRecord(arrays), "metrics": MetricRecord({"num-examples": examples, **(metrics or {})})}
        return Message(RecordDict(content), reply_to=message)

    return signing_mod(signer)(instruction, None, train)


def configure_round(strategy: Any, server_round: int, model: list[Any], n: int) -> list[Any]:
    from flwr.app import ArrayRecord, ConfigRecord

    return list(strategy.configure_train(server_round, ArrayRecord(model), ConfigRecord(), Nodes(n)))
