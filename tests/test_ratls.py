"""RA-TLS certificates in Gramine's format: created in the simulated TEE, verified, and refused for
every broken binding."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FormatError
from fedattest.pki import cbor
from fedattest.pki.ratls import (
    DICE_EVIDENCE_OID,
    LEGACY_OID,
    LEGACY_OID_GRAMINE,
    RaTlsError,
    create_ratls_certificate,
    dice_claims,
    spki_der,
    verify_ratls_certificate,
)
from fedattest.policy.appraisal import ReferenceValues
from fedattest.tee import SimulatedPlatform, WorkloadIdentity

MRENCLAVE = hashlib.sha256(b"ra-tls enclave").digest()
IDENTITY = WorkloadIdentity(MRENCLAVE, hashlib.sha256(b"signer").digest())
REFERENCE = ReferenceValues(mrenclave=frozenset({MRENCLAVE}), allow_simulation=True)


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> SimulatedPlatform:
    return SimulatedPlatform.create(tmp_path_factory.mktemp("ratls") / "p")


def check(platform: SimulatedPlatform, cert: x509.Certificate | bytes, reference: ReferenceValues = REFERENCE) -> object:
    return verify_ratls_certificate(
        cert, verifier=QuoteVerifier(platform.root_ca), collateral_for=lambda q: platform.collateral(), reference=reference
    )


def rebuild(
    cert: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    extensions: dict[x509.ObjectIdentifier, bytes],
    public: ec.EllipticCurvePublicKey | None = None,
) -> x509.Certificate:
    """The same certificate with other evidence extensions (re-signed, so only the evidence differs)."""
    builder = (
        x509.CertificateBuilder().subject_name(cert.subject).issuer_name(cert.issuer).public_key(public or key.public_key())
        .serial_number(cert.serial_number).not_valid_before(cert.not_valid_before_utc).not_valid_after(cert.not_valid_after_utc)
    )  # fmt: skip
    for oid, value in extensions.items():
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, value), critical=False)
    return builder.sign(key, hashes.SHA256())


def evidence(cert: x509.Certificate) -> dict[x509.ObjectIdentifier, bytes]:
    out = {}
    for ext in cert.extensions:
        if isinstance(ext.value, x509.UnrecognizedExtension):
            out[ext.oid] = ext.value.value
    return out


def test_create_and_verify(platform: SimulatedPlatform) -> None:
    cert, key = create_ratls_certificate(platform.tee(IDENTITY))
    assert isinstance(key.curve, ec.SECP384R1)
    verified, verdict = check(platform, cert.public_bytes(serialization.Encoding.PEM))  # type: ignore[misc]
    assert verified.mr_enclave == MRENCLAVE and verdict.accepted
    ext = evidence(cert)
    # Gramine's legacy OID bytes (with the stray tag and length) and the DICE layout.
    assert LEGACY_OID_GRAMINE.dotted_string == "0.6.9.42.840.113741.1337.6"
    assert cert.extensions.get_extension_for_oid(LEGACY_OID_GRAMINE).value.oid.dotted_string.endswith("1337.6")
    tagged = cbor.decode(ext[DICE_EVIDENCE_OID])
    assert isinstance(tagged, cbor.Tag) and tagged.number == 60000
    _, claims = tagged.value
    assert claims == dice_claims(key.public_key())
    assert cbor.decode(cbor.decode(claims)["pubkey-hash"]) == [1, hashlib.sha256(spki_der(key.public_key())).digest()]


def test_only_one_kind_of_evidence_is_enough(platform: SimulatedPlatform) -> None:
    cert, key = create_ratls_certificate(platform.tee(IDENTITY))
    ext = evidence(cert)
    check(platform, rebuild(cert, key, {DICE_EVIDENCE_OID: ext[DICE_EVIDENCE_OID]}))
    check(platform, rebuild(cert, key, {LEGACY_OID_GRAMINE: ext[LEGACY_OID_GRAMINE]}))
    check(platform, rebuild(cert, key, {LEGACY_OID: ext[LEGACY_OID_GRAMINE]}))  # the intended OID, too


def test_evidence_for_another_key_is_refused(platform: SimulatedPlatform) -> None:
    cert, _ = create_ratls_certificate(platform.tee(IDENTITY))
    other = ec.generate_private_key(ec.SECP384R1())
    ext = evidence(cert)
    with pytest.raises(RaTlsError, match="DICE claims bind another public key"):
        check(platform, rebuild(cert, other, {DICE_EVIDENCE_OID: ext[DICE_EVIDENCE_OID]}))
    with pytest.raises(RaTlsError, match="legacy evidence: the quote's report data does not bind"):
        check(platform, rebuild(cert, other, {LEGACY_OID_GRAMINE: ext[LEGACY_OID_GRAMINE]}))


def test_claims_changed_after_quoting_are_refused(platform: SimulatedPlatform) -> None:
    cert, key = create_ratls_certificate(platform.tee(IDENTITY))
    quote, _ = cbor.decode(evidence(cert)[DICE_EVIDENCE_OID]).value
    forged_claims = cbor.encode(
        {"pubkey-hash": cbor.encode([1, hashlib.sha256(spki_der(key.public_key())).digest()]), "extra": 1}
    )
    forged = cbor.encode(cbor.Tag(60000, [quote, forged_claims]))
    with pytest.raises(RaTlsError, match="DICE evidence: the quote's report data does not bind"):
        check(platform, rebuild(cert, key, {DICE_EVIDENCE_OID: forged}))


def test_tampered_quote_wrong_enclave_and_mismatched_quotes(platform: SimulatedPlatform) -> None:
    cert, key = create_ratls_certificate(platform.tee(IDENTITY))
    legacy = bytearray(evidence(cert)[LEGACY_OID_GRAMINE])
    legacy[100] ^= 1  # inside the report body: the quote signature breaks
    with pytest.raises(RaTlsError, match="legacy evidence: the quote does not verify: quote_signature"):
        check(platform, rebuild(cert, key, {LEGACY_OID_GRAMINE: bytes(legacy)}))
    _, verdict = check(platform, cert, ReferenceValues(mrenclave=frozenset({bytes(32)}), allow_simulation=True))  # type: ignore[misc]
    assert not verdict.accepted and "MRENCLAVE" in verdict.reason
    _, strict = check(platform, cert, ReferenceValues(mrenclave=frozenset({MRENCLAVE})))  # type: ignore[misc]
    assert not strict.accepted and "simulated" in strict.reason
    other_cert, _ = create_ratls_certificate(platform.tee(WorkloadIdentity(bytes(32), bytes(32))), key)
    mixed = {DICE_EVIDENCE_OID: evidence(cert)[DICE_EVIDENCE_OID], LEGACY_OID_GRAMINE: evidence(other_cert)[LEGACY_OID_GRAMINE]}
    with pytest.raises(RaTlsError, match="different enclaves"):
        check(platform, rebuild(cert, key, mixed))


def test_certificate_problems(platform: SimulatedPlatform, tmp_path: Path) -> None:
    cert, key = create_ratls_certificate(platform.tee(IDENTITY), lifetime=timedelta(hours=1))
    with pytest.raises(RaTlsError, match="not valid at"):
        verify_ratls_certificate(cert, verifier=QuoteVerifier(platform.root_ca), collateral_for=lambda q: platform.collateral(),
                                 reference=REFERENCE, at=datetime.now(UTC) + timedelta(hours=2))  # fmt: skip
    with pytest.raises(RaTlsError, match="no SGX evidence"):
        check(platform, rebuild(cert, key, {}))
    other = ec.generate_private_key(ec.SECP384R1())
    foreign = rebuild(cert, other, evidence(cert), public=key.public_key())  # signed by a key that is not its own
    with pytest.raises(RaTlsError, match="self-signature"):
        check(platform, foreign)
    with pytest.raises(RaTlsError, match=r"not an X\.509 certificate"):
        check(platform, b"garbage")
    with pytest.raises(RaTlsError, match="DICE evidence is malformed"):
        check(platform, rebuild(cert, key, {DICE_EVIDENCE_OID: b"\xff"}))


@pytest.mark.parametrize(
    "data", [b"\x18\x05", b"\x59\x00\x01x", b"\x5f", b"\x82\x01", b"\xa2\x61a\x01\x61a\x02", b"\x01\x02", b"\xf5"]
)
def test_cbor_is_strict(data: bytes) -> None:
    with pytest.raises(FormatError):
        cbor.decode(data)


def test_cbor_round_trip() -> None:
    value = cbor.Tag(60000, [b"q" * 300, {"pubkey-hash": b"\x82\x01\x40", "n": 70000}, "text", 2**40])
    assert cbor.decode(cbor.encode(value)) == value
