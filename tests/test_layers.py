"""The package's layers (docs/architecture.md): `lint-imports` checks the contract in pyproject.toml, and a new
upward import breaks it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def _lint(package_parent: Path, config: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(package_parent)}  # this copy of fedattest, before the installed one
    return subprocess.run([str(LINT_IMPORTS), "--config", str(config), "--no-cache"], cwd=package_parent, env=env,
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip


def test_the_package_keeps_its_layers() -> None:
    done = _lint(REPO, REPO / "pyproject.toml")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "2 kept, 0 broken" in done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    shutil.copytree(REPO / "fedattest", tmp_path / "fedattest", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    # The format layer reaching up into the coordinator: what the contract exists to stop.
    (tmp_path / "fedattest" / "sgx" / "shortcut.py").write_text("from fedattest.coordinator import core  # noqa\n")
    done = _lint(tmp_path, tmp_path / "pyproject.toml")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-2000:]
    assert "BROKEN" in done.stdout and "fedattest.sgx.shortcut -> fedattest.coordinator.core" in done.stdout
