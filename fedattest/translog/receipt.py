"""What a phone gets back for an upload, and what it checks: receipts, and consistency between two tree heads.

A receipt (wire form in docs/translog.md)::

    {"leaf_index": int, "leaf_hash": hex, "sth": {...}, "sth_signature": base64, "inclusion_proof": [hex, ...]}

says "your upload is entry ``leaf_index`` of the log named in the signed tree head, and here is the path to its
root". :func:`verify_receipt` and :func:`verify_consistency` run every check in the documented order and stop
at the first failure, raising :class:`~fedattest.translog.refusal.TranslogError` with its step.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.translog import verify, wire
from fedattest.translog.hashing import leaf_hash
from fedattest.translog.refusal import Step, TranslogError
from fedattest.translog.treehead import SignedTreeHead, TreeHead, check_signed_tree_head

RECEIPT_KEYS = frozenset({"leaf_index", "leaf_hash", "sth", "sth_signature", "inclusion_proof"})
MAX_INCLUSION_PATH = 64  # tree sizes stay below 2^53, so real paths have at most 53 hashes
MAX_CONSISTENCY_PATH = 128  # at most 2·53 + 1 for sizes below 2^53
MAX_RECEIPT_BYTES = 16 * 1024  # 64 hashes of 66 bytes in JSON, the signed head, and room to spare


@dataclass(frozen=True)
class Receipt:
    leaf_index: int
    leaf_hash: bytes
    signed_sth: SignedTreeHead
    inclusion_proof: tuple[bytes, ...]

    def to_json(self) -> dict[str, Any]:
        signed = self.signed_sth.to_json()
        return {
            "leaf_index": self.leaf_index,
            "leaf_hash": self.leaf_hash.hex(),
            "sth": signed["sth"],
            "sth_signature": signed["sth_signature"],
            "inclusion_proof": [h.hex() for h in self.inclusion_proof],
        }

    @classmethod
    def from_json(cls, obj: Any, what: str = "receipt") -> Receipt:
        f = wire.fields(obj, what, RECEIPT_KEYS)
        return cls(
            leaf_index=wire.integer(f["leaf_index"], f"{what}.leaf_index"),
            leaf_hash=wire.hex_bytes(f["leaf_hash"], f"{what}.leaf_hash"),
            signed_sth=SignedTreeHead.from_json({"sth": f["sth"], "sth_signature": f["sth_signature"]}, what),
            inclusion_proof=tuple(wire.hash_list(f["inclusion_proof"], f"{what}.inclusion_proof", MAX_INCLUSION_PATH)),
        )

    @classmethod
    def parse(cls, data: bytes | str) -> Receipt:
        """A receipt from its JSON bytes (at most 16 KiB)."""
        return cls.from_json(wire.load(data, "receipt", MAX_RECEIPT_BYTES))


def make_receipt(leaf_index: int, leaf: bytes, signed_sth: SignedTreeHead, proof: Sequence[bytes]) -> Receipt:
    """A receipt for entry ``leaf_index`` (leaf hash ``leaf``) under ``signed_sth``, with its inclusion proof."""
    return Receipt(leaf_index, leaf, signed_sth, tuple(proof))


def verify_receipt(receipt: Receipt, public_key: ec.EllipticCurvePublicKey, expected_leaf_data: bytes) -> TreeHead:
    """Check a receipt for the upload ``expected_leaf_data`` against the log key; returns its tree head.

    In order: the key is P-256 (``log_key``); the head names this key (``log_id``); its signature verifies
    (``signature``); the receipt's leaf hash is SHA-256(0x00 ‖ expected_leaf_data) (``leaf_hash``); the
    inclusion proof leads from that leaf at ``leaf_index`` to the head's root (``inclusion_*``)."""
    sth = check_signed_tree_head(receipt.signed_sth, public_key)
    if not hmac.compare_digest(receipt.leaf_hash, leaf_hash(expected_leaf_data)):
        raise TranslogError(Step.LEAF_HASH, "the receipt's leaf hash is not the hash of the data uploaded")
    verify.verify_inclusion_proof(receipt.leaf_index, sth.tree_size, receipt.leaf_hash, receipt.inclusion_proof, sth.root_hash)
    return sth


def verify_consistency(
    old: SignedTreeHead, new: SignedTreeHead, proof: Sequence[bytes], public_key: ec.EllipticCurvePublicKey
) -> None:
    """Check that ``new`` extends ``old``: both heads of the same log (``different_logs``), both signed by
    ``public_key`` (``log_key``, ``log_id``, ``signature``, the old head first), the new one neither smaller nor
    older (``head_order``), and the consistency proof (``consistency_*``)."""
    if not hmac.compare_digest(old.sth.log_id, new.sth.log_id):
        raise TranslogError(Step.DIFFERENT_LOGS, "the two tree heads are of different logs")
    old_sth = check_signed_tree_head(old, public_key)
    new_sth = check_signed_tree_head(new, public_key)
    if new_sth.tree_size < old_sth.tree_size:
        raise TranslogError(
            Step.HEAD_ORDER, f"the later tree head has {new_sth.tree_size} entries, the earlier {old_sth.tree_size}"
        )
    if new_sth.timestamp < old_sth.timestamp:
        raise TranslogError(Step.HEAD_ORDER, "the later tree head has an earlier timestamp than the earlier one")
    verify.verify_consistency_proof(old_sth.tree_size, new_sth.tree_size, old_sth.root_hash, new_sth.root_hash, proof)
