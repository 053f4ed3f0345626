"""Talking to the helper processes that hash small files (the program is :mod:`fedattest.data._helper`,
which describes the protocol): starting them, sending requests without ever blocking on a full pipe,
reading the answers, and stopping them.
"""

from __future__ import annotations

import contextlib
import os
import select
import struct
import sys

# A helper is given HELPER_QUEUE requests at a time (so that one is always busy while this process takes
# answers and hashes groups itself); it hashes files of up to HELPER_MAX bytes and gives the others back.
# A request is at most 1/(HELPER_QUEUE + 1) of the pipe.
HELPER_QUEUE = 6
HELPER_MAX = 1 << 20


class HelperError(Exception):
    pass


class Helper:
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
            raise HelperError from None
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
                raise HelperError
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
            raise HelperError
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


class Helpers:
    """Up to ``count`` helper processes, started when first wanted; none at all if that fails."""

    def __init__(self, chunk_size: int, count: int) -> None:
        self.chunk_size = chunk_size
        self.count = count if sys.executable and os.path.exists(os.path.join(os.path.dirname(__file__), "_helper.py")) else 0
        self.running: list[Helper] = []
        self.request_bytes = 0  # the smallest of the helpers' request limits

    def start(self) -> bool:
        """Start the first helper if none is running; False if there can be none."""
        if not self.running and self.count:
            self.idle()
        return bool(self.running)

    def __enter__(self) -> Helpers:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        for helper in self.running:
            helper.close(kill=exc_type is not None)
        self.running = []

    def idle(self) -> Helper | None:
        """A helper with room for another request (starting one if there is room for more), or None."""
        for helper in self.running:
            if helper.outstanding < HELPER_QUEUE and not helper.failed:
                return helper
        if len(self.running) < self.count:
            try:
                helper = Helper(self.chunk_size)
            except OSError:
                self.count = 0
                return None
            self.running.append(helper)
            self.request_bytes = min(h.request_bytes for h in self.running)
            return helper
        return None
