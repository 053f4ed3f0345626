"""The steps of attesting evidence, in the order they run (Intel's Quote Verification Library order for
the DCAP part). Every refusal names one: :class:`fedattest.errors.VerificationError` carries the DCAP
step that failed, :class:`fedattest.attestation.Attestation` the step of the whole attestation.

A ``StrEnum``, so a step prints, compares and serialises as its plain name (``"pck_chain"``): logs,
JSON output and audit records keep the names they always had.
"""

from __future__ import annotations

from enum import StrEnum


class Step(StrEnum):
    # -- reading the evidence
    QUOTE_FORMAT = "quote_format"  # the bytes are not a quote we can parse
    QUOTE_HEADER = "quote_header"  # a quote, but not from Intel's QE
    COLLATERAL = "collateral"  # collateral for the quote could not be had (a PCCS fetch)
    # -- DCAP verification (fedattest.dcap.verify), in QVL order
    TRUST_ROOT = "trust_root"
    ROOT_CA_CRL = "root_ca_crl"
    PCK_CRL = "pck_crl"
    PCK_CHAIN = "pck_chain"
    REVOCATION = "revocation"
    PCK_EXTENSION = "pck_extension"
    TCB_INFO_CHAIN = "tcb_info_chain"
    TCB_INFO_SIGNATURE = "tcb_info_signature"
    TCB_INFO = "tcb_info"
    TCB_INFO_VALIDITY = "tcb_info_validity"
    TCB_INFO_MATCH = "tcb_info_match"
    QE_IDENTITY_CHAIN = "qe_identity_chain"
    QE_IDENTITY_SIGNATURE = "qe_identity_signature"
    QE_IDENTITY = "qe_identity"
    QE_IDENTITY_VALIDITY = "qe_identity_validity"
    QE_IDENTITY_MATCH = "qe_identity_match"
    QE_REPORT_SIGNATURE = "qe_report_signature"
    QE_REPORT_DATA = "qe_report_data"
    QUOTE_SIGNATURE = "quote_signature"
    TDX_MODULE = "tdx_module"
    TCB_LEVEL = "tcb_level"
    VERIFICATION = "verification"  # a verifier failure that names no step of its own
    # -- what the verified evidence shows
    REPORT_DATA = "report_data"  # the report data does not bind what the caller expected
    APPRAISAL = "appraisal"  # the reference values refuse it (fedattest.policy.appraisal)
