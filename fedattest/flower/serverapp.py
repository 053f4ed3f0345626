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
signature covers the arrays as the collaborator sent them. It also refuses, before clipping and aggregation,
every reply signed for another run or round and every update that would poison the model: a NaN or infinite
value (``min(1, clip / NaN)`` is 1 in Flower's clipping, so one NaN makes the global model NaN), a norm that
overflows (clipping would then zero the update), arrays that do not match the global model's shapes (which
would stop the run), and non-finite metrics.
"""

from __future__ import annotations

import contextvars
import logging
import math
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from cryptography import x509

from fedattest.coordinator.round_report import MAX_METRICS, report_metrics
from fedattest.errors import FedattestError
from fedattest.flower.context import identity_dir_for, is_attested, not_attested
from fedattest.flower.mods import check_reply_round, round_group, verify_reply
from fedattest.flower.participant import coordinator_of
from fedattest.flower.provisioned import load_provisioned
from fedattest.flower.rounds import ReportedRound, report_round, reserve_round
from fedattest.flower.superlink import coordinator_node_keys
from fedattest.participant.client import revocation_fetcher
from fedattest.pki.crl import RevocationList
from fedattest.pki.signing import UpdateRejectedError, UpdateVerifier

log = logging.getLogger("fedattest.flower")


def check_update_values(reply: Any, model: list[Any] | None) -> None:
    """:class:`UpdateRejectedError` unless every array in ``reply`` is real-valued and finite, matches the
    global ``model``'s arrays (when known) in number and shape, and its update (the arrays minus ``model``)
    has a finite norm as Flower's DP clipping computes it; and every metric is finite."""
    import numpy as np  # noqa: PLC0415 - the ServerApp's dependency, not the ClientApp's
    from flwr.supercore.differential_privacy import get_norm  # noqa: PLC0415

    for name, record in reply.content.array_records.items():
        try:
            arrays = record.to_numpy_ndarrays()
        except Exception as exc:  # whatever a malformed array raises, it is refused
            raise UpdateRejectedError(f"the arrays {name!r} do not decode: {type(exc).__name__}") from None
        if model is not None and [a.shape for a in arrays] != [m.shape for m in model]:
            raise UpdateRejectedError(f"the arrays {name!r} do not have the global model's shapes")
        for key, array in zip(record.keys(), arrays, strict=True):
            if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
                raise UpdateRejectedError(f"{name}[{key!r}] is not an array of real numbers ({array.dtype})")
            finite = np.isfinite(array)
            if not finite.all():
                nan, bad = int(np.isnan(array).sum()), array.size - int(finite.sum())
                raise UpdateRejectedError(f"{name}[{key!r}] has {nan} NaN and {bad - nan} infinite values")
        update = arrays if model is None else [np.subtract(a, m) for a, m in zip(arrays, model, strict=True)]
        with np.errstate(over="ignore", invalid="ignore"):
            norm = get_norm(update)
        if not math.isfinite(norm):
            raise UpdateRejectedError(f"the update's norm in {name!r} overflows (its values are too large to clip)")
    for name, metrics in reply.content.metric_records.items():
        for key, value in metrics.items():
            if any(not math.isfinite(v) for v in (value if isinstance(value, list) else [value])):
                raise UpdateRejectedError(f"the metric {name}[{key!r}] is not finite")


