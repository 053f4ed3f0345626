"""A round report's optional, signed ``metrics`` and ``nodes``: what the aggregator sends (non-numbers dropped at
the sender), what the coordinator records, and a refusal with its reason for each check it makes."""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from fedattest.coordinator.audit import import_log, verify_log
from fedattest.coordinator.round_report import metrics_problem, nodes_problem, report_metrics
from fedattest.errors import FormatError
from fedattest.flower.rounds import report_round, signed_round_report
from fedattest.participant import activate
from fedattest.pki.identity import canonical_claims
from fedattest.pki.signing import UpdateSigner
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, ENROL, Running, coordinator, tee

PARAMS = "cd" * 32


def test_the_sender_keeps_finite_numbers_with_safe_names_and_at_most_32() -> None:
    kept, dropped = report_metrics({
        "train": {"loss": 0.5, "num-examples": 120, "per-class": [0.1, 0.2], "nan": math.nan, "ok": True},
        "evaluate": None,
        "server": {"accuracy": 0.9, "inf": -math.inf, "<img src=x onerror=alert(1)>": 1.0, "big": 10**400},
    })  # fmt: skip
    assert kept == {"server.accuracy": 0.9, "train.loss": 0.5, "train.num-examples": 120.0}
    assert set(dropped) == {"train.per-class", "train.nan", "train.ok", "server.inf", "server.<img src=x onerror=alert(1)>",
                            "server.big"}  # fmt: skip
    many, over = report_metrics({"train": {f"m{i:02d}": float(i) for i in range(40)}})
    assert len(many) == 32 and sorted(over) == [f"train.m{i}" for i in range(32, 40)]
    assert metrics_problem(kept) is None and metrics_problem(many) is None


def test_a_report_without_metrics_or_nodes_is_signed_over_the_keys_it_had_before() -> None:
    class Capture:
        certificate_pem = b"-"

        def sign(self, run_id: int, message_id: str, content: bytes) -> bytes:
            self.content = content
            return b"s"

    capture = Capture()
    body = signed_round_report(cast(UpdateSigner, capture), 7, 1, ["hospital-a"], PARAMS, metrics={}, nodes={})
    assert set(body["report"]) == {"run_id", "round", "participants", "params_sha256"}
    body = signed_round_report(cast(UpdateSigner, capture), 7, 1, ["hospital-a"], PARAMS, metrics={"train.loss": 0.25},
                               nodes={"hospital-a": 2**64 - 1})  # fmt: skip
    assert body["report"]["nodes"] == {"hospital-a": "18446744073709551615"}  # a uint64: a decimal string
    assert b'"metrics":{"train.loss":0.25}' in capture.content
    assert b'"nodes":{"hospital-a":"18446744073709551615"}' in capture.content


@pytest.fixture(scope="module")
def aggregator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, Path]]:
    tmp = tmp_path_factory.mktemp("round-metrics")
    with coordinator(tmp, SimulatedPlatform.create(tmp / "platform")) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp / "agg", enrolment_key=ENROL["aggregator"])
        yield running, tmp / "agg"


def _signer(identity: Path) -> UpdateSigner:
    return UpdateSigner((identity / "key.pem").read_bytes(), (identity / "chain.pem").read_bytes())


def test_metrics_and_node_ids_are_recorded_as_signed(aggregator: tuple[Running, Path]) -> None:
    running, agg = aggregator
    metrics = {"train.loss": 0.75, "server.accuracy": 0.5, "train.num-examples": 300}
    seq = report_round(running.url, running.root_pem, agg, 2**63, 1, ["hospital-a"], PARAMS, metrics=metrics,
                       nodes={"hospital-a": 2**63 + 5})  # fmt: skip
    with running.http() as http:
        entries, head, key = import_log(http.get(f"{running.url}/api/v1/audit").content)
        verify_log(entries, head, key)
        data = next(e for e in entries if e.seq == seq).data
        assert data["metrics"] == metrics and data["nodes"] == {"hospital-a": str(2**63 + 5)}
        # Changed after signing: the signature covers them.
        body = signed_round_report(_signer(agg), 2**63, 2, ["hospital-a"], PARAMS, metrics={"train.loss": 0.5})
        body["report"]["metrics"]["train.loss"] = 0.01
        forged = http.post(f"{running.url}/api/v1/rounds", json=body)
        assert forged.status_code == 403 and "signature does not verify" in forged.json()["error"], forged.text


