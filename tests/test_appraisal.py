"""Appraisal of verified real and re-rooted evidence against reference values."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from pydantic import ValidationError

from fedattest.dcap import TcbStatus, VerifiedQuote, verify_quote
from fedattest.policy import ReferenceValues, appraise
from tests.conftest import load_vector as load
from tests.reroot import rr

SGX_STATUSES = {"UpToDate", "SWHardeningNeeded", "ConfigurationAndSWHardeningNeeded"}


@pytest.fixture(scope="module")
def sgx() -> VerifiedQuote:
    quote, collateral, case = load("phala_sgx_v3")
    return verify_quote(quote, collateral, at=case["at"])


@pytest.fixture(scope="module")
def tdx() -> VerifiedQuote:
    quote, collateral, case = load("phala_tdx_v4")
    return verify_quote(quote, collateral, at=case["at"])


def ref(v: VerifiedQuote, **kw: Any) -> ReferenceValues:
    assert v.mr_enclave is not None
    base: dict[str, Any] = {"mrenclave": {v.mr_enclave.hex()}, "accepted_tcb_statuses": SGX_STATUSES}
    base.update(kw)
    return ReferenceValues(**base)


def test_accepts_matching_mrenclave(sgx: VerifiedQuote) -> None:
    verdict = appraise(sgx, ref(sgx))
    assert verdict.accepted and verdict.reasons == () and verdict.reason == "accepted"
    assert any("ConfigurationAndSWHardeningNeeded" in n for n in verdict.notes)
    assert any("INTEL-SA-00289" in n for n in verdict.notes)


def test_rejects_other_mrenclave(sgx: VerifiedQuote) -> None:
    verdict = appraise(sgx, ref(sgx, mrenclave={"00" * 32}))
    assert not verdict.accepted
    assert verdict.reasons == (f"MRENCLAVE {sgx.mr_enclave.hex()} is not an accepted measurement",)  # type: ignore[union-attr]


def test_default_tcb_statuses_refuse_configuration_needed(sgx: VerifiedQuote) -> None:
    verdict = appraise(sgx, ReferenceValues(mrenclave={sgx.mr_enclave}))  # type: ignore[arg-type]
    assert not verdict.accepted
    assert "TCB status ConfigurationAndSWHardeningNeeded is not accepted" in verdict.reason


def test_mrsigner_product_and_min_svn(sgx: VerifiedQuote) -> None:
    r = sgx.sgx_report
    assert r is not None
    good = ReferenceValues(
        mrsigner=r.mr_signer, isv_prod_id=r.isv_prod_id, min_isv_svn=r.isv_svn, accepted_tcb_statuses=SGX_STATUSES
    )  # type: ignore[arg-type]
    assert appraise(sgx, good).accepted
    assert "below the minimum" in appraise(sgx, good.model_copy(update={"min_isv_svn": r.isv_svn + 1})).reason
    other_product = good.model_copy(update={"isv_prod_id": r.isv_prod_id + 1})
    assert "not the accepted signer and product" in appraise(sgx, other_product).reason


def test_rejected_advisory(sgx: VerifiedQuote) -> None:
    verdict = appraise(sgx, ref(sgx, rejected_advisory_ids={"INTEL-SA-00615"}))
    assert verdict.reasons == ("platform is affected by rejected advisories INTEL-SA-00615",)


def test_every_reason_is_reported(sgx: VerifiedQuote) -> None:
    debug_report = replace(sgx.quote.body, attributes=bytes([0x07]) + sgx.quote.body.attributes[1:])  # type: ignore[type-var]
    fake = replace(sgx, quote=replace(sgx.quote, body=debug_report), simulated=True)
    verdict = appraise(fake, ReferenceValues(mrenclave={"11" * 32}, rejected_advisory_ids={"INTEL-SA-00289"}))
    assert len(verdict.reasons) == 5, verdict.reasons
    assert verdict.reasons[0].startswith("evidence is simulated")
    assert "debug mode" in verdict.reasons[1]


def test_debug_and_simulation_when_allowed(sgx: VerifiedQuote) -> None:
    debug_report = replace(sgx.quote.body, attributes=bytes([0x07]) + sgx.quote.body.attributes[1:])  # type: ignore[type-var]
    fake = replace(sgx, quote=replace(sgx.quote, body=debug_report), simulated=True)
    verdict = appraise(fake, ref(sgx, allow_debug=True, allow_simulation=True))
    assert verdict.accepted
    assert any("simulated" in n for n in verdict.notes) and any("debug" in n for n in verdict.notes)


def test_simulated_evidence_refused_by_default() -> None:
    r, at = rr("phala_sgx_v3")
    v = verify_quote(r.quote, r.collateral, trust_root=r.root_der, at=at)
    assert v.simulated
    assert "simulated" in appraise(v, ref(v)).reason
    assert appraise(v, ref(v, allow_simulation=True)).accepted


def test_revoked_is_never_accepted(sgx: VerifiedQuote) -> None:
    with pytest.raises(ValidationError, match="Revoked"):
        ReferenceValues(mrenclave={"00" * 32}, accepted_tcb_statuses={"Revoked", "UpToDate"})  # type: ignore[arg-type]
    revoked = replace(sgx, tcb_status=TcbStatus.REVOKED)
    assert "TCB status Revoked is not accepted" in appraise(revoked, ref(sgx)).reason


def test_reference_values_must_identify_code() -> None:
    with pytest.raises(ValidationError, match="mrenclave"):
        ReferenceValues()
    with pytest.raises(ValidationError, match="go together"):
        ReferenceValues(mrsigner="00" * 32)  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match=r"64 hex digits|32 bytes"):
        ReferenceValues(mrenclave={"abcd"})  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="contradicts"):
        ReferenceValues(mrenclave={"00" * 32}, accept_any_code=True)  # type: ignore[arg-type]


def test_accept_any_code_is_noted(sgx: VerifiedQuote) -> None:
    verdict = appraise(sgx, ReferenceValues(accept_any_code=True, accepted_tcb_statuses=SGX_STATUSES))  # type: ignore[arg-type]
    assert verdict.accepted and "code identity not checked" in " ".join(verdict.notes)


def test_tdx_appraised_by_mrtd(tdx: VerifiedQuote) -> None:
    assert tdx.mr_td is not None
    assert appraise(tdx, ReferenceValues(mrtd={tdx.mr_td})).accepted  # type: ignore[arg-type]
    assert "MRTD" in appraise(tdx, ReferenceValues(mrtd={"00" * 48})).reason  # type: ignore[arg-type]
    assert "no TDX reference values" in appraise(tdx, ReferenceValues(mrenclave={"00" * 32})).reason  # type: ignore[arg-type]


# -- reference values as composable policies ------------------------------------------------------------


def test_reference_values_are_a_composition_with_the_same_verdicts(sgx: VerifiedQuote, tdx: VerifiedQuote) -> None:
    from fedattest.policy.appraisal import reference_policy

    r = sgx.sgx_report
    assert r is not None and tdx.mr_td is not None
    refs = [
        ref(sgx),
        ref(sgx, mrenclave={"00" * 32}),
        ref(sgx, mrsigner=r.mr_signer.hex(), isv_prod_id=r.isv_prod_id, min_isv_svn=r.isv_svn + 1),
        ref(sgx, accepted_tcb_statuses={"UpToDate"}, rejected_advisory_ids={"INTEL-SA-00615"}),
        ref(sgx, config_id="11" * 64, min_config_svn=3),
        ReferenceValues(mrtd={tdx.mr_td.hex()}),  # type: ignore[arg-type]
        ReferenceValues(accept_any_code=True),
    ]
    for reference in refs:
        for verified in (sgx, tdx):
            assert appraise(verified, reference) == appraise(verified, reference_policy(reference)), reference


def test_any_of_accepts_either_release_and_lists_every_reason_when_neither(sgx: VerifiedQuote) -> None:
    from fedattest.policy.appraisal import AllOf, AnyOf, Mrenclave, PlatformTcb, Signer, Simulation

    r = sgx.sgx_report
    assert r is not None
    platform = PlatformTcb(frozenset(TcbStatus(s) for s in SGX_STATUSES))
    old, new = Mrenclave(frozenset({bytes(32)})), Mrenclave(frozenset({r.mr_enclave}))
    rollout = AllOf(Simulation(), AnyOf(old, new), platform)
    verdict = appraise(sgx, rollout)
    assert verdict.accepted and verdict.verified is sgx
    assert any("ConfigurationAndSWHardeningNeeded" in n for n in verdict.notes)  # notes of every part are kept

    other_signer = Signer(bytes(32), r.isv_prod_id)
    refused = appraise(sgx, AllOf(Simulation(), AnyOf(old, other_signer), platform))
    assert not refused.accepted
    assert refused.reasons == (
        f"MRENCLAVE {r.mr_enclave.hex()} is not an accepted measurement",
        f"MRSIGNER {r.mr_signer.hex()} / ISVPRODID {r.isv_prod_id} is not the accepted signer and product",
    )


def test_compositions_fail_closed(sgx: VerifiedQuote, tdx: VerifiedQuote) -> None:
    from fedattest.policy.appraisal import AllOf, AnyOf, ForTee, LaunchConfig, Mrenclave, Mrtd, PlatformTcb, Refuse, Signer

    r = sgx.sgx_report
    assert r is not None and tdx.mr_td is not None
    assert appraise(sgx, AllOf()).reasons == ("an empty AllOf accepts nothing",)
    assert appraise(sgx, AnyOf()).reasons == ("an empty AnyOf accepts nothing",)
    assert not appraise(sgx, Mrenclave(frozenset())).accepted  # an empty set accepts no enclave
    # Each kind of value refuses evidence of the other kind, instead of passing it unchecked.
    assert "a TD reports none" in appraise(tdx, Mrenclave(frozenset({r.mr_enclave}))).reason
    assert "a TD reports none" in appraise(tdx, Signer(r.mr_signer, r.isv_prod_id)).reason
    assert "a TD reports none" in appraise(tdx, LaunchConfig(min_config_svn=1)).reason
    assert appraise(tdx, LaunchConfig()).accepted
    assert "an SGX enclave reports none" in appraise(sgx, Mrtd(frozenset({tdx.mr_td}))).reason
    either = ForTee(sgx=Mrenclave(frozenset({r.mr_enclave})), tdx=Refuse("no TDs here"))
    assert appraise(sgx, either).accepted and appraise(tdx, either).reasons == ("no TDs here",)
    # Revoked is refused even by a PlatformTcb built by hand to accept it.
    revoked = replace(sgx, tcb_status=TcbStatus.REVOKED)
    assert "Revoked is not accepted" in appraise(revoked, PlatformTcb(frozenset(TcbStatus))).reason
    # ... and by a composition with no PlatformTcb at all, once: the floor is appraise's own.
    floor = appraise(revoked, Mrenclave(frozenset({r.mr_enclave})))
    assert floor.reasons == ("TCB status Revoked is not accepted (Intel revoked this platform's TCB: never accepted)",)
    assert appraise(revoked, ref(sgx)).reason.count("Revoked") == 1


def test_the_package_exports_the_entry_point_and_the_references() -> None:
    import fedattest
    from fedattest.attestation import attest
    from fedattest.policy.appraisal import AnyOf

    assert fedattest.attest is attest and fedattest.AnyOf is AnyOf and fedattest.Step.PCK_CHAIN == "pck_chain"
