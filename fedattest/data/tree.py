"""The dataset commitment's hashes: domain-separated SHA-256 Merkle trees over file chunks and files.

Pure functions, no I/O. Each kind of hash has its own one-byte domain tag, so a chunk can never be
mistaken for an inner node, a file entry or a dataset root:

- chunk leaf:  ``H(0x00 ‖ chunk bytes)``
- inner node:  ``H(0x01 ‖ left ‖ right)``
- empty tree:  ``H(0x02)`` (a file of 0 bytes; a dataset of 0 files)
- file entry:  ``H(0x03 ‖ u16 len(path) ‖ path (UTF-8) ‖ u64 size ‖ file root)``
- dataset:     ``H(0x04 ‖ "fedattest-dataset-v1" ‖ u32 chunk size ‖ u64 file count ‖ tree root)``

Trees split their leaves at the largest power of two below their count (RFC 6962), so no leaf is
ever duplicated to fill a level. Integers are big-endian. Paths are relative, '/'-separated, sorted by
their UTF-8 bytes, so the root does not depend on the file system's order or the locale.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF = b"\x00"
NODE = b"\x01"
EMPTY = b"\x02"
ENTRY = b"\x03"
DATASET = b"\x04"
DATASET_LABEL = b"fedattest-dataset-v1"
EMPTY_ROOT = hashlib.sha256(EMPTY).digest()


def chunk_leaf(chunk: bytes | memoryview) -> bytes:
    h = hashlib.sha256(LEAF)
    h.update(chunk)
    return h.digest()


def node(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root of the tree over ``leaves`` (already leaf hashes). Iterative, level by level: a level of n
    nodes pairs (0,1), (2,3)...; an odd last node moves up unchanged. For n a power of two this is the
    RFC 6962 tree; otherwise it is the same tree RFC 6962 builds, because the unpaired node is always the
    right-most subtree."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    sha = hashlib.sha256
    while len(level) > 1:
        nxt = [sha(NODE + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


class MerkleBuilder:
    """The same root as :func:`merkle_root`, from leaves given one at a time, in O(log n) memory.

    It keeps the roots of the complete subtrees seen so far (at most one per power of two, the largest
    first), merging two equal ones as soon as they exist; :meth:`root` then folds them from the right,
    which is RFC 6962's split at the largest power of two below the count."""

    __slots__ = ("_stack", "count")

    def __init__(self) -> None:
        self._stack: list[bytes] = []
        self.count = 0

    def add(self, leaf: bytes) -> None:
        stack, n, h = self._stack, self.count, leaf
        while n & 1:
            h = hashlib.sha256(NODE + stack.pop() + h).digest()
            n >>= 1
        stack.append(h)
        self.count += 1

    def root(self) -> bytes:
        if not self._stack:
            return EMPTY_ROOT
        h = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            h = hashlib.sha256(NODE + left + h).digest()
        return h


def file_entry(path: str, size: int, file_root: bytes) -> bytes:
    raw = path.encode("utf-8")
    return hashlib.sha256(ENTRY + len(raw).to_bytes(2, "big") + raw + size.to_bytes(8, "big") + file_root).digest()


def dataset_root(chunk_size: int, entries: Sequence[bytes]) -> bytes:
    return dataset_root_over(chunk_size, len(entries), merkle_root(entries))


def dataset_root_over(chunk_size: int, count: int, tree: bytes) -> bytes:
    """The dataset root, given the root of the tree over its ``count`` file entries."""
    return hashlib.sha256(DATASET + DATASET_LABEL + chunk_size.to_bytes(4, "big") + count.to_bytes(8, "big") + tree).digest()


def chunk_count(size: int, chunk_size: int) -> int:
    return -(-size // chunk_size)
