"""RA-TLS certificates, compatible with Gramine's (tools/sgx/ra-tls): a certificate over a fresh key that
carries SGX quotes binding that key, so two enclaves can attest each other inside a TLS handshake.

Gramine (v1.8+) puts two extensions in the certificate, and so do we:

- legacy: the raw quote, whose report data is SHA-256(SubjectPublicKeyInfo DER) ‖ 0³². Gramine writes
  this OID with its DER tag and length inside the OID value by mistake (``06 09 2A 86 48 86 F8 4D 8A 39
  06``, i.e. 0.6.9.42.840.113741.1337.6); we write the same bytes so Gramine finds it, and accept the
  intended 1.2.840.113741.1337.6 too.
- TCG DICE tagged evidence, OID 2.23.133.5.4.9: CBOR ``tag 60000 [ bstr quote, bstr claims ]`` where
  claims is the serialized CBOR map ``{"pubkey-hash": bstr(serialized [1 (SHA-256), bstr SHA-256(SPKI)])}``
  and the quote's report data is SHA-256(claims) ‖ 0³².
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedattest.attestation import REPORT_DATA, attest
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError, FormatError
from fedattest.pki import cbor
from fedattest.policy.appraisal import ReferenceValues, Verdict
from fedattest.sgx.quote import Quote
from fedattest.tee.base import TEE

LEGACY_OID_GRAMINE = x509.ObjectIdentifier("0.6.9.42.840.113741.1337.6")  # Gramine's bytes, see above
LEGACY_OID = x509.ObjectIdentifier("1.2.840.113741.1337.6")
DICE_EVIDENCE_OID = x509.ObjectIdentifier("2.23.133.5.4.9")
DICE_TEE_QUOTE_TAG = 60000
SHA256_ALG_ID = 1  # IANA Named Information Hash Algorithm Registry


class RaTlsError(FedattestError):
    """An RA-TLS certificate that cannot be created or does not verify; the message says which check."""


def spki_der(key: ec.EllipticCurvePublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def dice_claims(key: ec.EllipticCurvePublicKey) -> bytes:
    hash_entry = cbor.encode([SHA256_ALG_ID, hashlib.sha256(spki_der(key)).digest()])
    return cbor.encode({"pubkey-hash": hash_entry})


def create_ratls_certificate(
    tee: TEE,
    key: ec.EllipticCurvePrivateKey | None = None,
    *,
    subject_cn: str = "fedattest RA-TLS",
    lifetime: timedelta = timedelta(days=1),
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A self-signed RA-TLS certificate for ``key`` (default: a new P-384 key, as Gramine uses) with both
    evidence extensions, quoted by ``tee``."""
    key = key or ec.generate_private_key(ec.SECP384R1())
    public = key.public_key()
    legacy_quote = tee.quote(hashlib.sha256(spki_der(public)).digest() + bytes(32))
    claims = dice_claims(public)
    dice_quote = tee.quote(hashlib.sha256(claims).digest() + bytes(32))
    evidence = cbor.encode(cbor.Tag(DICE_TEE_QUOTE_TAG, [dice_quote, claims]))
    name = x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, subject_cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedattest")]
    )
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + lifetime)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.UnrecognizedExtension(LEGACY_OID_GRAMINE, legacy_quote), critical=False)
        .add_extension(x509.UnrecognizedExtension(DICE_EVIDENCE_OID, evidence), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _extension(cert: x509.Certificate, *oids: x509.ObjectIdentifier) -> bytes | None:
    for oid in oids:
        try:
            value = cert.extensions.get_extension_for_oid(oid).value
        except x509.ExtensionNotFound:
            continue
        if isinstance(value, x509.UnrecognizedExtension):
            return value.value
    return None


def _dice_quote(evidence: bytes, key: ec.EllipticCurvePublicKey) -> tuple[bytes, bytes]:
    """(quote, expected report data) from the DICE extension, after checking its claims bind ``key``."""
    try:
        item = cbor.decode(evidence, "ratls.dice_evidence")
        if not isinstance(item, cbor.Tag) or item.number != DICE_TEE_QUOTE_TAG:
            raise FormatError("ratls.dice_evidence", f"expected CBOR tag {DICE_TEE_QUOTE_TAG}")
        if not (isinstance(item.value, list) and len(item.value) == 2 and all(isinstance(v, bytes) for v in item.value)):
            raise FormatError("ratls.dice_evidence", "expected [bstr quote, bstr claims]")
        quote, claims = item.value
        claim_map = cbor.decode(claims, "ratls.dice_claims")
        entry = (
            cbor.decode(claim_map["pubkey-hash"], "ratls.pubkey_hash")
            if isinstance(claim_map, dict) and isinstance(claim_map.get("pubkey-hash"), bytes)
            else None
        )
    except FormatError as exc:
        raise RaTlsError(f"DICE evidence is malformed: {exc}") from None
    if not (isinstance(entry, list) and len(entry) == 2 and entry[0] == SHA256_ALG_ID and isinstance(entry[1], bytes)):
        raise RaTlsError("DICE claims have no SHA-256 pubkey-hash")
    if entry[1] != hashlib.sha256(spki_der(key)).digest():
        raise RaTlsError("DICE claims bind another public key than the certificate's")
    return quote, hashlib.sha256(claims).digest() + bytes(32)


def verify_ratls_certificate(
    certificate: x509.Certificate | bytes,
    *,
    verifier: QuoteVerifier,
    collateral_for: Callable[[Quote], Collateral],
    reference: ReferenceValues,
    at: datetime | None = None,
) -> tuple[VerifiedQuote, Verdict]:
    """Verify an RA-TLS certificate: its own signature and validity, that its evidence binds its key
    (DICE evidence preferred; the legacy extension must then agree), the quote (DCAP) and the appraisal.
    Raises :class:`RaTlsError` for the certificate's own problems; the Verdict carries appraisal reasons."""
    cert = certificate if isinstance(certificate, x509.Certificate) else _load(certificate)
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise RaTlsError("the certificate key must be an EC key")
    when = at or datetime.now(UTC)
    if not cert.not_valid_before_utc <= when <= cert.not_valid_after_utc:
        raise RaTlsError(f"the certificate is not valid at {when:%Y-%m-%dT%H:%M:%SZ}")
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        raise RaTlsError("the certificate's self-signature does not verify") from None
    candidates: list[tuple[str, bytes, bytes]] = []
    dice = _extension(cert, DICE_EVIDENCE_OID)
    if dice is not None:
        candidates.append(("DICE", *_dice_quote(dice, key)))
    legacy = _extension(cert, LEGACY_OID_GRAMINE, LEGACY_OID)
    if legacy is not None:
        candidates.append(("legacy", legacy, hashlib.sha256(spki_der(key)).digest() + bytes(32)))
    if not candidates:
        raise RaTlsError("the certificate carries no SGX evidence (neither the DICE nor the legacy RA-TLS extension)")
    results: list[VerifiedQuote] = []
    verdicts: list[Verdict] = []
    for kind, raw, expected in candidates:
        outcome = attest(raw, collateral=collateral_for, verifier=verifier, reference=reference, expected_report_data=expected,
                         at=when)  # fmt: skip
        if outcome.evidence_failed:
            raise RaTlsError(f"{kind} evidence: the quote does not verify: {outcome.reason}")
        if outcome.step == REPORT_DATA:
            raise RaTlsError(f"{kind} evidence: the quote's report data does not bind the certificate's key")
        assert outcome.verified is not None and outcome.verdict is not None
        results.append(outcome.verified)
        verdicts.append(outcome.verdict)
    first = results[0]
    for other in results[1:]:
        if (other.mr_enclave, other.mr_signer, other.isv_prod_id, other.isv_svn) != (
            first.mr_enclave,
            first.mr_signer,
            first.isv_prod_id,
            first.isv_svn,
        ):
            raise RaTlsError("the DICE and legacy quotes come from different enclaves")
    return first, verdicts[0]


def _load(data: bytes) -> x509.Certificate:
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            return x509.load_pem_x509_certificate(data)
        return x509.load_der_x509_certificate(data)
    except ValueError:
        raise RaTlsError("not an X.509 certificate") from None
