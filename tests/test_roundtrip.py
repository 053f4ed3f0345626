"""Property tests: every structure fedattest builds parses back to itself (``parse(build(obj)) == obj``),
every structure it parses builds back to the same bytes (``build(parse(x)) == x``), and every real
vector round-trips byte for byte."""

from __future__ import annotations

import json

import pytest
from cryptography import x509
from hypothesis import example, given, settings
from hypothesis import strategies as st

from fedattest.dcap.collateral import FIELDS, Collateral
from fedattest.errors import CollateralError, FormatError, UnsupportedFormatError
from fedattest.sgx import der
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension, PlatformConfiguration, SgxType
from fedattest.sgx.quote import (
    HEADER_SIZE,
    INTEL_QE_VENDOR_ID,
    SGX_REPORT_BODY_SIZE,
    TD_REPORT10_SIZE,
    TD_REPORT15_SIZE,
    BodyType,
    CertificationData,
    CertificationDataType,
    EcdsaSignatureData,
    QeCertification,
    Quote,
    QuoteHeader,
    ReportBody,
    TdReport,
    TeeType,
)
from tests.conftest import DCAP, QUOTE_CASES, VERIFIABLE_CASES

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

# The quote format only needs certification data type 5; its PEM content is opaque to the parser.
pem_chains = st.binary(min_size=0, max_size=300).map(lambda b: b"-----BEGIN CERTIFICATE-----\n" + b.hex().encode() + b"\x00")
cert_data = st.builds(CertificationData, type=st.just(CertificationDataType.PCK_CERT_CHAIN), data=pem_chains)
qe_certifications = st.builds(
    QeCertification,
    qe_report=report_bodies,
    qe_report_signature=fixed(64),
    qe_auth_data=st.binary(max_size=200),
    certification_data=cert_data,
)
signatures = st.builds(EcdsaSignatureData, quote_signature=fixed(64), attestation_key=fixed(64), qe=qe_certifications)


def header(version: int, tee: int) -> st.SearchStrategy[QuoteHeader]:
    return st.builds(
        QuoteHeader,
        version=st.just(version), attestation_key_type=st.just(2), tee_type=st.just(tee), qe_svn=u16, pce_svn=u16,
        qe_vendor_id=st.one_of(st.just(INTEL_QE_VENDOR_ID), fixed(16)), user_data=fixed(20),
    )  # fmt: skip


quotes = st.one_of(
    st.builds(Quote, header=header(3, TeeType.SGX), body=report_bodies, signature=signatures),
    st.builds(Quote, header=header(4, TeeType.SGX), body=report_bodies, signature=signatures),
    st.builds(Quote, header=header(4, TeeType.TDX), body=td10, signature=signatures),
    st.builds(Quote, header=header(5, TeeType.TDX), body=td10, signature=signatures, body_type=st.just(BodyType.TD_REPORT10)),
    st.builds(Quote, header=header(5, TeeType.TDX), body=td15, signature=signatures, body_type=st.just(BodyType.TD_REPORT15)),
    st.builds(
        Quote,
        header=header(5, TeeType.SGX),
        body=report_bodies,
        signature=signatures,
        body_type=st.just(BodyType.SGX_ENCLAVE_REPORT),
    ),
)


# -- quote structures --------------------------------------------------------------------------------------


@SETTINGS
@given(st.builds(QuoteHeader, version=u16, attestation_key_type=u16, tee_type=u32, qe_svn=u16, pce_svn=u16,
                 qe_vendor_id=fixed(16), user_data=fixed(20)))  # fmt: skip
def test_header_build_parse(h: QuoteHeader) -> None:
    raw = h.to_bytes()
    assert len(raw) == HEADER_SIZE
    assert QuoteHeader.parse(raw) == h
    assert QuoteHeader.parse(raw).to_bytes() == raw


@SETTINGS
@given(fixed(HEADER_SIZE))
def test_header_parse_build(raw: bytes) -> None:
    assert QuoteHeader.parse(raw).to_bytes() == raw


@SETTINGS
@given(report_bodies)
def test_report_body_build_parse(body: ReportBody) -> None:
    raw = body.to_bytes()
    assert len(raw) == SGX_REPORT_BODY_SIZE
    assert ReportBody.parse(raw) == body


@SETTINGS
@given(fixed(SGX_REPORT_BODY_SIZE))
def test_report_body_parse_build(raw: bytes) -> None:
    """Every 384-byte string is a report body, reserved bytes included, and builds back to itself."""
    assert ReportBody.parse(raw).to_bytes() == raw


