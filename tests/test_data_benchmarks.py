"""The dataset benchmarks run and report their ratios (speed itself is not asserted here)."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.conftest import REPO


def run(script: str, *args: str) -> dict[str, object]:
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / script), *args, "--repeat", "1", "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)  # type: ignore[no-any-return]


def test_commit_benchmark_large_files() -> None:
    report = run("commit.py", "--files", "4", "--size-mib", "1")
    assert report["mode"] == "large" and report["bytes"] == 4 << 20
    assert report["commit_vs_sha256sum"] > 0 and report["engine_vs_cores_x_hashlib"] > 0  # type: ignore[operator]
    assert report["commit_peak_rss_kib"] > 0  # type: ignore[operator]


def test_commit_benchmark_small_files() -> None:
    report = run("commit.py", "--small-files", "300")
    assert report["mode"] == "small" and report["files"] == 300 and report["bytes"] == 300 * 1024
    assert report["pipeline_vs_commit"] > 0 and report["commit_peak_rss_kib"] > 0  # type: ignore[operator]
    assert set(report["runs_s"]) == {"pipeline", "commit"}  # type: ignore[arg-type]


def test_verified_read_benchmark() -> None:
    report = run("verified_read.py", "--size-mib", "8")
    assert report["verified_vs_hashlib"] > 0 and report["last_chunk_first_byte_ms"] > 0  # type: ignore[operator]
