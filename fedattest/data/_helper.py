"""A helper process that hashes small files for :mod:`fedattest.data.scan` (its client side is
:mod:`fedattest.data.helper_client`): the second core for datasets of many small files, where threads
do not help (each file is a few system calls, and handing the GIL between threads on every one of them
costs more than the calls).

Run as ``python -I -S _helper.py CHUNK_SIZE MAX_SIZE``: standard library only, nothing of fedattest is
imported (it starts in ~10 ms). Requests on stdin, responses on stdout, in order:

- request: u32 length | NUL-separated: a directory's absolute path, then the names of files in it (or,
  for a symlink, the absolute path of its target); all file-system bytes
- response: u32 length | per path, either ``0x00 | u64 size | u32 leaf count | leaves (32 bytes each)``
  or ``0x01``: "hash it yourself" (anything but a regular file of at most MAX_SIZE bytes read exactly
  as found: an open error, a special file, a larger file, a file that changed while being read).

The caller re-does every ``0x01`` file itself, with its own checks and error messages, so this process
never decides what is refused. Integers are big-endian. End of input ends the process.
"""

from __future__ import annotations

import hashlib
import os
import signal
import stat
import sys

LEAF = b"\x00"  # fedattest.data.tree.LEAF: a chunk leaf is SHA-256(0x00 || chunk)
FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
YOURSELF = b"\x01"


def _read_exact(fd: int, n: int) -> bytes:
    parts = []
    while n:
        part = os.read(fd, min(n, 1 << 20))
        if not part:
            raise EOFError
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def hash_file(dfd: int, path: bytes, chunk_size: int, max_size: int, buf: bytearray) -> bytes:
    """One response record for ``path`` (relative to the directory open as ``dfd``, or absolute)."""
    sha = hashlib.sha256
    try:
        fd = os.open(path, FLAGS, dir_fd=dfd)
    except OSError:
        return YOURSELF
    try:
        st = os.fstat(fd)
        size = st.st_size
        if not stat.S_ISREG(st.st_mode) or size > max_size:
            return YOURSELF
        if size <= chunk_size:
            data = os.read(fd, size + 1)
            if len(data) != size:
                return YOURSELF
            leaves = sha(LEAF + data).digest() if size else b""
        else:
            view = memoryview(buf)[:chunk_size]
            out = []
            for offset in range(0, size, chunk_size):
                want = min(chunk_size, size - offset)
                if os.preadv(fd, [view[:want]], offset) != want:
                    return YOURSELF
                h = sha(LEAF)
                h.update(view[:want])
                out.append(h.digest())
            if os.pread(fd, 1, size):
                return YOURSELF
            leaves = b"".join(out)
    except OSError:
        return YOURSELF
    finally:
        os.close(fd)
    return b"\x00" + size.to_bytes(8, "big") + (len(leaves) // 32).to_bytes(4, "big") + leaves


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C: end quietly, the caller cleans up
    chunk_size, max_size = int(sys.argv[1]), int(sys.argv[2])
    buf = bytearray(min(chunk_size, max_size))
    while True:
        try:
            n = int.from_bytes(_read_exact(0, 4), "big")
            directory, *paths = _read_exact(0, n).split(b"\x00")
        except EOFError:
            return 0
        try:
            dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            body = YOURSELF * len(paths)
        else:
            try:
                body = b"".join([hash_file(dfd, p, chunk_size, max_size, buf) for p in paths])
            finally:
                os.close(dfd)
        _write_all(1, len(body).to_bytes(4, "big") + body)


if __name__ == "__main__":
    sys.exit(main())
