"""The files of a user store: their names, the purpose each is sealed under, and bounded reads.

Layout of a store directory (0700; every file 0600 and sealed with the TEE's sealing key)::

    key.sealed                 the log's ECDSA P-256 signing key and the user id
    head.sealed                the latest signed tree head
    records/000000000000.sealed, 000000000001.sealed, ...    one per record, named by its index

Each kind of file has its own purpose label (the AES-GCM associated data), so no file can stand in for
another kind. The head's and the records' labels also carry the log id, and a record's its index: all user
enclaves run the same code, so they share a sealing key, and without the log id one user's records would
unseal in another user's store; without the index, two records swapped by the host would unseal in each
other's place.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path

from fedattest.files import atomic_write
from fedattest.tee.sealing import MAGIC
from fedattest.userenclave.refusal import Reason, UserStoreError

KEY_FILE = "key.sealed"
HEAD_FILE = "head.sealed"
RECORDS_DIR = "records"
KEY_PURPOSE = b"fedattest-user-store-key-v1"
_HEAD_PURPOSE = b"fedattest-user-store-head-v1\n"
_RECORD_PURPOSE = b"fedattest-user-store-record-v1\n"

SEAL_OVERHEAD = len(MAGIC) + 12 + 16  # magic, AES-GCM nonce and tag (fedattest.tee.sealing)
MAX_KEY_FILE = 4096  # a PKCS#8 P-256 key in PEM and a user id, sealed
MAX_HEAD_FILE = 1024 + SEAL_OVERHEAD  # translog bounds a signed tree head's JSON at 1 KiB
INDEX_DIGITS = 12  # 10^12 records: far more than one user uploads; fixed width so names sort by index
_RECORD_NAME = re.compile(rf"(\d{{{INDEX_DIGITS}}})\.sealed")
# A crash inside atomic_write leaves its temporary file (".NAME.RANDOM.tmp"); it is never read, so it is
# ignored rather than refused (refusing would make every crash fatal).
_TEMPORARY = re.compile(r"\..+\.tmp")
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def head_purpose(log_id: bytes) -> bytes:
    return _HEAD_PURPOSE + log_id


def record_purpose(log_id: bytes, index: int) -> bytes:
    return _RECORD_PURPOSE + log_id + index.to_bytes(8, "big")


def record_name(index: int) -> str:
    return f"{index:0{INDEX_DIGITS}d}.sealed"


def record_indices(records_dir: Path) -> list[int]:
    """The indices of the record files, sorted; a name the store does not write is refused."""
    indices = []
    for name in os.listdir(records_dir):
        match = _RECORD_NAME.fullmatch(name)
        if match:
            indices.append(int(match.group(1)))
        elif not _TEMPORARY.fullmatch(name):
            raise UserStoreError(Reason.EXTRA, f"{records_dir / name}: not a file this store writes")
    return sorted(indices)


def read_bounded(path: Path, limit: int, what: str) -> bytes:
    """The bytes of the regular file ``path``, refused before reading when it is larger than ``limit`` (or is
    a symbolic link, a FIFO, a directory: the host may have put anything there)."""
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise UserStoreError(Reason.MISSING, f"{path}: {what} is missing") from None
    except OSError as exc:
        raise UserStoreError(Reason.UNSEALABLE, f"{path}: {what} cannot be opened ({exc.strerror or exc})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UserStoreError(Reason.UNSEALABLE, f"{path}: {what} is not a regular file")
        if st.st_size > limit:
            raise UserStoreError(Reason.TOO_LARGE, f"{path}: {what} has {st.st_size} bytes, more than {limit}")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            data = fh.read(limit + 1)  # the file may grow after fstat: never read past the bound
    finally:
        os.close(fd)
    if len(data) > limit:
        raise UserStoreError(Reason.TOO_LARGE, f"{path}: {what} has more than {limit} bytes")
    return data


def write_durably(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` and fsync its directory, so the new name survives a power cut."""
    atomic_write(path, data)
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
