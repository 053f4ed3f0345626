"""What a ServerApp adds to become attested: a strategy wrapper that keeps only updates signed by attested
collaborators and reports every round to the coordinator's audit log (the ClientApp's side is
:func:`fedattest.flower.mods.attested_signing_mod`).

Typical use (see ``examples/digits``)::

    # client_app.py
    app = ClientApp(mods=[attested_signing_mod])

    # server_app.py
    strategy = attested_strategy(dp_strategy(FedAvg(...), context), context)
    strategy.start(grid=grid, initial_arrays=..., num_rounds=provisioned_for(context).rounds)

The attested filter is the outermost wrapper on purpose: DP clipping rewrites the replies' arrays, and a
signature covers the arrays as the collaborator sent them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509

from fedattest.errors import FedattestError
from fedattest.flower.context import identity_dir_for
from fedattest.flower.mods import verify_reply
from fedattest.flower.participant import coordinator_of
from fedattest.flower.provisioned import load_provisioned
from fedattest.flower.rounds import report_round
from fedattest.flower.signing import UpdateRejectedError, UpdateVerifier
from fedattest.flower.superlink import coordinator_node_keys

log = logging.getLogger("fedattest.flower")


class AttestedStrategy:
    """Wraps a Flower strategy: drops (and logs) every reply not signed by a currently attested collaborator,
    and after each aggregation reports round, participants and the aggregate's content hash to the coordinator.
    A round the coordinator refuses to record stops the run (the audit log must not have gaps)."""

    def __init__(
        self,
        strategy: Any,
        verifier: UpdateVerifier,
        attested_members: Callable[[], set[str]],
        report: Callable[[int, list[str], str], int],
    ) -> None:
        self.strategy, self.verifier, self.attested_members, self.report = strategy, verifier, attested_members, report

    def _keep(self, replies: Iterable[Any]) -> tuple[list[Any], list[str]]:
        allowed = self.attested_members()
        kept, members = [], []
        for reply in replies:
            try:
                member = verify_reply(reply, self.verifier)
                if member not in allowed:
                    raise UpdateRejectedError(f"{member!r} is not a currently attested collaborator")
            except UpdateRejectedError as exc:
                log.warning("dropped an update from node %s: %s", reply.metadata.src_node_id, exc)
                continue
            kept.append(reply)
            members.append(member)
        return kept, members

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        return self.strategy.configure_train(server_round, arrays, config, grid)  # type: ignore[no-any-return]

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        began = time.perf_counter()
        kept, members = self._keep(replies)
        checked = time.perf_counter()
        arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        if arrays is not None:
            aggregated = time.perf_counter()
            seq = self.report(server_round, members, str(arrays.object_id))
            log.info("round %d: %d attested updates (%s); recorded in the audit log as #%d (checks %.0f ms, report %.0f ms)",
                     server_round, len(members), ", ".join(sorted(members)), seq, (checked - began) * 1000,
                     (time.perf_counter() - aggregated) * 1000)  # fmt: skip
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        return self.strategy.configure_evaluate(server_round, arrays, config, grid)  # type: ignore[no-any-return]

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        return self.strategy.aggregate_evaluate(server_round, self._keep(replies)[0])

    def summary(self) -> None:
        self.strategy.summary()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.strategy, name)


def attested_strategy(strategy: Any, context: Any) -> Any:
    """Inside a ServerApp: ``strategy`` wrapped so only attested collaborators' updates count and every
    round is reported. The result is a real ``flwr.serverapp.strategy.Strategy`` (``.start`` works)."""
    from flwr.serverapp.strategy import Strategy  # noqa: PLC0415 - Flower only here

    identity = identity_dir_for(context)
    provisioned = load_provisioned(identity)
    url, root_pem, _ = coordinator_of(identity)
    verifier = UpdateVerifier(x509.load_pem_x509_certificate(root_pem.encode()), provisioned.federation)
    fetch = coordinator_node_keys(url, root_pem)
    run_id = int(getattr(context, "run_id", 0))

    def attested_members() -> set[str]:
        try:
            return {str(entry["member"]) for entry in fetch()}
        except Exception as exc:
            log.error("cannot read the attested collaborators from the coordinator (%s): dropping this round's updates", exc)
            return set()

    def report(server_round: int, members: list[str], content_id: str) -> int:
        try:
            return report_round(url, root_pem, identity, run_id, server_round, members, content_id)
        except FedattestError as exc:
            raise FedattestError(f"round {server_round} could not be recorded by the coordinator, stopping: {exc}") from None

    wrapper = type("AttestedStrategyImpl", (AttestedStrategy, Strategy), {})
    return wrapper(strategy, verifier, attested_members, report)
