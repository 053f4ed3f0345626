"""Claims, report data and certificates: what binds an enclave's keys to its quote, and what the
coordinator issues after attesting it. Pure (no I/O); used by the coordinator and by participants."""

from __future__ import annotations

import base64
import binascii
import hashlib
import ipaddress
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedattest.canonical import CURRENT_VERSION, versioned_json
from fedattest.certificates import issue_certificate
from fedattest.certificates import new_key as new_key  # noqa: PLC0414 - re-exported (mypy strict): callers make keys here
from fedattest.errors import FedattestError
from fedattest.pki.names import TOKEN_SIGNER_URI


class IdentityError(FedattestError):
    """Claims or a CSR that cannot be accepted."""


def spki_sha256(key: ec.EllipticCurvePublicKey | x509.Certificate) -> str:
    pub = key.public_key() if isinstance(key, x509.Certificate) else key
    der = pub.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()


def canonical_claims(claims: dict[str, Any], version: int = CURRENT_VERSION) -> bytes:
    """The signed and hashed form of claims (and of round reports): RFC 8785 canonical JSON; ``version=1`` only
    to verify records written before it (:mod:`fedattest.canonical`)."""
    return versioned_json(claims, version, v1_ascii_only=True)


_CLAIMS_LABEL = {1: b"fedattest-claims-v1\n", 2: b"fedattest-claims-v2\n"}


def claims_report_data(claims: dict[str, Any], version: int = CURRENT_VERSION) -> bytes:
    """Report data for a participant's quote: SHA-256 of a label and its canonical claims, then 32 zero bytes."""
    return hashlib.sha256(_CLAIMS_LABEL[version] + canonical_claims(claims, version)).digest() + bytes(32)


_ENROLMENT_LABEL = {1: b"fedattest-enrolment-v1\n", 2: b"fedattest-enrolment-v2\n"}


def enrolment_message(claims: dict[str, Any], version: int = CURRENT_VERSION) -> bytes:
    """What a member signs to let one enclave activate as it: a label and the enclave's canonical claims (member
    name, fresh coordinator nonce, policy hash, and the hashes of the enclave's keys). The nonce makes it good
    for one activation; the key hashes make it useless to any enclave that does not hold those keys."""
    return _ENROLMENT_LABEL[version] + canonical_claims(claims, version)


REPROVISION_LABEL = b"fedattest-reprovision-v1\n"


