"""A member's passport (token + certificate chain) checked offline, against a real coordinator's output:
accepted as issued, and refused at the step each tampering or mismatch breaks."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.participant import activate
from fedattest.pki import identity as ident
from fedattest.pki.passport import PassportError, Step, verify_passport
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform
from tests.conftest import assert_one_line_error
from tests.coordinator_harness import AGG, COLLAB, ENROL, Running, coordinator, policy_text, tee, update_policy


@dataclass
class Issued:
    running: Running
    tmp: Path
    root: x509.Certificate
    jwks: dict[str, object]
    crl: bytes

    def token(self, who: str = "a") -> str:
        return (self.tmp / who / "token.jwt").read_text()

    def chain(self, who: str = "a") -> bytes:
        return (self.tmp / who / "chain.pem").read_bytes()


@pytest.fixture(scope="module")
def issued(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Issued]:
    tmp = tmp_path_factory.mktemp("passport")
    with coordinator(tmp, SimulatedPlatform.create(tmp / "platform")) as running:
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp / "a", enrolment_key=ENROL["hospital-a"])
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp / "agg", enrolment_key=ENROL["aggregator"])
        with running.http() as http:
            jwks = http.get(f"{running.url}/api/v1/jwks").json()
            crl = http.get(f"{running.url}/api/v1/crl").content
        (tmp / "root.pem").write_text(running.root_pem)
        yield Issued(running, tmp, x509.load_pem_x509_certificate(running.root_pem.encode()), jwks, crl)


def _failed(verdict: object) -> dict[str, str]:
    return {c.step.value: c.detail for c in verdict.checks if not c.ok}  # type: ignore[attr-defined]


def test_an_issued_passport_is_accepted_with_every_check(issued: Issued) -> None:
    policy = parse_policy(policy_text())
    for jwks in (issued.jwks, None):  # the coordinator's JWKS, or only the x5c certificate the root issued
        verdict = verify_passport(issued.token(), issued.chain(), issued.root, jwks=jwks, policy=policy, crl_der=issued.crl)
        assert verdict.accepted, verdict.reasons
        assert [c.step for c in verdict.checks] == list(Step)
        assert verdict.member == "hospital-a" and verdict.claims["data_commitment"] == "ab" * 32
    # Without policy or CRL, the steps that need them are not made.
    verdict = verify_passport(issued.token(), issued.chain(), issued.root)
    assert verdict.accepted and Step.POLICY not in {c.step for c in verdict.checks}


def _resigned(token: str, key: object, **change: object) -> str:
    header = jwt.get_unverified_header(token)
    claims = {**jwt.decode(token, options={"verify_signature": False}), **change}
    return jwt.encode(claims, key, algorithm="ES256", headers={k: v for k, v in header.items() if k not in ("alg", "typ")})  # type: ignore[arg-type]


def test_each_tampering_is_refused_at_its_step(issued: Issued) -> None:
    token, chain, root = issued.token(), issued.chain(), issued.root
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    forged_payload = base64.urlsafe_b64encode(json.dumps({**claims, "data_commitment": "ee" * 32}).encode()).rstrip(b"=").decode()
    other_key = ident.new_key()
    other_root = ident.make_root_ca(other_key, "hospitals", datetime.now(UTC))
    member_key = serialization.load_pem_private_key((issued.tmp / "a" / "key.pem").read_bytes(), None)
    member_cert = x509.load_pem_x509_certificates(chain)[0]
    member_x5c = [base64.b64encode(member_cert.public_bytes(serialization.Encoding.DER)).decode()]
    cases: dict[str, tuple[str, bytes, x509.Certificate, str, str]] = {
        "tampered token": (f"{header}.{forged_payload}.{signature}", chain, root, "token-signature", "does not verify"),
        "wrong root": (token, chain, other_root, "chain", "not issued by the pinned root"),
        "another member's chain": (token, issued.chain("agg"), root, "binding", "another certificate's"),
        "alg none": (jwt.encode(claims, None, algorithm="none"), chain, root, "token-key", "not ES256"),
        # A member signs its own token with its certificate as x5c: not the federation's token signer.
        "member as token signer": (jwt.encode(claims, member_key, algorithm="ES256", headers={"x5c": member_x5c}),  # type: ignore[arg-type]
                                   chain, root, "token-key", "not this federation's token signer"),
        "signed by another key": (_resigned(token, other_key), chain, root, "token-signature", "does not verify"),
    }  # fmt: skip
    for what, (tok, ch, rt, step, needle) in cases.items():
        verdict = verify_passport(tok, ch, rt)
        assert not verdict.accepted, what
        assert step in _failed(verdict) and needle in _failed(verdict)[step], (what, _failed(verdict))


def test_expired_other_policy_other_member_and_revoked_are_refused(issued: Issued) -> None:
    later = datetime.now(UTC) + timedelta(days=2)
    expired = verify_passport(issued.token(), issued.chain(), issued.root, at=later)
    assert {"validity", "token-time"} <= set(_failed(expired)), _failed(expired)
    other = parse_policy(policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 0.7"))
    verdict = verify_passport(issued.token(), issued.chain(), issued.root, policy=other)
    assert list(_failed(verdict)) == ["policy"] and "another policy version" in _failed(verdict)["policy"]
    renamed = parse_policy(policy_text().replace('name = "hospital-a"', 'name = "hospital-z"'))
    verdict = verify_passport(issued.token(), issued.chain(), issued.root, policy=renamed)
    assert "role" in _failed(verdict) and "'hospital-a' is not a collaborator" in _failed(verdict)["role"]
    moved = parse_policy(policy_text().replace(f'mrenclave = ["{COLLAB.hex()}"]', f'mrenclave = ["{"cd" * 32}"]'))
    verdict = verify_passport(issued.token(), issued.chain(), issued.root, policy=moved)
    assert "attestation" in _failed(verdict) and "is not accepted for the role" in _failed(verdict)["attestation"]
    # Revoked: the policy in force changes hospital-a's data commitment; the coordinator's new CRL lists it.
    update_policy(issued.running, policy_text().replace(f'data_commitment = "{"ab" * 32}"', f'data_commitment = "{"ef" * 32}"'))
    with issued.running.http() as http:
        crl = http.get(f"{issued.running.url}/api/v1/crl").content
    verdict = verify_passport(issued.token(), issued.chain(), issued.root, crl_der=crl)
    assert list(_failed(verdict)) == ["revocation"] and "privilegeWithdrawn" in _failed(verdict)["revocation"]
    with pytest.raises(PassportError, match="no PEM certificate"):
        verify_passport(issued.token(), b"not a chain", issued.root)


def test_the_cli_says_accepted_or_lists_every_failure(issued: Issued) -> None:
    runner = CliRunner()
    agg = issued.tmp / "agg"
    base = ["passport", "verify", "--token", str(agg / "token.jwt"), "--chain", str(agg / "chain.pem"),
            "--root", str(issued.tmp / "root.pem")]  # fmt: skip
    ok = runner.invoke(app, base)
    assert ok.exit_code == 0 and ok.stdout.startswith("ACCEPTED: aggregator of hospitals"), ok.stdout
    online = runner.invoke(app, [*base, "--jwks", f"{issued.running.url}/api/v1/jwks", "--json"])
    assert online.exit_code == 0 and json.loads(online.stdout)["claims"]["role"] == "aggregator", online.stdout
    later = runner.invoke(app, [*base, "--at", (datetime.now(UTC) + timedelta(days=3)).isoformat()])
    assert later.exit_code == 1 and later.stdout.startswith("REJECTED: aggregator of hospitals: validity: not valid")
    assert "FAIL token-time" in later.stdout
    assert_one_line_error(runner.invoke(app, [*base, "--at", "yesterday"]), 2, "--at 'yesterday': not an ISO 8601 time")
    assert_one_line_error(runner.invoke(app, [*base[:-1], str(issued.tmp / "agg" / "token.jwt")]), 2, "not a PEM certificate")
    missing = [*base[:2], "--token", str(issued.tmp / "nothing.jwt"), *base[4:]]
    assert_one_line_error(runner.invoke(app, missing), 2, "nothing.jwt")


def test_a_jwks_that_is_not_one_is_refused_before_use() -> None:
    from fedattest.pki.passport import load_jwks

    for bad, needle in ((b"[" * 60_000, "nested"), (b"nope", "not usable JSON"), (b"[]", "not {"), (b"x" * 70_000, "too large")):
        with pytest.raises(PassportError, match=needle):
            load_jwks(bad)
    assert load_jwks(b'{"keys": []}') == {"keys": []}
