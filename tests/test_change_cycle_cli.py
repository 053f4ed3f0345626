"""The change cycle's commands, as a user runs them: `flower app-hash`, `policy add-app` and `coordinator
update-policy` (the end-to-end cycle in a running federation is in examples/digits/run_demo.py, section 5, run
by test_flower_federation)."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from fedattest.policy.approval import approve, private_key_pem
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import KEY, coordinator, policy_text

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "examples" / "digits"


def fedattest(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fedattest", *args], capture_output=True, text=True, timeout=120,
                          check=False, cwd=cwd)  # fmt: skip


def one_error(done: subprocess.CompletedProcess[str], code: int, needle: str) -> None:
    lines = done.stderr.strip().splitlines()
    assert done.returncode == code and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], done
    assert "Traceback" not in done.stdout + done.stderr


def test_app_hash_is_the_hash_of_what_flwr_builds(tmp_path: Path) -> None:
    app = tmp_path / "app"
    shutil.copytree(APP, app, ignore=shutil.ignore_patterns("__pycache__", "*.fab"))
    built = subprocess.run([str(Path(sys.executable).parent / "flwr"), "build"], cwd=app, capture_output=True, text=True,
                           timeout=120, check=False)  # fmt: skip
    assert built.returncode == 0, built.stdout + built.stderr
    (fab,) = app.glob("*.fab")
    expected = hashlib.sha256(fab.read_bytes()).hexdigest()
    assert fedattest("flower", "app-hash", str(app)).stdout.strip() == expected  # the directory, as flwr run builds it
    assert fedattest("flower", "app-hash", str(fab)).stdout.strip() == expected  # the FAB file
    with open(app / "digits_fl" / "client_app.py", "a") as f:
        f.write("\n# an edit\n")
    assert fedattest("flower", "app-hash", str(app)).stdout.strip() != expected  # any edit changes it

    one_error(fedattest("flower", "app-hash", str(tmp_path / "missing")), 2, "no such app directory or FAB file")
    one_error(fedattest("flower", "app-hash", str(tmp_path)), 2, "is not a Flower app: it has no pyproject.toml")
    (tmp_path / "notes.txt").write_text("not a zip")
    one_error(fedattest("flower", "app-hash", str(tmp_path / "notes.txt")), 2, "is not a FAB")


def test_add_app_edits_the_policy_in_place_and_keeps_its_comments(tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(policy_text())
    before = parse_policy(policy.read_text()).policy_hash().hex()
    added = fedattest("policy", "add-app", str(policy), "ab" * 32)
    assert added.returncode == 0, added.stderr
    after = parse_policy(policy.read_text())
    assert added.stdout.strip() == f"ADDED: app {'ab' * 32}; policy hash {before} -> {after.policy_hash().hex()}"
    assert bytes.fromhex("ab" * 32) in after.apps.allowed_hashes and len(after.apps.allowed_hashes) == 2
    assert policy.read_text().count("\n#") == policy_text().count("\n#")  # every comment line kept
    again = fedattest("policy", "add-app", str(policy), "AB" * 32)
    assert again.returncode == 0 and again.stdout.startswith("UNCHANGED: app " + "ab" * 32)
    out = tmp_path / "v3.toml"
    assert fedattest("policy", "add-app", str(policy), "cd" * 32, "-o", str(out)).returncode == 0
    assert parse_policy(policy.read_text()) == after  # -o leaves the file as it was
    assert bytes.fromhex("cd" * 32) in parse_policy(out.read_text()).apps.allowed_hashes

    one_error(fedattest("policy", "add-app", str(policy), "not-an-app"), 2, "not an app directory, a .fab file or a SHA-256")
    (tmp_path / "bad.toml").write_text("[apps]\nallowed_hashes = 3\n")
    one_error(fedattest("policy", "add-app", str(tmp_path / "bad.toml"), "ab" * 32), 2, "bad.toml")


def test_update_policy_puts_an_approved_version_in_force_and_refuses_others(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        root = running.state / "root_ca.pem"
        policy = tmp_path / "v2.toml"
        policy.write_text(policy_text())
        assert fedattest("policy", "add-app", str(policy), "ee" * 32).returncode == 0
        (tmp_path / "alice.key").write_bytes(private_key_pem(KEY))
        approval = tmp_path / "alice.v2.json"
        approval.write_text(approve(parse_policy(policy.read_text()), "alice", KEY).to_json())
        common = ["--coordinator", running.url, "--root-ca", str(root)]
        done = fedattest("coordinator", "update-policy", str(policy), "--approval", str(approval), *common)
        assert done.returncode == 0, done.stderr
        new_hash = parse_policy(policy.read_text()).policy_hash().hex()
        assert done.stdout.startswith(f"IN FORCE: policy 'hospitals' version 2, hash {new_hash}")
        # Approvals of another version do not put this one in force.
        assert fedattest("policy", "add-app", str(policy), "dd" * 32).returncode == 0
        one_error(fedattest("coordinator", "update-policy", str(policy), "--approval", str(approval), *common), 1, "HTTP 403")
        one_error(fedattest("coordinator", "update-policy", str(tmp_path / "none.toml"), "--approval", str(approval), *common),
                  2, "none.toml")  # fmt: skip


def test_a_simulated_policy_from_init_works_as_written_with_the_launchers(tmp_path: Path) -> None:
    """`policy init --simulated`: the launchers' simulated measurements, simulation allowed, [training] set, keys
    made next to it; the aggregator and a collaborator activate as the launchers would, with nothing edited."""
    from fedattest.cli.coordinator import _tee
    from fedattest.flower.participant import activate_participant
    from fedattest.policy.approval import load_private_key
    from fedattest.tee.sim_identities import SIM_SUPERLINK_MRENCLAVE, SIM_SUPERNODE_MRENCLAVE

    made = fedattest("policy", "init", "--simulated", "--name", "hospitals", "-o", str(tmp_path / "policy.toml"),
                     "--commitment", f"hospital-a={'AB' * 32}")  # fmt: skip
    assert made.returncode == 0, made.stderr
    policy = parse_policy((tmp_path / "policy.toml").read_text())
    assert policy.training.rounds == 3 and policy.coordinator.allow_simulation
    approved = fedattest("policy", "approve", str(tmp_path / "policy.toml"), "--name", "alice",
                         "--key", str(tmp_path / "alice.key"), "-o", str(tmp_path / "alice.json"))  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:  # serves tmp_path/policy.toml with tmp_path/alice.json
        for member, mrenclave, role in (("aggregator", SIM_SUPERLINK_MRENCLAVE, "aggregator"),
                                        ("hospital-a", SIM_SUPERNODE_MRENCLAVE, "collaborator")):  # fmt: skip
            key = load_private_key((tmp_path / f"{member}.key").read_bytes())
            who = activate_participant(running.url, running.root_pem, member, _tee("sim", platform.directory, mrenclave),
                                       tmp_path / member, node_key=role == "collaborator", expected_role=role,
                                       enrolment_key=lambda k=key: k)  # fmt: skip
            assert who.how == "activated" and who.provisioned.rounds == 3
        assert who.provisioned.data_commitment == "ab" * 32
    one_error(fedattest("policy", "init", "--simulated", "-o", str(tmp_path / "again.toml")), 2, "alice.key exists")
    one_error(fedattest("policy", "init", "--commitment", "hospital-a=xyz"), 2, "expected hospital-a=<64 hex digits>")