def sign_reprovision(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    """An identity's proof that it holds its certificate's key, over fresh claims: ECDSA P-256 SHA-256 (DER,
    base64) over ``"fedattest-reprovision-v1\\n" || RFC 8785 claims``. What re-provisioning under a new policy
    version asks for instead of a new activation."""
    return base64.b64encode(key.sign(REPROVISION_LABEL + canonical_claims(claims), ec.ECDSA(hashes.SHA256()))).decode()


def reprovision_signed_by(cert: x509.Certificate, claims: dict[str, Any], signature_b64: str) -> bool:
    """Whether ``signature_b64`` (:func:`sign_reprovision`) is by the key of ``cert`` over ``claims``."""
    return _signed_by(cert, REPROVISION_LABEL, claims, signature_b64)


def _signed_by(cert: x509.Certificate, label: bytes, claims: dict[str, Any], signature_b64: str) -> bool:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return False
    try:
        key.verify(base64.b64decode(signature_b64, validate=True), label + canonical_claims(claims),
                   ec.ECDSA(hashes.SHA256()))  # fmt: skip
    except (InvalidSignature, ValueError, binascii.Error, FedattestError):
        return False
    return True


# Its own label: a heartbeat signature can never pass for a re-provisioning one (or the reverse).
ALIVE_LABEL = b"fedattest-alive-v1\n"


def sign_alive(key: ec.EllipticCurvePrivateKey, claims: dict[str, Any]) -> str:
    """A running identity's heartbeat: ECDSA P-256 SHA-256 (DER, base64) by its certificate's key over
    ``"fedattest-alive-v1\\n" || RFC 8785 claims`` (claims ``{member, serial, time}``)."""
    return base64.b64encode(key.sign(ALIVE_LABEL + canonical_claims(claims), ec.ECDSA(hashes.SHA256()))).decode()


def alive_signed_by(cert: x509.Certificate, claims: dict[str, Any], signature_b64: str) -> bool:
    """Whether ``signature_b64`` (:func:`sign_alive`) is by the key of ``cert`` over ``claims``."""
    return _signed_by(cert, ALIVE_LABEL, claims, signature_b64)


def sign_enrolment(key: ed25519.Ed25519PrivateKey, claims: dict[str, Any]) -> str:
    """The member's enrolment signature over ``claims``, base64 (the activation request's ``enrolment``)."""
    return base64.b64encode(key.sign(enrolment_message(claims))).decode()


def enrolment_signed_by(public_key_pem: str, claims: dict[str, Any], signature_b64: str, version: int = CURRENT_VERSION) -> bool:
    """Whether ``signature_b64`` is the holder of ``public_key_pem`` (an Ed25519 key) signing ``claims`` (in the
    encoding of record ``version``)."""
    try:
        key = serialization.load_pem_public_key(public_key_pem.encode())
        signature = base64.b64decode(signature_b64, validate=True)
    except (ValueError, TypeError, binascii.Error):
        return False
    if not isinstance(key, ed25519.Ed25519PublicKey):
        return False
    try:
        key.verify(signature, enrolment_message(claims, version))
    except (InvalidSignature, KeyError, FedattestError):
        return False
    return True


def coordinator_report_data(root_public_key_der: bytes, policy_hash: bytes, nonce: bytes) -> bytes:
    """Report data of the coordinator's quote: SHA-256(root CA public key DER || policy hash || nonce)."""
    return hashlib.sha256(root_public_key_der + policy_hash + nonce).digest() + bytes(32)


def make_root_ca(key: ec.EllipticCurvePrivateKey, federation: str, now: datetime) -> x509.Certificate:
    """The coordinator's root CA: self-signed, valid ten years, issuing end-entity certificates only."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"fedattest coordinator root CA ({federation})")])
    return issue_certificate(
        subject=name, public_key=key.public_key(), issuer=None, issuer_key=key, not_before=now - timedelta(minutes=5),
        not_after=now + timedelta(days=3650), ca=True, path_length=0,
    )  # fmt: skip


def names_and_addresses(names: list[str]) -> tuple[list[str], list[str]]:
    """Split the names a server is reached by into DNS names and IP addresses: TLS clients match an address they
    connect to only against an IP address SAN, never against a DNS name SAN spelled the same."""
    dns: list[str] = []
    ips: list[str] = []
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            dns.append(name)
    return dns, ips


def issue_leaf(
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    common_name: str,
    uris: list[str],
    dns_names: list[str],
    ips: list[str],
    now: datetime,
    lifetime: timedelta,
) -> x509.Certificate:
    """A TLS client+server certificate chained to the coordinator's root."""
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
    sans += [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips]
    usage = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH])
    return issue_certificate(
        subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]), public_key=public_key, issuer=ca,
        issuer_key=ca_key, not_before=now - timedelta(minutes=5), not_after=now + lifetime, ca=False,
        extensions=[(usage, False), (x509.SubjectAlternativeName(sans), False)],
    )  # fmt: skip


def issue_token_signer(
    *,
    ca_key: ec.EllipticCurvePrivateKey,
    ca: x509.Certificate,
    public_key: ec.EllipticCurvePublicKey,
    federation: str,
    now: datetime,
) -> x509.Certificate:
    """The certificate of the coordinator's token (and audit log) key, issued by its root: tokens carry it in
    their ``x5c`` header, so a relying party that pinned only the root can check a token offline. Its one URI
    SAN, ``urn:fedattest:<federation>:token-signer``, says what the key is for (and no member URI: it is not
    a member's identity)."""
    return issue_leaf(
        ca_key=ca_key, ca=ca, public_key=public_key, common_name="fedattest token signer",
        uris=[TOKEN_SIGNER_URI.format(federation=federation)], dns_names=[], ips=[], now=now,
        lifetime=timedelta(days=365),
    )  # fmt: skip


def load_csr(pem: str) -> x509.CertificateSigningRequest:
    try:
        csr = x509.load_pem_x509_csr(pem.encode())
    except ValueError:
        raise IdentityError("csr: not a PEM certificate signing request") from None
    if not csr.is_signature_valid:
        raise IdentityError("csr: its signature does not verify (proof of possession failed)")
    key = csr.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
        raise IdentityError("csr: the key must be ECDSA P-256")
    return csr


def make_csr(key: ec.EllipticCurvePrivateKey, member: str) -> str:
    csr = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, member)]))
        .sign(key, hashes.SHA256())
    )
    return csr.public_bytes(serialization.Encoding.PEM).decode()


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)
