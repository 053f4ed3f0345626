"""Watching a federation: `fedattest status` against a real coordinator, and the coordinator's one log line per
decision (issue 13, "see it")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fedattest.flower.rounds import report_round
from fedattest.participant import activate
from fedattest.participant.client import CoordinatorError
from fedattest.pki import identity as ident
from fedattest.tee import SimulatedPlatform
from tests.coordinator_harness import AGG, COLLAB, COMMITMENT, ENROL, coordinator, policy_text, tee, update_policy

DP = {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 1}


def test_status_shows_members_and_runs_and_the_coordinator_logs_each_decision(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        agg = tmp_path / "agg"
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        node = ident.new_key()
        activate(running.url, running.root_pem, "hospital-a", tee(running, COLLAB), tmp_path / "a",
                 enrolment_key=ENROL["hospital-a"], extra_keys={"node": node.public_key()})  # fmt: skip
        with pytest.raises(CoordinatorError):  # a refusal: an approved enclave, but not the aggregator's build
            activate(running.url, running.root_pem, "aggregator", tee(running, COLLAB), tmp_path / "x",
                     enrolment_key=ENROL["aggregator"])  # fmt: skip
        report_round(running.url, running.root_pem, tmp_path / "agg", 2**63 + 1, 1, ["hospital-a"], "ab" * 32, dp=DP,
                     metrics={"train.train_loss": 1.25}, nodes={"hospital-a": 2**64 - 2})  # fmt: skip
        report_round(running.url, running.root_pem, tmp_path / "agg", 2**63 + 1, 2, ["hospital-a"], "cd" * 32,
                     [("node 9", "not signed")], dp=DP, metrics={"train.train_loss": 0.5, "server.accuracy": 0.75},
                     nodes={"hospital-a": 2**64 - 2})  # fmt: skip
        update_policy(running, policy_text().replace('allowed_hashes = ["', f'allowed_hashes = ["{"ee" * 32}", "', 1))

        args = [sys.executable, "-m", "fedattest", "status", "--coordinator", running.url, "--root-ca",
                str(running.state / "root_ca.pem")]  # fmt: skip
        shown = subprocess.run([*args, "--json"], capture_output=True, text=True, timeout=120, check=False)
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        members = {m["name"]: m for m in report["members"]}
        assert members["aggregator"]["attestation"] == "verified" and members["aggregator"]["mrenclave"] == AGG.hex()
        assert members["hospital-a"]["data_commitment"] == COMMITMENT and members["hospital-a"]["tcb_status"] == "UpToDate"
        assert members["hospital-a"]["node_key_sha256"] is not None and members["aggregator"]["node_key_sha256"] is None
        assert [v["version"] for v in report["policy_versions"]] == [1, 2]
        [run] = report["runs"]
        assert run["run_id"] == str(2**63 + 1) and len(run["rounds"]) == 2 and run["refused"] == 1 and run["dp"] == DP
        # Metrics per round and the node each member's update came from, as the aggregator's signed reports say.
        assert [r["metrics"] for r in run["rounds"]] == [{"train.train_loss": 1.25},
                                                         {"train.train_loss": 0.5, "server.accuracy": 0.75}]  # fmt: skip
        assert run["metric_names"] == ["server.accuracy", "train.train_loss"] and run["participants"] == ["hospital-a"]
        assert members["hospital-a"]["node_id"] == str(2**64 - 2) and members["aggregator"]["node_id"] is None
        assert run["refusals"] == [{"round": 2, "member": "node 9", "reason": "not signed"}]
        # The coordinator's overview is the same summary (one module builds both).
        with running.http() as http:
            served = http.get(f"{running.url}/api/v1/overview").json()
        assert served["members"] == report["members"] and served["runs"] == report["runs"]
        table = subprocess.run(args, capture_output=True, text=True, timeout=120, check=False, env={"COLUMNS": "250", "PATH": ""})
        assert table.returncode == 0 and "hospital-a" in table.stdout and "verified" in table.stdout, table.stderr
        assert str(2**64 - 2) in table.stdout and "server.accuracy 0.75" in table.stdout, table.stdout

        wrong = subprocess.run([*args[:-1], str(tmp_path / "platform" / "root_ca.pem")], capture_output=True, text=True,
                               timeout=120, check=False)  # another root: TLS refuses  # fmt: skip
        assert wrong.returncode == 1 and wrong.stderr.startswith("error: ") and len(wrong.stderr.splitlines()) == 1

    log = running.log.read_text()
    lines = [line for line in log.splitlines() if line.startswith("fedattest coordinator: event=")]
    assert any("event=activation outcome=accepted member=aggregator role=aggregator attestation=verified" in ln for ln in lines)
    assert any("event=activation outcome=refused member=aggregator status=403" in ln and "reason=" in ln for ln in lines)
    assert sum("event=round outcome=recorded" in ln for ln in lines) == 2
    assert any("event=policy outcome=in-force" in ln and "version=2" in ln for ln in lines)
