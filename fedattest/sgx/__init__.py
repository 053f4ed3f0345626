"""SGX and TDX binary formats. Pure: bytes in, objects out, no I/O."""

from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension, PlatformConfiguration, SgxType
from fedattest.sgx.quote import (
    AttestationKeyType,
    BodyType,
    CertificationData,
    CertificationDataType,
    EcdsaSignatureData,
    QeCertification,
    Quote,
    QuoteHeader,
    ReportBody,
    TdReport,
    TeeType,
    make_attributes,
)

__all__ = [
    "SGX_EXTENSION_OID",
    "AttestationKeyType",
    "BodyType",
    "CertificationData",
    "CertificationDataType",
    "EcdsaSignatureData",
    "PckExtension",
    "PlatformConfiguration",
    "QeCertification",
    "Quote",
    "QuoteHeader",
    "ReportBody",
    "SgxType",
    "TdReport",
    "TeeType",
    "make_attributes",
]
