"""Finding a dataset's files and hashing them in chunks, in parallel. The I/O half of commitments."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fedattest.data import tree
from fedattest.data.errors import DatasetError

DEFAULT_CHUNK_SIZE = 1 << 20
INDEX_NAME = ".fedattest-index"
# Work is split into segments of this many chunks so that one huge file still spreads over all cores.
SEGMENT_CHUNKS = 32


@dataclass(frozen=True)
class FoundFile:
    path: str  # relative, '/'-separated
    real: Path  # what to read (a symlink inside the directory is read through its target)
    size: int


def _relative_name(name: str, parent: str) -> str:
    try:
        os.fsencode(name).decode("utf-8")
    except UnicodeDecodeError:
        shown = os.fsencode(name).decode("utf-8", "backslashreplace")
        raise DatasetError(f"{parent}{shown}: file name is not valid UTF-8; rename it to commit it") from None
    return parent + name


def find_files(directory: Path, *, exclude: Iterable[Path] = ()) -> list[FoundFile]:
    """Every regular file under ``directory``, sorted by the UTF-8 bytes of its relative path.

    Refused, with a message naming the path: symlinks that leave ``directory`` (or dangle), symlinked
    directories, special files (FIFOs, sockets, devices), unreadable files and non-UTF-8 names.
    ``exclude`` lists files to leave out (the index, a commitment file written inside the directory).
    """
    try:
        top = directory.resolve(strict=True)
    except OSError as exc:
        raise DatasetError(f"{directory}: {exc.strerror or exc}") from None
    if not top.is_dir():
        raise DatasetError(f"{directory}: not a directory")
    skip = {os.path.realpath(p) for p in exclude}
    found: list[FoundFile] = []
    stack = [(top, "")]
    while stack:
        current, prefix = stack.pop()
        try:
            entries = list(os.scandir(current))
        except OSError as exc:
            raise DatasetError(f"{prefix or '.'}: cannot list the directory: {exc.strerror or exc}") from None
        for entry in entries:
            rel = _relative_name(entry.name, prefix)
            if os.path.realpath(entry.path) in skip and not entry.is_symlink():
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError as exc:
                raise DatasetError(f"{rel}: {exc.strerror or exc}") from None
            real = Path(entry.path)
            if stat.S_ISLNK(st.st_mode):
                target = os.path.realpath(entry.path)
                if os.path.commonpath([target, str(top)]) != str(top):
                    raise DatasetError(f"{rel}: symlink leaves the dataset directory (to {target}); copy the file in instead")
                try:
                    st = os.stat(target)
                except OSError:
                    raise DatasetError(f"{rel}: dangling symlink") from None
                if stat.S_ISDIR(st.st_mode):
                    raise DatasetError(f"{rel}: symlinked directories are not supported; commit the directory it points to")
                real = Path(target)
            if stat.S_ISDIR(st.st_mode):
                stack.append((Path(entry.path), rel + "/"))
            elif stat.S_ISREG(st.st_mode):
                if not os.access(real, os.R_OK):
                    raise DatasetError(f"{rel}: not readable (permission denied)")
                found.append(FoundFile(rel, real, st.st_size))
            else:
                raise DatasetError(f"{rel}: not a regular file (FIFO, socket or device); only files can be committed")
    found.sort(key=lambda f: f.path.encode("utf-8"))
    return found


_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    return memoryview(buf)


def hash_segment(f: FoundFile, first: int, count: int, chunk_size: int) -> bytes:
    """Leaf hashes of chunks ``first .. first+count-1`` of ``f`` (whose size is as found or committed).
    Reads with pread into a per-thread buffer; hashlib releases the GIL while hashing, so threads scale."""
    real, size, label = f.real, f.size, f.path
    leaves = []
    try:
        fd = os.open(real, os.O_RDONLY)
    except OSError as exc:
        raise DatasetError(f"{label}: cannot open: {exc.strerror or exc}") from None
    try:
        buf = _buffer(chunk_size)
        for chunk in range(first, first + count):
            offset = chunk * chunk_size
            want = min(chunk_size, size - offset)
            got = os.preadv(fd, [buf[:want]], offset)
            if got != want:
                raise DatasetError(f"{label}: changed while being read (chunk {chunk} is {got} bytes, expected {want})")
            leaves.append(tree.chunk_leaf(buf[:want]))
    finally:
        os.close(fd)
    return b"".join(leaves)


def hash_files(
    files: list[FoundFile], chunk_size: int, *, workers: int | None = None, advance: Callable[[int], None] | None = None
) -> list[bytes]:
    """The concatenated chunk leaves of each file, in order. ``advance(n)`` is called with the bytes done."""
    tasks: list[tuple[int, int, int]] = []
    for i, f in enumerate(files):
        chunks = tree.chunk_count(f.size, chunk_size)
        tasks += [(i, first, min(SEGMENT_CHUNKS, chunks - first)) for first in range(0, chunks, SEGMENT_CHUNKS)]
    parts: dict[tuple[int, int], bytes] = {}
    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedattest-hash") as pool:
        futures = {pool.submit(hash_segment, files[i], first, count, chunk_size): (i, first, count) for i, first, count in tasks}
        try:
            for future, (i, first, count) in futures.items():
                parts[(i, first)] = future.result()
                if advance is not None:
                    end = min((first + count) * chunk_size, files[i].size)
                    advance(end - first * chunk_size)
        except BaseException:
            for future in futures:
                future.cancel()
            raise
    out = []
    for i, f in enumerate(files):
        firsts = range(0, tree.chunk_count(f.size, chunk_size), SEGMENT_CHUNKS)
        out.append(b"".join(parts[(i, first)] for first in firsts))
    return out
