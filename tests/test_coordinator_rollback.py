"""Rollback and erasure of the coordinator's history by its host, against the real coordinator process: a
deleted, older, forked or foreign store and a deleted state.sealed refuse to start (exit 1, one line); a
crash between the store's commit and the sealed head still starts; ``audit verify --since`` refuses a log
that does not extend a head pinned earlier."""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fedattest.coordinator.sealing import HEAD_FILE, HEAD_PURPOSE, SLOT_BYTES, StoreHead
from fedattest.errors import FedattestError
from fedattest.participant import activate
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from fedattest.tee.sealing import unseal
from tests.coordinator_harness import (
    AGG,
    COORD,
    ENROL,
    SIGNER,
    Outcome,
    Running,
    coordinator,
    start,
    stop,
    tee,
    try_start,
    update_policy,
)


def _activate(running: Running, out: Path, times: int = 1) -> None:
    for i in range(times):
        activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), out / f"id-{i}", enrolment_key=ENROL["aggregator"]
        )


def _export(running: Running, path: Path) -> Path:
    with running.http() as http:
        response = http.get(f"{running.url}/api/v1/audit")
    assert response.status_code == 200
    path.write_bytes(response.content)
    return path


def _store_files(state: Path) -> list[Path]:
    return sorted(state.glob("store.sqlite*"))


def _copy_store(state: Path, to: Path) -> None:
    to.mkdir(parents=True, exist_ok=True)
    for f in _store_files(state):
        shutil.copy2(f, to / f.name)


def _restore_store(backup: Path, state: Path) -> None:
    for f in _store_files(state):
        f.unlink()
    for f in backup.glob("store.sqlite*"):
        shutil.copy2(f, state / f.name)


def _refused(outcome: Outcome, *words: str) -> str:
    if outcome.running is not None:
        stop(outcome.running)
        raise AssertionError("the coordinator started")
    assert outcome.returncode == 1, outcome.output
    assert "Traceback" not in outcome.output, outcome.output
    lines = [line for line in outcome.output.splitlines() if line.strip()]
    assert len(lines) == 1, outcome.output
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


def _started(outcome: Outcome) -> Running:
    assert outcome.running is not None, outcome.output
    return outcome.running


@pytest.fixture
def platform(tmp_path: Path) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path / "platform")


def test_a_deleted_store_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path, 2)
    for f in _store_files(tmp_path / "state"):
        f.unlink()
    _refused(try_start(tmp_path, platform), "store", "missing", "restore")


def test_an_older_copy_of_the_store_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    _copy_store(tmp_path / "state", tmp_path / "backup")
    with coordinator(tmp_path, platform) as second:
        _activate(second, tmp_path / "b", 2)
    _restore_store(tmp_path / "backup", tmp_path / "state")
    _refused(try_start(tmp_path, platform), "older", "restore")


def test_a_forked_store_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    shutil.copytree(tmp_path / "state", tmp_path / "copy")  # the host runs a second copy of the same state
    with coordinator(tmp_path, platform) as one:
        _activate(one, tmp_path / "b")
    with coordinator(tmp_path, platform, state=tmp_path / "copy") as other:
        _activate(other, tmp_path / "c")
    _restore_store(tmp_path / "copy", tmp_path / "state")
    _refused(try_start(tmp_path, platform), "fork", "entry 2")


def test_a_store_of_another_state_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    with coordinator(tmp_path, platform, state=tmp_path / "other") as other:
        _activate(other, tmp_path / "b", 3)
    _restore_store(tmp_path / "other", tmp_path / "state")
    _refused(try_start(tmp_path, platform), "another")


