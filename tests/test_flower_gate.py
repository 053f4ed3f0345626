"""The app gate inside Flower's own install path: a real FAB from `flwr build` installs only when its
hash is in the policy, and an unapproved one is refused before anything is written."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedattest.flower import AppGate, AppNotAllowedError, fab_hash, install_app_gate
from fedattest.flower.gate import _MODULES

PYPROJECT = """\
[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "gatedapp"
version = "1.0.0"
dependencies = []

[tool.hatch.build.targets.wheel]
packages = ["."]

[tool.flwr.app]
publisher = "fedattest"

[tool.flwr.app.components]
serverapp = "gatedapp.server_app:app"
clientapp = "gatedapp.client_app:app"

[tool.flwr.app.config]
num-server-rounds = 1
"""


def build_fab(directory: Path, marker: str) -> bytes:
    (directory / "gatedapp").mkdir(parents=True)
    (directory / "pyproject.toml").write_text(PYPROJECT)
    (directory / "gatedapp" / "__init__.py").write_text(f"# {marker}\n")
    (directory / "gatedapp" / "server_app.py").write_text("app = None\n")
    (directory / "gatedapp" / "client_app.py").write_text("app = None\n")
    flwr = Path(sys.executable).with_name("flwr")
    subprocess.run([str(flwr), "build"], cwd=directory, check=True, capture_output=True, timeout=120)
    (fab,) = directory.glob("*.fab")
    return fab.read_bytes()


@pytest.fixture(scope="module")
def fabs(tmp_path_factory: pytest.TempPathFactory) -> tuple[bytes, bytes]:
    base = tmp_path_factory.mktemp("fabs")
    return build_fab(base / "approved", "approved"), build_fab(base / "other", "not approved")


@pytest.fixture
def flwr_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    home = tmp_path / "flwr-home"
    monkeypatch.setenv("FLWR_HOME", str(home))
    yield home
    shutil.rmtree(home, ignore_errors=True)


def test_flwr_build_is_deterministic(tmp_path: Path, fabs: tuple[bytes, bytes]) -> None:
    # The policy can list an app's hash before anyone runs it.
    assert fab_hash(build_fab(tmp_path / "again", "approved")) == fab_hash(fabs[0])


def test_flower_installs_only_approved_apps(fabs: tuple[bytes, bytes], flwr_home: Path) -> None:
    # The modules themselves (their packages re-export functions of the same names).
    run_clientapp = importlib.import_module("flwr.supernode.runtime.run_clientapp")
    run_serverapp = importlib.import_module("flwr.superlink.runtime.run_serverapp")

    approved, other = fabs
    undo = install_app_gate(AppGate([fab_hash(approved)]))
    try:
        for module in (run_clientapp, run_serverapp):
            with pytest.raises(AppNotAllowedError, match=fab_hash(other)):
                module.install_from_fab(other, skip_prompt=True)
            assert not (flwr_home / "apps").exists() or not any((flwr_home / "apps").iterdir())  # nothing installed
        installed = run_clientapp.install_from_fab(approved, skip_prompt=True)
        assert installed.is_dir() and str(installed).startswith(str(flwr_home))
    finally:
        undo()
    assert "gated" not in run_clientapp.install_from_fab.__name__


def test_the_hooked_modules_still_exist_in_this_flower() -> None:

    found = 0
    for name in _MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        found += hasattr(module, "install_from_fab")
    assert found >= 3, "Flower's install path moved: update fedattest/flower/gate.py"


GATED_LATER = """
import importlib, sys
from fedattest.flower import AppGate, install_app_gate
install_app_gate(AppGate(["ab" * 32]))
assert "flwr.superlink.runtime.run_serverapp" not in sys.modules, "the gate imported the server side"
for name in ("flwr.supernode.runtime.run_clientapp", "flwr.superlink.runtime.run_serverapp", "flwr.simulation.app"):
    module = importlib.import_module(name)
    assert hasattr(module.install_from_fab, "__fedattest_gate__"), name
print("gated")
"""


def test_a_flower_module_imported_after_the_gate_installs_through_it() -> None:
    """The gate imports nothing it does not need (a ClientApp process starts for every message), yet a Flower module
    loaded afterwards binds the gated install function (it imports it by name from the patched flwr.cli.install)."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GATED_LATER], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0 and done.stdout.strip() == "gated", done.stderr[-2000:]
