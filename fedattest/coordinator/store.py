"""The coordinator's store: SQLite in WAL mode behind a small interface.

Everything an activation changes (the nonce it uses, the activation record, the audit entry) is written
in one transaction, so a crash leaves either all of it or none of it: a client never holds a certificate
the store does not know about. Only this module speaks SQL.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fedattest.coordinator.audit import AuditEntry, next_entry
from fedattest.errors import FedattestError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS policy_versions (
    version INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, document TEXT NOT NULL, approvals TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS activations (
    id INTEGER PRIMARY KEY AUTOINCREMENT, member TEXT NOT NULL, role TEXT NOT NULL, certificate TEXT NOT NULL,
    fingerprint TEXT NOT NULL, token TEXT NOT NULL, verdict TEXT NOT NULL, created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS activations_member ON activations(member);
-- Covers the per-member counts (/status, /members): SQLite counts from the index, never the ~10 KB records.
CREATE INDEX IF NOT EXISTS activations_member_fingerprint ON activations(member, fingerprint);
CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, entry TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS collateral (sha256 TEXT PRIMARY KEY, document TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS rounds (
    run_id TEXT NOT NULL, round INTEGER NOT NULL, signer TEXT NOT NULL, seq INTEGER NOT NULL,
    PRIMARY KEY (run_id, round, signer)
);
CREATE TABLE IF NOT EXISTS revocations (
    cert_sha256 TEXT PRIMARY KEY, member TEXT NOT NULL, serial TEXT NOT NULL, reason TEXT NOT NULL, code TEXT NOT NULL,
    created TEXT NOT NULL, seq INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

# Called inside each transaction that appends to the audit chain, after its statements and before COMMIT,
# with the chain's committed last entry (None: empty) and the last entry the transaction appends. The
# coordinator seals the pair (see fedattest.coordinator.sealing.HeadGuard); if it raises, nothing commits.
# ``after_commit`` then gets the new last entry (it must not raise: the transaction is committed).
BeforeCommit = Callable[[AuditEntry | None, AuditEntry], None]
AfterCommit = Callable[[AuditEntry], None]


class StoreError(FedattestError):
    """The store refused an operation (a used nonce, an exhausted member, ...), or cannot be opened."""


class StoreUnavailableError(StoreError):
    """The store cannot be read or written now (disk full, an I/O error, damage found while running): not the
    request's fault, and nothing was changed (the transaction rolled back)."""


def _unavailable(path: Path, exc: sqlite3.Error) -> str:
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return f"the store {path} cannot be written: {text} (free space on its disk; nothing was changed)"
    return f"the store {path} cannot be used: {text} (stop the coordinator and restore the store from a backup)"


def _refusal(path: Path, exc: Exception) -> str:
    """One line saying why the store at ``path`` cannot be used, and what to do."""
    text = str(exc)
    if "disk is full" in text or "disk I/O error" in text:
        return f"cannot open the store {path}: {text} (free space on its disk, then start again)"
    if isinstance(exc, sqlite3.OperationalError) and "locked" in text:
        return f"cannot open the store {path}: {text} (is another coordinator running on this state directory?)"
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in text:
        return f"cannot open the store {path}: {text}"
    return (
        f"the store {path} is corrupt ({text}); the coordinator will not run on it: restore it from a backup, or"
        " move it away to start an empty one"
    )


@dataclass(frozen=True)
class ActivationRecord:
    member: str
    role: str
    certificate: str
    fingerprint: str
    token: str
    verdict: dict[str, Any]
    created: str


@dataclass(frozen=True)
class RevocationRecord:
    """A member certificate revoked by a policy update: ``reason`` for people, ``code`` an RFC 5280 reason
    name (what the CRL says), ``seq`` the audit entry that records it."""

    cert_sha256: str
    member: str
    serial: int
    reason: str
    code: str
    created: str
    seq: int


