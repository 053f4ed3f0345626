"""Dataset commitments: a 32-byte Merkle root over a directory, enforced on every read.

``commit_directory(DIR)`` hashes a directory in chunks and writes its index; ``open_dataset(DIR, root)``
opens it for verified reading; see ``docs/data-commitments.md``.
"""

from fedattest.data.commit import Commitment, commit_directory, write_commitment
from fedattest.data.dataset import CommittedDataset, VerifiedFile, open_dataset
from fedattest.data.errors import DataIntegrityError, DatasetArgumentError, DatasetError
from fedattest.data.index import DatasetIndex

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
