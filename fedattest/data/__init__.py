"""Dataset commitments: a 32-byte Merkle root over a directory, enforced on every read.

``commit_directory(DIR)`` hashes a directory in chunks and writes its index; ``open_dataset(DIR, root)``
opens it for verified reading; see ``docs/data-commitments.md``.

Names are imported on first use: a ClientApp process (started for every message) that only reads its committed
data loads the reading side, not the committing side's thread pools and temporary files.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedattest._lazy import lazy_attributes

if TYPE_CHECKING:
    from fedattest.data.commit import Commitment, commit_directory, write_commitment
    from fedattest.data.dataset import CommittedDataset, VerifiedFile, open_dataset
    from fedattest.data.errors import DataIntegrityError, DatasetArgumentError, DatasetError
    from fedattest.data.index import DatasetIndex

_WHERE = {
    "Commitment": "commit", "commit_directory": "commit", "write_commitment": "commit",
    "CommittedDataset": "dataset", "VerifiedFile": "dataset", "open_dataset": "dataset",
    "DataIntegrityError": "errors", "DatasetArgumentError": "errors", "DatasetError": "errors",
    "DatasetIndex": "index",
}  # fmt: skip

__all__ = [
    "Commitment",
    "CommittedDataset",
    "DataIntegrityError",
    "DatasetArgumentError",
    "DatasetError",
    "DatasetIndex",
    "VerifiedFile",
    "commit_directory",
    "open_dataset",
    "write_commitment",
]

__getattr__ = lazy_attributes(__name__, _WHERE)
