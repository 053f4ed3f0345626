"""Building X.509 certificates: the one place that fills in ``cryptography``'s builder for every certificate
fedattest issues (the coordinator's root, members' and the token signer's certificates, and the simulated
platform's PCK infrastructure). Pure: keys and times in, a signed certificate out.

Every certificate gets basic constraints and key usage (both critical), a subject key identifier and an
authority key identifier (RFC 5280 4.2.1.1-2; Intel's QVL requires them of PCK certificates), and is signed
with ECDSA-SHA256. A CA may sign certificates and CRLs; a leaf may sign (TLS, tokens) and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

P256 = ec.SECP256R1()


def new_key() -> ec.EllipticCurvePrivateKey:
    """A fresh P-256 key: the curve of every certificate fedattest issues and of DCAP."""
    return ec.generate_private_key(P256)


def issue_certificate(
    *,
    subject: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    not_before: datetime,
    not_after: datetime,
    ca: bool,
    path_length: int | None = None,
    serial: int | None = None,
    extensions: Sequence[tuple[x509.ExtensionType, bool]] = (),
) -> x509.Certificate:
    """Issue a certificate; ``issuer=None`` makes it self-signed (``issuer_key`` must match ``public_key``).
    ``extensions`` are added after the standard ones, as (extension, critical) pairs."""
    key_usage = x509.KeyUsage(
        digital_signature=not ca,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer.subject if issuer is not None else subject)
        .public_key(public_key)
        .serial_number(serial if serial is not None else x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=path_length if ca else None), critical=True)
        .add_extension(key_usage, critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
    )
    for extension, critical in extensions:
        builder = builder.add_extension(extension, critical=critical)
    return builder.sign(issuer_key, hashes.SHA256())
