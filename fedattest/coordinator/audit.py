"""The audit log: a hash chain of events whose head the coordinator signs, verifiable offline.

Each entry holds the previous entry's hash, so changing, removing or reordering any entry changes
every hash after it; the coordinator signs the head (sequence number and hash) with its key, so a log
cut short or rewritten after the fact does not verify against a head someone saved earlier. Entries
are canonical JSON (RFC 8785), so anyone can recompute the hashes with nothing but SHA-256 and a JCS encoder.

    entry hash = SHA-256("fedattest-audit-v2\\n" || RFC 8785 JSON of {v: 2, seq, time, kind, data, prev})
    head signature = ECDSA-P256-SHA256 over "fedattest-audit-head-v1\\n" || u64 seq || head hash

Entries written before RFC 8785 have no ``v`` (version 1): their hash is SHA-256("fedattest-audit-v1\\n" ||
json.dumps(..., sort_keys=True, separators=(",", ":"), ensure_ascii=False)); they verify as they were
written, and a chain may go on from them with version 2 entries (an upgraded coordinator).

Pure: objects and bytes in and out; the store persists entries, the service signs heads.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.canonical import CURRENT_VERSION, canonical_json, versioned_json
from fedattest.errors import FedattestError, FormatError
from fedattest.shape import load_json

ENTRY_LABELS = {1: b"fedattest-audit-v1\n", 2: b"fedattest-audit-v2\n"}
HEAD_LABEL = b"fedattest-audit-head-v1\n"
GENESIS = bytes(32)


class AuditError(FedattestError):
    """The audit log does not verify; ``seq`` is the first entry that fails (None for the head)."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        self.seq = seq
        super().__init__(message)


