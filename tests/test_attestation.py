"""`fedattest.attestation.attest`, the one entry point every caller uses: each step, in order, named when it
refuses, and every reason collected once the quote verified."""

from __future__ import annotations

from pathlib import Path

from fedattest.attestation import APPRAISAL, COLLATERAL, QUOTE_FORMAT, REPORT_DATA, attest
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError
from fedattest.policy.appraisal import ReferenceValues
from fedattest.sgx.quote import Quote
from fedattest.tee import SimulatedPlatform, WorkloadIdentity

CODE = bytes.fromhex("ab" * 32)
SIGNER = bytes.fromhex("cd" * 32)


def test_each_step_refuses_with_its_name(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    other = SimulatedPlatform.create(tmp_path / "other")
    data = bytes(range(64))
    raw = platform.tee(WorkloadIdentity(CODE, SIGNER)).quote(data)
    ref = ReferenceValues(mrenclave=frozenset({CODE}), allow_simulation=True)
    verifier = QuoteVerifier(platform.root_ca)
    ok = attest(raw, collateral=platform.collateral(), verifier=verifier, reference=ref, expected_report_data=data)
    assert ok.accepted and ok.step is None and ok.verified is not None and ok.collateral is not None
    assert attest(Quote.parse(raw), collateral=platform.collateral(), verifier=verifier, reference=ref).accepted

    def unreachable(_quote: Quote) -> object:
        raise FedattestError("PCCS unreachable")

    collateral = platform.collateral()
    wrong_code = ReferenceValues(mrenclave=frozenset({SIGNER}), allow_simulation=True)
    cases = {
        QUOTE_FORMAT: attest(b"not a quote", collateral=collateral, verifier=verifier, reference=ref),
        COLLATERAL: attest(raw, collateral=unreachable, verifier=verifier, reference=ref),  # type: ignore[arg-type]
        "root_ca": attest(raw, collateral=collateral, verifier=QuoteVerifier(other.root_ca), reference=ref),
        REPORT_DATA: attest(raw, collateral=collateral, verifier=verifier, reference=ref, expected_report_data=bytes(64)),
        APPRAISAL: attest(raw, collateral=collateral, verifier=verifier, reference=wrong_code),
    }
    for step, outcome in cases.items():
        assert not outcome.accepted and outcome.step is not None and outcome.step.startswith(step), (step, outcome.step)
        assert outcome.reasons, step
    assert cases[QUOTE_FORMAT].evidence_failed and cases[COLLATERAL].evidence_failed and cases["root_ca"].evidence_failed
    assert not cases[REPORT_DATA].evidence_failed and not cases[APPRAISAL].evidence_failed
    assert "could not get collateral: PCCS unreachable" in cases[COLLATERAL].reason


def test_every_reason_is_collected_once_the_quote_verified(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    raw = platform.tee(WorkloadIdentity(CODE, SIGNER, debug=True)).quote(bytes(64))
    ref = ReferenceValues(mrenclave=frozenset({SIGNER}))  # wrong code, no simulation, no debug
    outcome = attest(raw, collateral=platform.collateral(), verifier=QuoteVerifier(platform.root_ca), reference=ref,
                     expected_report_data=bytes(range(64)))  # fmt: skip
    assert outcome.step == REPORT_DATA  # the first that failed ...
    text = outcome.reason  # ... and all of them
    assert "report data" in text and "simulated" in text and "debug" in text and "is not an accepted measurement" in text
