"""X.509 certificate-chain and CRL checks for DCAP collateral and PCK chains.

DCAP chains have a fixed, short shape (root -> [PCK CA] -> leaf), so we check them directly instead of
through a general path builder: ``cryptography``'s web-PKI verifier needs SANs and EKUs that Intel's
certificates do not carry. Time-independent checks (names, signatures, CA constraints, revocation)
are separate from the validity windows, so a verifier can cache the former and re-check the latter at
every verification time.
"""

from __future__ import annotations

import binascii
import re
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, utils
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.errors import FormatError, VerificationError
from fedattest.sgx import der


@dataclass(frozen=True)
class Window:
    """A validity window that must contain the verification time."""

    what: str
    step: str
    not_before: datetime
    not_after: datetime

    def check(self, at: datetime) -> None:
        if at < self.not_before:
            raise VerificationError(
                self.step,
                f"{self.what} is not yet valid at {at:%Y-%m-%dT%H:%M:%SZ} (valid from {self.not_before:%Y-%m-%dT%H:%M:%SZ})",
            )
        if at > self.not_after:
            raise VerificationError(
                self.step,
                f"{self.what} expired at {self.not_after:%Y-%m-%dT%H:%M:%SZ} (verification time {at:%Y-%m-%dT%H:%M:%SZ})",
            )


def cert_window(cert: x509.Certificate, what: str, step: str) -> Window:
    return Window(what, step, cert.not_valid_before_utc, cert.not_valid_after_utc)


def crl_window(crl: x509.CertificateRevocationList, what: str, step: str) -> Window:
    next_update = crl.next_update_utc
    if next_update is None:
        raise VerificationError(step, f"{what} has no nextUpdate")
    return Window(what, step, crl.last_update_utc, next_update)


DECODED_CACHE_LIMIT = 256


class LoadedCert(NamedTuple):
    """A certificate and the DER it was loaded from. Checks key their caches by the DER, which is what
    identifies a certificate: ``public_bytes`` re-encodes the whole certificate at every call, and
    ``Certificate.__hash__``/``__eq__`` walk its parsed structure, each costing several microseconds."""

    cert: x509.Certificate
    der: bytes


def load_pem_chain(
    pem: str | bytes, what: str, step: str, decoded: dict[bytes, x509.Certificate] | None = None
) -> list[x509.Certificate]:
    """Certificates from a PEM chain, each fully decoded (:func:`decode_fully`). ``decoded`` maps DER to
    certificates already decoded (the trust root, certificates of other chains in the same collateral):
    those are reused instead of decoded again, and new ones are added to it."""
    return [loaded.cert for loaded in load_pem_chain_der(pem, what, step, decoded)]


def load_pem_chain_der(
    pem: str | bytes, what: str, step: str, decoded: dict[bytes, x509.Certificate] | None = None
) -> list[LoadedCert]:
    """:func:`load_pem_chain`, with each certificate's DER."""
    data = pem.encode() if isinstance(pem, str) else pem
    ders = _plain_pem_ders(data)
    known = decoded if decoded is not None else {}
    loaded: list[tuple[bytes, x509.Certificate | None]]
    try:
        if ders is None:
            loaded = [(cert.public_bytes(Encoding.DER), cert) for cert in x509.load_pem_x509_certificates(data)]
        else:
            # Certificates already decoded are not even loaded again.
            loaded = [(raw, known.get(raw) or x509.load_der_x509_certificate(raw)) for raw in ders]
    except (ValueError, x509.InvalidVersion) as exc:
        raise VerificationError(step, f"{what} is not a valid PEM certificate chain: {exc}") from None
    out = []
    for i, (raw, cert) in enumerate(loaded):
        seen = known.get(raw)
        if seen is None:
            assert cert is not None
            decode_fully(cert, f"{what}, certificate {i + 1}", step, raw)
            seen = cert
            if len(known) < DECODED_CACHE_LIMIT:  # bounded: one collateral bundle serves many platforms
                known[raw] = cert
        out.append(LoadedCert(seen, raw))
    return out


# One certificate in the layout every DCAP source uses (Intel's PCS and PCCS, the QE's certification data):
# BEGIN line, non-empty base64 lines, END line, each ended by a newline (the last one's optional). No blank
# line: cryptography's reader takes what comes before one for RFC 1421 headers.
_PEM_CERTIFICATE = re.compile(rb"-----BEGIN CERTIFICATE-----\n((?:[A-Za-z0-9+/=]+\n)+)-----END CERTIFICATE-----\n?")


