"""The proof checks a phone runs: RFC 9162 §2.1.3.2 (inclusion) and §2.1.4.2 (consistency), step by step.

Everything comes from the prover and nothing is trusted: sizes, indices and every hash are checked before
they are used, and each refusal raises :class:`~fedattest.translog.refusal.TranslogError` naming its step.
The hashes compared are public, so constant time is not needed; ``hmac.compare_digest`` costs nothing.
"""

from __future__ import annotations

import hmac
from collections.abc import Sequence

from fedattest.translog.hashing import HASH_SIZE, is_power_of_two, node_hash
from fedattest.translog.refusal import Step, TranslogError

# A tree of at most 2^64 entries has inclusion paths of at most 64 hashes and consistency paths of at most
# 2·64 + 1; anything longer is refused before any hashing (and the wire formats bound sizes below 2^53).
MAX_TREE_SIZE = 1 << 64
MAX_PATH = 2 * 64 + 1


def _check_hash(value: object, what: str) -> bytes:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        raise TranslogError(Step.FORMAT, f"{what} is not a {HASH_SIZE}-byte hash")
    return value


def _check_path(path: Sequence[bytes], what: str) -> list[bytes]:
    if len(path) > MAX_PATH:
        raise TranslogError(Step.FORMAT, f"{what} has {len(path)} hashes, more than any tree needs ({MAX_PATH})")
    return [_check_hash(p, f"{what}[{i}]") for i, p in enumerate(path)]


def _check_size(value: int, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < MAX_TREE_SIZE:
        raise TranslogError(Step.FORMAT, f"{what} is not an integer in [0, 2^64)")


def _equal(a: bytes, b: bytes) -> bool:
    return hmac.compare_digest(a, b)


def verify_inclusion_proof(leaf_index: int, tree_size: int, leaf: bytes, path: Sequence[bytes], root: bytes) -> None:
    """Check that ``leaf`` (a leaf hash, SHA-256(0x00 ‖ data)) is entry ``leaf_index`` of the tree of
    ``tree_size`` entries whose root is ``root``, by the audit ``path`` (leaf first). Returns nothing;
    raises :class:`TranslogError` on any failure."""
    _check_size(leaf_index, "leaf index")
    _check_size(tree_size, "tree size")
    leaf = _check_hash(leaf, "leaf hash")
    root = _check_hash(root, "root hash")
    hashes = _check_path(path, "inclusion path")
    # 1. leaf_index >= tree_size: no such entry.
    if leaf_index >= tree_size:
        raise TranslogError(Step.INCLUSION_INDEX, f"leaf index {leaf_index} is not below the tree size {tree_size}")
    # 2. fn = leaf_index, sn = tree_size - 1.  3. r = hash.
    fn, sn, r = leaf_index, tree_size - 1, leaf
    # 4. For each p in the path:
    for i, p in enumerate(hashes):
        if sn == 0:  # the root's level is reached with hashes left over
            raise TranslogError(
                Step.INCLUSION_TOO_LONG, f"the path has {len(hashes)} hashes; the tree's root is reached after {i}"
            )
        if fn & 1 or fn == sn:  # p is a left sibling: r's node is a right child, or the last of its level
            r = node_hash(p, r)
            while fn != 0 and not fn & 1:  # climb to where r's node is a right child (or the root's level)
                fn, sn = fn >> 1, sn >> 1
        else:  # p is a right sibling
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    # 5. sn must be 0 (the path reached the root) and r must be the root.
    if sn != 0:
        raise TranslogError(Step.INCLUSION_TOO_SHORT, f"the path has {len(hashes)} hashes; it ends below the tree's root")
    if not _equal(r, root):
        raise TranslogError(Step.INCLUSION_ROOT, "the path does not lead to the root hash (wrong entry, path or root)")


def verify_consistency_proof(old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> None:
    """Check that the tree of ``old_size`` entries with root ``old_root`` is a prefix of the tree of ``new_size``
    entries with root ``new_root``, by the consistency ``path``. Returns nothing; raises :class:`TranslogError`.

    RFC 9162 defines the proof for 0 < old_size < new_size. The other cases: old_size > new_size is refused;
    old_size == 0 is refused (every tree extends the empty one, so there is nothing to prove, and a caller
    asking has mixed something up); old_size == new_size needs an empty path and equal roots."""
    _check_size(old_size, "old tree size")
    _check_size(new_size, "new tree size")
    old_root = _check_hash(old_root, "old root hash")
    new_root = _check_hash(new_root, "new root hash")
    hashes = _check_path(path, "consistency path")
    if old_size > new_size:
        raise TranslogError(Step.CONSISTENCY_SIZES, f"the old tree ({old_size}) is larger than the new one ({new_size})")
    if old_size == 0:
        raise TranslogError(Step.CONSISTENCY_EMPTY_OLD, "the old tree is empty: there is no consistency to prove")
    if old_size == new_size:
        if hashes:
            raise TranslogError(Step.CONSISTENCY_SAME_SIZE, f"equal sizes need an empty path, not {len(hashes)} hashes")
        if not _equal(old_root, new_root):
            raise TranslogError(Step.CONSISTENCY_SAME_SIZE, "two trees of the same size have different roots (a fork)")
        return
    # 1. An empty path proves nothing.
    if not hashes:
        raise TranslogError(Step.CONSISTENCY_EMPTY_PROOF, "the consistency path is empty")
    # 2. If the old tree is a perfect subtree of the new one, its root starts the path (it is not sent).
    offset = 0
    if is_power_of_two(old_size):
        hashes, offset = [old_root, *hashes], 1
    # 3. fn = first - 1, sn = second - 1.  4. Drop the levels where fn's node is a right child of a perfect
    # subtree fully inside the old tree (shared by both trees, so not in the path).
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    # 5. fr = sr = the first hash of the path.
    fr = sr = hashes[0]
    # 6. For each following c:
    for i, c in enumerate(hashes[1:], start=1):
        if sn == 0:
            raise TranslogError(
                Step.CONSISTENCY_TOO_LONG, f"the path has {len(path)} hashes; the new root is reached after {i - offset}"
            )
        if fn & 1 or fn == sn:  # c is a left sibling: in both trees
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while fn != 0 and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:  # c is a right sibling: only in the new tree
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    # 7. sn must be 0, fr the old root and sr the new root.
    if sn != 0:
        raise TranslogError(Step.CONSISTENCY_TOO_SHORT, f"the path has {len(path)} hashes; it ends below the new root")
    if not _equal(fr, old_root):
        raise TranslogError(Step.CONSISTENCY_OLD_ROOT, "the path does not rebuild the old root hash")
    if not _equal(sr, new_root):
        raise TranslogError(Step.CONSISTENCY_NEW_ROOT, "the path does not rebuild the new root hash")
