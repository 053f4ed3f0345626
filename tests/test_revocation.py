"""Revocation of live identities by an approved policy update.

Before: a policy update that removed a measurement stopped new activations of the old build, but members
already activated kept their certificates (one day), their node keys stayed registered, and the aggregator
kept accepting their updates. Now the update revokes, in the same transaction, every live identity the new
policy would not issue (:mod:`fedattest.coordinator.revocation`): its node key is withdrawn at once, the
coordinator's CRL (an X.509 CRL signed by its root) lists it, and the aggregator, which checks the CRL at
every aggregation, refuses its updates from the next round on.
"""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from fedattest.coordinator.revocation import revocation_reason
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.flower import UpdateSigner, UpdateVerifier
from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError, revocation_fetcher
from fedattest.pki import identity as ident
from fedattest.pki.crl import RevocationList, RevocationListError, RevokedCertificate, build_crl
from fedattest.policy.approval import approve
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from tests.coordinator_harness import (
    AGG,
    COLLAB,
    ENROL,
    KEY,
    SIGNER,
    Running,
    coordinator,
    policy_text,
    start,
    stop,
    tee,
    update_policy,
)
from tests.flower_helpers import configure_round, signed_reply

NOW = datetime(2026, 6, 1, tzinfo=UTC)
NEW_BUILD = bytes.fromhex("cd" * 32)


# -- the CRL format: built by the coordinator, checked by relying parties ---------------------------------------


def _root(federation: str = "hospitals") -> tuple[Any, x509.Certificate]:
    key = ident.new_key()
    return key, ident.make_root_ca(key, federation, NOW - timedelta(days=1))


def test_a_crl_round_trips_and_names_each_revoked_serial() -> None:
    key, root = _root()
    entries = [RevokedCertificate(11, NOW, x509.ReasonFlags.privilege_withdrawn),
               RevokedCertificate(12, NOW, x509.ReasonFlags.affiliation_changed)]  # fmt: skip
    der = build_crl(key, root, entries, now=NOW, number=2)
    crl = RevocationList.load(der, root, now=NOW + timedelta(minutes=59))
    assert crl.number == 2 and crl.next_update == NOW + timedelta(hours=1)
    assert crl.revoked == {11: x509.ReasonFlags.privilege_withdrawn, 12: x509.ReasonFlags.affiliation_changed}
    # Parsed by an independent reader too: it is a standard CRL.
    parsed = x509.load_der_x509_crl(der)
    assert parsed.get_revoked_certificate_by_serial_number(12) is not None and parsed.is_signature_valid(root.public_key())