@dataclass(frozen=True)
class AuditEntry:
    seq: int
    time: str  # RFC 3339 UTC, e.g. 2026-11-25T03:04:05Z
    kind: str
    data: Mapping[str, Any]
    prev: bytes
    version: int = CURRENT_VERSION  # 1: written before RFC 8785 (see the module docstring)

    def body(self) -> dict[str, Any]:
        body = {"seq": self.seq, "time": self.time, "kind": self.kind, "data": dict(self.data), "prev": self.prev.hex()}
        return body if self.version == 1 else {"v": self.version, **body}

    @cached_property  # an entry is immutable; its hash is asked for by every later check
    def hash(self) -> bytes:
        encoded = versioned_json(self.body(), self.version, v1_ascii_only=False)
        return hashlib.sha256(ENTRY_LABELS[self.version] + encoded).digest()

    def to_json(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> AuditEntry:
        try:
            # Version 1 entries have no "v" at all; a later version is an integer, never 1 written out.
            version = obj.get("v", 1) if "v" not in obj or obj["v"] != 1 else None
            if type(version) is not int or version not in ENTRY_LABELS:
                raise ValueError(f"unknown entry version {obj.get('v')!r}")
            entry = cls(
                int(obj["seq"]), str(obj["time"]), str(obj["kind"]), dict(obj["data"]), bytes.fromhex(obj["prev"]), version
            )
            entry.hash  # noqa: B018 - data that the entry's encoding cannot carry is malformed, here rather than later
        except (KeyError, TypeError, ValueError, FormatError) as exc:
            raise AuditError(f"malformed audit entry: {exc}") from None
        if "hash" in obj and obj["hash"] != entry.hash.hex():
            raise AuditError(f"entry {entry.seq}: stated hash does not match its content", entry.seq)
        return entry


TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"  # every time the coordinator records (entries, activations, revocations)


def format_time(seconds: float) -> str:
    """Unix ``seconds`` as the coordinator records times (RFC 3339, UTC, whole seconds)."""
    return time.strftime(TIME_FORMAT, time.gmtime(seconds))


def parse_time(text: str) -> datetime:
    """A recorded time back as an aware UTC datetime (``ValueError`` if it is not one)."""
    return datetime.strptime(text, TIME_FORMAT).replace(tzinfo=UTC)


def next_entry(previous: AuditEntry | None, time: str, kind: str, data: Mapping[str, Any]) -> AuditEntry:
    """The entry that follows ``previous`` (None: the first entry). ``data`` must be JSON-serialisable."""
    canonical_json(dict(data))  # fail now, not at verification time, on data that is not plain JSON (or a 64-bit int)
    if previous is None:
        return AuditEntry(0, time, kind, dict(data), GENESIS)
    return AuditEntry(previous.seq + 1, time, kind, dict(data), previous.hash)


@dataclass(frozen=True)
class SignedHead:
    seq: int
    hash: bytes
    signature: bytes  # DER ECDSA

    def message(self) -> bytes:
        return HEAD_LABEL + self.seq.to_bytes(8, "big") + self.hash

    def to_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_json(cls, obj: Any) -> SignedHead:
        try:
            return cls(int(obj["seq"]), bytes.fromhex(obj["hash"]), bytes.fromhex(obj["signature"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise AuditError(f"malformed signed head: {exc}") from None


def sign_head(entry: AuditEntry, key: ec.EllipticCurvePrivateKey) -> SignedHead:
    unsigned = SignedHead(entry.seq, entry.hash, b"")
    return SignedHead(entry.seq, entry.hash, key.sign(unsigned.message(), ec.ECDSA(hashes.SHA256())))


def verify_log(entries: Iterable[AuditEntry], head: SignedHead, public_key: ec.EllipticCurvePublicKey) -> int:
    """Check the chain from the first entry and the signed head; returns the number of entries.

    Raises :class:`AuditError` naming the first entry that breaks the chain, or the head."""
    previous: AuditEntry | None = None
    count = 0
    for entry in entries:
        expected_seq = 0 if previous is None else previous.seq + 1
        if entry.seq != expected_seq:
            raise AuditError(
                f"entry {entry.seq}: expected sequence number {expected_seq} (entries missing or reordered)", entry.seq
            )
        expected_prev = GENESIS if previous is None else previous.hash
        if entry.prev != expected_prev:
            raise AuditError(f"entry {entry.seq}: does not chain to the entry before it (changed or inserted)", entry.seq)
        if previous is not None and entry.version < previous.version:
            raise AuditError(
                f"entry {entry.seq}: version {entry.version} after version {previous.version} (a downgrade)", entry.seq
            )
        previous = entry
        count += 1
    if previous is None:
        raise AuditError("the audit log is empty")
    if head.seq != previous.seq or head.hash != previous.hash:
        raise AuditError(
            f"the signed head is for entry {head.seq} ({head.hash.hex()[:16]}...), the log ends at entry {previous.seq}"
            f" ({previous.hash.hex()[:16]}...): the log was cut short or rewritten"
        )
    try:
        public_key.verify(head.signature, head.message(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AuditError("the head signature does not verify under the coordinator's key") from None
    return count


def public_key_from_pem(pem: bytes) -> ec.EllipticCurvePublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise AuditError("the coordinator key is not a PEM public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AuditError("the coordinator key must be an EC (P-256) key")
    return key


def export_log(entries: Iterable[AuditEntry], head: SignedHead, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """The offline-verifiable document: entries, signed head and the signing key (as PEM)."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    doc = {
        "format": "fedattest-audit-log",
        "version": 1,
        "entries": [e.to_json() for e in entries],
        "head": head.to_json(),
        "public_key": pem,
    }
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def import_log(data: bytes) -> tuple[list[AuditEntry], SignedHead, ec.EllipticCurvePublicKey]:
    try:
        doc = load_json(data, "audit log")
        if doc.get("format") != "fedattest-audit-log" or doc.get("version") != 1:
            raise ValueError("not a fedattest audit log (format/version)")
        entries = [AuditEntry.from_json(e) for e in doc["entries"]]
        return entries, SignedHead.from_json(doc["head"]), public_key_from_pem(doc["public_key"].encode())
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        message = str(exc)
        raise AuditError(message if message.startswith("audit log") else f"audit log: {message}") from None


# -- pinning: a head saved earlier, and proof that a later log extends it -----------------------------------


def export_head(head: SignedHead, public_key: ec.EllipticCurvePublicKey) -> bytes:
    """A signed head to keep (``fedattest-audit-head``): the head and the key that signed it."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    doc = {"format": "fedattest-audit-head", "version": 1, "head": head.to_json(), "public_key": pem}
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def import_pinned_head(data: bytes) -> tuple[SignedHead, ec.EllipticCurvePublicKey]:
    """A head saved earlier: a ``fedattest-audit-head`` document, or a whole exported audit log (its head and
    key). Only its signature is checked here (:func:`check_extends`); the log it came from is not needed."""
    try:
        doc = load_json(data, "pinned head")
        if doc.get("format") not in {"fedattest-audit-head", "fedattest-audit-log"} or doc.get("version") != 1:
            raise ValueError("not a fedattest audit head or log (format/version)")
        return SignedHead.from_json(doc["head"]), public_key_from_pem(doc["public_key"].encode())
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        message = str(exc)
        raise AuditError(message if message.startswith("pinned head") else f"pinned head: {message}") from None


def _spki(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def check_extends(
    entries: list[AuditEntry],
    public_key: ec.EllipticCurvePublicKey,
    pinned: SignedHead,
    pinned_key: ec.EllipticCurvePublicKey,
) -> None:
    """Check that a log (already verified with :func:`verify_log` under ``public_key``) extends the head
    ``pinned`` saved earlier: the same key signed both, the log reaches the pinned sequence number and its
    entry there has the pinned hash. Raises :class:`AuditError` naming the seq otherwise."""
    try:
        pinned_key.verify(pinned.signature, pinned.message(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise AuditError("the pinned head's signature does not verify under its own key", pinned.seq) from None
    if _spki(pinned_key) != _spki(public_key):
        raise AuditError(
            f"the pinned head (seq {pinned.seq}) was signed by another key than this log: the coordinator's state was"
            " replaced (new root CA and keys), so this is not a continuation of the history you pinned",
            pinned.seq,
        )
    last = entries[-1].seq if entries else -1
    if last < pinned.seq:
        raise AuditError(
            f"the log ends at seq {last}, before the pinned head at seq {pinned.seq}: the history was rolled back or truncated",
            pinned.seq,
        )
    found = entries[pinned.seq].hash
    if found != pinned.hash:
        raise AuditError(
            f"entry {pinned.seq} has hash {found.hex()[:16]}..., the pinned head says {pinned.hash.hex()[:16]}...: a fork"
            " (another history signed by the same key)",
            pinned.seq,
        )
