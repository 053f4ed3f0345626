"""`bash scripts/demo-evidence.sh` end to end (the evidence demo), and `fedattest demo`'s edge cases."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fedattest.cli import app
from tests.conftest import DCAP, REPO, readme_script

# What the verdict table must say for each vector under the default policy.
VERDICTS = {
    "gotdx_v5_sample": ("ACCEPTED", "UpToDate", ""),
    "phala_tdx_v4": ("ACCEPTED", "UpToDate", ""),
    "phala_sgx_v3": (
        "REJECTED",
        "ConfigurationAndSWHardeningNeeded",
        "TCB status ConfigurationAndSWHardeningNeeded is not accepted",
    ),
    "oasis_sgx_v3": ("REJECTED", "-", "root_ca_crl: root CA CRL is not yet valid"),
    "oasis_sgx_v3_eppid_certtype3": ("REJECTED", "-", "certification data type 3"),
    "phala_tdx_v5_outdated": ("REJECTED", "-", "tcb_level"),
    "independent_sim_sgx_v3": ("REJECTED", "UpToDate", "evidence is simulated"),
}


def table_rows(out: str) -> dict[str, list[str]]:
    """The verdict table: case -> cells, each cell's folded lines joined (without spaces, so words that
    rich broke mid-word compare equal: compare with spaces removed)."""
    rows: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in out.splitlines():
        if not line.startswith("│"):
            current = None
            continue
        cells = [squash(c) for c in line.strip().strip("│").split("│")]
        if cells[0] in VERDICTS:
            current = rows[cells[0]] = cells
        elif current is not None and len(cells) == len(current):
            current[:] = [a + b for a, b in zip(current, cells, strict=True)]
    return rows


def squash(text: str) -> str:
    return "".join(text.split())


def test_demo_script_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    argv, env = readme_script("demo-evidence.sh", "--out", str(out))
    env["COLUMNS"] = "220"
    env.pop("FEDATTEST_TESTVECTORS", None)
    # No time limit is asserted (timings belong in benchmarks/); the timeout only stops a hung run.
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    stdout = proc.stdout

    # Part 2: one verdict table with every vector and the expected verdicts.
    rows = table_rows(stdout)
    assert set(rows) == set(VERDICTS), stdout
    header = next(line for line in stdout.splitlines() if line.startswith("┃") and "case" in line)
    columns = [c.strip() for c in header.strip("┃").split("┃")]
    assert columns == ["case", "TEE", "quote", "TCB status", "advisories", "sim", "verdict", "reason / notes", "dcap-qvl"]
    for name, (verdict, status, reason) in VERDICTS.items():
        cells = dict(zip(columns, rows[name], strict=True))
        assert cells["verdict"] == verdict, (name, cells)
        assert cells["TCB status"] == squash(status), (name, cells)
        assert squash(reason) in cells["reason / notes"], (name, cells)
        assert cells["sim"] == ("yes" if name.startswith("independent_sim") else "no")
        assert cells["TEE"] == ("TDX" if "tdx" in name else "SGX")
    assert dict(zip(columns, rows["phala_sgx_v3"], strict=True))["advisories"] == "INTEL-SA-00289,INTEL-SA-00615"
    assert "2 of 7 quotes accepted under the default policy." in stdout

    # Part 1: the simulated platform, accepted only with --allow-simulation.
    verdicts = [line for line in stdout.splitlines() if re.match(r"(ACCEPTED|REJECTED)\b", line)]
    assert verdicts[0].startswith("ACCEPTED") and "simulated evidence" in verdicts[0]
    assert verdicts[1].startswith("REJECTED: evidence is simulated")
    assert verdicts[2].startswith("REJECTED: MRENCLAVE")
    assert "$ fedattest sim init" in stdout and "$ fedattest quote verify" in stdout
    assert (out / "workload.quote").is_file()
    assert (out / ".fedattest-demo").is_file()

    # Running it again reuses its own output directory.
    again = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr


runner = CliRunner()


def test_demo_refuses_a_foreign_output_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not the demo's")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--vectors", str(DCAP)])
    assert result.exit_code == 2
    assert result.stderr.startswith("error: --out") and result.stderr.count("\n") == 1
    assert (tmp_path / "precious.txt").read_text() == "not the demo's"


def test_demo_without_test_vectors_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEDATTEST_TESTVECTORS", raising=False)
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "o"), "--vectors", str(tmp_path / "nowhere")])
    assert result.exit_code == 0, result.stderr
    assert "skipped: no test vectors at" in result.stdout


def test_demo_narrow_terminal_keeps_the_reasons(tmp_path: Path) -> None:
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "o"), "--vectors", str(DCAP)], env={"COLUMNS": "100"})
    assert result.exit_code == 0, result.stderr
    assert all(len(line) <= 100 for line in result.stdout.splitlines() if line.startswith(("│", "┃")))
    rows = table_rows(result.stdout)
    assert rows["phala_tdx_v4"][1] == "TDXv4" and rows["phala_sgx_v3"][4] == "REJECTED"
    assert squash("root_ca_crl: root CA CRL is not yet valid") in rows["oasis_sgx_v3"][5]
    assert rows["phala_sgx_v3"][2] == "ConfigurationAndSWHardeningNeededINTEL-SA-00289,INTEL-SA-00615"
