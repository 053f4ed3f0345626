"""Hashing one file's chunks: the chunk leaves and root of a file's content, in memory or read from a
descriptor, and the errors that name a file that cannot be opened or read or that changed while read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import threading

from fedattest.data import tree
from fedattest.data.errors import DatasetError

# Reads into the per-thread buffer are at most this big, whatever the chunk size.
READ_BLOCK = 1 << 20

_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    return memoryview(buf)


def changed(label: bytes, detail: str) -> DatasetError:
    return DatasetError(f"{label.decode('utf-8', 'backslashreplace')}: changed while being read ({detail})")


def read_error(label: bytes, exc: OSError) -> DatasetError:
    return DatasetError(f"{label.decode('utf-8', 'backslashreplace')}: cannot read: {exc.strerror or exc}")


def open_error(label: bytes, exc: OSError) -> DatasetError:
    rel = label.decode("utf-8", "backslashreplace")
    if exc.errno in {errno.EACCES, errno.EPERM}:
        return DatasetError(f"{rel}: not readable (permission denied)")
    if exc.errno == errno.ELOOP:
        return DatasetError(f"{rel}: changed while being read (it is now a symlink)")
    return DatasetError(f"{rel}: cannot open: {exc.strerror or exc}")


def leaves_of(data: bytes, chunk_size: int) -> tuple[bytes, bytes]:
    """(concatenated chunk leaves, file root) of a whole file's content."""
    size = len(data)
    if size == 0:
        return b"", tree.EMPTY_ROOT
    if size <= chunk_size:
        leaf = hashlib.sha256(tree.LEAF + data).digest()
        return leaf, leaf
    view = memoryview(data)
    leaves = [tree.chunk_leaf(view[i : i + chunk_size]) for i in range(0, size, chunk_size)]
    return b"".join(leaves), tree.merkle_root(leaves)


def root_of(leaves: bytes) -> bytes:
    """A file's root from its concatenated chunk leaves."""
    if len(leaves) == 32:
        return leaves
    return tree.merkle_root([leaves[i : i + 32] for i in range(0, len(leaves), 32)])


def hash_range(fd: int, label: bytes, size: int, chunk_size: int, chunks: range) -> bytes:
    """Leaf hashes of the ``chunks`` of the file open as ``fd`` (``size`` bytes as found). Reads with
    pread into a per-thread buffer of at most :data:`READ_BLOCK` bytes; hashlib releases the GIL while
    hashing, so threads scale. After the last chunk, a file that grew is refused."""
    buf = _buffer(min(chunk_size, READ_BLOCK))
    block = len(buf)
    sha = hashlib.sha256
    leaves = []
    for chunk in chunks:
        offset = chunk * chunk_size
        want = min(chunk_size, size - offset)
        h = sha(tree.LEAF)
        done = 0
        while done < want:
            n = min(want - done, block)
            try:
                got = os.preadv(fd, [buf[:n]], offset + done)
            except OSError as exc:
                raise read_error(label, exc) from None
            if got != n:
                raise changed(label, f"chunk {chunk} is {done + got} bytes, expected {want}")
            h.update(buf[:n])
            done += n
        leaves.append(h.digest())
    if chunks.stop == tree.chunk_count(size, chunk_size):
        try:
            grew = os.pread(fd, 1, size)
        except OSError as exc:
            raise read_error(label, exc) from None
        if grew:
            raise changed(label, f"it grew past {size} bytes")
    return b"".join(leaves)


def hash_batch(files: list[tuple[bytes, int, int]], chunk_size: int) -> list[bytes]:
    return [hash_range(fd, label, size, chunk_size, range(tree.chunk_count(size, chunk_size))) for label, fd, size in files]


def hash_segment(fd: int, label: bytes, size: int, chunk_size: int, chunks: range) -> list[bytes]:
    return [hash_range(fd, label, size, chunk_size, chunks)]
