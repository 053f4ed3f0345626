"""RFC 6962 §2.1 hashing, exactly (the same as RFC 9162 §2.1.1 with SHA-256):

- leaf hash:  ``SHA-256(0x00 ‖ data)``
- node hash:  ``SHA-256(0x01 ‖ left ‖ right)``
- the empty tree's hash: ``SHA-256("")``
- MTH(D[n]) for n > 1: ``node(MTH(D[0:k]), MTH(D[k:n]))`` with k the largest power of two < n.

Not the dataset commitment of fedattest/data/tree.py, which has its own tags and an empty-tree hash of
``SHA-256(0x02)``: the two never hash the same thing, and must not be mixed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 ‖ d): the hash of one entry, as a receipt and an inclusion proof carry it."""
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 ‖ left ‖ right)."""
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below ``n`` (n >= 2): where RFC 6962 splits a tree of n leaves."""
    if n < 2:
        raise ValueError(f"a tree of {n} leaves has no split")
    return 1 << ((n - 1).bit_length() - 1)


def is_power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes (already hashed with :func:`leaf_hash`), by the RFC's recursion. O(n) hashes and
    O(log n) depth; :class:`~fedattest.translog.log.MerkleLog` keeps its subtrees instead of recomputing them."""
    if not leaf_hashes:
        return EMPTY_ROOT

    def mth(start: int, end: int) -> bytes:
        if end - start == 1:
            return leaf_hashes[start]
        k = split_point(end - start)
        return node_hash(mth(start, start + k), mth(start + k, end))

    return mth(0, len(leaf_hashes))
