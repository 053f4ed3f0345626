"""Committing a directory: check the arguments, hash it, stream the index to disk, describe the commitment."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedattest.data.errors import DatasetArgumentError, DatasetError
from fedattest.data.index import DEFAULT_CHUNK_SIZE, INDEX_NAME, MAGIC, DatasetIndex, IndexedFile, IndexWriter, check_chunk_size
from fedattest.data.scan import hash_tree
from fedattest.data.walk import skip_set
from fedattest.errors import FormatError

COMMITMENT_FORMAT = "fedattest-dataset-commitment"

PathArg = str | os.PathLike[str]
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class Commitment:
    """What a data owner publishes: the 32-byte root, and for humans the chunk size and totals."""

    root: bytes
    chunk_size: int
    files: int
    total_bytes: int

    def to_json(self) -> str:
        doc = {
            "format": COMMITMENT_FORMAT,
            "version": 1,
            "root": self.root.hex(),
            "chunk_size": self.chunk_size,
            "files": self.files,
            "bytes": self.total_bytes,
        }
        return json.dumps(doc, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> Commitment:
        try:
            doc: Any = json.loads(text)
            if doc.get("format") != COMMITMENT_FORMAT or doc.get("version") != 1:
                raise ValueError("not a fedattest dataset commitment (format/version)")
            root = bytes.fromhex(doc["root"])
            if len(root) != 32:
                raise ValueError("root must be 32 bytes of hex")
            return cls(root, int(doc["chunk_size"]), int(doc["files"]), int(doc["bytes"]))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DatasetError(f"commitment: {exc}") from None


# -- arguments: all checked before anything is hashed -----------------------------------------------


def as_path(value: object, what: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a Path; anything else is a :class:`DatasetArgumentError`."""
    if not isinstance(value, str | os.PathLike):
        raise DatasetArgumentError(f"{what}: expected a path (str or os.PathLike), got {type(value).__name__}")
    raw = os.fspath(value)
    if not isinstance(raw, str):
        raise DatasetArgumentError(f"{what}: expected a str path, got {type(raw).__name__}")
    if not raw:
        raise DatasetArgumentError(f"{what}: the path is empty")
    if "\x00" in raw:
        raise DatasetArgumentError(f"{what}: the path contains a NUL character")
    return Path(raw)


def check_directory(directory: object, what: str = "directory") -> tuple[Path, str]:
    """(the path as given, its resolved absolute form): it must exist and be a listable directory."""
    path = as_path(directory, what)
    try:
        top = os.path.realpath(path, strict=True)
    except OSError as exc:
        raise DatasetArgumentError(f"{path}: {exc.strerror or exc}") from None
    if not os.path.isdir(top):
        raise DatasetArgumentError(f"{path}: not a directory")
    if not os.access(top, os.R_OK | os.X_OK):
        raise DatasetArgumentError(f"{path}: cannot list the directory: permission denied")
    return path, top


def check_chunk_size_argument(chunk_size: object) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
        raise DatasetArgumentError(f"chunk_size: expected a number of bytes (int), got {type(chunk_size).__name__}")
    try:
        return check_chunk_size(chunk_size)
    except FormatError as exc:
        raise DatasetArgumentError(f"chunk_size: {exc.detail}") from None


def check_workers(workers: object) -> int | None:
    if workers is None:
        return None
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise DatasetArgumentError(f"workers: expected a positive number of threads, got {workers!r}")
    return workers