@dataclass(frozen=True)
class PolicyVersion:
    version: int
    policy_hash: str
    document: str
    approvals: list[str]
    created: str


class Store(Protocol):
    """What the coordinator needs from its store (SQLite today; a replicated store can implement the same).
    ``path`` names it in messages; ``store_id``, ``chain_hashes`` and the commit hooks are what the sealed head
    (:class:`fedattest.coordinator.sealing.HeadGuard`) uses to recognise it and to seal every commit."""

    path: Path
    store_id: str
    before_commit: BeforeCommit | None
    after_commit: AfterCommit | None

    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def latest_policy(self) -> tuple[int, str, list[str]] | None: ...
    def activations(self, member: str | None = None) -> list[ActivationRecord]: ...
    def activation_counts(self) -> dict[str, tuple[int, int]]: ...
    def latest_activation(self, member: str) -> ActivationRecord | None: ...
    def activation_of(self, member: str, fingerprint: str) -> ActivationRecord | None: ...
    def provisioned_under(self, fingerprint: str | None = None) -> dict[str, str]: ...
    def audit_entries(self, after: int = -1) -> list[AuditEntry]: ...
    def chain_hashes(self) -> list[bytes]: ...
    def check_rows_against_chain(self) -> None: ...
    def revocations(self) -> list[RevocationRecord]: ...
    def policy_versions(self) -> list[PolicyVersion]: ...
    def collateral_documents(self) -> dict[str, str]: ...
    def close(self) -> None: ...


