"""Activations against a real coordinator on 127.0.0.1: N concurrent simulated participants.

    python benchmarks/activations.py [--clients 50] [--per-client 10] [--json]

Starts `fedattest coordinator serve` (simulated TEE, HTTPS) in a subprocess with a policy of CLIENTS
collaborators, then runs CLIENTS threads; each repeatedly gets a nonce, quotes its claims in the
simulated TEE and activates (keep-alive HTTPS). Reports activations/s and p50/p99 latency of one
activation (nonce + activate), and where the coordinator's time went (its per-phase counters from
/api/v1/metrics). The baseline in the same run is the cost of the client-side work alone (key, CSR,
quote), which shares the machine's cores with the server. Targets (issue 4): >= 500/s, p99 < 100 ms.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import re
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402

from fedattest.pki import identity as ident  # noqa: E402
from fedattest.policy.approval import approve, generate_key, public_key_pem  # noqa: E402
from fedattest.policy.federation import parse_policy  # noqa: E402
from fedattest.tee import SimulatedPlatform, WorkloadIdentity  # noqa: E402

COORD = hashlib.sha256(b"fedattest coordinator (simulated)").hexdigest()
WORKLOAD = hashlib.sha256(b"benchmark collaborator").digest()
SIGNER = hashlib.sha256(b"fedattest unsigned development workload").digest()


def policy(clients: int, per_client: int, approver_pem: str, member_pem: str) -> str:
    """Every member has the same enrolment key here (the benchmark plays all of them)."""
    key = f'enrolment_key = """\n{member_pem.strip()}\n"""\n'
    members = "".join(
        f'[[members]]\nname = "c{i}"\nrole = "collaborator"\n{key}data_commitment = "{"ab" * 32}"\n'
        f"max_activations = {per_client + 2}\n\n"
        for i in range(clients)
    )
    return f"""version = 1
