"""The activation request's checks that need neither state nor I/O, on their own (no coordinator, no store):
each refusal names its check, in order, with the HTTP status the API answers with."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from fedattest.coordinator.activation import ActivationError, check_request, claims_nonce
from fedattest.pki import identity as ident
from fedattest.policy.federation import parse_policy
from tests.coordinator_harness import ENROL, policy_text

POLICY = parse_policy(policy_text())


def _request(member: str = "hospital-a") -> dict[str, Any]:
    key, node = ident.new_key(), ident.new_key()
    node_pem = node.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keys = {"tls": ident.spki_sha256(key.public_key()), "node": ident.spki_sha256(node.public_key())}
    claims = {"member": member, "nonce": "00" * 32, "policy_hash": POLICY.policy_hash().hex(), "keys": keys}
    return {"member_name": member, "csr_pem": ident.make_csr(key, member), "claims": claims,
            "public_keys": {"node": node_pem.decode()}, "enrolment": ident.sign_enrolment(ENROL[member], claims)}  # fmt: skip


def test_a_good_request_passes_every_check() -> None:
    checked = check_request(POLICY, **_request())
    assert checked.member.name == "hospital-a" and set(checked.public_keys) == {"node"}


def _resigned(request: dict[str, Any], **claims: Any) -> dict[str, Any]:
    """``request`` with its claims changed, and signed again by the member (so that only the change is wrong)."""
    changed = {**request["claims"], **claims}
    return {**request, "claims": changed, "enrolment": ident.sign_enrolment(ENROL["hospital-a"], changed)}


CASES: dict[str, tuple[Any, int, str]] = {
    "unknown member": (lambda r: {**r, "member_name": "mallory"}, 403, "unknown member 'mallory'"),
    "bad CSR": (lambda r: {**r, "csr_pem": "-----BEGIN NOTHING-----"}, 400, "not a PEM certificate signing request"),
    "claims of another shape": (lambda r: {**r, "claims": {**r["claims"], "extra": 1}}, 400, "claims must have exactly"),
    "claims for another member": (lambda r: _resigned(r, member="aggregator"), 400, "claims name another member"),
    "another policy version": (lambda r: _resigned(r, policy_hash="22" * 32), 409, "another policy version"),
    "an extra key not bound": (lambda r: {**r, "public_keys": {"node": ""}}, 400, "not a PEM public key"),
    "the CSR's key not bound": (lambda r: _resigned(r, keys={**r["claims"]["keys"], "tls": "00" * 32}), 400,
                                "do not bind the CSR's key"),
    "no enrolment": (lambda r: {**r, "enrolment": None}, 403, "needs 'hospital-a''s enrolment signature"),
    "a signature by another member": (lambda r: {**r, "enrolment": ident.sign_enrolment(ENROL["aggregator"], r["claims"])},
                                      403, "is not 'hospital-a''s"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(CASES))
def test_each_check_refuses_with_its_reason_and_status(case: str) -> None:
    change, status, needle = CASES[case]
    with pytest.raises(ActivationError) as refused:
        check_request(POLICY, **change(_request()))
    assert refused.value.status == status and needle in str(refused.value), str(refused.value)


def test_the_nonce_is_read_only_from_well_shaped_claims() -> None:
    assert claims_nonce(_request()["claims"]) == "00" * 32
    with pytest.raises(ActivationError, match="claims must have exactly"):
        claims_nonce({"nonce": "00" * 32})


def test_claims_are_hashed_and_signed_over_their_rfc8785_bytes_and_old_records_still_check() -> None:
    """What a member's enclave quotes and its enrolment key signs, recomputed from the documented formula; version
    1 (before RFC 8785) only for re-checking records in old logs, and the two never verify for each other."""
    import base64
    import hashlib
    import json

    import rfc8785
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    claims = {"member": "hôpital-a", "nonce": "ab" * 32, "policy_hash": "cd" * 32, "keys": {"tls": "ef" * 32}}
    v2 = rfc8785.dumps(claims)
    assert ident.claims_report_data(claims) == hashlib.sha256(b"fedattest-claims-v2\n" + v2).digest() + bytes(32)
    v1 = json.dumps(claims, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()
    assert ident.claims_report_data(claims, 1) == hashlib.sha256(b"fedattest-claims-v1\n" + v1).digest() + bytes(32)
    key = Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    signature = ident.sign_enrolment(key, claims)
    assert key.public_key().verify(base64.b64decode(signature), b"fedattest-enrolment-v2\n" + rfc8785.dumps(claims)) is None
    assert ident.enrolment_signed_by(public, claims, signature)
    assert not ident.enrolment_signed_by(public, claims, signature, version=1)
    old = base64.b64encode(key.sign(b"fedattest-enrolment-v1\n" + v1)).decode()
    assert ident.enrolment_signed_by(public, claims, old, version=1) and not ident.enrolment_signed_by(public, claims, old)
    assert not ident.enrolment_signed_by(public, claims, signature, version=7)  # an unknown version checks nothing
