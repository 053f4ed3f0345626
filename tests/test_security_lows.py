"""Low-severity findings of the security review, each with the test that shows it fixed: refused updates in
the signed round report, a committed file replaced by a FIFO, a start-up policy taking over existing state
with fewer approvals than an update needs, and the public evidence's tokens (not credentials anywhere)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any, cast

from fedattest.flower.rounds import signed_round_report
from fedattest.pki.signing import UpdateSigner
from fedattest.policy.approval import Approval, approval_message, approve, generate_key, public_key_pem
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import KEY, coordinator, policy_text

MALLORY = generate_key()


class _Capture:
    """Stands in for the aggregator's signer: records what it is asked to sign."""

    certificate_pem = b"certificate"

    def __init__(self) -> None:
        self.signed: tuple[Any, ...] = ()

    def sign(self, *args: Any) -> bytes:
        self.signed = args
        return b"signature"


def test_a_round_report_is_signed_over_its_rfc8785_bytes_with_the_run_id_as_a_string() -> None:
    """The exact bytes an implementation in another language must reproduce: RFC 8785, the four keys when nothing
    was refused, and the uint64 run id as a decimal string (a JCS number is a double: 2**63 + 5 would round)."""
    capture = _Capture()
    big = 2**63 + 5
    body = signed_round_report(cast(UpdateSigner, capture), big, 2, ["hospital-b", "hospital-a"], "ef" * 32, [])
    assert set(body["report"]) == {"run_id", "round", "participants", "params_sha256"}
    assert capture.signed == (
        big,
        "round-2",
        b'{"params_sha256":"efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef",'
        b'"participants":["hospital-a","hospital-b"],"round":2,"run_id":"9223372036854775813"}',
    )
    signed_round_report(cast(UpdateSigner, capture), 7, 2, ["hospital-a"], "ef" * 32, [("node é", "not signed")])
    assert capture.signed[2] == (
        b'{"params_sha256":"efefefefefefefefefefefefefefefefefefefefefefefefefefefefefefefef",'
        b'"participants":["hospital-a"],"refused":[{"member":"node \xc3\xa9","reason":"not signed"}],"round":2,"run_id":"7"}'
    )


def test_a_round_with_very_many_refusals_still_fits_the_coordinators_limits() -> None:
    import json

    from fedattest.coordinator.api import MAX_BODY_BYTES, MAX_JSON_DEPTH, MAX_JSON_ITEMS
    from fedattest.shape import json_shape_problem

    participants = [f"hospital-{i}" for i in range(10_000)]
    for refused in ([(f"node {i}", "é" * 600) for i in range(5_000)], [(f"node {i}", "x") for i in range(20_000)]):
        body = signed_round_report(cast(UpdateSigner, _Capture()), 7, 2, participants, "ef" * 32, refused)
        sent = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        assert len(sent) < MAX_BODY_BYTES - 16 * 1024  # room for a certificate
        assert json_shape_problem(sent, MAX_JSON_DEPTH, MAX_JSON_ITEMS) is None
        listed = body["report"]["refused"]
        assert all(len(r["member"]) <= 64 and len(r["reason"]) <= 512 for r in listed)
        assert listed[0] == {"member": "node 0", "reason": refused[0][1][:512]}
        more = len(refused) - len(listed) + 1
        assert listed[-1] == {"member": "(more)", "reason": f"{more} more refused updates: see the ServerApp's log"}


# -- 3. a policy given at start-up needs the approvals an update needs -------------------------------------


def _mallorys_policy() -> str:
    """Policy A (the harness's) with mallory as its sole approver, instead of alice."""
    text = policy_text()
    start_at = text.index("[[approvals.approvers]]")
    return (
        text[:start_at]
        + f'[[approvals.approvers]]\nname = "mallory"\npublic_key = """\n{public_key_pem(MALLORY.public_key())}"""\n'
    )


def _serve(tmp: Path, platform: SimulatedPlatform, policy: Path, *approvals: Path) -> subprocess.CompletedProcess[str]:
    args = [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp / "state"),
            "--platform", str(platform.directory), "--policy", str(policy),
            *[a for path in approvals for a in ("--approval", str(path))], "--listen", "127.0.0.1:0"]  # fmt: skip
    return subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)  # a start that is not refused times out


def test_a_startup_policy_needs_the_approvals_an_update_needs(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running, running.http() as http:  # policy A, approved by alice
        first = http.get(f"{running.url}/api/v1/policy").json()["policy_hash"]
    b = parse_policy(_mallorys_policy())
    assert b.name == "hospitals" and b.policy_hash().hex() != first
    given = tmp_path / "b"
    given.mkdir()
    (given / "policy.toml").write_text(_mallorys_policy())
    (given / "mallory.json").write_text(approve(b, "mallory", MALLORY).to_json())
    by_alice = Approval(b.name, b.policy_hash(), "alice", KEY.sign(approval_message(b.policy_hash())))  # not B's approver
    (given / "alice.json").write_text(by_alice.to_json())

    refused = _serve(tmp_path, platform, given / "policy.toml", given / "mallory.json")
    assert refused.returncode == 1, refused.stderr
    assert refused.stderr.count("\n") == 1 and "not approved by the current policy's approvers" in refused.stderr, refused.stderr

    started = coordinator(given, platform, "--approval", str(given / "mallory.json"), state=tmp_path / "state")
    with started as running, running.http() as http:
        assert http.get(f"{running.url}/api/v1/policy").json()["policy_hash"] == b.policy_hash().hex()
        logged = [e["data"] for e in http.get(f"{running.url}/api/v1/audit").json()["entries"] if e["kind"] == "policy"]
    assert [(d["version"], d["policy_hash"]) for d in logged] == [(1, first), (2, b.policy_hash().hex())]


def test_request_bodies_and_documents_share_one_shape_check() -> None:
    """fedattest.shape: strings (closed or not, a lone trailing backslash included) hide their brackets and
    commas; depth and items are counted outside them."""
    from fedattest.shape import json_shape_problem, nesting_depth

    assert nesting_depth('{"a": "[[[[", "b": [1, [2]]}') == 2
    assert nesting_depth('["unterminated \\') == 1
    assert nesting_depth("[[1]]\n# [[[[[\nx = '[['", toml=True) == 2
    assert json_shape_problem(b'{"a": "[[[[,,,,"}', 1, 1) is None
    assert json_shape_problem(b"[[1]]", 1, 10) == "JSON nested deeper than 1 levels"
    assert json_shape_problem(b"[1,2,3]", 5, 2) == "JSON with more than 2 keys and items"
