"""One entry point for "is this evidence what we accept?": parse, get collateral, verify (DCAP), check what
the report data binds, appraise. Every caller (the coordinator's activation, a participant checking the
coordinator, RA-TLS, the audit bundle, ``quote verify``) goes through :func:`attest`, so each step exists
once and runs in the same order everywhere.

The steps, in order (``Attestation.step``, a :class:`~fedattest.steps.Step`, names the first that failed):

1. ``quote_format``: the bytes parse as a quote;
2. ``collateral``: collateral for it can be had (a PCCS fetch may fail);
3. verification: every DCAP step of :class:`fedattest.dcap.verify.QuoteVerifier`, which names its own step
   (``pck_chain``, ``quote_signature``, ``tcb``, ...) at the time ``at``;
4. ``report_data``: the quote's 64 bytes of report data are the ones expected (when the caller expects any);
5. ``appraisal``: :func:`fedattest.policy.appraisal.appraise` against the reference values.

Once the quote verified, the report-data mismatch and every appraisal reason are all collected. Pure: no
I/O beyond what a ``collateral`` callable does.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.result import VerifiedQuote
from fedattest.dcap.verify import QuoteVerifier, to_datetime
from fedattest.errors import FedattestError, FormatError, VerificationError
from fedattest.policy.appraisal import Reference, ReferenceValues, Verdict, appraise
from fedattest.sgx.quote import Quote
from fedattest.steps import Step

# The attestation-level steps, under the names callers have imported since before Step existed.
QUOTE_FORMAT = Step.QUOTE_FORMAT
COLLATERAL = Step.COLLATERAL
VERIFICATION = Step.VERIFICATION
REPORT_DATA = Step.REPORT_DATA
APPRAISAL = Step.APPRAISAL


@dataclass(frozen=True)
class Attestation:
    """The outcome of :func:`attest`: accepted, or the first failing ``step`` and every ``reasons`` found,
    with what it was decided on: the time ``at`` and the trust root (its SHA-256, and whether it is a
    simulation root rather than Intel's)."""

    accepted: bool
    step: Step | None
    reasons: tuple[str, ...]
    at: datetime
    trust_root_sha256: bytes
    simulated: bool
    notes: tuple[str, ...] = ()
    quote: Quote | None = None
    collateral: Collateral | None = None  # what the quote was verified with (fetched, when it was a callable)
    verified: VerifiedQuote | None = None
    verdict: Verdict | None = field(default=None, compare=False)

    @property
    def reason(self) -> str:
        """One line: the reasons joined, or "accepted"."""
        return "; ".join(self.reasons) if self.reasons else "accepted"

    @property
    def evidence_failed(self) -> bool:
        """The evidence itself was refused (it did not parse or verify), as opposed to what it shows."""
        return not self.accepted and self.step not in (REPORT_DATA, APPRAISAL)


def attest(
    evidence: bytes | Quote,
    *,
    collateral: Collateral | Callable[[Quote], Collateral],
    verifier: QuoteVerifier,
    reference: ReferenceValues | Reference,
    expected_report_data: bytes | None = None,
    at: datetime | int | None = None,
) -> Attestation:
    """Attest ``evidence`` (see the module docstring) at ``at`` (default: now). ``reference`` is reference
    values or any composition of references (:mod:`fedattest.policy.appraisal`). Never raises for bad
    evidence: every failure is a rejected :class:`Attestation` naming its step."""
    when = to_datetime(at)

    def refused(step: Step, reason: str, quote: Quote | None = None, used: Collateral | None = None) -> Attestation:
        return Attestation(
            False, step, (reason,), when, verifier.trust_root_sha256, verifier.simulated, quote=quote, collateral=used
        )

    try:
        quote = evidence if isinstance(evidence, Quote) else Quote.parse(bytes(evidence))
    except FedattestError as exc:
        return refused(QUOTE_FORMAT, str(exc))
    if callable(collateral):
        try:
            collateral = collateral(quote)
        except FedattestError as exc:
            return refused(COLLATERAL, f"could not get collateral: {exc}", quote)
    try:
        verified = verifier.verify(quote, collateral, at=when)
    except VerificationError as exc:
        return refused(exc.step, str(exc), quote, collateral)
    except FormatError as exc:
        return refused(QUOTE_FORMAT, str(exc), quote, collateral)
    except FedattestError as exc:
        return refused(VERIFICATION, str(exc), quote, collateral)
    reasons: list[str] = []
    step: Step | None = None
    if expected_report_data is not None and not hmac.compare_digest(verified.report_data, expected_report_data):
        step = REPORT_DATA
        reasons.append("the quote's report data does not bind what was expected")
    verdict = appraise(verified, reference)
    if not verdict.accepted:
        step = step or APPRAISAL
        reasons += verdict.reasons
    return Attestation(
        not reasons, step, tuple(reasons), when, verifier.trust_root_sha256, verifier.simulated,
        notes=verdict.notes, quote=quote, collateral=collateral, verified=verified, verdict=verdict,
    )  # fmt: skip
