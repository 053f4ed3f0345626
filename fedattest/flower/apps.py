"""Only approved code runs: a Flower app bundle (FAB) is allowed when the SHA-256 of its bytes is in the
policy's ``apps.allowed_hashes``. The check runs on the bytes, before anything is unpacked, imported or
installed. (``flwr build`` is deterministic, so the hash of an approved app is known in advance.)"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from fedattest.errors import FedattestError


class AppNotAllowedError(FedattestError):
    """A Flower app whose hash is not in the policy."""

    def __init__(self, digest: str) -> None:
        self.digest = digest
        super().__init__(f"Flower app {digest} is not in the policy's allowed apps: refusing to install or run it")


def fab_hash(fab: bytes) -> str:
    return hashlib.sha256(fab).hexdigest()


class AppGate:
    """The allow-list from the provisioned policy. ``check(fab_bytes)`` returns the hash or raises."""

    def __init__(self, allowed_hashes: Iterable[str]) -> None:
        self.allowed = frozenset(h.lower() for h in allowed_hashes)
        if not self.allowed:
            raise FedattestError("no allowed Flower apps were provisioned: every app would be refused")

    def check(self, fab: bytes) -> str:
        return self.check_hash(fab_hash(fab))

    def check_hash(self, digest: str) -> str:
        """For an app already stored under its hash (the hash was computed from its bytes when stored)."""
        digest = digest.lower()
        # Hashes are public, but compare in constant time anyway: it costs nothing.
        if not any(hmac.compare_digest(digest, allowed) for allowed in self.allowed):
            raise AppNotAllowedError(digest)
        return digest
