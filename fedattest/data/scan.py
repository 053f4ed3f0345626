"""Hashing a whole dataset: the driver that walks a directory (:mod:`fedattest.data.walk`) and hashes every
file, and the thread pool that hands the results back in order.

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

import hashlib
import os
import stat
from collections import deque
from collections.abc import Callable, Iterator, Set
from concurrent.futures import Future, ThreadPoolExecutor

from fedattest.data import tree
from fedattest.data.hashing import changed, hash_batch, hash_segment, leaves_of, open_error, read_error, root_of
from fedattest.data.helper_client import Helper, HelperError, Helpers
from fedattest.data.walk import FoundFile, WalkedFile, not_regular, walk

# Files up to this size are read whole and hashed in the calling thread.
INLINE_MAX = 64 << 10
# A pool task hashes consecutive files up to this many bytes (or BATCH_FILES files)...
BATCH_BYTES = 8 << 20
BATCH_FILES = 64
# ... and a file larger than this is split into segments of whole chunks of about this size.
SEGMENT_BYTES = 32 << 20
# Bounds on what is in flight in the pool: open descriptors, and tasks per worker.
MAX_OPEN_FILES = 256
TASKS_PER_WORKER = 3
# Helper processes (datasets of many small files, :mod:`fedattest.data.helper_client`): started once this
# many files have been seen, nearly all small; given groups of at most HELPER_FILES paths.
HELPER_AFTER = 2048
HELPER_FILES = 64

FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC

# (path, size, concatenated chunk leaves, file root): what the hashing hands back, in order.
AddFile = Callable[[bytes, int, bytes, bytes], None]


def default_workers() -> int:
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


# -- the pool ------------------------------------------------------------------------------------------

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

    def __init__(self, helper: Helper, directory: bytes, files: list[WalkedFile]) -> None:
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
            self._submit(self._batch, hash_batch, self._batch.files, self.chunk_size)
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
            self._submit(task, hash_segment, fd, path, size, self.chunk_size, range(first, stop))
            yield task

    def request(self, helper: Helper, directory: bytes, names: list[bytes], files: list[WalkedFile]) -> None:
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
        except HelperError:
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
            raise open_error(path, exc) from None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise not_regular(path.decode("utf-8"))
            size = st.st_size
            if size > INLINE_MAX:
                chunks = tree.chunk_count(size, self.chunk_size)
                self._open += 1
                if chunks <= self._segment_chunks:
                    task = _Task([(path, fd, size)])
                    self._submit(task, hash_batch, task.files, self.chunk_size)
                    tasks = [task]
                else:
                    tasks = list(self._segments(path, fd, size, chunks))
                fd = -1
                return list(tasks)
            data = os.read(fd, size + 1)
        except OSError as exc:
            raise read_error(path, exc) from None
        finally:
            if fd >= 0:
                os.close(fd)
        if len(data) != size:
            raise changed(path, f"{len(data)} bytes read, {size} expected")
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
            raise open_error(path, exc) from None
        try:
            st = fstat(fd)
            if not is_regular(st.st_mode):
                raise not_regular(path.decode("utf-8"))
            size = st.st_size
            total += size
            if size > inline_max:
                pool.hash(path, fd, size)
                fd = -1
                continue
            data = read(fd, size + 1)
        except OSError as exc:
            raise read_error(path, exc) from None
        finally:
            if fd >= 0:
                close(fd)
        if len(data) != size:
            raise changed(path, f"{len(data)} bytes read, {size} expected")
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
    with Pool(chunk_size, workers, add) as pool, Helpers(chunk_size, min(workers, default_workers()) - 1) as helpers:
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
                            except HelperError:
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
                raise open_error(label, exc) from None
            if f.size > INLINE_MAX:
                pool.hash(label, fd, f.size)
                continue
            try:
                data = os.read(fd, f.size + 1)
            except OSError as exc:
                raise read_error(label, exc) from None
            finally:
                os.close(fd)
            if len(data) != f.size:
                raise changed(label, f"{len(data)} bytes read, {f.size} expected")
            pool.done(label, f.size, *leaves_of(data, chunk_size))
            pool.drain()
        pool.finish()
    return out
