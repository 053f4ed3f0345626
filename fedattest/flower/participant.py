"""Activation of a Flower participant (SuperLink or SuperNode) inside its TEE, shared by both launchers.

The identity directory then holds what the coordinator issued (key, chain, token, provisioned
parameters) plus what the apps need to reach the coordinator: its URL and pinned root CA. A SuperNode
also gets a node authentication key, whose public key is bound in the quoted claims, so the coordinator
publishes it as attested and the aggregator registers it with Flower.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.flower.apps import AppGate
from fedattest.flower.provisioned import Provisioned, load_provisioned
from fedattest.participant.client import (
    Activation,
    activate,
    coordinator_context,
    heartbeat,
    reprovision,
    resume_current,
    sealed_identity,
)
from fedattest.tee.base import TEE

log = logging.getLogger("fedattest.flower")

NODE_KEY = "node-key.ssh"  # OpenSSH format: what flower-supernode --auth-supernode-private-key reads
COORDINATOR_FILE = "coordinator.json"
ROOT_CA_FILE = "root_ca.pem"


@dataclass(frozen=True)
class ParticipantPaths:
    """Where a launched participant keeps things, all under its enclave-private state directory."""

    state: Path

    @property
    def identity(self) -> Path:
        return self.state / "identity"

    @property
    def flwr_home(self) -> Path:
        return self.state / "flwr-home"

    @property
    def gated_bin(self) -> Path:
        return self.state / "bin"


@dataclass(frozen=True)
class ActivatedParticipant:
    identity_dir: Path
    provisioned: Provisioned
    resumed: bool
    how: str = "activated"  # "activated", "resumed" or "reprovisioned" (under a new policy, no activation spent)

    @property
    def node_key_path(self) -> Path:
        return self.identity_dir / NODE_KEY


def _load_node_key(path: Path) -> ec.EllipticCurvePrivateKey | None:
    if not path.exists():
        return None
    key = serialization.load_ssh_private_key(path.read_bytes(), None)
    return key if isinstance(key, ec.EllipticCurvePrivateKey) else None


def activate_participant(
    url: str,
    root_ca_pem: str,
    member: str,
    tee: TEE,
    identity_dir: Path,
    *,
    node_key: bool,
    expected_role: str,
    enrolment_key: Callable[[], ed25519.Ed25519PrivateKey],
) -> ActivatedParticipant:
    """Resume this enclave's sealed identity if still valid (and, for a SuperNode, its node key is there);
    otherwise activate anew, signing the claims with the member's key from ``enrolment_key()`` (called only
    then). Refuses if the coordinator provisioned another role than ``expected_role``. A fresh activation counts as
    the member's running identity at once (the launcher then heartbeats through :class:`PolicyRefresher`), and is
    refused while another identity of the member is running: a second launcher must not evict the first."""
    existing = _load_node_key(identity_dir / NODE_KEY) if node_key else None
    resumed: Activation | None = None
    how = "activated"
    if existing is not None or not node_key:
        extra = {"node": existing.public_key()} if existing is not None else None
        resumed, how = resume_current(url, root_ca_pem, member, tee, identity_dir, extra_keys=extra)
    if resumed is None:
        how = "activated"
        key = ec.generate_private_key(ec.SECP256R1()) if node_key else None
        activate(url, root_ca_pem, member, tee, identity_dir, enrolment_key=enrolment_key(),
                 extra_keys={"node": key.public_key()} if key else None, live=True)  # fmt: skip
        if key is not None:
            fmt = serialization.PrivateFormat.OpenSSH
            atomic_write(
                identity_dir / NODE_KEY, key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())
            )
    atomic_write(identity_dir / ROOT_CA_FILE, root_ca_pem.encode(), mode=0o644)
    atomic_write(identity_dir / COORDINATOR_FILE, json.dumps({"url": url, "member": member}).encode())
    provisioned = load_provisioned(identity_dir)
    if provisioned.role != expected_role:
        raise FedattestError(f"member {member!r} is a {provisioned.role} in the policy, not a {expected_role}")
    if provisioned.attestation == "off":
        log.warning("ATTESTATION OFF: the policy does not require attestation for role %r", provisioned.role)
    return ActivatedParticipant(identity_dir, provisioned, resumed is not None, how)


def coordinator_of(identity_dir: Path) -> tuple[str, str, str]:
    """(coordinator URL, pinned root CA PEM, own member name) recorded at activation."""
    try:
        doc = json.loads((identity_dir / COORDINATOR_FILE).read_text())
        return str(doc["url"]), (identity_dir / ROOT_CA_FILE).read_text(), str(doc["member"])
    except (OSError, ValueError, KeyError) as exc:
        raise FedattestError(f"{identity_dir}: no coordinator recorded ({exc}): activate with the coordinator first") from None


class PolicyRefresher:
    """Keeps a running participant provisioned under the policy in force, and known to be running: :meth:`check`
    sends the coordinator a heartbeat signed with the identity's key (``POST /api/v1/alive``), which answers its
    policy; when that is not the one the participant was provisioned under, it re-provisions the sealed identity
    (no activation spent) and updates the gate's allow-list. The heartbeats are what makes the coordinator refuse a
    second launcher of the same member. One log line per change of state (a new policy taken, or a new reason it
    could not be, or a heartbeat refused), never one per check."""

    def __init__(  # noqa: PLR0917 - the identity and where it lives
        self, url: str, root_ca_pem: str, member: str, tee: TEE, identity_dir: Path, gate: AppGate, *, every: float = 5.0
    ) -> None:
        self.url, self.root_ca_pem, self.member, self.tee, self.identity_dir, self.gate = (
            url, root_ca_pem, member, tee, identity_dir, gate
        )  # fmt: skip
        self.every = every  # seconds between two questions to the coordinator (policy changes are rare)
        self._last_problem: str | None = None
        self._heartbeat_problem: str | None = None
        self._identity: tuple[ec.EllipticCurvePrivateKey, str] | None = None  # the key never changes: unsealed once
        self._asked = -math.inf
        self._http: httpx.Client | None = None  # one kept-alive connection: no TLS handshake per check

    def _current_policy(self) -> tuple[str, frozenset[str]]:
        """The coordinator's policy hash and the app hashes that policy allows, as the answer to a heartbeat. A
        refused heartbeat (a revoked or expired identity) is logged once per reason, and the policy is then read
        from ``GET /api/v1/policy``: the gate must still narrow to what the policy in force allows."""
        if self._http is None:
            self._http = httpx.Client(verify=coordinator_context(self.root_ca_pem), timeout=10.0)
        try:
            if self._identity is None:
                self._identity = sealed_identity(self.identity_dir, self.tee)
            body = heartbeat(self._http, self.url, self.member, *self._identity)
            self._heartbeat_problem = None
        except httpx.HTTPError as exc:
            raise FedattestError(f"{self.url}: {exc}") from None
        except FedattestError as exc:  # refused (a CoordinatorError), or no sealed key to sign with
            if str(exc) != self._heartbeat_problem:
                log.warning("no heartbeat accepted for this participant (%s): it does not count as running", exc)
                self._heartbeat_problem = str(exc)
            body = self._get_policy()
        allowed = json.loads(body["policy"])["apps"]["allowed_hashes"]
        return str(body["policy_hash"]), frozenset(str(h).lower() for h in allowed)

    def _get_policy(self) -> dict[str, str]:
        assert self._http is not None
        try:
            response = self._http.get(f"{self.url}/api/v1/policy")
        except httpx.HTTPError as exc:
            raise FedattestError(f"{self.url}: {exc}") from None
        if response.status_code != 200:
            raise FedattestError(f"GET /api/v1/policy: HTTP {response.status_code}")
        body: dict[str, str] = response.json()
        return body

    def check(self) -> Provisioned | None:
        """Re-provision if the policy changed; returns the new parameters then, else None. Asks the coordinator
        at most every ``every`` seconds (calls in between return None at once). Never raises: it runs in the
        launchers' background threads, which must go on (the SuperLink's also keeps the node keys in step).

        While the participant is provisioned under an older policy than the coordinator's, its gate allows only
        apps both policies allow: an app the new version withdrew stops at once, even when re-provisioning is
        refused (a revoked identity) or fails."""
        now = time.monotonic()
        if now - self._asked < self.every:
            return None
        self._asked = now
        allowed_now: frozenset[str] | None = None
        try:
            current, allowed_now = self._current_policy()
            self.gate.current_policy_hash = current
            if current == self.gate.policy_hash:
                self._last_problem = None
                return None
            node = _load_node_key(self.identity_dir / NODE_KEY)
            extra = {"node": node.public_key()} if node is not None else None
            reprovision(self.url, self.root_ca_pem, self.member, self.tee, self.identity_dir, extra_keys=extra,
                        policy_hash=current)  # fmt: skip
            fresh = load_provisioned(self.identity_dir)
        except Exception as exc:  # see the docstring: logged once per distinct problem, never raised
            if allowed_now is not None:
                self.gate.narrow(allowed_now)
            problem = f"{type(exc).__name__}: {exc}" if not isinstance(exc, FedattestError) else str(exc)
            if problem != self._last_problem:
                log.warning("could not take the coordinator's current policy (%s); retrying", problem)
                self._last_problem = problem
            return None
        self._last_problem = None
        if fresh.policy_hash == self.gate.policy_hash:
            return None
        previous = self.gate.policy_hash
        self.gate.update(fresh.allowed_app_hashes, fresh.policy_hash)
        log.info(
            "re-provisioned under policy %s... (was %s...; no activation spent): %d allowed apps",
            fresh.policy_hash[:16], (previous or "?")[:16], len(fresh.allowed_app_hashes),
        )  # fmt: skip
        return fresh
