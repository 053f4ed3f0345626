"""Shared fixtures: the hardware test vectors shipped in tests/vectors (provenance in tests/vectors/README.md),
and the guard that fails any test leaving a process running (tests/processes.py)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result

from fedattest.dcap.collateral import Collateral
from tests import processes

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"
DCAP = VECTORS / "dcap"


# The cases in tests/vectors/dcap, named here so that collecting the tests reads no file (a missing
# vector then fails its tests, not the collection of whole modules). tests/test_vectors.py checks these
# names against expected.json and the files present.
VERIFIABLE_CASES = (  # a quote, its collateral and a verification time
    "gotdx_v5_sample",
    "independent_sim_sgx_v3",
    "oasis_sgx_v3",
    "phala_sgx_v3",
    "phala_tdx_v4",
    "phala_tdx_v5_outdated",
)
QUOTE_CASES = tuple(sorted((*VERIFIABLE_CASES, "oasis_sgx_v3_eppid_certtype3")))  # every NAME.quote


@cache
def dcap_expected() -> dict[str, dict[str, Any]]:
    """expected.json: each case's source, verification time and dcap-qvl's verdict."""
    return json.loads((DCAP / "expected.json").read_text())  # type: ignore[no-any-return]


def verifiable_cases() -> list[str]:
    """Cases with collateral and a verification time."""
    return list(VERIFIABLE_CASES)


def load_vector(name: str) -> tuple[bytes, Collateral, dict[str, Any]]:
    """A case's quote, collateral and expected.json entry."""
    quote = (DCAP / f"{name}.quote").read_bytes()
    collateral = Collateral.from_json((DCAP / f"{name}.collateral.json").read_text())
    return quote, collateral, dcap_expected()[name]


def assert_one_line_error(result: Result, code: int, *needles: str) -> str:
    """The CLI's error contract: exit ``code``, exactly one ``error: ...`` line on stderr, no traceback."""
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def readme_script(name: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """(argv, env) to run ``scripts/NAME`` as the README says, but never creating a venv or installing:
    with FEDATTEST_NO_INSTALL=1 the script only checks that .venv has what it needs. The scripts run
    the repository's .venv, so under any other interpreter the test is skipped rather than testing another
    installation than the one it was given."""
    if Path(sys.prefix).resolve() != (REPO / ".venv").resolve():
        pytest.skip(f"scripts/{name} runs the repository's .venv; these tests run under {sys.prefix}")
    return ["bash", str(REPO / "scripts" / name), *args], {**os.environ, "FEDATTEST_NO_INSTALL": "1"}


@pytest.fixture(scope="session")
def dcap_dir() -> Path:
    if not DCAP.is_dir():
        pytest.fail(f"test vectors not found at {DCAP}: the checkout is incomplete")
    return DCAP


@pytest.fixture(scope="session", autouse=True)
def _no_process_outlives_the_session() -> Iterator[None]:
    """Module- and session-scoped fixtures (servers shared by several tests) must stop what they started."""
    processes.become_subreaper()
    before = set(processes.descendants())
    yield
    leaked = processes.left_behind(before)
    processes.reap()
    if leaked:
        pytest.fail(f"processes left running after the last test (killed now): {processes.describe(leaked)}")


@pytest.fixture(autouse=True)
def _no_process_outlives_its_test() -> Iterator[None]:
    """Fail the test that leaves a process running, after killing it (and its process group)."""
    before = set(processes.descendants())
    yield
    if leaked := processes.left_behind(before):
        pytest.fail(f"the test left processes running (killed now): {processes.describe(leaked)}")


@pytest.fixture
def run7(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower's task identity as a Flower process of run 7 has it (messages built by hand need one)."""
    from flwr.supercore.task_identity import TaskIdentity

    for name, value in (("_run_id", 7), ("_node_id", 0), ("_task_id", 1)):  # what a Flower process sets
        monkeypatch.setattr(TaskIdentity, name, value)