class AttestedStrategy:
    """Wraps a Flower strategy: drops (and logs) every reply not signed by a currently attested collaborator
    for this run and round (its certificate not on the coordinator's revocation list, fetched every round), or
    whose values would poison the model (:func:`check_update_values`), and reports each aggregated round to the
    coordinator: round, participants and their node ids, the aggregate's content hash, the refused updates
    (member or node, and reason), the DP applied and the round's metrics. A round the coordinator refuses to
    record stops the run (the audit log must not have gaps).

    When a round is reported: run by ``Strategy.start`` (the enforced ServerApp calls :meth:`begin` and
    :meth:`finish` around it), once the round is complete, so its report carries the evaluation metrics too
    (after the ServerApp-side evaluation when there is one, else after the ClientApp-side evaluation; at the
    latest when the next round starts or the run ends). Called on its own, right after aggregation."""

    def __init__(
        self,
        strategy: Any,
        verifier: UpdateVerifier,
        attested_members: Callable[[], set[str]],
        report: Callable[[ReportedRound], int],
        *,
        run_id: int,
        revocations: Callable[[], RevocationList] | None = None,
        reserve: Callable[[int], None] | None = None,
    ) -> None:
        self.strategy, self.verifier, self.attested_members, self.report = strategy, verifier, attested_members, report
        self.run_id = run_id
        # The privacy ledger, asked for each round's budget before the round is aggregated (the noised aggregate is
        # the release); raises, stopping the run, when the coordinator refuses. None only where no coordinator exists.
        self.reserve = reserve
        self.revocations = revocations  # fetched at every aggregation; None only where no coordinator exists (tests)
        self.models: dict[int, Any] = {}  # round -> the global model sent for it (an ArrayRecord)
        self.refused: dict[int, list[tuple[str, str]]] = {}  # round -> (member or node, reason) of refused updates
        self.deferred = False  # True inside Strategy.start (begin): each round is reported once it is complete
        self.server_evaluation = False  # ... and that is after the ServerApp-side evaluation
        self._pending: ReportedRound | None = None  # aggregated, not reported yet
        self._sources: dict[str, Any] = {}  # the pending round's metric records, by source
        self._timing = ""  # the pending round's check time, for its log line

    def _keep(self, server_round: int, replies: Iterable[Any]) -> tuple[list[Any], list[str]]:
        unknown = None
        if self.revocations is not None:
            try:  # the current list, every round: a certificate revoked since the last round is refused now
                self.verifier.revoked = self.revocations().reason_for
            except FedattestError as exc:  # fail closed: no update counts while revocations cannot be checked
                unknown = f"no update is accepted while the revocation list cannot be checked: {exc}"
        allowed = self.attested_members()
        sent = self.models.get(server_round)
        model = sent.to_numpy_ndarrays() if sent is not None else None
        kept, members = [], []
        for reply in replies:
            member = None
            try:
                member = verify_reply(reply, self.verifier)
                if unknown is not None:
                    raise UpdateRejectedError(unknown)
                if member not in allowed:
                    raise UpdateRejectedError(f"{member!r} is not a currently attested collaborator")
                check_reply_round(reply, self.run_id, server_round)
                if member in members:
                    raise UpdateRejectedError(f"a second update from {member!r} in this round")
                check_update_values(reply, model)
            except UpdateRejectedError as exc:
                member = member or exc.member
                who = f"{member} (node {reply.metadata.src_node_id})" if member else f"node {reply.metadata.src_node_id}"
                log.warning("round %d: refused the update of %s: %s", server_round, who, exc)
                self.refused.setdefault(server_round, []).append((member or f"node {reply.metadata.src_node_id}", str(exc)))
                continue
            kept.append(reply)
            members.append(member)
        return kept, members

    def _for_round(self, server_round: int, messages: Iterable[Any]) -> list[Any]:
        out = list(messages)
        for message in out:  # the round every reply must be signed for (replies copy the group id)
            message.metadata.group_id = round_group(server_round)
        return out

    def configure_train(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        self.flush()  # the round before, if its evaluation never came (rounds driven by hand)
        self.models = {server_round: arrays}
        return self._for_round(server_round, self.strategy.configure_train(server_round, arrays, config, grid))

    def aggregate_train(self, server_round: int, replies: Iterable[Any]) -> tuple[Any, Any]:
        began = time.perf_counter()
        replies = list(replies)
        kept, members = self._keep(server_round, replies)
        checked = time.perf_counter()
        refused = "; ".join(f"{who}: {why}" for who, why in self.refused.get(server_round, []))
        if not kept:  # nothing to aggregate: the run stops, saying why, rather than going on with an unchanged model
            why = f"refused: {refused}" if refused else "no collaborator replied"
            raise FedattestError(
                f"round {server_round} kept no attested update ({len(replies)} replies; {why}): stopping the run"
            )
        if self.reserve is not None:
            self.reserve(server_round)
        arrays, metrics = self.strategy.aggregate_train(server_round, kept)
        if arrays is not None:
            self.flush()  # a round aggregated before and not reported yet (only when rounds are driven by hand)
            nodes = {member: int(reply.metadata.src_node_id) for reply, member in zip(kept, members, strict=True)}
            refusals = list(self.refused.get(server_round, []))
            self._pending = ReportedRound(server_round, members, str(arrays.object_id), refusals, applied_dp(self.strategy),
                                          nodes=nodes)  # fmt: skip
            self._sources = {"train": metrics}
            self._timing = f"checks {(checked - began) * 1000:.0f} ms" + (f"; refused: {refused}" if refused else "")
            if not self.deferred:
                self.flush()
        elif refused:
            log.warning("round %d: not aggregated; refused: %s", server_round, refused)
        return arrays, metrics

    def flush(self) -> None:
        """Report the round aggregated last, if it is not reported yet, with the metrics gathered for it."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        pending.metrics, dropped = report_metrics(self._sources)
        if dropped:
            log.warning("round %d: metrics not reported (not a finite number, a name outside [A-Za-z0-9_.-/], or beyond"
                        " %d): %s", pending.round, MAX_METRICS, ", ".join(dropped[:10]))  # fmt: skip
        started = time.perf_counter()
        seq = self.report(pending)
        log.info("round %d: %d attested updates (%s); recorded in the audit log as #%d (%s, report %.0f ms)",
                 pending.round, len(pending.participants), ", ".join(sorted(pending.participants)), seq, self._timing,
                 (time.perf_counter() - started) * 1000)  # fmt: skip

    def begin(self, evaluate_fn: Callable[[int, Any], Any] | None) -> Callable[[int, Any], Any] | None:
        """Called by the enforced ``Strategy.start`` before the rounds run: from now on each round is reported once
        it is complete. Returns ``evaluate_fn`` (the ServerApp-side evaluation, or None) wrapped so that its metrics
        join the round's report, which it then sends."""
        self.deferred, self.server_evaluation = True, evaluate_fn is not None
        if evaluate_fn is None:
            return None

        def evaluated(server_round: int, arrays: Any) -> Any:
            result = evaluate_fn(server_round, arrays)
            if self._pending is not None and self._pending.round == server_round:
                self._sources["server"] = result
                self.flush()
            return result

        return evaluated

    def finish(self, *, failing: bool = False) -> None:
        """Called by the enforced ``Strategy.start`` when the rounds are over: the last round is reported if it is
        not yet. ``failing``: the run is stopping on an error, which must stay the one raised (a report that fails
        too is logged)."""
        self.deferred = False
        try:
            self.flush()
        except Exception as exc:  # whatever it is, the run's own error stays the one raised
            if not failing:
                raise
            log.error("the last aggregated round could not be recorded: %s", exc)

    def configure_evaluate(self, server_round: int, arrays: Any, config: Any, grid: Any) -> Iterable[Any]:
        self.models[server_round] = arrays
        return self._for_round(server_round, self.strategy.configure_evaluate(server_round, arrays, config, grid))

    def aggregate_evaluate(self, server_round: int, replies: Iterable[Any]) -> Any:
        metrics = self.strategy.aggregate_evaluate(server_round, self._keep(server_round, replies)[0])
        if self._pending is not None and self._pending.round == server_round:
            self._sources["evaluate"] = metrics
            if not self.server_evaluation:
                self.flush()
        return metrics

    def summary(self) -> None:
        self.strategy.summary()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.strategy, name)


