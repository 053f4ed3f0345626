"""DCAP quote verification, following the steps and order of Intel's Quote Verification Library.

1. trust root and root CA CRL; 2. PCK CRL and its issuer chain; 3. PCK certificate chain from the
quote (names, signatures, validity, revocation) and its SGX extension; 4. TCB info (signing chain,
signature over the exact signed text, validity window, FMSPC/PCEID/TEE type match); 5. QE identity
(likewise); 6. QE report signature by the PCK key; 7. QE report data binds the attestation key and QE
auth data; 8. QE report against the QE identity; 9. quote signature by the attestation key; 10. TCB
level selection and status convergence (``fedattest.dcap.tcb``).

Collateral-level work (CRL, TCB info and QE identity signatures and chains) and PCK-chain work are
cached by content hash in a :class:`QuoteVerifier`; validity windows are re-checked against ``at`` at
every call, so a cache hit never extends the life of expired evidence. Every rejection raises
:class:`~fedattest.errors.VerificationError` whose ``step`` names the failing step (or
:class:`~fedattest.errors.FormatError` when the quote does not parse).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property, lru_cache

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap import chain
from fedattest.dcap.chain import LoadedCert, Window
from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.tcb import EnclaveIdentity, TcbInfo, evaluate_tcb
from fedattest.dcap.trust import intel_sgx_root_ca_with_der, is_intel_root_sha256, load_trust_root
from fedattest.errors import FedattestError, FormatError, VerificationError
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension
from fedattest.sgx.quote import ECDSA_SIGNATURE_SIZE, INTEL_QE_VENDOR_ID, Quote, ReportBody, TdReport, TeeType

_COLLATERAL_CACHE_SIZE = 64
_EVIDENCE_CACHE_SIZE = 4096


def to_datetime(at: datetime | int | float | None) -> datetime:
    """Verification time: ``None`` is now; numbers are Unix seconds; datetimes must be timezone-aware."""
    if at is None:
        return datetime.now(UTC)
    if isinstance(at, datetime):
        if at.tzinfo is None:
            raise FedattestError("verification time must be timezone-aware (e.g. 2025-06-19T12:00:00Z)")
        return at.astimezone(UTC)
    if isinstance(at, bool) or not isinstance(at, int | float):
        raise FedattestError("verification time must be a datetime or Unix seconds")
    try:
        return datetime.fromtimestamp(at, UTC)
    except (OverflowError, ValueError, OSError):
        raise FedattestError(f"verification time {at!r} is not a representable Unix time") from None


class _CheckedCollateral:
    """One collateral bundle checked against one trust root. Each part is computed on first use, in
    QVL order, and kept; a part that failed is recomputed (and fails again) on the next use."""

    def __init__(self, collateral: Collateral, root: x509.Certificate, root_der: bytes) -> None:
        self.collateral = collateral
        self.root = root
        self.root_der = root_der
        # (certificate DER, issuer DER) pairs already verified: the TCB signing certificate signs both
        # TCB info and QE identity, and the PCK CA appears in the PCK CRL chain and in every PCK chain.
        # Keyed by DER bytes, which hash once and compare by memcmp (Certificate.__hash__ walks the
        # parsed certificate at every call).
        self._issued: set[tuple[bytes, bytes]] = set()
        self._crl_signers: set[bytes] = set()
        # Certificates decoded so far, by DER: the root appears in every chain, the PCK CA in two.
        self.decoded: dict[bytes, x509.Certificate] = {root_der: root}
        self.root_crl_issuer: x509.Name | None = None  # set with root_crl
        self.pck_crl_issuer: x509.Name | None = None  # set with pck_crl

    def issued_by(self, cert: LoadedCert, issuer: LoadedCert, what: str, step: str) -> None:
        key = (cert.der, issuer.der)
        if key not in self._issued:
            chain.check_issued_by(cert.cert, issuer.cert, what, step)
            self._issued.add(key)

    @cached_property
    def root_crl(self) -> tuple[x509.CertificateRevocationList, tuple[Window, ...]]:
        step = "root_ca_crl"
        crl, issuer = chain.load_crl(self.collateral.root_ca_crl, "root CA CRL", step)
        chain.check_crl_issued_by(crl, self.root, "root CA CRL", step, issuer)
        self.root_crl_issuer = issuer
        return crl, (chain.crl_window(crl, "root CA CRL", step),)

    def _issuer_chain(self, pem: str, what: str, step: str) -> tuple[LoadedCert, tuple[Window, ...]]:
        """A two-certificate issuer chain [signer, root] ending at the trust root; the signer must not be
        revoked by the root CA CRL."""
        certs = chain.load_pem_chain_der(pem, what, step, self.decoded)
        if len(certs) != 2:
            raise VerificationError(step, f"{what} must hold 2 certificates (signer, root CA), found {len(certs)}")
        signer, root = certs
        if root.der != self.root_der:  # byte-identical to the trust root
            raise VerificationError(step, f"{what} does not end at the trust root ({root.cert.subject.rfc4514_string()!r})")
        self.issued_by(signer, root, f"{what}: signer", step)
        crl, _ = self.root_crl
        chain.check_not_revoked(signer.cert, crl, f"{what}: signer", self.root_crl_issuer)
        return signer, (chain.cert_window(signer.cert, f"{what}: signing certificate", step),)

    @cached_property
    def pck_crl(self) -> tuple[x509.CertificateRevocationList, tuple[Window, ...]]:
        step = "pck_crl"
        signer, windows = self._issuer_chain(self.collateral.pck_crl_issuer_chain, "PCK CRL issuer chain", step)
        crl, issuer = chain.load_crl(self.collateral.pck_crl, "PCK CRL", step)
        chain.check_crl_issued_by(crl, signer.cert, "PCK CRL", step, issuer)
        self._crl_signers.add(signer.der)
        self.pck_crl_issuer = issuer
        return crl, (*windows, chain.crl_window(crl, "PCK CRL", step))

    def check_pck_crl_signer(self, ca: LoadedCert) -> None:
        """The PCK CRL must come from this PCK CA (processor vs platform CA), not just any CA."""
        crl, _ = self.pck_crl
        if ca.der not in self._crl_signers:
            chain.check_crl_issued_by(crl, ca.cert, "PCK CRL (for this quote's PCK CA)", "pck_crl", self.pck_crl_issuer)
            self._crl_signers.add(ca.der)

    def _signed_document(self, pem: str, text: str, signature: bytes, what: str, step: str) -> tuple[Window, ...]:
        signer, windows = self._issuer_chain(pem, f"{what} issuer chain", f"{step}_chain")
        key = chain.ec_public_key(signer.cert, f"{what} signing certificate", f"{step}_chain")
        if not chain.verify_raw_ecdsa(key, signature, text.encode()):
            raise VerificationError(f"{step}_signature", f"{what} signature does not verify over its signed text")
        return windows

    @cached_property
    def tcb_info(self) -> tuple[TcbInfo, tuple[Window, ...]]:
        c = self.collateral
        windows = self._signed_document(c.tcb_info_issuer_chain, c.tcb_info, c.tcb_info_signature, "TCB info", "tcb_info")
        info = TcbInfo.parse(c.tcb_info)
        return info, (*windows, Window("TCB info", "tcb_info_validity", info.issue_date, info.next_update))

    @cached_property
    def qe_identity(self) -> tuple[EnclaveIdentity, tuple[Window, ...]]:
        c = self.collateral
        windows = self._signed_document(
            c.qe_identity_issuer_chain, c.qe_identity, c.qe_identity_signature, "QE identity", "qe_identity"
        )
        ident = EnclaveIdentity.parse(c.qe_identity)
        return ident, (*windows, Window("QE identity", "qe_identity_validity", ident.issue_date, ident.next_update))


@dataclass(frozen=True)
class _CheckedEvidence:
    """What verifying a quote's certification part established: the PCK chain and its SGX extension,
    the QE report (signed by the PCK key, binding the attestation key, matching the QE identity) and the
    attestation key. A function of the signature data (less the quote signature) and the collateral
    only, so it is cached under their hashes; its validity windows are re-checked on every use."""

    extension: PckExtension
    attestation_key: ec.EllipticCurvePublicKey
    windows: tuple[Window, ...]


def _check_pck_chain(
    pem: bytes, checked: _CheckedCollateral
) -> tuple[ec.EllipticCurvePublicKey, PckExtension, tuple[Window, ...]]:
    step = "pck_chain"
    certs = chain.load_pem_chain_der(pem, "PCK certificate chain in the quote", step, checked.decoded)
    if len(certs) != 3:
        raise VerificationError(
            step, f"PCK certificate chain must hold 3 certificates (PCK, PCK CA, root CA), found {len(certs)}"
        )
    loaded_leaf, loaded_ca, loaded_root = certs
    leaf, ca = loaded_leaf.cert, loaded_ca.cert
    if loaded_root.der != checked.root_der:  # byte-identical to the trust root
        raise VerificationError(
            step, f"PCK certificate chain does not end at the trust root ({loaded_root.cert.subject.rfc4514_string()!r})"
        )
    checked.issued_by(loaded_ca, loaded_root, "PCK CA certificate", step)
    checked.issued_by(loaded_leaf, loaded_ca, "PCK certificate", step)
    root_crl, _ = checked.root_crl
    pck_crl, _ = checked.pck_crl
    chain.check_not_revoked(ca, root_crl, "PCK CA certificate", checked.root_crl_issuer)
    checked.check_pck_crl_signer(loaded_ca)
    chain.check_not_revoked(leaf, pck_crl, "PCK certificate", checked.pck_crl_issuer)
    key = chain.ec_public_key(leaf, "PCK certificate", step)
    try:
        ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    except x509.ExtensionNotFound:
        raise VerificationError("pck_extension", "PCK certificate has no SGX extension") from None
    if not isinstance(ext, x509.UnrecognizedExtension):
        raise VerificationError("pck_extension", "PCK certificate's SGX extension is not in the expected form")
    try:
        parsed = PckExtension.parse(ext.value)
    except FormatError as exc:
        raise VerificationError("pck_extension", str(exc)) from None
    windows = (
        chain.cert_window(ca, "PCK CA certificate", step),
        chain.cert_window(leaf, "PCK certificate", step),
    )
    return key, parsed, windows


def _check_windows(windows: tuple[Window, ...], at: datetime) -> None:
    for window in windows:
        window.check(at)


@lru_cache(maxsize=16)
def _check_anchor(der: bytes) -> None:
    """A trust anchor is configuration, not evidence: check its self-signature once per process."""
    chain.check_self_signed_root(x509.load_der_x509_certificate(der))


class QuoteVerifier:
    """Verifies quotes against one trust root (default: Intel's SGX Root CA).

    Keep one verifier per trust root for the life of a service: it caches collateral-level and
    PCK-chain checks by content hash, so verifying many quotes from known platforms costs little more
    than the two per-quote ECDSA verifications. Thread-safe.
    """

    def __init__(self, trust_root: x509.Certificate | bytes | None = None) -> None:
        if trust_root is None:
            root, root_der = intel_sgx_root_ca_with_der()
        else:
            root = trust_root if isinstance(trust_root, x509.Certificate) else load_trust_root(trust_root)
            root_der = root.public_bytes(Encoding.DER)  # once: the caches below are keyed by it
        _check_anchor(root_der)
        self.trust_root = root
        self._root_der = root_der
        self.trust_root_sha256 = hashlib.sha256(root_der).digest()
        self.simulated = not is_intel_root_sha256(self.trust_root_sha256)
        self._root_window = chain.cert_window(root, "trust root", "trust_root")
        self._lock = threading.Lock()
        self._collateral: OrderedDict[bytes, _CheckedCollateral] = OrderedDict()
        self._evidence: OrderedDict[tuple[bytes, bytes], _CheckedEvidence] = OrderedDict()

    def _checked_collateral(self, collateral: Collateral) -> _CheckedCollateral:
        key = collateral.digest
        with self._lock:
            hit = self._collateral.get(key)
            if hit is not None:
                self._collateral.move_to_end(key)
                return hit
            checked = _CheckedCollateral(collateral, self.trust_root, self._root_der)
            self._collateral[key] = checked
            if len(self._collateral) > _COLLATERAL_CACHE_SIZE:
                self._collateral.popitem(last=False)
            return checked

    def verify(self, quote: bytes | Quote, collateral: Collateral, *, at: datetime | int | None = None) -> VerifiedQuote:
        """Verify ``quote`` with ``collateral`` at ``at`` (default: now). See the module docstring."""
        when = to_datetime(at)
        if isinstance(quote, Quote):
            q = quote
            signed = q.signed_bytes()
            sig_blob = q.signature_data_bytes()
        else:
            raw = bytes(quote)
            q = Quote.parse(raw)
            n = q.signed_length()
            signed = raw[:n]
            sig_blob = raw[n + 4 : n + 4 + int.from_bytes(raw[n : n + 4], "little")]
        if q.header.qe_vendor_id != INTEL_QE_VENDOR_ID:
            raise VerificationError("quote_header", f"QE vendor ID {q.header.qe_vendor_id.hex()} is not Intel's")

        # 1-2. Trust root, root CA CRL, PCK CRL.
        self._root_window.check(when)
        checked = self._checked_collateral(collateral)
        _, root_crl_windows = checked.root_crl
        _check_windows(root_crl_windows, when)
        _, pck_crl_windows = checked.pck_crl
        _check_windows(pck_crl_windows, when)

        # 3-8. PCK chain, TCB info, QE identity, QE report: cached per certification data + collateral.
        # The TEE type is part of the key: steps 4-5 match the collateral's kind against it.
        key = (
            hashlib.sha256(q.header.tee_type.to_bytes(4, "little") + sig_blob[ECDSA_SIGNATURE_SIZE:]).digest(),
            collateral.digest,
        )
        with self._lock:
            evidence = self._evidence.get(key)
            if evidence is not None:
                self._evidence.move_to_end(key)
        if evidence is None:
            evidence = _check_evidence(q, checked, when)
            with self._lock:
                self._evidence[key] = evidence
                if len(self._evidence) > _EVIDENCE_CACHE_SIZE:
                    self._evidence.popitem(last=False)
        tcb_info, tcb_windows = checked.tcb_info
        qe_identity, qe_windows = checked.qe_identity
        _check_windows(evidence.windows, when)
        _check_windows(tcb_windows, when)
        _check_windows(qe_windows, when)

        # 9. Quote signature by the attestation key.
        if not chain.verify_raw_ecdsa(evidence.attestation_key, q.signature.quote_signature, signed):
            raise VerificationError("quote_signature", "quote signature does not verify under the attestation key")

        # 10. TCB level and status convergence.
        ext = evidence.extension
        qe_isvsvn = q.signature.qe.qe_report.isv_svn
        tee_tcb_svn: bytes | None = None
        if isinstance(q.body, TdReport):
            _check_tdx_module(q.body, tcb_info)
            tee_tcb_svn = q.body.tee_tcb_svn
        evaluation = evaluate_tcb(
            tcb_info,
            qe_identity,
            pck_components=ext.tcb_components,
            pcesvn=ext.pcesvn,
            qe_isvsvn=qe_isvsvn,
            tee_tcb_svn=tee_tcb_svn,
        )
        if isinstance(q.body, TdReport) and q.body.tee_tcb_svn2 is not None:
            # TD 1.5: the current TCB (TEE_TCB_SVN2) must also match a level (Intel QVL 4.1.2.5.1.20).
            evaluate_tcb(
                tcb_info, qe_identity, pck_components=ext.tcb_components, pcesvn=ext.pcesvn,
                qe_isvsvn=qe_isvsvn, tee_tcb_svn=q.body.tee_tcb_svn2,
            )  # fmt: skip

        all_windows = (self._root_window, *root_crl_windows, *pck_crl_windows, *evidence.windows, *tcb_windows, *qe_windows)
        return VerifiedQuote(
            quote=q,
            tcb_status=evaluation.status,
            advisory_ids=evaluation.advisory_ids,
            platform_tcb_status=evaluation.platform_status,
            qe_tcb_status=evaluation.qe_status,
            tcb_date=evaluation.tcb_date,
            fmspc=ext.fmspc,
            pceid=ext.pceid,
            ppid=ext.ppid,
            collateral_expiry=min(w.not_after for w in all_windows),
            simulated=self.simulated,
            trust_root_sha256=self.trust_root_sha256,
        )


def _check_evidence(q: Quote, checked: _CheckedCollateral, when: datetime) -> _CheckedEvidence:
    """Steps 3-8 for one quote's certification data, checking validity windows as it goes so that
    failures are reported in QVL order."""
    tdx = q.header.tee_type == TeeType.TDX
    # 3. PCK certificate chain from the quote.
    pck_key, ext, pck_windows = _check_pck_chain(q.pck_chain_pem, checked)
    _check_windows(pck_windows, when)

    # 4. TCB info.
    tcb_info, tcb_windows = checked.tcb_info
    _check_windows(tcb_windows, when)
    expected_id = "TDX" if tdx else "SGX"
    if tcb_info.id != expected_id or (tdx and tcb_info.version < 3):
        raise VerificationError(
            "tcb_info_match", f"a {q.tee} quote needs {expected_id} TCB info, got {tcb_info.id} v{tcb_info.version}"
        )
    if tcb_info.fmspc != ext.fmspc:
        raise VerificationError(
            "tcb_info_match", f"TCB info is for FMSPC {tcb_info.fmspc.hex()}, the PCK certificate's is {ext.fmspc.hex()}"
        )
    if tcb_info.pceid != ext.pceid:
        raise VerificationError(
            "tcb_info_match", f"TCB info is for PCEID {tcb_info.pceid.hex()}, the PCK certificate's is {ext.pceid.hex()}"
        )

    # 5. QE identity.
    qe_identity, qe_windows = checked.qe_identity
    _check_windows(qe_windows, when)
    expected_qe = "TD_QE" if tdx else "QE"
    if qe_identity.id != expected_qe:
        raise VerificationError("qe_identity_match", f"a {q.tee} quote needs a {expected_qe} identity, got {qe_identity.id}")

    # 6. QE report signed by the PCK key.
    sig = q.signature
    qe_report = sig.qe.qe_report
    if not chain.verify_raw_ecdsa(pck_key, sig.qe.qe_report_signature, qe_report.to_bytes()):
        raise VerificationError("qe_report_signature", "QE report signature does not verify under the PCK certificate's key")

    # 7. QE report data binds the attestation key and QE auth data.
    expected_rd = hashlib.sha256(sig.attestation_key + sig.qe.qe_auth_data).digest() + bytes(32)
    if not hmac.compare_digest(qe_report.report_data, expected_rd):
        raise VerificationError("qe_report_data", "QE report data is not SHA-256(attestation key || QE auth data) || zeros")

    # 8. QE report against Intel's QE identity.
    _check_qe_report(qe_report, qe_identity)

    att_key = chain.raw_p256_key(sig.attestation_key)
    if att_key is None:
        raise VerificationError("quote_signature", "attestation key is not a valid P-256 point")
    return _CheckedEvidence(ext, att_key, pck_windows)


def _check_qe_report(report: ReportBody, identity: EnclaveIdentity) -> None:
    step = "qe_identity"
    if not hmac.compare_digest(report.mr_signer, identity.mrsigner):
        raise VerificationError(step, f"QE MRSIGNER {report.mr_signer.hex()} is not Intel's {identity.mrsigner.hex()}")
    if report.isv_prod_id != identity.isvprodid:
        raise VerificationError(step, f"QE ISVPRODID {report.isv_prod_id} is not {identity.isvprodid}")
    # Identity values are big-endian hex strings of the little-endian fields' bytes.
    misc = int.from_bytes(report.misc_select.to_bytes(4, "little"), "big")
    if misc & identity.miscselect_mask != identity.miscselect:
        raise VerificationError(step, "QE MISCSELECT does not match the QE identity under its mask")
    masked = bytes(a & m for a, m in zip(report.attributes, identity.attributes_mask, strict=True))
    if masked != identity.attributes:
        raise VerificationError(step, "QE ATTRIBUTES do not match the QE identity under its mask")


def _check_tdx_module(report: TdReport, tcb_info: TcbInfo) -> None:
    """Intel QVL's TDX module check: MRSIGNER_SEAM and SEAM_ATTRIBUTES against the TCB info's module
    identity (the versioned one when the module's major version is non-zero)."""
    module = tcb_info.tdx_module
    if module is None:
        raise VerificationError("tdx_module", "TDX TCB info has no tdxModule")
    version = report.tee_tcb_svn[1]
    if version > 0 and tcb_info.tdx_module_identities:
        wanted = f"TDX_{version:02X}"
        found = next((i for i in tcb_info.tdx_module_identities if i.id.upper() == wanted), None)
        if found is None:
            raise VerificationError("tdx_module", f"TCB info has no TDX module identity {wanted}")
        module = found
    if not hmac.compare_digest(report.mr_signer_seam, module.mrsigner):
        raise VerificationError("tdx_module", "MRSIGNER_SEAM does not match the TDX module identity")
    masked = bytes(a & m for a, m in zip(report.seam_attributes, module.attributes_mask, strict=True))
    if masked != module.attributes:
        raise VerificationError("tdx_module", "SEAM_ATTRIBUTES do not match the TDX module identity under its mask")


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral,
    *,
    trust_root: x509.Certificate | bytes | None = None,
    at: datetime | int | None = None,
) -> VerifiedQuote:
    """Verify ``quote`` with ``collateral`` at ``at`` (default: now) against ``trust_root`` (default:
    Intel's SGX Root CA). One-shot: services should keep a :class:`QuoteVerifier` to reuse its cache."""
    return QuoteVerifier(trust_root).verify(quote, collateral, at=at)
