"""The DCAP verifier against real hardware evidence, dcap-qvl, and re-rooted evidence edited to fail
each check on purpose (see tests/reroot.py)."""

from __future__ import annotations

import base64
import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import dcap_qvl
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from fedattest.dcap import Collateral, QuoteVerifier, TcbStatus, chain, verify_quote
from fedattest.errors import FedattestError, UnsupportedFormatError, VerificationError
from fedattest.sgx import der
from fedattest.sgx.quote import Quote
from tests.conftest import DCAP, dcap_expected, load_vector, verifiable_cases
from tests.reroot import Rerooted, rr

# Where we are deliberately stricter than dcap-qvl; each documented in expected.json or here.
STRICTER = {"oasis_sgx_v3": "root_ca_crl"}


def root_for(case: dict[str, Any]) -> bytes | None:
    return (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None


def qvl(quote: bytes, collateral: Collateral, at: int, root: bytes | None) -> tuple[str, list[str]] | str:
    """dcap-qvl's verdict: (status, advisories) or its error text."""
    c = dcap_qvl.QuoteCollateralV3.from_json(collateral.to_json())
    try:
        r = dcap_qvl.verify_with_root_ca(quote, c, root, at) if root else dcap_qvl.verify(quote, c, at)
    except ValueError as exc:
        return str(exc)
    return r.status, list(r.advisory_ids)


@pytest.mark.parametrize("name", verifiable_cases())
def test_real_vectors_match_recorded_and_live_dcap_qvl(name: str) -> None:
    quote, collateral, case = load_vector(name)
    root = root_for(case)
    live = qvl(quote, collateral, case["at"], root)
    if case["accepted"]:
        assert live == (case["status"], case["advisory_ids"]), "dcap-qvl no longer gives its recorded verdict"
    if name in STRICTER:
        with pytest.raises(VerificationError) as err:
            verify_quote(quote, collateral, trust_root=root, at=case["at"])
        assert err.value.step == STRICTER[name]
        return
    if not case["accepted"]:
        assert isinstance(live, str)
        with pytest.raises(VerificationError) as err:
            verify_quote(quote, collateral, trust_root=root, at=case["at"])
        assert err.value.step == "tcb_level"
        assert "below every TCB level" in str(err.value)
        return
    v = verify_quote(quote, collateral, trust_root=root, at=case["at"])
    assert v.tcb_status == case["status"]
    assert list(v.advisory_ids) == case["advisory_ids"]
    assert v.simulated == (root is not None)
    assert v.collateral_expiry > datetime.fromtimestamp(case["at"], UTC)
    assert v.quote.to_bytes() == quote


def test_oasis_crl_not_yet_valid_names_the_crl() -> None:
    quote, collateral, case = load_vector("oasis_sgx_v3")
    with pytest.raises(VerificationError, match=r"root CA CRL is not yet valid"):
        verify_quote(quote, collateral, at=case["at"])


def test_eppid_quote_is_refused_clearly() -> None:
    data = (DCAP / "oasis_sgx_v3_eppid_certtype3.quote").read_bytes()
    _, collateral, _ = load_vector("oasis_sgx_v3")
    with pytest.raises(UnsupportedFormatError) as err:
        verify_quote(data, collateral)
    assert err.value.field.endswith("certification_data.type")
    assert "type 3" in str(err.value) and "PCK certificate chain" in str(err.value)


def test_simulated_evidence_is_not_accepted_under_intel_root() -> None:
    quote, collateral, case = load_vector("independent_sim_sgx_v3")
    with pytest.raises(VerificationError) as err:
        verify_quote(quote, collateral, at=case["at"])  # default trust root: Intel's
    assert err.value.step == "root_ca_crl"


def test_real_evidence_under_a_foreign_root_is_rejected() -> None:
    quote, collateral, case = load_vector("phala_sgx_v3")
    with pytest.raises(VerificationError) as err:
        verify_quote(quote, collateral, trust_root=(DCAP / "independent_sim_root_ca.der").read_bytes(), at=case["at"])
    assert err.value.step == "root_ca_crl"


@pytest.mark.parametrize("name", ["phala_sgx_v3", "phala_tdx_v4", "gotdx_v5_sample"])
def test_expiry_is_enforced_even_from_a_warm_cache(name: str) -> None:
    quote, collateral, case = load_vector(name)
    verifier = QuoteVerifier()
    v = verifier.verify(quote, collateral, at=case["at"])
    after = v.collateral_expiry + timedelta(seconds=1)
    with pytest.raises(VerificationError, match="expired") as err:
        verifier.verify(quote, collateral, at=after)
    assert err.value.step in {"root_ca_crl", "pck_crl", "pck_chain", "tcb_info_validity", "qe_identity_validity"}
    # Still exactly valid at the expiry instant.
    assert verifier.verify(quote, collateral, at=v.collateral_expiry).tcb_status == case["status"]


def test_verification_time_must_be_timezone_aware() -> None:
    quote, collateral, _ = load_vector("phala_sgx_v3")
    with pytest.raises(FedattestError, match="timezone"):
        verify_quote(quote, collateral, at=datetime(2025, 6, 19))


def test_cache_is_keyed_by_content() -> None:
    quote, collateral, case = load_vector("phala_sgx_v3")
    verifier = QuoteVerifier()
    verifier.verify(quote, collateral, at=case["at"])
    forged = replace(collateral, tcb_info=collateral.tcb_info.replace('"svn":11', '"svn":10', 1))
    with pytest.raises(VerificationError) as err:
        verifier.verify(quote, forged, at=case["at"])
    assert err.value.step == "tcb_info_signature"


# -- re-rooted evidence: one edit, one failing step --------------------------------------------
SGX = "phala_sgx_v3"
TDX = "phala_tdx_v4"


def verify_rr(r: Rerooted, at: int) -> Any:
    return verify_quote(r.quote, r.collateral, trust_root=r.root_der, at=at)


def expect_step(step: str, name: str = SGX, match: str | None = None, *, qvl_rejects: bool = True, **edits: Any) -> None:
    """Verification fails at ``step``; and dcap-qvl rejects too unless we are documented as stricter."""
    r, at = rr(name, **edits)
    with pytest.raises(VerificationError, match=match) as err:
        verify_rr(r, at)
    assert err.value.step == step, str(err.value)
    assert isinstance(qvl(r.quote, r.collateral, at, r.root_der), str) == qvl_rejects


def edit(path: str, value: Any) -> Any:
    def apply(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        *parents, last = path.split(".")
        node: Any = out
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value
        return out

    return apply


def test_rerooted_evidence_verifies_like_the_original() -> None:
    for name in (SGX, TDX, "gotdx_v5_sample"):
        r, at = rr(name)
        v = verify_rr(r, at)
        assert v.tcb_status == dcap_expected()[name]["status"] and v.simulated
        case = dcap_expected()[name]
        assert qvl(r.quote, r.collateral, at, r.root_der) == (case["status"], case["advisory_ids"])


def test_tcb_info_for_another_fmspc() -> None:
    expect_step("tcb_info_match", edit_tcb_info=edit("fmspc", "00906EA10000"), match="FMSPC")


def test_tcb_info_for_another_pceid() -> None:
    r, at = rr(SGX, edit_tcb_info=edit("pceId", "0100"))
    with pytest.raises(VerificationError, match="PCEID") as err:
        verify_rr(r, at)
    assert err.value.step == "tcb_info_match"


def test_sgx_tcb_info_for_a_tdx_quote() -> None:
    def as_sgx(doc: dict[str, Any]) -> dict[str, Any]:
        return {**doc, "id": "SGX"}

    expect_step("tcb_info_match", name=TDX, edit_tcb_info=as_sgx)


def test_unsupported_tcb_info_version() -> None:
    # dcap-qvl does not check the TCB info version; we refuse formats we do not know (fail closed).
    expect_step("tcb_info", edit_tcb_info=edit("version", 4), qvl_rejects=False)


def test_tcb_info_window() -> None:
    expect_step("tcb_info_validity", edit_tcb_info=edit("nextUpdate", "2020-01-01T00:00:00Z"), match="expired")
    expect_step("tcb_info_validity", edit_tcb_info=edit("issueDate", "2030-01-01T00:00:00Z"), match="not yet valid")


def test_platform_below_every_tcb_level() -> None:
    def raise_all(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        for level in out["tcbLevels"]:
            level["tcb"]["pcesvn"] = 99
        return out

    expect_step("tcb_level", edit_tcb_info=raise_all)


def test_revoked_tcb_level_is_reported_not_hidden() -> None:
    def revoke_all(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        for level in out["tcbLevels"]:
            level["tcbStatus"] = "Revoked"
        return out

    r, at = rr(SGX, edit_tcb_info=revoke_all)
    assert verify_rr(r, at).tcb_status == TcbStatus.REVOKED
    assert isinstance(qvl(r.quote, r.collateral, at, r.root_der), str)  # dcap-qvl refuses Revoked outright


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("mrsigner", "00" * 32),
        ("isvprodid", 7),
        ("miscselect", "00000001"),
        ("attributes", "13000000000000000000000000000000"),
    ],
)
def test_qe_report_must_match_qe_identity(path: str, value: Any) -> None:
    expect_step("qe_identity", edit_qe_identity=edit(path, value))


def test_qe_below_every_qe_identity_level() -> None:
    expect_step(
        "qe_identity",
        edit_qe_identity=edit(
            "tcbLevels", [{"tcb": {"isvsvn": 200}, "tcbDate": "2024-03-13T00:00:00Z", "tcbStatus": "UpToDate"}]
        ),
    )


def test_out_of_date_qe_converges_as_intel_qvl() -> None:
    def qe_out_of_date(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        out["tcbLevels"] = [
            {"tcb": {"isvsvn": 0}, "tcbDate": "2019-01-01T00:00:00Z", "tcbStatus": "OutOfDate", "advisoryIDs": ["INTEL-SA-00999"]}
        ]
        return out

    r, at = rr(SGX, edit_qe_identity=qe_out_of_date)
    v = verify_rr(r, at)
    # Platform ConfigurationAndSWHardeningNeeded + QE OutOfDate: Intel's QVL converges to
    # OutOfDateConfigurationNeeded (and so does dcap-qvl, by severity order).
    assert v.tcb_status == TcbStatus.OUT_OF_DATE_CONFIGURATION_NEEDED
    assert v.qe_tcb_status == TcbStatus.OUT_OF_DATE
    assert v.advisory_ids == ("INTEL-SA-00289", "INTEL-SA-00615", "INTEL-SA-00999")
    assert qvl(r.quote, r.collateral, at, r.root_der) == ("OutOfDateConfigurationNeeded", list(v.advisory_ids))


def test_qe_identity_for_the_wrong_tee() -> None:
    expect_step("qe_identity_match", edit_qe_identity=edit("id", "TD_QE"))


def test_qe_identity_window() -> None:
    expect_step("qe_identity_validity", edit_qe_identity=edit("nextUpdate", "2020-01-01T00:00:00Z"))


def test_revoked_pck_certificate() -> None:
    expect_step("revocation", revoke_pck=True, match="PCK certificate .* is revoked")


def test_revoked_pck_ca() -> None:
    expect_step("revocation", revoke_ca=True)


def test_expired_pck_certificate() -> None:
    at = dcap_expected()[SGX]["at"]
    expect_step("pck_chain", pck_not_after=datetime.fromtimestamp(at - 86400, UTC), match="expired")


def test_crl_not_yet_valid() -> None:
    future = datetime(2031, 1, 1, tzinfo=UTC)
    # dcap-qvl does not compare a CRL's thisUpdate with the verification time (see expected.json).
    expect_step("root_ca_crl", crl_window=(future, future + timedelta(days=30)), match="not yet valid", qvl_rejects=False)


def test_crl_expired() -> None:
    past = datetime(2020, 1, 1, tzinfo=UTC)
    expect_step("root_ca_crl", crl_window=(past, past + timedelta(days=30)), match="expired")


def test_qe_report_data_must_bind_the_attestation_key() -> None:
    expect_step("qe_report_data", edit_qe_report=lambda rep: replace(rep, report_data=bytes(64)))


def test_debug_qe_is_refused() -> None:
    def debug(rep: Any) -> Any:
        return replace(rep, attributes=bytes([rep.attributes[0] | 0x02]) + rep.attributes[1:])

    expect_step("qe_identity", edit_qe_report=debug)


def test_tdx_module_signer_must_match() -> None:
    expect_step("tdx_module", name=TDX, edit_tcb_info=edit("tdxModuleIdentities.1.mrsigner", "11" * 48))  # TDX_01


def test_tdx_module_identity_must_exist() -> None:
    # phala_tdx_v4's TEE_TCB_SVN is 06 01 ...: module ISVSVN 6, major version 1, so TDX_01 applies.
    def drop_01(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        out["tdxModuleIdentities"] = [i for i in out["tdxModuleIdentities"] if i["id"] != "TDX_01"]
        return out

    expect_step("tdx_module", name=TDX, edit_tcb_info=drop_01, match="TDX_01")


def test_out_of_date_tdx_module_downgrades_status() -> None:
    def module_ood(doc: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(doc)
        for ident in out["tdxModuleIdentities"]:
            for level in ident["tcbLevels"]:
                level["tcbStatus"] = "OutOfDate"
        return out

    r, at = rr(TDX, edit_tcb_info=module_ood)
    assert verify_rr(r, at).tcb_status == TcbStatus.OUT_OF_DATE
    assert qvl(r.quote, r.collateral, at, r.root_der)[0] == "OutOfDate"  # type: ignore[index]


def test_issuer_chain_must_end_at_the_trust_root() -> None:
    r, at = rr(SGX)
    other, _ = rr(SGX)
    bad = replace(r.collateral, tcb_info_issuer_chain=other.collateral.tcb_info_issuer_chain)
    with pytest.raises(VerificationError) as err:
        verify_quote(r.quote, bad, trust_root=r.root_der, at=at)
    assert err.value.step == "tcb_info_chain"


def test_pck_chain_from_another_root() -> None:
    r, at = rr(SGX)
    other, _ = rr(SGX)
    with pytest.raises(VerificationError) as err:
        verify_quote(other.quote, r.collateral, trust_root=r.root_der, at=at)
    assert err.value.step == "pck_chain"


def test_foreign_qe_vendor() -> None:
    quote, collateral, case = load_vector(SGX)
    q = Quote.parse(quote)
    forged = replace(q, header=replace(q.header, qe_vendor_id=bytes(16))).to_bytes()
    with pytest.raises(VerificationError) as err:
        verify_quote(forged, collateral, at=case["at"])
    assert err.value.step == "quote_header"


# -- the unsigned outer DER layer of certificates and CRLs (fedattest.dcap.chain.check_signed_der) ------------


def _tlv(tag: int, value: bytes) -> bytes:
    return der.encode(tag, value)


def _outer_variants(raw: bytes) -> dict[str, tuple[bytes, bool]]:
    """Re-encodings of a certificate or CRL that carry the same signed content: name -> (bytes, whether
    cryptography's own parser refuses them). chain.check_signed_der relies on the parser for the first
    kind and checks the second kind itself."""
    tbs, alg, bits = der.read_all(der.read_single(raw, "t").value, "t")
    t, a = _tlv(tbs.tag, tbs.value), _tlv(alg.tag, alg.value)
    body = t + a + _tlv(0x03, bits.value)
    r, s = der.read_all(der.read_single(bits.value[1:], "t").value, "t")
    long_r = _tlv(0x02, b"\x00" + r.value)  # a non-minimal INTEGER
    n = len(body)
    return {
        "trailing byte": (raw + b"\x00", True),
        "outer SET": (_tlv(0x31, body), True),
        "outer length not minimal": (b"\x30\x83" + n.to_bytes(3, "big") + body, True),
        "outer length indefinite": (b"\x30\x80" + body + b"\x00\x00", True),
        "tbs not a SEQUENCE": (_tlv(0x30, _tlv(0x31, tbs.value) + a + _tlv(0x03, bits.value)), True),
        "algorithm not a SEQUENCE": (_tlv(0x30, t + _tlv(0x31, alg.value) + _tlv(0x03, bits.value)), True),
        "signature not a BIT STRING": (_tlv(0x30, t + a + _tlv(0x04, bits.value)), True),
        "element after the signature": (_tlv(0x30, body + b"\x05\x00"), True),
        "BIT STRING length not minimal": (_tlv(0x30, t + a + bytes([0x03, 0x81, len(bits.value)]) + bits.value), True),
        "BIT STRING declares unused bits": (_tlv(0x30, t + a + _tlv(0x03, b"\x01" + bits.value[1:-1] + b"\x00")), False),
        "ECDSA INTEGER not minimal": (_tlv(0x30, t + a + _tlv(0x03, b"\x00" + _tlv(0x30, long_r + _tlv(0x02, s.value)))), False),
        "ECDSA signature with trailing bytes": (_tlv(0x30, t + a + _tlv(0x03, bits.value + b"\x00")), False),
        "ECDSA r negative": (
            _tlv(0x30, t + a + _tlv(0x03, b"\x00" + _tlv(0x30, _tlv(0x02, b"\xff") + _tlv(0x02, s.value)))),
            False,
        ),
    }


def _pem(ders: list[bytes]) -> bytes:
    out = b""
    for d in ders:
        b64 = base64.b64encode(d)
        out += b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(b64[i : i + 64] for i in range(0, len(b64), 64))
        out += b"\n-----END CERTIFICATE-----\n"
    return out


def _pck_chain_ders() -> list[bytes]:
    quote, _, _ = load_vector("phala_sgx_v3")
    return [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(Quote.parse(quote).pck_chain_pem)]


@pytest.mark.parametrize("variant", sorted(_outer_variants(_pck_chain_ders()[0])))
def test_certificate_outer_layer_is_strict_der(variant: str) -> None:
    ders = _pck_chain_ders()
    mutated, parser_refuses = _outer_variants(ders[0])[variant]
    if parser_refuses:  # what check_signed_der leaves to cryptography: pinned, in case a release relaxes it
        with pytest.raises(ValueError):
            x509.load_der_x509_certificate(mutated)
    with pytest.raises(VerificationError) as err:
        chain.load_pem_chain(_pem([mutated, *ders[1:]]), "PCK certificate chain", "pck_chain")
    assert err.value.step == "pck_chain"
    if not parser_refuses:
        assert "is not strict DER" in err.value.detail


@pytest.mark.parametrize("key", ["root_ca_crl", "pck_crl"])
@pytest.mark.parametrize("variant", sorted(_outer_variants(load_vector("phala_sgx_v3")[1].pck_crl)))
def test_crl_outer_layer_is_strict_der(key: str, variant: str) -> None:
    raw = getattr(load_vector("phala_sgx_v3")[1], key)
    mutated, parser_refuses = _outer_variants(raw)[variant]
    if parser_refuses:
        with pytest.raises(ValueError):
            x509.load_der_x509_crl(mutated)
    with pytest.raises(VerificationError) as err:
        chain.load_crl(mutated, "CRL", key)
    if not parser_refuses:
        assert "is not strict DER" in err.value.detail


def _nonzero_trailing_bits(pem: bytes) -> bytes:
    """``pem`` with the last base64 digit of its first padded certificate changed in the bits that
    padding leaves unused: it decodes to the same bytes, but is not the canonical encoding."""
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    end = pem.index(b"=\n-----END")
    pad = 2 if pem[end - 1 : end] == b"=" else 1
    pos = end - pad
    digit = alphabet.index(pem[pos])
    changed = alphabet[digit | (0b1111 if pad == 2 else 0b11)]
    assert changed != pem[pos]
    return pem[:pos] + bytes([changed]) + pem[pos + 1 :]


def test_plain_pem_chains_read_as_cryptography_reads_them() -> None:
    """chain.load_pem_chain decodes the usual PEM layout itself (to keep each certificate's DER without
    re-encoding it) and leaves any other layout to cryptography: both must find the same certificates."""
    ders = _pck_chain_ders()
    plain = _pem(ders)
    variants = [
        plain,
        plain.rstrip(b"\n"),
        plain.replace(b"\n", b"\r\n"),
        b"subject=CN=x\n" + plain,
        plain.replace(b"-----\n-----", b"-----\n\n-----"),
        plain.replace(b"\n", b"\n\x0b", 1),
        plain.replace(b"\n", b" \n"),
        plain.replace(b"=\n-----END", b"\n-----END"),  # no padding
        _nonzero_trailing_bits(plain),  # the same bytes in base64 that is not canonical
    ]
    quote, collateral, _ = load_vector("gotdx_v5_sample")
    variants += [Quote.parse(quote).pck_chain_pem, collateral.tcb_info_issuer_chain.encode()]
    for text in variants:
        try:
            expected: list[bytes] | None = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(text)]
        except ValueError:
            expected = None
        try:
            got: list[bytes] | None = [c.der for c in chain.load_pem_chain_der(text, "chain", "pck_chain")]
        except VerificationError:
            got = None
        assert got == expected, text[:120]
    assert chain.load_pem_chain_der(plain, "chain", "pck_chain")[0].der == ders[0]
