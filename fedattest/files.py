"""Crash-safe file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700


def atomic_write(path: Path, data: bytes, *, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same directory, fsync it, then rename.

    ``mode`` applies from the first byte (the temporary file is created with it), so a secret is never
    readable by others, not even briefly.
    """
    directory = path.parent
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def readable_by_others(path: Path) -> bool:
    """True when group or other users may read or write ``path`` (a private key must not be)."""
    return bool(path.stat().st_mode & 0o077)
