"""DCAP quote verification (stub: interface fixed, body being written)."""

from __future__ import annotations

from datetime import datetime

from cryptography import x509

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.sgx.quote import Quote


class QuoteVerifier:
    """Verifies quotes against one trust root, caching collateral-level work by content hash."""

    def __init__(self, trust_root: x509.Certificate | bytes | None = None) -> None:
        raise NotImplementedError

    def verify(self, quote: bytes | Quote, collateral: Collateral, *, at: datetime | int | None = None) -> VerifiedQuote:
        raise NotImplementedError


def verify_quote(
    quote: bytes | Quote,
    collateral: Collateral,
    *,
    trust_root: x509.Certificate | bytes | None = None,
    at: datetime | int | None = None,
) -> VerifiedQuote:
    """Verify ``quote`` with ``collateral`` at time ``at`` (default: now) against ``trust_root``
    (default: Intel's SGX Root CA). Raises VerificationError(step, ...) or FormatError."""
    return QuoteVerifier(trust_root).verify(quote, collateral, at=at)