def _plain_pem_ders(data: bytes) -> list[bytes] | None:
    """The DER of each certificate when ``data`` is nothing but certificates in the plain layout above,
    in canonical base64; otherwise None, and ``cryptography``'s PEM reader decides (anything else: other
    labels, text between blocks, CRLF, non-canonical base64). On the plain layout both readers find the
    same blocks and the same bytes, and decoding here lets each certificate be loaded from the DER we
    keep, instead of re-encoding it (``public_bytes``) to learn its DER."""
    ders = []
    pos = 0
    while pos < len(data):
        match = _PEM_CERTIFICATE.match(data, pos)
        if match is None:
            return None
        body = match.group(1).replace(b"\n", b"")
        try:
            raw = binascii.a2b_base64(body, strict_mode=True)
        except binascii.Error:
            return None
        # Only the one canonical encoding: cryptography's reader refuses non-zero trailing bits, which
        # a2b_base64 would ignore.
        if binascii.b2a_base64(raw, newline=False) != body:
            return None
        ders.append(raw)
        pos = match.end()
    return ders or None


def decode_fully(cert: x509.Certificate, what: str, step: str, der: bytes | None = None) -> None:
    """cryptography decodes names, validity and extensions on first access; decode them now, so a
    malformed field is a verification error here rather than a ValueError deep inside a later check.
    ``der`` is the encoding ``cert`` was loaded from, when the caller has it (saves re-encoding it)."""
    try:
        _ = (cert.subject, cert.issuer, cert.not_valid_before_utc, cert.not_valid_after_utc, cert.serial_number)
        _ = cert.extensions
        cert.public_key()
        signature = cert.signature
    except Exception as exc:
        # Decoding attacker-supplied DER: cryptography signals bad input with several exception types
        # (ValueError, InvalidVersion, DuplicateExtension, UnsupportedAlgorithm, ...). Any of them means
        # the certificate is malformed, and nothing but decoding runs inside this block.
        raise VerificationError(step, f"{what} is malformed: {exc}") from None
    check_signed_der(der if der is not None else cert.public_bytes(Encoding.DER), signature, what, step)


def check_signed_der(raw: bytes, signature: bytes, what: str, step: str) -> None:
    """The outer layer of a certificate or CRL that ``cryptography`` loaded from ``raw`` is strict DER:
    SEQUENCE {tbs, algorithm, BIT STRING} with no unused bits, holding an ECDSA signature (``signature``,
    the object's ``.signature``) that is itself minimal DER.

    The outer layer is not covered by the signature, and OpenSSL tolerates some non-canonical forms of
    it (a non-zero unused-bits count, for one). Refusing them means each signed object has exactly one
    accepted encoding, so nobody can make a "different" certificate or CRL that still verifies.

    ``cryptography``'s DER parser already refuses, at load, any other outer shape, a non-SEQUENCE tbs or
    algorithm, a non-BIT STRING signature, non-minimal or indefinite lengths and trailing bytes (tests
    in ``tests/test_dcap_verify.py`` pin this). Two things it accepts are checked here: a BIT STRING
    that declares unused bits (``.signature`` is the same bytes either way, so the encoding must end
    with exactly ``03 len 00 || signature``), and a signature that is not a minimal-DER SEQUENCE of two
    positive INTEGERs (OpenSSL refuses that too, but only when verifying, with no reason given)."""
    try:
        if not raw.endswith(b"\x03" + der.encode_length(len(signature) + 1) + b"\x00" + signature):
            raise FormatError(what, "signature BIT STRING declares unused bits")
        sig = der.read_single(signature, what)
        ints = der.read_all(sig.value, what)
        if sig.tag != der.SEQUENCE or len(ints) != 2:
            raise FormatError(what, "signature is not an ECDSA SEQUENCE { r, s }")
        for value in ints:
            if der.decode_int(value, what) <= 0:
                raise FormatError(what, "ECDSA signature value out of range")
    except FormatError as exc:
        raise VerificationError(step, f"{what} is not strict DER: {exc.detail}") from None


