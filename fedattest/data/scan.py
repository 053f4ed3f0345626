"""Finding a dataset's files and hashing them: the I/O half of commitments.

The walk (:func:`walk`)
    Each directory is listed once, with ``os.scandir`` on a descriptor opened ``O_DIRECTORY |
    O_NOFOLLOW`` relative to its parent's, so a directory swapped for a symlink during the walk cannot
    lead it elsewhere. Entries are classified from the listing's file type (no ``stat`` per entry) and
    sorted with a directory keyed as its name followed by '/': a depth-first walk in that order yields
    files exactly in commitment order (sorted UTF-8 bytes of the relative path), so nothing has to be
    collected and sorted globally. What is kept is the sorted names of the directories being walked.

Hashing (:func:`hash_tree`)
    A file is opened relative to its directory's descriptor with ``O_NOFOLLOW | O_NONBLOCK`` (a name
    swapped for a symlink or a FIFO after the listing fails or is refused instead of being followed or
    blocking), and ``fstat`` on that descriptor gives the type and size of exactly what is read. Files up
    to :data:`INLINE_MAX` bytes are read with one ``read`` and hashed in the calling thread: for them the
    system calls cost more than the hashing, and handing them to threads costs more than both (measured
    on 2 cores: threads made 100,000 1 KiB files slower, not faster). Bigger files go to a thread pool,
    several files per task (up to :data:`BATCH_BYTES`) or, for a large file, in segments of whole chunks
    (:data:`SEGMENT_BYTES`) so that one huge file spreads over every core; ``hashlib`` releases the GIL on
    buffers above 2 KiB, so the threads hash in parallel. Results are taken back in order, so the caller
    (the index writer) streams them to disk as they complete; the number of tasks and open files in
    flight is bounded.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import select
import stat
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterable, Iterator, Set
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from fedattest.data import tree
from fedattest.data.errors import DatasetError

DEFAULT_CHUNK_SIZE = 1 << 20
INDEX_NAME = ".fedattest-index"
# Files up to this size are read whole and hashed in the calling thread.
INLINE_MAX = 64 << 10
# A pool task hashes consecutive files up to this many bytes (or BATCH_FILES files)...
BATCH_BYTES = 8 << 20
BATCH_FILES = 64
# ... and a file larger than this is split into segments of whole chunks of about this size.
SEGMENT_BYTES = 32 << 20
# Reads into the per-thread buffer are at most this big, whatever the chunk size.
READ_BLOCK = 1 << 20
# The walk yields at most this many files at a time (progress is reported between them).
RUN_FILES = 1024
# Bounds on what is in flight in the pool: open descriptors, and tasks per worker.
MAX_OPEN_FILES = 256
TASKS_PER_WORKER = 3
# Helper processes (datasets of many small files): started once this many files have been seen, nearly
# all small; given groups of at most HELPER_FILES paths, HELPER_QUEUE at a time each (so that one is
# always busy while this process takes answers and hashes groups itself); they hash files of up to
# HELPER_MAX bytes and give the others back. A request is at most 1/(HELPER_QUEUE + 1) of the pipe.
HELPER_AFTER = 2048
HELPER_FILES = 64
HELPER_QUEUE = 6
HELPER_MAX = 1 << 20

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

_DIR, _FILE, _LINK, _OTHER = 0, 1, 2, 3

# One file of a run: (path as committed, in UTF-8; name in its directory; resolved target of a symlink or None)
WalkedFile = tuple[bytes, str, str | None]
# (path, size, concatenated chunk leaves, file root): what the hashing hands back, in order.
AddFile = Callable[[bytes, int, bytes, bytes], None]


@dataclass(frozen=True)
class FoundFile:
    path: str  # relative, '/'-separated
    real: Path  # what to read (a symlink inside the directory is read through its target)
    size: int


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the walk -----------------------------------------------------------------------------------------


def _not_utf8(name: str, prefix: str) -> DatasetError:
    shown = os.fsencode(name).decode("utf-8", "backslashreplace")
    return DatasetError(f"{prefix}{shown}: file name is not valid UTF-8; rename it to commit it")


def _not_regular(rel: str) -> DatasetError:
    return DatasetError(f"{rel}: not a regular file (FIFO, socket or device); only files can be committed")


def _list(fd: int, prefix: str) -> list[tuple[bytes, int, str]]:
    """The entries of the directory open as ``fd``, as (sort key, kind, name), sorted."""
    items: list[tuple[bytes, int, str]] = []
    append = items.append
    try:
        with os.scandir(fd) as listing:
            for entry in listing:
                name = entry.name
                try:
                    key = name.encode("utf-8")
                except UnicodeEncodeError:
                    raise _not_utf8(name, prefix) from None
                try:
                    if entry.is_file(follow_symlinks=False):
                        append((key, _FILE, name))
                    elif entry.is_dir(follow_symlinks=False):
                        append((key + b"/", _DIR, name))
                    elif entry.is_symlink():
                        append((key, _LINK, name))
                    else:
                        append((key, _OTHER, name))
                except OSError as exc:  # only when the listing has no file type and lstat fails
                    raise DatasetError(f"{prefix}{name}: {exc.strerror or exc}") from None
    except OSError as exc:
        raise DatasetError(f"{prefix or '.'}: cannot list the directory: {exc.strerror or exc}") from None
    items.sort()
    return items


def _resolve_link(top: str, path: str, rel: str) -> str:
    """The target of the symlink at ``path``: a regular file inside ``top``, or refused."""
    target = os.path.realpath(path)
    if os.path.commonpath([target, top]) != top:
        raise DatasetError(f"{rel}: symlink leaves the dataset directory (to {target}); copy the file in instead")
    try:
        st = os.stat(target)
    except OSError:
        raise DatasetError(f"{rel}: dangling symlink") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatasetError(f"{rel}: symlinked directories are not supported; commit the directory it points to")
    if not stat.S_ISREG(st.st_mode):
        raise _not_regular(rel)
    return target


def walk(top: str, skip: Set[bytes] = frozenset()) -> Generator[tuple[int, str, list[WalkedFile]], None, None]:
    """Every file under ``top`` (an absolute, resolved directory path), in commitment order, as runs of
    files that share a directory: ``(directory descriptor, directory path, [(path, name, target)])``.
    The descriptor is only valid until the next run is asked for.

    Refused, with a message naming the path: symlinks that leave ``top`` (or dangle), symlinked
    directories, special files (FIFOs, sockets, devices) and non-UTF-8 names. ``skip`` holds committed
    paths (UTF-8 bytes) of files to leave out; a symlink is never left out this way.
    """
    try:
        fd = os.open(top, DIR_FLAGS)
    except OSError as exc:
        raise DatasetError(f"{top}: cannot list the directory: {exc.strerror or exc}") from None
    # A frame: [descriptor, path, prefix, prefix as bytes, sorted entries, position]
    stack: list[list[object]] = []
    try:
        stack.append([fd, top, "", b"", _list(fd, ""), 0])
        while stack:
            frame = stack[-1]
            dfd: int = frame[0]  # type: ignore[assignment]
            dpath: str = frame[1]  # type: ignore[assignment]
            prefix: str = frame[2]  # type: ignore[assignment]
            prefix_b: bytes = frame[3]  # type: ignore[assignment]
            items: list[tuple[bytes, int, str]] = frame[4]  # type: ignore[assignment]
            pos: int = frame[5]  # type: ignore[assignment]
            run: list[WalkedFile] = []
            child: tuple[str, bytes] | None = None
            end = len(items)
            while pos < end:
                key, kind, name = items[pos]
                pos += 1
                if kind == _FILE:
                    path = prefix_b + key
                    if path not in skip:
                        run.append((path, name, None))
                        if len(run) >= RUN_FILES:
                            break
                elif kind == _DIR:
                    child = (name, prefix_b + key)
                    break
                elif kind == _LINK:
                    rel = prefix + name
                    run.append((prefix_b + key, name, _resolve_link(top, os.path.join(dpath, name), rel)))
                else:
                    raise _not_regular(prefix + name)
            frame[5] = pos
            if run:
                yield dfd, dpath, run
            if child is not None:
                name, child_prefix = child
                child_rel = prefix + name + "/"
                try:
                    cfd = os.open(name, DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    raise DatasetError(f"{child_rel}: cannot list the directory: {exc.strerror or exc}") from None
                stack.append([cfd, os.path.join(dpath, name), child_rel, child_prefix, [], 0])
                stack[-1][4] = _list(cfd, child_rel)
            elif pos >= end:
                stack.pop()
                os.close(dfd)
    finally:
        for frame in stack:
            os.close(frame[0])  # type: ignore[arg-type]


def find_files(directory: Path | str, *, exclude: Iterable[Path | str] = ()) -> list[FoundFile]:
    """Every regular file under ``directory``, sorted by the UTF-8 bytes of its relative path.

    Refused, with a message naming the path: what :func:`walk` refuses, and unreadable files.
    ``exclude`` lists files to leave out (the index, a commitment file written inside the directory).
    """
    try:
        top = os.path.realpath(directory, strict=True)
    except OSError as exc:
        raise DatasetError(f"{directory}: {exc.strerror or exc}") from None
    if not os.path.isdir(top):
        raise DatasetError(f"{directory}: not a directory")
    found: list[FoundFile] = []
    for _, dpath, run in walk(top, skip_set(top, exclude)):
        for raw, name, target in run:
            real = target or os.path.join(dpath, name)
            rel = raw.decode("utf-8")
            try:
                size = os.stat(real).st_size
            except OSError as exc:
                raise DatasetError(f"{rel}: {exc.strerror or exc}") from None
            if not os.access(real, os.R_OK):
                raise DatasetError(f"{rel}: not readable (permission denied)")
            found.append(FoundFile(rel, Path(real), size))
    return found


def skip_set(top: str, exclude: Iterable[Path | str]) -> frozenset[bytes]:
    """The committed paths (UTF-8 bytes) of the files in ``exclude`` that are inside ``top``."""
    out = set()
    for path in exclude:
        real = os.path.realpath(path)
        if real != top and os.path.commonpath([real, top]) == top:
            rel = os.path.relpath(real, top).replace(os.sep, "/")
            out.add(os.fsencode(rel))
    return frozenset(out)


# -- hashing ------------------------------------------------------------------------------------------

_buffers = threading.local()


def _buffer(size: int) -> memoryview:
    buf: bytearray | None = getattr(_buffers, "buf", None)
    if buf is None or len(buf) < size:
        buf = _buffers.buf = bytearray(size)
    return memoryview(buf)


def _changed(label: bytes, detail: str) -> DatasetError:
    return DatasetError(f"{label.decode('utf-8', 'backslashreplace')}: changed while being read ({detail})")


def _read_error(label: bytes, exc: OSError) -> DatasetError:
    return DatasetError(f"{label.decode('utf-8', 'backslashreplace')}: cannot read: {exc.strerror or exc}")


def _open_error(label: bytes, exc: OSError) -> DatasetError:
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
                raise _read_error(label, exc) from None
            if got != n:
                raise _changed(label, f"chunk {chunk} is {done + got} bytes, expected {want}")
            h.update(buf[:n])
            done += n
        leaves.append(h.digest())
    if chunks.stop == tree.chunk_count(size, chunk_size):
        try:
            grew = os.pread(fd, 1, size)
        except OSError as exc:
            raise _read_error(label, exc) from None
        if grew:
            raise _changed(label, f"it grew past {size} bytes")
    return b"".join(leaves)


def _hash_batch(files: list[tuple[bytes, int, int]], chunk_size: int) -> list[bytes]:
    return [hash_range(fd, label, size, chunk_size, range(tree.chunk_count(size, chunk_size))) for label, fd, size in files]


def _segment(fd: int, label: bytes, size: int, chunk_size: int, chunks: range) -> list[bytes]:
    return [hash_range(fd, label, size, chunk_size, chunks)]


# What is waiting to be handed back, in order: a result, a pool task or a helper request.
Result = tuple[bytes, int, bytes, bytes]


class _Task:
    """Files handed to the thread pool: a batch of whole files, or one segment of a large file."""

    __slots__ = ("files", "future", "last", "nbytes", "segment")

    def __init__(self, files: list[tuple[bytes, int, int]], *, segment: bool = False, last: bool = True) -> None:
        self.files = files  # (path, descriptor, size)
        self.nbytes = 0
        self.segment = segment
        self.last = last  # for a segment: the file's last one
        self.future: Future[list[bytes]] | None = None


class _Request:
    """Files of one directory handed to a helper process, and where to open them if given back."""

    __slots__ = ("directory", "files", "helper")

    def __init__(self, helper: _Helper, directory: bytes, files: list[WalkedFile]) -> None:
        self.helper = helper
        self.directory = directory  # absolute, with a trailing '/'
        self.files = files


class Pool:
    """Hashes files given as open descriptors in a thread pool, or as paths in helper processes, and hands
    back ``add(path, size, leaves, root)`` strictly in the order they were given, as they complete.
    Results computed by the caller itself go through :meth:`done` so that they keep their place. Use as
    a context manager: on the way out, everything still running is cancelled or waited for, helper
    processes are stopped, then every descriptor still held is closed."""

    def __init__(self, chunk_size: int, workers: int, add: AddFile) -> None:
        self.chunk_size = chunk_size
        self.workers = workers
        self.add = add
        self.pending: deque[_Task | _Request | Result] = deque()
        self.fallbacks = 0  # files a helper gave back
        self.helper_bytes = 0  # bytes hashed by helpers
        self._executor: ThreadPoolExecutor | None = None
        self._batch: _Task | None = None
        self._open = 0
        self._running = 0
        self._segment_chunks = max(1, SEGMENT_BYTES // chunk_size)
        self._partial: list[bytes] = []

    def __enter__(self) -> Pool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- handing work out ------------------------------------------------------------------------------
    def _submit(self, task: _Task, fn: Callable[..., list[bytes]], *args: object) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="fedattest-hash")
        task.future = self._executor.submit(fn, *args)
        self._running += 1

    def _flush(self) -> None:
        if self._batch is not None:
            self._submit(self._batch, _hash_batch, self._batch.files, self.chunk_size)
            self._batch = None

    def done(self, path: bytes, size: int, leaves: bytes, root: bytes) -> None:
        """A file hashed by the caller: handed back now, or after the files given before it."""
        if self.pending:
            self.pending.append((path, size, leaves, root))
        else:
            self.add(path, size, leaves, root)

    def hash(self, path: bytes, fd: int, size: int) -> None:
        """Hash the file open as ``fd`` (``size`` bytes) in the thread pool; the pool now owns ``fd``."""
        chunks = tree.chunk_count(size, self.chunk_size)
        self._open += 1
        if chunks <= self._segment_chunks:
            batch = self._batch
            if batch is None or self.pending[-1] is not batch:  # files given since must stay after it
                self._flush()
                batch = self._batch = _Task([])
                self.pending.append(batch)
            batch.files.append((path, fd, size))
            batch.nbytes += size
            if batch.nbytes >= BATCH_BYTES or len(batch.files) >= BATCH_FILES:
                self._flush()
        else:
            self._flush()
            for task in self._segments(path, fd, size, chunks):
                self.pending.append(task)
                self._throttle()
        self._throttle()

    def _segments(self, path: bytes, fd: int, size: int, chunks: int) -> Iterator[_Task]:
        step = self._segment_chunks
        for first in range(0, chunks, step):
            stop = min(first + step, chunks)
            task = _Task([(path, fd, size)], segment=True, last=stop == chunks)
            self._submit(task, _segment, fd, path, size, self.chunk_size, range(first, stop))
            yield task

    def request(self, helper: _Helper, directory: bytes, names: list[bytes], files: list[WalkedFile]) -> None:
        """Hash ``files`` in a helper process, which opens them as ``names`` in ``directory`` (absolute;
        a name may be an absolute path: a symlink's target)."""
        helper.send(directory, names)
        self.pending.append(_Request(helper, directory + b"/", files))

    def _throttle(self) -> None:
        while self._running > TASKS_PER_WORKER * self.workers or self._open > MAX_OPEN_FILES:
            self.drain(block=True, one=True)

    # -- taking results back, in order -----------------------------------------------------------------
    def drain(self, *, block: bool = False, one: bool = False) -> None:
        """Hand back what is done, in order. ``block``: wait for tasks (the first one only with ``one``)."""
        pending = self.pending
        add = self.add
        while pending:
            item = pending[0]
            if isinstance(item, tuple):
                add(*item)
                pending.popleft()
                continue
            if isinstance(item, _Request):
                if not block and not item.helper.ready():
                    return
                pending.popleft()
                self._take_request(item)
                if one:
                    return
                continue
            if item.future is None:
                if not block:
                    return
                self._flush()
            assert item.future is not None
            if not block and not item.future.done():
                return
            results = item.future.result()
            pending.popleft()
            self._running -= 1
            if item.segment:
                # A segment of a large file: collect its leaves until the last one.
                (path, fd, size) = item.files[0]
                self._partial += results
                if item.last:
                    leaves = b"".join(self._partial)
                    self._partial = []
                    os.close(fd)
                    self._open -= 1
                    add(path, size, leaves, root_of(leaves))
            else:
                for (path, fd, size), leaves in zip(item.files, results, strict=True):
                    os.close(fd)
                    self._open -= 1
                    add(path, size, leaves, root_of(leaves))
            if one:
                return

    def _take_request(self, request: _Request) -> None:
        """A helper's answer: files it hashed are handed back; those it gave back are hashed here, and
        what follows them waits behind them at the front of the queue. If the helper died, every file
        of the request is hashed here."""
        try:
            results = request.helper.receive(len(request.files))
        except _HelperError:
            results = [None] * len(request.files)
        add = self.add
        later: list[_Task | _Request | Result] = []
        nbytes = 0
        for (path, name, target), result in zip(request.files, results, strict=True):
            if result is None:
                self.fallbacks += 1
                later += self._here(path, os.fsencode(target) if target else request.directory + os.fsencode(name))
                continue
            size, leaves = result
            nbytes += size
            root = leaves if len(leaves) == 32 else root_of(leaves)
            if later:
                later.append((path, size, leaves, root))
            else:
                add(path, size, leaves, root)
        self.helper_bytes += nbytes
        self.pending.extendleft(reversed(later))

    def _here(self, path: bytes, real: bytes) -> list[_Task | _Request | Result]:
        """Hash one file here (what a helper gave back), with every check and message of the walk."""
        try:
            fd = os.open(real, FILE_FLAGS)
        except OSError as exc:
            raise _open_error(path, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise _not_regular(path.decode("utf-8"))
            size = st.st_size
            if size > INLINE_MAX:
                chunks = tree.chunk_count(size, self.chunk_size)
                self._open += 1
                if chunks <= self._segment_chunks:
                    task = _Task([(path, fd, size)])
                    self._submit(task, _hash_batch, task.files, self.chunk_size)
                    tasks = [task]
                else:
                    tasks = list(self._segments(path, fd, size, chunks))
                fd = -1
                return list(tasks)
            data = os.read(fd, size + 1)
        except OSError as exc:
            raise _read_error(path, exc) from None
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) != size:
            raise _changed(path, f"{len(data)} bytes read, {size} expected")
        return [(path, size, *leaves_of(data, self.chunk_size))]

    def finish(self) -> None:
        self._flush()
        self.drain(block=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
        closed: set[int] = set()
        while self.pending:
            item = self.pending.popleft()
            if isinstance(item, _Task):
                for _, fd, _ in item.files:
                    if fd not in closed:
                        closed.add(fd)
                        os.close(fd)
        self._batch = None
        self._open = self._running = 0


# -- helper processes -----------------------------------------------------------------------------------


class _HelperError(Exception):
    pass


class _Helper:
    """One ``_helper.py`` process (see there for the protocol). At most :data:`HELPER_QUEUE` requests are
    outstanding and each is at most ``request_bytes`` (a share of the pipe's capacity), so writing a
    request never blocks: otherwise this process could wait to write while the helper waits for its
    answer to be read."""

    def __init__(self, chunk_size: int) -> None:
        import subprocess  # noqa: PLC0415 - only datasets of many small files start helpers

        script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_helper.py")
        argv = [sys.executable, "-I", "-S", script, str(chunk_size), str(HELPER_MAX)]
        # Our own interpreter running our own script, with arguments we made: nothing comes from outside.
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # noqa: S603
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._to = self.proc.stdin.fileno()
        self._from = self.proc.stdout.fileno()
        self.outstanding = 0
        self.failed = False
        self.request_bytes = _pipe_size(self._to) // (HELPER_QUEUE + 1)
        self._poll = select.poll()
        self._poll.register(self._from, select.POLLIN)

    def send(self, directory: bytes, names: list[bytes]) -> None:
        body = directory + b"\x00" + b"\x00".join(names)
        data = memoryview(len(body).to_bytes(4, "big") + body)
        try:
            while data:
                data = data[os.write(self._to, data) :]
        except OSError:
            self.failed = True
            raise _HelperError from None
        self.outstanding += 1

    def ready(self) -> bool:
        return bool(self._poll.poll(0))

    def _read(self, n: int) -> bytes:
        parts = []
        while n:
            try:
                part = os.read(self._from, min(n, 1 << 20))
            except OSError:
                part = b""
            if not part:
                self.failed = True
                raise _HelperError
            parts.append(part)
            n -= len(part)
        return b"".join(parts)

    def receive(self, count: int) -> list[tuple[int, bytes] | None]:
        """The answer to the oldest request: (size, leaves) per file, None for "hash it yourself"."""
        self.outstanding -= 1
        body = self._read(int.from_bytes(self._read(4), "big"))
        out: list[tuple[int, bytes] | None] = []
        pos, end = 0, len(body)
        unpack = _RECORD.unpack_from
        while pos < end:
            if body[pos]:
                out.append(None)
                pos += 1
                continue
            _, size, leaves = unpack(body, pos)
            stop = pos + 13 + 32 * leaves
            out.append((size, body[pos + 13 : stop]))
            pos = stop
        if len(out) != count or pos != end:
            self.failed = True
            raise _HelperError
        return out

    def close(self, *, kill: bool) -> None:
        import subprocess  # noqa: PLC0415

        with contextlib.suppress(OSError):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            if kill:
                self.proc.kill()
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a helper stuck in a read
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()


_RECORD = struct.Struct(">BQI")


def _pipe_size(fd: int) -> int:
    """The capacity of the pipe ``fd``, raised to 1 MiB if allowed; 4 KiB (a page: the least Linux gives
    a pipe) where it cannot be asked."""
    try:
        import fcntl  # noqa: PLC0415

        with contextlib.suppress(OSError):
            fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
        return int(fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ))
    except (ImportError, AttributeError, OSError):  # pragma: no cover - not Linux
        return 4096


class _Helpers:
    """Up to ``count`` helper processes, started when first wanted; none at all if that fails."""

    def __init__(self, chunk_size: int, count: int) -> None:
        self.chunk_size = chunk_size
        self.count = count if sys.executable and os.path.exists(os.path.join(os.path.dirname(__file__), "_helper.py")) else 0
        self.running: list[_Helper] = []
        self.request_bytes = 0  # the smallest of the helpers' request limits

    def start(self) -> bool:
        """Start the first helper if none is running; False if there can be none."""
        if not self.running and self.count:
            self.idle()
        return bool(self.running)

    def __enter__(self) -> _Helpers:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for helper in self.running:
            helper.close(kill=exc_type is not None)
        self.running = []

    def idle(self) -> _Helper | None:
        """A helper with room for another request (starting one if there is room for more), or None."""
        for helper in self.running:
            if helper.outstanding < HELPER_QUEUE and not helper.failed:
                return helper
        if len(self.running) < self.count:
            try:
                helper = _Helper(self.chunk_size)
            except OSError:
                self.count = 0
                return None
            self.running.append(helper)
            self.request_bytes = min(h.request_bytes for h in self.running)
            return helper
        return None


# -- the whole tree -------------------------------------------------------------------------------------


def _hash_here(pool: Pool, dfd: int, run: list[WalkedFile], chunk_size: int) -> tuple[int, int]:
    """Hash ``run`` in this process: small files in this thread, the others in the pool.
    Returns (number of small files, bytes)."""
    sha = hashlib.sha256
    leaf_tag = tree.LEAF
    fstat, read, close, open_ = os.fstat, os.read, os.close, os.open
    is_regular = stat.S_ISREG
    inline_max = INLINE_MAX
    pending = pool.pending
    add = pool.add
    small = total = 0
    for path, name, target in run:
        try:
            fd = open_(name, FILE_FLAGS, dir_fd=dfd) if target is None else open_(target, FILE_FLAGS)
        except OSError as exc:
            raise _open_error(path, exc) from None
        try:
            st = fstat(fd)
            if not is_regular(st.st_mode):
                raise _not_regular(path.decode("utf-8"))
            size = st.st_size
            total += size
            if size > inline_max:
                pool.hash(path, fd, size)
                fd = -1
                continue
            data = read(fd, size + 1)
        except OSError as exc:
            raise _read_error(path, exc) from None
        finally:
            if fd >= 0:
                close(fd)
        if len(data) != size:
            raise _changed(path, f"{len(data)} bytes read, {size} expected")
        small += 1
        if 0 < size <= chunk_size:
            leaf = sha(leaf_tag + data).digest()
            leaves = root = leaf
        else:
            leaves, root = leaves_of(data, chunk_size)
        if pending:
            pending.append((path, size, leaves, root))
        else:
            add(path, size, leaves, root)
    return small, total


def _groups(run: list[WalkedFile], cut: int, base: int, limit: int) -> Iterator[tuple[list[WalkedFile], list[bytes], int]]:
    """``run`` in groups for helpers, within :data:`HELPER_FILES` and ``limit`` bytes of request (``base``
    of them for the directory): (files, names to open, request bytes). A file's name is its committed
    path from byte ``cut`` on (names are checked UTF-8, so that is also their file-system encoding). A
    group of one file may exceed ``limit``: the caller hashes it itself."""
    group: list[WalkedFile] = []
    names: list[bytes] = []
    size = base
    for item in run:
        path, _, target = item
        opened = path[cut:] if target is None else os.fsencode(target)
        if group and (len(group) >= HELPER_FILES or size + len(opened) + 1 > limit):
            yield group, names, size
            group, names, size = [], [], base
        group.append(item)
        names.append(opened)
        size += len(opened) + 1
    if group:
        yield group, names, size


def hash_tree(
    top: str,
    chunk_size: int,
    add: AddFile,
    *,
    skip: Set[bytes] = frozenset(),
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Walk ``top`` (absolute, resolved) and hash every file, calling ``add(path, size, leaves, root)``
    for each in commitment order. ``workers``: threads (and processes) to use, default one per core.
    ``progress(files, bytes)`` is called between runs of files.

    Once :data:`HELPER_AFTER` files have been seen and nearly all were small, groups of files are also
    handed to helper processes (:mod:`fedattest.data._helper`; ``workers - 1`` of them, and at most one
    less than the cores) whenever one has room, and hashed here otherwise; files a helper gives back are
    hashed here, with the usual checks."""
    workers = workers or default_workers()
    files = total = small = 0
    # Helpers use cores, not waiting time: more of them than cores would only take turns.
    with Pool(chunk_size, workers, add) as pool, _Helpers(chunk_size, min(workers, default_workers()) - 1) as helpers:
        walker = walk(top, skip)
        try:
            for dfd, dpath, run in walker:
                if small >= HELPER_AFTER and (files - small + pool.fallbacks) * 10 <= small and helpers.start():
                    directory = os.fsencode(dpath)
                    cut = len(run[0][0]) - len(run[0][1].encode())  # the length of the run's prefix ("a/b/")
                    for group, names, size in _groups(run, cut, len(directory) + 4, helpers.request_bytes):
                        helper = helpers.idle() if size <= helpers.request_bytes else None
                        if helper is not None:
                            try:
                                pool.request(helper, directory, names, group)
                            except _HelperError:
                                helper = None
                        if helper is None:
                            n_small, n_bytes = _hash_here(pool, dfd, group, chunk_size)
                            small += n_small
                            total += n_bytes
                        else:
                            small += len(group)
                        if pool.pending:
                            pool.drain()
                else:
                    n_small, n_bytes = _hash_here(pool, dfd, run, chunk_size)
                    small += n_small
                    total += n_bytes
                files += len(run)
                if pool.pending:
                    pool.drain()
                if progress is not None:
                    progress(files, total + pool.helper_bytes)
            pool.finish()
        finally:
            walker.close()
    if progress is not None:
        progress(files, total + pool.helper_bytes)


def hash_files(
    files: list[FoundFile], chunk_size: int, *, workers: int | None = None, advance: Callable[[int], None] | None = None
) -> list[bytes]:
    """The concatenated chunk leaves of each file (read at its ``real`` path, ``size`` bytes as found or
    committed), in order. ``advance(n)`` is called with the bytes done."""
    out: list[bytes] = []

    def add(path: bytes, size: int, leaves: bytes, root: bytes) -> None:
        out.append(leaves)
        if advance is not None:
            advance(size)

    with Pool(chunk_size, workers or default_workers(), add) as pool:
        for f in files:
            label = f.path.encode("utf-8", "surrogateescape")
            try:
                fd = os.open(f.real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            except OSError as exc:
                raise _open_error(label, exc) from None
            if f.size > INLINE_MAX:
                pool.hash(label, fd, f.size)
                continue
            try:
                data = os.read(fd, f.size + 1)
            except OSError as exc:
                raise _read_error(label, exc) from None
            finally:
                os.close(fd)
            if len(data) != f.size:
                raise _changed(label, f"{len(data)} bytes read, {f.size} expected")
            pool.done(label, f.size, *leaves_of(data, chunk_size))
            pool.drain()
        pool.finish()
    return out