REFUSALS: dict[str, tuple[dict[str, Any], str]] = {
    "too many metrics": ({"metrics": {f"m{i}": 1.0 for i in range(33)}}, "metrics has 33 names, at most 32"),
    "a name with markup": ({"metrics": {"<img src=x onerror=alert(1)>": 1.0}}, "is not 1-64 characters"),
    "a name too long": ({"metrics": {"m" * 65: 1.0}}, "is not 1-64 characters"),
    "an empty name": ({"metrics": {"": 1.0}}, "is not 1-64 characters"),
    "text": ({"metrics": {"loss": "low"}}, "metric 'loss' is not a number (str)"),
    "a boolean": ({"metrics": {"converged": True}}, "metric 'converged' is not a number (bool)"),
    "a list": ({"metrics": {"per-class": [0.1, 0.2]}}, "is not a number (list)"),
    "an integer beyond 2**53": ({"metrics": {"seen": 2**60}}, "beyond ±2**53"),
    "not an object": ({"metrics": [1.0]}, "metrics"),
    "a node id that is a number": ({"nodes": {"hospital-a": 5}}, "is not a decimal uint64 string"),
    "a negative node id": ({"nodes": {"hospital-a": "-5"}}, "is not a decimal uint64 string"),
    "a node id with a leading zero": ({"nodes": {"hospital-a": "05"}}, "is not a decimal uint64 string"),
    "a node id beyond uint64": ({"nodes": {"hospital-a": str(2**64)}}, "is not a decimal uint64 string"),
    "a node for a member not taking part": ({"nodes": {"aggregator": "7"}}, "'aggregator', which is not a participant"),
    "one node for two members": ({"nodes": {"hospital-a": "7", "hospital-b": "7"}}, "node 7 is given for both"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_the_coordinator_refuses_bad_metrics_and_nodes_with_a_reason(case: str, aggregator: tuple[Running, Path]) -> None:
    running, agg = aggregator
    fields, reason = REFUSALS[case]
    participants = ["hospital-a", "hospital-b"] if "two members" in case else ["hospital-a"]
    # Signed as they are (by the aggregator's attested key): the refusal is the coordinator's check, not a broken
    # signature.
    signer = _signer(agg)
    report = {"run_id": "11", "round": 1, "participants": participants, "params_sha256": PARAMS, **fields}
    try:
        content = canonical_claims(report)
    except FormatError:  # an integer beyond 2**53 cannot be signed at all: the coordinator refuses it first
        content = canonical_claims({**report, "metrics": {}})
    signature = signer.sign(11, "round-1", content)
    signed = {"report": report, "certificate": signer.certificate_pem.decode(), "signature": base64.b64encode(signature).decode()}
    with running.http() as http:
        refused = http.post(f"{running.url}/api/v1/rounds", json=signed)
    assert refused.status_code in (400, 422) and reason in refused.json()["error"], refused.text
    assert len(refused.json()["error"].splitlines()) == 1


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity"])
def test_a_metric_that_is_not_finite_is_refused(value: str, aggregator: tuple[Running, Path]) -> None:
    running, agg = aggregator
    signed = signed_round_report(_signer(agg), 12, 1, ["hospital-a"], PARAMS, metrics={"train.loss": 1.0})
    # JSON has no NaN, but Python's parser (and so the API's) reads these tokens: the coordinator must refuse them.
    body = json.dumps(signed).replace('"train.loss": 1.0', f'"train.loss": {value}')
    assert value in body
    with running.http() as http:
        refused = http.post(f"{running.url}/api/v1/rounds", content=body, headers={"content-type": "application/json"})
    assert refused.status_code == 400 and "metric 'train.loss' is not finite" in refused.json()["error"], refused.text


def test_the_pure_checks_name_the_problem() -> None:
    assert nodes_problem({"hospital-a": "1"}, ["hospital-a"]) is None
    assert "not a participant" in str(nodes_problem({"x": "1"}, []))
    assert "not finite" in str(metrics_problem({"a": math.inf}))
    assert metrics_problem({"train.loss": -(2**53)}) is None