class SqliteStore:
    """One SQLite database file (WAL journal, synchronous=FULL). Thread-safe: one connection, one lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self.before_commit: BeforeCommit | None = None
        self.after_commit: AfterCommit | None = None
        try:
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._open()
        except (sqlite3.Error, ValueError, KeyError, TypeError) as exc:
            with contextlib.suppress(Exception):
                self._db.close()
            raise StoreError(_refusal(path, exc)) from None

    def _open(self) -> None:
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        # Refuse to start on a damaged file rather than answer 500s later (quick_check reads every page once).
        problems = [row[0] for row in self._db.execute("PRAGMA quick_check(3)").fetchall()]
        if problems != ["ok"]:
            raise sqlite3.DatabaseError("; ".join(str(p) for p in problems))
        had_rounds = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'rounds'").fetchone()
        self._db.executescript(_SCHEMA)
        if had_rounds is None:  # a store from before the rounds table: index the rounds its log already holds
            for (text,) in self._db.execute("SELECT entry FROM audit ORDER BY seq").fetchall():
                entry = AuditEntry.from_json(json.loads(text))
                if entry.kind == "round":
                    data = entry.data
                    row = (str(data["run_id"]), int(data["round"]), str(data["reported_by"]), entry.seq)
                    self._db.execute("INSERT OR IGNORE INTO rounds VALUES (?, ?, ?, ?)", row)
        # A random identity, made with the store: the sealed head names it, so another store is recognised.
        self._db.execute("INSERT OR IGNORE INTO meta VALUES ('store_id', ?)", (secrets.token_hex(16),))
        self.store_id = str(self._db.execute("SELECT value FROM meta WHERE key = 'store_id'").fetchone()[0])
        row = self._db.execute("SELECT entry FROM audit ORDER BY seq DESC LIMIT 1").fetchone()
        # The chain's last entry, kept in memory so an append needs no read.
        self._last: AuditEntry | None = AuditEntry.from_json(json.loads(row[0])) if row else None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _using(self) -> Iterator[None]:
        """The connection, alone; an SQLite failure (disk full, I/O error, damage) becomes a one-line
        :class:`StoreUnavailableError` instead of a traceback."""
        with self._lock:
            try:
                yield
            except sqlite3.Error as exc:
                raise StoreUnavailableError(_unavailable(self.path, exc)) from None

    @contextmanager
    def transaction(self) -> Iterator[Transaction]:
        """All-or-nothing: commits when the block ends, rolls back on any exception."""
        with self._using():
            self._db.execute("BEGIN IMMEDIATE")
            tx = Transaction(self._db, self._last)
            try:
                yield tx
                if self.before_commit is not None and tx.last is not self._last:
                    assert tx.last is not None  # appended
                    self.before_commit(self._last, tx.last)
                self._db.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed COMMIT leaves the transaction open
                    self._db.execute("ROLLBACK")
                raise
            appended, self._last = tx.last is not self._last, tx.last
            if appended and self.after_commit is not None and tx.last is not None:
                self.after_commit(tx.last)

    # -- reads ------------------------------------------------------------------------------------
    def latest_policy(self) -> tuple[int, str, list[str]] | None:
        with self._using():
            row = self._db.execute(
                "SELECT version, document, approvals FROM policy_versions ORDER BY version DESC LIMIT 1"
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), list(json.loads(row[2])))

    def activations(self, member: str | None = None) -> list[ActivationRecord]:
        query = "SELECT member, role, certificate, fingerprint, token, verdict, created FROM activations"
        args: tuple[str, ...] = ()
        if member is not None:
            query += " WHERE member = ?"
            args = (member,)
        with self._using():
            rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [ActivationRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6]) for r in rows]

    def revocations(self) -> list[RevocationRecord]:
        """Every revoked certificate, oldest first."""
        with self._using():
            rows = self._db.execute(
                "SELECT cert_sha256, member, serial, reason, code, created, seq FROM revocations ORDER BY seq, cert_sha256"
            ).fetchall()
        return [RevocationRecord(r[0], r[1], int(r[2]), r[3], r[4], r[5], int(r[6])) for r in rows]

    def activation_counts(self) -> dict[str, tuple[int, int]]:
        """Per member: (activations, of which revoked), counted by SQLite without loading any record."""
        query = (
            "SELECT member, COUNT(*), SUM(fingerprint IN (SELECT cert_sha256 FROM revocations)) FROM activations"
            " GROUP BY member"
        )
        with self._using():
            rows = self._db.execute(query).fetchall()
        return {str(r[0]): (int(r[1]), int(r[2] or 0)) for r in rows}

    def latest_activation(self, member: str) -> ActivationRecord | None:
        """The member's most recent activation record (one indexed lookup, whatever the history)."""
        query = "SELECT member, role, certificate, fingerprint, token, verdict, created FROM activations WHERE member = ?"
        with self._using():
            r = self._db.execute(query + " ORDER BY id DESC LIMIT 1", (member,)).fetchone()
        return None if r is None else ActivationRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6])

    def activation_of(self, member: str, fingerprint: str) -> ActivationRecord | None:
        """The activation of ``member`` that issued the certificate with SHA-256 ``fingerprint`` (indexed)."""
        query = (
            "SELECT member, role, certificate, fingerprint, token, verdict, created FROM activations"
            " WHERE member = ? AND fingerprint = ? ORDER BY id DESC LIMIT 1"
        )
        with self._using():
            r = self._db.execute(query, (member, fingerprint)).fetchone()
        return None if r is None else ActivationRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]), r[6])

    def provisioned_under(self, fingerprint: str | None = None) -> dict[str, str]:
        """Certificate SHA-256 -> the policy hash that identity was last re-provisioned under (its ``reprovision``
        audit entries; an identity never re-provisioned is absent: the policy of its activation applies), for
        every identity or only ``fingerprint``'s. Read from the audit chain itself, in one pass, so no other row
        can disagree with it."""
        query = (
            "SELECT json_extract(entry, '$.data.cert_sha256'), json_extract(entry, '$.data.policy_hash') FROM audit"
            " WHERE json_extract(entry, '$.kind') = 'reprovision'"
        )
        args: tuple[str, ...] = ()
        if fingerprint is not None:
            query, args = query + " AND json_extract(entry, '$.data.cert_sha256') = ?", (fingerprint,)
        with self._using():
            return {str(cert): str(policy) for cert, policy in self._db.execute(query + " ORDER BY seq", args).fetchall()}

    def audit_entries(self, after: int = -1) -> list[AuditEntry]:
        """The audit entries in order; ``after``: only those with a greater sequence number (what was appended
        since, for a reader that folds the log as it grows)."""
        with self._using():
            rows = self._db.execute("SELECT entry FROM audit WHERE seq > ? ORDER BY seq", (after,)).fetchall()
        return [AuditEntry.from_json(json.loads(r[0])) for r in rows]

    def chain_hashes(self) -> list[bytes]:
        """Every audit entry's hash, by sequence number, after checking that each entry chains to the one
        before it (hashes recomputed from the content, not read). A broken chain is a :class:`StoreError`."""
        hashes: list[bytes] = []
        with self._using():
            rows = self._db.execute("SELECT seq, entry FROM audit ORDER BY seq").fetchall()
        for seq, text in rows:
            try:
                entry = AuditEntry.from_json(json.loads(text))
            except (ValueError, FedattestError) as exc:
                message = f"the store {self.path} has a malformed audit entry {seq} ({exc}): restore it from a backup"
                raise StoreError(message) from None
            if entry.seq != len(hashes) or seq != entry.seq or entry.prev != (hashes[-1] if hashes else bytes(32)):
                raise StoreError(
                    f"the store {self.path}'s audit chain is broken at entry {seq} (missing, changed or reordered"
                    " entries): restore it from a backup"
                )
            hashes.append(entry.hash)
        return hashes

    def check_rows_against_chain(self) -> None:
        """:class:`StoreError` unless the rows the coordinator decides from (activations, which count against
        ``max_activations``; revocations; policy versions; rounds, which refuse replays) are exactly those the
        audit chain records. The chain is authenticated at start (``head.sealed``); the rows are not, so a
        host that deleted an activation row to reset a member's count, or a revocation row to revive an
        identity, would otherwise go unnoticed. Run it after the chain itself was checked."""
        # The fields are read by SQLite's JSON functions from the entries whose hashes chain_hashes() checked:
        # no second parse of the whole log in Python.
        queries = {
            "activation": "SELECT json_extract(entry, '$.data.cert_sha256'), json_extract(entry, '$.data.member')"
            " FROM audit WHERE json_extract(entry, '$.kind') = 'activation'",
            "revocation": "SELECT json_extract(entry, '$.data.cert_sha256'), json_extract(entry, '$.data.member'), seq"
            " FROM audit WHERE json_extract(entry, '$.kind') = 'revocation'",
            "policy": "SELECT json_extract(entry, '$.data.version'), json_extract(entry, '$.data.policy_hash')"
            " FROM audit WHERE json_extract(entry, '$.kind') = 'policy'",
            "round": "SELECT CAST(json_extract(entry, '$.data.run_id') AS TEXT), json_extract(entry, '$.data.round'),"
            " json_extract(entry, '$.data.reported_by'), seq FROM audit WHERE json_extract(entry, '$.kind') = 'round'",
        }
        with self._using():
            logged = {kind: [tuple(r) for r in self._db.execute(query)] for kind, query in queries.items()}
            rows = {
                "activation": [tuple(r) for r in self._db.execute("SELECT fingerprint, member FROM activations")],
                "revocation": [tuple(r) for r in self._db.execute("SELECT cert_sha256, member, seq FROM revocations")],
                "policy": [tuple(r) for r in self._db.execute("SELECT version, hash FROM policy_versions")],
                "round": [tuple(r) for r in self._db.execute("SELECT run_id, round, signer, seq FROM rounds")],
            }
        for kind, expected in logged.items():
            have = sorted(rows[kind])
            if have != sorted(expected):
                missing = len(set(expected) - set(have))
                extra = len(set(have) - set(expected))
                raise StoreError(
                    f"the store {self.path} has {kind} rows that its audit log does not record ({missing} logged"
                    f" {kind}s have no row, {extra} rows are not logged): rows were deleted, added or changed"
                    " outside the coordinator; restore the store from a backup"
                )

    def policy_versions(self) -> list[PolicyVersion]:
        with self._using():
            query = "SELECT version, hash, document, approvals, created FROM policy_versions ORDER BY version"
            rows = self._db.execute(query).fetchall()
        return [PolicyVersion(int(r[0]), str(r[1]), str(r[2]), list(json.loads(r[3])), str(r[4])) for r in rows]

    def collateral_documents(self) -> dict[str, str]:
        """The collateral every recorded verification used, by the SHA-256 of its JSON document."""
        with self._using():
            rows = self._db.execute("SELECT sha256, document FROM collateral ORDER BY sha256").fetchall()
        return {str(r[0]): str(r[1]) for r in rows}


