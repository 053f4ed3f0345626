"""Hooking the app allow-list into Flower, so a process refuses an unapproved app before installing it.

Flower installs an app from its FAB bytes with ``flwr.cli.install.install_from_fab`` in every process
that runs app code (SuperNode ClientApp runtime, SuperLink ServerApp runtime, the agent, simulation).
Those modules import the function by name, so :func:`install_app_gate` replaces it in
``flwr.cli.install`` and in each of them that is already imported; one imported later binds the replaced
function by itself. Nothing is imported for the gate's sake: a ClientApp process (one per message) does not
pay for the server side's modules. The check runs on the bytes, before anything is extracted, imported or
installed. The module list is tied to Flower 1.42 (pinned); a test fails if it goes stale.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fedattest.flower.apps import AppGate

_MODULES = (
    "flwr.cli.install",
    "flwr.supernode.runtime.run_clientapp",
    "flwr.superlink.runtime.run_serverapp",
    "flwr.supercore.task_process.agent.run_agentapp",
    "flwr.simulation.app",
    "flwr.compat.client.app",
)
_GATED = "__fedattest_gate__"


def install_app_gate(gate: AppGate) -> Callable[[], None]:
    """Make every Flower install path check ``gate`` first. Returns a function that undoes it."""
    install = importlib.import_module("flwr.cli.install")
    original: Callable[..., Path] = getattr(install.install_from_fab, _GATED, install.install_from_fab)

    def gated_install_from_fab(fab_file: Path | bytes, install_dir: Path | None = None, skip_prompt: bool = False) -> Path:
        data = fab_file if isinstance(fab_file, bytes) else Path(fab_file).read_bytes()
        gate.check(data)  # raises AppNotAllowedError: nothing extracted, imported or installed
        return original(data if isinstance(fab_file, bytes) else fab_file, install_dir, skip_prompt)

    setattr(gated_install_from_fab, _GATED, original)
    patched: list[tuple[Any, Any]] = []
    for name in _MODULES:
        # flwr.cli.install is imported above; the others only if already loaded (a later import binds the gated one).
        module = sys.modules.get(name)
        if module is None:
            continue
        if hasattr(module, "install_from_fab"):
            patched.append((module, module.install_from_fab))
            setattr(module, "install_from_fab", gated_install_from_fab)  # noqa: B010 - a module attribute, on purpose

    def undo() -> None:
        for module, previous in patched:
            setattr(module, "install_from_fab", previous)  # noqa: B010

    return undo
