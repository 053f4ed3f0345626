"""The user enclave's record store: the user's uploads sealed to the enclave's measurement, under an RFC 6962 log.

A :class:`UserStore` keeps one directory (layout in :mod:`fedattest.userenclave.sealed_files`): the log's
ECDSA P-256 signing key and the user id, the latest signed tree head (STH), and one file per record, each
sealed with the TEE's sealing key. :meth:`UserStore.append` seals the record, appends it to the log, signs and
seals the new head and returns a translog :class:`~fedattest.translog.receipt.Receipt`, which the phone checks
with :func:`~fedattest.translog.receipt.verify_receipt` against :meth:`UserStore.public_key` (the key the
phone pins through the STH's ``log_id``) and the bytes it sent.

:meth:`UserStore.open` is the resume after a pause: it unseals the key and the head, checks the head's
signature, unseals every record at its position, rebuilds the Merkle log and requires its size and root to be
the sealed head's. It refuses (:class:`~fedattest.userenclave.refusal.UserStoreError`, one line with its
reason) a missing, added, swapped, foreign, truncated or oversized record, a head that does not match the
records (the host dropped or reordered records, or put back an older head), and a head whose signature does
not verify.

What it does NOT stop: a host that restores the *whole* directory to an older consistent snapshot. Every file
of that snapshot was sealed by this enclave and agrees with the others, so nothing in the directory tells it
from the present; the enclave has no trusted memory of a later head. The phone does: it holds the later STH of
its last receipt, and the restored head is smaller than that (or, once the store has grown again, not
consistent with it), so its next consistency check fails (:func:`~fedattest.translog.receipt.verify_consistency`).
Detecting it in the enclave itself would need a monotonic counter or a head kept by someone else (the
coordinator). A crash between a record's write and its head's leaves a record beyond the head, which ``open``
refuses like a head rolled back by one append (the two are the same directory); nothing is dropped silently.

One process opens a store at a time (the host that runs the enclave serialises); this class does no locking.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.files import PRIVATE_DIR
from fedattest.tee.base import TEE
from fedattest.tee.sealing import SealingError, seal, unseal
from fedattest.translog.hashing import leaf_hash
from fedattest.translog.log import MerkleLog
from fedattest.translog.receipt import Receipt, make_receipt
from fedattest.translog.refusal import TranslogError
from fedattest.translog.treehead import SignedTreeHead, TreeHead, check_signed_tree_head, log_id_of, sign_tree_head
from fedattest.userenclave.refusal import Reason, UserStoreError
from fedattest.userenclave.sealed_files import (
    HEAD_FILE,
    KEY_FILE,
    KEY_PURPOSE,
    MAX_HEAD_FILE,
    MAX_KEY_FILE,
    RECORDS_DIR,
    SEAL_OVERHEAD,
    head_purpose,
    read_bounded,
    record_indices,
    record_name,
    record_purpose,
    write_durably,
)

MAX_RECORD_BYTES = 1 << 20  # 1 MiB per upload: one phone record, not a bulk transfer
MAX_USER_ID = 256
KEY_FORMAT = "fedattest-user-store"
KEY_VERSION = 1

Clock = Callable[[], int]  # milliseconds since the Unix epoch, as an STH's timestamp


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class UserStore:
    """One user's records, sealed, and the signed log over them. Create with :meth:`create`, resume with
    :meth:`open`; not thread-safe (the service around it serialises appends)."""

    def __init__(
        self, directory: Path, sealing_key: bytes, log_key: ec.EllipticCurvePrivateKey, *, user_id: str,
        log: MerkleLog, head: SignedTreeHead | None, clock: Clock,
    ) -> None:  # fmt: skip
        self._dir = directory
        self._sealing_key = sealing_key
        self._log_key = log_key
        self._log_id = log_id_of(log_key.public_key())
        self._user_id = user_id
        self._log = log
        self._head = head
        self._clock = clock
        self._broken: str | None = None  # why appends stopped: a head that could not be sealed

    # -- creating and resuming ------------------------------------------------------------------------

    @classmethod
    def create(cls, directory: Path | str, tee: TEE, user_id: str, *, clock: Clock = wall_clock_ms) -> UserStore:
        """A new, empty store for ``user_id`` in ``directory`` (absent or empty), with a new log key and the
        signed head of the empty log."""
        directory = Path(directory)
        _check_user_id(user_id)
        if directory.exists() and (not directory.is_dir() or any(directory.iterdir())):
            raise UserStoreError(Reason.NOT_EMPTY, f"{directory}: not an empty directory; a store is created only once")
        directory.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
        (directory / RECORDS_DIR).mkdir(mode=PRIVATE_DIR)
        log_key = ec.generate_private_key(ec.SECP256R1())
        sealing_key = tee.sealing_key()
        write_durably(directory / KEY_FILE, seal(sealing_key, KEY_PURPOSE, _key_document(user_id, log_key)))
        store = cls(directory, sealing_key, log_key, user_id=user_id, log=MerkleLog(), head=None, clock=clock)
        store._seal_new_head()
        return store

    @classmethod
    def open(cls, directory: Path | str, tee: TEE, *, user_id: str | None = None, clock: Clock = wall_clock_ms) -> UserStore:
        """Resume the store in ``directory`` (every check in the module docstring); with ``user_id``, also
        refuse a store of another user (all user enclaves share one measurement, so another user's whole
        directory unseals here too)."""
        directory = Path(directory)
        sealing_key = tee.sealing_key()
        owner, log_key = _load_key(directory / KEY_FILE, sealing_key)
        if user_id is not None and owner != user_id:
            raise UserStoreError(Reason.WRONG_USER, f"{directory}: the store of user {owner!r}, not of {user_id!r}")
        log_id = log_id_of(log_key.public_key())
        head = _load_head(directory / HEAD_FILE, sealing_key, log_id, log_key.public_key())
        log = _rebuild(directory / RECORDS_DIR, sealing_key, log_id, head.sth.tree_size)
        if log.size != head.sth.tree_size or not hmac.compare_digest(log.root(), head.sth.root_hash):
            raise UserStoreError(
                Reason.ROOT,
                f"{directory}: the records ({log.size}, root {log.root().hex()[:16]}…) are not those the sealed head"
                f" commits to ({head.sth.tree_size}, root {head.sth.root_hash.hex()[:16]}…): records dropped, added"
                " or reordered, or an older head put back",
            )
        return cls(directory, sealing_key, log_key, user_id=owner, log=log, head=head, clock=clock)

    # -- what the phone and the service ask -------------------------------------------------------------

    @property
    def user_id(self) -> str:
        return self._user_id

    @property
    def size(self) -> int:
        return self._log.size

    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The log key the phone pins: an STH's ``log_id`` is the SHA-256 of its SPKI DER."""
        return self._log_key.public_key()

    def head(self) -> SignedTreeHead:
        assert self._head is not None  # set by create and open
        return self._head

    def append(self, record: bytes) -> Receipt:
        """Seal ``record`` as the next entry, sign and seal the new head, and return the record's receipt.

        The leaf data is the record itself, not its SHA-256: the phone checks the receipt with
        ``verify_receipt(receipt, key, the bytes it sent)``, which hashes them as RFC 6962 leaf data
        (SHA-256(0x00 ‖ record)), so the leaf hash already commits to the bytes with no second convention
        for phone apps to agree on; the record is bounded, so hashing it whole costs little."""
        if self._broken:
            raise UserStoreError(Reason.BROKEN, f"{self._dir}: no more appends here ({self._broken}); open it again")
        if not isinstance(record, bytes):
            raise TypeError(f"a record is bytes, not {type(record).__name__}")
        if len(record) > MAX_RECORD_BYTES:
            raise UserStoreError(Reason.TOO_LARGE, f"a record has at most {MAX_RECORD_BYTES} bytes, not {len(record)}")
        index = self._log.size
        # The record first, then the head: a crash in between leaves a record beyond the head (refused by open,
        # never a head that counts a record that is not there). No receipt is returned before both are written.
        write_durably(self._record_path(index), seal(self._sealing_key, record_purpose(self._log_id, index), record))
        self._log.append(record)
        try:
            self._seal_new_head()
        except BaseException as exc:
            # The log in memory is one ahead of the sealed head, and MerkleLog cannot take an entry back.
            self._broken = f"the head of record {index} was not sealed: {exc}"
            raise
        return self.receipt(index)

    def receipt(self, index: int) -> Receipt:
        """The receipt of record ``index`` under the current head (a phone asking again after a pause)."""
        if not 0 <= index < self._log.size:
            raise UserStoreError(Reason.SIZE, f"no record {index}: the log has {self._log.size}")
        return make_receipt(index, self._log.leaf_hash(index), self.head(), self._log.inclusion_proof(index))

    def consistency(self, old_size: int) -> list[bytes]:
        """PROOF(old_size, current size): that the current head extends the one of ``old_size`` entries a phone
        kept (empty when the sizes are equal). The phone checks it with ``verify_consistency``."""
        if not 0 < old_size <= self._log.size:
            raise UserStoreError(
                Reason.SIZE, f"a consistency proof from {old_size} entries needs 0 < it <= the log's {self._log.size}"
            )
        return self._log.consistency_proof(old_size)

    def records(self) -> Iterator[bytes]:
        """Every record in order, read (bounded) and unsealed again; each must still hash to its leaf."""
        for index in range(self._log.size):
            data = _read_record(self._dir / RECORDS_DIR, self._sealing_key, self._log_id, index)
            if not hmac.compare_digest(leaf_hash(data), self._log.leaf_hash(index)):
                raise UserStoreError(Reason.CHANGED, f"record {index} changed since the store was opened")
            yield data

    # -- internals ------------------------------------------------------------------------------------------

    def _record_path(self, index: int) -> Path:
        return self._dir / RECORDS_DIR / record_name(index)

    def _seal_new_head(self) -> None:
        # Timestamps never go backwards, even if the clock does: a phone refuses a later head with an earlier
        # timestamp (translog's head_order).
        timestamp = max(self._clock(), self._head.sth.timestamp if self._head else 0)
        sth = TreeHead(self._log_id, self._log.size, self._log.root(), timestamp)
        signed = sign_tree_head(sth, self._log_key)
        blob = seal(self._sealing_key, head_purpose(self._log_id), json.dumps(signed.to_json()).encode())
        write_durably(self._dir / HEAD_FILE, blob)
        self._head = signed