def applied_dp(strategy: Any) -> dict[str, Any] | None:
    """The server-side DP a strategy chain applies (Flower's fixed-clipping wrapper, wherever it sits), as the
    round report records it; None when the chain applies none."""
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping  # noqa: PLC0415

    seen: set[int] = set()
    while strategy is not None and id(strategy) not in seen:
        seen.add(id(strategy))
        if isinstance(strategy, DifferentialPrivacyServerSideFixedClipping):
            return {
                "noise_multiplier": float(strategy.noise_multiplier), "clipping_norm": float(strategy.clipping_norm),
                "sampled_clients": int(strategy.num_sampled_clients),
            }  # fmt: skip
        strategy = getattr(strategy, "strategy", None)
    return None


def attested_strategy(strategy: Any, context: Any) -> Any:
    """Inside a ServerApp: ``strategy`` wrapped so only attested collaborators' updates count and every
    round is reported. The result is a real ``flwr.serverapp.strategy.Strategy`` (``.start`` works). Not attested
    (Flower's simulation engine): ``strategy`` as given, said once in the log."""
    from flwr.serverapp.strategy import Strategy  # noqa: PLC0415 - Flower only here

    if not is_attested(context):
        not_attested("attested_strategy", "every update counts and no round is recorded")
        return strategy

    identity = identity_dir_for(context)
    provisioned = load_provisioned(identity)
    url, root_pem, _ = coordinator_of(identity)
    verifier = UpdateVerifier(x509.load_pem_x509_certificate(root_pem.encode()), provisioned.federation)
    fetch = coordinator_node_keys(url, root_pem)
    revocations = revocation_fetcher(url, root_pem)
    run_id = int(getattr(context, "run_id", 0))

    def attested_members() -> set[str]:
        try:
            return {str(entry["member"]) for entry in fetch()}
        except Exception as exc:
            log.error("cannot read the attested collaborators from the coordinator (%s): dropping this round's updates", exc)
            return set()

    def report(outcome: ReportedRound) -> int:
        try:
            return report_round(url, root_pem, identity, run_id, outcome.round, outcome.participants, outcome.params_sha256,
                                outcome.refused, dp=outcome.dp, metrics=outcome.metrics, nodes=outcome.nodes)  # fmt: skip
        except FedattestError as exc:
            raise FedattestError(f"round {outcome.round} could not be recorded by the coordinator, stopping: {exc}") from None

    def reserve(server_round: int) -> None:
        try:
            answer = reserve_round(url, root_pem, identity, run_id, server_round)
        except FedattestError as exc:
            raise FedattestError(f"round {server_round} is not released, stopping the run: privacy budget: {exc}") from None
        if answer.get("reserved"):
            log.info("round %d: privacy budget reserved (ε %.4g of %g spent at δ %g)", server_round,
                     answer.get("epsilon_spent", float("nan")), answer.get("epsilon_budget", float("nan")),
                     answer.get("delta", float("nan")))  # fmt: skip

    wrapper = type("AttestedStrategyImpl", (AttestedStrategy, Strategy), {})
    return wrapper(strategy, verifier, attested_members, report, run_id=run_id, revocations=revocations, reserve=reserve)


