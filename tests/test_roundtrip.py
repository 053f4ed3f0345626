"""Property tests: every structure fedattest builds parses back to itself, and every real vector
round-trips byte for byte."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedattest.dcap.collateral import FIELDS, Collateral
from fedattest.errors import FormatError, UnsupportedFormatError
from fedattest.sgx import der
from fedattest.sgx.pck_extension import PckExtension, PlatformConfiguration
from fedattest.sgx.quote import (
    INTEL_QE_VENDOR_ID,
    BodyType,
    CertificationData,
    EcdsaSignatureData,
    QeCertification,
    Quote,
    QuoteHeader,
    ReportBody,
    TdReport,
)
from tests.conftest import DCAP

SETTINGS = settings(max_examples=150, deadline=None)


def fixed(n: int) -> st.SearchStrategy[bytes]:
    return st.binary(min_size=n, max_size=n)


u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)

report_bodies = st.builds(
    ReportBody,
    cpu_svn=fixed(16), misc_select=u32, isv_ext_prod_id=fixed(16), attributes=fixed(16), mr_enclave=fixed(32),
    mr_signer=fixed(32), config_id=fixed(64), isv_prod_id=u16, isv_svn=u16, config_svn=u16, isv_family_id=fixed(16),
    report_data=fixed(64), reserved1=fixed(12), reserved2=fixed(32), reserved3=fixed(32), reserved4=fixed(42),
)  # fmt: skip

_TD_SIZES = {
    "tee_tcb_svn": 16, "mr_seam": 48, "mr_signer_seam": 48, "seam_attributes": 8, "td_attributes": 8, "xfam": 8,
    "mr_td": 48, "mr_config_id": 48, "mr_owner": 48, "mr_owner_config": 48, "rt_mr0": 48, "rt_mr1": 48, "rt_mr2": 48,
    "rt_mr3": 48, "report_data": 64,
}  # fmt: skip
td10 = st.builds(TdReport, **{k: fixed(n) for k, n in _TD_SIZES.items()})
td15 = st.builds(TdReport, **{k: fixed(n) for k, n in _TD_SIZES.items()}, tee_tcb_svn2=fixed(16), mr_service_td=fixed(48))

# Certification data must be a PEM chain for the quote to parse; its content is opaque to the format.
pem_chains = st.binary(min_size=0, max_size=300).map(lambda b: b"-----BEGIN CERTIFICATE-----\n" + b.hex().encode() + b"\x00")
qe_certifications = st.builds(
    QeCertification,
    qe_report=report_bodies,
    qe_report_signature=fixed(64),
    qe_auth_data=st.binary(max_size=200),
    certification_data=st.builds(CertificationData, type=st.just(5), data=pem_chains),
)
signatures = st.builds(EcdsaSignatureData, quote_signature=fixed(64), attestation_key=fixed(64), qe=qe_certifications)


def header(version: int, tee: int) -> st.SearchStrategy[QuoteHeader]:
    return st.builds(
        QuoteHeader,
        version=st.just(version), attestation_key_type=st.just(2), tee_type=st.just(tee), qe_svn=u16, pce_svn=u16,
        qe_vendor_id=st.one_of(st.just(INTEL_QE_VENDOR_ID), fixed(16)), user_data=fixed(20),
    )  # fmt: skip


quotes = st.one_of(
    st.builds(Quote, header=header(3, 0), body=report_bodies, signature=signatures),
    st.builds(Quote, header=header(4, 0), body=report_bodies, signature=signatures),
    st.builds(Quote, header=header(4, 0x81), body=td10, signature=signatures),
    st.builds(Quote, header=header(5, 0x81), body=td10, signature=signatures, body_type=st.just(BodyType.TD_REPORT10)),
    st.builds(Quote, header=header(5, 0x81), body=td15, signature=signatures, body_type=st.just(BodyType.TD_REPORT15)),
    st.builds(
        Quote, header=header(5, 0), body=report_bodies, signature=signatures, body_type=st.just(BodyType.SGX_ENCLAVE_REPORT)
    ),
)


@SETTINGS
@given(quotes, st.integers(0, 64))
def test_quote_build_parse(quote: Quote, padding: int) -> None:
    raw = quote.to_bytes()
    assert Quote.parse(raw) == quote
    assert Quote.parse(raw).to_bytes() == raw
    padded = Quote.parse(raw + bytes(padding))
    assert padded == quote and padded.padding == padding and padded.to_bytes() == raw + bytes(padding)


@SETTINGS
@given(quotes, st.integers(1, 255), st.integers(0, 16))
def test_non_zero_trailing_bytes_are_refused(quote: Quote, junk: int, zeros: int) -> None:
    with pytest.raises(FormatError, match="not zero padding"):
        Quote.parse(quote.to_bytes() + bytes(zeros) + bytes([junk]))


@SETTINGS
@given(header(3, 0))
def test_header_build_parse(h: QuoteHeader) -> None:
    assert QuoteHeader.parse(h.to_bytes()) == h


@SETTINGS
@given(report_bodies)
def test_report_body_build_parse(body: ReportBody) -> None:
    assert ReportBody.parse(body.to_bytes()) == body


@SETTINGS
@given(st.one_of(td10, td15))
def test_td_report_build_parse(report: TdReport) -> None:
    raw = report.to_bytes()
    assert len(raw) == report.size
    quote_body = Quote(
        QuoteHeader(4, 2, 0x81, 0, 0, INTEL_QE_VENDOR_ID, bytes(20)),
        report,
        EcdsaSignatureData(bytes(64), bytes(64), QeCertification(
            ReportBody.parse(bytes(384)), bytes(64), b"", CertificationData(5, b"-----BEGIN")
        )),
        body_type=BodyType.TD_REPORT15 if report.is_v15 else BodyType.TD_REPORT10,
    )  # fmt: skip
    quote = replace(quote_body, header=replace(quote_body.header, version=5))
    assert Quote.parse(quote.to_bytes()).body == report


pck_extensions = st.builds(
    PckExtension,
    ppid=fixed(16),
    tcb_components=st.lists(st.integers(0, 255), min_size=16, max_size=16).map(tuple),
    pcesvn=u16,
    cpusvn=fixed(16),
    pceid=fixed(2),
    fmspc=fixed(6),
    sgx_type=st.integers(0, 2),
    platform_instance_id=st.one_of(st.none(), fixed(16)),
    configuration=st.one_of(
        st.none(),
        st.builds(
            PlatformConfiguration,
            dynamic_platform=st.one_of(st.none(), st.booleans()),
            cached_keys=st.one_of(st.none(), st.booleans()),
            smt_enabled=st.one_of(st.none(), st.booleans()),
        ),
    ),
)


@SETTINGS
@given(pck_extensions)
def test_pck_extension_build_parse(ext: PckExtension) -> None:
    raw = ext.to_der()
    assert PckExtension.parse(raw) == ext
    assert PckExtension.parse(raw).to_der() == raw


tlv_values = st.recursive(
    st.one_of(
        st.binary(max_size=300).map(lambda v: der.encode(der.OCTET_STRING, v)),
        st.integers(0, 2**70).map(der.encode_int),
        st.booleans().map(der.encode_bool),
        st.lists(st.integers(0, 2**40), min_size=1, max_size=8).map(lambda a: der.encode_oid("1.2." + ".".join(map(str, a)))),
    ),
    lambda children: st.lists(children, max_size=5).map(lambda items: der.encode_seq(*items)),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(tlv_values, min_size=1, max_size=5))
def test_der_build_parse(values: list[bytes]) -> None:
    tlvs = der.read_all(b"".join(values), "test")
    assert [der.encode(t.tag, t.value) for t in tlvs] == values
    for value, tlv in zip(values, tlvs, strict=True):
        if tlv.tag == der.INTEGER:
            assert der.encode_int(der.decode_int(tlv, "test")) == value
        if tlv.tag == der.OID:
            assert der.encode_oid(der.decode_oid(tlv.value, "test")) == value


collaterals = st.builds(
    Collateral,
    # CRLs that look like PEM are converted to DER on read (tested elsewhere), so keep these binary.
    **{
        key: (
            st.binary(max_size=100).filter(lambda b: not b.lstrip().startswith(b"-----BEGIN"))
            if key.endswith(("_crl", "_signature"))
            else st.text(max_size=100)
        )
        for key in FIELDS
    },
)


@SETTINGS
@given(collaterals)
def test_collateral_json_round_trip(collateral: Collateral) -> None:
    assert Collateral.from_json(collateral.to_json()) == collateral
    assert Collateral.from_json(collateral.to_json()).digest == collateral.digest


@pytest.mark.parametrize("path", sorted(DCAP.glob("*.quote")), ids=lambda p: p.stem)
def test_real_quotes_round_trip_byte_for_byte(path: object) -> None:
    raw = path.read_bytes()  # type: ignore[attr-defined]
    if "eppid" in str(path):  # certification data type 3 (encrypted PPID) is refused by design
        with pytest.raises(UnsupportedFormatError, match="type 3"):
            Quote.parse(raw)
        return
    quote = Quote.parse(raw)
    assert quote.to_bytes() == raw
    assert Quote.parse(quote.to_bytes()) == quote


@pytest.mark.parametrize("path", sorted(DCAP.glob("*.collateral.json")), ids=lambda p: p.name.split(".")[0])
def test_real_collateral_round_trips(path: object) -> None:
    collateral = Collateral.from_json(path.read_text())  # type: ignore[attr-defined]
    assert Collateral.from_json(collateral.to_json()) == collateral
