"""A real coordinator for tests: `fedattest coordinator serve` as a subprocess over HTTPS on 127.0.0.1 (port
from the kernel), with a simulated platform and a policy approved by a test key.

The process runs in its own process group with its output in ``STATE/../coordinator-N.log`` (never a
pipe nobody reads: a chatty server would block on a full pipe), and :func:`stop` ends the whole group.
Use :func:`coordinator` (a context manager) wherever a test does not kill the process on purpose.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from fedattest.policy.approval import approve, generate_key, public_key_pem
from fedattest.policy.federation import parse_policy
from fedattest.policy.template import policy_template
from fedattest.tee import SimulatedPlatform, WorkloadIdentity

COORD = hashlib.sha256(b"fedattest coordinator (simulated)").digest()
SIGNER = hashlib.sha256(b"fedattest unsigned development workload").digest()
AGG = hashlib.sha256(b"aggregator build").digest()
COLLAB = hashlib.sha256(b"collaborator build").digest()
COMMITMENT = "ab" * 32
KEY = generate_key()
# Each member's own key: the policy lists its public half, and an activation as the member carries its signature.
ENROL = {"aggregator": generate_key(), "hospital-a": generate_key()}
STARTUP_TIMEOUT = 120  # only stops a hung start; a loaded machine may need many seconds
_logs = itertools.count()


def policy_text() -> str:
    members = {name: public_key_pem(key.public_key()) for name, key in ENROL.items()}
    text = policy_template("hospitals", [("alice", public_key_pem(KEY.public_key()))], 1, members)
    zero = '"' + "00" * 32 + '"'
    text = text.replace(f"[coordinator]\nmrenclave = [{zero}]", f'[coordinator]\nmrenclave = ["{COORD.hex()}"]')
    text = text.replace(f"[roles.aggregator]\nattestation_required = true\nmrenclave = [{zero}]",
                        f'[roles.aggregator]\nattestation_required = true\nmrenclave = ["{AGG.hex()}"]')  # fmt: skip
    text = text.replace(f"mrsigner = {zero}\nisv_prod_id = 1\nmin_isv_svn = 2", f'mrenclave = ["{COLLAB.hex()}"]')
    text = text.replace(f"data_commitment = {zero}", f'data_commitment = "{COMMITMENT}"')
    text = text.replace("max_activations = 3\n", "max_activations = 50\n", 1)  # many tests activate the aggregator
    text = re.sub(r"max_activations = 3 +#.*", "max_activations = 1", text)  # hospital-a: one, to test the limit
    return text.replace("allow_simulation = false", "allow_simulation = true")


@dataclass
class Running:
    url: str
    state: Path
    platform: SimulatedPlatform
    policy_path: Path
    process: subprocess.Popen[bytes]
    log: Path
    root_pem: str = ""

    def http(self) -> httpx.Client:
        return httpx.Client(verify=ssl.create_default_context(cadata=self.root_pem), timeout=30)


def start(tmp: Path, platform: SimulatedPlatform, *extra: str, state: Path | None = None) -> Running:
    """Start a coordinator and wait until it has written its URL. Pair with :func:`stop` in a ``finally``."""
    outcome = try_start(tmp, platform, *extra, state=state)
    if outcome.running is None:
        raise AssertionError(f"the coordinator did not start (exit {outcome.returncode}): {outcome.output[-3000:]}")
    return outcome.running


def stop(running: Running, sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to the coordinator's process group and wait; SIGKILL it if it does not exit in time."""
    process = running.process
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
            process.wait(timeout=60)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


@contextmanager
def coordinator(tmp: Path, platform: SimulatedPlatform, *extra: str, state: Path | None = None) -> Iterator[Running]:
    """A running coordinator for the ``with`` block, stopped on every way out of it."""
    running = start(tmp, platform, *extra, state=state)
    try:
        yield running
    finally:
        stop(running)


def tee(running: Running, mrenclave: bytes) -> Any:
    return running.platform.tee(WorkloadIdentity(mrenclave, SIGNER))


@dataclass
class Outcome:
    """How a start ended: ``running`` when the coordinator listens (the caller stops it), else its exit code
    and output."""

    returncode: int | None
    output: str
    running: Running | None = None


def try_start(tmp: Path, platform: SimulatedPlatform, *extra: str, state: Path | None = None) -> Outcome:
    """Start a coordinator that may refuse to start: its exit code and output, or the running coordinator."""
    policy_path = tmp / "policy.toml"
    if not policy_path.exists():
        policy_path.write_text(policy_text())
        (tmp / "alice.json").write_text(approve(parse_policy(policy_text()), "alice", KEY).to_json())
    state = state or tmp / "state"
    args = [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(state),
            "--platform", str(platform.directory), "--policy", str(policy_path),
            "--approval", str(tmp / "alice.json"), "--listen", "127.0.0.1:0", *extra]  # fmt: skip
    (state / "url").unlink(missing_ok=True)
    log = tmp / f"coordinator-{next(_logs)}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    running = Running("", state, platform, policy_path, process, log)
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not (state / "url").exists():
            if process.poll() is not None:
                return Outcome(process.returncode, log.read_text(errors="replace"))
            if time.monotonic() > deadline:
                raise AssertionError(f"the coordinator neither started nor exited: {log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.05)
        running.url = (state / "url").read_text().strip()
        running.root_pem = (state / "root_ca.pem").read_text()
    except BaseException:
        stop(running, signal.SIGKILL)
        raise
    return Outcome(None, log.read_text(errors="replace"), running)


def update_policy(running: Running, text: str) -> dict[str, Any]:
    """``POST /api/v1/policy`` with ``text`` approved by the test approver; the response (version, hash, and
    the identities it revoked), which must be a 200."""
    with running.http() as http:
        approvals = [approve(parse_policy(text), "alice", KEY).to_json()]
        response = http.post(f"{running.url}/api/v1/policy", json={"policy": text, "approvals": approvals})
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()
    return result
