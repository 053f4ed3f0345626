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


def test_commit_benchmark() -> None:
    report = run("commit.py", "--files", "4", "--size-mib", "1")
    assert report["bytes"] == 4 << 20
    assert report["commit_vs_sha256sum"] > 0 and report["commit_vs_cores_x_hashlib"] > 0  # type: ignore[operator]


def test_verified_read_benchmark() -> None:
    report = run("verified_read.py", "--size-mib", "8")
    assert report["verified_vs_hashlib"] > 0 and report["last_chunk_first_byte_ms"] > 0  # type: ignore[operator]
