"""Defences found missing by the pen-test of the attested Flower federation, each against Flower's own pieces:
the public listener's body limit (Flower reads a whole request body before it authenticates the SuperNode),
the refusal of updates that would poison the model (NaN, infinities, overflowing norms), and replies bound
to the run and round they answer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from fedattest.flower import UpdateSigner, UpdateVerifier
from fedattest.flower.superlink import MAX_FLEET_BODY, default_max_fleet_body, public_listener_app
from tests.flower_helpers import configure_round, signed_reply
from tests.test_flower_pieces import ROOT, member_identity

LIMIT = 1 << 20
FLEET = "/v1/fleet/pull-messages"


def _flower_app(seen: list[str]) -> Any:
    """Flower's own SuperLink application, noting every request that reaches it."""
    from flwr.superlink.main import create_app

    flower = create_app()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(str(scope["path"]))
        await flower(scope, receive, send)

    return app


async def _post(app: Any, path: str, content: bytes | AsyncIterator[bytes]) -> httpx.Response:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://superlink") as client:
        return await client.post(path, content=content, headers={"content-type": "application/protobuf"})


def _refused_as_too_large(response: httpx.Response) -> bool:
    return response.status_code == 413 and response.json()["error"].startswith("fedattest: request body larger")


def test_a_declared_oversized_body_is_refused_before_flower_reads_it() -> None:
    seen: list[str] = []
    response = asyncio.run(_post(public_listener_app(_flower_app(seen), LIMIT), FLEET, bytes(LIMIT + 1)))
    assert _refused_as_too_large(response), (response.status_code, response.text[:200])
    assert str(LIMIT) in response.json()["error"] and seen == []


