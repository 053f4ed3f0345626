"""Approving a federation policy: an approver's Ed25519 signature over the policy hash.

An approval is a small JSON document (``fedattest-policy-approval``: policy name, policy hash, approver
name, signature). It is only as good as the public key the *policy* lists for that approver name, so a
policy with changed approvers needs the new document's approvals, signed by the keys it names.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from fedattest.policy.federation import FederationPolicy, PolicyError
from fedattest.shape import load_json

APPROVAL_FORMAT = "fedattest-policy-approval"
APPROVAL_LABEL = b"fedattest-policy-approval-v1\n"
MAX_APPROVAL_BYTES = 64 << 10  # an approval is about 400 bytes: a name, a hash and a signature


def approval_message(policy_hash: bytes) -> bytes:
    return APPROVAL_LABEL + policy_hash


def generate_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def private_key_pem(key: ed25519.Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def public_key_pem(key: ed25519.Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_private_key(data: bytes, what: str = "approver key") -> ed25519.Ed25519PrivateKey:
    """An Ed25519 private key from PEM (an approver's, or a member's enrolment key); ``what`` names it in errors."""
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise PolicyError(f"{what}: not an unencrypted PEM private key") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise PolicyError(f"{what}: must be an Ed25519 key ('fedattest policy keygen' makes one)")
    return key


def load_public_key(text: str, who: str) -> ed25519.Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(text.encode())
    except ValueError:
        raise PolicyError(f"approvals.approvers.{who}.public_key: not a PEM public key") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise PolicyError(f"approvals.approvers.{who}.public_key: must be an Ed25519 key")
    return key


@dataclass(frozen=True)
class Approval:
    policy_name: str
    policy_hash: bytes
    approver: str
    signature: bytes

    def to_json(self) -> str:
        doc = {
            "format": APPROVAL_FORMAT,
            "version": 1,
            "policy_name": self.policy_name,
            "policy_hash": self.policy_hash.hex(),
            "approver": self.approver,
            "signature": base64.b64encode(self.signature).decode(),
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Approval:
        if len(text) > MAX_APPROVAL_BYTES:
            raise PolicyError(f"approval: larger than {MAX_APPROVAL_BYTES >> 10} KiB")
        try:
            doc: Any = load_json(text, "approval")
            if doc.get("format") != APPROVAL_FORMAT or doc.get("version") != 1:
                raise ValueError("not a fedattest policy approval (format/version)")
            digest = bytes.fromhex(doc["policy_hash"])
            if len(digest) != 32:
                raise ValueError("policy_hash must be 32 bytes of hex")
            signature = base64.b64decode(doc["signature"], validate=True)
            return cls(str(doc["policy_name"]), digest, str(doc["approver"]), signature)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            message = str(exc)
            raise PolicyError(message if message.startswith("approval") else f"approval: {message}") from None


def approve(policy: FederationPolicy, approver: str, key: ed25519.Ed25519PrivateKey) -> Approval:
    """Sign ``policy`` as ``approver``. The key must be the one the policy lists for that name."""
    listed = next((a for a in policy.approvals.approvers if a.name == approver), None)
    if listed is None:
        names = ", ".join(a.name for a in policy.approvals.approvers)
        raise PolicyError(f"{approver!r} is not an approver of this policy (approvers: {names})")
    if load_public_key(listed.public_key, approver).public_bytes_raw() != key.public_key().public_bytes_raw():
        raise PolicyError(f"this key is not the one the policy lists for approver {approver!r}")
    digest = policy.policy_hash()
    return Approval(policy.name, digest, approver, key.sign(approval_message(digest)))


@dataclass(frozen=True)
class ApprovalCheck:
    valid: tuple[str, ...]  # approver names with a valid signature over this policy
    problems: tuple[str, ...]  # why the other approvals do not count
    required: int

    @property
    def enough(self) -> bool:
        return len(self.valid) >= self.required

    @property
    def reason(self) -> str:
        if self.enough:
            return f"approved by {', '.join(self.valid)} ({len(self.valid)} of {self.required} required)"
        detail = f"; {'; '.join(self.problems)}" if self.problems else ""
        return f"{len(self.valid)} valid approvals, {self.required} required{detail}"


def check_approvals(policy: FederationPolicy, approvals: list[Approval], *, digest: bytes | None = None) -> ApprovalCheck:
    """Which approvals count for ``policy``: a listed approver, this policy's hash, a valid signature,
    once per approver. With ``digest``, the approvers of ``policy`` must have signed that hash instead
    (an update: the current approvers approve the next version)."""
    digest = digest if digest is not None else policy.policy_hash()
    keys = {a.name: load_public_key(a.public_key, a.name) for a in policy.approvals.approvers}
    valid: list[str] = []
    problems: list[str] = []
    for approval in approvals:
        who = approval.approver
        if who not in keys:
            problems.append(f"{who!r} is not an approver of this policy")
        elif approval.policy_hash != digest:
            problems.append(f"{who!r} approved another version (hash {approval.policy_hash.hex()[:16]}...)")
        elif who in valid:
            problems.append(f"{who!r} approved twice (counted once)")
        else:
            try:
                keys[who].verify(approval.signature, approval_message(digest))
            except InvalidSignature:
                problems.append(f"{who!r}: signature does not verify")
                continue
            valid.append(who)
    return ApprovalCheck(tuple(valid), tuple(problems), policy.approvals.required)
