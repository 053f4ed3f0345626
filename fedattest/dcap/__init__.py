"""DCAP quote verification: collateral, verifier, results.

Names are imported on first use, so that a module needing one piece (``fedattest.dcap.chain`` for a PCK
chain, ``fedattest.dcap.result`` for the status names) does not load the verifier and the TCB document
readers with it (``fedattest quote show`` needs neither).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fedattest._lazy import lazy_attributes

if TYPE_CHECKING:
    from fedattest.dcap.collateral import Collateral
    from fedattest.dcap.result import TcbStatus, VerifiedQuote
    from fedattest.dcap.trust import intel_sgx_root_ca, is_intel_root, load_trust_root
    from fedattest.dcap.verify import QuoteVerifier, verify_quote

_WHERE = {
    "Collateral": "collateral",
    "TcbStatus": "result", "VerifiedQuote": "result",
    "intel_sgx_root_ca": "trust", "is_intel_root": "trust", "load_trust_root": "trust",
    "QuoteVerifier": "verify", "verify_quote": "verify",
}  # fmt: skip

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

__getattr__ = lazy_attributes(__name__, _WHERE)
