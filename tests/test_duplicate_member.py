"""A second launcher of a member that is already running is refused at activation, naming the running one, and
spends nothing (issue 13, item 2: a second `supernode --member site-1` used to evict the first, which then died
with Flower's exit 305). Running = heartbeats (``POST /api/v1/alive``, signed with the identity's key); every
check of a heartbeat has its refusal here, against the real coordinator over TLS. How long an identity counts as
running is decided on an injected monotonic clock, so no test sleeps through the window."""

from __future__ import annotations

import base64
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.coordinator.activation import ActivationError
from fedattest.coordinator.core import ALIVE_SKEW_SECONDS, Coordinator, open_coordinator
from fedattest.dcap.verify import QuoteVerifier
from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError, heartbeat, sealed_identity
from fedattest.pki import identity as ident
from fedattest.policy.approval import approve
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from tests.coordinator_harness import (
    AGG,
    COLLAB,
    COORD,
    ENROL,
    KEY,
    SIGNER,
    Running,
    coordinator,
    policy_text,
    tee,
    update_policy,
)


def _activations(running: Running, member: str) -> int:
    with running.http() as http:
        members = {m["name"]: m for m in http.get(f"{running.url}/api/v1/members").json()}
    count: int = members[member]["activations"]
    return count


def _metrics(running: Running) -> str:
    with running.http() as http:
        return http.get(f"{running.url}/api/v1/metrics").text


def _serial(out: Path) -> str:
    cert = x509.load_pem_x509_certificates((out / "chain.pem").read_bytes())[0]
    return format(cert.serial_number, "x")


def _beat(running: Running, out: Path, member: str, enclave: Any) -> dict[str, Any]:
    with running.http() as http:
        return heartbeat(http, running.url, member, *sealed_identity(out, enclave))


