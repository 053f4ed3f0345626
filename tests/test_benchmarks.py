"""The benchmark runs and reports every mode (speed itself is not asserted: it depends on the machine)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO


def run(*args: str) -> subprocess.CompletedProcess[str]:
    script = REPO / "benchmarks" / "verify_quotes.py"
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120, check=False)


def test_benchmark_reports_every_mode_with_ratios() -> None:
    proc = run("-n", "3", "--repeat", "1", "--json", "--vector", "phala_sgx_v3", "--vector", "simulated")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["dcap_qvl"] is True
    rows = {(r["vector"], r["mode"]): r for r in report["results"]}
    for vector in ("phala_sgx_v3", "simulated"):
        for mode in ("dcap-qvl", "signatures-only", "cold", "warm", "warm-2-threads"):
            row = rows[(vector, mode)]
            assert row["quotes_per_second"] > 0
            assert (row["ratio_vs_dcap_qvl"] is None) == (mode == "dcap-qvl")


def test_benchmark_table_and_bad_arguments() -> None:
    table = run("-n", "2", "--repeat", "1", "--threads", "1", "--vector", "phala_tdx_v4")
    assert table.returncode == 0 and "vs dcap-qvl" in table.stdout and "x" in table.stdout
    unknown = run("--vector", "nope", "-n", "1")
    assert unknown.returncode != 0 and "unknown or unverifiable vector 'nope'" in unknown.stderr
    assert "Traceback" not in unknown.stderr
    bad = run("-n", "0")
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_activation_benchmark_runs_against_a_real_coordinator() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "activations.py"), "--clients", "3", "--per-client", "2", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["activations"] == 6 and report["activations_per_s"] > 0
    assert set(report["server_phase_ms_per_activation"]) == {"verify", "issue", "store"}


def test_revocation_benchmark_runs_real_processes_and_counts_no_late_update() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "revocation.py"), "--repeat", "1", "--refresh", "0.5", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert report["updates_accepted_after_approval"] == 0 and report["repeat"] == 1
    assert report["superlink_eviction_s"]["max"] > 0 and report["strategy_refusal_s"]["max"] > 0
    bad = subprocess.run([sys.executable, str(REPO / "benchmarks" / "revocation.py"), "--repeat", "0"],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert bad.returncode == 2 and "at least 1" in bad.stderr


def test_store_reads_benchmark_compares_both_ways() -> None:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "store_reads.py"), "--activations", "40", "--members", "4", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert set(report["reads"]) == {"status (count)", "members (counts, latest)", "public-keys (latest)"}
    assert all(r["before_ms"] > 0 and r["now_ms"] > 0 for r in report["reads"].values())


@pytest.mark.slow  # a whole federation: real Flower processes
def test_a_poisoned_member_is_left_out_and_the_model_stays_useful() -> None:
    pytest.importorskip("sklearn", reason="the example's data comes from scikit-learn (pip install -e .[dev])")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "poisoned_member.py"), "--rounds", "3", "--json"],
                          capture_output=True, text=True, timeout=900, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(proc.stdout)
    assert {r["member"] for r in report["refused"]} == {"hospital-c"} and len(report["refused"]) == 3
    assert all("NaN" in r["reason"] for r in report["refused"])
    # Without the check the model is NaN: it predicts one class for every image, whatever the round.
    assert len(set(report["baseline_accuracy"])) == 1
    # With it the model stays finite and learns (round by round the DP noise moves it, so only the best round
    # is compared: this split reaches 0.7-0.8 by round 3).
    assert len(report["attested_accuracy"]) == 3 and max(report["attested_accuracy"]) > max(report["baseline_accuracy"]) + 0.3
