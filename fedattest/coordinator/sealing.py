"""The sealed head: recognising the store this coordinator wrote (sealing itself, and the key, are the TEE's:
:mod:`fedattest.tee.sealing`)."""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fedattest.coordinator.store import StoreError
from fedattest.errors import FedattestError
from fedattest.tee.sealing import SealingError, seal, unseal

if TYPE_CHECKING:
    from fedattest.coordinator.audit import AuditEntry

# -- the sealed head: recognising the store this coordinator wrote ------------------------------------------
#
# The store lives outside the enclave, so the host can delete it, restore an older copy or swap in another.
# ``head.sealed`` (next to ``state.sealed``) records, sealed, the store's random identity, the sequence
# number and hash of the last committed audit entry, the entry a transaction is about to commit
# ("pending"), and the root CA the state signs with. It is rewritten (fdatasync'd) inside every transaction
# that appends to the audit chain: *before* it commits (its last entry as pending), and right after (that
# entry as committed, nothing pending). So after any crash the store's last entry is either the sealed
# committed head (the commit never happened) or exactly the pending entry sealed in advance (it did);
# anything else is a rollback, a fork or another store, and the coordinator refuses to start. The margin is
# therefore one transaction, and only its already-sealed entry: no entry the enclave did not seal
# beforehand is ever accepted, and the store alone cannot be taken back past a committed transaction
# except in the instant between its commit and the second write.
#
# The file has two fixed slots written in turn (pwrite + fdatasync: no new file, no rename, no directory
# sync per transaction), each record numbered. The newest valid one counts. A damaged slot can only be a
# torn write of the newest record (a crash while writing it); the older record is then the one before it
# and the store must be exactly where that record says: its pending entry if it has one (a torn
# after-commit write), else its committed head (a torn before-commit write).

HEAD_PURPOSE = b"fedattest-coordinator-head-v1"
STATE_FILE = "state.sealed"
HEAD_FILE = "head.sealed"
SLOT_BYTES = 1024  # one sealed head record (about 450 bytes) with its length, zero-padded
STORE_FILE = "store.sqlite"


class RollbackError(FedattestError):
    """The store is not the one the sealed head records (deleted, older, forked, another state's)."""