@SETTINGS
@given(st.one_of(td10, td15), st.data())
def test_td_report_build_parse(report: TdReport, data: st.DataObject) -> None:
    raw = report.to_bytes()
    assert len(raw) == (TD_REPORT15_SIZE if report.is_v15 else TD_REPORT10_SIZE) == report.size
    # TD reports have no parser of their own: they parse as the body of a TDX quote (1.5 only in v5).
    version = 5 if report.is_v15 else data.draw(st.sampled_from([4, 5]))
    quote = Quote(
        data.draw(header(version, TeeType.TDX)),
        report,
        data.draw(signatures),
        body_type=None if version == 4 else BodyType.TD_REPORT15 if report.is_v15 else BodyType.TD_REPORT10,
    )
    parsed = Quote.parse(quote.to_bytes())
    assert parsed.body == report
    assert parsed.body.to_bytes() == raw


@SETTINGS
@given(qe_certifications, fixed(64), fixed(64))
def test_v3_signature_data_layout(qe: QeCertification, sig: bytes, key: bytes) -> None:
    """v3: signature || key || QE report || QE report signature || auth size, data || cert type, size, data."""
    quote = Quote(QuoteHeader(3, 2, 0, 1, 2, INTEL_QE_VENDOR_ID, bytes(20)), qe.qe_report, EcdsaSignatureData(sig, key, qe))
    blob = quote.signature_data_bytes()
    assert blob == sig + key + qe.to_bytes()
    tail = blob[128 + SGX_REPORT_BODY_SIZE + 64 :]
    assert int.from_bytes(tail[:2], "little") == len(qe.qe_auth_data)
    cert = tail[2 + len(qe.qe_auth_data) :]
    assert int.from_bytes(cert[:2], "little") == 5
    assert int.from_bytes(cert[2:6], "little") == len(qe.certification_data.data) == len(cert) - 6
    assert Quote.parse(quote.to_bytes()).signature == quote.signature


@SETTINGS
@given(qe_certifications, fixed(64), fixed(64), st.sampled_from([4, 5]))
def test_v4_v5_signature_data_wraps_qe_certification_in_type_6(qe: QeCertification, sig: bytes, key: bytes, version: int) -> None:
    """v4/v5: signature || key || type 6, size, (QE report ... type 5 PCK chain)."""
    body_type = BodyType.SGX_ENCLAVE_REPORT if version == 5 else None
    quote = Quote(QuoteHeader(version, 2, 0, 1, 2, INTEL_QE_VENDOR_ID, bytes(20)), qe.qe_report, EcdsaSignatureData(sig, key, qe),
                  body_type=body_type)  # fmt: skip
    blob = quote.signature_data_bytes()
    inner = qe.to_bytes()
    assert blob == sig + key + (6).to_bytes(2, "little") + len(inner).to_bytes(4, "little") + inner
    assert Quote.parse(quote.to_bytes()).signature == quote.signature


@SETTINGS
@given(quotes, st.integers(0, 64))
def test_quote_build_parse(quote: Quote, padding: int) -> None:
    raw = quote.to_bytes()
    assert Quote.parse(raw) == quote
    assert Quote.parse(raw).to_bytes() == raw
    assert quote.signed_bytes() == raw[: quote.signed_length()]
    padded = Quote.parse(raw + bytes(padding))
    assert padded == quote and padded.padding == padding and padded.to_bytes() == raw + bytes(padding)


@SETTINGS
@given(quotes, st.integers(1, 255), st.integers(0, 16), st.integers(0, 16))
def test_non_zero_trailing_bytes_are_refused(quote: Quote, junk: int, zeros_before: int, zeros_after: int) -> None:
    with pytest.raises(FormatError, match="not zero padding") as err:
        Quote.parse(quote.to_bytes() + bytes(zeros_before) + bytes([junk]) + bytes(zeros_after))
    assert err.value.field == "quote"


@SETTINGS
@given(quotes)
def test_quote_size_fields_must_agree(quote: Quote) -> None:
    """Growing the signature data length by one swallows a padding byte: the structure no longer fits."""
    raw = quote.to_bytes() + bytes(1)
    n = quote.signed_length()
    sig_len = int.from_bytes(raw[n : n + 4], "little")
    with pytest.raises(FormatError) as err:
        Quote.parse(raw[:n] + (sig_len + 1).to_bytes(4, "little") + raw[n + 4 :])
    assert err.value.field == "quote.signature_data_len"


