"""Model updates signed by attested members, checked by the aggregator.

A collaborator signs every update with the private key of its coordinator-issued certificate (the key
whose hash its quote bound at activation). The signature covers a label, the run, the message and the
SHA-256 of the update's content, so it cannot be replayed into another run or message. The aggregator
accepts an update only if the certificate chains to the coordinator's root, is valid now, names a member
of the federation, and the signature verifies; otherwise the update is dropped with the reason.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.errors import FedattestError
from fedattest.pki.names import members_named

LABEL = b"fedattest-update-v1\n"


class UpdateRejectedError(FedattestError):
    """An update whose signature or signer is not acceptable. ``member`` names the signer when its
    signature verified (e.g. a revoked certificate), so the refusal can say whose update it was."""

    def __init__(self, message: str, *, member: str | None = None) -> None:
        super().__init__(message)
        self.member = member


def update_digest(run_id: int, message_id: str, content_sha256: bytes) -> bytes:
    """What is signed: label ‖ u64 run id ‖ u16 length ‖ message id ‖ SHA-256 of the content."""
    if not 0 <= run_id < 1 << 64 or len(content_sha256) != 32:
        raise UpdateRejectedError("run id must be a u64 and the content digest 32 bytes")
    mid = message_id.encode("utf-8")
    if len(mid) > 0xFFFF:
        raise UpdateRejectedError("message id too long")
    return LABEL + run_id.to_bytes(8, "big") + len(mid).to_bytes(2, "big") + mid + content_sha256


REPLY_LABEL = b"fedattest-reply-v2\n"


def reply_digest(run_id: int, round_id: str, message_type: str, reply_to: str, content_sha256: bytes) -> bytes:
    """What a ClientApp reply's signature covers: label ‖ u64 run id ‖ (u16 length ‖ field) for the round
    (Flower's group id), the message type and the id of the instruction answered ‖ SHA-256 of the content.
    The round and run are checked against the round the ServerApp aggregates, so a reply cannot be replayed
    into a later round or another run; the label keeps these signatures apart from round reports'."""
    if not 0 <= run_id < 1 << 64 or len(content_sha256) != 32:
        raise UpdateRejectedError("run id must be a u64 and the content digest 32 bytes")
    out = REPLY_LABEL + run_id.to_bytes(8, "big")
    for value in (round_id, message_type, reply_to):
        raw = value.encode("utf-8")
        if len(raw) > 0xFFFF:
            raise UpdateRejectedError("a message field is too long to sign")
        out += len(raw).to_bytes(2, "big") + raw
    return out + content_sha256


class UpdateSigner:
    """Signs updates with the participant's activated identity (``key.pem`` and ``chain.pem``)."""

    def __init__(self, key_pem: bytes, chain_pem: bytes) -> None:
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise UpdateRejectedError("the identity key must be an EC key")
        self._key = key
        self.certificate_pem = x509.load_pem_x509_certificates(chain_pem)[0].public_bytes(serialization.Encoding.PEM)

    def sign(self, run_id: int, message_id: str, content: bytes) -> bytes:
        return self._key.sign(update_digest(run_id, message_id, hashlib.sha256(content).digest()), ec.ECDSA(hashes.SHA256()))

    def sign_reply(self, run_id: int, round_id: str, message_type: str, reply_to: str, content: bytes) -> bytes:
        digest = reply_digest(run_id, round_id, message_type, reply_to, hashlib.sha256(content).digest())
        return self._key.sign(digest, ec.ECDSA(hashes.SHA256()))


class UpdateVerifier:
    """Accepts updates signed by members of ``federation`` certified by the coordinator's ``root``."""

    def __init__(self, root: x509.Certificate, federation: str) -> None:
        self.root = root
        self.federation = federation
        # Set by the caller to the current revocation list's check (``RevocationList.reason_for``): a
        # certificate it names is refused. The aggregator sets it at every round.
        self.revoked: Callable[[x509.Certificate], str | None] | None = None

    def verify(
        self,
        certificate_pem: bytes,
        signature: bytes,
        run_id: int,
        message_id: str,
        content: bytes,
        *,
        at: datetime | None = None,
    ) -> str:
        """The member name, or :class:`UpdateRejectedError` saying why the update must be dropped."""
        return self._verify(certificate_pem, signature, update_digest(run_id, message_id, hashlib.sha256(content).digest()), at)

    def verify_reply(  # noqa: PLR0917 - the signed fields
        self,
        certificate_pem: bytes,
        signature: bytes,
        run_id: int,
        round_id: str,
        message_type: str,
        reply_to: str,
        content: bytes,
        *,
        at: datetime | None = None,
    ) -> str:
        """As :meth:`verify`, for a signature made by :meth:`UpdateSigner.sign_reply`."""
        digest = reply_digest(run_id, round_id, message_type, reply_to, hashlib.sha256(content).digest())
        return self._verify(certificate_pem, signature, digest, at)

    def _verify(self, certificate_pem: bytes, signature: bytes, digest: bytes, at: datetime | None) -> str:
        try:
            cert = x509.load_pem_x509_certificate(certificate_pem)
        except ValueError:
            raise UpdateRejectedError("the signer's certificate does not parse") from None
        try:
            cert.verify_directly_issued_by(self.root)
        except (InvalidSignature, ValueError, TypeError):
            raise UpdateRejectedError("the signer's certificate was not issued by the coordinator") from None
        when = at or datetime.now(UTC)
        if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
            raise UpdateRejectedError("the signer's certificate has expired or is not valid yet")
        named = members_named(cert)
        if named is None:
            raise UpdateRejectedError("the signer's certificate names no member")
        members = [member for federation, member in named if federation == self.federation]
        if len(members) != 1:
            raise UpdateRejectedError("the signer's certificate is not for a member of this federation")
        key = cert.public_key()
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise UpdateRejectedError("the signer's key is not an EC key")
        try:
            key.verify(signature, digest, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise UpdateRejectedError(
                f"update from {members[0]!r}: the signature does not verify (changed, replayed or forged)"
            ) from None
        revoked = self.revoked(cert) if self.revoked is not None else None
        if revoked is not None:
            raise UpdateRejectedError(
                f"the signer's certificate was revoked by the coordinator ({revoked})", member=members[0]
            )
        return members[0]
