"""Member binding, against the real coordinator process: an enclave becomes a member only with that member's
enrolment signature over the enclave's own claims.

Before the enrolment key, any enclave that passed its role's reference values could activate as any member of
that role: it replaced the member's published node key (the SuperLink then evicted the real node) and spent
one of the member's activations.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError
from fedattest.pki import identity as ident
from fedattest.policy.approval import public_key_pem
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, ENROL, Running, coordinator, tee


def _node_keys(running: Running) -> dict[str, str]:
    with running.http() as http:
        return {e["member"]: e["public_key"] for e in http.get(f"{running.url}/api/v1/public-keys/node").json()}


def _count(running: Running, member: str) -> int:
    with running.http() as http:
        return next(m["activations"] for m in http.get(f"{running.url}/api/v1/members").json() if m["name"] == member)


def _impostor_request(running: Running, member: str, sign: Any) -> dict[str, Any]:
    """A genuine enclave of the member's role (its quote passes the reference values) asking to be ``member``
    with a node key of its own; ``sign(claims)`` is whatever signature the impostor can make."""
    key, node = ident.new_key(), ident.new_key()
    with running.http() as http:
        policy_hash = http.get(f"{running.url}/api/v1/policy").json()["policy_hash"]
        nonce = http.post(f"{running.url}/api/v1/nonce").json()["nonce"]
    keys = {"tls": ident.spki_sha256(key.public_key()), "node": ident.spki_sha256(node.public_key())}
    claims = {"member": member, "nonce": nonce, "policy_hash": policy_hash, "keys": keys}
    quote = tee(running, AGG).quote(ident.claims_report_data(claims))
    node_pem = node.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    body = {
        "member": member, "quote": base64.b64encode(quote).decode(), "csr": ident.make_csr(key, member), "claims": claims,
        "public_keys": {"node": node_pem.decode()},
    }  # fmt: skip
    signature = sign(claims)
    return body if signature is None else {**body, "enrolment": signature}


def test_an_enclave_without_the_members_signature_cannot_activate_as_it(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        node = ident.new_key()
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "real",
                 enrolment_key=ENROL["aggregator"], extra_keys={"node": node.public_key()})  # fmt: skip
        published, spent = _node_keys(running), _count(running, "aggregator")
        mallory = ed25519.Ed25519PrivateKey.generate()
        honest_earlier = _impostor_request(running, "aggregator", lambda c: ident.sign_enrolment(ENROL["aggregator"], c))
        attempts = {
            "no signature": lambda c: None,
            "its own key": lambda c: ident.sign_enrolment(mallory, c),
            "another member's key": lambda c: ident.sign_enrolment(ENROL["hospital-a"], c),
            "the member's signature over other claims": lambda c: honest_earlier["enrolment"],
            "a signature that is not one": lambda c: base64.b64encode(bytes(64)).decode(),
        }
        with running.http() as http:
            for what, sign in attempts.items():
                response = http.post(f"{running.url}/api/v1/activate", json=_impostor_request(running, "aggregator", sign))
                assert response.status_code == 403, (what, response.text)
                assert "enrolment signature" in response.json()["error"], (what, response.text)
        # Nothing changed: the member's node key is still the real one, and no activation was spent.
        assert _node_keys(running) == published and _count(running, "aggregator") == spent
        # The participant library says so too, in one line, when given the wrong key.
        with pytest.raises(CoordinatorError, match="HTTP 403: the enrolment signature is not 'aggregator''s"):
            activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "x", enrolment_key=mallory)
        # A second live activation replaces the first only with the member's own signature.
        again = _impostor_request(running, "aggregator", lambda c: ident.sign_enrolment(ENROL["aggregator"], c))
        with running.http() as http:
            assert http.post(f"{running.url}/api/v1/activate", json=again).status_code == 200
        assert _node_keys(running)["aggregator"] == again["public_keys"]["node"] != published["aggregator"]
        assert _count(running, "aggregator") == spent + 1


def test_the_audit_evidence_keeps_each_activations_enrolment_signature(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "id", enrolment_key=ENROL["aggregator"]
        )
        with running.http() as http:
            record = http.get(f"{running.url}/api/v1/audit/evidence").json()["activations"][-1]
        pem = public_key_pem(ENROL["aggregator"].public_key())
        assert ident.enrolment_signed_by(pem, record["verdict"]["claims"], record["verdict"]["enrolment"])
        assert not ident.enrolment_signed_by(public_key_pem(ENROL["hospital-a"].public_key()),
                                             record["verdict"]["claims"], record["verdict"]["enrolment"])  # fmt: skip


def test_an_unsigned_request_is_refused_before_its_quote_is_verified(tmp_path: Path) -> None:
    """An outsider cannot make the coordinator verify quotes: the signature check comes first (the metrics
    count no verification time for a refused, unsigned request)."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running, running.http() as http:
        for _ in range(3):
            body = _impostor_request(running, "aggregator", lambda c: None)
            assert http.post(f"{running.url}/api/v1/activate", json=body).status_code == 403
        metrics = http.get(f"{running.url}/api/v1/metrics").text
    assert 'fedattest_activation_phase_seconds_total{phase="verify"} 0.000000' in metrics
    assert "fedattest_activations_refused_total 3" in metrics


def test_the_cli_asks_for_the_enrolment_key_in_one_line(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedattest.cli import app
    from tests.conftest import assert_one_line_error

    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "root.pem").write_text("not used before the key is read\n")
    (tmp_path / "not-a-key").write_text("hello\n")
    (tmp_path / "ec.key").write_bytes(
        ident.new_key().private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    base = ["participant", "activate", "--coordinator", "https://127.0.0.1:9", "--root-ca", str(tmp_path / "root.pem"),
            "--member", "hospital-a", "--out", str(tmp_path / "id"), "--platform", str(platform.directory)]  # fmt: skip
    runner = CliRunner()
    assert_one_line_error(runner.invoke(app, base), 2, "activating as 'hospital-a' needs 'hospital-a''s enrolment key")
    for key, message in (("not-a-key", "not an unencrypted PEM private key"), ("ec.key", "must be an Ed25519 key"),
                         ("missing.key", "missing.key")):  # fmt: skip
        result = runner.invoke(app, [*base, "--enrolment-key", str(tmp_path / key)])
        assert_one_line_error(result, 2, message)