@dataclass
class StoreHead:
    store_id: str
    seq: int  # the last committed entry; -1: none yet
    hash: str
    pending_seq: int | None = None
    pending_hash: str | None = None
    root_ca_sha256: str | None = None  # the state it belongs to (None until the state is made)
    counter: int = 0  # which write this is; the newest valid slot counts

    def to_bytes(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> StoreHead:
        try:
            return cls(**json.loads(data))
        except (ValueError, TypeError) as exc:
            raise SealingError(f"malformed sealed head: {exc}") from None


class _Store(Protocol):
    path: Path
    store_id: str
    before_commit: Any
    after_commit: Any

    def chain_hashes(self) -> list[bytes]: ...


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _say(line: str) -> None:
    sys.stderr.write(f"fedattest coordinator: {line}\n")
    sys.stderr.flush()


class HeadGuard:
    """Start-up checks of the store against ``head.sealed``, and the sealed writes that keep it current.

    ``before_open`` runs before the store is opened (a missing store or state is recognised, and
    ``--new-state`` moves the old files aside); ``attach`` compares the opened store with the sealed head and
    hooks the store's commits; ``bind_state`` ties the head to the state's root CA once it is unsealed."""

    def __init__(self, state_dir: Path, key: bytes, *, new_state: bool = False, accept_store: bool = False) -> None:
        self.dir = state_dir
        self.key = key
        self.new_state = new_state
        self.accept_store = accept_store
        self.head: StoreHead | None = None
        self._fd: int | None = None
        self._counter = 0
        self.accepted: dict[str, Any] | None = None  # what --accept-store overrode, for the audit log

    @property
    def path(self) -> Path:
        return self.dir / HEAD_FILE

    def _read(self) -> tuple[StoreHead, bool] | None:
        """The newest valid record of ``head.sealed`` and whether both slots are valid; None: no file."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        heads: list[StoreHead] = []
        errors: list[SealingError] = []
        for i in range(2):
            slot = data[i * SLOT_BYTES : (i + 1) * SLOT_BYTES]
            size = int.from_bytes(slot[:4], "big") if len(slot) >= 4 else 0
            try:
                if not 0 < size <= len(slot) - 4:
                    raise SealingError(f"{self.path}: an empty or damaged slot")
                heads.append(StoreHead.from_bytes(unseal(self.key, HEAD_PURPOSE, slot[4 : 4 + size])))
            except SealingError as exc:
                errors.append(exc)
        if not heads:
            raise errors[-1]  # e.g. sealed by another enclave
        newest = max(heads, key=lambda h: h.counter)
        self._counter = newest.counter
        return newest, len(heads) == 2

    def _write(self, head: StoreHead) -> None:
        created = False
        if self._fd is None:
            created = not self.path.exists()
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        self._counter += 1
        head = StoreHead(**{**asdict(head), "counter": self._counter})
        record = seal(self.key, HEAD_PURPOSE, head.to_bytes())
        record = len(record).to_bytes(4, "big") + record
        if len(record) > SLOT_BYTES:  # pragma: no cover - the record has a fixed shape
            raise SealingError("sealed head record too large")
        os.pwrite(self._fd, record.ljust(SLOT_BYTES, b"\0"), (self._counter % 2) * SLOT_BYTES)
        os.fdatasync(self._fd)  # durable before the store commits
        if created:
            _fsync_dir(self.dir)
        self.head = head

    def _after_commit(self, last: AuditEntry) -> None:
        """The transaction committed: seal its entry as the committed head, nothing pending, so restoring the
        store alone to before it is refused (not only after the next transaction)."""
        assert self.head is not None
        try:
            self._write(StoreHead(self.head.store_id, last.seq, last.hash.hex(), root_ca_sha256=self.head.root_ca_sha256))
        except OSError as exc:  # committed already; the pending record still covers this entry
            _say(f"cannot seal the committed head to {self.path}: {exc.strerror or exc} (the pending record covers it)")

    def before_open(self) -> None:
        state, store, head = self.dir / STATE_FILE, self.dir / STORE_FILE, self.path
        if self.new_state:
            present = [p for p in self.dir.iterdir() if p.name in {STATE_FILE, HEAD_FILE} or p.name.startswith(STORE_FILE)]
            if present:
                aside = self.dir / time.strftime("replaced-%Y%m%dT%H%M%SZ", time.gmtime())
                aside.mkdir(mode=0o700)
                for p in present:
                    p.rename(aside / p.name)
                _fsync_dir(self.dir)
                _say(f"--new-state: a brand-new federation state (new root CA, keys, empty log); the old files are in {aside}")
            else:
                _say("--new-state: a brand-new federation state (nothing to replace)")
            return
        if state.exists() and not store.exists() and head.exists() and not self.accept_store:
            raise RollbackError(
                f"the store {store} is missing but {head} records its history: restore the store from a backup of this"
                " state (or start with --accept-store to continue from an empty one; that is recorded in the audit log"
                " and members that pinned a head will see the fork)"
            )

    def attach(self, store: _Store) -> None:
        hashes = store.chain_hashes()
        last = len(hashes) - 1
        if not (self.dir / STATE_FILE).exists() and hashes:
            raise RollbackError(
                f"{self.dir / STATE_FILE} is missing but the store {store.path} holds this federation's history"
                f" ({len(hashes)} audit entries): restore {STATE_FILE} from its backup (a new root CA over an old audit"
                " log is never created silently; to begin a brand-new federation instead, start with --new-state,"
                " which moves the old files aside)"
            )
        current = StoreHead(store.store_id, last, hashes[-1].hex() if hashes else "")
        found = self._read()
        sealed, complete = found if found is not None else (None, True)
        problem = self._problem(store, sealed, hashes, complete) if (self.dir / STATE_FILE).exists() else None
        if problem is not None:
            if not self.accept_store:
                raise RollbackError(problem)
            self.accepted = {
                "reason": problem, "store_id": store.store_id, "store_seq": last, "store_hash": current.hash,
                "sealed_head": asdict(sealed) if sealed is not None else None,
            }  # fmt: skip
            _say(f"--accept-store: continuing on the store as it is, although {problem}")
        if sealed is not None and problem is None:
            current.root_ca_sha256 = sealed.root_ca_sha256
        self._write(current)
        self._write(current)  # both slots: a damaged slot later means a torn write of the newest
        store.before_commit = self._before_commit
        store.after_commit = self._after_commit

    def _problem(self, store: _Store, sealed: StoreHead | None, hashes: list[bytes], complete: bool) -> str | None:
        """What is wrong with ``store`` given the sealed head, in one line; None if it is the right store."""
        if sealed is None:
            return (
                f"{self.path} is missing while {STATE_FILE} and the store exist: restore it from a backup, or start once"
                " with --accept-store to seal the store's current head (recorded in the audit log; needed once after"
                " upgrading from a version without it)"
            )
        restore = (
            f"restore the store this coordinator last wrote ({store.path.name}* from the same backup as {HEAD_FILE}; to"
            " go on from this one on purpose, start with --accept-store, which the audit log records)"
        )
        if sealed.store_id != store.store_id:
            return (
                f"the store {store.path} belongs to another state (store id {store.store_id}, the sealed head names"
                f" {sealed.store_id}): {restore}"
            )
        last = len(hashes) - 1
        if last < sealed.seq:
            return (
                f"the store {store.path} is older than the sealed head: it ends at entry {last}, entry {sealed.seq} was"
                f" committed (a rollback or an old backup): {restore}"
            )
        if sealed.seq >= 0 and hashes[sealed.seq].hex() != sealed.hash:
            return (
                f"the store {store.path} is a fork: its entry {sealed.seq} has hash {hashes[sealed.seq].hex()[:16]}...,"
                f" the sealed head says {sealed.hash[:16]}...: {restore}"
            )
        if not complete:  # the newest record was torn: it was being written, so its transaction never committed
            expected = sealed.pending_seq if sealed.pending_seq is not None else sealed.seq
            if last == expected and (last < 0 or hashes[last].hex() == (sealed.pending_hash or sealed.hash)):
                return None
            return (
                f"{self.path} has a damaged slot and the store {store.path} ends at entry {last}, not at entry {expected}"
                f" sealed in the intact one: {restore}"
            )
        if last == sealed.seq:
            return None
        pending = sealed.pending_seq
        if pending is not None and last >= pending and hashes[pending].hex() != sealed.pending_hash:
            return (
                f"the store {store.path} is a fork: its entry {sealed.pending_seq} is not the one sealed before it was"
                f" committed: {restore}"
            )
        if last == sealed.pending_seq:
            return None  # the process stopped after committing the pending entry (sealed before the commit)
        return (
            f"the store {store.path} is {last - sealed.seq} entries ahead of the sealed head (entry {sealed.seq}); only"
            f" the one transaction sealed as pending may be: {self.path} was rolled back or another coordinator"
            f" wrote this store: restore the matching {HEAD_FILE}"
        )

    def _before_commit(self, committed: AuditEntry | None, pending: AuditEntry) -> None:
        assert self.head is not None
        head = StoreHead(
            self.head.store_id, committed.seq if committed else -1, committed.hash.hex() if committed else "",
            pending.seq, pending.hash.hex(), self.head.root_ca_sha256,
        )  # fmt: skip
        try:
            self._write(head)
        except OSError as exc:
            raise StoreError(f"cannot seal the audit head to {self.path}: {exc.strerror or exc}") from None

    def bind_state(self, root_ca_sha256: str) -> None:
        """Tie the head to the state's root CA (first start), or check that it is tied to it."""
        assert self.head is not None
        if self.head.root_ca_sha256 is None:
            self._write(StoreHead(**{**asdict(self.head), "root_ca_sha256": root_ca_sha256}))
        elif self.head.root_ca_sha256 != root_ca_sha256:
            raise RollbackError(
                f"{self.path} belongs to another state (root CA {self.head.root_ca_sha256[:16]}..., {STATE_FILE} has"
                f" {root_ca_sha256[:16]}...): restore this state's {HEAD_FILE} and store"
            )
