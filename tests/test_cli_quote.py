"""The `fedattest` command line: `quote show`, `quote verify`, errors and exit codes.

Most tests run the typer app in-process with CliRunner (stdout and stderr apart); a few run the
installed console script in a subprocess, exactly as a user would.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from fedattest import __version__
from fedattest.cli import app
from fedattest.sgx.quote import Quote
from tests.conftest import DCAP, QUOTE_CASES, REPO, assert_one_line_error, dcap_expected, verifiable_cases

EPPID = "oasis_sgx_v3_eppid_certtype3"
SIM = "independent_sim_sgx_v3"
SIM_ROOT = DCAP / "independent_sim_root_ca.der"
# Where our verifier is deliberately stricter than dcap-qvl (whose verdicts expected.json records).
STRICTER = {"oasis_sgx_v3": "root_ca_crl"}

runner = CliRunner()


def cli(*args: str | Path, input: bytes | str | None = None) -> Result:
    return runner.invoke(app, [str(a) for a in args], input=input)


def case_args(name: str) -> list[str]:
    """QUOTE --collateral FILE --at T [--root-ca DER] for a verifiable vector."""
    case = dcap_expected()[name]
    args = [str(DCAP / f"{name}.quote"), "--collateral", str(DCAP / f"{name}.collateral.json"), "--at", str(case["at"])]
    if "root_ca" in case:
        args += ["--root-ca", str(DCAP / case["root_ca"])]
    return args


def verify_json(*args: str | Path) -> tuple[int, dict[str, Any]]:
    result = cli("quote", "verify", *args, "--json")
    assert result.stderr == "", result.stderr
    obj = json.loads(result.stdout)  # exactly one JSON document
    assert isinstance(obj, dict)
    return result.exit_code, obj


@pytest.fixture(scope="module")
def encoded(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    """Every vector as raw, hex (wrapped, with 0x) and base64 (wrapped) files."""
    out = tmp_path_factory.mktemp("encoded")
    files: dict[tuple[str, str], Path] = {}
    for name in QUOTE_CASES:
        raw = (DCAP / f"{name}.quote").read_bytes()
        h = raw.hex()
        b = base64.b64encode(raw).decode()
        for enc, data in (
            ("raw", raw),
            ("hex", ("0x" + "\n".join(h[i : i + 64] for i in range(0, len(h), 64)) + "\n").encode()),
            ("base64", ("\n".join(b[i : i + 76] for i in range(0, len(b), 76)) + "\n").encode()),
        ):
            path = out / f"{name}.{enc}"
            path.write_bytes(data)
            files[name, enc] = path
    return files


# -- top level ----------------------------------------------------------------------------------------


def test_version() -> None:
    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"fedattest {__version__}"


@pytest.mark.parametrize("args", [[], ["quote"], ["quote", "show"], ["quote", "verify"], ["demo"]])
def test_help_teaches_with_an_example(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    assert "Usage" in result.stdout and "Example" in result.stdout


def test_unknown_command_and_option_are_one_line_usage_errors() -> None:
    assert_one_line_error(cli("quote", "shwo"), 2, "No such command", "Did you mean 'show'")
    assert_one_line_error(cli("quote", "verify", "--frobnicate"), 2, "No such option", "--help")
    assert_one_line_error(cli("quote", "verify"), 2, "Missing argument 'QUOTE'")


# -- quote show -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("enc", ["raw", "hex", "base64"])
@pytest.mark.parametrize("name", [n for n in QUOTE_CASES if n != EPPID])
def test_show_every_vector_in_every_encoding(name: str, enc: str, encoded: dict[tuple[str, str], Path]) -> None:
    raw = (DCAP / f"{name}.quote").read_bytes()
    q = Quote.parse(raw)
    result = cli("quote", "show", encoded[name, enc], "--json")
    assert result.exit_code == 0, result.stderr
    d = json.loads(result.stdout)
    assert d["encoding"] == enc and d["size"] == len(raw) and d["parsed"] is True
    assert d["header"]["version"] == q.header.version
    assert d["header"]["tee_type"] == q.tee
    assert d["header"]["qe_vendor"] == "Intel"
    assert d["certification_data"]["type"] == 5 and d["certification_data"]["supported"]
    assert len(d["pck_chain"]) == 3 and "PCK" in d["pck_chain"][0]["subject"]
    assert len(d["fmspc"]) == 12 and d["pck_extension"]["fmspc"] == d["fmspc"]
    assert d["qe_report"]["isv_prod_id"] in (1, 2)
    if q.tee == "SGX":
        body = d["sgx_report"]
        for key in ("cpu_svn", "misc_select", "isv_ext_prod_id", "attributes", "mrenclave", "mrsigner", "config_id",
                    "isv_prod_id", "isv_svn", "config_svn", "isv_family_id", "report_data"):  # fmt: skip
            assert key in body
        assert body["mrenclave"] == q.body.mr_enclave.hex()  # type: ignore[union-attr]
        assert "MODE64BIT" in body["attributes"]["flag_names"]
        assert body["debug"] == ("DEBUG" in body["attributes"]["flag_names"])
    else:
        td = d["td_report"]
        assert td["mrtd"] == q.body.mr_td.hex()  # type: ignore[union-attr]
        assert {"rtmr0", "rtmr3", "mrseam", "td_attributes", "xfam"} <= td.keys()
        assert ("tee_tcb_svn2" in td) == (q.body_type == 3)


@pytest.mark.parametrize("name", ["phala_sgx_v3", "phala_tdx_v4"])
def test_show_table_is_readable(name: str) -> None:
    result = cli("quote", "show", DCAP / f"{name}.quote")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    for label in ("Header", "Quoting enclave report", "Certification data", "PCK certificate", "FMSPC"):
        assert label in out
    if name.startswith("phala_sgx"):
        assert "MRENCLAVE" in out and "ATTRIBUTES.FLAGS" in out and "(INIT, MODE64BIT)" in out
    else:
        assert "MRTD" in out and "RTMR3" in out


def test_show_eppid_quote_shows_identity_and_refuses_in_one_line() -> None:
    result = cli("quote", "show", DCAP / f"{EPPID}.quote", "--json")
    line = assert_one_line_error(result, 1, "type 3", "PCK certificate chain")
    assert "does not fully parse" in line
    d = json.loads(result.stdout)
    assert d["parsed"] is False
    assert d["certification_data"] == {"type": 3, "name": "PPID encrypted with RSA-3072 (EPPID)", "supported": False}
    assert len(d["sgx_report"]["mrenclave"]) == 64


def test_show_from_stdin() -> None:
    raw = (DCAP / "phala_tdx_v4.quote").read_bytes()
    for data in (raw, raw.hex(), base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode().rstrip("=")):
        result = cli("quote", "show", "-", "--json", input=data)
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)["header"]["tee_type"] == "TDX"


@pytest.mark.parametrize(
    ("content", "code", "needle"),
    [
        (b"", 2, "is empty"),
        (b"   \n", 2, "only whitespace"),
        (b"this is not a quote!\n", 2, "neither hex nor base64"),
        (b"abc", 2, "odd number of digits"),
        (b"00" * 10, 1, "not a DCAP quote"),
        (b"\x01\x02" * 300, 1, "not a DCAP quote"),
        (bytes.fromhex("03000200") + b"\x00" * 60, 1, "truncated"),
    ],
)
def test_show_bad_input(tmp_path: Path, content: bytes, code: int, needle: str) -> None:
    path = tmp_path / "q"
    path.write_bytes(content)
    assert_one_line_error(cli("quote", "show", path), code, needle)


def test_show_missing_file_and_directory(tmp_path: Path) -> None:
    assert_one_line_error(cli("quote", "show", tmp_path / "nope.quote"), 2, "cannot read quote file", "No such file")
    assert_one_line_error(cli("quote", "show", tmp_path), 2, "cannot read quote file")


# -- quote verify: the hardware vectors --------------------------------------------------------------------


@pytest.mark.parametrize("name", verifiable_cases())
def test_verify_each_vector_at_its_time(name: str) -> None:
    case = dcap_expected()[name]
    code, d = verify_json(*case_args(name), "--allow-simulation")
    raw = (DCAP / f"{name}.quote").read_bytes()
    q = Quote.parse(raw)
    assert d["tee"] == q.tee and d["quote_version"] == q.header.version
    assert d["report_data"] == q.body.report_data.hex()
    assert d["simulated"] == ("root_ca" in case)
    assert d["code_checked"] is False and any("code identity not checked" in n for n in d["notes"])
    if q.tee == "SGX":
        assert d["mrenclave"] == q.body.mr_enclave.hex()  # type: ignore[union-attr]
        assert d["isv_svn"] == q.body.isv_svn  # type: ignore[union-attr]
    if name in STRICTER:
        assert (code, d["accepted"], d["step"]) == (1, False, STRICTER[name])
        assert "not yet valid" in d["reason"] and d["tcb_status"] is None
        return
    if not case["accepted"]:
        assert (code, d["accepted"], d["step"]) == (1, False, "tcb_level")
        assert "below every TCB level" in d["reason"]
        assert d["tcb_status"] is None and d["advisory_ids"] is None
        return
    # Verified: same TCB status and advisories as dcap-qvl recorded.
    assert d["tcb_status"] == case["status"]
    assert d["advisory_ids"] == case["advisory_ids"]
    assert d["collateral_expiry"] > d["at"]
    default_ok = case["status"] in ("UpToDate", "SWHardeningNeeded")
    assert (code, d["accepted"]) == ((0, True) if default_ok else (1, False))
    if not default_ok:
        assert d["step"] == "appraisal" and f"TCB status {case['status']} is not accepted" in d["reason"]
    # Accepting the recorded status accepts the quote.
    code, d = verify_json(*case_args(name), "--allow-simulation", "--accept-tcb", case["status"])
    assert (code, d["accepted"], d["reason"], d["step"]) == (0, True, None, None)


def test_verify_json_has_every_documented_key() -> None:
    _, d = verify_json(*case_args("phala_tdx_v4"))
    keys = {"accepted", "reason", "tee", "tcb_status", "advisory_ids", "mrenclave", "mrsigner", "isv_prod_id", "isv_svn",
            "debug", "report_data", "simulated", "step", "notes", "collateral_expiry", "fmspc"}  # fmt: skip
    assert keys <= d.keys()
    assert d["tee"] == "TDX" and d["mrenclave"] is None and len(d["mrtd"]) == 96


def test_verify_human_output_ends_with_one_verdict_line() -> None:
    result = cli("quote", "verify", *case_args("phala_sgx_v3"))
    assert result.exit_code == 1 and result.stderr == ""
    last = result.stdout.splitlines()[-1]
    assert last.startswith("REJECTED: TCB status ConfigurationAndSWHardeningNeeded is not accepted")
    assert "NOT CHECKED" in result.stdout  # no --expect-*: said loudly
    result = cli("quote", "verify", *case_args("phala_tdx_v4"))
    assert result.exit_code == 0
    last = result.stdout.splitlines()[-1]
    assert last.startswith("ACCEPTED; notes: code identity not checked")


def test_verify_oasis_rejected_at_root_ca_crl_in_one_line() -> None:
    result = cli("quote", "verify", *case_args("oasis_sgx_v3"))
    assert result.exit_code == 1
    last = result.stdout.splitlines()[-1]
    assert last.startswith("REJECTED: root_ca_crl: root CA CRL is not yet valid")


def test_verify_eppid_is_refused_clearly() -> None:
    args = [DCAP / f"{EPPID}.quote", "--collateral", DCAP / "oasis_sgx_v3.collateral.json"]
    code, d = verify_json(*args)
    assert (code, d["accepted"], d["step"]) == (1, False, "quote_format")
    assert "certification data type 3" in d["reason"] and "PCK certificate chain" in d["reason"]
    assert d["tee"] == "SGX" and len(d["mrenclave"]) == 64  # the parts that parse are still reported
    result = cli("quote", "verify", *args)
    assert result.exit_code == 1
    verdicts = [line for line in result.stdout.splitlines() if line.startswith("REJECTED")]
    assert len(verdicts) == 1 and "certification data type 3" in verdicts[0]


def test_verify_at_accepts_iso_8601_and_unix_seconds() -> None:
    base = [DCAP / "phala_tdx_v4.quote", "--collateral", DCAP / "phala_tdx_v4.collateral.json"]
    _, unix = verify_json(*base, "--at", "1750331763")
    _, iso_z = verify_json(*base, "--at", "2025-06-19T11:16:03Z")
    _, iso_off = verify_json(*base, "--at", "2025-06-19T13:16:03+02:00")
    assert unix["at"] == iso_z["at"] == iso_off["at"] == "2025-06-19T11:16:03Z"
    assert unix["accepted"] and iso_z["accepted"] and iso_off["accepted"]
    # Years later the collateral has expired: rejected, naming what expired.
    code, late = verify_json(*base, "--at", "2030-01-01T00:00:00Z")
    assert code == 1 and "expired" in late["reason"]


# -- quote verify: appraisal ----------------------------------------------------------------------------


def sgx_identity() -> tuple[str, str, int, int]:
    q = Quote.parse((DCAP / "phala_sgx_v3.quote").read_bytes())
    b = q.body
    return b.mr_enclave.hex(), b.mr_signer.hex(), b.isv_prod_id, b.isv_svn  # type: ignore[union-attr]


SGX_OK = ["--accept-tcb", "ConfigurationAndSWHardeningNeeded"]


def test_verify_expect_mrenclave_match_and_mismatch() -> None:
    mrenclave, *_ = sgx_identity()
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, "--expect-mrenclave", "00" * 32, "--expect-mrenclave", mrenclave)
    assert (code, d["accepted"], d["code_checked"]) == (0, True, True)
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, "--expect-mrenclave", "ab" * 32)
    assert (code, d["accepted"], d["step"]) == (1, False, "appraisal")
    assert d["reason"] == f"MRENCLAVE {mrenclave} is not an accepted measurement"
    result = cli("quote", "verify", *case_args("phala_sgx_v3"), *SGX_OK, "--expect-mrenclave", "0x" + "AB" * 32)
    assert result.exit_code == 1
    assert result.stdout.splitlines()[-1] == f"REJECTED: MRENCLAVE {mrenclave} is not an accepted measurement"


def test_verify_expect_mrsigner_product_and_svn() -> None:
    _, mrsigner, prod, svn = sgx_identity()
    ok = ["--expect-mrsigner", mrsigner, "--expect-isvprodid", str(prod)]
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, *ok, "--min-isvsvn", str(svn))
    assert code == 0 and d["accepted"]
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, *ok, "--min-isvsvn", str(svn + 1))
    assert code == 1 and f"ISVSVN {svn} is below the minimum {svn + 1}" in d["reason"]
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, "--expect-mrsigner", mrsigner, "--expect-isvprodid", str(prod + 1))
    assert code == 1 and "is not the accepted signer and product" in d["reason"]


def test_verify_expect_mrtd() -> None:
    q = Quote.parse((DCAP / "phala_tdx_v4.quote").read_bytes())
    mrtd = q.body.mr_td.hex()  # type: ignore[union-attr]
    code, d = verify_json(*case_args("phala_tdx_v4"), "--expect-mrtd", mrtd)
    assert (code, d["accepted"], d["code_checked"]) == (0, True, True)
    code, d = verify_json(*case_args("phala_tdx_v4"), "--expect-mrtd", "11" * 48)
    assert code == 1 and "MRTD" in d["reason"]
    # SGX reference values do not accept a TD.
    code, d = verify_json(*case_args("phala_tdx_v4"), "--expect-mrenclave", "11" * 32)
    assert code == 1 and "no TDX reference values" in d["reason"]


def test_verify_rejected_advisory() -> None:
    code, d = verify_json(*case_args("phala_sgx_v3"), *SGX_OK, "--reject-advisory", "intel-sa-00615")
    assert code == 1 and "INTEL-SA-00615" in d["reason"]


def test_simulated_evidence_refused_unless_allowed() -> None:
    base = case_args(SIM)
    code, d = verify_json(*base)
    assert (code, d["accepted"], d["simulated"], d["step"]) == (1, False, True, "appraisal")
    assert "simulated" in d["reason"] and d["tcb_status"] == "UpToDate"
    result = cli("quote", "verify", *base)
    assert result.exit_code == 1 and "simulated" in result.stdout.splitlines()[-1]
    code, d = verify_json(*base, "--allow-simulation")
    assert (code, d["accepted"], d["simulated"]) == (0, True, True)
    assert any("simulated" in n for n in d["notes"])
    result = cli("quote", "verify", *base, "--allow-simulation")
    assert result.exit_code == 0 and "simulated evidence" in result.stdout.splitlines()[-1]


def test_simulated_evidence_never_verifies_under_intel_root() -> None:
    args = [DCAP / f"{SIM}.quote", "--collateral", DCAP / f"{SIM}.collateral.json", "--at", str(dcap_expected()[SIM]["at"])]
    code, d = verify_json(*args, "--allow-simulation")
    assert (code, d["accepted"], d["simulated"], d["step"]) == (1, False, False, "root_ca_crl")


def test_root_ca_may_be_pem(tmp_path: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pem = tmp_path / "root.pem"
    pem.write_bytes(x509.load_der_x509_certificate(SIM_ROOT.read_bytes()).public_bytes(Encoding.PEM))
    args = [DCAP / f"{SIM}.quote", "--collateral", DCAP / f"{SIM}.collateral.json", "--at", str(dcap_expected()[SIM]["at"])]
    code, d = verify_json(*args, "--root-ca", pem, "--allow-simulation")
    assert code == 0 and d["accepted"] and "Simulated SGX Root CA" in d["trust_root"]


# -- quote verify: usage errors (exit 2, one line, nothing on stdout) -----------------------------------------------


def usage_cases(tmp: Path) -> list[tuple[list[str | Path], tuple[str, ...]]]:
    q = DCAP / "phala_sgx_v3.quote"
    c = DCAP / "phala_sgx_v3.collateral.json"
    garbage = tmp / "garbage.txt"
    garbage.write_text("hello, world: definitely not a quote\n")
    bad_json = tmp / "bad.json"
    bad_json.write_text("{not json")
    partial = tmp / "partial.json"
    partial.write_text(json.dumps({"tcb_info": "{}"}))
    return [
        ([tmp / "missing.quote", "--collateral", c], ("cannot read quote file", "No such file")),
        ([garbage, "--collateral", c], ("neither hex nor base64",)),
        ([q], ("exactly one of --collateral FILE or --pccs URL",)),
        ([q, "--collateral", c, "--pccs", "https://localhost:1"], ("exactly one of --collateral FILE or --pccs URL",)),
        ([q, "--collateral", tmp / "missing.json"], ("cannot read collateral file",)),
        ([q, "--collateral", bad_json], ("--collateral", "not valid JSON")),
        ([q, "--collateral", partial], ("collateral is missing",)),
        ([q, "--collateral", c, "--expect-mrenclave", "xyz"], ("--expect-mrenclave needs 64 hex digits", "'xyz'")),
        ([q, "--collateral", c, "--expect-mrenclave", "ab" * 31], ("--expect-mrenclave needs 64 hex digits",)),
        ([q, "--collateral", c, "--expect-mrtd", "ab" * 32], ("--expect-mrtd needs 96 hex digits",)),
        ([q, "--collateral", c, "--expect-mrsigner", "ab" * 32], ("--expect-mrsigner and --expect-isvprodid go together",)),
        ([q, "--collateral", c, "--expect-isvprodid", "1"], ("go together",)),
        ([q, "--collateral", c, "--min-isvsvn", "1"], ("--min-isvsvn needs --expect-mrsigner",)),
        ([q, "--collateral", c, "--expect-isvprodid", "70000"], ("--expect-isvprodid",)),
        ([q, "--collateral", c, "--at", "yesterday"], ("--at", "neither Unix seconds nor ISO-8601")),
        ([q, "--collateral", c, "--at", "2025-06-19T12:00:00"], ("--at", "has no timezone")),
        ([q, "--collateral", c, "--at", "99999999999999999999"], ("--at", "out of range")),
        ([q, "--collateral", c, "--accept-tcb", "Great"], ("--accept-tcb: unknown TCB status 'Great'",)),
        ([q, "--collateral", c, "--accept-tcb", "revoked"], ("Revoked TCB can never be accepted",)),
        ([q, "--collateral", c, "--root-ca", tmp / "missing.der"], ("cannot read --root-ca file",)),
        ([q, "--collateral", c, "--root-ca", garbage], ("--root-ca", "not a valid X.509 certificate")),
        ([q, "--pccs", "ftp://example.com"], ("--pccs needs an http(s) URL",)),
    ]


def test_verify_usage_errors_are_one_line_exit_2(tmp_path: Path) -> None:
    for args, needles in usage_cases(tmp_path):
        result = cli("quote", "verify", *args)
        assert_one_line_error(result, 2, *needles)
        assert result.stdout == "", (args, result.stdout)
        # --json does not change how usage errors are reported.
        result = cli("quote", "verify", *args, "--json")
        assert_one_line_error(result, 2, *needles)


def test_verify_root_ca_that_is_not_a_root(tmp_path: Path) -> None:
    # The PCK certificate from a quote is a certificate but not a self-signed root.
    pem = Quote.parse((DCAP / "phala_sgx_v3.quote").read_bytes()).pck_chain_pem.split(b"-----END CERTIFICATE-----")[0]
    leaf = tmp_path / "leaf.pem"
    leaf.write_bytes(pem + b"-----END CERTIFICATE-----\n")
    result = cli("quote", "verify", *case_args("phala_sgx_v3"), "--root-ca", leaf)
    assert_one_line_error(result, 2, "--root-ca", "trust root")


# -- the installed console script ------------------------------------------------------------------------------------


def console_script() -> str:
    found = Path(sys.executable).parent / "fedattest"
    if found.exists():
        return str(found)
    which = shutil.which("fedattest")
    if which is None:
        pytest.fail("the fedattest console script is not installed (pip install -e .)")
    return which


def run_script(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [console_script(), *map(str, args)], input=stdin, capture_output=True, env=env, timeout=60, check=False, cwd=REPO
    )


def test_console_script_end_to_end() -> None:
    ok = run_script("quote", "verify", *case_args("gotdx_v5_sample"), "--json")
    assert ok.returncode == 0, ok.stderr
    d = json.loads(ok.stdout)
    assert d["accepted"] and d["tee"] == "TDX" and d["quote_version"] == 5 and d["tcb_status"] == "UpToDate"

    sim = run_script("quote", "verify", *case_args(SIM))
    assert sim.returncode == 1 and sim.stdout.decode().splitlines()[-1].startswith("REJECTED: evidence is simulated")

    bad = run_script("quote", "verify", DCAP / "phala_sgx_v3.quote", "--collateral", DCAP / "nope.json")
    assert bad.returncode == 2 and bad.stdout == b""
    lines = bad.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: cannot read collateral file")

    raw = (DCAP / "phala_sgx_v3.quote").read_bytes()
    shown = run_script("quote", "show", "-", "--json", stdin=base64.b64encode(raw))
    assert shown.returncode == 0 and json.loads(shown.stdout)["encoding"] == "base64"

    usage = run_script("quote", "verify")
    assert usage.returncode == 2 and usage.stderr.decode().count("\n") == 1 and b"Traceback" not in usage.stderr

    version = subprocess.run([sys.executable, "-m", "fedattest", "--version"], capture_output=True, check=False, timeout=60)
    assert version.returncode == 0 and version.stdout.decode().strip() == f"fedattest {__version__}"
