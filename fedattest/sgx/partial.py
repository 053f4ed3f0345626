"""A quote as far as it parses: for showing evidence that does not fully parse (an encrypted PPID, a
truncated file) without pretending it verified. Pure: bytes in, a :class:`QuoteView` out."""

from __future__ import annotations

from dataclasses import dataclass

from fedattest.errors import FormatError
from fedattest.sgx._codec import Reader
from fedattest.sgx.quote import (
    HEADER_SIZE,
    SGX_REPORT_BODY_SIZE,
    TD_REPORT10_SIZE,
    TD_REPORT15_SIZE,
    AttestationKeyType,
    BodyType,
    CertificationDataType,
    Quote,
    QuoteHeader,
    ReportBody,
    TdReport,
    TeeType,
)


@dataclass(frozen=True)
class QuoteView:
    """A quote as far as it parses. ``quote`` is set when the whole quote parses; otherwise ``error``
    says why, and ``header``/``body``/``cert_type`` hold what could still be read (e.g. a quote whose
    certification data is an encrypted PPID still shows its enclave identity)."""

    raw: bytes
    encoding: str
    quote: Quote | None
    header: QuoteHeader | None
    body: ReportBody | TdReport | None
    body_type: int | None
    cert_type: int | None
    error: FormatError | None

    @property
    def tee(self) -> str | None:
        if self.header is None or self.header.tee_type not in (TeeType.SGX, TeeType.TDX):
            return None
        return "TDX" if self.header.tee_type == TeeType.TDX else "SGX"

    @property
    def version(self) -> int | None:
        return self.header.version if self.header else None

    @property
    def sgx_body(self) -> ReportBody | None:
        return self.body if isinstance(self.body, ReportBody) else None

    @property
    def td_body(self) -> TdReport | None:
        return self.body if isinstance(self.body, TdReport) else None


def view_quote(raw: bytes, encoding: str = "raw") -> QuoteView:
    """Parse ``raw`` strictly; if that fails, read as much of the header and body as is well-formed."""
    try:
        q = Quote.parse(raw)
    except FormatError as exc:
        return _lenient(raw, encoding, exc)
    cert_type = q.signature.qe.certification_data.type
    return QuoteView(raw, encoding, q, q.header, q.body, q.body_type, cert_type, None)


def _lenient(raw: bytes, encoding: str, error: FormatError) -> QuoteView:
    header: QuoteHeader | None = None
    body: ReportBody | TdReport | None = None
    body_type: int | None = None
    cert_type: int | None = None
    try:
        r = Reader(raw, "quote")
        header = QuoteHeader.parse(r.take(HEADER_SIZE, "header"))
        if (
            header.version not in (3, 4, 5)
            or header.attestation_key_type != AttestationKeyType.ECDSA_P256
            or header.tee_type not in (TeeType.SGX, TeeType.TDX)
        ):
            header = None  # not recognisably a DCAP quote: show nothing rather than noise
        else:
            size = SGX_REPORT_BODY_SIZE if header.tee_type == TeeType.SGX else TD_REPORT10_SIZE
            if header.version == 5:
                body_type = r.u16("body_type")
                r.u32("body_size")
                if body_type == BodyType.TD_REPORT15:
                    size = TD_REPORT15_SIZE
            chunk = r.take(size, "body")
            if header.tee_type == TeeType.SGX:
                body = ReportBody.parse(chunk, "quote.body")
            else:
                # TdReport has no public parser of its own; Quote.parse uses the same reader.
                body = TdReport._read(Reader(chunk, "quote.body"), size == TD_REPORT15_SIZE)
            sig = Reader(r.take(r.u32("signature_data_len"), "signature_data"), "quote.signature_data")
            sig.take(128, "quote_signature_and_attestation_key")
            if header.version != 3:
                outer = sig.u16("certification_data.type")
                sig.u32("certification_data.size")
                if outer != CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
                    cert_type = outer
                    raise StopIteration
            sig.take(SGX_REPORT_BODY_SIZE + 64, "qe_report")
            sig.take(sig.u16("qe_auth_data.size"), "qe_auth_data")
            cert_type = sig.u16("certification_data.type")
    except (FormatError, StopIteration):
        pass
    return QuoteView(raw, encoding, None, header, body, body_type, cert_type, error)