def test_a_second_activation_of_a_running_member_is_refused_naming_the_running_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        enclave = tee(running, AGG)
        first = tmp_path / "first"
        activate(running.url, running.root_pem, "aggregator", enclave, first, enrolment_key=ENROL["aggregator"])
        # Activated but never heartbeating (``participant activate`` alone): nothing runs, nothing to protect.
        activate(running.url, running.root_pem, "aggregator", enclave, tmp_path / "unused", enrolment_key=ENROL["aggregator"])

        answer = _beat(running, first, "aggregator", enclave)  # the first one runs: it says so
        with running.http() as http:
            policy = http.get(f"{running.url}/api/v1/policy").json()
        assert answer["policy_hash"] == policy["policy_hash"] and answer["policy"] == policy["policy"]  # one request
        spent = _activations(running, "aggregator")

        with pytest.raises(CoordinatorError) as refused:
            activate(running.url, running.root_pem, "aggregator", enclave, tmp_path / "second", enrolment_key=ENROL["aggregator"])
        message = str(refused.value)
        assert refused.value.status == 409 and len(message.splitlines()) == 1
        assert "member 'aggregator' is already running" in message and f"identity {_serial(first)[:16]}" in message
        assert "last heard from" in message and "stop it first" in message
        assert _activations(running, "aggregator") == spent  # the refused attempt spent nothing
        assert not (tmp_path / "second" / "chain.pem").exists()

        # A launcher's activation counts as running at once (live): a second one started with it is refused too,
        # before the activation limit (hospital-a has one) is even looked at.
        collab = tee(running, COLLAB)
        activate(running.url, running.root_pem, "hospital-a", collab, tmp_path / "a1", enrolment_key=ENROL["hospital-a"],
                 live=True)  # fmt: skip
        with pytest.raises(CoordinatorError, match=f"'hospital-a' is already running: identity {_serial(tmp_path / 'a1')[:16]}"):
            activate(running.url, running.root_pem, "hospital-a", collab, tmp_path / "a2", enrolment_key=ENROL["hospital-a"])

        # A revoked identity is not running as the member, whatever it says: the member activates anew.
        revoked = update_policy(running, policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 1.5"))["revoked"]
        assert "aggregator" in [r["member"] for r in revoked]
        with pytest.raises(CoordinatorError, match="revoked") as gone:
            _beat(running, first, "aggregator", enclave)
        assert gone.value.status == 410
        activate(running.url, running.root_pem, "aggregator", enclave, tmp_path / "third", enrolment_key=ENROL["aggregator"])
        assert _activations(running, "aggregator") == spent + 1

        # The launchers' refresher on the revoked identity: the refusal logged once, the policy read all the same.
        from fedattest.flower.apps import AppGate
        from fedattest.flower.participant import PolicyRefresher

        gate = AppGate(["aa" * 32], answer["policy_hash"])
        refresher = PolicyRefresher(running.url, running.root_pem, "aggregator", enclave, first, gate, every=0)
        with caplog.at_level("WARNING", logger="fedattest"):
            refresher.check()
            refresher.check()
        refusals = [r.getMessage() for r in caplog.records if "no heartbeat accepted" in r.getMessage()]
        assert len(refusals) == 1 and "HTTP 410" in refusals[0] and "revoked" in refusals[0], refusals
        assert gate.current_policy_hash is not None and gate.current_policy_hash != answer["policy_hash"]

    lines = [ln for ln in running.log.read_text().splitlines() if ln.startswith("fedattest coordinator: event=")]
    assert any("event=activation outcome=refused member=aggregator status=409" in ln and "already running" in ln for ln in lines)
    assert any("event=alive outcome=running member=aggregator" in ln for ln in lines)
    assert sum("event=alive outcome=refused member=aggregator" in ln for ln in lines) == 1  # not one per heartbeat


def test_every_check_of_a_heartbeat_refuses(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running, running.http() as http:
        enclave = tee(running, AGG)
        agg = tmp_path / "agg"
        activate(running.url, running.root_pem, "aggregator", enclave, agg, enrolment_key=ENROL["aggregator"])
        key, cert_pem = sealed_identity(agg, enclave)
        serial = _serial(agg)
        other_serial = serial[:-1] + ("1" if serial[-1] == "0" else "0")

        def send(claims: dict[str, Any], *, certificate: str = cert_pem, signer: Any = key, **extra: Any) -> httpx.Response:
            body = {"certificate": certificate, "claims": claims, "signature": ident.sign_alive(signer, claims), **extra}
            return http.post(f"{running.url}/api/v1/alive", json=body)

        def claims(**changed: Any) -> dict[str, Any]:
            return {"member": "aggregator", "serial": serial, "time": int(time.time()), **changed}

        assert send(claims()).status_code == 200  # the genuine one, beside its refusals
        platform_root = running.platform.root_ca.public_bytes(serialization.Encoding.PEM).decode()
        cases: list[tuple[httpx.Response, int, str]] = [
            (send(claims(serial=other_serial)), 400, "another certificate (serial)"),  # a serial it is not
            (send(claims(member="hospital-a")), 400, "the certificate is not 'hospital-a''s"),  # another member's cert
            (send(claims(member="mallory")), 403, "unknown member 'mallory'"),
            (send(claims(), signer=ident.new_key()), 403, "not by the certificate's key"),  # another key signed it
            (send(claims(time=int(time.time()) - 10 * int(ALIVE_SKEW_SECONDS))), 400, "behind the coordinator's clock"),
            (send(claims(time=int(time.time()) + 10 * int(ALIVE_SKEW_SECONDS))), 400, "ahead of the coordinator's clock"),
            (send(claims(), certificate=platform_root), 400, "not issued by this coordinator"),  # another CA's
            (send(claims(), certificate="not a certificate"), 400, "not issued by this coordinator"),
            # Malformed bodies: refused by shape before any check.
            (http.post(f"{running.url}/api/v1/alive", json={"claims": claims(), "certificate": cert_pem}), 422, "signature"),
            (send(claims(), extra_field=1), 422, "extra_field"),
            (send(claims(serial="XYZ")), 422, "claims.serial"),
            (send({**claims(), "nonce": "00"}), 422, "claims.nonce"),
            (send(claims(time="now")), 422, "claims.time"),
        ]
        for response, status, needle in cases:
            assert response.status_code == status and needle in response.json()["error"], (status, needle, response.text)
        # A re-provisioning signature is no heartbeat: the labels differ.
        reprovision_signed = {"certificate": cert_pem, "claims": claims(), "signature": ident.sign_reprovision(key, claims())}
        assert http.post(f"{running.url}/api/v1/alive", json=reprovision_signed).status_code == 403
        # The body limit covers the route like every other one.
        big = http.post(f"{running.url}/api/v1/alive", content=b"{" + b" " * (300 * 1024) + b"}",
                        headers={"content-type": "application/json"})  # fmt: skip
        assert big.status_code == 413

        # Only the genuine one counted, and none was an activation.
        assert "fedattest_heartbeats_accepted_total 1\n" in _metrics(running)
        assert _activations(running, "aggregator") == 1


def _in_process(tmp_path: Path, now: list[float], beat: list[float], live_seconds: float = 20.0) -> tuple[Coordinator, Any]:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    made = open_coordinator(
        state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), policy_text=policy_text(),
        approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()], clock=lambda: now[0],
        cert_lifetime=timedelta(hours=1),
    )  # fmt: skip
    made.live_seconds = live_seconds
    made.monotonic = lambda: beat[0]
    return made, platform


