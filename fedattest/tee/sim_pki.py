"""Certificates, CRLs and raw ECDSA signatures in the shapes Intel's PCK infrastructure uses.

Pure functions over keys and times (no I/O), shared by the simulated platform and the tests that
re-root real evidence. Every certificate carries what Intel's QVL requires of PCK-infrastructure
certificates: basic constraints, key usage, subject and authority key identifiers and, except on the
leaf-less root path, CRL distribution points.
"""

from __future__ import annotations

from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.x509.oid import NameOID

from fedattest import certificates
from fedattest.certificates import new_key as new_key  # noqa: PLC0414 - re-exported (mypy strict) for the platform and tests
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID


def name(common_name: str, organization: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization), x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    )


def sign_raw(key: ec.EllipticCurvePrivateKey, data: bytes) -> bytes:
    """ECDSA-P256-SHA256 over ``data`` as DCAP carries it: r || s, 32 bytes each, big-endian."""
    r, s = utils.decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def raw_public_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    """The 64-byte X || Y encoding DCAP uses for the attestation key."""
    point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
    return point[1:]


def issue_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    crl_url: str | None = None,
    serial: int | None = None,
    sgx_extension: bytes | None = None,
) -> x509.Certificate:
    """Issue a PCK-infrastructure certificate (:func:`fedattest.certificates.issue_certificate`) with, when
    given, a CRL distribution point and the SGX extension; ``issuer=None`` makes it self-signed."""
    extensions: list[tuple[x509.ExtensionType, bool]] = []
    if crl_url is not None:
        point = x509.DistributionPoint([x509.UniformResourceIdentifier(crl_url)], None, None, None)
        extensions.append((x509.CRLDistributionPoints([point]), False))
    if sgx_extension is not None:
        extensions.append((x509.UnrecognizedExtension(x509.ObjectIdentifier(SGX_EXTENSION_OID), sgx_extension), False))
    return certificates.issue_certificate(
        subject=subject, public_key=public_key, issuer=issuer, issuer_key=issuer_key, not_before=not_before,
        not_after=not_after, ca=ca, serial=serial, extensions=extensions,
    )  # fmt: skip


def issue_crl(
    *,
    issuer: x509.Certificate,
    issuer_key: ec.EllipticCurvePrivateKey,
    revoked_serials: list[int],
    this_update: datetime,
    next_update: datetime,
    number: int = 1,
) -> bytes:
    """A DER CRL with a CRL number and authority key identifier (Intel's QVL and dcap-qvl expect both)."""
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(issuer.subject)
        .last_update(this_update)
        .next_update(next_update)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for serial in revoked_serials:
        entry = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(this_update).build()
        builder = builder.add_revoked_certificate(entry)
    return builder.sign(issuer_key, hashes.SHA256()).public_bytes(serialization.Encoding.DER)


def pem(*certs: x509.Certificate) -> str:
    """Certificates as one PEM string, in the order given (leaf first for issuer chains)."""
    return "".join(c.public_bytes(serialization.Encoding.PEM).decode() for c in certs)
