"""`fedattest sim init|show|quote|collateral`, and their output verified by `fedattest quote verify`."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from fedattest.cli import app
from fedattest.sgx.quote import Quote, ReportBody
from tests.conftest import assert_one_line_error

runner = CliRunner()
MRENCLAVE = "ab" * 32
MRSIGNER = "cd" * 32


def cli(*args: str | Path) -> Result:
    return runner.invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("sim") / "platform"
    result = cli("sim", "init", directory, "--json")
    assert result.exit_code == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["scenario"] == "up-to-date" and Path(info["root_ca"]).is_file()
    return directory


def make_quote(platform: Path, out: Path, *extra: str) -> Path:
    result = cli("sim", "quote", "-p", platform, "--mrenclave", MRENCLAVE, "--mrsigner", MRSIGNER, "-o", out, *extra)
    assert result.exit_code == 0, result.stderr
    assert "wrote quote" in result.stderr
    return out


def verify(platform: Path, quote: Path, collateral: Path, *extra: str) -> Result:
    root = platform / "root_ca.der"
    return cli("quote", "verify", quote, "--collateral", collateral, "--root-ca", root, "--json", *extra)


def test_init_quote_collateral_verify(platform: Path, tmp_path: Path) -> None:
    quote = make_quote(
        platform, tmp_path / "q.bin", "--isvprodid", "5", "--isvsvn", "2", "--report-data", "11" * 32, "--config-id", "22" * 32
    )
    body = Quote.parse(quote.read_bytes()).body
    assert isinstance(body, ReportBody) and body.config_id == bytes.fromhex("22" * 32) + bytes(32)
    collateral = tmp_path / "c.json"
    assert cli("sim", "collateral", "-p", platform, "-o", collateral).exit_code == 0
    result = verify(platform, quote, collateral, "--allow-simulation", "--expect-mrenclave", MRENCLAVE)
    assert result.exit_code == 0, result.stdout
    out = json.loads(result.stdout)
    assert out["accepted"] and out["simulated"] and out["tcb_status"] == "UpToDate"
    assert (out["mrenclave"], out["mrsigner"], out["isv_prod_id"], out["isv_svn"]) == (MRENCLAVE, MRSIGNER, 5, 2)
    assert out["report_data"] == "11" * 32 + "00" * 32  # shorter report data is zero-padded on the right
    refused = verify(platform, quote, collateral, "--expect-mrenclave", MRENCLAVE)
    assert refused.exit_code == 1 and "simulated" in json.loads(refused.stdout)["reason"]


@pytest.mark.parametrize("fmt", ["hex", "base64"])
def test_quote_text_formats_verify_too(platform: Path, tmp_path: Path, fmt: str) -> None:
    out = make_quote(platform, tmp_path / f"q.{fmt}", "--format", fmt)
    text = out.read_text().strip()
    raw = bytes.fromhex(text) if fmt == "hex" else base64.b64decode(text)
    assert Quote.parse(raw).tee == "SGX"
    collateral = tmp_path / "c.json"
    cli("sim", "collateral", "-p", platform, "-o", collateral)
    assert verify(platform, out, collateral, "--allow-simulation").exit_code == 0


def test_debug_quote_is_refused_without_allow_debug(platform: Path, tmp_path: Path) -> None:
    quote = make_quote(platform, tmp_path / "q.bin", "--debug")
    collateral = tmp_path / "c.json"
    cli("sim", "collateral", "-p", platform, "-o", collateral)
    result = verify(platform, quote, collateral, "--allow-simulation")
    assert result.exit_code == 1 and json.loads(result.stdout)["debug"] is True
    assert verify(platform, quote, collateral, "--allow-simulation", "--allow-debug").exit_code == 0


@pytest.mark.parametrize(
    ("scenario", "code", "status"),
    [("sw-hardening-needed", 0, "SWHardeningNeeded"), ("out-of-date", 1, "OutOfDate"), ("qe-out-of-date", 1, "OutOfDate")],
)
def test_scenarios_through_the_cli(tmp_path: Path, scenario: str, code: int, status: str) -> None:
    directory = tmp_path / "p"
    assert cli("sim", "init", directory, "--scenario", scenario).exit_code == 0
    quote = make_quote(directory, tmp_path / "q.bin")
    collateral = tmp_path / "c.json"
    cli("sim", "collateral", "-p", directory, "-o", collateral)
    result = verify(directory, quote, collateral, "--allow-simulation")
    assert result.exit_code == code and json.loads(result.stdout)["tcb_status"] == status


def test_revoked_pck_is_rejected_at_revocation(tmp_path: Path) -> None:
    directory = tmp_path / "p"
    assert cli("sim", "init", directory, "-s", "revoked-pck").exit_code == 0
    quote = make_quote(directory, tmp_path / "q.bin")
    collateral = tmp_path / "c.json"
    cli("sim", "collateral", "-p", directory, "-o", collateral)
    result = verify(directory, quote, collateral, "--allow-simulation")
    assert result.exit_code == 1 and "revocation" in json.loads(result.stdout)["reason"]


def test_show_and_private_files(platform: Path) -> None:
    result = cli("sim", "show", platform)
    assert result.exit_code == 0 and "root ca sha256" in result.stdout
    assert stat.S_IMODE((platform / "attestation.key").stat().st_mode) == 0o600


def test_collateral_at_a_given_time(platform: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.json"
    assert cli("sim", "collateral", "-p", platform, "--at", "2030-01-01T00:00:00Z", "-o", out).exit_code == 0
    assert '"issueDate":"2029-12-31T23:55:00Z"' in json.loads(out.read_text())["tcb_info"]


def test_usage_errors_are_one_line(platform: Path, tmp_path: Path) -> None:
    assert_one_line_error(cli("sim", "init", platform), 2, "already exists")
    assert_one_line_error(cli("sim", "init", tmp_path / "x", "--scenario", "bogus"), 2, "--scenario")
    assert_one_line_error(cli("sim", "show", tmp_path), 2, "not a simulated platform")
    base = ["sim", "quote", "-p", str(platform), "--mrsigner", MRSIGNER, "-o", str(tmp_path / "q")]
    assert_one_line_error(cli(*base, "--mrenclave", "abc"), 2, "--mrenclave")
    assert_one_line_error(cli(*base, "--mrenclave", MRENCLAVE, "--report-data", "00" * 65), 2, "--report-data")
    assert_one_line_error(cli(*base, "--mrenclave", MRENCLAVE, "--format", "pem"), 2, "--format")
    assert_one_line_error(cli(*base, "--mrenclave", MRENCLAVE, "--config-id", "zz"), 2, "--config-id")
    assert_one_line_error(cli(*base, "--mrenclave", MRENCLAVE, "--isvsvn", "70000"), 2, "--isvsvn")
    assert_one_line_error(cli("sim", "quote", "-p", platform, "--mrenclave", MRENCLAVE), 2, "--mrsigner")
    assert_one_line_error(cli("sim", "collateral", "-p", platform, "--at", "yesterday"), 2, "--at")
    assert_one_line_error(cli("sim", "collateral", "-p", platform, "-o", tmp_path), 2, "is a directory")
