"""The attested federation, end to end, on one machine with the simulated TEE.

    python examples/digits/run_demo.py [--out DIR] [--summary FILE]

Steps: a simulated SGX platform; three hospitals commit to their data; the policy (measurements, data
commitments, DP, rounds, the approved app's hash) is approved; the coordinator starts and is verified;
the aggregator (SuperLink) and three collaborators (SuperNodes) activate and start as separate processes
over TLS on 127.0.0.1; the approved app trains for the policy's rounds. Then the attacks the design exists
for, each refused: data changed after commit, a node that is not attested, outsiders calling the
SuperLink's Control and Runtime APIs, and an app that is not in the policy. Last, the audit bundle is
exported and verified offline. Every process logs to OUT/logs/.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fedattest.flower.local import Processes  # each process in its own session, its log in logs/, all stopped

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
FEDATTEST = [sys.executable, "-m", "fedattest"]
# What is in this directory but not part of the Flower app (the app bundle's hash covers only the app).
NOT_IN_APP = ("__pycache__", "*.fab", "run_demo.py", "prepare_data.py", "README.md", "policy.template.toml")
HOSPITALS = ["hospital-a", "hospital-b", "hospital-c"]
MEMBERS = ["aggregator", *HOSPITALS]
ROUNDS = 3
# Flower's deployment engine polls (SuperNode idle sleep 3 s, fixed; executor poll 1 s): the executor polls faster here.
FAST_FLOWER = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2"}


def say(text: str) -> None:
    print(text, flush=True)


def run(
    argv: list[str], env: dict[str, str], *, check: bool = True, timeout: float = 120, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False, cwd=cwd)
    if check and done.returncode != 0:
        raise SystemExit(f"error: {' '.join(map(str, argv))} failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    return done


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def refusal_line(text: str) -> str | None:
    pattern = r"Failed to activate SuperNode|unauthenticated|permission denied"
    lines = [ln.strip() for ln in text.splitlines() if re.search(pattern, ln, re.IGNORECASE)]
    return lines[-1] if lines else None


def wait_for(what: str, predicate: Any, timeout: float = 60, procs: Processes | None = None, name: str | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if procs is not None and name is not None and procs.procs[name].poll() is not None:
            raise SystemExit(f"error: {name} exited while waiting for {what}:\n{procs.log(name)[-3000:]}")
        time.sleep(0.1)
    raise SystemExit(f"error: timed out waiting for {what}")


def build_fab(src: Path, holdout: Path, dest: Path, env: dict[str, str], marker: str | None = None) -> tuple[Path, str]:
    """Copy the app to ``dest`` with the benchmark set (optionally changed) and build its FAB; returns (dir, SHA-256)."""
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns(*NOT_IN_APP))
    shutil.copyfile(holdout, dest / "digits_fl" / "holdout.json")
    if marker:
        with open(dest / "digits_fl" / "server_app.py", "a") as f:
            f.write(f"\n# {marker}\n")
    run([str(BIN / "flwr"), "build"], env, cwd=dest)
    (fab,) = dest.glob("*.fab")
    return dest, hashlib.sha256(fab.read_bytes()).hexdigest()


def write_policy(  # noqa: PLR0917 - the policy's variable parts
    path: Path, roots: dict[str, str], app_hash: str, approver_pub: str, keys: Path, rounds: int = ROUNDS
) -> None:
    """policy.template.toml with this run's measurements, commitments, app hash, approver key and the members'
    enrolment keys (``keys/NAME.pub.pem``)."""
    from fedattest.cli.coordinator import DEFAULT_SIM_MRENCLAVE
    from fedattest.cli.flower import SIM_SUPERLINK_MRENCLAVE, SIM_SUPERNODE_MRENCLAVE

    template = string.Template((HERE / "policy.template.toml").read_text())
    path.write_text(template.substitute(
        coordinator_mrenclave=DEFAULT_SIM_MRENCLAVE, aggregator_mrenclave=SIM_SUPERLINK_MRENCLAVE,
        collaborator_mrenclave=SIM_SUPERNODE_MRENCLAVE, rounds=rounds, app_hash=app_hash,
        alice_public_key=approver_pub.strip(), **{f"commitment_{h.replace('-', '_')}": roots[h] for h in HOSPITALS},
        **{f"enrolment_key_{m.replace('-', '_')}": (keys / f"{m}.pub.pem").read_text().strip() for m in MEMBERS},
    ))  # fmt: skip


def flwr_config(home: Path, control: str, root_ca: Path) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "attested"\n\n[superlink.attested]\naddress = "{control}"\nroot-certificates = "{root_ca}"\n'
    )


def post_protobuf(url: str, root_ca: Path, body: bytes = b"") -> tuple[int, str]:
    """What an outsider gets from the SuperLink: status and body text."""
    import ssl

    ctx = ssl.create_default_context(cafile=str(root_ca))
    try:
        response = httpx.post(url, content=body, headers={"content-type": "application/protobuf"}, verify=ctx, timeout=10)
    except httpx.HTTPError as exc:
        return 0, str(exc)
    return response.status_code, response.text


@contextlib.contextmanager
def federation(out: Path) -> Iterator[dict[str, Any]]:
    env = {**os.environ, **FAST_FLOWER, "PYTHONUNBUFFERED": "1", "FLWR_HOME": str(out / "flwr-cli"),
           "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "FLWR_TELEMETRY_ENABLED": "0"}  # fmt: skip
    procs = Processes(out / "logs", env)
    try:
        yield {"env": env, "procs": procs}
    finally:
        procs.stop_all()


@dataclass
class Started:
    """A running attested federation: where everything is."""

    url: str
    root_ca: Path
    coord_state: Path
    fleet: str
    control: str
    app_dir: Path
    rogue_dir: Path
    roots: dict[str, str]


def start_attested(
    out: Path, procs: Processes, env: dict[str, str], rounds: int = ROUNDS, prepare: Callable[[Path], None] | None = None
) -> Started:
    """Steps 1-3: platform, data and commitments, app, approved policy, coordinator (verified), SuperLink and
    SuperNodes started and activated. ``prepare(data_dir)`` may change the hospitals' data before they commit
    to it. Used by the demo and by benchmarks/flower_overhead.py and benchmarks/poisoned_member.py."""
    say("== 1. simulated SGX platform, data commitments, the approved app")
    run([*FEDATTEST, "sim", "init", str(out / "platform")], env)
    holdout = out / "holdout.json"
    run([sys.executable, str(HERE / "prepare_data.py"), str(out / "data"), "--holdout", str(holdout)], env)
    if prepare is not None:
        prepare(out / "data")
    roots = {}
    for h in HOSPITALS:
        doc = json.loads(run([*FEDATTEST, "data", "commit", str(out / "data" / h), "--json"], env).stdout)
        roots[h] = doc["root"]
        say(f"   {h}: data commitment {doc['root'][:16]}... ({doc['files']} files, {doc['bytes']} bytes)")
    app_dir, app_hash = build_fab(HERE, holdout, out / "app", env)
    rogue_dir, rogue_hash = build_fab(HERE, holdout, out / "app-unapproved", env, marker="an unreviewed change")
    say(f"   approved app {app_hash[:16]}...; an unapproved variant {rogue_hash[:16]}...")

    say("== 2. the policy, approved; the coordinator, verified")
    run([*FEDATTEST, "policy", "keygen", "alice", "--dir", str(out)], env)
    keys = out / "keys"  # each member's enrolment key: in a real federation each member makes and keeps its own
    keys.mkdir()
    for member in MEMBERS:
        run([*FEDATTEST, "policy", "keygen", member, "--dir", str(keys)], env)
    policy = out / "policy.toml"
    write_policy(policy, roots, app_hash, (out / "alice.pub.pem").read_text(), keys, rounds)
    run([*FEDATTEST, "policy", "approve", str(policy), "--name", "alice", "--key", str(out / "alice.key"),
         "-o", str(out / "alice.approval.json")], env)  # fmt: skip
    coord_state = out / "coordinator"
    procs.start("coordinator", [*FEDATTEST, "coordinator", "serve", "--state", str(coord_state), "--platform",
                                str(out / "platform"), "--policy", str(policy), "--approval",
                                str(out / "alice.approval.json"), "--listen", "127.0.0.1:0"])  # fmt: skip
    url = wait_for("the coordinator", lambda: (coord_state / "url").exists() and (coord_state / "url").read_text().strip(),
                   procs=procs, name="coordinator")  # fmt: skip
    root_ca = out / "root_ca.pem"
    verified = run([*FEDATTEST, "coordinator", "verify", url, "--policy", str(policy), "--platform", str(out / "platform"),
                    "-o", str(root_ca)], env)  # fmt: skip
    say(f"   coordinator at {url}: {verified.stdout.strip().splitlines()[0] if verified.stdout.strip() else 'verified'}")

    say("== 3. the aggregator and three collaborators activate and start (separate processes, TLS)")
    common = ["--coordinator", url, "--root-ca", str(root_ca), "--platform", str(out / "platform")]
    sl_state = out / "superlink"
    procs.start("superlink", [*FEDATTEST, "flower", "superlink", *common, "--member", "aggregator",
                              "--enrolment-key", str(keys / "aggregator.key"), "--state", str(sl_state),
                              "--listen", "127.0.0.1:0", "--internal", "127.0.0.1:0", "--refresh", "0.5"])  # fmt: skip
    addresses = wait_for("the SuperLink", lambda: (sl_state / "superlink.json").exists()
                         and json.loads((sl_state / "superlink.json").read_text()),
                         procs=procs, name="superlink")  # fmt: skip
    fleet, control = addresses["fleet"], addresses["control"]
    say(f"   SuperLink: Fleet API on {fleet} (public), Control/Runtime on {control} (internal)")
    for h in HOSPITALS:
        procs.start(h, [*FEDATTEST, "flower", "supernode", *common, "--member", h, "--enrolment-key", str(keys / f"{h}.key"),
                        "--superlink", fleet,
                        "--data", str(out / "data" / h), "--state", str(out / h)])  # fmt: skip
    flwr_config(out / "flwr-cli", control, root_ca)
    for h in HOSPITALS:
        wait_for(f"{h} to activate", lambda h=h: "ACTIVATED" in procs.log(h), procs=procs, name=h)

    return Started(url, root_ca, coord_state, fleet, control, app_dir, rogue_dir, roots)


def change_cycle(out: Path, env: dict[str, str], procs: Any, fed: Started) -> dict[str, Any]:
    """The developer changes the app; the approvers accept the change: add its hash to the policy, approve the new
    version, put it in force on the running coordinator. Every participant re-provisions under it without a new
    activation or a restart, and the next `flwr run` of the changed app trains."""
    say("\n== 5. the change cycle: the app changes, the approvers accept it, the running federation takes it")
    url, root_ca, app_dir = fed.url, fed.root_ca, fed.app_dir
    changed_dir = out / "app-v2"
    shutil.copytree(app_dir, changed_dir, ignore=shutil.ignore_patterns("*.fab"))
    # Version 2 is written as a plain Flower app: no signing mod in its ClientApp, a bare FedAvg asked to run 5
    # rounds in its ServerApp. The participants enforce the policy all the same: every reply signed, only attested
    # updates counted, the policy's DP and its 3 rounds.
    client = changed_dir / "digits_fl" / "client_app.py"
    client.write_text(client.read_text().replace("app = ClientApp(mods=[attested_signing_mod])", "app = ClientApp()"))
    server = changed_dir / "digits_fl" / "server_app.py"
    server.write_text(server.read_text().replace("strategy = attested_strategy(dp_strategy(fedavg, context), context)",
                                                 "strategy = fedavg").replace("num_rounds=provisioned.rounds", "num_rounds=5"))
    before = {m["name"]: m["activations"] for m in httpx.get(f"{url}/api/v1/members", verify=str(root_ca), timeout=10).json()}
    policy = out / "policy.toml"
    added = run([*FEDATTEST, "policy", "add-app", str(policy), str(changed_dir)], env)
    say(f"   $ fedattest policy add-app policy.toml {changed_dir.name}/\n   {added.stdout.strip()}")
    run([*FEDATTEST, "policy", "approve", str(policy), "--name", "alice", "--key", str(out / "alice.key"),
         "-o", str(out / "alice.approval.v2.json")], env)  # fmt: skip
    updated = run([*FEDATTEST, "coordinator", "update-policy", str(policy), "--approval", str(out / "alice.approval.v2.json"),
                   "--coordinator", url, "--root-ca", str(root_ca)], env)  # fmt: skip
    say(f"   $ fedattest coordinator update-policy policy.toml --approval alice.approval.v2.json ...\n"
        f"   {updated.stdout.strip()}")  # fmt: skip
    for name in ("superlink", *HOSPITALS):

        def taken(n: str = name) -> str | None:
            return next((ln for ln in procs.log(n).splitlines() if "re-provisioned under policy" in ln), None)

        line = wait_for(f"{name} to take the new policy", taken, procs=procs, name=name, timeout=60)
        say(f"   {name}: {line[line.index('re-provisioned'):][:100]}")
    t0 = time.monotonic()
    done = run([str(BIN / "flwr"), "run", str(changed_dir), "attested", "--stream"], env, timeout=300)
    (out / "logs" / "changed-app-run.log").write_text(done.stdout + done.stderr)
    rounds = re.findall(r"fedattest-example: round \d+: accuracy ([0-9.]+)", done.stdout)
    attested = re.findall(r"round \d+: 3 attested updates", done.stdout + done.stderr)
    after = {m["name"]: m["activations"] for m in httpx.get(f"{url}/api/v1/members", verify=str(root_ca), timeout=10).json()}
    log = done.stdout + done.stderr
    enforced = [line.strip() for line in log.splitlines() if "policy's" in line and "fedattest" in line][:2]
    say(f"   the changed app (a plain ClientApp and FedAvg asking for 5 rounds): {len(rounds)} rounds trained in"
        f" {time.monotonic() - t0:.0f} s, {len(attested)} with 3 signed, attested updates; activations before and after:"
        f" {sum(before.values())} and {sum(after.values())} (no identity wiped, none spent)")  # fmt: skip
    for line in enforced:
        say(f"   enforced: {line[line.index('fedattest:') + 11 :]}")
    audit = json.loads(httpx.get(f"{url}/api/v1/audit", verify=str(root_ca), timeout=10).text)
    recorded = [e["data"] for e in audit.get("entries", []) if e.get("kind") == "round"][-len(rounds) :] if rounds else []
    return {
        "rounds": len(rounds), "attested_rounds": len(attested), "activations_before": before, "activations_after": after,
        "dp_recorded": [r.get("dp") for r in recorded], "enforced": enforced,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("demo-output/federation"))
    parser.add_argument("--summary", type=Path, help="Also write the results as JSON here (for tests).")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    marker = out / ".fedattest-federation-demo"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        sys.stderr.write(f"error: {out} is not empty and was not made by this demo: choose another --out\n")
        return 2
    shutil.rmtree(out, ignore_errors=True)  # our own earlier output only (the marker says so)
    out.mkdir(parents=True)
    marker.touch()
    started = time.monotonic()
    summary: dict[str, Any] = {"attacks": {}}

    with federation(out) as fed:
        env, procs = fed["env"], fed["procs"]
        fed_ = start_attested(out, procs, env)
        url, root_ca, coord_state, fleet, control = fed_.url, fed_.root_ca, fed_.coord_state, fed_.fleet, fed_.control
        app_dir, rogue_dir, roots = fed_.app_dir, fed_.rogue_dir, fed_.roots

        say(f"== 4. federated training: {ROUNDS} rounds (from the policy), DP on the aggregator")
        t0 = time.monotonic()
        done = run([str(BIN / "flwr"), "run", str(app_dir), "attested", "--stream"], env, timeout=300)
        train_seconds = time.monotonic() - t0
        (out / "logs" / "flwr-run.log").write_text(done.stdout + done.stderr)  # the ServerApp's output, streamed
        accuracy = [
            float(m)
            for m in re.findall(r"fedattest-example: round \d+: accuracy ([0-9.]+)", done.stdout + procs.log("superlink"))
        ]
        for i, acc in enumerate(accuracy, 1):
            say(f"   round {i}: accuracy {acc:.3f}")
        if len(accuracy) != ROUNDS:
            say(done.stdout[-4000:])
            raise SystemExit(f"error: expected {ROUNDS} rounds of results, got {len(accuracy)} (logs in {out / 'logs'})")
        summary["accuracy"] = accuracy
        summary["train_seconds"] = train_seconds
        members = httpx.get(f"{url}/api/v1/members", verify=str(root_ca), timeout=10).json()
        summary["members"] = members
        say("\n   member        role          attestation  measurement       TCB        data commitment   simulated")
        audit = json.loads(httpx.get(f"{url}/api/v1/audit", verify=str(root_ca), timeout=10).text)
        activations = {e["data"]["member"]: e["data"] for e in audit.get("entries", []) if e.get("kind") == "activation"}
        for m in members:
            a = activations.get(m["name"], {})
            commit = roots.get(m["name"], "-")
            say(f"   {m['name']:<13} {m['role']:<13} {a.get('attestation')!s:<12} {str(a.get('mrenclave'))[:16]:<17}"
                f" {a.get('tcb_status')!s:<10} {commit[:16]:<17} {a.get('simulated')}")  # fmt: skip
        rounds = [e["data"] for e in audit.get("entries", []) if e.get("kind") == "round"]
        summary["rounds_recorded"] = len(rounds)
        say(f"   rounds recorded in the coordinator's audit log: {len(rounds)}")

        summary["change_cycle"] = change_cycle(out, env, procs, fed_)

        say("\n== 6. attacks")
        # a) outsiders on the SuperLink's public address: the Control and Runtime APIs are not there.
        outsider_calls = (
            ("register_node_public", fleet, "/v1/control/register-node",
             "outsider registers its own node key at the public address", 90),
            ("acquire_task_public", fleet, "/v1/runtime/acquire-task",
             "outsider takes the ServerApp's task token at the public address", 60),
            ("register_node_internal", control, "/v1/control/register-node", "node registration on the internal address", 70),
            ("acquire_task_internal", control, "/v1/runtime/acquire-task",
             "the task token on the internal address, without the SuperExec secret", 60),
        )  # fmt: skip
        for key, address, path, label, shown in outsider_calls:
            status, text = post_protobuf(f"https://{address}{path}", root_ca)
            summary["attacks"][key] = status
            say(f"   {label}: HTTP {status} {text[:shown]}")
        # b) a SuperNode that is not attested: its key was never registered, Flower refuses it.
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        rogue_key = out / "rogue-node.key"
        rogue_key.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()))  # fmt: skip
        rogue_key.chmod(0o600)
        procs.start("unattested-supernode", [str(BIN / "flower-supernode"), "--superlink", fleet, "--root-certificates",
                    str(root_ca), "--auth-supernode-private-key", str(rogue_key), "--port", str(free_port())])  # fmt: skip
        line = wait_for("the SuperLink to refuse the unattested node", lambda: refusal_line(procs.log("unattested-supernode")),
                        timeout=60)  # fmt: skip
        procs.stop("unattested-supernode")
        summary["attacks"]["unattested_node_refused"] = True
        why = re.findall(r"activate-node\].*exception: (.*)", procs.log("superlink"))
        say(f"   a SuperNode whose key is not attested: refused: {line[:60]} (SuperLink: {why[-1] if why else '?'})")
        # c) a genuine collaborator enclave (the approved build) that tries to take hospital-b's place, signed with
        #    the key of the member that runs it (hospital-a): the coordinator wants hospital-b's own signature.
        from fedattest.cli.flower import SIM_SUPERNODE_MRENCLAVE

        impostor = run([*FEDATTEST, "participant", "activate", "--coordinator", url, "--root-ca", str(root_ca), "--platform",
                        str(out / "platform"), "--member", "hospital-b", "--enrolment-key",
                        str(out / "keys" / "hospital-a.key"), "--mrenclave", SIM_SUPERNODE_MRENCLAVE,
                        "--out", str(out / "impostor")], env, check=False)  # fmt: skip
        refused = impostor.returncode == 1 and "is not 'hospital-b''s" in impostor.stderr
        summary["attacks"]["impostor_refused"] = refused
        why = impostor.stderr.strip()
        why = why[why.find("HTTP 403"):] if "HTTP 403" in why else why
        say(f"   an approved enclave activating as hospital-b with hospital-a's key: {'refused' if refused else 'NOT REFUSED'}:"
            f" {why[:110]}")  # fmt: skip
        # d) an app that is not in the policy.
        bad = run([str(BIN / "flwr"), "run", str(rogue_dir), "attested"], env, check=False, timeout=120)
        text = " ".join((bad.stdout + bad.stderr).replace("│", " ").split())
        (out / "logs" / "unapproved-run.log").write_text(bad.stdout + bad.stderr)
        refused = bad.returncode != 0 and "is not in the allowed apps" in text
        summary["attacks"]["unapproved_app_refused"] = refused
        why = re.search(r"Flower app [0-9a-f]{64} is not in the allowed apps[^:]*: refusing to install or run it", text)
        say(
            f"   an app that is not in the policy: {'refused' if refused else 'NOT REFUSED'}:"
            f" {why.group(0) if why else text[-150:]}"
        )
        # e) data changed after commit: hospital-c swaps a byte of its training data; the next read fails.
        tampered = out / "data" / "hospital-c" / "train.npz"
        blob = bytearray(tampered.read_bytes())
        blob[len(blob) // 2] ^= 0x01
        tampered.write_bytes(bytes(blob))
        second = subprocess.Popen([str(BIN / "flwr"), "run", str(app_dir), "attested", "--stream"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
        try:
            line = wait_for("hospital-c to detect the changed data",
                            lambda: next((ln for ln in procs.log("hospital-c").splitlines() if "data integrity:" in ln), None),
                            timeout=90)  # fmt: skip
        finally:
            second.kill()
            second.communicate()
        summary["attacks"]["changed_data_detected"] = True
        say(f"   hospital-c changed its data after commit: detected on read: {line[line.index('data integrity:') :][:110]}...")

        say("\n== 7. the audit bundle, verified offline")
        bundle = out / "audit-bundle.tar"
        run([*FEDATTEST, "audit", "export", "--coordinator", url, "--root-ca", str(root_ca), "-o", str(bundle)], env)
        verdict = run([*FEDATTEST, "audit", "verify", str(bundle), "--key", str(coord_state / "audit-key.pub.pem"),
                       "--platform", str(out / "platform")], env, check=False)  # fmt: skip
        summary["audit_verify_exit"] = verdict.returncode
        say("   " + "\n   ".join(verdict.stdout.strip().splitlines()[-4:]))
        if verdict.returncode != 0:
            say(verdict.stdout + verdict.stderr)
        say(f"   audit bundle: {bundle}")
    summary["seconds"] = time.monotonic() - started
    say(f"\ndone in {summary['seconds']:.0f} s; logs in {out / 'logs'}")
    if args.summary:
        args.summary.write_text(json.dumps(summary, indent=2))
    return 0 if summary["audit_verify_exit"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
