"""Fuzzing the parsers and the verifier: whatever the bytes, only fedattest errors come out.

Random inputs, every truncation of the real quotes, and random flips, insertions and deletions of
real quotes, PCK extensions and collateral documents.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest
from cryptography import x509
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fedattest.dcap.collateral import Collateral
from fedattest.dcap.tcb import EnclaveIdentity, TcbInfo
from fedattest.dcap.verify import QuoteVerifier
from fedattest.errors import FedattestError, FormatError
from fedattest.sgx import der
from fedattest.sgx.pck_extension import SGX_EXTENSION_OID, PckExtension
from fedattest.sgx.quote import Quote, QuoteHeader, ReportBody
from tests.conftest import DCAP, dcap_expected, verifiable_cases

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
EXPECTED = dcap_expected()
QUOTE_NAMES = sorted(p.stem for p in DCAP.glob("*.quote"))
# Mutated names make cryptography warn (e.g. a country code of the wrong length) before we reject them.
pytestmark = pytest.mark.filterwarnings("ignore:Attribute's length must be:UserWarning")


@cache
def quote_bytes(name: str) -> bytes:
    return (DCAP / f"{name}.quote").read_bytes()


@cache
def pck_extension_der() -> bytes:
    leaf = x509.load_pem_x509_certificates(Quote.parse(quote_bytes("phala_sgx_v3")).pck_chain_pem)[0]
    ext = leaf.extensions.get_extension_for_oid(x509.ObjectIdentifier(SGX_EXTENSION_OID)).value
    assert isinstance(ext, x509.UnrecognizedExtension)
    return ext.value


@cache
def collateral_json(name: str) -> dict[str, Any]:
    return json.loads((DCAP / f"{name}.collateral.json").read_text())  # type: ignore[no-any-return]


def only_fedattest_errors(parse: Any, data: Any) -> None:
    """``parse(data)`` returns or raises a FedattestError; a FormatError names a field."""
    try:
        parse(data)
    except FormatError as exc:
        assert exc.field, exc
    except FedattestError:
        pass


PARSERS = {
    "quote": Quote.parse,
    "header": QuoteHeader.parse,
    "report_body": ReportBody.parse,
    "pck_extension": PckExtension.parse,
    "der": lambda b: der.read_all(b, "fuzz"),
    "collateral": Collateral.from_json,
    "tcb_info": lambda b: TcbInfo.parse(b.decode("utf-8", "replace")),
    "qe_identity": lambda b: EnclaveIdentity.parse(b.decode("utf-8", "replace")),
}


@pytest.mark.parametrize("parser", sorted(PARSERS))
@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_bytes(parser: str, data: bytes) -> None:
    only_fedattest_errors(PARSERS[parser], data)


@pytest.mark.parametrize("name", QUOTE_NAMES)
def test_every_truncation_of_real_quotes(name: str) -> None:
    raw = quote_bytes(name)
    for n in range(len(raw)):
        try:
            Quote.parse(raw[:n])
        except FormatError as exc:
            assert exc.field
        else:  # only a quote whose remainder is zero padding may parse when cut short
            assert not raw[n:].strip(b"\x00"), n


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


@pytest.mark.parametrize("name", QUOTE_NAMES)
@FUZZ
@given(edit=edits)
def test_mutated_real_quotes_parse_or_fail_cleanly(name: str, edit: list[tuple[int, int, int]]) -> None:
    only_fedattest_errors(Quote.parse, mutate(quote_bytes(name), edit))


@FUZZ
@given(edit=edits)
def test_mutated_pck_extension(edit: list[tuple[int, int, int]]) -> None:
    only_fedattest_errors(PckExtension.parse, mutate(pck_extension_der(), edit))


json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
    lambda children: st.one_of(st.lists(children, max_size=3), st.dictionaries(st.text(max_size=10), children, max_size=3)),
    max_leaves=8,
)


@pytest.mark.parametrize("doc", ["tcb_info", "qe_identity"])
@FUZZ
@given(data=st.data())
def test_edited_tcb_documents(doc: str, data: st.DataObject) -> None:
    """Replace, delete or add one key anywhere in a real TCB info / QE identity: parse or FedattestError."""
    name = data.draw(st.sampled_from(["phala_sgx_v3", "phala_tdx_v4", "gotdx_v5_sample"]))
    obj = json.loads(collateral_json(name)[doc])
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
    parse = TcbInfo.parse if doc == "tcb_info" else EnclaveIdentity.parse
    only_fedattest_errors(parse, json.dumps(obj))


@FUZZ
@given(data=st.data())
def test_edited_collateral_json(data: st.DataObject) -> None:
    obj = dict(collateral_json("phala_sgx_v3"))
    key = data.draw(st.sampled_from(sorted(obj)))
    if data.draw(st.booleans()):
        obj[key] = data.draw(json_values)
    else:
        del obj[key]
    only_fedattest_errors(Collateral.from_json, json.dumps(obj))


@cache
def verifier_for(name: str) -> tuple[QuoteVerifier, Collateral, int]:
    case = EXPECTED[name]
    root = (DCAP / case["root_ca"]).read_bytes() if "root_ca" in case else None
    return QuoteVerifier(root), Collateral.from_json(json.dumps(collateral_json(name))), int(case["at"])


@pytest.mark.parametrize("name", verifiable_cases())
@settings(max_examples=150, deadline=None)
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
    except FedattestError:
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
