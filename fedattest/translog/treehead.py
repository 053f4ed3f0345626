"""The signed tree head (STH): which log, how many entries, their root, when; signed by the log's key.

Wire form (docs/translog.md)::

    sth = {"log_id": hex, "root_hash": hex, "timestamp": int, "tree_size": int}
    signed message = b"fedattest-sth-v1\\n" ‖ RFC 8785 canonical JSON of sth
    signed STH = {"sth": sth, "sth_signature": base64 of the DER ECDSA-P256-SHA256 signature}

``log_id`` is the hex SHA-256 of the log key's SubjectPublicKeyInfo (DER), so a head names the key that must
have signed it; ``timestamp`` is milliseconds since the Unix epoch (UTC). Integers stay below 2^53 (RFC 8785).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.canonical import canonical_json
from fedattest.translog import wire
from fedattest.translog.hashing import HASH_SIZE
from fedattest.translog.refusal import Step, TranslogError

STH_LABEL = b"fedattest-sth-v1\n"
STH_KEYS = frozenset({"log_id", "tree_size", "root_hash", "timestamp"})
SIGNED_STH_KEYS = frozenset({"sth", "sth_signature"})
MAX_SIGNATURE = 72  # a DER ECDSA P-256 signature: SEQUENCE of two INTEGERs of at most 33 bytes
MAX_SIGNED_STH_BYTES = 1024


@dataclass(frozen=True)
class TreeHead:
    """An unsigned tree head; construction checks every field as strictly as parsing does."""

    log_id: bytes  # SHA-256 of the log key's SPKI DER
    tree_size: int
    root_hash: bytes  # MTH of the first tree_size entries
    timestamp: int  # milliseconds since the Unix epoch

    def __post_init__(self) -> None:
        for name in ("log_id", "root_hash"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise wire.refuse(f"sth.{name}", f"not a {HASH_SIZE}-byte hash")
        wire.integer(self.tree_size, "sth.tree_size")
        wire.integer(self.timestamp, "sth.timestamp")

    def to_json(self) -> dict[str, Any]:
        return {
            "log_id": self.log_id.hex(),
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": self.timestamp,
        }

    @classmethod
    def from_json(cls, obj: Any, what: str = "sth") -> TreeHead:
        f = wire.fields(obj, what, STH_KEYS)
        return cls(
            log_id=wire.hex_bytes(f["log_id"], f"{what}.log_id"),
            tree_size=wire.integer(f["tree_size"], f"{what}.tree_size"),
            root_hash=wire.hex_bytes(f["root_hash"], f"{what}.root_hash"),
            timestamp=wire.integer(f["timestamp"], f"{what}.timestamp"),
        )

    def signed_message(self) -> bytes:
        """The bytes the log signs: the label, then the RFC 8785 JSON of :meth:`to_json`."""
        return STH_LABEL + canonical_json(self.to_json())


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree head and the log's signature over :meth:`TreeHead.signed_message` (DER). Parsing checks the
    shape only: :func:`check_signed_tree_head` checks the key and the signature."""

    sth: TreeHead
    signature: bytes

    def to_json(self) -> dict[str, Any]:
        return {"sth": self.sth.to_json(), "sth_signature": base64.b64encode(self.signature).decode()}

    @classmethod
    def from_json(cls, obj: Any, what: str = "signed sth") -> SignedTreeHead:
        f = wire.fields(obj, what, SIGNED_STH_KEYS)
        return cls(
            TreeHead.from_json(f["sth"], f"{what}.sth"),
            wire.base64_bytes(f["sth_signature"], f"{what}.sth_signature", MAX_SIGNATURE),
        )

    @classmethod
    def parse(cls, data: bytes | str) -> SignedTreeHead:
        """A signed STH from its JSON bytes (at most 1 KiB)."""
        return cls.from_json(wire.load(data, "signed sth", MAX_SIGNED_STH_BYTES))


def log_id_of(public_key: ec.EllipticCurvePublicKey) -> bytes:
    """SHA-256 of the key's SubjectPublicKeyInfo (DER): the ``log_id`` of the log that signs with it."""
    spki = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).digest()


def check_log_key(public_key: object) -> ec.EllipticCurvePublicKey:
    """The log key, if it is an ECDSA P-256 public key (the only kind a log signs with)."""
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(public_key.curve, ec.SECP256R1):
        raise TranslogError(Step.LOG_KEY, "the log key is not an ECDSA P-256 public key")
    return public_key


def sign_tree_head(sth: TreeHead, private_key: ec.EllipticCurvePrivateKey) -> SignedTreeHead:
    """Sign ``sth`` with the log's key; refuses (ValueError) a head that names another log or a key not on P-256."""
    check_log_key(private_key.public_key())
    if sth.log_id != log_id_of(private_key.public_key()):
        raise ValueError("the tree head's log_id is not this key's: sign only heads of your own log")
    return SignedTreeHead(sth, private_key.sign(sth.signed_message(), ec.ECDSA(hashes.SHA256())))


def check_signed_tree_head(signed: SignedTreeHead, public_key: ec.EllipticCurvePublicKey) -> TreeHead:
    """The tree head, once its ``log_id`` names ``public_key`` and the signature verifies under it (in that order);
    raises :class:`TranslogError` (steps ``log_key``, ``log_id``, ``signature``)."""
    key = check_log_key(public_key)
    if signed.sth.log_id != log_id_of(key):
        raise TranslogError(Step.LOG_ID, "the tree head names another log than the key given")
    try:
        key.verify(signed.signature, signed.sth.signed_message(), ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        raise TranslogError(Step.SIGNATURE, "the tree head's signature does not verify under the log key") from None
    return signed.sth
