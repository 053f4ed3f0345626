"""The coordinator over real HTTPS on 127.0.0.1 (a `fedattest coordinator serve` subprocess), with real
quotes from the simulated TEE: verification and pinning, activation, and a refusal for every check."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from fedattest.coordinator.audit import import_log, verify_log
from fedattest.coordinator.core import open_coordinator
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.participant import activate, verify_coordinator
from fedattest.participant.client import CoordinatorError
from fedattest.pki import identity as ident
from fedattest.policy.approval import approve, generate_key, public_key_pem
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from fedattest.tee.sealing import SealingError
from tests.coordinator_harness import (
    AGG,
    COLLAB,
    COMMITMENT,
    COORD,
    ENROL,
    KEY,
    SIGNER,
    Running,
    coordinator,
    policy_text,
    start,
    stop,
    tee,
)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("coordinator")
    with coordinator(tmp, SimulatedPlatform.create(tmp / "platform")) as running:
        yield running


def verifier_for(running: Running) -> tuple[QuoteVerifier, Any]:
    platform = running.platform
    return QuoteVerifier(platform.root_ca), lambda _q: platform.collateral()


# -- trusting the coordinator ----------------------------------------------------------------------------


def test_verify_pins_the_attested_root(server: Running) -> None:
    verifier, collateral_for = verifier_for(server)
    root, verified, verdict = verify_coordinator(
        server.url, parse_policy(policy_text()), verifier=verifier, collateral_for=collateral_for
    )
    assert root == x509.load_pem_x509_certificate(server.root_pem.encode())
    assert verified.mr_enclave == COORD and verified.simulated and verdict.accepted


def test_verify_refuses_another_measurement_or_policy(server: Running) -> None:
    verifier, collateral_for = verifier_for(server)
    policy = parse_policy(policy_text())
    with pytest.raises(CoordinatorError, match="not the approved enclave"):
        verify_coordinator(server.url, policy, verifier=verifier, collateral_for=collateral_for, expect_mrenclave=AGG)
    other = parse_policy(policy_text().replace("max_activations = 50", "max_activations = 4"))
    with pytest.raises(CoordinatorError, match="does not bind this root CA, this policy"):
        verify_coordinator(server.url, other, verifier=verifier, collateral_for=collateral_for)
    with pytest.raises(CoordinatorError, match="does not verify"):
        verify_coordinator(server.url, policy, verifier=QuoteVerifier(), collateral_for=collateral_for)  # Intel root


def test_cli_verify(server: Running, tmp_path: Path) -> None:
    out = tmp_path / "root.pem"
    args = [sys.executable, "-m", "fedattest", "coordinator", "verify", server.url, "--policy", str(server.policy_path),
            "--platform", str(server.platform.directory), "-o", str(out), "--json"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["mrenclave"] == COORD.hex() and out.read_text() == server.root_pem
    bad = subprocess.run([*args[:-1], "--expect-mrenclave", AGG.hex()], capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("error: the coordinator is not the approved enclave")


# -- activation --------------------------------------------------------------------------------------------


def test_activation_issues_identity_token_and_parameters(server: Running, tmp_path: Path) -> None:
    result = activate(
        server.url, server.root_pem, "aggregator", tee(server, AGG), tmp_path / "id", enrolment_key=ENROL["aggregator"]
    )
    for name in ("key.pem", "chain.pem", "token.jwt", "provisioned.json"):
        assert stat.S_IMODE((tmp_path / "id" / name).stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "id").stat().st_mode) == 0o700
    leaf, root = x509.load_pem_x509_certificates(result.certificate_chain.encode())
    leaf.verify_directly_issued_by(root)
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:fedattest:hospitals:member:aggregator"]
    assert sans.get_values_for_type(x509.DNSName) == ["aggregator.example.org", "localhost"]
    with server.http() as http:
        jwks = http.get(f"{server.url}/api/v1/jwks").json()
    key = jwt.PyJWK(jwks["keys"][0])
    claims = jwt.decode(result.token, key, algorithms=["ES256"])  # the offline passport: JWKS alone
    assert (claims["sub"], claims["role"], claims["attestation"], claims["simulated"]) == (
        "aggregator",
        "aggregator",
        "verified",
        True,
    )
    assert claims["mrenclave"] == AGG.hex() and claims["policy_hash"] == parse_policy(policy_text()).policy_hash().hex()
    assert claims["cert_sha256"] == hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest()
    assert result.provisioned["dp"]["noise_multiplier"] == 1.0 and result.provisioned["data_commitment"] is None


def test_collaborator_gets_its_commitment_once(server: Running, tmp_path: Path) -> None:
    result = activate(
        server.url, server.root_pem, "hospital-a", tee(server, COLLAB), tmp_path / "a", enrolment_key=ENROL["hospital-a"]
    )
    assert result.provisioned["data_commitment"] == COMMITMENT and len(result.provisioned["member_secret"]) == 64
    with pytest.raises(CoordinatorError, match="used all 1 activations"):
        activate(
            server.url, server.root_pem, "hospital-a", tee(server, COLLAB), tmp_path / "b", enrolment_key=ENROL["hospital-a"]
        )


# -- refusals: each check, and nothing is stored --------------------------------------------------------------


def build(
    server: Running, member: str, mrenclave: bytes, *, nonce: str | None = None, policy_hash: str | None = None
) -> dict[str, Any]:
    """A well-formed activation request: fresh key, claims, quote over the claims, CSR, and the member's
    enrolment signature over the claims."""
    key = ident.new_key()
    with server.http() as http:
        policy_hash = policy_hash or http.get(f"{server.url}/api/v1/policy").json()["policy_hash"]
        nonce = nonce or http.post(f"{server.url}/api/v1/nonce").json()["nonce"]
    claims = {"member": member, "nonce": nonce, "policy_hash": policy_hash, "keys": {"tls": ident.spki_sha256(key.public_key())}}
    quote = tee(server, mrenclave).quote(ident.claims_report_data(claims))
    body = {"member": member, "quote": base64.b64encode(quote).decode(), "csr": ident.make_csr(key, member), "claims": claims}
    return enrol(body)


def enrol(body: dict[str, Any], key: Ed25519PrivateKey | None = None) -> dict[str, Any]:
    """``body`` signed by its member's enrolment key (or ``key``): what the member adds to its enclave's request."""
    signer = key or ENROL.get(body["claims"]["member"]) or ENROL["aggregator"]
    return {**body, "enrolment": ident.sign_enrolment(signer, body["claims"])}


def post(server: Running, body: dict[str, Any]) -> httpx.Response:
    with server.http() as http:
        return http.post(f"{server.url}/api/v1/activate", json=body)


def activations(server: Running) -> int:
    with server.http() as http:
        return sum(m["activations"] for m in http.get(f"{server.url}/api/v1/members").json())


def _foreign_quote(server: Running, tmp: Path) -> dict[str, Any]:
    body = build(server, "aggregator", AGG)
    other = SimulatedPlatform.create(tmp / "other")
    body["quote"] = base64.b64encode(other.tee(WorkloadIdentity(AGG, SIGNER)).quote(bytes(64))).decode()
    return body


REFUSALS: dict[str, tuple[Any, int, str]] = {
    "unknown-member": (lambda s, t: {**build(s, "aggregator", AGG), "member": "mallory"}, 403, "unknown member 'mallory'"),
    "wrong-measurement": (lambda s, t: build(s, "aggregator", COLLAB), 403, "is not an accepted measurement"),
    "claims-changed-after-quote": (
        lambda s, t: (b := build(s, "aggregator", AGG)) | {"claims": {**b["claims"], "keys": {"tls": "00" * 32}}},
        400, "do not bind the CSR's key",
    ),
    "quote-for-other-claims": (
        lambda s, t: build(s, "aggregator", AGG) | {"quote": build(s, "aggregator", AGG)["quote"]},
        403, "does not bind these claims",
    ),
    "csr-of-another-key": (
        lambda s, t: build(s, "aggregator", AGG) | {"csr": ident.make_csr(ident.new_key(), "aggregator")},
        400, "do not bind the CSR's key",
    ),
    "no-quote": (lambda s, t: {k: v for k, v in build(s, "aggregator", AGG).items() if k != "quote"}, 400, "requires"),
    "quote-not-base64": (lambda s, t: build(s, "aggregator", AGG) | {"quote": "!!!"}, 400, "not base64"),
    "foreign-platform": (_foreign_quote, 403, "quote rejected"),
    "other-policy": (lambda s, t: build(s, "aggregator", AGG, policy_hash="22" * 32), 409, "another policy version"),
    "unknown-nonce": (lambda s, t: build(s, "aggregator", AGG, nonce="11" * 32), 409, "unknown nonce"),
    "wrong-type": (lambda s, t: build(s, "aggregator", AGG) | {"member": 42}, 422, "member"),
    "extra-field": (lambda s, t: build(s, "aggregator", AGG) | {"admin": True}, 422, "admin"),
    "bad-csr": (lambda s, t: build(s, "aggregator", AGG) | {"csr": "-----BEGIN NOTHING-----"}, 400, "csr"),
    # Member binding: only the member's own enrolment key, over these very claims, makes an enclave the member.
    "no-enrolment": (
        lambda s, t: {k: v for k, v in build(s, "aggregator", AGG).items() if k != "enrolment"},
        403, "needs 'aggregator''s enrolment signature",
    ),
    "enrolment-by-another-member": (
        lambda s, t: enrol(build(s, "aggregator", AGG), ENROL["hospital-a"]), 403, "is not 'aggregator''s",
    ),
    "enrolment-for-other-claims": (
        lambda s, t: build(s, "aggregator", AGG) | {"enrolment": build(s, "aggregator", AGG)["enrolment"]},
        403, "is not 'aggregator''s",
    ),
    "enrolment-not-base64": (lambda s, t: build(s, "aggregator", AGG) | {"enrolment": "!!!"}, 403, "is not 'aggregator''s"),
    "enrolment-too-long": (lambda s, t: build(s, "aggregator", AGG) | {"enrolment": "A" * 200}, 422, "enrolment"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_refusals_name_the_reason_and_store_nothing(server: Running, tmp_path: Path, case: str) -> None:
    make, status, needle = REFUSALS[case]
    before = activations(server)
    response = post(server, make(server, tmp_path))
    assert response.status_code == status, response.text
    assert needle in response.json()["error"], response.json()
    assert activations(server) == before


def test_a_nonce_works_once(server: Running) -> None:
    with server.http() as http:
        nonce = http.post(f"{server.url}/api/v1/nonce").json()["nonce"]
    first = post(server, build(server, "aggregator", AGG, nonce=nonce))
    assert first.status_code == 200, first.text
    again = post(server, build(server, "aggregator", AGG, nonce=nonce))
    assert again.status_code == 409 and "used already (replay)" in again.json()["error"]


def test_malformed_and_oversized_bodies(server: Running) -> None:
    with server.http() as http:
        bad_json = http.post(f"{server.url}/api/v1/activate", content=b"{not json", headers={"content-type": "application/json"})
        assert bad_json.status_code == 422 and "error" in bad_json.json()
        huge = http.post(
            f"{server.url}/api/v1/activate", content=b"x" * (300 * 1024), headers={"content-type": "application/json"}
        )
        assert huge.status_code == 413
        assert http.get(f"{server.url}/api/v1/quote", params={"nonce": "zz"}).status_code == 422


def test_status_metrics_openapi_and_audit(server: Running) -> None:
    with server.http() as http:
        status = http.get(f"{server.url}/api/v1/status").json()
        assert status["federation"] == "hospitals" and status["simulated"] is True
        metrics = http.get(f"{server.url}/api/v1/metrics").text
        assert "fedattest_activations_accepted_total" in metrics and "fedattest_quotes_served_total" in metrics
        assert "/api/v1/activate" in http.get(f"{server.url}/api/v1/openapi.json").json()["paths"]
        exported = http.get(f"{server.url}/api/v1/audit").content
        jwk = jwt.PyJWK(http.get(f"{server.url}/api/v1/jwks").json()["keys"][0])
    entries, head, _ = import_log(exported)
    assert verify_log(entries, head, jwk.key) == len(entries)  # with the published key, not the one in the file
    from fedattest.coordinator.audit import public_key_from_pem

    written = public_key_from_pem((server.state / "audit-key.pub.pem").read_bytes())
    assert verify_log(entries, head, written) == len(entries)
    assert entries[0].kind == "policy" and all(e.kind == "activation" for e in entries[1:])


# -- lifecycle ----------------------------------------------------------------------------------------------


def test_restart_unseals_and_another_measurement_cannot(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as first:
        root = first.root_pem
    with coordinator(tmp_path, platform) as second:
        assert second.root_pem == root  # same sealed root CA after a restart
    verifier, collateral_for = verifier_for(first)
    with pytest.raises(SealingError, match="another enclave"):
        open_coordinator(
            state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(AGG, SIGNER)), verifier=verifier,
            collateral_for=collateral_for,
        )  # fmt: skip


def test_unapproved_policy_refuses_to_start(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "policy.toml").write_text(policy_text())
    (tmp_path / "alice.json").write_text(approve(parse_policy(policy_text().replace("1.0", "2.0", 1)), "alice", KEY).to_json())
    proc = subprocess.run(
        [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp_path / "s"),
         "--platform", str(platform.directory),
         "--policy", str(tmp_path / "policy.toml"), "--approval", str(tmp_path / "alice.json"), "--listen", "127.0.0.1:0"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 1 and "is not approved" in proc.stderr and "approved another version" in proc.stderr


def test_sigkill_during_load_keeps_every_issued_activation(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    roomy = policy_text().replace("max_activations = 50", "max_activations = 100000")
    (tmp_path / "policy.toml").write_text(roomy)
    (tmp_path / "alice.json").write_text(approve(parse_policy(roomy), "alice", KEY).to_json())
    running = start(tmp_path, platform)
    issued: list[str] = []
    lock = threading.Lock()

    def load(worker: int) -> None:
        for i in range(100):
            try:
                result = activate(
                    running.url,
                    running.root_pem,
                    "aggregator",
                    tee(running, AGG),
                    tmp_path / f"w{worker}-{i}",
                    enrolment_key=ENROL["aggregator"],
                )
            except FedattestError:
                return  # the coordinator died (or the member ran out of activations): stop this worker
            with lock:
                issued.append(result.certificate_chain)

    workers = [threading.Thread(target=load, args=(w,)) for w in range(4)]
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60  # waits for activations; not a timing assertion
        while len(issued) < 20 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop(running, signal.SIGKILL)  # mid-run: requests are in flight
    for w in workers:
        w.join(timeout=120)
    assert issued, "no activation completed before the kill"
    restarted = start(tmp_path, platform)
    try:
        with restarted.http() as http:
            exported = http.get(f"{restarted.url}/api/v1/audit").content
        entries, head, key = import_log(exported)
        verify_log(entries, head, key)
        fingerprints = {e.data.get("cert_sha256") for e in entries}
        for chain in issued:
            leaf = x509.load_pem_x509_certificates(chain.encode())[0]
            assert hashlib.sha256(leaf.public_bytes(serialization.Encoding.DER)).hexdigest() in fingerprints
    finally:
        stop(restarted)


def test_tls_is_pinned_to_the_root(server: Running, tmp_path: Path) -> None:
    other_root = SimulatedPlatform.create(tmp_path / "p").root_ca.public_bytes(serialization.Encoding.PEM).decode()
    with pytest.raises(CoordinatorError):
        activate(server.url, other_root, "aggregator", tee(server, AGG), tmp_path / "x", enrolment_key=ENROL["aggregator"])
    assert os.path.exists(server.state / "state.sealed")


def test_policy_update_needs_the_approvers_and_is_logged(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    running = start(tmp_path, platform)
    try:
        updated = policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 1.5")
        new = parse_policy(updated)
        mallory = generate_key()
        takeover = updated.replace(public_key_pem(KEY.public_key()).strip(), public_key_pem(mallory.public_key()).strip())
        with running.http() as http:
            url = f"{running.url}/api/v1/policy"
            # Not approved at all, then approved only by an approver the current policy does not know.
            refused = http.post(url, json={"policy": updated, "approvals": []})
            assert refused.status_code == 403 and "current policy's approvers" in refused.json()["error"]
            hijack = http.post(
                url, json={"policy": takeover, "approvals": [approve(parse_policy(takeover), "alice", mallory).to_json()]}
            )
            assert hijack.status_code == 403
            stale = http.post(
                url, json={"policy": policy_text(), "approvals": [approve(parse_policy(policy_text()), "alice", KEY).to_json()]}
            )
            assert stale.status_code == 409
            ok = http.post(url, json={"policy": updated, "approvals": [approve(new, "alice", KEY).to_json()]})
            assert ok.status_code == 200, ok.text
            assert ok.json() == {"version": 2, "policy_hash": new.policy_hash().hex(), "revoked": []}
            assert http.get(url).json()["policy_hash"] == new.policy_hash().hex()
            entries, head, key = import_log(http.get(f"{running.url}/api/v1/audit").content)
        verify_log(entries, head, key)
        assert [e.data["version"] for e in entries if e.kind == "policy"] == [1, 2]
        # Activation now needs claims for the new version; old-version claims are refused.
        result = activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "id", enrolment_key=ENROL["aggregator"]
        )
        assert result.provisioned["dp"]["noise_multiplier"] == 1.5
    finally:
        stop(running)


def test_a_restarted_enclave_resumes_its_sealed_identity(server: Running, tmp_path: Path) -> None:
    from fedattest.participant import resume
    from fedattest.tee.sealing import SealingError

    out = tmp_path / "id"
    first = activate(server.url, server.root_pem, "aggregator", tee(server, AGG), out, enrolment_key=ENROL["aggregator"])
    again = resume(out, tee(server, AGG))  # same enclave, later: no new activation needed
    assert again is not None and again.certificate_chain == first.certificate_chain and again.token == first.token
    assert resume(out, tee(server, AGG), now=datetime.now(UTC) + timedelta(days=2)) is None  # expired: activate again
    with pytest.raises(SealingError, match="another enclave"):
        resume(out, tee(server, COLLAB))  # another measurement cannot unseal it
    assert resume(tmp_path / "empty", tee(server, AGG)) is None


def test_gramine_sealing_key_comes_from_dev_attestation(tmp_path: Path) -> None:
    from fedattest.tee import GramineTEE
    from fedattest.tee.sealing import seal, unseal

    (tmp_path / "attestation_type").write_text("dcap")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "_sgx_mrenclave").write_bytes(b"\x01" * 16)
    key = GramineTEE(tmp_path).sealing_key()
    assert unseal(key, b"p", seal(key, b"p", b"state")) == b"state"
    (tmp_path / "keys" / "_sgx_mrenclave").write_bytes(b"\x02" * 16)  # another enclave's key
    with pytest.raises(SealingError, match="another enclave"):
        unseal(GramineTEE(tmp_path).sealing_key(), b"p", seal(key, b"p", b"state"))
    (tmp_path / "keys" / "_sgx_mrenclave").unlink()
    with pytest.raises(SealingError, match="cannot read Gramine's sealing key"):
        GramineTEE(tmp_path).sealing_key()


def test_evidence_sources_are_exclusive_and_a_local_collateral_file_works(tmp_path: Path) -> None:
    from fedattest.cli._common import CliUsageError
    from fedattest.cli.coordinator import evidence_source
    from tests.conftest import DCAP, dcap_expected

    with pytest.raises(CliUsageError, match="give one of"):
        evidence_source(None, None)
    with pytest.raises(CliUsageError, match="give one of"):
        evidence_source(tmp_path, "https://pccs.example")
    verifier, collateral_for = evidence_source(None, None, DCAP / "phala_tdx_v4.collateral.json")
    quote = (DCAP / "phala_tdx_v4.quote").read_bytes()
    verified = verifier.verify(quote, collateral_for(None), at=dcap_expected()["phala_tdx_v4"]["at"])  # type: ignore[arg-type]
    assert not verified.simulated


def test_the_aggregator_reports_rounds_into_the_audit_log(server: Running, tmp_path: Path) -> None:
    from fedattest.flower.rounds import report_round, signed_round_report
    from fedattest.pki.signing import UpdateSigner

    agg = tmp_path / "agg"
    activate(server.url, server.root_pem, "aggregator", tee(server, AGG), agg, enrolment_key=ENROL["aggregator"])
    params = hashlib.sha256(b"aggregated weights").hexdigest()
    seq = report_round(server.url, server.root_pem, agg, 42, 1, ["hospital-a"], params)
    with server.http() as http:
        entries, head, key = import_log(http.get(f"{server.url}/api/v1/audit").content)
        verify_log(entries, head, key)
        entry = next(e for e in entries if e.seq == seq)
        cert_sha256 = hashlib.sha256(
            x509.load_pem_x509_certificate((agg / "chain.pem").read_bytes()).public_bytes(serialization.Encoding.DER)
        ).hexdigest()
        signature = entry.data["signature"]
        assert entry.kind == "round" and entry.data == {
            "reported_by": "aggregator", "run_id": "42", "round": 1, "participants": ["hospital-a"], "params_sha256": params,
            "certificate_sha256": cert_sha256, "signature": signature,  # so the log alone proves who reported it
        }  # fmt: skip
        assert base64.b64decode(signature)
        signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
        body = signed_round_report(signer, 42, 2, ["hospital-a"], params)
        body["report"]["params_sha256"] = "00" * 32  # changed after signing
        refused = http.post(f"{server.url}/api/v1/rounds", json=body)
        assert refused.status_code == 403 and "signature does not verify" in refused.json()["error"]
        unknown = http.post(f"{server.url}/api/v1/rounds", json=signed_round_report(signer, 42, 3, ["mallory"], params))
        assert unknown.status_code == 400 and "not in the policy" in unknown.json()["error"]
        # Flower run ids are uint64: the largest one goes through whole (a JSON number would round it to a double).
        top = report_round(server.url, server.root_pem, agg, 2**64 - 1, 1, ["hospital-a"], params)
        entries, head, key = import_log(http.get(f"{server.url}/api/v1/audit").content)
        verify_log(entries, head, key)
        assert next(e for e in entries if e.seq == top).data["run_id"] == "18446744073709551615"
        as_number = signed_round_report(signer, 42, 4, ["hospital-a"], params)
        as_number["report"]["run_id"] = 42  # the pre-RFC 8785 form
        too_big = signed_round_report(signer, 42, 5, ["hospital-a"], params)
        too_big["report"]["run_id"] = str(2**64)
        for body in (as_number, too_big):
            bad = http.post(f"{server.url}/api/v1/rounds", json=body)
            assert bad.status_code in (400, 422) and "run_id" in bad.text, bad.text
        # The DP a round was aggregated with is signed in its report, and must be the policy's.
        policy_dp = {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 1}
        rounds = f"{server.url}/api/v1/rounds"
        no_noise = policy_dp | {"noise_multiplier": 0.0}
        weaker = http.post(rounds, json=signed_round_report(signer, 43, 1, ["hospital-a"], params, dp=no_noise))
        assert weaker.status_code == 403 and "aggregated with DP" in weaker.json()["error"], weaker.text
        same = http.post(rounds, json=signed_round_report(signer, 43, 1, ["hospital-a"], params, dp=policy_dp))
        assert same.status_code == 200, same.text
        entries, _, _ = import_log(http.get(f"{server.url}/api/v1/audit").content)
        assert entries[-1].data["dp"] == policy_dp
        beyond = http.post(rounds, json=signed_round_report(signer, 43, 4, ["hospital-a"], params, dp=policy_dp))
        assert beyond.status_code == 403 and "beyond the policy's 3 rounds" in beyond.json()["error"], beyond.text
    with pytest.raises(FedattestError, match=r"not issued by the coordinator"):
        other_root_key = ident.new_key()
        other_root = ident.make_root_ca(other_root_key, "hospitals", ident.utcnow())
        forged_cert = ident.issue_leaf(
            ca_key=other_root_key, ca=other_root, public_key=ident.new_key().public_key(), common_name="aggregator",
            uris=["urn:fedattest:hospitals:member:aggregator"], dns_names=[], ips=[], now=ident.utcnow(),
            lifetime=timedelta(days=1),
        )  # fmt: skip
        (tmp_path / "forged").mkdir()
        (tmp_path / "forged" / "chain.pem").write_bytes(forged_cert.public_bytes(serialization.Encoding.PEM))
        (tmp_path / "forged" / "key.pem").write_bytes((agg / "key.pem").read_bytes())
        report_round(server.url, server.root_pem, tmp_path / "forged", 42, 4, [], params)


def test_only_the_aggregator_may_report_rounds(tmp_path: Path) -> None:
    from fedattest.coordinator.activation import ActivationError
    from fedattest.flower.rounds import signed_round_report
    from fedattest.pki.signing import UpdateSigner

    platform = SimulatedPlatform.create(tmp_path / "platform")
    coordinator = open_coordinator(
        state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), policy_text=policy_text(),
        approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()],
    )  # fmt: skip
    try:
        key = ident.new_key()
        cert = ident.issue_leaf(
            ca_key=coordinator.state.root_key, ca=coordinator.state.root_ca, public_key=key.public_key(),
            common_name="hospital-a", uris=["urn:fedattest:hospitals:member:hospital-a"], dns_names=[], ips=[],
            now=ident.utcnow(), lifetime=timedelta(days=1),
        )  # fmt: skip
        fmt = serialization.PrivateFormat.PKCS8
        signer = UpdateSigner(
            key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()),
            cert.public_bytes(serialization.Encoding.PEM),
        )
        body = signed_round_report(signer, 1, 1, ["hospital-a"], "ab" * 32)
        with pytest.raises(ActivationError, match="only the aggregator reports rounds"):
            coordinator.report_round(body["certificate"], body["signature"], body["report"])
    finally:
        coordinator.close()


def test_attested_node_keys_are_published_for_the_aggregator(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    running = start(tmp_path, platform)
    try:
        node_key = ident.new_key()
        activate(
            running.url,
            running.root_pem,
            "hospital-a",
            tee(running, COLLAB),
            tmp_path / "a",
            enrolment_key=ENROL["hospital-a"],
            extra_keys={"node": node_key.public_key()},
        )
        with running.http() as http:
            published = http.get(f"{running.url}/api/v1/public-keys/node", params={"role": "collaborator"}).json()
            assert [p["member"] for p in published] == ["hospital-a"]
            pem = (
                node_key.public_key()
                .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
                .decode()
            )
            assert published[0]["public_key"] == pem and published[0]["expires"] > time.time()
            assert http.get(f"{running.url}/api/v1/public-keys/other").json() == []
            # A key sent but not bound in the quoted claims, and a key that is not P-256, are refused.
            body = build(running, "aggregator", AGG)
            body["public_keys"] = {"node": pem}
            refused = http.post(f"{running.url}/api/v1/activate", json=body)
            assert refused.status_code == 400 and "do not bind the public key 'node'" in refused.json()["error"]
            body = build(running, "aggregator", AGG)
            body["public_keys"] = {"tls": pem}
            assert http.post(f"{running.url}/api/v1/activate", json=body).status_code == 400
    finally:
        stop(running)


def test_the_nonce_is_consumed_before_anything_costly(server: Running, tmp_path: Path) -> None:
    """A nonce works for one attempt, whatever becomes of it: a request refused for its quote has spent it, and
    a replayed or unknown nonce is refused before any signature or quote is verified."""
    with server.http() as http:
        verify_seconds = _phase_seconds(http.get(f"{server.url}/api/v1/metrics").text, "verify")
    foreign = _foreign_quote(server, tmp_path)
    assert post(server, foreign).status_code == 403  # refused at the quote: the nonce is spent all the same
    fixed = enrol({**foreign, "quote": build(server, "aggregator", AGG, nonce=foreign["claims"]["nonce"])["quote"]})
    again = post(server, fixed)
    assert again.status_code == 409 and "nonce used already" in again.json()["error"]
    with server.http() as http:
        spent = _phase_seconds(http.get(f"{server.url}/api/v1/metrics").text, "verify") - verify_seconds
    for case in ("replayed", "unknown"):
        body = fixed if case == "replayed" else build(server, "aggregator", AGG, nonce="11" * 32)
        assert post(server, body).status_code == 409
    with server.http() as http:  # no verification time was spent on them: only the foreign quote's
        assert _phase_seconds(http.get(f"{server.url}/api/v1/metrics").text, "verify") - verify_seconds == spent


def _phase_seconds(metrics: str, phase: str) -> float:
    line = next(x for x in metrics.splitlines() if x.startswith(f'fedattest_activation_phase_seconds_total{{phase="{phase}"}}'))
    return float(line.split()[-1])