def _activate(made: Coordinator, platform: SimulatedPlatform, *, live: bool = False) -> tuple[dict[str, Any], Any]:
    key = ident.new_key()
    claims = {"member": "aggregator", "nonce": made.new_nonce(), "policy_hash": made.policy.policy_hash().hex(),
              "keys": {"tls": ident.spki_sha256(key.public_key())}}  # fmt: skip
    quote = platform.tee(WorkloadIdentity(AGG, SIGNER)).quote(ident.claims_report_data(claims))
    issued = made.activate("aggregator", base64.b64encode(quote).decode(), ident.make_csr(key, "aggregator"), claims,
                           enrolment=ident.sign_enrolment(ENROL["aggregator"], claims), live=live)  # fmt: skip
    return issued, key


def _alive(made: Coordinator, issued: dict[str, Any], key: Any, at: float) -> dict[str, Any]:
    cert = x509.load_pem_x509_certificates(issued["certificate_chain"].encode())[0]
    claims = {"member": "aggregator", "serial": format(cert.serial_number, "x"), "time": int(at)}
    pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    return made.alive(pem, claims, ident.sign_alive(key, claims))


def test_an_identity_stops_counting_as_running_after_the_window(tmp_path: Path) -> None:
    now, beat = [time.time()], [1000.0]
    made, platform = _in_process(tmp_path, now, beat)
    try:
        first, key = _activate(made, platform)
        _alive(made, first, key, now[0])
        spent = made.store.activation_counts()["aggregator"][0]
        beat[0] += 20.0  # the last heartbeat was exactly the window ago: still running
        with pytest.raises(ActivationError, match="last heard from 20 s ago") as refused:
            _activate(made, platform)
        assert refused.value.status == 409 and made.store.activation_counts()["aggregator"][0] == spent
        beat[0] += 0.5  # silent for longer than the window: stopped (it crashed, or its host is gone)
        second, key2 = _activate(made, platform, live=True)
        with pytest.raises(ActivationError, match="already running"):  # the new one runs from its activation on
            _activate(made, platform)
        # The old one coming back is no reason to refuse anything now, but it counts as running again.
        _alive(made, first, key, now[0])
        beat[0] += 21.0
        _alive(made, second, key2, now[0])
        with pytest.raises(ActivationError, match=f"identity {_cert_serial(second)[:16]}"):  # the latest heard from
            _activate(made, platform)

        # An expired identity is not running as the member, even if it heartbeated a moment ago.
        now[0] += 2 * 3600
        with pytest.raises(ActivationError, match="expired") as expired:
            _alive(made, second, key2, now[0])
        assert expired.value.status == 410
        _activate(made, platform)
    finally:
        made.close()


def _cert_serial(issued: dict[str, Any]) -> str:
    return format(x509.load_pem_x509_certificates(issued["certificate_chain"].encode())[0].serial_number, "x")