def check_output_path(path: object, what: str, *, keeps: Callable[[bytes], bool]) -> Path:
    """A file we are about to replace (atomically, through a temporary file next to it): its directory
    must exist and be writable; the path must not be a directory or a special file; an existing file is
    only replaced if ``keeps(its first 64 KiB)`` says it is one of ours (or it is empty), so a typo never
    overwrites data."""
    out = as_path(path, what)
    parent = out.parent
    if not parent.is_dir():
        raise DatasetArgumentError(f"{what} {out}: {parent} is not an existing directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise DatasetArgumentError(f"{what} {out}: cannot write in {parent}: permission denied")
    try:
        st = out.stat()
    except FileNotFoundError:
        return out
    except OSError as exc:
        raise DatasetArgumentError(f"{what} {out}: {exc.strerror or exc}") from None
    if stat.S_ISDIR(st.st_mode):
        raise DatasetArgumentError(f"{what} {out}: is a directory")
    if not stat.S_ISREG(st.st_mode):
        raise DatasetArgumentError(f"{what} {out}: not a regular file")
    if st.st_size:
        try:
            with out.open("rb") as fh:
                head = fh.read(64 << 10)
        except OSError as exc:
            raise DatasetArgumentError(f"{what} {out}: {exc.strerror or exc}") from None
        if not keeps(head):
            raise DatasetArgumentError(f"{what} {out}: refusing to overwrite a file that is not a {what}; remove it first")
    return out


def is_index(head: bytes) -> bool:
    return head.startswith(MAGIC)


def is_commitment(head: bytes) -> bool:
    return COMMITMENT_FORMAT.encode() in head


def default_index_path(directory: PathArg) -> Path:
    return Path(directory) / INDEX_NAME


# -- committing -------------------------------------------------------------------------------------


def write_commitment(
    directory: PathArg,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    index_path: PathArg | None = None,
    exclude: Iterable[PathArg] = (),
    workers: int | None = None,
    progress: Progress | None = None,
    keep: list[IndexedFile] | None = None,
) -> Commitment:
    """Hash every file under ``directory`` and write the index (default ``DIR/.fedattest-index``, which is
    itself left out of the commitment, as are the files in ``exclude``). The index streams to a
    temporary file next to it, renamed into place at the end, so memory does not grow with the number of
    files. ``progress(files, bytes)`` is called now and then; ``keep``, if given, receives every indexed
    file. Arguments are all checked first (:class:`DatasetArgumentError`); a refused file in the
    directory raises :class:`DatasetError` naming it."""
    path, top = check_directory(directory)
    chunk_size = check_chunk_size_argument(chunk_size)
    workers = check_workers(workers)
    index = check_output_path(default_index_path(path) if index_path is None else index_path, "index", keeps=is_index)
    if isinstance(exclude, str | bytes | os.PathLike):
        raise DatasetArgumentError("exclude: expected a list of paths, got a single path")
    excluded = [as_path(p, "exclude") for p in exclude]
    if progress is not None and not callable(progress):
        raise DatasetArgumentError("progress: expected a callable(files, bytes)")
    try:
        fd, tmp = tempfile.mkstemp(dir=index.parent, prefix=f".{index.name}.", suffix=".tmp")
    except OSError as exc:
        raise DatasetArgumentError(f"index {index}: cannot write in {index.parent}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            writer = IndexWriter(fh, chunk_size)
            add = writer.add
            if keep is not None:

                def add(path: bytes, size: int, leaves: bytes, root: bytes) -> None:
                    writer.add(path, size, leaves, root)
                    keep.append(IndexedFile(path.decode("utf-8"), size, leaves))

            skip = skip_set(top, [index, tmp, *excluded])
            hash_tree(top, chunk_size, add, skip=skip, workers=workers, progress=progress)
            try:
                root = writer.finish()
            except FormatError as exc:
                raise DatasetError(f"{path}: {exc.detail}") from None
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, index)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise DatasetError(f"cannot write the index {index}: {exc.strerror or exc}") from None
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return Commitment(root, chunk_size, writer.files, writer.total_bytes)


def commit_directory(
    directory: PathArg,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    index_path: PathArg | None = None,
    exclude: Iterable[PathArg] = (),
    workers: int | None = None,
    progress: Progress | None = None,
) -> tuple[Commitment, DatasetIndex]:
    """:func:`write_commitment`, also returning the index it wrote (held in memory: for very many files,
    prefer :func:`write_commitment`, which keeps nothing)."""
    kept: list[IndexedFile] = []
    commitment = write_commitment(
        directory, chunk_size=chunk_size, index_path=index_path, exclude=exclude, workers=workers, progress=progress, keep=kept
    )
    return commitment, DatasetIndex(commitment.chunk_size, tuple(kept))
