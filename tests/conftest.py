"""Shared fixtures: the read-only hardware test vectors in ../shared/testvectors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO.parent / "shared" / "testvectors"
DCAP = VECTORS / "dcap"


def dcap_expected() -> dict[str, dict[str, Any]]:
    return json.loads((DCAP / "expected.json").read_text())  # type: ignore[no-any-return]


def verifiable_cases() -> list[str]:
    """Cases with collateral and a verification time."""
    return sorted(name for name, e in dcap_expected().items() if "at" in e)


@pytest.fixture(scope="session")
def dcap_dir() -> Path:
    if not DCAP.is_dir():
        pytest.fail(f"test vectors not found at {DCAP}: the repo must sit next to shared/")
    return DCAP