# -- the PCK certificate's SGX extension ---------------------------------------------------------------------


pck_extensions = st.builds(
    PckExtension,
    ppid=fixed(16),
    tcb_components=st.lists(st.integers(0, 255), min_size=16, max_size=16).map(tuple),
    pcesvn=u16,
    cpusvn=fixed(16),
    pceid=fixed(2),
    fmspc=fixed(6),
    # The three SGX types, and any other ENUMERATED value (the parser does not restrict it).
    sgx_type=st.one_of(st.sampled_from(SgxType), st.integers(-(2**31), 2**31)),
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


@pytest.mark.parametrize("value", [-128, -32768, -(2**31)])
def test_pck_extension_negative_enumerated_round_trips(value: int) -> None:
    ext = PckExtension(bytes(16), tuple(range(16)), 1, bytes(16), bytes(2), bytes(6), value)
    assert PckExtension.parse(ext.to_der()) == ext


@pytest.mark.parametrize("name", [n for n in QUOTE_CASES if "eppid" not in n])  # encrypted PPID: no PCK chain
def test_real_pck_extensions_round_trip_byte_for_byte(name: str) -> None:
    quote = Quote.parse((DCAP / f"{name}.quote").read_bytes())
    leaf = x509.load_pem_x509_certificates(quote.pck_chain_pem)[0]
    raw = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(raw, x509.UnrecognizedExtension)
    ext = PckExtension.parse(raw.value)
    assert ext.to_der() == raw.value
    assert len(ext.tcb_components) == 16
    if ext.sgx_type == SgxType.SCALABLE:  # platform CA certificates carry instance ID and configuration
        assert ext.platform_instance_id is not None and ext.configuration is not None


# -- DER -------------------------------------------------------------------------------------------------------

tlv_values = st.recursive(
    st.one_of(
        st.binary(max_size=300).map(lambda v: der.encode(der.OCTET_STRING, v)),
        st.integers(-(2**70), 2**70).map(der.encode_int),
        st.integers(-(2**31), 2**31).map(lambda n: der.encode_int(n, der.ENUMERATED)),
        st.booleans().map(der.encode_bool),
        st.tuples(st.integers(0, 2), st.integers(0, 39), st.lists(st.integers(0, 2**40), max_size=8)).map(
            lambda a: der.encode_oid(".".join(map(str, [a[0], a[1], *a[2]])))
        ),
    ),
    lambda children: st.lists(children, max_size=5).map(lambda items: der.encode_seq(*items)),
    max_leaves=20,
)


@SETTINGS
@given(st.lists(tlv_values, min_size=1, max_size=5))
def test_der_build_parse(values: list[bytes]) -> None:
    tlvs = der.read_all(b"".join(values), "test")
    assert [der.encode(t.tag, t.value) for t in tlvs] == values

    def check(tlv: der.Tlv, encoded: bytes) -> None:
        assert der.encode(tlv.tag, tlv.value) == encoded
        if tlv.tag == der.SEQUENCE:
            for child in der.read_all(tlv.value, "test"):
                check(child, der.encode(child.tag, child.value))
        elif tlv.tag in (der.INTEGER, der.ENUMERATED):
            assert der.encode_int(der.decode_int(tlv, "test", tlv.tag), tlv.tag) == encoded
        elif tlv.tag == der.OID:
            assert der.encode_oid(der.decode_oid(tlv.value, "test")) == encoded
        elif tlv.tag == der.BOOLEAN:
            assert der.encode_bool(der.decode_bool(tlv, "test")) == encoded

    for value, tlv in zip(values, tlvs, strict=True):
        check(tlv, value)


@pytest.mark.parametrize("size", [0, 1, 0x7F, 0x80, 0x81, 0xFF, 0x100, 0xFFFF, 0x10000, 0x12345])
def test_der_length_forms(size: int) -> None:
    """Short form below 128, then the shortest long form; exactly that form parses back."""
    encoded = der.encode(der.OCTET_STRING, bytes(size))
    header = encoded[: len(encoded) - size]
    expected_len = 1 if size < 0x80 else 1 + (size.bit_length() + 7) // 8
    assert len(header) == 1 + expected_len
    assert der.read_single(encoded, "test") == der.Tlv(der.OCTET_STRING, bytes(size))
    if size >= 0x80:  # the same length with a leading zero byte is not DER
        n = header[1] & 0x7F
        longer = bytes([der.OCTET_STRING, 0x80 | (n + 1), 0]) + header[2:] + bytes(size)
        with pytest.raises(FormatError, match="non-minimal"):
            der.read_single(longer, "test")
    if 0 < size < 0x80:  # a long form for a short length is not DER either
        with pytest.raises(FormatError, match="non-minimal"):
            der.read_single(bytes([der.OCTET_STRING, 0x81, size]) + bytes(size), "test")


@SETTINGS
@given(st.lists(st.integers(0, 2**40), min_size=3, max_size=10))
@example([1, 2, 840, 113741, 1, 13, 1])
def test_oid_build_parse(arcs: list[int]) -> None:
    dotted = ".".join(map(str, [arcs[0] % 3, arcs[1] % 40, *arcs[2:]]))
    tlv = der.read_single(der.encode_oid(dotted), "test")
    assert der.decode_oid(tlv.value, "test") == dotted


# -- collateral ---------------------------------------------------------------------------------------------

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
    text = collateral.to_json()
    assert Collateral.from_json(text) == collateral
    assert Collateral.from_json(text.encode()) == collateral
    assert Collateral.from_json(text).to_json() == text
    assert Collateral.from_json(text).digest == collateral.digest


@SETTINGS
@given(collaterals)
def test_collateral_byte_fields_as_lists_and_uppercase_hex(collateral: Collateral) -> None:
    """serde's Vec<u8> form and upper-case hex read back as the same collateral."""
    as_lists = collateral.to_dict() | {k: list(getattr(collateral, k)) for k in FIELDS if k.endswith(("_crl", "_signature"))}
    assert Collateral.from_json(json.dumps(as_lists)) == collateral
    upper = collateral.to_dict() | {k: getattr(collateral, k).hex().upper() for k in FIELDS if k.endswith(("_crl", "_signature"))}
    assert Collateral.from_json(json.dumps(upper)) == collateral


@SETTINGS
@given(collaterals, st.data())
def test_collateral_digest_covers_every_field(collateral: Collateral, data: st.DataObject) -> None:
    key = data.draw(st.sampled_from(FIELDS))
    value = getattr(collateral, key)
    other = value + (b"\x00" if isinstance(value, bytes) else "x")
    changed = Collateral(**{k: (other if k == key else getattr(collateral, k)) for k in FIELDS})
    assert changed.digest != collateral.digest


def test_collateral_missing_key_is_refused() -> None:
    text = (DCAP / "phala_sgx_v3.collateral.json").read_text()
    for key in FIELDS:
        obj = json.loads(text)
        del obj[key]
        with pytest.raises(CollateralError, match=key):
            Collateral.from_json(json.dumps(obj))


# -- real vectors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUOTE_CASES)
def test_real_quotes_round_trip_byte_for_byte(name: str) -> None:
    path = DCAP / f"{name}.quote"
    raw = path.read_bytes()
    if "eppid" in path.name:  # certification data type 3 (encrypted PPID) is refused by design
        with pytest.raises(UnsupportedFormatError, match="type 3"):
            Quote.parse(raw)
        return
    quote = Quote.parse(raw)
    assert quote.to_bytes() == raw
    assert Quote.parse(quote.to_bytes()) == quote
    assert quote.signed_bytes() == raw[: quote.signed_length()]
    # Every substructure builds back to its own bytes, too.
    assert QuoteHeader.parse(raw[:HEADER_SIZE]) == quote.header
    assert ReportBody.parse(quote.signature.qe.qe_report.to_bytes()) == quote.signature.qe.qe_report
    if isinstance(quote.body, ReportBody):
        assert ReportBody.parse(quote.body.to_bytes()) == quote.body
    if quote.padding:  # the zero padding is kept, and so is everything before it
        assert raw.endswith(bytes(quote.padding))
        assert Quote.parse(raw[: -quote.padding]) == quote


@pytest.mark.parametrize("name", VERIFIABLE_CASES)
def test_real_collateral_round_trips(name: str) -> None:
    path = DCAP / f"{name}.collateral.json"
    collateral = Collateral.from_json(path.read_text())
    assert Collateral.from_json(collateral.to_json()) == collateral
    assert Collateral.from_json(collateral.to_json()).digest == collateral.digest
    original = json.loads(path.read_text())
    for key in ("tcb_info", "qe_identity"):  # the signed text is kept exactly
        assert getattr(collateral, key) == original[key]
