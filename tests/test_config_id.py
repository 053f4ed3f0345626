"""CONFIGID (SGX KSS) as a reference value: the same code, launched for one member's data, and the hardware
report saying so. Checked in appraisal, by `quote verify --expect-config-id`, and at activation when a role
binds it to the member's data commitment; each both ways."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.coordinator.revocation import revocation_reason
from fedattest.dcap.verify import QuoteVerifier
from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError
from fedattest.policy.appraisal import ReferenceValues, appraise
from fedattest.policy.approval import approve
from fedattest.policy.federation import PolicyError, parse_policy
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from tests.conftest import assert_one_line_error
from tests.coordinator_harness import COLLAB, COMMITMENT, ENROL, KEY, SIGNER, coordinator, policy_text

OURS = bytes.fromhex(COMMITMENT) + bytes(32)  # hospital-a's commitment, padded to CONFIGID's 64 bytes
BOUND = f'mrenclave = ["{COLLAB.hex()}"]\nallow_simulation = true\nconfig_id = "data-commitment"'


def _verified(platform: SimulatedPlatform, config_id: bytes = bytes(64), config_svn: int = 0) -> Any:
    identity = WorkloadIdentity(COLLAB, SIGNER, config_id=config_id, config_svn=config_svn, kss=True)
    return QuoteVerifier(platform.root_ca).verify(platform.tee(identity).quote(bytes(64)), platform.collateral())


def test_appraisal_checks_config_id_and_svn(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    ref = ReferenceValues(mrenclave=frozenset({COLLAB}), allow_simulation=True, config_id=OURS, min_config_svn=2)
    assert appraise(_verified(platform, OURS, 2), ref).accepted
    wrong = appraise(_verified(platform, bytes(64), 2), ref)
    assert not wrong.accepted and any("CONFIGID 0000" in r and "is not the expected" in r for r in wrong.reasons)
    old = appraise(_verified(platform, OURS, 1), ref)
    assert old.reasons == ("CONFIGSVN 1 is below the minimum 2",)
    # Without a reference CONFIGID, any launch configuration is accepted (as before).
    assert appraise(_verified(platform, OURS), ReferenceValues(mrenclave=frozenset({COLLAB}), allow_simulation=True)).accepted


def test_quote_verify_expects_a_config_id(tmp_path: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(app, ["sim", "init", str(tmp_path / "p")]).exit_code == 0
    quote = tmp_path / "q.bin"
    made = runner.invoke(app, ["sim", "quote", "-p", str(tmp_path / "p"), "--mrenclave", COLLAB.hex(), "--mrsigner", SIGNER.hex(),
                               "--config-id", COMMITMENT, "-o", str(quote)])  # fmt: skip
    assert made.exit_code == 0, made.stderr
    assert runner.invoke(app, ["sim", "collateral", "-p", str(tmp_path / "p"), "-o", str(tmp_path / "c.json")]).exit_code == 0
    root = tmp_path / "p" / "root_ca.der"
    base = ["quote", "verify", str(quote), "--collateral", str(tmp_path / "c.json"), "--root-ca", str(root),
            "--allow-simulation", "--expect-mrenclave", COLLAB.hex()]  # fmt: skip
    assert runner.invoke(app, [*base, "--expect-config-id", COMMITMENT]).exit_code == 0
    refused = runner.invoke(app, [*base, "--expect-config-id", "ee" * 32])
    assert refused.exit_code == 1 and "CONFIGID" in refused.stdout + refused.stderr
    assert_one_line_error(runner.invoke(app, [*base, "--expect-config-id", "abc"]), 2, "--expect-config-id needs up to 128 hex")


def test_a_role_can_bind_config_id_to_each_members_commitment(tmp_path: Path) -> None:
    text = policy_text().replace(f'mrenclave = ["{COLLAB.hex()}"]\nallow_simulation = true', BOUND)
    assert text != policy_text()
    policy = parse_policy(text)
    member = policy.member("hospital-a")
    assert member is not None and (reference := policy.reference_for(member)) is not None and reference.config_id == OURS
    aggregator = policy.member("aggregator")
    assert aggregator is not None and (theirs := policy.reference_for(aggregator)) is not None and theirs.config_id is None
    with pytest.raises(PolicyError, match=r'roles\.aggregator: config_id = "data-commitment" is for collaborators'):
        parse_policy(text.replace("[roles.aggregator]\n", '[roles.aggregator]\nconfig_id = "data-commitment"\n'))
    (tmp_path / "policy.toml").write_text(text)
    (tmp_path / "alice.json").write_text(approve(policy, "alice", KEY).to_json())
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        unbound = running.platform.tee(WorkloadIdentity(COLLAB, SIGNER))  # the right code, launched for no one's data
        with pytest.raises(CoordinatorError, match="HTTP 403: evidence does not match role 'collaborator': CONFIGID 0000"):
            activate(running.url, running.root_pem, "hospital-a", unbound, tmp_path / "x", enrolment_key=ENROL["hospital-a"])
        bound = running.platform.tee(WorkloadIdentity(COLLAB, SIGNER, config_id=OURS, kss=True))
        done = activate(running.url, running.root_pem, "hospital-a", bound, tmp_path / "a", enrolment_key=ENROL["hospital-a"])
        assert done.provisioned["data_commitment"] == COMMITMENT
        # The audit bundle re-checks it offline.
        from fedattest.coordinator.bundle import verify_bundle

        done_export = CliRunner().invoke(app, ["audit", "export", "--coordinator", running.url, "--root-ca",
                                               str(running.state / "root_ca.pem"), "-o", str(tmp_path / "b.tar")])  # fmt: skip
        assert done_export.exit_code == 0, done_export.stderr
        report = verify_bundle((tmp_path / "b.tar").read_bytes(), verifier_for=lambda _s: QuoteVerifier(platform.root_ca))
        assert report.ok, [c for c in report.checks if not c.ok]


def test_a_policy_that_starts_binding_config_id_revokes_unbound_identities(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    then = parse_policy(policy_text())
    now = parse_policy(policy_text().replace(f'mrenclave = ["{COLLAB.hex()}"]\nallow_simulation = true', BOUND))
    judged = revocation_reason("hospital-a", "collaborator", _verified(platform), then, now)
    assert judged is not None and "CONFIGID 0000" in judged[0] and "is not the expected" in judged[0]
    assert revocation_reason("hospital-a", "collaborator", _verified(platform, OURS), then, now) is None


def test_a_workload_identity_keeps_its_launch_configuration_across_processes() -> None:
    """`workload run` hands the measured identity to the child through the environment: CONFIGID and CONFIGSVN
    included (CONFIGSVN used to be dropped, so a child quoted CONFIGSVN 0)."""
    from fedattest.tee.current import identity_from_env, identity_to_env

    identity = WorkloadIdentity(COLLAB, SIGNER, config_id=OURS, config_svn=7, kss=True)
    assert identity_from_env(identity_to_env(identity)) == identity
