"""Re-root real evidence under a test PKI, so every verifier check can be driven to fail on purpose.

The quote signature is made by the platform's attestation key, which no certificate covers: only the
QE report is signed by the PCK key. So a real quote can be moved under a fresh test root by issuing a
new PCK certificate (same SGX extension, new key), re-signing the QE report with it, and re-issuing
and re-signing all collateral. The quote body, attestation key and quote signature stay Intel's.
Tests then edit one thing (a TCB level, the QE identity, a CRL entry, a date) and check that the
verifier rejects at exactly the step that covers it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fedattest.dcap.collateral import Collateral
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID
from fedattest.sgx.quote import CertificationData, EcdsaSignatureData, QeCertification, Quote
from fedattest.tee.sim_pki import issue_certificate, issue_crl, name, new_key, pem, sign_raw

__all__ = ["Rerooted", "TestPki", "pem", "reroot", "sign_raw"]

Json = dict[str, Any]


def _name(cn: str) -> x509.Name:
    return name(cn, "fedattest tests")


@dataclass
class TestPki:
    """A root, a PCK CA, a TCB signer and their CRLs, valid around ``at``."""

    at: datetime
    root_key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    ca_key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    tcb_key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)
    pck_key: ec.EllipticCurvePrivateKey = field(default_factory=new_key)

    def __post_init__(self) -> None:
        self.root = self._cert(_name("Test SGX Root CA"), self.root_key, self.root_key, None, ca=True)
        self.ca = self._cert(_name("Test SGX PCK Processor CA"), self.ca_key, self.root_key, self.root, ca=True)
        self.tcb = self._cert(_name("Test SGX TCB Signing"), self.tcb_key, self.root_key, self.root, ca=False)

    def _cert(
        self,
        subject: x509.Name,
        key: ec.EllipticCurvePrivateKey,
        issuer_key: ec.EllipticCurvePrivateKey,
        issuer: x509.Certificate | None,
        *,
        ca: bool,
        sgx_extension: bytes | None = None,
        serial: int | None = None,
        not_after: datetime | None = None,
    ) -> x509.Certificate:
        return issue_certificate(
            subject=subject,
            public_key=key.public_key(),
            issuer=issuer,
            issuer_key=issuer_key,
            not_before=self.at - timedelta(days=365),
            not_after=not_after or self.at + timedelta(days=3650),
            ca=ca,
            serial=serial,
            sgx_extension=sgx_extension,
        )

    def pck(self, sgx_extension_der: bytes, *, serial: int = 0x5EC7, not_after: datetime | None = None) -> x509.Certificate:
        return self._cert(
            _name("Test SGX PCK Certificate"),
            self.pck_key,
            self.ca_key,
            self.ca,
            ca=False,
            sgx_extension=sgx_extension_der,
            serial=serial,
            not_after=not_after,
        )

    def crl(
        self, issuer: x509.Certificate, key: ec.EllipticCurvePrivateKey, revoked: list[int], *, this: datetime, nxt: datetime
    ) -> bytes:
        return issue_crl(issuer=issuer, issuer_key=key, revoked_serials=revoked, this_update=this, next_update=nxt)


@dataclass
class Rerooted:
    quote: bytes
    collateral: Collateral
    root_der: bytes
    pki: TestPki


def reroot(
    quote: bytes,
    collateral: Collateral,
    at: int,
    *,
    edit_tcb_info: Callable[[Json], Json] | None = None,
    edit_qe_identity: Callable[[Json], Json] | None = None,
    edit_qe_report: Callable[[Any], Any] | None = None,
    revoke_pck: bool = False,
    revoke_ca: bool = False,
    pck_not_after: datetime | None = None,
    crl_window: tuple[datetime, datetime] | None = None,
) -> Rerooted:
    """Move a real quote and its collateral under a fresh test root, applying the given edits."""
    when = datetime.fromtimestamp(at, UTC)
    pki = TestPki(when)
    q = Quote.parse(quote)
    real_pck = x509.load_pem_x509_certificates(q.pck_chain_pem)[0]
    ext_der = real_pck.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value.value
    pck_cert = pki.pck(ext_der, not_after=pck_not_after)

    qe_report = q.signature.qe.qe_report
    if edit_qe_report is not None:
        qe_report = edit_qe_report(qe_report)
    chain_pem = pem(pck_cert, pki.ca, pki.root).encode() + b"\x00"
    qe = QeCertification(
        qe_report=qe_report,
        qe_report_signature=sign_raw(pki.pck_key, qe_report.to_bytes()),
        qe_auth_data=q.signature.qe.qe_auth_data,
        certification_data=CertificationData(5, chain_pem),
    )
    new_quote = replace(q, signature=EcdsaSignatureData(q.signature.quote_signature, q.signature.attestation_key, qe))

    tcb_info = json.loads(collateral.tcb_info)
    qe_identity = json.loads(collateral.qe_identity)
    if edit_tcb_info is not None:
        tcb_info = edit_tcb_info(tcb_info)
    if edit_qe_identity is not None:
        qe_identity = edit_qe_identity(qe_identity)
    tcb_text = json.dumps(tcb_info, separators=(",", ":"))
    qe_text = json.dumps(qe_identity, separators=(",", ":"))
    this, nxt = crl_window or (when - timedelta(days=1), when + timedelta(days=30))
    new_collateral = Collateral(
        pck_crl_issuer_chain=pem(pki.ca, pki.root),
        root_ca_crl=pki.crl(pki.root, pki.root_key, [pki.ca.serial_number] if revoke_ca else [], this=this, nxt=nxt),
        pck_crl=pki.crl(pki.ca, pki.ca_key, [pck_cert.serial_number] if revoke_pck else [], this=this, nxt=nxt),
        tcb_info_issuer_chain=pem(pki.tcb, pki.root),
        tcb_info=tcb_text,
        tcb_info_signature=sign_raw(pki.tcb_key, tcb_text.encode()),
        qe_identity_issuer_chain=pem(pki.tcb, pki.root),
        qe_identity=qe_text,
        qe_identity_signature=sign_raw(pki.tcb_key, qe_text.encode()),
    )
    return Rerooted(new_quote.to_bytes(), new_collateral, pki.root.public_bytes(serialization.Encoding.DER), pki)


def rr(name: str, **edits: Any) -> tuple[Rerooted, int]:
    """Vector ``name`` re-rooted (with ``edits``), and its verification time."""
    from tests.conftest import load_vector

    quote, collateral, case = load_vector(name)
    return reroot(quote, collateral, case["at"], **edits), case["at"]
