"""Fuzzing the parsers and the verifier: whatever the bytes, only fedattest errors come out.

Random inputs, every truncation of the real quotes (and of the PCK extension and TCB documents), random
flips, insertions and deletions of real quotes, PCK extensions, certificates and collateral, and random
JSON edits of collateral — through each parser, and through the verifier. Nothing but a
:class:`~fedattest.errors.FedattestError` may escape (no IndexError, struct.error, ValueError,
UnicodeDecodeError, KeyError, TypeError ...), a :class:`FormatError` names the field and a
:class:`VerificationError` the step.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedattest.dcap.collateral import FIELDS, Collateral, validity_window
from fedattest.dcap.tcb import EnclaveIdentity, TcbInfo
from fedattest.dcap.verify import QuoteVerifier, verify_quote
from fedattest.errors import CollateralError, FedattestError, FormatError, VerificationError
from fedattest.sgx import der
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension
from fedattest.sgx.quote import Quote, QuoteHeader, ReportBody
from tests.conftest import DCAP, QUOTE_CASES, VERIFIABLE_CASES, dcap_expected, verifiable_cases
from tests.reroot import reroot

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
VERIFY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# Mutated certificate names make cryptography warn (e.g. a country code of the wrong length).
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")]


@cache
def quote_bytes(name: str) -> bytes:
    return (DCAP / f"{name}.quote").read_bytes()


@cache
def pck_extension_der(name: str = "phala_sgx_v3") -> bytes:
    leaf = x509.load_pem_x509_certificates(Quote.parse(quote_bytes(name)).pck_chain_pem)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


@cache
def collateral_text(name: str) -> str:
    return (DCAP / f"{name}.collateral.json").read_text()


def collateral_json(name: str) -> dict[str, Any]:
    return json.loads(collateral_text(name))  # type: ignore[no-any-return]


def check_error(exc: FedattestError) -> None:
    """A FormatError names a field, a VerificationError a step, and every error says something."""
    if isinstance(exc, FormatError):
        assert exc.field and exc.detail, exc
    elif isinstance(exc, VerificationError):
        assert exc.step and exc.detail, exc
    assert str(exc), type(exc)


def only_fedattest_errors(parse: Callable[[Any], Any], data: Any) -> Any:
    """``parse(data)``: its result, or None when it raised a FedattestError (checked by
    :func:`check_error`). Anything else propagates and fails the test."""
    try:
        return parse(data)
    except FedattestError as exc:
        check_error(exc)
    return None


def tcb_info_parse(data: bytes | str) -> TcbInfo:
    return TcbInfo.parse(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)


def qe_identity_parse(data: bytes | str) -> EnclaveIdentity:
    return EnclaveIdentity.parse(data.decode("utf-8", "replace") if isinstance(data, bytes) else data)


PARSERS: dict[str, Callable[[bytes], Any]] = {
    "quote": Quote.parse,
    "header": QuoteHeader.parse,
    "report_body": ReportBody.parse,
    "pck_extension": PckExtension.parse,
    "der": lambda b: der.read_all(b, "fuzz"),
    "der_single": lambda b: der.read_single(b, "fuzz"),
    "collateral": Collateral.from_json,
    "tcb_info": tcb_info_parse,
    "qe_identity": qe_identity_parse,
}


# -- (a) random input ------------------------------------------------------------------------------------


@pytest.mark.parametrize("parser", sorted(PARSERS))
@FUZZ
@given(data=st.binary(max_size=2000))
@example(data=b"")
@example(data=b"\x30\x84\xff\xff\xff\xff")  # a DER length far past the end
@example(data=b"\x30\x80\x00\x00")  # indefinite length
def test_random_bytes(parser: str, data: bytes) -> None:
    only_fedattest_errors(PARSERS[parser], data)


@pytest.mark.parametrize("parser", ["quote", "pck_extension", "der"])
@FUZZ
@given(data=st.data())
def test_random_bytes_behind_a_valid_prefix(parser: str, data: st.DataObject) -> None:
    """Random bytes after a real prefix get past the first checks, deep into the structure."""
    real = {"quote": quote_bytes("phala_tdx_v4"), "pck_extension": pck_extension_der(), "der": pck_extension_der()}[parser]
    cut = data.draw(st.integers(0, len(real)))
    only_fedattest_errors(PARSERS[parser], real[:cut] + data.draw(st.binary(max_size=600)))


@st.composite
def der_numbers(draw: st.DrawFn) -> bytes:
    tag = draw(st.sampled_from([der.INTEGER, der.ENUMERATED, der.BOOLEAN, der.OID, der.OCTET_STRING]))
    return der.encode(tag, draw(st.binary(max_size=12)))


@FUZZ
@given(data=st.data())
def test_random_der_values_through_the_decoders(data: st.DataObject) -> None:
    """decode_int / decode_bool / decode_oid on arbitrary TLVs: a value or a FormatError."""
    tlv = der.read_single(data.draw(der_numbers()), "fuzz")
    only_fedattest_errors(lambda t: der.decode_int(t, "fuzz"), tlv)
    only_fedattest_errors(lambda t: der.decode_int(t, "fuzz", der.ENUMERATED), tlv)
    only_fedattest_errors(lambda t: der.decode_bool(t, "fuzz"), tlv)
    only_fedattest_errors(lambda t: der.decode_oid(t.value, "fuzz"), tlv)


json_values = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20),
        st.sampled_from(["", "00", "zz", "2025-06-19T10:56:11Z", "2025-06-19", "UpToDate", "Revoked", "SGX", "TDX"]),
    ),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=10), children, max_size=3)),
    max_leaves=8,
)  # fmt: skip


@pytest.mark.parametrize("parser", ["collateral", "tcb_info", "qe_identity"])
@FUZZ
@given(value=json_values)
def test_random_json(parser: str, value: Any) -> None:
    only_fedattest_errors(PARSERS[parser], json.dumps(value).encode())


# -- (b) truncations -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", QUOTE_CASES)
def test_every_truncation_of_real_quotes(name: str) -> None:
    raw = quote_bytes(name)
    for n in range(len(raw)):
        try:
            Quote.parse(raw[:n])
        except FormatError as exc:
            assert exc.field
        else:  # only a quote whose remainder is zero padding may parse when cut short
            assert not raw[n:].strip(b"\x00"), n


@pytest.mark.parametrize("name", QUOTE_CASES)
def test_every_extension_of_real_quotes_by_one_byte(name: str) -> None:
    """Inserting one byte anywhere: a FormatError (no length can absorb it), or zero padding at the end."""
    raw = quote_bytes(name)
    for n in range(0, len(raw) + 1, 3):
        only_fedattest_errors(Quote.parse, raw[:n] + b"\x01" + raw[n:])


@pytest.mark.parametrize("name", ["phala_sgx_v3", "gotdx_v5_sample"])
def test_every_truncation_of_real_pck_extensions(name: str) -> None:
    raw = pck_extension_der(name)
    for n in range(len(raw)):
        with pytest.raises(FormatError) as err:
            PckExtension.parse(raw[:n])
        assert err.value.field.startswith("pck_certificate.sgx_extension")
        only_fedattest_errors(PARSERS["der"], raw[:n])


@pytest.mark.parametrize("doc", ["tcb_info", "qe_identity"])
@pytest.mark.parametrize("name", ["phala_sgx_v3", "phala_tdx_v4"])
def test_every_truncation_of_real_tcb_documents(name: str, doc: str) -> None:
    text = collateral_json(name)[doc]
    parse = TcbInfo.parse if doc == "tcb_info" else EnclaveIdentity.parse
    for n in range(len(text)):
        with pytest.raises(VerificationError) as err:
            parse(text[:n])
        assert err.value.step == doc


@pytest.mark.parametrize("name", VERIFIABLE_CASES)
def test_truncations_of_real_collateral(name: str) -> None:
    text = collateral_text(name)
    for n in range(0, len(text), 97):
        with pytest.raises(CollateralError):
            Collateral.from_json(text[:n])


# -- (c) flips, insertions and deletions -------------------------------------------------------------------


def mutate(data: bytes, edits: list[tuple[int, int, int]]) -> bytes:
    out = bytearray(data)
    for kind, where, value in edits:
        if not out:
            out.append(value)
            continue
        pos = where % len(out)
        if kind == 0:
            out[pos] ^= value or 1
        elif kind == 1:
            out.insert(pos, value)
        else:
            del out[pos]
    return bytes(out)


edits = st.lists(st.tuples(st.integers(0, 2), st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=6)


@pytest.mark.parametrize("name", QUOTE_CASES)
@FUZZ
@given(edit=edits)
def test_mutated_real_quotes_parse_or_fail_cleanly(name: str, edit: list[tuple[int, int, int]]) -> None:
    only_fedattest_errors(Quote.parse, mutate(quote_bytes(name), edit))


@pytest.mark.parametrize("name", ["phala_sgx_v3", "gotdx_v5_sample"])
@FUZZ
@given(edit=edits)
def test_mutated_pck_extension(name: str, edit: list[tuple[int, int, int]]) -> None:
    mutated = mutate(pck_extension_der(name), edit)
    only_fedattest_errors(PckExtension.parse, mutated)
    only_fedattest_errors(PARSERS["der"], mutated)


@pytest.mark.parametrize("name", ["phala_sgx_v3", "gotdx_v5_sample"])
def test_every_bit_flip_of_real_pck_extensions(name: str) -> None:
    """Deterministic: each of the 8 bits of every byte. A flip that still parses changes a field."""
    raw = pck_extension_der(name)
    original = PckExtension.parse(raw)
    for i in range(len(raw)):
        for bit in range(8):
            mutated = raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1 :]
            parsed = only_fedattest_errors(PckExtension.parse, mutated)
            # Strict DER and required fields: a flip that still parses shows in the result (a flipped OID
            # turns an optional field into an ignored unknown one, which is visible as None).
            assert parsed != original, (i, bit)


@FUZZ
@given(edit=edits, which=st.integers(0, 2))
def test_mutated_certificates_through_the_der_reader(edit: list[tuple[int, int, int]], which: int) -> None:
    cert = x509.load_pem_x509_certificates(Quote.parse(quote_bytes("phala_tdx_v4")).pck_chain_pem)[which]
    only_fedattest_errors(PARSERS["der"], mutate(cert.public_bytes(Encoding.DER), edit))


@pytest.mark.parametrize("doc", ["tcb_info", "qe_identity"])
@FUZZ
@given(edit=edits, name=st.sampled_from(VERIFIABLE_CASES))
def test_mutated_tcb_document_text(doc: str, name: str, edit: list[tuple[int, int, int]]) -> None:
    only_fedattest_errors(PARSERS[doc], mutate(collateral_json(name)[doc].encode(), edit))


@FUZZ
@given(edit=edits, name=st.sampled_from(VERIFIABLE_CASES))
def test_mutated_collateral_text(name: str, edit: list[tuple[int, int, int]]) -> None:
    only_fedattest_errors(Collateral.from_json, mutate(collateral_text(name).encode(), edit))


# -- (d) JSON edits ---------------------------------------------------------------------------------------


def edit_json(obj: Any, data: st.DataObject) -> Any:
    """Replace, delete or add one key anywhere in ``obj`` (in place), or replace one list element."""
    node: Any = obj
    while isinstance(node, dict | list) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
        if not isinstance(node[key], dict | list):
            break
        node = node[key]
    if isinstance(node, dict) and node:
        key = data.draw(st.sampled_from(sorted(node)))
        action = data.draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[key] = data.draw(json_values)
        elif action == "delete":
            del node[key]
        else:
            node[data.draw(st.text(max_size=10))] = data.draw(json_values)
    elif isinstance(node, list) and node:
        node[data.draw(st.integers(0, len(node) - 1))] = data.draw(json_values)
    return obj


@pytest.mark.parametrize("doc", ["tcb_info", "qe_identity"])
@FUZZ
@given(data=st.data())
def test_edited_tcb_documents(doc: str, data: st.DataObject) -> None:
    """Replace, delete or add one key anywhere in a real TCB info / QE identity: parse or FedattestError."""
    name = data.draw(st.sampled_from(VERIFIABLE_CASES))
    obj = edit_json(json.loads(collateral_json(name)[doc]), data)
    parsed = only_fedattest_errors(PARSERS[doc], json.dumps(obj))
    if parsed is not None:
        assert parsed.levels


@FUZZ
@given(data=st.data())
def test_edited_collateral_json(data: st.DataObject) -> None:
    obj = collateral_json(data.draw(st.sampled_from(VERIFIABLE_CASES)))
    key = data.draw(st.sampled_from(sorted(obj)))
    action = data.draw(st.sampled_from(["replace", "delete", "edit_hex", "list_form"]))
    if action == "replace":
        obj[key] = data.draw(json_values)
    elif action == "delete":
        del obj[key]
    elif action == "edit_hex" and key in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        obj[key] = mutate(obj[key].encode(), data.draw(edits)).decode("latin-1")
    elif action == "list_form" and key in ("root_ca_crl", "pck_crl", "tcb_info_signature", "qe_identity_signature"):
        items = list(bytes.fromhex(obj[key]))
        items[data.draw(st.integers(0, len(items) - 1))] = data.draw(st.one_of(st.integers(-5, 300), json_values))
        obj[key] = items
    collateral = only_fedattest_errors(Collateral.from_json, json.dumps(obj))
    if collateral is not None:
        only_fedattest_errors(validity_window, collateral)


def pem_crl_collateral(key: str, crl_der: bytes) -> str:
    obj = collateral_json("phala_sgx_v3")
    obj[key] = (b"-----BEGIN X509 CRL-----\n" + base64.encodebytes(crl_der) + b"-----END X509 CRL-----\n").hex()
    return json.dumps(obj)


@pytest.mark.parametrize("key", ["root_ca_crl", "pck_crl"])
@FUZZ
@given(edit=edits)
def test_mutated_pem_crls_in_collateral(key: str, edit: list[tuple[int, int, int]]) -> None:
    """A CRL given as PEM text inside the hex is converted to DER on read: broken ones are refused."""
    text = pem_crl_collateral(key, mutate(bytes.fromhex(collateral_json("phala_sgx_v3")[key]), edit))
    only_fedattest_errors(Collateral.from_json, text)


@pytest.mark.parametrize("key", ["root_ca_crl", "pck_crl"])
def test_pem_crl_with_version_0_in_collateral(key: str) -> None:
    crl = bytes.fromhex(collateral_json("phala_sgx_v3")[key])
    assert crl[7:10] == b"\x02\x01\x01"  # tbsCertList.version = v2 (1)
    with pytest.raises(CollateralError):
        Collateral.from_json(pem_crl_collateral(key, crl[:9] + b"\x00" + crl[10:]))


# -- the verifier on mutated evidence ------------------------------------------------------------------------


@cache
def verifier_for(name: str) -> tuple[QuoteVerifier, Collateral, int]:
    case = dcap_expected()[name]
    root = (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None
    return QuoteVerifier(root), Collateral.from_json(collateral_text(name)), int(case["at"])


@pytest.mark.parametrize("name", verifiable_cases())
@VERIFY
@given(edit=edits)
# Found by this test, kept as regressions: a PCK certificate whose issuer name no longer decodes
# (phala_tdx_v5_outdated), one whose key names an unknown curve (independent_sim_sgx_v3) and one with
# an invalid X.509 version (phala_tdx_v4) used to leak cryptography's own exceptions.
@example(edit=[(0, 1552, 2)])
@example(edit=[(0, 221566, 2)])
@example(edit=[(0, 7577, 0)])
def test_verifier_on_mutated_quotes_raises_only_fedattest_errors(name: str, edit: list[tuple[int, int, int]]) -> None:
    verifier, collateral, at = verifier_for(name)
    mutated = mutate(quote_bytes(name), edit)
    try:
        verifier.verify(mutated, collateral, at=at)
    except FedattestError as exc:
        check_error(exc)
        return
    # Accepted: only if the edits changed nothing that is signed: the same signed bytes, signatures, keys and
    # QE data, and the same certificates (PEM text may differ in whitespace, which carries no meaning).
    got, original = Quote.parse(mutated), Quote.parse(quote_bytes(name))
    assert got.signed_bytes() == original.signed_bytes()
    assert (got.signature.quote_signature, got.signature.attestation_key) == (
        original.signature.quote_signature,
        original.signature.attestation_key,
    )
    g, o = got.signature.qe, original.signature.qe
    assert (g.qe_report, g.qe_report_signature, g.qe_auth_data) == (o.qe_report, o.qe_report_signature, o.qe_auth_data)
    assert x509.load_pem_x509_certificates(got.pck_chain_pem) == x509.load_pem_x509_certificates(original.pck_chain_pem)


def pem_of(ders: list[bytes]) -> str:
    return "".join(f"-----BEGIN CERTIFICATE-----\n{base64.encodebytes(d).decode()}-----END CERTIFICATE-----\n" for d in ders)


@pytest.mark.parametrize("name", verifiable_cases())
@VERIFY
@given(data=st.data())
def test_verifier_on_mutated_collateral_raises_only_fedattest_errors(name: str, data: st.DataObject) -> None:
    """Edit one collateral field: bytes of a CRL or signature, the signed text, or the DER of one
    certificate of an issuer chain (re-encoded as PEM, so the certificate decoder is what is fuzzed)."""
    verifier, collateral, at = verifier_for(name)
    key = data.draw(st.sampled_from(FIELDS))
    edit = data.draw(edits)
    value = getattr(collateral, key)
    if isinstance(value, bytes):
        new: bytes | str = mutate(value, edit)
        changed = new != value
    elif key.endswith("_chain"):
        ders = [c.public_bytes(Encoding.DER) for c in x509.load_pem_x509_certificates(value.encode())]
        k = data.draw(st.integers(0, len(ders) - 1))
        mutated_ders = [mutate(d, edit) if j == k else d for j, d in enumerate(ders)]
        new, changed = pem_of(mutated_ders), mutated_ders != ders
    else:
        new = mutate(value.encode(), edit).decode("utf-8", "replace")
        changed = new != value
    if not changed:  # edits that cancel out (insert then delete): nothing to reject
        return
    fields: dict[str, Any] = {f: getattr(collateral, f) for f in FIELDS} | {key: new}
    mutated = Collateral(**fields)
    with pytest.raises(FedattestError) as err:
        verifier.verify(quote_bytes(name), mutated, at=at)
    check_error(err.value)


@pytest.mark.parametrize("name", verifiable_cases())
def test_verifier_on_every_truncation_of_the_quote(name: str) -> None:
    verifier, collateral, at = verifier_for(name)
    raw = quote_bytes(name)
    end = len(raw) - Quote.parse(raw).padding
    for n in range(0, len(raw), 7):
        if n >= end:  # only zero padding was cut: still the same quote
            verifier.verify(raw[:n], collateral, at=at)
            continue
        with pytest.raises(FedattestError) as err:
            verifier.verify(raw[:n], collateral, at=at)
        check_error(err.value)


@pytest.mark.parametrize("at", [10**20, -(10**13), float("nan"), float("inf")])
def test_out_of_range_verification_time(at: float) -> None:
    quote = quote_bytes("phala_sgx_v3")
    collateral = verifier_for("phala_sgx_v3")[1]
    with pytest.raises(FedattestError):
        verify_quote(quote, collateral, at=at)  # type: ignore[arg-type]


# -- found by this file: real bugs, fixed; kept as regressions ---------------------------------------------------


@pytest.mark.parametrize("key", ["tcb_info", "qe_identity", "pck_crl_issuer_chain"])
def test_lone_surrogate_in_collateral_text(key: str) -> None:
    obj = collateral_json("phala_sgx_v3")
    obj[key] = obj[key][:10] + "\ud800" + obj[key][10:]
    with pytest.raises(CollateralError, match="not valid Unicode text"):
        Collateral.from_json(json.dumps(obj))


def _naive_issue_date(doc: dict[str, Any]) -> dict[str, Any]:
    doc["issueDate"] = doc["issueDate"].removesuffix("Z")
    return doc


def _naive_tcb_dates(doc: dict[str, Any]) -> dict[str, Any]:
    for level in doc["tcbLevels"]:
        level["tcbDate"] = level["tcbDate"].removesuffix("Z")
    return doc


NAIVE_DATE_CASES = [
    ("tcb_info.issueDate", "verify", {"edit_tcb_info": _naive_issue_date}),
    ("tcb_info.issueDate", "validity_window", {"edit_tcb_info": _naive_issue_date}),
    ("qe_identity.issueDate", "verify", {"edit_qe_identity": _naive_issue_date}),
    ("qe_identity.issueDate", "validity_window", {"edit_qe_identity": _naive_issue_date}),
    ("tcb_info.tcbLevels.tcbDate", "verify", {"edit_tcb_info": _naive_tcb_dates}),  # evaluate_tcb: min(dates)
]


@pytest.mark.parametrize(("where", "call", "edits_"), NAIVE_DATE_CASES, ids=[f"{w}-{c}" for w, c, _ in NAIVE_DATE_CASES])
def test_timezone_naive_dates_in_signed_collateral(where: str, call: str, edits_: dict[str, Any]) -> None:
    quote, collateral, at = quote_bytes("phala_sgx_v3"), verifier_for("phala_sgx_v3")[1], dcap_expected()["phala_sgx_v3"]["at"]
    r = reroot(quote, collateral, at, **edits_)  # properly signed, under a test root
    with pytest.raises(FedattestError):
        if call == "verify":
            verify_quote(r.quote, r.collateral, trust_root=r.root_der, at=at)
        else:
            validity_window(r.collateral)


@pytest.mark.parametrize("nesting", ["[", '{"a":'])
def test_deeply_nested_collateral_json(nesting: str) -> None:
    depth = 5000
    text = nesting * depth + "1" * (nesting != "[") + ("]" if nesting == "[" else "}") * depth
    for parse in (TcbInfo.parse, EnclaveIdentity.parse):
        with pytest.raises(VerificationError):
            parse(text)
    with pytest.raises(CollateralError):
        Collateral.from_json(text)