class Transaction:
    def __init__(self, db: sqlite3.Connection, last: AuditEntry | None) -> None:
        self._db = db
        self.last = last

    def add_policy(self, digest: str, document: str, approvals: list[str], created: str) -> int:
        row = self._db.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM policy_versions").fetchone()
        version = int(row[0])
        try:
            self._db.execute(
                "INSERT INTO policy_versions VALUES (?, ?, ?, ?, ?)", (version, digest, document, json.dumps(approvals), created)
            )
        except sqlite3.IntegrityError:
            raise StoreError("this policy version is already stored") from None
        return version

    def activation_count(self, member: str) -> int:
        """The member's activations that were not revoked (a revoked one frees its place: the member can
        activate again, e.g. with the build that replaced a revoked measurement)."""
        query = "SELECT COUNT(*) FROM activations WHERE member = ? AND fingerprint NOT IN (SELECT cert_sha256 FROM revocations)"
        return int(self._db.execute(query, (member,)).fetchone()[0])

    def revoke(self, record: RevocationRecord) -> None:
        r = record
        self._db.execute(
            "INSERT OR IGNORE INTO revocations VALUES (?, ?, ?, ?, ?, ?, ?)",
            (r.cert_sha256, r.member, str(r.serial), r.reason, r.code, r.created, r.seq),
        )

    def add_activation(self, record: ActivationRecord) -> None:
        r = record
        values = (r.member, r.role, r.certificate, r.fingerprint, r.token, json.dumps(r.verdict), r.created)
        columns = "member, role, certificate, fingerprint, token, verdict, created"
        self._db.execute(f"INSERT INTO activations ({columns}) VALUES (?, ?, ?, ?, ?, ?, ?)", values)  # noqa: S608 - constant

    def add_collateral(self, sha256: str, document: str) -> None:
        self._db.execute("INSERT OR IGNORE INTO collateral VALUES (?, ?)", (sha256, document))

    def add_round(self, run_id: int, round_number: int, signer: str, seq: int) -> None:
        """Record that ``signer`` reported round ``round_number`` of run ``run_id`` (audit entry ``seq``); a
        second report of the same round by the same signer is a :class:`StoreError` (the primary key)."""
        try:
            self._db.execute("INSERT INTO rounds VALUES (?, ?, ?, ?)", (str(run_id), round_number, signer, seq))
        except sqlite3.IntegrityError:
            row = self._db.execute(
                "SELECT seq FROM rounds WHERE run_id = ? AND round = ? AND signer = ?", (str(run_id), round_number, signer)
            ).fetchone()
            raise StoreError(
                f"round {round_number} of run {run_id} is already recorded (reported by {signer!r}, audit entry"
                f" {row[0] if row else '?'}): a replay"
            ) from None

    def append_audit(self, time: str, kind: str, data: dict[str, Any]) -> AuditEntry:
        entry = next_entry(self.last, time, kind, data)
        self._db.execute("INSERT INTO audit VALUES (?, ?, ?)", (entry.seq, json.dumps(entry.to_json()), entry.hash.hex()))
        self.last = entry
        return entry