def _unsigned_variant(key: Any, root: x509.Certificate, **change: Any) -> bytes:
    builder = x509.CertificateRevocationListBuilder().issuer_name(change.get("issuer", root.subject))
    builder = builder.last_update(change.get("this", NOW)).next_update(change.get("next", NOW + timedelta(hours=1)))
    if change.get("number", True):
        builder = builder.add_extension(x509.CRLNumber(1), critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def test_every_check_on_a_crl_refuses_what_it_should() -> None:
    key, root = _root()
    other_key, other_root = _root("another-federation")
    good = build_crl(key, root, [], now=NOW, number=0)
    flipped = bytearray(good)
    flipped[-5] ^= 1
    cases = {
        "signed by another root": (build_crl(other_key, other_root, [], now=NOW, number=0), "not issued by the coordinator"),
        "our issuer name, another key": (_unsigned_variant(other_key, root), "signature does not verify"),
        "a flipped signature byte": (bytes(flipped), "signature does not verify"),
        "stale": (good, "stale"),
        "dated in the future": (_unsigned_variant(key, root, this=NOW + timedelta(hours=2), next=NOW + timedelta(hours=3)),
                                "dated in the future"),
        "no CRLNumber": (_unsigned_variant(key, root, number=False), "no CRLNumber"),
        "not a CRL": (b"\x30\x03\x02\x01\x00", "does not parse"),
        "too large": (bytes(17 << 20), "larger than"),
    }
    for what, (der, needle) in cases.items():
        at = NOW + timedelta(hours=1) if what == "stale" else NOW
        with pytest.raises(RevocationListError, match=needle):
            RevocationList.load(der, root, now=at)
    assert RevocationList.load(good, root, now=NOW).revoked == {}


# -- what a policy change revokes (pure) ------------------------------------------------------------------------


def _verified(mrenclave: bytes, platform: SimulatedPlatform) -> Any:
    quote = platform.tee(WorkloadIdentity(mrenclave, SIGNER)).quote(bytes(64))
    return QuoteVerifier(platform.root_ca).verify(quote, platform.collateral())


def _edited(old: str, new: str) -> Any:
    text = policy_text()
    assert old in text, old
    return parse_policy(text.replace(old, new))


def test_each_policy_change_revokes_exactly_whom_it_affects(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    collab, agg = _verified(COLLAB, platform), _verified(AGG, platform)
    then = parse_policy(policy_text())
    new_build = f'mrenclave = ["{NEW_BUILD.hex()}"]'
    changes: dict[str, tuple[Any, str, str | None, str | None]] = {
        # change: (new policy, why hospital-a goes, why the aggregator goes)
        "nothing that matters to them": (_edited("noise_multiplier = 1.0", "noise_multiplier = 1.0\n# same"), "", None, None),
        "collaborator build removed": (_edited(f'mrenclave = ["{COLLAB.hex()}"]', new_build), "", "is not an accepted", None),
        "collaborator build kept, another added": (
            _edited(f'mrenclave = ["{COLLAB.hex()}"]', f'mrenclave = ["{COLLAB.hex()}", "{NEW_BUILD.hex()}"]'), "", None, None,
        ),
        "simulation no longer allowed": (_edited(f'{COLLAB.hex()}"]\nallow_simulation = true',
                                                 f'{COLLAB.hex()}"]\nallow_simulation = false'), "",
                                         "simulation is not allowed", None),
        "data commitment changed": (_edited(f'data_commitment = "{"ab" * 32}"', f'data_commitment = "{"ef" * 32}"'), "",
                                    "data commitment changed", None),
        "app removed": (_edited(f'allowed_hashes = ["{"00" * 32}"]', f'allowed_hashes = ["{"11" * 32}"]'), "",
                        "is no longer allowed", "is no longer allowed"),
        "DP settings changed": (_edited("noise_multiplier = 1.0", "noise_multiplier = 0.5"), "", None, "DP or training"),
    }  # fmt: skip
    for what, (now, _, collab_reason, agg_reason) in changes.items():
        got_c = revocation_reason("hospital-a", "collaborator", collab, then, now)
        got_a = revocation_reason("aggregator", "aggregator", agg, then, now)
        assert (got_c is None) == (collab_reason is None), (what, got_c)
        assert (got_a is None) == (agg_reason is None), (what, got_a)
        assert collab_reason is None or (got_c is not None and collab_reason in got_c[0]), (what, got_c)
        assert agg_reason is None or (got_a is not None and agg_reason in got_a[0]), (what, got_a)
    # Membership and role come from the new policy alone.
    assert revocation_reason("hospital-z", "collaborator", collab, then, then) == (
        "the member was removed from the policy", x509.ReasonFlags.affiliation_changed)  # fmt: skip
    assert revocation_reason("aggregator", "collaborator", collab, None, then) == (
        "the member's role changed to aggregator", x509.ReasonFlags.affiliation_changed)  # fmt: skip
    # An identity activated with attestation off goes when the role starts requiring it.
    assert revocation_reason("hospital-a", "collaborator", None, then, then) == (
        "role 'collaborator' now requires attestation", x509.ReasonFlags.privilege_withdrawn)  # fmt: skip


# -- against the real coordinator and the real strategy ---------------------------------------------------------


def _signer(identity: Path) -> UpdateSigner:
    return UpdateSigner((identity / "key.pem").read_bytes(), (identity / "chain.pem").read_bytes())


def _strategy(running: Running, reported: list[tuple[int, list[str]]]) -> Any:
    from flwr.serverapp.strategy import FedAvg, Strategy

    from fedattest.flower.serverapp import AttestedStrategy

    def report(outcome: Any) -> int:
        reported.append((outcome.round, sorted(outcome.participants)))
        return len(reported)

    root = x509.load_pem_x509_certificate(running.root_pem.encode())
    wrapper = type("AttestedStrategyImpl", (AttestedStrategy, Strategy), {})
    # The member list is fixed here, so that only the CRL can refuse hospital-a's updates.
    return wrapper(FedAvg(min_available_nodes=1, min_train_nodes=1), UpdateVerifier(root, "hospitals"),
                   lambda: {"hospital-a"}, report, run_id=7,
                   revocations=revocation_fetcher(running.url, running.root_pem))  # fmt: skip


def _node_keys(running: Running) -> list[str]:
    with running.http() as http:
        return [e["member"] for e in http.get(f"{running.url}/api/v1/public-keys/node").json()]


def test_removing_a_measurement_revokes_its_live_members_within_a_round(
    tmp_path: Path, run7: None, caplog: pytest.LogCaptureFixture
) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "agg",
                 enrolment_key=ENROL["aggregator"])  # fmt: skip
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"], extra_keys={"node": ident.new_key().public_key()})  # fmt: skip
        reported: list[tuple[int, list[str]]] = []
        strategy = _strategy(running, reported)
        hospital_a = _signer(tmp_path / "a")
        model = [np.zeros(4)]
        (instruction,) = configure_round(strategy, 1, model, 1)
        strategy.aggregate_train(1, [signed_reply(instruction, hospital_a, [np.full(4, 0.1)])])
        assert reported == [(1, ["hospital-a"])] and _node_keys(running) == ["hospital-a"]

        # The approvers replace the collaborator build (say, a vulnerable one) with a new one.
        text = policy_text().replace(f'mrenclave = ["{COLLAB.hex()}"]', f'mrenclave = ["{NEW_BUILD.hex()}"]')
        approved = time.monotonic()
        result = update_policy(running, text)
        [revoked] = result["revoked"]
        assert revoked["member"] == "hospital-a" and "is not an accepted measurement" in revoked["reason"]
        assert _node_keys(running) == []  # the SuperLink drops the node at its next refresh

        (instruction,) = configure_round(strategy, 2, model, 1)
        with caplog.at_level("WARNING", logger="fedattest"), pytest.raises(FedattestError, match="kept no attested update"):
            strategy.aggregate_train(2, [signed_reply(instruction, hospital_a, [np.full(4, 0.1)])])
        refused_after = time.monotonic() - approved
        assert reported == [(1, ["hospital-a"])]  # round 2 aggregated nothing (the run stops): no update was accepted
        assert "round 2: refused the update of hospital-a" in caplog.text
        assert "the signer's certificate was revoked by the coordinator (privilegeWithdrawn)" in caplog.text
        print(f"revocation: approved update -> first refused update of the revoked member: {refused_after * 1000:.0f} ms")

        # The revoked activation freed its place (max_activations = 1): hospital-a comes back on the new build.
        back = activate(running.url, running.root_pem, "hospital-a", tee(running, NEW_BUILD), tmp_path / "a2",
                        enrolment_key=ENROL["hospital-a"], extra_keys={"node": ident.new_key().public_key()})  # fmt: skip
        assert back.provisioned["policy_hash"] == parse_policy(text).policy_hash().hex() and _node_keys(running) == ["hospital-a"]
        (instruction,) = configure_round(strategy, 3, model, 1)
        strategy.aggregate_train(3, [signed_reply(instruction, _signer(tmp_path / "a2"), [np.full(4, 0.1)])])
        assert reported[-1] == (3, ["hospital-a"])

        # The audit log records the revocation, and the CRL keeps it.
        with running.http() as http:
            entries = http.get(f"{running.url}/api/v1/audit").json()["entries"]
            root = x509.load_pem_x509_certificate(running.root_pem.encode())
            crl = RevocationList.load(http.get(f"{running.url}/api/v1/crl").content, root, now=datetime.now(UTC))
        [entry] = [e for e in entries if e["kind"] == "revocation"]
        assert entry["data"]["member"] == "hospital-a" and entry["data"]["code"] == "privilegeWithdrawn"
        old_cert = x509.load_pem_x509_certificates((tmp_path / "a" / "chain.pem").read_bytes())[0]
        assert crl.reason_for(old_cert) == "privilegeWithdrawn" and crl.number == 1


def test_a_revoked_aggregator_cannot_report_rounds_and_revocations_survive_a_restart(tmp_path: Path) -> None:
    from fedattest.flower.rounds import report_round

    platform = SimulatedPlatform.create(tmp_path / "platform")
    running = start(tmp_path, platform)
    try:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "agg",
                 enrolment_key=ENROL["aggregator"])  # fmt: skip
        report_round(running.url, running.root_pem, tmp_path / "agg", 7, 1, [], "ab" * 32)
        # Less noise is a change the aggregator enforces: its provisioned settings are superseded.
        text = policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 0.5")
        (text_path := tmp_path / "policy.toml").write_text(text)
        (tmp_path / "alice.json").write_text(approve(parse_policy(text), "alice", KEY).to_json())
        [revoked] = update_policy(running, text)["revoked"]
        assert revoked["member"] == "aggregator" and "DP or training settings" in revoked["reason"]
        with pytest.raises(Exception, match="the signer's certificate was revoked"):
            report_round(running.url, running.root_pem, tmp_path / "agg", 7, 2, [], "cd" * 32)
    finally:
        stop(running)
    assert text_path.exists()
    with coordinator(tmp_path, platform, state=running.state) as again:
        root = x509.load_pem_x509_certificate(again.root_pem.encode())
        with again.http() as http:
            crl = RevocationList.load(http.get(f"{again.url}/api/v1/crl").content, root, now=datetime.now(UTC))
        cert = x509.load_pem_x509_certificates((tmp_path / "agg" / "chain.pem").read_bytes())[0]
        assert crl.reason_for(cert) == "superseded"
        fetch = revocation_fetcher(again.url, again.root_pem)
        assert fetch().reason_for(cert) == "superseded"
    with pytest.raises(CoordinatorError, match="GET /api/v1/crl"):
        fetch()  # the coordinator is gone: the caller fails closed


