"""Only approved code runs: a Flower app bundle (FAB) is allowed when the SHA-256 of its bytes is in the
policy's ``apps.allowed_hashes``. The check runs on the bytes, before anything is unpacked, imported or
installed. (``flwr build`` is deterministic, so the hash of an approved app is known in advance.)"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable
from pathlib import Path

from fedattest.errors import FedattestError


class AppNotAllowedError(FedattestError):
    """A Flower app whose hash is not in the policy. The message names the policy the participant was provisioned
    under and, when the coordinator has another in force, that one too (the participant is about to catch up)."""

    def __init__(self, digest: str, provisioned: str | None = None, current: str | None = None) -> None:
        self.digest = digest
        under = f" of policy {provisioned[:16]}... (provisioned)" if provisioned else ""
        newer = (
            f"; the coordinator's current policy is {current[:16]}...: this participant re-provisions under it within"
            " seconds, then run again"
            if current and provisioned and current != provisioned
            else ""
        )
        super().__init__(f"Flower app {digest} is not in the allowed apps{under}{newer}: refusing to install or run it")


def fab_hash(fab: bytes) -> str:
    return hashlib.sha256(fab).hexdigest()


MAX_FAB_BYTES = 512 << 20  # the largest FAB file read to be hashed


def app_hash(path: Path) -> str:
    """The hash a policy lists for the Flower app at ``path``: a FAB file's SHA-256, or for an app directory the
    SHA-256 of the FAB that ``flwr run DIR`` builds from it (Flower's own builder, which is deterministic)."""
    if path.is_dir():
        if not (path / "pyproject.toml").is_file():
            raise FedattestError(f"{path} is not a Flower app: it has no pyproject.toml")
        from flwr.cli.build import build_fab_from_disk  # noqa: PLC0415 - Flower's CLI, only here

        try:
            return fab_hash(build_fab_from_disk(path))
        except (Exception, SystemExit) as exc:  # Flower reports a bad app with typer.Exit, ValueError, ...
            raise FedattestError(f"{path}: Flower cannot build this app: {exc or type(exc).__name__}") from None
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FAB_BYTES + 1)
    except OSError as exc:
        raise FedattestError(f"cannot read {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FAB_BYTES:
        raise FedattestError(f"{path} is larger than {MAX_FAB_BYTES >> 20} MiB: not a FAB")
    if not data.startswith(b"PK"):
        raise FedattestError(f"{path} is not a FAB (a zip file, as 'flwr build' writes) nor an app directory")
    return fab_hash(data)


class AppGate:
    """The allow-list from the provisioned policy. ``check(fab_bytes)`` returns the hash or raises.
    :meth:`update` swaps in the list of a newer policy (a re-provisioned participant); a check in another
    thread sees the old list or the new one, whole."""

    def __init__(self, allowed_hashes: Iterable[str], policy_hash: str | None = None) -> None:
        self.current_policy_hash: str | None = None  # the coordinator's, when a refresher saw another
        self.allowed: frozenset[str] = frozenset()
        self.policy_hash: str | None = None
        self.update(allowed_hashes, policy_hash)

    def narrow(self, allowed_hashes: Iterable[str]) -> None:
        """Keep only the apps ``allowed_hashes`` also allows (a newer policy's list, before this participant is
        re-provisioned under it): a withdrawn app stops at once. May leave nothing allowed."""
        self.allowed = self.allowed & frozenset(h.lower() for h in allowed_hashes)

    def update(self, allowed_hashes: Iterable[str], policy_hash: str | None) -> None:
        allowed = frozenset(h.lower() for h in allowed_hashes)
        if not allowed:
            raise FedattestError("no allowed Flower apps were provisioned: every app would be refused")
        self.allowed, self.policy_hash = allowed, policy_hash

    def check(self, fab: bytes) -> str:
        return self.check_hash(fab_hash(fab))

    def check_hash(self, digest: str) -> str:
        """For an app already stored under its hash (the hash was computed from its bytes when stored)."""
        digest = digest.lower()
        # Hashes are public, but compare in constant time anyway: it costs nothing.
        if not any(hmac.compare_digest(digest, allowed) for allowed in self.allowed):
            raise AppNotAllowedError(digest, self.policy_hash, self.current_policy_hash)
        return digest
