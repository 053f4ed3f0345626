"""Why a user store refused: :class:`UserStoreError` names the reason, so callers and tests tell them apart."""

from __future__ import annotations

from enum import StrEnum

from fedattest.errors import FedattestError


class Reason(StrEnum):
    NOT_EMPTY = "not_empty"  # create: the directory already holds something
    INCOMPLETE = "incomplete"  # open: the key or head file is missing (not a store, or a crash during create)
    UNSEALABLE = "unsealable"  # a file does not unseal: another enclave's or another log's, moved or tampered
    MALFORMED = "malformed"  # a file unseals but its content is not what this version writes
    WRONG_USER = "wrong_user"  # the store belongs to another user than the caller expected
    SIGNATURE = "signature"  # the sealed head's signature does not verify under the sealed log key
    MISSING = "missing"  # a record the head counts has no file
    EXTRA = "extra"  # a file the store did not write: an unknown name, or a record beyond the head
    TOO_LARGE = "too_large"  # a file (or a record appended) over its size bound
    ROOT = "root"  # the records' Merkle root is not the sealed head's: records dropped, reordered or replaced
    CHANGED = "changed"  # records(): a record no longer has the leaf hash it had when the store was opened
    BROKEN = "broken"  # append: an earlier append's head could not be sealed; the store must be opened again
    SIZE = "size"  # consistency(): an old size the log cannot prove from


class UserStoreError(FedattestError):
    """A refusal: ``reason`` (a :class:`Reason`) and ``detail`` on one line."""

    def __init__(self, reason: Reason, message: str) -> None:
        self.reason = Reason(reason)
        self.detail = message
        super().__init__(f"{self.reason}: {message}")