def test_a_deleted_state_sealed_refuses_unless_a_new_state_is_asked_for(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
        old_root = first.root_pem
    (tmp_path / "state" / "state.sealed").unlink()
    _refused(try_start(tmp_path, platform), "state.sealed", "missing", "--new-state")
    fresh = _started(try_start(tmp_path, platform, "--new-state"))
    try:
        assert fresh.root_pem != old_root
        with fresh.http() as http:
            assert http.get(f"{fresh.url}/api/v1/status").json()["activations"] == 0
    finally:
        stop(fresh)
    assert list((tmp_path / "state").glob("replaced-*/store.sqlite"))  # the old store is kept aside, not reused


def test_a_deleted_sealed_head_refuses_unless_the_store_is_accepted(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    (tmp_path / "state" / "head.sealed").unlink()
    _refused(try_start(tmp_path, platform), "head.sealed", "--accept-store")
    accepted = _started(try_start(tmp_path, platform, "--accept-store"))
    try:
        log = _export(accepted, tmp_path / "log.json").read_text()
        assert '"store-accepted"' in log  # the operator's decision is in the audit log
    finally:
        stop(accepted)
    stop(_started(try_start(tmp_path, platform)))  # sealed again: starts without the flag


def _slots(head_file: bytes, platform: SimulatedPlatform) -> list[StoreHead]:
    key = platform.tee(WorkloadIdentity(COORD, SIGNER)).sealing_key()
    out = []
    for i in range(2):
        slot = head_file[i * SLOT_BYTES : (i + 1) * SLOT_BYTES]
        out.append(StoreHead.from_bytes(unseal(key, HEAD_PURPOSE, slot[4 : 4 + int.from_bytes(slot[:4], "big")])))
    return out


@pytest.mark.parametrize("moment", ["before the commit", "after the commit", "torn after-commit write"])
def test_a_crash_inside_a_transaction_still_starts(tmp_path: Path, platform: SimulatedPlatform, moment: str) -> None:
    """head.sealed is written before each commit (the entry as pending) and after it (as committed): rebuild,
    from the bytes the coordinator wrote, the files a crash between those writes leaves behind."""
    state = tmp_path / "state"
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    _copy_store(state, tmp_path / "before")
    before = (state / HEAD_FILE).read_bytes()
    with coordinator(tmp_path, platform) as second:
        _activate(second, tmp_path / "b")
    after = (state / HEAD_FILE).read_bytes()
    pending_slot = next(i for i, h in enumerate(_slots(after, platform)) if h.pending_seq is not None)
    assert _slots(after, platform)[pending_slot].pending_seq == 2
    if moment == "torn after-commit write":  # the newest slot half written: the pending record remains
        other = 1 - pending_slot
        torn = after[other * SLOT_BYTES : other * SLOT_BYTES + 200] + bytes(SLOT_BYTES - 200)
        crashed = after[: other * SLOT_BYTES] + torn + after[(other + 1) * SLOT_BYTES :]
    else:  # the pending record written, the after-commit one not yet: that slot still holds its old record
        crashed = b"".join((after if i == pending_slot else before)[i * SLOT_BYTES : (i + 1) * SLOT_BYTES] for i in range(2))
    (state / HEAD_FILE).write_bytes(crashed)
    if moment == "before the commit":
        _restore_store(tmp_path / "before", state)
    restarted = _started(try_start(tmp_path, platform))
    try:
        _activate(restarted, tmp_path / "c")
        with restarted.http() as http:
            assert http.get(f"{restarted.url}/api/v1/status").json()["activations"] == (2 if moment == "before the commit" else 3)
    finally:
        stop(restarted)


def test_after_a_clean_stop_the_last_transaction_cannot_be_undone(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    _copy_store(tmp_path / "state", tmp_path / "backup")
    with coordinator(tmp_path, platform) as second:
        _activate(second, tmp_path / "b")
    _restore_store(tmp_path / "backup", tmp_path / "state")  # one activation back
    _refused(try_start(tmp_path, platform), "older", "entry 1", "entry 2")


def test_an_older_sealed_head_under_a_newer_store_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
    old_head = (tmp_path / "state" / HEAD_FILE).read_bytes()
    with coordinator(tmp_path, platform) as second:
        _activate(second, tmp_path / "b", 2)
    (tmp_path / "state" / HEAD_FILE).write_bytes(old_head)  # entries 2 and 3 were never sealed by this head
    _refused(try_start(tmp_path, platform), "2 entries ahead", HEAD_FILE)


def test_a_rewritten_entry_in_the_store_refuses_to_start(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a", 2)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "store.sqlite")) as db, db:
        entry = json.loads(db.execute("SELECT entry FROM audit WHERE seq = 1").fetchone()[0])
        entry["data"]["member"] = "hospital-a"
        db.execute("UPDATE audit SET entry = ? WHERE seq = 1", (json.dumps(entry),))
    _refused(try_start(tmp_path, platform), "audit entry 1", "restore")


@pytest.mark.slow
def test_sigkill_during_load_still_starts(tmp_path: Path, platform: SimulatedPlatform) -> None:
    running = start(tmp_path, platform)
    done = threading.Event()
    count = [0]

    def load(worker: int) -> None:
        for i in range(40):
            try:
                activate(
                    running.url,
                    running.root_pem,
                    "aggregator",
                    tee(running, AGG),
                    tmp_path / f"w{worker}-{i}",
                    enrolment_key=ENROL["aggregator"],
                )
            except FedattestError:
                return
            count[0] += 1
            if done.is_set():
                return

    workers = [threading.Thread(target=load, args=(w,)) for w in range(3)]
    try:
        for w in workers:
            w.start()
        deadline = time.monotonic() + 60  # waits for activations; not a timing assertion
        while count[0] < 6 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop(running, signal.SIGKILL)
        done.set()
    for w in workers:
        w.join(timeout=120)
    stop(_started(try_start(tmp_path, platform)))


def _verify(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fedattest", "audit", "verify", *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_audit_verify_since_a_pinned_head(tmp_path: Path, platform: SimulatedPlatform) -> None:
    with coordinator(tmp_path, platform) as first:
        _activate(first, tmp_path / "a")
        pinned = _export(first, tmp_path / "pinned.json")  # what a member saved (seq 1)
        key = tmp_path / "key.pem"
        shutil.copy2(tmp_path / "state" / "audit-key.pub.pem", key)
    shutil.copytree(tmp_path / "state", tmp_path / "copy")
    with coordinator(tmp_path, platform) as one:
        _activate(one, tmp_path / "b", 2)
        later = _export(one, tmp_path / "later.json")  # seq 3, extends the pinned head
    with coordinator(tmp_path, platform, state=tmp_path / "copy") as other:
        _activate(other, tmp_path / "c", 3)
        forked = _export(other, tmp_path / "forked.json")  # seq 4: same key, same prefix, another entry 2

    with coordinator(tmp_path, platform, state=tmp_path / "new") as replaced:  # another state: another key
        _activate(replaced, tmp_path / "d", 3)
        renewed = _export(replaced, tmp_path / "renewed.json")

    ok = _verify(str(later), "--key", str(key), "--since", str(pinned), "--save-head", str(tmp_path / "head.json"))
    assert ok.returncode == 0, ok.stderr
    assert "extends the pinned head" in ok.stdout
    assert json.loads((tmp_path / "head.json").read_text())["format"] == "fedattest-audit-head"
    assert _verify(str(pinned), "--key", str(key), "--since", str(pinned)).returncode == 0
    assert _verify(str(later), "--key", str(key), "--since", str(tmp_path / "head.json")).returncode == 0

    other_key = _verify(str(renewed), "--since", str(pinned))
    assert other_key.returncode == 1 and "another key" in other_key.stderr, other_key.stderr

    fork = _verify(str(forked), "--key", str(key), "--since", str(tmp_path / "head.json"))
    assert fork.returncode == 1
    assert fork.stderr.count("\n") == 1 and "entry 3" in fork.stderr and "fork" in fork.stderr, fork.stderr

    truncated = _verify(str(pinned), "--key", str(key), "--since", str(later))
    assert truncated.returncode == 1
    assert truncated.stderr.count("\n") == 1 and "seq 3" in truncated.stderr, truncated.stderr
    assert "rolled back" in truncated.stderr


# -- rows outside the chain: what the coordinator decides from must be what its log records --------------------

ROW_EDITS = {
    # A member's activations spent, then its rows deleted: its count would start again at 0.
    "activation row deleted": "DELETE FROM activations WHERE id = (SELECT MAX(id) FROM activations)",
    # A revoked identity revived by deleting the revocation row.
    "revocation row deleted": "DELETE FROM revocations",
    # A round report made replayable by deleting its index row.
    "round row deleted": "DELETE FROM rounds",
    # An activation row added that the log never saw (its member's count grows, or a key is published).
    "activation row added": "INSERT INTO activations (member, role, certificate, fingerprint, token, verdict, created)"
    " SELECT member, role, certificate, 'ff', token, verdict, created FROM activations LIMIT 1",
}


@pytest.mark.parametrize("edit", sorted(ROW_EDITS))
def test_rows_the_log_does_not_record_refuse_the_start(tmp_path: Path, edit: str) -> None:
    """Before: the sealed head covered the audit chain only, and these edits started silently (a member that
    had used its activations got them back; a revoked identity came back to life)."""
    from fedattest.flower.rounds import report_round
    from tests.coordinator_harness import policy_text

    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        _activate(running, tmp_path, times=2)
        report_round(running.url, running.root_pem, tmp_path / "id-1", 7, 1, [], "ab" * 32)
        text = policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 0.5")  # revokes the aggregator
        update_policy(running, text)
    with contextlib.closing(sqlite3.connect(tmp_path / "state" / "store.sqlite")) as db:
        db.execute(ROW_EDITS[edit])
        db.commit()
    outcome = try_start(tmp_path, platform)
    assert outcome.running is None, "the coordinator started on edited rows"
    assert outcome.returncode == 1
    kind = edit.split(maxsplit=1)[0]
    assert f"has {kind} rows that its audit log does not record" in outcome.output, outcome.output
    assert "restore the store from a backup" in outcome.output and "Traceback" not in outcome.output


def test_a_restart_with_the_policy_file_from_before_an_update_says_what_to_do(tmp_path: Path) -> None:
    """Operators restart with the command line they used before a POST /policy: the old file is an older version
    (going back to it would be a rollback). One line says so; without --policy the coordinator starts."""
    from fedattest.policy.federation import parse_policy
    from tests.coordinator_harness import policy_text

    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        text = policy_text().replace("noise_multiplier = 1.0", "noise_multiplier = 0.5")
        update_policy(running, text)
    outcome = try_start(tmp_path, platform)
    assert outcome.running is None and outcome.returncode == 1
    assert "the --policy file is version 1 of 'hospitals', replaced by version 2, which is in force" in outcome.output
    args = [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp_path / "state"), "--platform",
            str(platform.directory), "--listen", "127.0.0.1:0"]  # fmt: skip
    with (tmp_path / "no-policy.log").open("wb") as log:
        process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    running = Running("", tmp_path / "state", platform, tmp_path / "policy.toml", process, tmp_path / "no-policy.log")
    try:
        deadline = time.monotonic() + 120  # only stops a hang
        while not (tmp_path / "state" / "url").exists():
            assert process.poll() is None and time.monotonic() < deadline, (tmp_path / "no-policy.log").read_text()
            time.sleep(0.05)
        running.url, running.root_pem = (
            (tmp_path / "state" / "url").read_text().strip(),
            (tmp_path / "state" / "root_ca.pem").read_text(),
        )
        with running.http() as http:
            assert http.get(f"{running.url}/api/v1/policy").json()["policy_hash"] == parse_policy(text).policy_hash().hex()
    finally:
        stop(running)


def test_a_second_coordinator_on_the_same_state_refuses_to_start(tmp_path: Path) -> None:
    """Two coordinators on one state directory would each seal heads the other does not know (and answer from
    diverging stores); the second now refuses with one line naming the first."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        second = try_start(tmp_path, platform)
        assert second.running is None and second.returncode == 1
        assert f"another coordinator (pid {running.process.pid}) is running on" in second.output, second.output
        with running.http() as http:  # the first is untouched
            assert http.get(f"{running.url}/api/v1/status").status_code == 200
    with coordinator(tmp_path, platform):  # the lock went with the first process
        pass
