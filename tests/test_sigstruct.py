"""SIGSTRUCT: the Gramine vector, signing our own, every check's negative, and `fedattest sigstruct show`."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
from dataclasses import replace
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from fedattest.cli import app
from fedattest.errors import FedattestError, FormatError
from fedattest.sgx.sigstruct import SIZE, Sigstruct
from fedattest.workload.signer import mr_signer_of
from tests.conftest import VECTORS, assert_one_line_error

VECTOR = VECTORS / "sigstruct" / "helloworld.sig"
runner = CliRunner()


@cache
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(3, 3072)


def test_the_gramine_vector() -> None:
    raw = VECTOR.read_bytes()
    sig = Sigstruct.parse(raw)
    assert sig.to_bytes() == raw
    assert sig.mr_enclave.hex() == "3b9403186b9e13f9e8636fba1f6f4fff00a24064f6e570d328efa13cc3bee6b7"
    assert sig.mr_signer.hex() == "fa2f9444ce8a8854d942a200bf1030e8165c1474f96cbba70a6259d130ea96a0"
    assert (sig.isv_prod_id, sig.isv_svn, sig.flags, sig.xfrm, sig.debug) == (0, 0, 0x06, 0x03, True)
    assert sig.signing_date == dt.date(2022, 11, 28)
    sig.verify()


@pytest.mark.parametrize(("start", "end"), [(0, 128), (900, 1028)], ids=["header-part", "body-part"])
def test_every_signed_byte_matters(start: int, end: int) -> None:
    raw = VECTOR.read_bytes()
    refused = 0
    for i in range(start, end):
        mutated = raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :]
        try:
            Sigstruct.parse(mutated).verify()
        except FormatError:
            refused += 1
    assert refused == end - start


@pytest.mark.parametrize(("field", "offset"), [("modulus", 200), ("signature", 600), ("q1", 1100), ("q2", 1500)])
def test_key_signature_and_q_values_are_checked(field: str, offset: int) -> None:
    raw = bytearray(VECTOR.read_bytes())
    raw[offset] ^= 0x01
    with pytest.raises(FormatError, match="sigstruct"):
        Sigstruct.parse(bytes(raw)).verify()


@pytest.mark.parametrize(
    ("edit", "field"),
    [
        (lambda b: b[:-1], "sigstruct"),
        (lambda b: b + b"\x00", "sigstruct"),
        (lambda b: b"\x07" + b[1:], "sigstruct.header"),
        (lambda b: b[:24] + b"\x02" + b[25:], "sigstruct.header2"),
        (lambda b: b[:16] + b"\x01\x00\x00\x00" + b[20:], "sigstruct.vendor"),
        (lambda b: b[:512] + b"\x11\x00\x01\x00" + b[516:], "sigstruct.exponent"),
    ],
)
def test_malformed_structures_name_the_field(edit: object, field: str) -> None:
    with pytest.raises(FormatError) as err:
        Sigstruct.parse(edit(VECTOR.read_bytes()))  # type: ignore[operator]
    assert err.value.field == field


@settings(max_examples=8, deadline=None)
@given(
    mr_enclave=st.binary(min_size=32, max_size=32),
    prod=st.integers(0, 0xFFFF),
    svn=st.integers(0, 0xFFFF),
    debug=st.booleans(),
    day=st.dates(dt.date(2000, 1, 1), dt.date(2099, 12, 31)),
)
def test_build_sign_parse_verify(mr_enclave: bytes, prod: int, svn: int, debug: bool, day: dt.date) -> None:
    attributes = (0x04 | (0x02 if debug else 0)).to_bytes(8, "little") + (0x03).to_bytes(8, "little")
    sig = Sigstruct.build(mr_enclave=mr_enclave, attributes=attributes, isv_prod_id=prod, isv_svn=svn, signing_date=day).sign(
        key()
    )
    parsed = Sigstruct.parse(sig.to_bytes())
    assert parsed == sig
    parsed.verify()
    assert (parsed.mr_enclave, parsed.isv_prod_id, parsed.isv_svn, parsed.debug, parsed.signing_date) == (
        mr_enclave,
        prod,
        svn,
        debug,
        day,
    )
    assert parsed.mr_signer == mr_signer_of(key().public_key())  # the same MRSIGNER as `workload measure --signing-key`


def test_signing_requires_an_sgx_key() -> None:
    with pytest.raises(FormatError, match="exponent 3"):
        Sigstruct.build(mr_enclave=bytes(32), attributes=bytes(16)).sign(rsa.generate_private_key(65537, 3072))


def test_resigned_field_changes_break_the_signature() -> None:
    sig = Sigstruct.build(mr_enclave=bytes(32), attributes=bytes(16)).sign(key())
    assert not replace(sig, isv_svn=sig.isv_svn + 1).is_valid()
    assert not replace(sig, enclave_hash=b"\x01" * 32).is_valid()


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=SIZE, max_size=SIZE) | st.binary(max_size=3000))
def test_random_bytes_give_only_fedattest_errors(data: bytes) -> None:
    with contextlib.suppress(FedattestError):  # anything else escaping fails the test
        Sigstruct.parse(data).verify()


def test_cli_show(tmp_path: Path) -> None:
    ok = runner.invoke(app, ["sigstruct", "show", str(VECTOR), "--json"])
    assert ok.exit_code == 0, ok.stderr
    info = json.loads(ok.stdout)
    assert info["mrenclave"].startswith("3b940318") and info["debug"] is True and info["signature_valid"] is True
    assert info["flags"] == ["DEBUG", "MODE64BIT"] and info["xfrm"] == "0x3" and info["date"] == "2022-11-28"
    table = runner.invoke(app, ["sigstruct", "show", str(VECTOR)])
    assert table.exit_code == 0 and "signature valid  yes" in table.stdout
    bad = bytearray(VECTOR.read_bytes())
    bad[1000] ^= 1
    (tmp_path / "bad.sig").write_bytes(bytes(bad))
    result = runner.invoke(app, ["sigstruct", "show", str(tmp_path / "bad.sig")])
    assert_one_line_error(result, 1, "signature INVALID")
    (tmp_path / "short.sig").write_bytes(b"\x00" * 100)
    assert_one_line_error(runner.invoke(app, ["sigstruct", "show", str(tmp_path / "short.sig")]), 2, "1808 bytes")
    assert_one_line_error(runner.invoke(app, ["sigstruct", "show", str(tmp_path / "none.sig")]), 2, "cannot read")
