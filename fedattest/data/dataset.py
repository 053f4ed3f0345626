"""Reading committed data: every chunk is checked against the commitment when it is read.

``open_dataset(DIR, root)`` loads the (untrusted) index, recomputes its root and compares it with the
commitment before anything is used. ``CommittedDataset.open(path)`` then returns a seekable binary file
whose every read hashes the chunks it touches and compares them with the index: random access costs one
chunk hash, not a whole-file hash, and data changed on disk at any time, even after open, is detected
when it is read. Nothing unverified is ever returned.
"""

from __future__ import annotations

import errno
import hmac
import io
import os
import stat
from pathlib import Path

from fedattest.data import tree
from fedattest.data.commit import PathArg, as_path, check_directory, check_workers
from fedattest.data.errors import DataIntegrityError, DatasetArgumentError, DatasetError
from fedattest.data.index import INDEX_NAME, DatasetIndex, IndexedFile, check_path
from fedattest.data.scan import hash_files
from fedattest.data.walk import FoundFile, find_files
from fedattest.errors import FormatError

MAX_INDEX_BYTES = 1 << 34


def parse_root(root: bytes | str) -> bytes:
    """32 bytes, or 64 hex digits (optionally ``0x``-prefixed); anything else is a :class:`DatasetArgumentError`."""
    if isinstance(root, str):
        try:
            root = bytes.fromhex(root.strip().removeprefix("0x"))
        except ValueError:
            raise DatasetArgumentError("the dataset root must be 64 hex digits") from None
    elif isinstance(root, bytearray | memoryview):
        root = bytes(root)
    if not isinstance(root, bytes):
        raise DatasetArgumentError(f"the dataset root must be 32 bytes or 64 hex digits, got {type(root).__name__}")
    if len(root) != 32:
        raise DatasetArgumentError(f"the dataset root must be 32 bytes, got {len(root)}")
    return root


def _require_regular(path: str, mode: int) -> None:
    """:class:`DataIntegrityError` naming ``path`` unless ``mode`` is a regular file's (committed files are)."""
    if not stat.S_ISREG(mode):
        kind = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device",
                stat.S_IFSOCK: "a socket", stat.S_IFDIR: "a directory", stat.S_IFLNK: "a symbolic link"}  # fmt: skip
        actual = kind.get(stat.S_IFMT(mode), "a special file")
        raise DataIntegrityError(path, None, "a regular file", f"{actual}, not a regular file", what="file type")


def _committed_path(path: object) -> str:
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise DatasetArgumentError(f"path: expected a str or os.PathLike committed path, got {type(path).__name__}")
    return path