def _check_user_id(user_id: object) -> None:
    if not isinstance(user_id, str) or not 0 < len(user_id) <= MAX_USER_ID or not user_id.isprintable():
        raise ValueError(f"a user id is 1 to {MAX_USER_ID} printable characters, not {user_id!r}")


def _key_document(user_id: str, log_key: ec.EllipticCurvePrivateKey) -> bytes:
    pem = log_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return json.dumps({"format": KEY_FORMAT, "version": KEY_VERSION, "user_id": user_id, "log_key": pem}).encode()


def _unseal_file(path: Path, sealing_key: bytes, purpose: bytes, limit: int, what: str) -> bytes:
    try:
        blob = read_bounded(path, limit, what)
    except UserStoreError as exc:
        if exc.reason is Reason.MISSING:  # no key or head: not a store, or a crash during create
            raise UserStoreError(Reason.INCOMPLETE, f"{path}: {what} is missing; not a (complete) user store") from None
        raise
    try:
        return unseal(sealing_key, purpose, blob)
    except SealingError as exc:
        raise UserStoreError(Reason.UNSEALABLE, f"{path}: {what}: {exc}") from None


def _load_key(path: Path, sealing_key: bytes) -> tuple[str, ec.EllipticCurvePrivateKey]:
    document = _unseal_file(path, sealing_key, KEY_PURPOSE, MAX_KEY_FILE, "the sealed log key")
    try:
        fields = json.loads(document)
        if fields.get("format") != KEY_FORMAT or fields.get("version") != KEY_VERSION:
            raise ValueError("not a version 1 user store key")
        user_id, pem = fields["user_id"], fields["log_key"]
        _check_user_id(user_id)
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise UserStoreError(Reason.MALFORMED, f"{path}: the sealed log key is malformed ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP256R1):
        raise UserStoreError(Reason.MALFORMED, f"{path}: the sealed log key is not an ECDSA P-256 key")
    return user_id, key


def _load_head(path: Path, sealing_key: bytes, log_id: bytes, public_key: ec.EllipticCurvePublicKey) -> SignedTreeHead:
    document = _unseal_file(path, sealing_key, head_purpose(log_id), MAX_HEAD_FILE, "the sealed tree head")
    try:
        head = SignedTreeHead.parse(document)
    except TranslogError as exc:
        raise UserStoreError(Reason.MALFORMED, f"{path}: the sealed tree head is malformed ({exc})") from None
    try:
        check_signed_tree_head(head, public_key)
    except TranslogError as exc:
        raise UserStoreError(Reason.SIGNATURE, f"{path}: the sealed tree head fails under the sealed key ({exc})") from None
    return head


def _read_record(records_dir: Path, sealing_key: bytes, log_id: bytes, index: int) -> bytes:
    path = records_dir / record_name(index)
    blob = read_bounded(path, MAX_RECORD_BYTES + SEAL_OVERHEAD, f"record {index}")
    try:
        return unseal(sealing_key, record_purpose(log_id, index), blob)
    except SealingError:
        raise UserStoreError(
            Reason.UNSEALABLE,
            f"{path}: does not unseal as record {index} of this log (another enclave's or log's, moved or tampered)",
        ) from None


def _rebuild(records_dir: Path, sealing_key: bytes, log_id: bytes, head_size: int) -> MerkleLog:
    """The log over every record file, which must be numbered 0, 1, ... with no gap and each unseal at its
    position; the caller compares it with the head. Records past the head are read too, so that an older head
    put back is refused because the records do not match it."""
    try:
        indices = record_indices(records_dir)
    except FileNotFoundError:
        raise UserStoreError(Reason.INCOMPLETE, f"{records_dir}: missing; not a (complete) user store") from None
    count = indices[-1] + 1 if indices else 0
    present = set(indices)
    for index in range(max(count, head_size)):
        if index not in present:
            raise UserStoreError(
                Reason.MISSING,
                f"{records_dir / record_name(index)}: record {index} is missing (the sealed head counts {head_size})",
            )
    log = MerkleLog()
    for index in range(count):
        try:
            log.append(_read_record(records_dir, sealing_key, log_id, index))
        except UserStoreError as exc:
            if index >= head_size and exc.reason is Reason.UNSEALABLE:  # a file the host added past the head
                raise UserStoreError(Reason.EXTRA, f"{exc.detail}; it is beyond the head's {head_size}") from None
            raise
    return log
