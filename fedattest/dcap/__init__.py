"""DCAP quote verification: collateral, verifier, results."""

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import TcbStatus, VerifiedQuote
from fedattest.dcap.trust import intel_sgx_root_ca, is_intel_root, load_trust_root
from fedattest.dcap.verify import QuoteVerifier, verify_quote

__all__ = [
    "Collateral",
    "QuoteVerifier",
    "TcbStatus",
    "VerifiedQuote",
    "intel_sgx_root_ca",
    "is_intel_root",
    "load_trust_root",
    "verify_quote",
]
