"""The coordinator's state directory, the one place its process touches the disk for its own state: an
exclusive lock (one coordinator per state), the sealed state (root CA key, token key, master secret), the
sealed head that guards the store against rollback (:class:`~fedattest.coordinator.sealing.HeadGuard`) and
the store itself. :func:`fedattest.coordinator.core.open_coordinator` opens one and hands the
:class:`~fedattest.coordinator.core.Coordinator` what it holds; the coordinator itself does no file I/O.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.coordinator.sealing import STATE_FILE, STORE_FILE, HeadGuard
from fedattest.coordinator.store import SqliteStore, Store
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.pki import identity as ident
from fedattest.tee.base import TEE
from fedattest.tee.sealing import seal, unseal

STATE_PURPOSE = b"fedattest-coordinator-state-v1"


@dataclass
class SealedState:
    """What only the coordinator's enclave may know, sealed to its measurement."""

    root_key: ec.EllipticCurvePrivateKey
    root_ca: x509.Certificate
    token_key: ec.EllipticCurvePrivateKey
    master_secret: bytes

    @classmethod
    def create(cls, federation: str, now: datetime) -> SealedState:
        """New keys and a new root CA for ``federation``, generated here (inside the enclave)."""
        root_key = ident.new_key()
        return cls(root_key, ident.make_root_ca(root_key, federation, now), ident.new_key(), secrets.token_bytes(32))

    def to_bytes(self) -> bytes:
        def pem(key: ec.EllipticCurvePrivateKey) -> str:
            fmt = serialization.PrivateFormat.PKCS8
            return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()).decode()

        return json.dumps(
            {
                "root_key": pem(self.root_key),
                "root_ca": self.root_ca.public_bytes(serialization.Encoding.PEM).decode(),
                "token_key": pem(self.token_key),
                "master_secret": self.master_secret.hex(),
            }
        ).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> SealedState:
        doc = json.loads(data)

        def key(text: str) -> ec.EllipticCurvePrivateKey:
            k = serialization.load_pem_private_key(text.encode(), password=None)
            assert isinstance(k, ec.EllipticCurvePrivateKey)
            return k

        return cls(
            key(doc["root_key"]),
            x509.load_pem_x509_certificate(doc["root_ca"].encode()),
            key(doc["token_key"]),
            bytes.fromhex(doc["master_secret"]),
        )


def load_or_create_state(state_dir: Path, tee: TEE, federation: str) -> SealedState:
    """Unseal ``state_dir/state.sealed``, or create and seal a new state on first start."""
    path = state_dir / STATE_FILE
    key = tee.sealing_key()
    if path.exists():
        return SealedState.from_bytes(unseal(key, STATE_PURPOSE, path.read_bytes()))
    state = SealedState.create(federation, ident.utcnow())
    atomic_write(path, seal(key, STATE_PURPOSE, state.to_bytes()))
    return state


def _lock(state_dir: Path) -> int:
    """An exclusive lock on ``state_dir`` for this process's lifetime (released when it ends, however it ends):
    two coordinators on one state would each seal heads the other does not know, and refuse each other's
    store at the next start."""
    fd = os.open(state_dir / "coordinator.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
        os.close(fd)
        raise FedattestError(f"another coordinator (pid {holder}) is running on {state_dir}: stop it first") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


class StateDirectory:
    """An opened state directory, locked for this process until :meth:`close`. Open the store, then the
    sealed state, in that order (the sealed head checks the store before anything is written to it)."""

    def __init__(self, path: Path, tee: TEE, *, new_state: bool = False, accept_store: bool = False) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = path
        self.tee = tee
        self._lock = _lock(path)
        try:
            self._guard = HeadGuard(path, tee.sealing_key(), new_state=new_state, accept_store=accept_store)
            self._guard.before_open()  # a missing store is refused before an empty one is created
        except BaseException:
            os.close(self._lock)
            raise

    def open_store(self, open_store: Callable[[Path], Store] | None = None) -> tuple[Store, dict[str, object] | None]:
        """The store (default SQLite), checked against the sealed head and the audit chain, and hooked so that
        each commit seals the new head. Also returns what ``--accept-store`` overrode (None if nothing), which
        the caller records in the audit log."""
        store = (open_store or SqliteStore)(self.path / STORE_FILE)
        try:
            self._guard.attach(store)
            store.check_rows_against_chain()
        except BaseException:
            store.close()
            raise
        return store, self._guard.accepted

    def sealed_state(self, federation: str) -> SealedState:
        """The unsealed state (created and sealed on first start), tied to the sealed head."""
        state = load_or_create_state(self.path, self.tee, federation)
        self._guard.bind_state(ident.spki_sha256(state.root_ca))
        return state

    def close(self) -> None:
        """Release the lock; a second call does nothing (a closed descriptor's number may be another file's)."""
        if self._lock >= 0:
            os.close(self._lock)
            self._lock = -1