_CONTEXT: contextvars.ContextVar[Any] = contextvars.ContextVar("fedattest_serverapp_context", default=None)


def enforce_policy_in_serverapp() -> Callable[[], None]:
    """In a ``flwr-serverapp`` process: whatever strategy the app starts runs attested (only attested
    collaborators' signed updates count, every round reported), with the policy's server-side DP (added when
    the app did not wrap its strategy in :func:`~fedattest.flower.dp_strategy`) and for the policy's number of
    rounds (an app asking for another is told so in the log). Returns a function that undoes it. Tied to
    Flower 1.42 (pinned): the ServerApp runtime calls ``run_`` with the run's context, and strategies run
    through ``Strategy.start``; tests fail if either moves."""
    import importlib  # noqa: PLC0415
    import inspect  # noqa: PLC0415

    from flwr.serverapp.strategy import Strategy  # noqa: PLC0415

    from fedattest.flower.context import dp_strategy, provisioned_for  # noqa: PLC0415

    runtime = importlib.import_module("flwr.superlink.runtime.run_serverapp")
    original_run: Callable[..., Any] = getattr(runtime, "run_")  # noqa: B009
    original_start: Callable[..., Any] = Strategy.start

    def run_(grid: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
        token = _CONTEXT.set(context)
        try:
            return original_run(grid, context, *args, **kwargs)
        finally:
            _CONTEXT.reset(token)

    enforced: weakref.WeakSet[Any] = weakref.WeakSet()  # ours, not an attribute the app could set

    def start(self: Any, grid: Any, initial_arrays: Any, num_rounds: int = 3, *args: Any, **kwargs: Any) -> Any:
        if self in enforced:
            return original_start(self, grid, initial_arrays, num_rounds, *args, **kwargs)
        context = _CONTEXT.get()
        if context is None:  # started outside the ServerApp's own call (another thread): nothing to enforce it with
            raise FedattestError("fedattest: a strategy must be started from the ServerApp's main function, in its thread")
        provisioned = provisioned_for(context)
        rounds = provisioned.rounds
        own = applied_dp(self)
        wanted = provisioned.dp.aggregation()
        if own is not None and own != wanted:
            raise FedattestError(f"fedattest: the app's DP {own} is not the policy's {wanted}: refusing to start the run")
        if num_rounds != rounds:
            log.warning("the app asked for %d rounds; the policy's %d apply", num_rounds, rounds)
        strategy = self
        if not isinstance(strategy, AttestedStrategy):
            strategy = attested_strategy(strategy if applied_dp(strategy) else dp_strategy(strategy, context), context)
            log.info("the app's strategy runs attested%s", "" if applied_dp(self) else ", with the policy's DP added")
        elif applied_dp(strategy) is None:
            strategy.strategy = dp_strategy(strategy.strategy, context)
            log.info("the policy's DP was added to the app's strategy")
        enforced.add(strategy)
        # Each round is reported once complete, with its evaluation metrics (AttestedStrategy.begin), the last one
        # when the rounds are over.
        bound = inspect.signature(original_start).bind(strategy, grid, initial_arrays, rounds, *args, **kwargs)
        bound.arguments["evaluate_fn"] = strategy.begin(bound.arguments.get("evaluate_fn"))
        try:
            result = original_start(*bound.args, **bound.kwargs)
        except BaseException:
            strategy.finish(failing=True)
            raise
        strategy.finish()
        return result

    setattr(runtime, "run_", run_)  # noqa: B010 - Flower's module attribute
    Strategy.start = start  # type: ignore[method-assign]

    def undo() -> None:
        setattr(runtime, "run_", original_run)  # noqa: B010
        Strategy.start = original_start  # type: ignore[method-assign]

    return undo