def test_without_a_revocation_list_no_update_counts(tmp_path: Path, run7: None, caplog: pytest.LogCaptureFixture) -> None:
    """Fail closed: when the CRL cannot be fetched or checked, the round accepts no update (naming why)."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"])  # fmt: skip
        reported: list[tuple[int, list[str]]] = []
        strategy = _strategy(running, reported)
        strategy.revocations = revocation_fetcher(f"https://127.0.0.1:{_closed_port()}", running.root_pem)
        model = [np.zeros(4)]
        (instruction,) = configure_round(strategy, 1, model, 1)
        with caplog.at_level("WARNING", logger="fedattest"), pytest.raises(FedattestError, match="kept no attested update"):
            strategy.aggregate_train(1, [signed_reply(instruction, _signer(tmp_path / "a"), [np.full(4, 0.1)])])
    assert reported == []
    assert "no update is accepted while the revocation list cannot be checked" in caplog.text


def _closed_port() -> int:
    """A port the kernel just gave out and nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_restarted_participant_whose_identity_was_revoked_activates_anew(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Operators restart things: a SuperNode whose sealed identity was revoked (here: its member's data
    commitment changed) does not resume into refusals; it activates again and gets the new parameters."""
    from fedattest.flower.participant import activate_participant

    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        enclave = tee(running, COLLAB)

        def launch() -> Any:
            return activate_participant(running.url, running.root_pem, "hospital-a", enclave, tmp_path / "a", node_key=True,
                                        expected_role="collaborator", enrolment_key=lambda: ENROL["hospital-a"])  # fmt: skip

        first = launch()
        assert not first.resumed and launch().resumed  # an unrevoked identity resumes
        text = policy_text().replace(f'data_commitment = "{"ab" * 32}"', f'data_commitment = "{"ef" * 32}"')
        [revoked] = update_policy(running, text)["revoked"]
        assert "data commitment changed" in revoked["reason"]
        with caplog.at_level("WARNING", logger="fedattest"):
            again = launch()
        assert not again.resumed and again.provisioned.data_commitment == "ef" * 32
        assert "the sealed identity was revoked by the coordinator (privilegeWithdrawn): activating anew" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="fedattest"):  # the coordinator is gone: resume, and say so
        assert activate_participant(running.url, running.root_pem, "hospital-a", enclave, tmp_path / "a", node_key=True,
                                    expected_role="collaborator", enrolment_key=lambda: ENROL["hospital-a"]).resumed  # fmt: skip
    assert "could not check whether the sealed identity was revoked" in caplog.text


def test_participant_activate_does_not_resume_a_revoked_identity(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fedattest.cli import app
    from fedattest.policy.approval import private_key_pem

    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "hospital-a.key").write_bytes(private_key_pem(ENROL["hospital-a"]))
    runner = CliRunner()
    with coordinator(tmp_path, platform) as running:
        (tmp_path / "root.pem").write_text(running.root_pem)
        argv = ["participant", "activate", "--coordinator", running.url, "--root-ca", str(tmp_path / "root.pem"),
                "--member", "hospital-a", "--enrolment-key", str(tmp_path / "hospital-a.key"), "--out", str(tmp_path / "id"),
                "--platform", str(platform.directory), "--mrenclave", COLLAB.hex()]  # fmt: skip
        assert runner.invoke(app, argv).stdout.startswith("ACTIVATED: hospital-a")
        assert runner.invoke(app, argv).stdout.startswith("RESUMED: hospital-a")
        update_policy(running, policy_text().replace(f'data_commitment = "{"ab" * 32}"', f'data_commitment = "{"ef" * 32}"'))
        again = runner.invoke(app, argv)
        assert again.exit_code == 0 and again.stdout.startswith("ACTIVATED: hospital-a"), (again.stdout, again.stderr)
        assert json.loads((tmp_path / "id" / "provisioned.json").read_text())["data_commitment"] == "ef" * 32
