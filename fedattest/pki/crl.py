"""The coordinator's certificate revocation list: an X.509 CRL (RFC 5280) signed by its root CA.

The coordinator lists there every member certificate that an approved policy update revoked (its member
left the policy, its measurement or an app it was provisioned with is no longer allowed, ...). Relying
parties (the aggregator's ServerApp, each round) fetch it, check it with :meth:`RevocationList.load`
against the root they pinned, and refuse what it lists. A list past its ``nextUpdate`` is refused: an
attacker who withholds fresh lists can at most make the relying party stop, never make it accept a
revoked certificate after the stale list expires.

Pure: bytes and keys in, objects out.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.errors import FedattestError

CRL_LIFETIME = timedelta(hours=1)  # how long a relying party may use one list (nextUpdate - thisUpdate)
MAX_CRL_BYTES = 16 << 20  # ~40 bytes an entry: 400,000 revocations


class RevocationListError(FedattestError):
    """A revocation list that cannot be used: unsigned by the root, stale, or malformed."""


@dataclass(frozen=True)
class RevokedCertificate:
    serial: int
    revoked_at: datetime
    reason: x509.ReasonFlags


def build_crl(
    root_key: ec.EllipticCurvePrivateKey,
    root_ca: x509.Certificate,
    revoked: Iterable[RevokedCertificate],
    *,
    now: datetime,
    number: int,
    lifetime: timedelta = CRL_LIFETIME,
) -> bytes:
    """The DER of a CRL issued by ``root_ca`` listing ``revoked``, valid from ``now`` for ``lifetime``;
    ``number`` is its CRLNumber (the count of revocations so far: it grows with every revocation)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(root_ca.subject)
        .last_update(now)
        .next_update(now + lifetime)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(root_ca.public_key()),  # type: ignore[arg-type]
            critical=False,
        )
    )
    for entry in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder()
            .serial_number(entry.serial)
            .revocation_date(entry.revoked_at)
            .add_extension(x509.CRLReason(entry.reason), critical=False)
            .build()
        )
    return builder.sign(root_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


@dataclass(frozen=True)
class RevocationList:
    """A verified CRL: which serial numbers the root revoked, and until when the list may be used."""

    revoked: dict[int, x509.ReasonFlags]
    this_update: datetime
    next_update: datetime
    number: int

    @classmethod
    def load(cls, der: bytes, root: x509.Certificate, *, now: datetime) -> RevocationList:
        """Parse ``der`` and check it: issued and signed by ``root``, current at ``now`` (thisUpdate not in
        the future, nextUpdate not passed), with a CRLNumber. :class:`RevocationListError` says what is wrong."""
        if len(der) > MAX_CRL_BYTES:
            raise RevocationListError(f"the revocation list is larger than {MAX_CRL_BYTES >> 20} MiB")
        try:
            crl = x509.load_der_x509_crl(der)
        except ValueError as exc:
            raise RevocationListError(f"the revocation list does not parse: {exc}") from None
        key = root.public_key()
        if crl.issuer != root.subject or not isinstance(key, ec.EllipticCurvePublicKey):
            raise RevocationListError("the revocation list was not issued by the coordinator's root CA")
        if not crl.is_signature_valid(key):
            raise RevocationListError("the revocation list's signature does not verify with the coordinator's root CA")
        this_update, next_update = crl.last_update_utc, crl.next_update_utc
        if next_update is None:
            raise RevocationListError("the revocation list has no nextUpdate")
        if this_update > now + timedelta(minutes=5):  # a little clock skew between machines
            raise RevocationListError(f"the revocation list is dated in the future ({this_update:%Y-%m-%dT%H:%M:%SZ})")
        if next_update <= now:
            raise RevocationListError(f"the revocation list is stale (its nextUpdate {next_update:%Y-%m-%dT%H:%M:%SZ} passed)")
        try:
            number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number
        except x509.ExtensionNotFound:
            raise RevocationListError("the revocation list has no CRLNumber") from None
        revoked: dict[int, x509.ReasonFlags] = {}
        for entry in crl:
            try:
                reason = entry.extensions.get_extension_for_class(x509.CRLReason).value.reason
            except x509.ExtensionNotFound:
                reason = x509.ReasonFlags.unspecified
            revoked[entry.serial_number] = reason
        return cls(revoked, this_update, next_update, number)

    def reason_for(self, certificate: x509.Certificate) -> str | None:
        """Why ``certificate`` is revoked (its RFC 5280 reason name), or None when this list does not revoke it."""
        reason = self.revoked.get(certificate.serial_number)
        return None if reason is None else reason.value
