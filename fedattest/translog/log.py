"""An in-memory, append-only Merkle log (RFC 6962 §2.1): append entries, then ask for the root of any
earlier size, an inclusion proof (§2.1.1, PATH) or a consistency proof (§2.1.2, PROOF).

Pure and unsynchronised: the caller persists the entries (or their leaf hashes) and serialises access.
"""

from __future__ import annotations

from fedattest.translog.hashing import EMPTY_ROOT, HASH_SIZE, is_power_of_two, leaf_hash, node_hash, split_point


class MerkleLog:
    """An append-only list of leaf hashes and every complete subtree above them.

    ``_levels[k][i]`` is the hash of the perfect subtree over leaves ``[i·2^k, (i+1)·2^k)``. Appending adds
    one leaf and, amortised, one node (at most log n): O(1) hashes per append and about 2n hashes of memory
    (64 bytes per entry: some 6.4 MB for 10^5 entries). Every subtree RFC 6962's recursion visits is a perfect
    one (a lookup) or a right edge made of at most log n perfect ones, so a root costs O(log n) hashes and a
    proof O(log² n), for any size up to the current one; nothing is recomputed from the leaves.
    """

    __slots__ = ("_levels",)

    def __init__(self) -> None:
        self._levels: list[list[bytes]] = [[]]

    def __len__(self) -> int:
        return len(self._levels[0])

    @property
    def size(self) -> int:
        return len(self._levels[0])

    def append(self, data: bytes) -> int:
        """Add an entry (its leaf hash is SHA-256(0x00 ‖ data)); returns its index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, hashed: bytes) -> int:
        """Add an entry given by its leaf hash (a log restored from stored leaf hashes); returns its index."""
        if len(hashed) != HASH_SIZE:
            raise ValueError(f"a leaf hash has {HASH_SIZE} bytes, not {len(hashed)}")
        index = len(self._levels[0])
        self._levels[0].append(bytes(hashed))
        level, count = 0, index + 1
        while count % 2 == 0:  # the new node completes a pair: its parent is complete too
            below = self._levels[level]
            if level + 1 == len(self._levels):
                self._levels.append([])
            self._levels[level + 1].append(node_hash(below[-2], below[-1]))
            level, count = level + 1, count // 2
        return index

    def leaf_hash(self, index: int) -> bytes:
        self._check_index(index, self.size)
        return self._levels[0][index]

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[0:size]) (the current size by default); SHA-256("") for 0."""
        size = self.size if size is None else size
        self._check_size(size)
        return EMPTY_ROOT if size == 0 else self._subtree(0, size)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        """PATH(index, D[0:size]): the audit path of entry ``index`` in the tree of ``size`` entries, leaf first."""
        size = self.size if size is None else size
        self._check_size(size)
        self._check_index(index, size)
        return self._path(index, 0, size)

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        """PROOF(old_size, D[0:new_size]) for 0 < old_size <= new_size; empty when the sizes are equal."""
        new_size = self.size if new_size is None else new_size
        self._check_size(new_size)
        if not 0 < old_size <= new_size:
            raise ValueError(f"a consistency proof needs 0 < old size <= new size, not {old_size} and {new_size}")
        if old_size == new_size:
            return []
        return self._subproof(old_size, 0, new_size, complete=True)

    # -- RFC 6962 §2.1.1 and §2.1.2, over the leaf range [start, end) -------------------------------------

    def _subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for a range the RFC's recursion reaches: ``start`` is a multiple of the largest
        power of two <= end - start, so each left part is a stored perfect subtree."""
        n = end - start
        if is_power_of_two(n):
            level = n.bit_length() - 1
            return self._levels[level][start >> level]
        k = split_point(n)
        return node_hash(self._subtree(start, start + k), self._subtree(start + k, end))

    def _path(self, m: int, start: int, end: int) -> list[bytes]:
        # PATH(m, D[n]) = PATH(m, D[0:k]) : MTH(D[k:n]) if m < k, else PATH(m - k, D[k:n]) : MTH(D[0:k])
        if end - start == 1:
            return []
        k = split_point(end - start)
        if m < k:
            return [*self._path(m, start, start + k), self._subtree(start + k, end)]
        return [*self._path(m - k, start + k, end), self._subtree(start, start + k)]

    def _subproof(self, m: int, start: int, end: int, *, complete: bool) -> list[bytes]:
        # SUBPROOF(m, D[n], b): see RFC 6962 §2.1.2; ``complete`` is b, "the old tree is this whole subtree".
        n = end - start
        if m == n:
            return [] if complete else [self._subtree(start, end)]
        k = split_point(n)
        if m <= k:
            return [*self._subproof(m, start, start + k, complete=complete), self._subtree(start + k, end)]
        return [*self._subproof(m - k, start + k, end, complete=False), self._subtree(start, start + k)]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError(f"tree size {size} is not between 0 and the log's size {self.size}")

    @staticmethod
    def _check_index(index: int, size: int) -> None:
        if not 0 <= index < size:
            raise ValueError(f"leaf index {index} is not below the tree size {size}")
