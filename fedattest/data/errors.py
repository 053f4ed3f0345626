"""Errors of committed datasets."""

from __future__ import annotations

from fedattest.errors import FedattestError


class DatasetError(FedattestError):
    """A dataset cannot be committed or opened as asked (bad directory, refused file, path not in the
    commitment, index that does not match the root, ...)."""


class DataIntegrityError(DatasetError):
    """Data read from disk does not match the commitment.

    ``path`` is the committed path, ``chunk`` the chunk number (None when the mismatch is not in a chunk,
    e.g. a file's size), ``expected`` / ``actual`` the committed and the observed value (hashes as hex,
    or sizes)."""

    def __init__(self, path: str, chunk: int | None, expected: str, actual: str, what: str = "chunk hash") -> None:
        self.path = path
        self.chunk = chunk
        self.expected = expected
        self.actual = actual
        where = f"{path!r}" if chunk is None else f"{path!r} chunk {chunk}"
        super().__init__(f"data integrity: {where}: {what} is {actual}, the commitment says {expected}")


class DatasetArgumentError(DatasetError, ValueError):
    """An argument of the dataset API is unusable (not a path, a directory that does not exist, a chunk
    size that is not a power of two, an index path that cannot be written...). Raised before any file is
    read or hashed; the message names the argument."""