def test_a_certificate_of_no_activation_is_refused_and_the_guard_can_be_turned_off(tmp_path: Path) -> None:
    now, beat = [time.time()], [1000.0]
    made, platform = _in_process(tmp_path, now, beat, live_seconds=0)
    try:
        # Issued by the coordinator's root (only its own code can), but never recorded as an activation.
        key = ident.new_key()
        cert = ident.issue_leaf(ca_key=made.state.root_key, ca=made.state.root_ca, public_key=key.public_key(),
                                common_name="aggregator", uris=["urn:fedattest:hospitals:member:aggregator"], dns_names=[],
                                ips=[], now=made._utc(), lifetime=timedelta(hours=1))  # fmt: skip
        claims = {"member": "aggregator", "serial": format(cert.serial_number, "x"), "time": int(now[0])}
        pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        with pytest.raises(ActivationError, match="no activation of 'aggregator' issued this certificate") as refused:
            made.alive(pem, claims, ident.sign_alive(key, claims))
        assert refused.value.status == 403
        assert made._seen == {}  # nothing recorded for it

        # live_seconds = 0: no member ever counts as running (the guard is off).
        first, key1 = _activate(made, platform, live=True)
        _alive(made, first, key1, now[0])
        _activate(made, platform)
    finally:
        made.close()


@pytest.mark.slow
def test_a_second_supernode_of_a_member_exits_with_one_line_and_the_first_runs_on(tmp_path: Path) -> None:
    """Two ``fedattest flower supernode --member hospital-a`` with their own state directories: the second exits
    (status 1) with one ``error:`` line naming the first, which keeps running with its node key published. No
    SuperLink is needed: the refusal comes from the coordinator before Flower starts (the first SuperNode keeps
    retrying its SuperLink meanwhile)."""
    import os
    import signal
    import socket
    import subprocess
    import sys

    from fedattest.policy.approval import private_key_pem

    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "hospital-a.key").write_bytes(private_key_pem(ENROL["hospital-a"]))
    (tmp_path / "data").mkdir()
    with socket.socket() as unused:  # a SuperLink address where nothing listens
        unused.bind(("127.0.0.1", 0))
        superlink = f"127.0.0.1:{unused.getsockname()[1]}"
    with coordinator(tmp_path, platform) as running:

        def args(state: str) -> list[str]:
            return [sys.executable, "-m", "fedattest", "flower", "supernode", "--coordinator", running.url, "--root-ca",
                    str(running.state / "root_ca.pem"), "--platform", str(platform.directory), "--member", "hospital-a",
                    "--enrolment-key", str(tmp_path / "hospital-a.key"), "--superlink", superlink, "--data",
                    str(tmp_path / "data"), "--state", str(tmp_path / state), "--mrenclave", COLLAB.hex()]  # fmt: skip

        log = tmp_path / "first.log"
        with log.open("wb") as out:
            first = subprocess.Popen(args("sn1"), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 120  # only stops a hung start
            while "ACTIVATED: hospital-a" not in log.read_text(errors="replace"):
                assert first.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.1)
            # Its refresher heartbeats (it counts as running from its activation on anyway: live).
            while "fedattest_heartbeats_accepted_total 0" in _metrics(running):
                assert first.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")
                time.sleep(0.2)

            second = subprocess.run(args("sn2"), capture_output=True, text=True, timeout=120, check=False)
            lines = second.stderr.strip().splitlines()
            assert second.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: "), second.stderr
            assert f"'hospital-a' is already running: identity {_serial(tmp_path / 'sn1' / 'identity')[:16]}" in lines[0]
            assert first.poll() is None, log.read_text(errors="replace")  # the first runs on
            assert _activations(running, "hospital-a") == 1
            node = serialization.load_ssh_private_key((tmp_path / "sn1" / "identity" / "node-key.ssh").read_bytes(), None)
            with running.http() as http:
                published = http.get(f"{running.url}/api/v1/public-keys/node", params={"role": "collaborator"}).json()
            spki = serialization.PublicFormat.SubjectPublicKeyInfo
            assert [p["public_key"] for p in published] == [node.public_key().public_bytes(Encoding.PEM, spki).decode()]
        finally:
            if first.poll() is None:
                os.killpg(first.pid, signal.SIGTERM)
            try:
                first.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(first.pid, signal.SIGKILL)
                first.wait(timeout=60)