class CommittedDataset:
    """A directory of data checked against a commitment. Make one with :func:`open_dataset`."""

    def __init__(self, directory: PathArg, index: DatasetIndex) -> None:
        self.directory = Path(directory)
        self.index = index
        self._top = os.path.realpath(directory)

    @property
    def root(self) -> bytes:
        return self.index.root

    @property
    def chunk_size(self) -> int:
        return self.index.chunk_size

    def files(self) -> list[str]:
        """Committed paths, sorted."""
        return [f.path for f in self.index.files]

    def size(self, path: PathArg) -> int:
        return self._entry(path).size

    def _entry(self, path: PathArg) -> IndexedFile:
        path = _committed_path(path)
        try:
            check_path(path)
        except FormatError as exc:
            raise DatasetError(f"refused path: {exc.detail}") from None
        entry = self.index.by_path.get(path)
        if entry is None:
            raise DatasetError(f"{path!r} is not in the commitment")
        return entry

    def _real(self, path: str) -> str:
        real = os.path.realpath(os.path.join(self._top, path))
        if os.path.commonpath([real, self._top]) != self._top:
            raise DatasetError(f"{path!r} resolves outside the dataset directory")
        return real

    def open(self, path: PathArg) -> VerifiedFile:
        """A read-only, seekable binary file over committed ``path`` (``str`` or ``os.PathLike``, relative,
        '/'-separated); reads raise :class:`DataIntegrityError` on any mismatch with the commitment."""
        entry = self._entry(path)
        path = entry.path
        real = self._real(path)
        # Non-blocking, so a FIFO (or a device) swapped in for a committed file cannot make open() wait for a
        # writer; not following a symbolic link swapped in after _real resolved the path. The descriptor is
        # then required to be a regular file (what was committed) before anything is read.
        flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
        try:
            top = os.open(self._top, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
            try:
                fd = os.open(os.path.relpath(real, self._top), flags, dir_fd=top)
            finally:
                os.close(top)
        except FileNotFoundError:
            raise DataIntegrityError(path, None, "present", "missing", what="file") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise DataIntegrityError(path, None, "a regular file", "a symbolic link", what="file type") from None
            raise DatasetError(f"{path}: {exc.strerror or exc}") from None
        try:
            st = os.fstat(fd)
            _require_regular(path, st.st_mode)
            actual = st.st_size
            if actual != entry.size:
                raise DataIntegrityError(path, None, str(entry.size), str(actual), what="size in bytes")
        except BaseException:
            os.close(fd)
            raise
        return VerifiedFile(fd, entry, self.chunk_size)

    def read_bytes(self, path: PathArg) -> bytes:
        with self.open(path) as f:
            return f.read()

    def verify_all(self, *, workers: int | None = None, strict: bool = True) -> None:
        """Hash everything and compare with the commitment; raises at the first mismatch in (path, chunk)
        order. With ``strict``, files present in the directory but not in the commitment are an error too."""
        workers = check_workers(workers)
        found = []
        for entry in self.index.files:
            real = self._real(entry.path)
            try:
                st = os.stat(real)
            except FileNotFoundError:
                raise DataIntegrityError(entry.path, None, "present", "missing", what="file") from None
            _require_regular(entry.path, st.st_mode)  # hashing opens it: a FIFO would block there
            actual = st.st_size
            if actual != entry.size:
                raise DataIntegrityError(entry.path, None, str(entry.size), str(actual), what="size in bytes")
            found.append(FoundFile(entry.path, Path(real), entry.size))
        leaves = hash_files(found, self.chunk_size, workers=workers)
        for entry, got in zip(self.index.files, leaves, strict=True):
            if not hmac.compare_digest(got, entry.leaves):
                chunk = next(i for i in range(entry.chunks) if got[32 * i : 32 * i + 32] != entry.leaf(i))
                raise DataIntegrityError(entry.path, chunk, entry.leaf(chunk).hex(), got[32 * chunk : 32 * chunk + 32].hex())
        if strict:
            present = {f.path for f in find_files(self.directory, exclude=(self.directory / INDEX_NAME,))}
            extra = sorted(present - set(self.index.by_path), key=lambda p: p.encode())
            if extra:
                raise DataIntegrityError(extra[0], None, "absent", "present", what="file not in the commitment")


def load_index(path: PathArg) -> DatasetIndex:
    path = as_path(path, "index")
    try:
        with path.open("rb") as fh:
            data = fh.read(MAX_INDEX_BYTES + 1)
    except FileNotFoundError:
        raise DatasetError(f"{path}: no index; run 'fedattest data commit' or pass the index") from None
    except OSError as exc:
        raise DatasetError(f"{path}: {exc.strerror or exc}") from None
    try:
        return DatasetIndex.parse(data)
    except FormatError as exc:
        raise DatasetError(f"{path}: {exc}") from None


def open_dataset(directory: PathArg, root: bytes | str, index: PathArg | DatasetIndex | None = None) -> CommittedDataset:
    """Open ``directory`` as the dataset committed to by ``root`` (32 bytes or 64 hex digits). ``index``
    (a path, or an already loaded :class:`DatasetIndex`) defaults to ``DIR/.fedattest-index``. The index
    must reproduce ``root`` exactly, or nothing opens. Bad arguments raise :class:`DatasetArgumentError`
    before anything is read."""
    directory, _ = check_directory(directory)
    want = parse_root(root)
    if isinstance(index, DatasetIndex):
        loaded = index
    else:
        loaded = load_index(directory / INDEX_NAME if index is None else as_path(index, "index"))
    if not loaded.matches(want):
        raise DatasetError(
            f"the index does not match the commitment: it implies root {loaded.root.hex()}, the commitment is {want.hex()}"
        )
    return CommittedDataset(directory, loaded)


class VerifiedFile(io.RawIOBase):
    """A committed file, read through chunk verification. Also usable with ``readinto`` on numpy arrays."""

    def __init__(self, fd: int, entry: IndexedFile, chunk_size: int) -> None:
        super().__init__()
        self._fd = fd
        self._entry = entry
        self._chunk_size = chunk_size
        self._pos = 0
        self._cached: tuple[int, bytes] | None = None  # the last verified chunk
        self.name = entry.path

    # -- io plumbing ----------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._entry.size}.get(whence)
        if base is None:
            raise ValueError(f"invalid whence {whence}")
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def close(self) -> None:
        if not self.closed:
            os.close(self._fd)
        super().close()

    def fileno(self) -> int:
        # A descriptor would let a reader bypass verification (np.fromfile, mmap): refuse it.
        raise io.UnsupportedOperation("committed files have no file descriptor; read them through this object")

    # -- verified reads ------------------------------------------------------------------------
    def _chunk(self, index: int) -> bytes:
        if self._cached is not None and self._cached[0] == index:
            return self._cached[1]
        entry, cs = self._entry, self._chunk_size
        offset = index * cs
        want = min(cs, entry.size - offset)
        last = index == entry.chunks - 1
        # One byte more on the last chunk: data appended after the commitment is detected, not ignored.
        data = os.pread(self._fd, want + 1 if last else want, offset)
        if len(data) > want:
            raise DataIntegrityError(entry.path, None, str(entry.size), f"more than {entry.size}", what="size in bytes")
        got = tree.chunk_leaf(data)
        expected = entry.leaf(index)
        if len(data) != want or not hmac.compare_digest(got, expected):
            raise DataIntegrityError(entry.path, index, expected.hex(), got.hex())
        self._cached = (index, data)
        return data

    def _read_whole_chunk(self, index: int, target: memoryview) -> None:
        got_bytes = os.preadv(self._fd, [target], index * self._chunk_size)
        got = tree.chunk_leaf(target[:got_bytes])
        expected = self._entry.leaf(index)
        if got_bytes != len(target) or not hmac.compare_digest(got, expected):
            target[:] = bytes(len(target))  # never leave unverified bytes behind in the caller's buffer
            raise DataIntegrityError(self._entry.path, index, expected.hex(), got.hex())

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.closed:
            raise ValueError("I/O operation on closed file")
        out = memoryview(buffer).cast("B")
        done = 0
        while done < len(out) and self._pos < self._entry.size:
            index, within = divmod(self._pos, self._chunk_size)
            if within == 0 and len(out) - done >= self._chunk_size and index < self._entry.chunks - 1:
                # A whole chunk (not the last): read it straight into the caller's buffer, no copy.
                self._read_whole_chunk(index, out[done : done + self._chunk_size])
                done += self._chunk_size
                self._pos += self._chunk_size
                continue
            data = self._chunk(index)
            n = min(len(out) - done, len(data) - within)
            out[done : done + n] = data[within : within + n]
            done += n
            self._pos += n
        return done

    def readall(self) -> bytes:
        remaining = max(0, self._entry.size - self._pos)
        buf = bytearray(remaining)
        n = self.readinto(buf)
        return bytes(buf[:n])
