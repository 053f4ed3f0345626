"""The user enclave's record store (fedattest/userenclave/store.py), with a real simulated TEE: receipts a phone
can check, pause and resume with consistency proofs, every refusal of open, and the one rollback it cannot see
(the phone's later receipt does)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from fedattest.tee.base import WorkloadIdentity
from fedattest.tee.sealing import seal
from fedattest.tee.simulated import SimulatedPlatform, SimulatedTEE
from fedattest.translog.receipt import verify_consistency, verify_receipt
from fedattest.translog.refusal import Step, TranslogError
from fedattest.translog.treehead import SignedTreeHead, log_id_of
from fedattest.userenclave.refusal import Reason, UserStoreError
from fedattest.userenclave.sealed_files import (
    HEAD_FILE,
    RECORDS_DIR,
    SEAL_OVERHEAD,
    head_purpose,
    record_name,
    record_purpose,
)
from fedattest.userenclave.store import MAX_RECORD_BYTES, UserStore

CODE = bytes.fromhex("11" * 32)
OTHER_CODE = bytes.fromhex("22" * 32)
SIGNER = bytes.fromhex("aa" * 32)
RECORDS = [f"step count {i}".encode() * (i + 1) for i in range(7)] + [b""]


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("user-store") / "platform")


@pytest.fixture
def tee(platform: SimulatedPlatform) -> SimulatedTEE:
    return platform.tee(WorkloadIdentity(CODE, SIGNER))


@pytest.fixture
def other_tee(platform: SimulatedPlatform) -> SimulatedTEE:
    """Another enclave (another MRENCLAVE) on the same platform: another sealing key."""
    return platform.tee(WorkloadIdentity(OTHER_CODE, SIGNER))


class Clock:
    """Milliseconds that advance by one second at each reading, so heads are ordered."""

    def __init__(self) -> None:
        self.now = 1_767_225_600_000

    def __call__(self) -> int:
        self.now += 1000
        return self.now


def filled(directory: Path, tee: SimulatedTEE, records: list[bytes] = RECORDS, clock: Clock | None = None) -> UserStore:
    store = UserStore.create(directory, tee, "alice", clock=clock or Clock())
    for record in records:
        store.append(record)
    return store


def refused(directory: Path, tee: SimulatedTEE, reason: Reason, needle: str) -> str:
    with pytest.raises(UserStoreError) as caught:
        UserStore.open(directory, tee)
    message = str(caught.value)
    assert caught.value.reason is reason, message
    assert needle in message and "\n" not in message, message
    return message


def test_every_receipt_verifies_for_its_record_and_no_other_bytes(tmp_path: Path, tee: SimulatedTEE) -> None:
    store = UserStore.create(tmp_path / "alice", tee, "alice", clock=Clock())
    key = store.public_key()
    assert store.head().sth.tree_size == 0 and store.head().sth.log_id == log_id_of(key)
    receipts = [store.append(record) for record in RECORDS]
    for index, (receipt, record) in enumerate(zip(receipts, RECORDS, strict=True)):
        sth = verify_receipt(receipt, key, record)
        assert (receipt.leaf_index, sth.tree_size) == (index, index + 1)
        for other in {*RECORDS, record + b"!"} - {record}:
            with pytest.raises(TranslogError) as caught:
                verify_receipt(receipt, key, other)
            assert caught.value.step is Step.LEAF_HASH
    # and under the current head, for a phone asking again
    assert verify_receipt(store.receipt(0), key, RECORDS[0]).tree_size == len(RECORDS)


def test_pause_and_resume_keeps_the_log_and_proves_it_only_grew(tmp_path: Path, tee: SimulatedTEE) -> None:
    directory = tmp_path / "alice"
    store = UserStore.create(directory, tee, "alice", clock=Clock())
    receipts = [store.append(record) for record in RECORDS[:4]]
    head, key = store.head(), store.public_key()
    del store  # the pause: nothing kept in memory

    resumed = UserStore.open(directory, tee, user_id="alice", clock=Clock())
    assert resumed.head() == head and resumed.public_key().public_numbers() == key.public_numbers()
    receipts += [resumed.append(record) for record in RECORDS[4:]]
    new_head = resumed.head()
    assert new_head.sth.tree_size == len(RECORDS)
    for receipt in receipts:  # every phone's last receipt, checked against the new head
        proof = resumed.consistency(receipt.signed_sth.sth.tree_size)
        verify_consistency(receipt.signed_sth, new_head, proof, key)
    assert list(resumed.records()) == RECORDS
    assert list(UserStore.open(directory, tee).records()) == RECORDS


def test_append_and_consistency_bounds(tmp_path: Path, tee: SimulatedTEE) -> None:
    store = filled(tmp_path / "alice", tee, RECORDS[:2])
    with pytest.raises(UserStoreError, match="at most 1048576 bytes") as caught:
        store.append(bytes(MAX_RECORD_BYTES + 1))
    assert caught.value.reason is Reason.TOO_LARGE
    assert verify_receipt(store.append(bytes(MAX_RECORD_BYTES)), store.public_key(), bytes(MAX_RECORD_BYTES))
    for size in (0, 4):
        with pytest.raises(UserStoreError) as caught:
            store.consistency(size)
        assert caught.value.reason is Reason.SIZE
    assert store.consistency(3) == []
    with pytest.raises(UserStoreError) as caught:
        UserStore.create(tmp_path / "alice", tee, "alice")
    assert caught.value.reason is Reason.NOT_EMPTY


# -- every refusal of open ------------------------------------------------------------------------------------


def test_a_deleted_record_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    (tmp_path / "a" / RECORDS_DIR / record_name(3)).unlink()
    refused(tmp_path / "a", tee, Reason.MISSING, "record 3 is missing")
    filled(tmp_path / "b", tee)  # the last one: no gap, but the head counts it
    (tmp_path / "b" / RECORDS_DIR / record_name(len(RECORDS) - 1)).unlink()
    refused(tmp_path / "b", tee, Reason.MISSING, f"record {len(RECORDS) - 1} is missing")


def test_an_added_record_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    records = tmp_path / "a" / RECORDS_DIR
    filled(tmp_path / "a", tee)
    shutil.copy(records / record_name(0), records / record_name(len(RECORDS)))  # a real sealed record, as the next
    refused(tmp_path / "a", tee, Reason.EXTRA, f"does not unseal as record {len(RECORDS)}")
    (records / record_name(len(RECORDS))).unlink()
    (records / "notes.txt").write_text("hello")
    refused(tmp_path / "a", tee, Reason.EXTRA, "notes.txt: not a file this store writes")


def test_two_swapped_records_are_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    records = tmp_path / "a" / RECORDS_DIR
    filled(tmp_path / "a", tee)
    (records / record_name(1)).rename(records / "tmp")
    (records / record_name(2)).rename(records / record_name(1))
    (records / "tmp").rename(records / record_name(2))
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "does not unseal as record 1 of this log")


def test_a_record_of_another_enclave_is_refused(tmp_path: Path, tee: SimulatedTEE, other_tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    filled(tmp_path / "b", other_tee)  # same layout, sealed to another MRENCLAVE
    shutil.copy(tmp_path / "b" / RECORDS_DIR / record_name(2), tmp_path / "a" / RECORDS_DIR / record_name(2))
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "does not unseal as record 2")


def test_a_record_of_another_users_store_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    """Every user enclave runs the same code, so shares the sealing key: the log id in the purpose keeps the
    stores apart."""
    filled(tmp_path / "a", tee)
    filled(tmp_path / "b", tee)
    shutil.copy(tmp_path / "b" / RECORDS_DIR / record_name(2), tmp_path / "a" / RECORDS_DIR / record_name(2))
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "does not unseal as record 2")


def test_an_older_head_put_back_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    store = filled(tmp_path / "a", tee, RECORDS[:3])
    older = (tmp_path / "a" / HEAD_FILE).read_bytes()
    for record in RECORDS[3:]:
        store.append(record)
    (tmp_path / "a" / HEAD_FILE).write_bytes(older)
    refused(tmp_path / "a", tee, Reason.ROOT, f"records ({len(RECORDS)}, root")


def test_a_head_whose_signature_fails_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    store = filled(tmp_path / "a", tee, RECORDS[:3])
    signed = store.head()
    forged = SignedTreeHead(signed.sth, signed.signature[:-1] + bytes([signed.signature[-1] ^ 1]))
    blob = seal(tee.sealing_key(), head_purpose(signed.sth.log_id), json.dumps(forged.to_json()).encode())
    (tmp_path / "a" / HEAD_FILE).write_bytes(blob)
    refused(tmp_path / "a", tee, Reason.SIGNATURE, "does not verify under the log key")


@pytest.mark.parametrize("cut", [SEAL_OVERHEAD - 1, SEAL_OVERHEAD + 3], ids=["truncated", "short"])
def test_a_truncated_record_is_refused(tmp_path: Path, tee: SimulatedTEE, cut: int) -> None:
    filled(tmp_path / "a", tee)
    path = tmp_path / "a" / RECORDS_DIR / record_name(4)
    path.write_bytes(path.read_bytes()[:cut])
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "does not unseal as record 4")


def test_a_corrupt_record_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    path = tmp_path / "a" / RECORDS_DIR / record_name(5)
    data = bytearray(path.read_bytes())
    data[-20] ^= 0x40
    path.write_bytes(bytes(data))
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "does not unseal as record 5")


def test_a_record_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path, tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    path = tmp_path / "a" / RECORDS_DIR / record_name(2)
    with path.open("r+b") as fh:
        fh.truncate(MAX_RECORD_BYTES + SEAL_OVERHEAD + 1)  # sparse: no megabytes written
    refused(tmp_path / "a", tee, Reason.TOO_LARGE, f"more than {MAX_RECORD_BYTES + SEAL_OVERHEAD}")


def test_a_symbolic_link_for_a_record_is_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    path = tmp_path / "a" / RECORDS_DIR / record_name(2)
    path.rename(tmp_path / "elsewhere")
    path.symlink_to(tmp_path / "elsewhere")
    refused(tmp_path / "a", tee, Reason.UNSEALABLE, "record 2 cannot be opened")


def test_another_enclave_cannot_open_the_store(tmp_path: Path, tee: SimulatedTEE, other_tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    refused(tmp_path / "a", other_tee, Reason.UNSEALABLE, "the sealed log key: cannot unseal")


def test_another_users_store_and_an_incomplete_one_are_refused(tmp_path: Path, tee: SimulatedTEE) -> None:
    filled(tmp_path / "a", tee)
    with pytest.raises(UserStoreError, match="the store of user 'alice', not of 'bob'") as caught:
        UserStore.open(tmp_path / "a", tee, user_id="bob")
    assert caught.value.reason is Reason.WRONG_USER
    (tmp_path / "a" / HEAD_FILE).unlink()
    refused(tmp_path / "a", tee, Reason.INCOMPLETE, "the sealed tree head is missing")
    refused(tmp_path / "nothing", tee, Reason.INCOMPLETE, "the sealed log key is missing")


# -- the limit: a whole directory rolled back --------------------------------------------------------------


def test_a_whole_directory_rolled_back_is_opened_but_the_phones_later_receipt_exposes_it(
    tmp_path: Path, tee: SimulatedTEE
) -> None:
    """Documented limit: every file of an older snapshot was sealed here and agrees with the others, so open
    accepts it. Detection lives with the phone, which holds the later head of its last receipt."""
    directory, snapshot, clock = tmp_path / "alice", tmp_path / "snapshot", Clock()
    store = filled(directory, tee, RECORDS[:3], clock)
    key = store.public_key()
    shutil.copytree(directory, snapshot)
    phone_receipt = store.append(RECORDS[3])  # what the phone keeps after its upload
    shutil.rmtree(directory)
    shutil.copytree(snapshot, directory)  # the host puts the older state back

    restored = UserStore.open(directory, tee, user_id="alice", clock=clock)  # accepted: the documented limit
    phones_head = phone_receipt.signed_sth
    assert restored.head().sth.tree_size < phones_head.sth.tree_size  # the phone sees the log shrank
    with pytest.raises(UserStoreError) as caught:  # the store cannot prove from the phone's size
        restored.consistency(phones_head.sth.tree_size)
    assert caught.value.reason is Reason.SIZE
    with pytest.raises(TranslogError) as refusal:  # the phone's check: the restored head is not a later one
        verify_consistency(phones_head, restored.head(), [], key)
    assert refusal.value.step is Step.HEAD_ORDER

    # The store grows past the phone's size again, with other data at its index: no proof links the heads.
    for record in (b"something else", b"and more"):
        restored.append(record)
    with pytest.raises(TranslogError) as refusal:
        verify_consistency(phones_head, restored.head(), restored.consistency(phones_head.sth.tree_size), key)
    assert refusal.value.step in {Step.CONSISTENCY_OLD_ROOT, Step.CONSISTENCY_NEW_ROOT}


# -- after open --------------------------------------------------------------------------------------------


def test_records_refuses_a_record_changed_after_open(tmp_path: Path, tee: SimulatedTEE) -> None:
    """Even a record sealed by this enclave for this position is refused when it is not the one the log holds."""
    store = filled(tmp_path / "a", tee)
    other = seal(tee.sealing_key(), record_purpose(store.head().sth.log_id, 2), b"not what was uploaded")
    (tmp_path / "a" / RECORDS_DIR / record_name(2)).write_bytes(other)
    with pytest.raises(UserStoreError, match="record 2 changed since the store was opened") as caught:
        list(store.records())
    assert caught.value.reason is Reason.CHANGED
    refused(tmp_path / "a", tee, Reason.ROOT, "are not those the sealed head commits to")


def test_head_timestamps_never_go_backwards(tmp_path: Path, tee: SimulatedTEE) -> None:
    times = iter([5_000, 9_000, 7_000, 8_000])
    store = UserStore.create(tmp_path / "a", tee, "alice", clock=lambda: next(times))
    stamps = [store.append(record).signed_sth.sth.timestamp for record in RECORDS[:3]]
    assert stamps == [9_000, 9_000, 9_000]


def test_a_head_that_cannot_be_sealed_stops_appends(tmp_path: Path, tee: SimulatedTEE) -> None:
    store = filled(tmp_path / "a", tee, RECORDS[:2])
    head = tmp_path / "a" / HEAD_FILE
    sealed = head.read_bytes()
    head.unlink()
    (head / "in-the-way").mkdir(parents=True)  # the record is written, its head cannot replace a directory
    with pytest.raises(OSError):
        store.append(b"third")
    with pytest.raises(UserStoreError, match="the head of record 2 was not sealed") as caught:
        store.append(b"fourth")
    assert caught.value.reason is Reason.BROKEN
    shutil.rmtree(head)
    head.write_bytes(sealed)
    refused(tmp_path / "a", tee, Reason.ROOT, "records (3, root")  # the record past the head: as after a crash
