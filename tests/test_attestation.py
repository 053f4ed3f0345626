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


def test_a_composed_reference_goes_through_the_same_entry_point(tmp_path: Path) -> None:
    from fedattest.policy.appraisal import AllOf, AnyOf, Mrenclave, Signer, Simulation

    platform = SimulatedPlatform.create(tmp_path / "platform")
    raw = platform.tee(WorkloadIdentity(CODE, SIGNER)).quote(bytes(64))
    verifier = QuoteVerifier(platform.root_ca)
    either = AllOf(Simulation(allowed=True), AnyOf(Mrenclave(frozenset({SIGNER})), Signer(SIGNER, 0)))
    outcome = attest(raw, collateral=platform.collateral(), verifier=verifier, reference=either)
    assert outcome.accepted and outcome.simulated and outcome.trust_root_sha256 == verifier.trust_root_sha256
    neither = AllOf(Simulation(allowed=True), AnyOf(Mrenclave(frozenset({SIGNER})), Signer(CODE, 0)))
    refused = attest(raw, collateral=platform.collateral(), verifier=verifier, reference=neither)
    assert refused.step == APPRAISAL and len(refused.reasons) == 2


STEP_SUFFIXES = ("_crl", "_chain", "_root", "_info", "_identity", "_extension", "_signature")


def test_steps_are_an_enum_and_every_step_the_verifier_names_is_one_of_them() -> None:
    """The DCAP code names steps as string literals; each must be a Step (VerificationError converts it
    at run time, so a misspelt one would only fail on the path that raises it, which tests may miss)."""
    import ast

    import pytest

    import fedattest
    from fedattest.errors import VerificationError
    from fedattest.steps import Step

    with pytest.raises(ValueError):
        VerificationError("no_such_step", "x")
    assert VerificationError("pck_chain", "x").step is Step.PCK_CHAIN
    names = {s.value for s in Step}
    package = Path(fedattest.__file__).parent
    found = set()
    for path in (package / "dcap").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "VerificationError" and node.args:
                arg = node.args[0]
                if isinstance(arg, ast.Constant):
                    found.add(arg.value)
                elif isinstance(arg, ast.JoinedStr):  # f"{step}_signature": the suffix after each base step
                    suffix = "".join(p.value for p in arg.values if isinstance(p, ast.Constant))
                    found |= {f"{base}{suffix}" for base in ("tcb_info", "qe_identity")}
            assigned = isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)
            if assigned and any(isinstance(t, ast.Name) and t.id == "step" for t in node.targets):
                found.add(node.value.value)
            last = node.args[-1] if isinstance(node, ast.Call) and node.args else None  # chain.check_...(..., what, "step")
            if isinstance(last, ast.Constant) and isinstance(last.value, str) and last.value.endswith(STEP_SUFFIXES):
                found.add(last.value)
    assert len(found) >= 15, f"the scan found too few step names ({sorted(found)}): it is broken"
    assert found <= names, found - names
