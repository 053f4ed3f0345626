"""Intel DCAP quotes: version 3 (SGX), version 4 (SGX or TDX) and version 5 (TDX 1.5), parse and build.

Layouts follow Intel's "SGX ECDSA Quote Library API" (quote v3) and "TDX DCAP Quoting Library API"
(quotes v4 and v5). All integers are little-endian. Parsing is strict: every structure must be
complete, sizes must agree, and the only bytes tolerated after the signature data are zeros (real
quotes are often delivered in zero-padded buffers). Reserved fields are kept verbatim so that
``Quote.parse(x).to_bytes() == x`` for every quote that parses.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from enum import IntEnum

from fedattest.errors import FormatError, UnsupportedFormatError
from fedattest.sgx._codec import Reader, check_len, u16, u32, u64

HEADER_SIZE = 48
SGX_REPORT_BODY_SIZE = 384
TD_REPORT10_SIZE = 584
TD_REPORT15_SIZE = 648
ECDSA_SIGNATURE_SIZE = 64
ECDSA_KEY_SIZE = 64

# Intel's QE vendor ID (939A7233-F79C-4CA9-940A-0DB3957F0607).
INTEL_QE_VENDOR_ID = bytes.fromhex("939a7233f79c4ca9940a0db3957f0607")

SGX_FLAGS_DEBUG = 0x02
SGX_FLAGS_MODE64BIT = 0x04
SGX_FLAGS_PROVISION_KEY = 0x10
SGX_FLAGS_EINITTOKEN_KEY = 0x20
SGX_FLAGS_KSS = 0x80


class TeeType(IntEnum):
    SGX = 0x00000000
    TDX = 0x00000081


class AttestationKeyType(IntEnum):
    ECDSA_P256 = 2
    ECDSA_P384 = 3


class CertificationDataType(IntEnum):
    PPID_CLEARTEXT = 1
    PPID_RSA2048_ENCRYPTED = 2
    PPID_RSA3072_ENCRYPTED = 3
    PCK_LEAF_CERT = 4
    PCK_CERT_CHAIN = 5
    QE_REPORT_CERTIFICATION_DATA = 6
    PLATFORM_MANIFEST = 7


class BodyType(IntEnum):
    """Quote v5 body types."""

    SGX_ENCLAVE_REPORT = 1
    TD_REPORT10 = 2
    TD_REPORT15 = 3


_CERT_TYPE_NAMES = {
    1: "PPID in clear text",
    2: "PPID encrypted with RSA-2048",
    3: "PPID encrypted with RSA-3072 (EPPID)",
    4: "PCK leaf certificate only",
    6: "QE report certification data",
    7: "platform manifest",
}


@dataclass(frozen=True)
class QuoteHeader:
    version: int
    attestation_key_type: int
    tee_type: int
    qe_svn: int
    pce_svn: int
    qe_vendor_id: bytes
    user_data: bytes

    @classmethod
    def parse(cls, data: bytes) -> QuoteHeader:
        r = Reader(data, "quote.header")
        return cls._read(r)

    @classmethod
    def _read(cls, r: Reader) -> QuoteHeader:
        return cls(
            version=r.u16("version"),
            attestation_key_type=r.u16("attestation_key_type"),
            tee_type=r.u32("tee_type"),
            qe_svn=r.u16("qe_svn"),
            pce_svn=r.u16("pce_svn"),
            qe_vendor_id=r.take(16, "qe_vendor_id"),
            user_data=r.take(20, "user_data"),
        )

    def to_bytes(self) -> bytes:
        check_len(self.qe_vendor_id, 16, "quote.header.qe_vendor_id")
        check_len(self.user_data, 20, "quote.header.user_data")
        return (
            u16(self.version)
            + u16(self.attestation_key_type)
            + u32(self.tee_type)
            + u16(self.qe_svn)
            + u16(self.pce_svn)
            + self.qe_vendor_id
            + self.user_data
        )


_REPORT_BODY = struct.Struct("<16sI12s16s16s32s32s32s32s64sHHH42s16s64s")
_REPORT_BODY_BYTES = (
    ("cpu_svn", 16), ("reserved1", 12), ("isv_ext_prod_id", 16), ("attributes", 16), ("mr_enclave", 32),
    ("reserved2", 32), ("mr_signer", 32), ("reserved3", 32), ("config_id", 64), ("reserved4", 42),
    ("isv_family_id", 16), ("report_data", 64),
)  # fmt: skip


@dataclass(frozen=True)
class ReportBody:
    """An SGX enclave report body (``sgx_report_body_t``, 384 bytes): the ISV enclave's or the QE's."""

    cpu_svn: bytes
    misc_select: int
    isv_ext_prod_id: bytes
    attributes: bytes
    mr_enclave: bytes
    mr_signer: bytes
    config_id: bytes
    isv_prod_id: int
    isv_svn: int
    config_svn: int
    isv_family_id: bytes
    report_data: bytes
    reserved1: bytes = bytes(12)
    reserved2: bytes = bytes(32)
    reserved3: bytes = bytes(32)
    reserved4: bytes = bytes(42)

    @classmethod
    def parse(cls, data: bytes, where: str = "report_body") -> ReportBody:
        r = Reader(data, where)
        body = cls._read(r)
        if r.remaining:
            raise FormatError(where, f"{r.remaining} unexpected bytes after the report body")
        return body

    @classmethod
    def _read(cls, r: Reader) -> ReportBody:
        # One struct call instead of sixteen reads: report bodies sit on the verifier's hot path.
        (
            cpu_svn, misc_select, reserved1, isv_ext_prod_id, attributes, mr_enclave, reserved2, mr_signer,
            reserved3, config_id, isv_prod_id, isv_svn, config_svn, reserved4, isv_family_id, report_data,
        ) = _REPORT_BODY.unpack(r.take(SGX_REPORT_BODY_SIZE, "report_body"))  # fmt: skip
        return cls(
            cpu_svn=cpu_svn,
            misc_select=misc_select,
            isv_ext_prod_id=isv_ext_prod_id,
            attributes=attributes,
            mr_enclave=mr_enclave,
            mr_signer=mr_signer,
            config_id=config_id,
            isv_prod_id=isv_prod_id,
            isv_svn=isv_svn,
            config_svn=config_svn,
            isv_family_id=isv_family_id,
            report_data=report_data,
            reserved1=reserved1,
            reserved2=reserved2,
            reserved3=reserved3,
            reserved4=reserved4,
        )

    def to_bytes(self) -> bytes:
        for name, size in _REPORT_BODY_BYTES:
            check_len(getattr(self, name), size, f"report_body.{name}")
        for name, limit in (("misc_select", 0xFFFFFFFF), ("isv_prod_id", 0xFFFF), ("isv_svn", 0xFFFF), ("config_svn", 0xFFFF)):
            value = getattr(self, name)
            if not 0 <= value <= limit:
                raise FormatError(f"report_body.{name}", f"{value} is out of range 0..{limit}")
        return _REPORT_BODY.pack(
            self.cpu_svn, self.misc_select, self.reserved1, self.isv_ext_prod_id, self.attributes, self.mr_enclave,
            self.reserved2, self.mr_signer, self.reserved3, self.config_id, self.isv_prod_id, self.isv_svn,
            self.config_svn, self.reserved4, self.isv_family_id, self.report_data,
        )  # fmt: skip

    @property
    def flags(self) -> int:
        """SGX ATTRIBUTES.FLAGS (low 8 bytes of ``attributes``)."""
        return int.from_bytes(self.attributes[:8], "little")

    @property
    def xfrm(self) -> int:
        """SGX ATTRIBUTES.XFRM (high 8 bytes of ``attributes``)."""
        return int.from_bytes(self.attributes[8:], "little")

    @property
    def debug(self) -> bool:
        return bool(self.flags & SGX_FLAGS_DEBUG)


def make_attributes(flags: int, xfrm: int) -> bytes:
    """The 16-byte SGX ATTRIBUTES field from its FLAGS and XFRM halves."""
    return u64(flags) + u64(xfrm)


_TD10_FIELDS: tuple[tuple[str, int], ...] = (
    ("tee_tcb_svn", 16),
    ("mr_seam", 48),
    ("mr_signer_seam", 48),
    ("seam_attributes", 8),
    ("td_attributes", 8),
    ("xfam", 8),
    ("mr_td", 48),
    ("mr_config_id", 48),
    ("mr_owner", 48),
    ("mr_owner_config", 48),
    ("rt_mr0", 48),
    ("rt_mr1", 48),
    ("rt_mr2", 48),
    ("rt_mr3", 48),
    ("report_data", 64),
)
_TD15_EXTRA: tuple[tuple[str, int], ...] = (("tee_tcb_svn2", 16), ("mr_service_td", 48))


@dataclass(frozen=True)
class TdReport:
    """A TDX TD report as carried in quotes: TDREPORT 1.0 (584 bytes) or 1.5 (648 bytes).

    ``tee_tcb_svn2`` and ``mr_service_td`` are ``None`` for a 1.0 report.
    """

    tee_tcb_svn: bytes
    mr_seam: bytes
    mr_signer_seam: bytes
    seam_attributes: bytes
    td_attributes: bytes
    xfam: bytes
    mr_td: bytes
    mr_config_id: bytes
    mr_owner: bytes
    mr_owner_config: bytes
    rt_mr0: bytes
    rt_mr1: bytes
    rt_mr2: bytes
    rt_mr3: bytes
    report_data: bytes
    tee_tcb_svn2: bytes | None = None
    mr_service_td: bytes | None = None

    @property
    def is_v15(self) -> bool:
        return self.tee_tcb_svn2 is not None

    @property
    def size(self) -> int:
        return TD_REPORT15_SIZE if self.is_v15 else TD_REPORT10_SIZE

    @property
    def debug(self) -> bool:
        """TDATTRIBUTES.DEBUG (bit 0)."""
        return bool(self.td_attributes[0] & 0x01)

    @classmethod
    def _read(cls, r: Reader, v15: bool) -> TdReport:
        values: dict[str, bytes] = {}
        for name, size in _TD10_FIELDS + (_TD15_EXTRA if v15 else ()):
            values[name] = r.take(size, name)
        return cls(**values)

    def to_bytes(self) -> bytes:
        fields = _TD10_FIELDS + (_TD15_EXTRA if self.is_v15 else ())
        if (self.tee_tcb_svn2 is None) != (self.mr_service_td is None):
            raise FormatError("td_report", "tee_tcb_svn2 and mr_service_td must both be set (TD 1.5) or neither")
        out = b""
        for name, size in fields:
            value = getattr(self, name)
            check_len(value, size, f"td_report.{name}")
            out += value
        return out


@dataclass(frozen=True)
class CertificationData:
    """Certification data: a type and its raw payload.

    fedattest verifies only type 5 (the PCK certificate chain, PEM); ``parse`` refuses other types with
    :class:`UnsupportedFormatError` where they would have to be verified.
    """

    type: int
    data: bytes

    @classmethod
    def _read(cls, r: Reader) -> CertificationData:
        ctype = r.u16("certification_data.type")
        size = r.u32("certification_data.size")
        data = r.take(size, "certification_data.data")
        return cls(ctype, data)

    def to_bytes(self) -> bytes:
        return u16(self.type) + u32(len(self.data)) + self.data

    @property
    def pem_chain(self) -> bytes:
        """The PCK certificate chain (leaf first), PEM; trailing NULs that real quotes carry are removed."""
        if self.type != CertificationDataType.PCK_CERT_CHAIN:
            raise UnsupportedFormatError("certification_data.type", f"type {self.type} has no PEM chain")
        return self.data.rstrip(b"\x00")


def _require_pck_chain(cert: CertificationData, where: str) -> None:
    if cert.type == CertificationDataType.PCK_CERT_CHAIN:
        return
    name = _CERT_TYPE_NAMES.get(cert.type, "unknown type")
    hint = ""
    if cert.type in (1, 2, 3):
        hint = (
            "; this quote carries only the platform's PPID, so it cannot be verified on its own: regenerate it"
            " with the PCK certificate chain embedded (set the quote provider library's collateral service"
            " so that the QE includes certification data type 5)"
        )
    raise UnsupportedFormatError(
        f"{where}.type",
        f"certification data type {cert.type} ({name}) is not supported, expected 5 (PCK certificate chain){hint}",
    )


@dataclass(frozen=True)
class QeCertification:
    """What certifies the attestation key: the QE report, its PCK signature, the QE auth data and the
    PCK certificate chain. Inline in v3 signature data; wrapped as certification data type 6 in v4/v5."""

    qe_report: ReportBody
    qe_report_signature: bytes
    qe_auth_data: bytes
    certification_data: CertificationData

    @classmethod
    def _read(cls, r: Reader) -> QeCertification:
        qe_report = ReportBody._read(Reader(r.take(SGX_REPORT_BODY_SIZE, "qe_report"), "quote.signature_data.qe_report"))
        qe_report_signature = r.take(ECDSA_SIGNATURE_SIZE, "qe_report_signature")
        auth_size = r.u16("qe_auth_data.size")
        qe_auth_data = r.take(auth_size, "qe_auth_data.data")
        cert = CertificationData._read(r)
        _require_pck_chain(cert, "quote.signature_data.certification_data")
        return cls(qe_report, qe_report_signature, qe_auth_data, cert)

    def to_bytes(self) -> bytes:
        check_len(self.qe_report_signature, ECDSA_SIGNATURE_SIZE, "quote.signature_data.qe_report_signature")
        if len(self.qe_auth_data) > 0xFFFF:
            raise FormatError("quote.signature_data.qe_auth_data", "longer than 65535 bytes")
        return (
            self.qe_report.to_bytes()
            + self.qe_report_signature
            + u16(len(self.qe_auth_data))
            + self.qe_auth_data
            + self.certification_data.to_bytes()
        )


@dataclass(frozen=True)
class EcdsaSignatureData:
    """ECDSA-256-with-P-256 quote signature data (v3 layout, or v4/v5 with a type-6 wrapper)."""

    quote_signature: bytes
    attestation_key: bytes
    qe: QeCertification


@dataclass(frozen=True)
class Quote:
    """A parsed DCAP quote. ``body`` is a :class:`ReportBody` (SGX) or a :class:`TdReport` (TDX)."""

    header: QuoteHeader
    body: ReportBody | TdReport
    signature: EcdsaSignatureData
    body_type: int | None = None  # quote v5 only
    padding: int = field(default=0, compare=False)  # zero bytes that followed the quote

    # -- parsing -----------------------------------------------------------------------------
    @classmethod
    def parse(cls, data: bytes) -> Quote:
        """Parse a quote. Raises :class:`FormatError` naming the field on any malformed input."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError("quote", "expected bytes")
        data = bytes(data)
        r = Reader(data, "quote")
        header = QuoteHeader._read(Reader(r.take(HEADER_SIZE, "header"), "quote.header"))
        if header.version not in (3, 4, 5):
            raise UnsupportedFormatError("quote.header.version", f"version {header.version} is not supported (3, 4 or 5)")
        if header.attestation_key_type != AttestationKeyType.ECDSA_P256:
            raise UnsupportedFormatError(
                "quote.header.attestation_key_type",
                f"attestation key type {header.attestation_key_type} is not supported (2 = ECDSA-256-with-P-256)",
            )
        if header.tee_type not in (TeeType.SGX, TeeType.TDX):
            raise FormatError("quote.header.tee_type", f"unknown TEE type 0x{header.tee_type:08x}")
        if header.version == 3 and header.tee_type != TeeType.SGX:
            raise FormatError("quote.header.tee_type", "a version 3 quote must be an SGX quote (TEE type 0)")

        body_type: int | None = None
        body: ReportBody | TdReport
        if header.version == 5:
            body_type = r.u16("body_type")
            body_size = r.u32("body_size")
            expected = {
                BodyType.SGX_ENCLAVE_REPORT: (TeeType.SGX, SGX_REPORT_BODY_SIZE),
                BodyType.TD_REPORT10: (TeeType.TDX, TD_REPORT10_SIZE),
                BodyType.TD_REPORT15: (TeeType.TDX, TD_REPORT15_SIZE),
            }.get(body_type)  # type: ignore[call-overload]
            if expected is None:
                raise UnsupportedFormatError("quote.body_type", f"body type {body_type} is not supported (1, 2 or 3)")
            if expected[0] != header.tee_type:
                raise FormatError("quote.body_type", f"body type {body_type} does not match TEE type 0x{header.tee_type:x}")
            if body_size != expected[1]:
                raise FormatError("quote.body_size", f"body type {body_type} is {expected[1]} bytes, size says {body_size}")
        if header.tee_type == TeeType.SGX:
            body = ReportBody._read(Reader(r.take(SGX_REPORT_BODY_SIZE, "body"), "quote.body"))
        else:
            v15 = body_type == BodyType.TD_REPORT15
            size = TD_REPORT15_SIZE if v15 else TD_REPORT10_SIZE
            body = TdReport._read(Reader(r.take(size, "body"), "quote.body"), v15)

        sig_len = r.u32("signature_data_len")
        sig = Reader(r.take(sig_len, "signature_data"), "quote.signature_data")
        quote_signature = sig.take(ECDSA_SIGNATURE_SIZE, "quote_signature")
        attestation_key = sig.take(ECDSA_KEY_SIZE, "attestation_key")
        if header.version == 3:
            qe = QeCertification._read(sig)
        else:
            outer = sig.u16("certification_data.type")
            outer_size = sig.u32("certification_data.size")
            if outer != CertificationDataType.QE_REPORT_CERTIFICATION_DATA:
                _require_pck_chain(CertificationData(outer, b""), "quote.signature_data.certification_data")
                raise UnsupportedFormatError(  # pragma: no cover - _require_pck_chain raised for type != 5
                    "quote.signature_data.certification_data.type",
                    "a version 4/5 quote must wrap its PCK chain in certification data type 6",
                )
            inner = Reader(sig.take(outer_size, "certification_data.data"), "quote.signature_data.qe_report_certification_data")
            qe = QeCertification._read(inner)
            if inner.remaining:
                raise FormatError(
                    "quote.signature_data.certification_data.size",
                    f"{inner.remaining} bytes inside type-6 certification data follow the PCK chain",
                )
        if sig.remaining:
            raise FormatError(
                "quote.signature_data_len", f"{sig.remaining} bytes of signature data follow the certification data"
            )
        trailer = r.rest()
        if trailer.strip(b"\x00"):
            raise FormatError("quote", f"{len(trailer)} bytes after the end of the quote are not zero padding")
        return cls(
            header=header,
            body=body,
            signature=EcdsaSignatureData(quote_signature, attestation_key, qe),
            body_type=body_type,
            padding=len(trailer),
        )

    # -- building ----------------------------------------------------------------------------
    def signed_bytes(self) -> bytes:
        """The bytes the attestation key signs: header and body (v5: with body type and size)."""
        body = self.body.to_bytes()
        head = self.header.to_bytes()
        if self.header.version == 5:
            if self.body_type is None:
                raise FormatError("quote.body_type", "a version 5 quote needs a body type")
            return head + u16(self.body_type) + u32(len(body)) + body
        return head + body

    def signed_length(self) -> int:
        """Length of :meth:`signed_bytes` without building it."""
        return (
            HEADER_SIZE
            + (6 if self.header.version == 5 else 0)
            + (SGX_REPORT_BODY_SIZE if isinstance(self.body, ReportBody) else self.body.size)
        )

    def signature_data_bytes(self) -> bytes:
        s = self.signature
        check_len(s.quote_signature, ECDSA_SIGNATURE_SIZE, "quote.signature_data.quote_signature")
        check_len(s.attestation_key, ECDSA_KEY_SIZE, "quote.signature_data.attestation_key")
        qe = s.qe.to_bytes()
        if self.header.version != 3:
            qe = CertificationData(CertificationDataType.QE_REPORT_CERTIFICATION_DATA, qe).to_bytes()
        return s.quote_signature + s.attestation_key + qe

    def to_bytes(self) -> bytes:
        sig = self.signature_data_bytes()
        return self.signed_bytes() + u32(len(sig)) + sig + bytes(self.padding)

    # -- conveniences ------------------------------------------------------------------------
    @property
    def tee(self) -> str:
        return "TDX" if self.header.tee_type == TeeType.TDX else "SGX"

    @property
    def report_data(self) -> bytes:
        return self.body.report_data

    @property
    def pck_chain_pem(self) -> bytes:
        return self.signature.qe.certification_data.pem_chain