def test_a_chunked_body_is_counted_as_it_arrives_and_refused_past_the_limit() -> None:
    seen: list[str] = []
    sent = [0]
    chunk = 64 * 1024

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: Transfer-Encoding chunked
        for _ in range(4 * LIMIT // chunk):
            sent[0] += chunk
            yield bytes(chunk)

    response = asyncio.run(_post(public_listener_app(_flower_app(seen), LIMIT), FLEET, chunks()))
    assert _refused_as_too_large(response), (response.status_code, response.text[:200])
    assert seen == []
    assert sent[0] <= LIMIT + chunk  # stopped reading at the limit, not at the end of the body


def test_a_stalled_body_gets_408_before_flower_reads_it() -> None:
    from fedattest.flower.superlink import BodyLimit, PathFilter, public_refusal

    seen: list[str] = []

    async def stalls() -> AsyncIterator[bytes]:
        yield b"x" * 100
        await asyncio.sleep(30)  # the sender stops; the limit below answers first
        yield b"never"

    app = PathFilter(BodyLimit(_flower_app(seen), LIMIT, "public", timeout=0.2), public_refusal, "public")
    response = asyncio.run(_post(app, FLEET, stalls()))
    assert response.status_code == 408 and response.json()["error"].startswith("fedattest: request body not received")
    assert seen == []


def test_bodies_within_the_limit_reach_flower_and_other_paths_are_refused_unread() -> None:
    from flwr.proto.fleet_pb2 import PullMessagesRequest

    seen: list[str] = []
    app = public_listener_app(_flower_app(seen), LIMIT)
    response = asyncio.run(_post(app, FLEET, PullMessagesRequest().SerializeToString()))
    assert response.status_code == 401 and seen == [FLEET]  # Flower's node authentication answered
    response = asyncio.run(_post(app, "/v1/control/start-run", bytes(LIMIT + 1)))
    assert response.status_code == 403 and seen == [FLEET]  # the path filter comes first


def test_the_default_limit_fits_the_largest_message_flower_sends(run7: None) -> None:
    from flwr.app import Array, ArrayRecord, Message, RecordDict
    from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE
    from flwr.supercore.inflatable.inflatable_object import get_all_nested_objects

    assert default_max_fleet_body() >= MAX_FLEET_BODY
    model = ArrayRecord({"w": Array(np.random.default_rng(0).standard_normal(3 * FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE // 8))})
    message = Message(RecordDict({"arrays": model}), dst_node_id=1, message_type="train")
    # A 15 MB model: Flower pushes each object (here up to one 5 MiB chunk) in its own request.
    largest = max(len(obj.deflate()) for obj in get_all_nested_objects(message).values())
    assert FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE <= largest < default_max_fleet_body() - (1 << 20)


# -- updates: bound to their run and round, and refused when they would poison the model ----------------------


def _strategy(
    members: dict[str, UpdateSigner],
    reported: list[tuple[int, list[str]]],
    sampled: int,
    sent: list[Any] | None = None,
    outcomes: list[Any] | None = None,
) -> Any:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg, Strategy

    from fedattest.flower.serverapp import AttestedStrategy

    def report(outcome: Any) -> int:
        reported.append((outcome.round, sorted(outcome.participants)))
        if sent is not None:
            sent.append((outcome.refused, outcome.dp))
        if outcomes is not None:
            outcomes.append(outcome)
        return len(reported)

    dp = DifferentialPrivacyServerSideFixedClipping(
        FedAvg(min_available_nodes=len(members), min_train_nodes=len(members)),
        noise_multiplier=0.1, clipping_norm=1.0, num_sampled_clients=sampled,
    )  # fmt: skip
    wrapper = type("AttestedStrategyImpl", (AttestedStrategy, Strategy), {})
    return wrapper(dp, UpdateVerifier(ROOT, "hospitals"), lambda: set(members), report, run_id=7)


POISON: dict[str, Callable[[np.ndarray], None]] = {
    "nan": lambda w: w.__setitem__((0, 0), np.nan),
    "+inf": lambda w: w.__setitem__((0, 0), np.inf),
    "1e300": lambda w: w.__setitem__((0, 0), 1e300),
}


@pytest.mark.parametrize("poison", sorted(POISON))
def test_a_poisoned_update_is_refused_naming_the_member(poison: str, run7: None, caplog: pytest.LogCaptureFixture) -> None:
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg
    from flwr.supercore.differential_privacy import compute_clip_model_update

    names = ("hospital-a", "hospital-b", "hospital-c")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros((8, 4)), np.zeros(4)]
    updates = {name: [np.full((8, 4), 0.01 * (i + 1)), np.full(4, 0.01)] for i, name in enumerate(names)}
    POISON[poison](updates["hospital-a"][0])

    # Without the check (Flower's DP clipping and FedAvg as they are) the update poisons the model.
    plain = DifferentialPrivacyServerSideFixedClipping(FedAvg(), noise_multiplier=0.1, clipping_norm=1.0, num_sampled_clients=3)
    instructions = configure_round(plain, 1, model, 3)
    replies = [signed_reply(m, members[n], updates[n]) for m, n in zip(instructions, names, strict=True)]
    with np.errstate(all="ignore"):
        poisoned, _ = plain.aggregate_train(1, replies)
        clipped = [a.copy() for a in updates["hospital-a"]]
        compute_clip_model_update(clipped, model, 1.0)
    if poison == "1e300":  # the norm overflows: clipping zeroes the member's update
        assert all(np.array_equal(c, m) for c, m in zip(clipped, model, strict=True))
    else:  # min(1, clip / NaN) is 1: the NaN goes through, and the global model is NaN
        assert not np.isfinite(poisoned.to_numpy_ndarrays()[0]).all()

    reported: list[tuple[int, list[str]]] = []
    strategy = _strategy(members, reported, sampled=3)
    instructions = configure_round(strategy, 1, model, 3)
    replies = [signed_reply(m, members[n], updates[n]) for m, n in zip(instructions, names, strict=True)]
    with caplog.at_level("WARNING", logger="fedattest.flower"):
        arrays, _ = strategy.aggregate_train(1, replies)
    assert reported == [(1, ["hospital-b", "hospital-c"])]
    assert all(np.isfinite(a).all() and np.abs(a).any() for a in arrays.to_numpy_ndarrays())
    refusals = [r.getMessage() for r in caplog.records if "refused the update" in r.getMessage()]
    assert len(refusals) == 1 and "hospital-a" in refusals[0], refusals
    assert ("NaN" if poison == "nan" else "infinite" if poison == "+inf" else "norm") in refusals[0]
    assert strategy.refused[1][0][0] == "hospital-a"


def test_malformed_updates_are_refused_rather_than_stopping_the_run(run7: None, caplog: pytest.LogCaptureFixture) -> None:
    names = ("hospital-a", "hospital-b", "hospital-c", "hospital-d", "hospital-e")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros((8, 4), dtype=np.float32)]
    reported: list[tuple[int, list[str]]] = []
    strategy = _strategy(members, reported, sampled=5)
    instructions = configure_round(strategy, 1, model, 5)
    bad = {
        "hospital-e": ([np.full((8, 4), 1j, dtype=np.complex64)], 10.0),  # not real numbers
        "hospital-a": ([np.zeros((4, 8), dtype=np.float32)], 10.0),  # not the model's shape: Flower would raise
        "hospital-b": ([np.full((8, 4), 3e38, dtype=np.float32)], 10.0),  # finite, but the float32 norm overflows
        "hospital-c": ([np.zeros((8, 4), dtype=np.float32)], float("nan")),  # a NaN weight
        "hospital-d": ([np.full((8, 4), 0.1, dtype=np.float32)], 10.0),
    }
    replies = [signed_reply(m, members[n], bad[n][0], bad[n][1]) for m, n in zip(instructions, names, strict=True)]
    with caplog.at_level("WARNING", logger="fedattest.flower"):
        arrays, _ = strategy.aggregate_train(1, replies)
    assert reported == [(1, ["hospital-d"])]
    assert arrays is not None and np.isfinite(arrays.to_numpy_ndarrays()[0]).all()
    reasons = dict(strategy.refused[1])
    assert "global model's shapes" in reasons["hospital-a"]
    assert "norm" in reasons["hospital-b"] and "overflows" in reasons["hospital-b"]
    assert "metric" in reasons["hospital-c"]
    assert "not an array of real numbers" in reasons["hospital-e"]


def test_a_reply_is_bound_to_its_round_and_run(
    run7: None, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flwr.supercore.task_identity import TaskIdentity

    names = ("hospital-a", "hospital-b")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros(4)]
    reported: list[tuple[int, list[str]]] = []
    strategy = _strategy(members, reported, sampled=2)
    instructions = configure_round(strategy, 1, model, 2)
    first = [signed_reply(m, members[n], [np.full(4, 0.1)]) for m, n in zip(instructions, names, strict=True)]
    strategy.aggregate_train(1, first)

    second_round = configure_round(strategy, 2, model, 2)
    b_round2 = signed_reply(second_round[1], members["hospital-b"], [np.full(4, 0.2)])
    replayed = first[0]  # hospital-a's signed reply of round 1, offered again in round 2
    relabelled = signed_reply(configure_round(strategy, 1, model, 2)[0], members["hospital-a"], [np.full(4, 0.3)])
    relabelled.metadata.group_id = "2"  # the round changed after signing
    monkeypatch.setattr(TaskIdentity, "_run_id", 8)  # the same round of another run
    from_run8 = signed_reply(configure_round(strategy, 2, model, 2)[0], members["hospital-a"], [np.full(4, 0.4)])
    monkeypatch.setattr(TaskIdentity, "_run_id", 7)
    configure_round(strategy, 2, model, 2)
    with caplog.at_level("WARNING", logger="fedattest.flower"):
        strategy.aggregate_train(2, [replayed, relabelled, from_run8, b_round2, b_round2])
    assert reported == [(1, ["hospital-a", "hospital-b"]), (2, ["hospital-b"])]
    assert [r.metadata.group_id for r in first] == ["1", "1"]  # the strategy names the round in each instruction
    reasons = [why for _, why in strategy.refused[2]]
    assert "signed for round '1', not round 2" in reasons[0]
    assert "signature does not verify" in reasons[1]
    assert "signed for run 8, not this run (7)" in reasons[2]
    assert "a second update from 'hospital-b' in this round" in reasons[3]
    who = [who for who, _ in strategy.refused[2]]
    assert who[0] == who[2] == "hospital-a" and who[3] == "hospital-b"
    assert who[1].startswith("node ")  # a signer whose signature does not verify is named by its node


def test_a_real_superlink_refuses_oversized_bodies_and_keeps_serving(tmp_path: Path) -> None:
    """`fedattest flower superlink` as a process (activated with a real coordinator), over TLS."""
    from fedattest.policy.approval import private_key_pem
    from fedattest.tee import SimulatedPlatform
    from tests.coordinator_harness import AGG, ENROL, coordinator

    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        (tmp_path / "root.pem").write_text(running.root_pem)
        (tmp_path / "aggregator.key").write_bytes(private_key_pem(ENROL["aggregator"]))
        state, log = tmp_path / "superlink", tmp_path / "superlink.log"
        argv = [sys.executable, "-m", "fedattest", "flower", "superlink", "--coordinator", running.url, "--root-ca",
                str(tmp_path / "root.pem"), "--member", "aggregator", "--enrolment-key", str(tmp_path / "aggregator.key"),
                "--state", str(state), "--platform",
                str(platform.directory), "--mrenclave", AGG.hex(), "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0",
                "--max-fleet-body", str(LIMIT), "--header-timeout", "1"]  # fmt: skip
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120  # only stops a hung start
            while not (state / "superlink.json").exists():
                assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
                time.sleep(0.1)
            fleet = json.loads((state / "superlink.json").read_text())["fleet"]
            tls = ssl.create_default_context(cadata=running.root_pem)
            tls.check_hostname = False  # the certificate names aggregator.example.org; the CA is what matters here

            def post(content: bytes | Iterator[bytes]) -> httpx.Response:
                headers = {"content-type": "application/protobuf"}
                return httpx.post(f"https://{fleet}{FLEET}", content=content, headers=headers, verify=tls, timeout=60)

            assert _refused_as_too_large(post(bytes(LIMIT + 1)))
            assert _refused_as_too_large(post(bytes(64 * 1024) for _ in range(2 * LIMIT // (64 * 1024))))  # chunked
            assert post(bytes(1000)).status_code in {400, 401}  # within the limit: Flower's own answer
            # Slow headers: a connection dripping a header line now and then is closed at the deadline (1 s here),
            # although every byte would reset uvicorn's own keep-alive timer.
            host, port = fleet.rsplit(":", 1)
            raw = socket.create_connection((host, int(port)), timeout=30)  # the timeout only stops a hang
            with tls.wrap_socket(raw, server_hostname=host) as slow:
                slow.sendall(b"POST /v1/fleet/pull-messages HTTP/1.1\r\nHost: superlink\r\n")
                slow.settimeout(0.3)
                closed, until = False, time.monotonic() + 30
                while not closed and time.monotonic() < until:
                    try:
                        closed = slow.recv(1) == b""
                    except TimeoutError:
                        slow.sendall(b"X-Slow: 1\r\n")
                    except (OSError, ssl.SSLError):
                        closed = True
                assert closed, "a dripping connection was never closed"
            assert post(bytes(1000)).status_code in {400, 401}  # and the listener still serves
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    assert "Fleet request bodies up to 1048576 bytes" in log.read_text()
    assert "over the limit of 1048576" in log.read_text()


def test_the_refused_updates_are_sent_with_the_round_report(run7: None) -> None:
    names = ("hospital-a", "hospital-b", "hospital-c")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros((8, 4))]
    updates = {name: [np.full((8, 4), 0.01)] for name in names}
    updates["hospital-a"][0][0, 0] = np.nan
    reported: list[tuple[int, list[str]]] = []
    sent: list[Any] = []
    strategy = _strategy(members, reported, sampled=3, sent=sent)
    instructions = configure_round(strategy, 1, model, 3)
    replies = [signed_reply(m, members[n], updates[n]) for m, n in zip(instructions, names, strict=True)]
    strategy.aggregate_train(1, replies)
    assert reported == [(1, ["hospital-b", "hospital-c"])]
    assert [refused for refused, _dp in sent] == [[("hospital-a", strategy.refused[1][0][1])]]
    assert "NaN" in strategy.refused[1][0][1]


def test_a_round_that_keeps_no_update_stops_the_run_and_reports_carry_the_dp(run7: None) -> None:
    """Every update refused: the run stops with the reason, instead of going on with the same model and ending
    rc=0 with nothing recorded. A kept round's report carries the DP it was aggregated with."""
    from fedattest.errors import FedattestError

    names = ("hospital-a", "hospital-b")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros((8, 4))]
    reported: list[tuple[int, list[str]]] = []
    sent: list[Any] = []
    strategy = _strategy(members, reported, sampled=2, sent=sent)
    instructions = configure_round(strategy, 1, model, 2)
    outsider = member_identity("hospital-z")  # a real certificate, but not an attested member of this round
    replies = [signed_reply(m, outsider, [np.ones((8, 4))]) for m in instructions]
    stopped = r"round 1 kept no attested update \(2 replies; refused: hospital-z: .*: stopping the run"
    with pytest.raises(FedattestError, match=stopped):
        strategy.aggregate_train(1, replies)
    assert reported == []
    with pytest.raises(FedattestError, match=r"round 3 kept no attested update \(0 replies; no collaborator replied"):
        strategy.aggregate_train(3, [])
    instructions = configure_round(strategy, 2, model, 2)
    good = [signed_reply(m, members[n], [np.ones((8, 4))]) for m, n in zip(instructions, names, strict=True)]
    strategy.aggregate_train(2, good)
    assert sent[-1][-1] == {"noise_multiplier": 0.1, "clipping_norm": 1.0, "sampled_clients": 2}


def test_the_serverapp_refuses_a_strategy_it_cannot_hold_to_the_policy(tmp_path: Path) -> None:
    """In the gated ServerApp process: a strategy started outside the ServerApp's own call (another thread), or
    carrying another DP than the policy's, does not start."""
    import json

    from flwr.app import Context, RecordDict
    from flwr.serverapp.strategy import DifferentialPrivacyServerSideFixedClipping, FedAvg

    from fedattest.errors import FedattestError
    from fedattest.flower import serverapp
    from fedattest.flower.context import IDENTITY_KEY

    identity = tmp_path / "identity"
    identity.mkdir()
    (identity / "provisioned.json").write_text(json.dumps({
        "federation": "hospitals", "role": "aggregator", "policy_hash": "00" * 32, "data_commitment": None, "rounds": 3,
        "dp": {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 2, "target_delta": 1e-5},
        "allowed_app_hashes": ["11" * 32], "member_secret": "22" * 32,
    }))  # fmt: skip
    context = Context(run_id=7, node_id=0, node_config={IDENTITY_KEY: str(identity)}, state=RecordDict(), run_config={})
    undo = serverapp.enforce_policy_in_serverapp()
    try:
        with pytest.raises(FedattestError, match="must be started from the ServerApp's main function"):
            FedAvg().start(grid=None, initial_arrays=None, num_rounds=3)  # type: ignore[arg-type]
        token = serverapp._CONTEXT.set(context)
        try:
            weaker = DifferentialPrivacyServerSideFixedClipping(FedAvg(), noise_multiplier=0.1, clipping_norm=1.0,
                                                                num_sampled_clients=2)  # fmt: skip
            with pytest.raises(FedattestError, match="is not the policy's"):
                weaker.start(grid=None, initial_arrays=None, num_rounds=3)  # type: ignore[arg-type]
        finally:
            serverapp._CONTEXT.reset(token)
    finally:
        undo()


def test_under_start_a_round_is_reported_once_complete_with_its_metrics_and_nodes(
    run7: None, caplog: pytest.LogCaptureFixture
) -> None:
    """As Strategy.start drives it (begin, then per round: train, ClientApp evaluation, ServerApp evaluation; finish):
    each round is reported once, after its last evaluation, with the metrics of all three and the node each kept
    update came from; what is not a finite number is dropped (and logged) rather than sent."""
    from flwr.app import MetricRecord

    names = ("hospital-a", "hospital-b")
    members = {name: member_identity(name) for name in names}
    model = [np.zeros(4)]
    reported: list[tuple[int, list[str]]] = []
    outcomes: list[Any] = []
    strategy = _strategy(members, reported, sampled=2, outcomes=outcomes)
    scores = {1: MetricRecord({"accuracy": 0.625}), 2: MetricRecord({"accuracy": float("nan"), "per-class": [0.5, 0.25]})}
    evaluate = strategy.begin(lambda rnd, arrays: scores.get(rnd))
    assert evaluate(0, None) is None and outcomes == []  # the initial evaluation: no round to report

    instructions = configure_round(strategy, 1, model, 2)
    losses = {"hospital-a": 0.5, "hospital-b": 0.25}
    replies = [signed_reply(m, members[n], [np.full(4, 0.1)], metrics={"train_loss": losses[n]})
               for m, n in zip(instructions, names, strict=True)]  # fmt: skip
    arrays, _ = strategy.aggregate_train(1, replies)
    assert outcomes == []  # the round's evaluations are still to come
    strategy.aggregate_evaluate(1, [])
    assert outcomes == []  # ... the ServerApp's too
    evaluate(1, arrays)
    [first] = outcomes
    assert first.round == 1 and first.participants == ["hospital-a", "hospital-b"]
    assert first.metrics == {"train.train_loss": 0.375, "server.accuracy": 0.625}  # FedAvg: weighted by examples
    # The node each member's instruction went to (FedAvg samples the nodes in a random order).
    assert first.nodes == {n: m.metadata.dst_node_id for m, n in zip(instructions, names, strict=True)}
    assert set(first.nodes.values()) == {1, 2}

    instructions = configure_round(strategy, 2, model, 2)
    replies = [signed_reply(m, members[n], [np.full(4, 0.2)]) for m, n in zip(instructions, names, strict=True)]
    arrays, _ = strategy.aggregate_train(2, replies)
    strategy.aggregate_evaluate(2, [])
    with caplog.at_level("WARNING", logger="fedattest.flower"):
        evaluate(2, arrays)
    assert outcomes[-1].round == 2 and outcomes[-1].metrics == {}
    assert "metrics not reported" in caplog.text and "server.accuracy" in caplog.text and "server.per-class" in caplog.text

    # A round whose evaluation never comes (the run stops) is reported when the rounds are over.
    instructions = configure_round(strategy, 3, model, 2)
    strategy.aggregate_train(3, [signed_reply(m, members[n], [np.full(4, 0.3)])
                                 for m, n in zip(instructions, names, strict=True)])  # fmt: skip
    assert [o.round for o in outcomes] == [1, 2]
    strategy.finish(failing=True)
    assert [o.round for o in outcomes] == [1, 2, 3] and reported[-1] == (3, ["hospital-a", "hospital-b"])
    strategy.finish()  # nothing left: nothing reported twice
    assert len(outcomes) == 3