name = "bench"
[coordinator]
mrenclave = ["{COORD}"]
allow_simulation = true
[roles.aggregator]
mrenclave = ["{"00" * 32}"]
allow_simulation = true
[roles.collaborator]
mrenclave = ["{WORKLOAD.hex()}"]
allow_simulation = true
[[members]]
name = "agg"
role = "aggregator"
{key}{members}[dp]
noise_multiplier = 1.0
clipping_norm = 1.0
sampled_clients = 1
target_delta = 1e-5
[apps]
allowed_hashes = ["{"00" * 32}"]
[approvals]
required = 1
[[approvals.approvers]]
name = "bench"
public_key = \"\"\"{approver_pem}\"\"\"
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--per-client", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.clients < 1 or args.per_client < 1:
        parser.error("--clients and --per-client must be at least 1")
    with tempfile.TemporaryDirectory(prefix="fedattest-bench-") as tmp_name:
        tmp = Path(tmp_name)
        platform = SimulatedPlatform.create(tmp / "platform")
        key = generate_key()
        member_key = generate_key()
        text = policy(args.clients, args.per_client, public_key_pem(key.public_key()), public_key_pem(member_key.public_key()))
        (tmp / "policy.toml").write_text(text)
        (tmp / "approval.json").write_text(approve(parse_policy(text), "bench", key).to_json())
        log = tmp / "coordinator.log"  # a file, not a pipe: nobody reads it while the server runs
        with log.open("wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp / "state"),
                 "--platform", str(tmp / "platform"),
                 "--policy", str(tmp / "policy.toml"), "--approval", str(tmp / "approval.json"), "--listen", "127.0.0.1:0",
                 # Every simulated participant comes from 127.0.0.1: lift the per-address nonce rate limit,
                 # which is there against outsiders, or it would be what this benchmark measures.
                 "--nonce-rate", "1000000", "--nonce-burst", "1000000"],
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            while not (tmp / "state" / "url").exists():
                if server.poll() is not None:
                    raise SystemExit(f"error: the coordinator did not start: {log.read_text(errors='replace')[-2000:]}")
                time.sleep(0.05)
            url = (tmp / "state" / "url").read_text().strip()
            context = ssl.create_default_context(cadata=(tmp / "state" / "root_ca.pem").read_text())
            tee = platform.tee(WorkloadIdentity(WORKLOAD, SIGNER))
            policy_hash = parse_policy(text).policy_hash().hex()

            # Baseline: the client-side work alone (what every activation costs before the network).
            start = time.perf_counter()
            for _ in range(50):
                k = ident.new_key()
                ident.make_csr(k, "c0")
                tee.quote(bytes(64))
            client_ms = (time.perf_counter() - start) / 50 * 1000

            latencies: list[float] = []
            errors: list[str] = []
            lock = threading.Lock()

            def participant(i: int) -> None:
                with httpx.Client(verify=context, timeout=60) as http:
                    for _ in range(args.per_client):
                        began = time.perf_counter()
                        k = ident.new_key()
                        issued = http.post(f"{url}/api/v1/nonce")
                        if issued.status_code != 200:
                            with lock:
                                errors.append(f"POST /nonce: HTTP {issued.status_code} {issued.text}")
                            return
                        nonce = issued.json()["nonce"]
                        claims = {
                            "member": f"c{i}",
                            "nonce": nonce,
                            "policy_hash": policy_hash,
                            "keys": {"tls": ident.spki_sha256(k.public_key())},
                        }
                        quote = tee.quote(ident.claims_report_data(claims))
                        body = {
                            "member": f"c{i}",
                            "quote": base64.b64encode(quote).decode(),
                            "csr": ident.make_csr(k, f"c{i}"),
                            "claims": claims,
                            "enrolment": ident.sign_enrolment(member_key, claims),
                        }
                        response = http.post(f"{url}/api/v1/activate", json=body)
                        with lock:
                            if response.status_code == 200:
                                latencies.append(time.perf_counter() - began)
                            else:
                                errors.append(response.text)

            # Baseline in the same run: the HTTPS stack alone (two trivial requests per "activation").
            def trivial() -> None:
                with httpx.Client(verify=context, timeout=60) as http:
                    for _ in range(args.per_client):
                        http.post(f"{url}/api/v1/nonce")
                        http.get(f"{url}/api/v1/jwks")

            pool = [threading.Thread(target=trivial) for _ in range(args.clients)]
            began_http = time.perf_counter()
            for t in pool:
                t.start()
            for t in pool:
                t.join()
            http_rate = args.clients * args.per_client / (time.perf_counter() - began_http)

            threads = [threading.Thread(target=participant, args=(i,)) for i in range(args.clients)]
            start = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - start
            with httpx.Client(verify=context) as http:
                metrics = http.get(f"{url}/api/v1/metrics").text
        finally:
            os.killpg(server.pid, signal.SIGTERM)  # its own group: nothing it started outlives the benchmark
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=30)
    if errors:
        print(f"error: {len(errors)} activations failed, e.g. {errors[0]}", file=sys.stderr)
        return 1
    phases = {m.group(1): float(m.group(2)) for m in re.finditer(r'phase="(\w+)"\} ([0-9.]+)', metrics)}
    done = len(latencies)
    ordered = sorted(latencies)
    report = {
        "clients": args.clients,
        "activations": done,
        "activations_per_s": done / elapsed,
        "p50_ms": statistics.median(ordered) * 1000,
        "p99_ms": ordered[min(done - 1, int(done * 0.99))] * 1000,
        "client_side_ms_per_activation": client_ms,
        "https_baseline_pairs_per_s": http_rate,
        "server_phase_ms_per_activation": {p: s / done * 1000 for p, s in phases.items()},
    }
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"{done} activations by {args.clients} concurrent simulated participants in {elapsed:.2f} s")
    print(f"  throughput          {report['activations_per_s']:8.0f} activations/s   (target >= 500/s)")
    print(f"  latency p50 / p99   {report['p50_ms']:8.1f} / {report['p99_ms']:.1f} ms   (target p99 < 100 ms)")
    print(f"  client-side work    {client_ms:8.2f} ms per activation (key, CSR, quote; same machine)")
    print(f"  HTTPS stack alone   {http_rate:8.0f} request pairs/s (nonce + jwks, same clients): the ceiling here")
    for phase, ms in report["server_phase_ms_per_activation"].items():  # type: ignore[attr-defined]
        print(f"  server {phase:<12} {ms:8.2f} ms per activation")
    return 0


if __name__ == "__main__":
    sys.exit(main())
