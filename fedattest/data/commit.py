"""Committing a directory: hash it, write the index, describe the commitment."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fedattest.data.errors import DatasetError
from fedattest.data.index import DatasetIndex, IndexedFile, check_chunk_size
from fedattest.data.scan import DEFAULT_CHUNK_SIZE, INDEX_NAME, find_files, hash_files
from fedattest.errors import FormatError
from fedattest.files import atomic_write

COMMITMENT_FORMAT = "fedattest-dataset-commitment"


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


def default_index_path(directory: Path) -> Path:
    return directory / INDEX_NAME


def commit_directory(
    directory: Path | str,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    index_path: Path | None = None,
    exclude: tuple[Path, ...] = (),
    workers: int | None = None,
    on_total: Callable[[int], None] | None = None,
    advance: Callable[[int], None] | None = None,
) -> tuple[Commitment, DatasetIndex]:
    """Hash every file under ``directory`` and write the index (default ``DIR/.fedattest-index``, which is
    itself left out of the commitment). ``on_total(bytes)`` then ``advance(bytes)`` report progress."""
    directory = Path(directory)
    try:
        check_chunk_size(chunk_size)
    except FormatError as exc:
        raise DatasetError(f"--chunk-size: {exc.detail}") from None
    index_path = index_path or default_index_path(directory)
    found = find_files(directory, exclude=(index_path, *exclude))
    if on_total is not None:
        on_total(sum(f.size for f in found))
    leaves = hash_files(found, chunk_size, workers=workers, advance=advance)
    index = DatasetIndex(chunk_size, tuple(IndexedFile(f.path, f.size, lv) for f, lv in zip(found, leaves, strict=True)))
    try:
        atomic_write(index_path, index.to_bytes(), mode=0o644)
    except OSError as exc:
        raise DatasetError(f"cannot write the index {index_path}: {exc.strerror or exc}") from None
    return Commitment(index.root, chunk_size, len(index.files), index.total_bytes), index
