"""Why a proof, tree head or receipt was refused: :class:`TranslogError` names the step that failed.

The step names are part of the protocol: tests/vectors/translog/receipts.json lists the step each broken
vector must fail at, so an implementation in another language can check it refuses for the same reason.
"""

from __future__ import annotations

from enum import StrEnum

from fedattest.errors import FedattestError


class Step(StrEnum):
    # -- reading a document (tree head, signed tree head, receipt, proof)
    FORMAT = "format"  # not the exact shape: keys, types, ranges, encodings, sizes
    # -- inclusion proof, RFC 9162 §2.1.3.2 (the step number of the RFC in brackets)
    INCLUSION_INDEX = "inclusion_index"  # [1] leaf index >= tree size
    INCLUSION_TOO_LONG = "inclusion_too_long"  # [4] path elements left after the root's level
    INCLUSION_TOO_SHORT = "inclusion_too_short"  # [5] path ran out below the root's level
    INCLUSION_ROOT = "inclusion_root"  # [5] the recomputed root is not the tree head's
    # -- consistency proof, RFC 9162 §2.1.4.2 (and the cases the RFC leaves to the caller)
    CONSISTENCY_SIZES = "consistency_sizes"  # old size > new size
    CONSISTENCY_EMPTY_OLD = "consistency_empty_old"  # old size 0: the RFC defines proofs for 0 < m only
    CONSISTENCY_SAME_SIZE = "consistency_same_size"  # m == n: proof must be empty and the roots equal
    CONSISTENCY_EMPTY_PROOF = "consistency_empty_proof"  # [1] m < n and no path
    CONSISTENCY_TOO_LONG = "consistency_too_long"  # [6] path elements left after the root's level
    CONSISTENCY_TOO_SHORT = "consistency_too_short"  # [7] path ran out below the root's level
    CONSISTENCY_OLD_ROOT = "consistency_old_root"  # [7] the path does not rebuild the old root
    CONSISTENCY_NEW_ROOT = "consistency_new_root"  # [7] the path does not rebuild the new root
    # -- signed tree heads and receipts
    LOG_KEY = "log_key"  # the key given is not a P-256 public key
    LOG_ID = "log_id"  # the tree head names another log than the key's
    DIFFERENT_LOGS = "different_logs"  # two tree heads of different logs
    SIGNATURE = "signature"  # the tree head's signature does not verify under the log key
    HEAD_ORDER = "head_order"  # the later tree head is smaller or older than the earlier one
    LEAF_HASH = "leaf_hash"  # the receipt is for other data than the caller uploaded


class TranslogError(FedattestError):
    """A refusal: ``step`` (a :class:`Step`) says which check failed, ``detail`` why, on one line."""

    def __init__(self, step: Step, message: str) -> None:
        self.step = Step(step)
        self.detail = message
        super().__init__(f"{self.step}: {message}")
