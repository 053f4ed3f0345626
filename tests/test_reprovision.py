"""A new policy version reaches running members without a new activation (issue 13, the change cycle): the same
enclave re-attests over fresh claims bound to its identity key, proves it holds the key, and takes a new token
and provisioned parameters; the audit log records it and the offline bundle checks it. Every check the
coordinator makes has its refusal here, against the real coordinator over TLS."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from fedattest.coordinator.audit import import_log, verify_log
from fedattest.coordinator.bundle import verify_bundle
from fedattest.dcap.verify import QuoteVerifier
from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError, reprovision, resume_current
from fedattest.pki import identity as ident
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from tests.coordinator_harness import AGG, COLLAB, ENROL, SIGNER, Running, coordinator, policy_text, tee, update_policy

NEW_APP = "ee" * 32


def with_app(text: str, digest: str = NEW_APP) -> str:
    return text.replace('allowed_hashes = ["', f'allowed_hashes = ["{digest}", "', 1)


def _members(running: Running) -> dict[str, dict[str, Any]]:
    with running.http() as http:
        return {m["name"]: m for m in http.get(f"{running.url}/api/v1/members").json()}


def _entries(running: Running) -> list[Any]:
    with running.http() as http:
        entries, head, key = import_log(http.get(f"{running.url}/api/v1/audit").content)
    verify_log(entries, head, key)
    return entries


def test_a_policy_update_is_taken_without_spending_an_activation(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        enclave = tee(running, AGG)
        agg = tmp_path / "agg"
        first = activate(running.url, running.root_pem, "aggregator", enclave, agg, enrolment_key=ENROL["aggregator"])
        assert resume_current(running.url, running.root_pem, "aggregator", enclave, agg)[1] == "resumed"
        activations = _members(running)["aggregator"]["activations"]

        result = update_policy(running, with_app(policy_text()))
        assert result["revoked"] == []  # adding an app takes nothing away from anyone
        again, how = resume_current(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg")
        assert how == "reprovisioned" and again is not None
        assert again.provisioned["policy_hash"] == result["policy_hash"] != first.provisioned["policy_hash"]
        assert NEW_APP in again.provisioned["allowed_app_hashes"]
        assert again.certificate_chain == first.certificate_chain  # the same identity
        token = jwt.decode(again.token, options={"verify_signature": False})
        assert token["policy_hash"] == result["policy_hash"] and token["attestation"] == "verified"
        assert json.loads((tmp_path / "agg" / "provisioned.json").read_text())["policy_hash"] == result["policy_hash"]
        assert resume_current(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg")[1] == "resumed"
        assert _members(running)["aggregator"]["activations"] == activations  # no activation spent

        kinds = [e.kind for e in _entries(running)]
        assert kinds.count("reprovision") == 1 and kinds.count("activation") == activations
        entry = next(e for e in _entries(running) if e.kind == "reprovision")
        assert entry.data["policy_hash"] == result["policy_hash"] and entry.data["member"] == "aggregator"

        # The offline bundle checks the re-provisioning too.
        bundle = tmp_path / "bundle.tar"
        done = subprocess.run(
            [sys.executable, "-m", "fedattest", "audit", "export", "--coordinator", running.url, "--root-ca",
             str(running.state / "root_ca.pem"), "-o", str(bundle)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        report = verify_bundle(bundle.read_bytes(), verifier_for=lambda _s: QuoteVerifier(platform.root_ca))
        checked = [c for c in report.checks if c.subject.startswith("reprovision")]
        assert report.ok and len(checked) == 1 and "re-attested" in checked[0].detail, report.checks


def _request(running: Running, directory: Path, enclave: Any, **change: Any) -> dict[str, Any]:
    """A re-provisioning request as the sealed identity in ``directory`` would send it, with ``change`` applied
    to it (``claims`` entries replace those of the claims, before the quote and the signature are made)."""
    key = serialization.load_pem_private_key((directory / "key.pem").read_bytes(), None)
    chain = (directory / "chain.pem").read_text()
    leaf = x509.load_pem_x509_certificates(chain.encode())[0]
    with running.http() as http:
        policy_hash = http.get(f"{running.url}/api/v1/policy").json()["policy_hash"]
        nonce = http.post(f"{running.url}/api/v1/nonce").json()["nonce"]
    claims = {"member": "aggregator", "nonce": nonce, "policy_hash": policy_hash, "keys": {"tls": ident.spki_sha256(leaf)}}
    claims |= change.pop("claims", {})
    signer = change.pop("signer", key)
    return {
        "member": claims["member"],
        "quote": base64.b64encode(enclave.quote(ident.claims_report_data(claims))).decode(),
        "certificate": leaf.public_bytes(serialization.Encoding.PEM).decode(),
        "claims": claims,
        "signature": ident.sign_reprovision(signer, claims),
    } | change


def test_every_check_of_a_reprovisioning_refuses(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        enclave = tee(running, AGG)
        activate(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg", enrolment_key=ENROL["aggregator"])
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"])  # fmt: skip
        # The policy also accepts a second aggregator build, so a quote of it passes appraisal: only the
        # "same enclave as activated" check can refuse it.
        other_build = bytes.fromhex("44" * 32)
        builds = f'mrenclave = ["{AGG.hex()}", "{other_build.hex()}"]'
        text = with_app(policy_text()).replace(f'mrenclave = ["{AGG.hex()}"]', builds)
        update_policy(running, text)
        other = platform.tee(WorkloadIdentity(other_build, SIGNER))
        foreign = ident.make_root_ca(ident.new_key(), "hospitals", ident.utcnow())
        a_leaf = x509.load_pem_x509_certificates((tmp_path / "a" / "chain.pem").read_bytes())[0]
        agg = tmp_path / "agg"
        agg_leaf = x509.load_pem_x509_certificates((agg / "chain.pem").read_bytes())[0]

        def pem(cert: x509.Certificate) -> str:
            return cert.public_bytes(serialization.Encoding.PEM).decode()

        cases: dict[str, tuple[dict[str, Any], int, str]] = {
            "a signature by another key": (_request(running, agg, enclave, signer=ident.new_key()), 403,
                                           "not by the certificate's key"),
            "another enclave, also approved": (_request(running, agg, other), 410, "not the enclave that was activated"),
            "claims for an older policy": (_request(running, agg, enclave, claims={"policy_hash": "00" * 32}), 409,
                                           "another policy version"),
            "another member's certificate": (_request(running, agg, enclave) | {"certificate": pem(a_leaf)}, 400,
                                             "not 'aggregator''s"),
            "a certificate from another root": (_request(running, agg, enclave) | {"certificate": pem(foreign)}, 400,
                                                "not issued by this coordinator"),
            "a new key slipped into the claims": (_request(running, agg, enclave, claims={"keys": {"tls": "ab" * 32}}), 400,
                                                  "keys.tls"),
            "another key bound than at activation": (
                _request(running, agg, enclave, claims={"keys": {"tls": ident.spki_sha256(agg_leaf), "node": "ab" * 32}}), 400,
                "other keys than the activation"),
            "no quote for an attested role": (_request(running, agg, enclave) | {"quote": None}, 400, "requires attestation"),
            "the same code launched with another CONFIGID": (
                _request(running, agg, platform.tee(WorkloadIdentity(AGG, SIGNER, config_id=b"\x01" * 64, kss=True))), 410,
                "attributes, config_id differ"),
        }  # fmt: skip
        with running.http() as http:
            for name, (body, status, needle) in cases.items():
                refused = http.post(f"{running.url}/api/v1/reprovision", json=body)
                assert refused.status_code == status and needle in refused.json()["error"], (name, refused.text)
            good = _request(running, agg, enclave)
            assert http.post(f"{running.url}/api/v1/reprovision", json=good).status_code == 200
            replay = http.post(f"{running.url}/api/v1/reprovision", json=good)
            assert replay.status_code == 409 and "replay" in replay.json()["error"]
            again = http.post(f"{running.url}/api/v1/reprovision", json=_request(running, agg, enclave))  # once per version
            assert again.status_code == 409 and "provisioned under the current policy already" in again.json()["error"]
        # A revoked identity is not re-provisioned: the caller is told to activate anew.
        update_policy(running, with_app(policy_text(), "dd" * 32).replace(f'"{COLLAB.hex()}"', f'"{"55" * 32}"'))
        with pytest.raises(CoordinatorError, match="revoked"):
            reprovision(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                        extra_keys=None)  # fmt: skip
        assert _members(running)["aggregator"]["activations"] == 1


def test_launcher_argument_and_port_checks_come_before_activation(tmp_path: Path) -> None:
    """A port in use or a mistyped SuperLink address is refused in one line before the launcher activates, so a
    typo costs no activation."""
    import socket

    from fedattest.policy.approval import private_key_pem

    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "aggregator.key").write_bytes(private_key_pem(ENROL["aggregator"]))
    (tmp_path / "hospital-a.key").write_bytes(private_key_pem(ENROL["hospital-a"]))
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)
    try:
        with coordinator(tmp_path, platform) as running:
            common = ["--coordinator", running.url, "--root-ca", str(running.state / "root_ca.pem"), "--platform",
                      str(platform.directory)]  # fmt: skip

            def launch(*args: str) -> subprocess.CompletedProcess[str]:
                return subprocess.run([sys.executable, "-m", "fedattest", "flower", *args, *common], capture_output=True,
                                      text=True, timeout=120, check=False)  # fmt: skip

            port = busy.getsockname()[1]
            done = launch("superlink", "--member", "aggregator", "--enrolment-key", str(tmp_path / "aggregator.key"),
                          "--state", str(tmp_path / "sl"), "--listen", f"127.0.0.1:{port}")  # fmt: skip
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 1 and lines == [f"error: cannot listen on 127.0.0.1:{port}: Address already in use"], done
            (tmp_path / "data").mkdir()
            for bad, needle in (("no-port", "--superlink must be HOST:PORT"), ("h:99999", "--superlink must be HOST:PORT")):
                done = launch("supernode", "--member", "hospital-a", "--enrolment-key", str(tmp_path / "hospital-a.key"),
                              "--state", str(tmp_path / "sn"), "--superlink", bad, "--data", str(tmp_path / "data"))  # fmt: skip
                assert done.returncode == 2 and needle in done.stderr and len(done.stderr.strip().splitlines()) == 1, done
            assert {m: v["activations"] for m, v in _members(running).items()} == {"aggregator": 0, "hospital-a": 0}
    finally:
        busy.close()


def test_a_later_version_is_judged_against_what_the_identity_was_last_provisioned_with(tmp_path: Path) -> None:
    """v1 allows app A; v2 adds B and the aggregator re-provisions (B is now provisioned to it); v3 withdraws B.
    The aggregator's identity is revoked by v3, because it runs with B: judged against v2, not its activation's v1.
    hospital-a, never re-provisioned, still runs under v1's list, which v3 keeps whole: it stays."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        enclave = tee(running, AGG)
        activate(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg", enrolment_key=ENROL["aggregator"])
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"])  # fmt: skip
        assert update_policy(running, with_app(policy_text()))["revoked"] == []
        assert resume_current(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg")[1] == "reprovisioned"
        v3 = with_app(policy_text(), "cc" * 32)  # A and a new C: B withdrawn
        revoked = update_policy(running, v3)["revoked"]
        assert [r["member"] for r in revoked] == ["aggregator"], revoked
        assert f"app {NEW_APP[:16]}" in revoked[0]["reason"] and "no longer allowed" in revoked[0]["reason"]

        # The running aggregator cannot re-provision (revoked), but its gate stops the withdrawn app at once.
        from fedattest.flower.apps import AppGate
        from fedattest.flower.participant import PolicyRefresher

        provisioned = json.loads((tmp_path / "agg" / "provisioned.json").read_text())
        gate = AppGate(provisioned["allowed_app_hashes"], provisioned["policy_hash"])
        assert NEW_APP in gate.allowed
        PolicyRefresher(running.url, running.root_pem, "aggregator", enclave, tmp_path / "agg", gate).check()
        assert NEW_APP not in gate.allowed and gate.allowed and gate.current_policy_hash != gate.policy_hash
