"""The chunk index: every chunk hash of a committed dataset, in a versioned binary file.

The index is untrusted (it sits next to the data, where the data owner can edit it); it is only used
after its recomputed root equals the commitment. Layout (big-endian)::

    magic "FEDATTEST-INDEX\\0" (16) | version u16 = 1 | chunk size u32 | file count u32
    per file, sorted by path bytes: path length u16 | path (UTF-8) | size u64 | ceil(size / chunk size) x 32-byte chunk leaves
    root (32): the dataset root, for convenience only (recomputed on load, never trusted)
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from functools import cached_property
from typing import BinaryIO

from fedattest.data import tree
from fedattest.errors import FormatError

DEFAULT_CHUNK_SIZE = 1 << 20
INDEX_NAME = ".fedattest-index"
MAGIC = b"FEDATTEST-INDEX\x00"
VERSION = 1
MIN_CHUNK_SIZE = 4096
MAX_CHUNK_SIZE = 1 << 30
MAX_FILES = 0xFFFFFFFF  # the file count is a u32
MAX_PATH_BYTES = 0xFFFF  # a path's length is a u16


def check_path(path: str) -> str:
    """A committed path: relative, '/'-separated, no empty, '.' or '..' components, valid UTF-8, no NUL.
    Returns it unchanged; raises :class:`FormatError` naming what is wrong."""
    if not isinstance(path, str) or not path:
        raise FormatError("path", "must be a non-empty string")
    if path.startswith("/"):
        raise FormatError("path", f"{path!r} is absolute; paths are relative to the dataset directory")
    if "\x00" in path:
        raise FormatError("path", f"{path!r} contains a NUL character")
    for part in path.split("/"):
        if part in ("", ".", ".."):
            raise FormatError("path", f"{path!r} has an empty, '.' or '..' component")
    try:
        encoded = path.encode("utf-8")
    except UnicodeEncodeError:
        raise FormatError("path", f"{path!r} is not valid UTF-8") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise FormatError("path", "longer than 65535 bytes")
    return path


def check_chunk_size(chunk_size: int) -> int:
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE or chunk_size & (chunk_size - 1):
        raise FormatError("chunk_size", f"{chunk_size} is not a power of two between 4 KiB and 1 GiB")
    return chunk_size


@dataclass(frozen=True)
class IndexedFile:
    path: str
    size: int
    leaves: bytes  # chunk leaf hashes, 32 bytes each

    def leaf(self, chunk: int) -> bytes:
        return self.leaves[32 * chunk : 32 * chunk + 32]

    @property
    def chunks(self) -> int:
        return len(self.leaves) // 32

    @cached_property
    def root(self) -> bytes:
        return tree.merkle_root([self.leaves[i : i + 32] for i in range(0, len(self.leaves), 32)])

    @cached_property
    def entry(self) -> bytes:
        return tree.file_entry(self.path, self.size, self.root)


@dataclass(frozen=True)
class DatasetIndex:
    chunk_size: int
    files: tuple[IndexedFile, ...]

    def __post_init__(self) -> None:
        check_chunk_size(self.chunk_size)
        previous = b""
        for f in self.files:
            check_path(f.path)
            key = f.path.encode()
            if previous and key <= previous:
                raise FormatError("index.files", f"paths must be unique and sorted by their UTF-8 bytes ({f.path!r})")
            previous = key
            need = tree.chunk_count(f.size, self.chunk_size)
            if len(f.leaves) != 32 * need:
                raise FormatError("index.files", f"{f.path!r}: {f.size} bytes need {need} chunk hashes")

    @cached_property
    def root(self) -> bytes:
        """The dataset root this index implies (recomputed; compare it with the commitment)."""
        return tree.dataset_root(self.chunk_size, [f.entry for f in self.files])

    @cached_property
    def by_path(self) -> dict[str, IndexedFile]:
        return {f.path: f for f in self.files}

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def matches(self, root: bytes) -> bool:
        return hmac.compare_digest(self.root, root)

    def to_bytes(self) -> bytes:
        out = [MAGIC, VERSION.to_bytes(2, "big"), self.chunk_size.to_bytes(4, "big"), len(self.files).to_bytes(4, "big")]
        for f in self.files:
            raw = f.path.encode("utf-8")
            out += [len(raw).to_bytes(2, "big"), raw, f.size.to_bytes(8, "big"), f.leaves]
        out.append(self.root)
        return b"".join(out)

    @classmethod
    def parse(cls, data: bytes) -> DatasetIndex:
        """Strict parse: wrong magic, version, sizes, unsorted paths or trailing bytes raise FormatError."""
        view = memoryview(data)
        pos = 0

        def take(n: int, what: str) -> bytes:
            nonlocal pos
            if pos + n > len(view):
                raise FormatError(f"index.{what}", "truncated")
            chunk = bytes(view[pos : pos + n])
            pos += n
            return chunk

        if take(16, "magic") != MAGIC:
            raise FormatError("index.magic", "not a fedattest dataset index")
        version = int.from_bytes(take(2, "version"), "big")
        if version != VERSION:
            raise FormatError("index.version", f"version {version} is not supported (expected {VERSION})")
        chunk_size = check_chunk_size(int.from_bytes(take(4, "chunk_size"), "big"))
        count = int.from_bytes(take(4, "file_count"), "big")
        files = []
        for i in range(count):
            raw = take(int.from_bytes(take(2, f"files[{i}].path_length"), "big"), f"files[{i}].path")
            try:
                path = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise FormatError(f"index.files[{i}].path", "not valid UTF-8") from None
            size = int.from_bytes(take(8, f"files[{i}].size"), "big")
            n = tree.chunk_count(size, chunk_size)
            if n * 32 > len(view) - pos:
                raise FormatError(f"index.files[{i}].chunks", "truncated")
            files.append(IndexedFile(path, size, take(32 * n, f"files[{i}].chunks")))
        stated_root = take(32, "root")
        if pos != len(view):
            raise FormatError("index", f"{len(view) - pos} unexpected bytes after the index")
        index = cls(chunk_size, tuple(files))
        if not hmac.compare_digest(index.root, stated_root):
            raise FormatError("index.root", "the stated root does not match the index's contents")
        return index


class IndexWriter:
    """Writes an index to ``fh`` one file at a time, in order, and computes the dataset root on the way:
    nothing but O(log n) hashes is kept, whatever the number of files. The caller gives paths already
    checked and sorted (the walk in :mod:`fedattest.data.walk` yields them so); ``fh`` must be seekable,
    because the file count in the header is written last."""

    def __init__(self, fh: BinaryIO, chunk_size: int) -> None:
        self._fh = fh
        self._write = fh.write
        self._start = fh.tell()
        self.chunk_size = check_chunk_size(chunk_size)
        self._entries = tree.MerkleBuilder()
        self._add_entry = self._entries.add
        self.total_bytes = 0
        fh.write(MAGIC + VERSION.to_bytes(2, "big") + chunk_size.to_bytes(4, "big") + bytes(4))

    @property
    def files(self) -> int:
        return self._entries.count

    def add(self, path: bytes, size: int, leaves: bytes, root: bytes) -> None:
        """One file: its UTF-8 path, size, chunk leaves (concatenated) and their Merkle root."""
        head = len(path).to_bytes(2, "big") + path + size.to_bytes(8, "big")
        self._write(head + leaves)
        self._add_entry(hashlib.sha256(tree.ENTRY + head + root).digest())
        self.total_bytes += size

    def finish(self) -> bytes:
        """Write the root and the file count; returns the dataset root."""
        count = self._entries.count
        if count > MAX_FILES:
            raise FormatError("index.file_count", f"{count} files; an index holds at most {MAX_FILES}")
        root = tree.dataset_root_over(self.chunk_size, count, self._entries.root())
        self._write(root)
        end = self._fh.tell()
        self._fh.seek(self._start + len(MAGIC) + 2 + 4)
        self._write(count.to_bytes(4, "big"))
        self._fh.seek(end)
        return root