def load_crl(raw: bytes, what: str, step: str) -> tuple[x509.CertificateRevocationList, x509.Name]:
    """The CRL and its issuer name: each ``crl.issuer`` builds a new ``x509.Name`` (~10 µs), so callers
    keep this one."""
    try:
        crl = x509.load_der_x509_crl(raw)
        # Decoded lazily by cryptography: force it, so malformed fields fail here (see decode_fully).
        # Revoked entries are decoded when looked up (check_not_revoked), after the CRL's signature is checked.
        issuer = crl.issuer
        _ = (crl.last_update_utc, crl.next_update_utc, crl.extensions)
        signature = crl.signature
    except Exception as exc:  # any decoding failure of attacker-supplied DER (see decode_fully)
        raise VerificationError(step, f"{what} is not a valid DER CRL: {exc}") from None
    check_signed_der(raw, signature, what, step)
    return crl, issuer


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return bool(bc.ca)


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def check_issued_by(cert: x509.Certificate, issuer: x509.Certificate, what: str, step: str) -> None:
    """``cert`` names ``issuer`` as its issuer, is signed by its key, and ``issuer`` may sign certificates."""
    if not _is_ca(issuer):
        raise VerificationError(step, f"{what}: issuer {issuer.subject.rfc4514_string()!r} is not a CA (basicConstraints)")
    ku = _key_usage(issuer)
    if ku is not None and not ku.key_cert_sign:
        raise VerificationError(step, f"{what}: issuer {issuer.subject.rfc4514_string()!r} may not sign certificates (keyUsage)")
    try:
        # Checks the issuer name against the issuer's subject, then the signature.
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, ValueError, TypeError) as exc:
        if cert.issuer != issuer.subject:
            detail = f"issuer {cert.issuer.rfc4514_string()!r} is not {issuer.subject.rfc4514_string()!r}"
        else:
            detail = f"signature does not verify under {issuer.subject.rfc4514_string()!r} ({exc or 'invalid signature'})"
        raise VerificationError(step, f"{what}: {detail}") from None


def check_crl_issued_by(
    crl: x509.CertificateRevocationList, issuer: x509.Certificate, what: str, step: str, crl_issuer: x509.Name | None = None
) -> None:
    """``crl`` names ``issuer`` and is signed by its key. Pass ``crl_issuer`` (``crl.issuer``, as
    :func:`load_crl` returns it) to save building it again."""
    name = crl_issuer or crl.issuer
    if name != issuer.subject:
        raise VerificationError(step, f"{what}: issuer {name.rfc4514_string()!r} is not {issuer.subject.rfc4514_string()!r}")
    ku = _key_usage(issuer)
    if ku is not None and not ku.crl_sign:
        raise VerificationError(step, f"{what}: issuer {issuer.subject.rfc4514_string()!r} may not sign CRLs (keyUsage)")
    pub = issuer.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not crl.is_signature_valid(pub):
        raise VerificationError(step, f"{what}: signature does not verify under {issuer.subject.rfc4514_string()!r}")


def check_not_revoked(
    cert: x509.Certificate, crl: x509.CertificateRevocationList, what: str, crl_issuer: x509.Name | None = None
) -> None:
    """``cert`` is not on ``crl``, and ``crl`` is its issuer's CRL. Pass ``crl_issuer`` (``crl.issuer``)
    when calling often: building ``x509.Name`` objects dominates the cost of this check."""
    if (crl_issuer or crl.issuer) != cert.issuer:
        raise VerificationError(
            "revocation", f"{what}: the CRL for it is issued by {crl.issuer.rfc4514_string()!r}, not by its issuer"
        )
    try:
        entry = crl.get_revoked_certificate_by_serial_number(cert.serial_number)
        since = entry.revocation_date_utc if entry is not None else None
    except Exception as exc:  # a malformed entry in attacker-supplied DER (see decode_fully)
        raise VerificationError("revocation", f"{what}: the CRL has a malformed entry: {exc}") from None
    if since is not None:
        raise VerificationError("revocation", f"{what} (serial {cert.serial_number:x}) is revoked since {since:%Y-%m-%d}")


def check_self_signed_root(root: x509.Certificate) -> None:
    check_issued_by(root, root, "trust root", "trust_root")


def ec_public_key(cert: x509.Certificate, what: str, step: str) -> ec.EllipticCurvePublicKey:
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise VerificationError(step, f"{what} does not have a P-256 key")
    return key


def verify_raw_ecdsa(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    """Verify a raw r||s (64-byte) ECDSA-P256-SHA256 signature."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(utils.encode_dss_signature(r, s), data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def raw_p256_key(raw: bytes) -> ec.EllipticCurvePublicKey | None:
    """A P-256 public key from the quote's raw 64-byte x||y, or None if it is not a curve point."""
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b"\x04" + raw)
    except ValueError:
        return None
