"""How long a revoked member keeps counting after an approved policy update.

    .venv/bin/python benchmarks/revocation.py [--repeat 5] [--refresh 2] [--json]

Real processes on 127.0.0.1: `fedattest coordinator serve` (simulated TEE, HTTPS) and `fedattest flower
superlink` (activated as the aggregator, its node registry refreshing every ``--refresh`` seconds). A
collaborator (hospital-a) activates with a node key, and an ``AttestedStrategy`` (the ServerApp's wrapper,
with the coordinator's CRL fetched every aggregation) accepts its signed update. Then, each repetition:

1. the approvers change hospital-a's data commitment (``POST /api/v1/policy``): its identity is revoked;
2. measured: approval → the SuperLink removes hospital-a's node key (its SuperNode can no longer pull
   work); approval → the strategy refuses hospital-a's next update; and how many of hospital-a's
   updates were accepted after the approval (must be 0);
3. hospital-a activates again under the new policy, and its update is accepted again.

The baseline, in the same run, is what held before revocation: a certificate stays usable until it
expires (``--cert-lifetime``, the coordinator's default one day), so that is the ratio printed.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography import x509
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import FedAvg, Strategy
from flwr.supercore.task_identity import TaskIdentity

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fedattest.cli.coordinator import DEFAULT_SIM_MRENCLAVE, DEFAULT_SIM_MRSIGNER  # noqa: E402
from fedattest.cli.flower import SIM_SUPERLINK_MRENCLAVE, SIM_SUPERNODE_MRENCLAVE  # noqa: E402
from fedattest.errors import FedattestError  # noqa: E402
from fedattest.flower import UpdateSigner, UpdateVerifier  # noqa: E402
from fedattest.flower.mods import signing_mod  # noqa: E402
from fedattest.flower.serverapp import AttestedStrategy  # noqa: E402
from fedattest.participant import activate  # noqa: E402
from fedattest.participant.client import coordinator_context, revocation_fetcher  # noqa: E402
from fedattest.pki import identity as ident  # noqa: E402
from fedattest.policy.approval import approve, generate_key, private_key_pem, public_key_pem  # noqa: E402
from fedattest.policy.federation import parse_policy  # noqa: E402
from fedattest.policy.template import policy_template  # noqa: E402
from fedattest.tee import SimulatedPlatform, WorkloadIdentity  # noqa: E402

ZERO = "00" * 32


def policy(approver: str, keys: dict[str, str], commitment: str) -> str:
    text = policy_template("revocation-bench", [("alice", approver)], 1, keys)
    text = text.replace(f'[coordinator]\nmrenclave = ["{ZERO}"]', f'[coordinator]\nmrenclave = ["{DEFAULT_SIM_MRENCLAVE}"]')
    text = text.replace(f'attestation_required = true\nmrenclave = ["{ZERO}"]',
                        f'attestation_required = true\nmrenclave = ["{SIM_SUPERLINK_MRENCLAVE}"]')  # fmt: skip
    text = text.replace(f'mrsigner = "{ZERO}"\nisv_prod_id = 1\nmin_isv_svn = 2', f'mrenclave = ["{SIM_SUPERNODE_MRENCLAVE}"]')
    text = text.replace(f'data_commitment = "{ZERO}"', f'data_commitment = "{commitment}"')
    text = text.replace('dns_names = ["aggregator.example.org"]', 'dns_names = ["localhost"]')
    text = text.replace("max_activations = 1", "max_activations = 2")
    return text.replace("allow_simulation = false", "allow_simulation = true")


def wait_for(what: str, check: Any, process: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout  # only stops a hang
    while not check():
        if process.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"error: {what} did not happen: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.01)


def start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def strategy(url: str, root_pem: str) -> Any:
    accepted: list[int] = []
    root = x509.load_pem_x509_certificate(root_pem.encode())
    wrapper = type("AttestedStrategyImpl", (AttestedStrategy, Strategy), {})
    made = wrapper(FedAvg(min_available_nodes=1, min_train_nodes=1), UpdateVerifier(root, "revocation-bench"),
                   lambda: {"hospital-a"}, lambda outcome: accepted.append(outcome.round) or len(accepted), run_id=7,
                   revocations=revocation_fetcher(url, root_pem))  # fmt: skip
    return made, accepted


class _Nodes:
    def get_node_ids(self) -> list[int]:
        return [1]


def one_update(made: Any, rnd: int, identity: Path) -> None:
    """One round in which hospital-a sends its signed update."""
    (instruction,) = made.configure_train(rnd, ArrayRecord([np.zeros(4)]), ConfigRecord(), _Nodes())
    signer = UpdateSigner((identity / "key.pem").read_bytes(), (identity / "chain.pem").read_bytes())

    def train(message: Any, context: object) -> Any:
        content = {"arrays": ArrayRecord([np.full(4, 0.1)]), "metrics": MetricRecord({"num-examples": 10})}
        return Message(RecordDict(content), reply_to=message)

    with contextlib.suppress(FedattestError):  # a refused update stops the run: what this benchmark times
        made.aggregate_train(rnd, [signing_mod(signer)(instruction, None, train)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--refresh", type=float, default=2.0, help="the SuperLink's node-key refresh (its default: 2 s)")
    parser.add_argument("--cert-lifetime", type=float, default=86400.0, help="the baseline: seconds a certificate lives")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.repeat < 1 or args.refresh < 0.2:
        parser.error("--repeat must be at least 1 and --refresh at least 0.2")
    TaskIdentity._run_id, TaskIdentity._node_id, TaskIdentity._task_id = 7, 0, 1  # what a Flower process sets
    logging.getLogger("fedattest").setLevel(logging.ERROR)  # the refusals are expected here
    logging.getLogger("flwr").setLevel(logging.WARNING)
    fedattest = [sys.executable, "-m", "fedattest"]
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as name:
        tmp = Path(name)
        platform = SimulatedPlatform.create(tmp / "platform")
        approver, members = generate_key(), {m: generate_key() for m in ("aggregator", "hospital-a")}
        keys = {m: public_key_pem(k.public_key()) for m, k in members.items()}
        (tmp / "aggregator.key").write_bytes(private_key_pem(members["aggregator"]))
        text = policy(public_key_pem(approver.public_key()), keys, "ab" * 32)
        (tmp / "policy.toml").write_text(text)
        (tmp / "alice.json").write_text(approve(parse_policy(text), "alice", approver).to_json())
        coord_log, sl_log = tmp / "coordinator.log", tmp / "superlink.log"
        coord = start([*fedattest, "coordinator", "serve", "--state", str(tmp / "state"), "--platform", str(platform.directory),
                       "--policy", str(tmp / "policy.toml"), "--approval", str(tmp / "alice.json"),
                       "--listen", "127.0.0.1:0"], coord_log)  # fmt: skip
        superlink = None
        try:
            wait_for("the coordinator to listen", (tmp / "state" / "url").exists, coord, coord_log)
            url, root_pem = (tmp / "state" / "url").read_text().strip(), (tmp / "state" / "root_ca.pem").read_text()
            superlink = start([*fedattest, "flower", "superlink", "--coordinator", url, "--root-ca",
                               str(tmp / "state" / "root_ca.pem"), "--member", "aggregator", "--enrolment-key",
                               str(tmp / "aggregator.key"), "--state", str(tmp / "superlink"), "--platform",
                               str(platform.directory), "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0",
                               "--refresh", str(args.refresh)], sl_log)  # fmt: skip
            wait_for("the SuperLink to start", (tmp / "superlink" / "superlink.json").exists, superlink, sl_log)
            collaborator = platform.tee(WorkloadIdentity(bytes.fromhex(SIM_SUPERNODE_MRENCLAVE),
                                                         bytes.fromhex(DEFAULT_SIM_MRSIGNER)))  # fmt: skip
            made, accepted = strategy(url, root_pem)
            http = httpx.Client(verify=coordinator_context(root_pem), timeout=30)
            evictions, refusals, late = [], [], 0
            rnd = 0
            for i in range(args.repeat):
                identity = tmp / f"hospital-a-{i}"
                registered = sl_log.read_text().count("registered the attested node key of hospital-a")
                activate(url, root_pem, "hospital-a", collaborator, identity, enrolment_key=members["hospital-a"],
                         extra_keys={"node": ident.new_key().public_key()})  # fmt: skip
                wait_for("the SuperLink to register hospital-a",
                         lambda n=registered: sl_log.read_text().count("registered the attested node key of hospital-a") > n,
                         superlink, sl_log)  # fmt: skip
                rnd += 1
                one_update(made, rnd, identity)
                if accepted[-1:] != [rnd]:
                    raise SystemExit("error: hospital-a's update was refused before the revocation")
                removed = sl_log.read_text().count("removed the node key of hospital-a")
                text = policy(public_key_pem(approver.public_key()), keys, f"{i + 1:02x}" * 32)
                approval = [approve(parse_policy(text), "alice", approver).to_json()]
                response = http.post(f"{url}/api/v1/policy", json={"policy": text, "approvals": approval})
                approved = time.monotonic()  # the update is in force when the approval's response arrives
                if response.status_code != 200 or [r["member"] for r in response.json()["revoked"]] != ["hospital-a"]:
                    raise SystemExit(f"error: the update did not revoke hospital-a: {response.text}")
                rnd += 1
                one_update(made, rnd, identity)
                refusals.append(time.monotonic() - approved)
                late += accepted[-1:] == [rnd]
                wait_for("the SuperLink to remove hospital-a's key",
                         lambda n=removed: sl_log.read_text().count("removed the node key of hospital-a") > n,
                         superlink, sl_log)  # fmt: skip
                evictions.append(time.monotonic() - approved)
            http.close()
        finally:
            if superlink is not None:
                stop(superlink)
            stop(coord)
    worst = max(*evictions, *refusals)
    result = {
        "repeat": args.repeat, "refresh_s": args.refresh,
        "superlink_eviction_s": {"median": sorted(evictions)[len(evictions) // 2], "max": max(evictions)},
        "strategy_refusal_s": {"median": sorted(refusals)[len(refusals) // 2], "max": max(refusals)},
        "updates_accepted_after_approval": late,
        "baseline_cert_lifetime_s": args.cert_lifetime, "ratio_worst_to_baseline": worst / args.cert_lifetime,
    }  # fmt: skip
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"revocation, {args.repeat} policy updates (SuperLink refresh {args.refresh:g} s):")
        print(f"  approval -> SuperLink drops the node key: median {result['superlink_eviction_s']['median']:.2f} s,"
              f" max {max(evictions):.2f} s")  # fmt: skip
        print(f"  approval -> the ServerApp refuses the next update: median {result['strategy_refusal_s']['median'] * 1000:.0f}"
              f" ms, max {max(refusals) * 1000:.0f} ms (the CRL is fetched at every aggregation)")  # fmt: skip
        print(f"  updates of the revoked member accepted after the approval: {late}")
        print(f"  baseline (before revocation: until the certificate expires): {args.cert_lifetime:g} s;"
              f" worst case now {worst:.2f} s, {args.cert_lifetime / worst:,.0f}x sooner")  # fmt: skip
    return 1 if late else 0


if __name__ == "__main__":
    sys.exit(main())
