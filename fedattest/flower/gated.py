"""Flower's own child processes (``flwr-serverapp``, ``flwr-clientapp``, ``flower-superexec``) with the app
gate installed before they can install or import an app.

Flower starts those children by command name (``subprocess.Popen(["flwr-clientapp", ...])``), so the
launchers put a directory of same-named wrappers first on ``PATH``. Each wrapper installs the gate from
the participant's provisioned allow-list (``$FEDATTEST_IDENTITY_DIR/provisioned.json``) and then runs
Flower's real console-script entry point in the same process. A wrapper that finds no allow-list refuses
to start: it never falls back to an ungated Flower.
"""

from __future__ import annotations

import importlib
import os
import stat
import sys
from collections.abc import Sequence
from pathlib import Path

from fedattest.errors import FedattestError
from fedattest.flower.apps import AppGate
from fedattest.flower.context import IDENTITY_ENV
from fedattest.flower.gate import install_app_gate
from fedattest.flower.provisioned import load_provisioned
from fedattest.logs import log_to_stderr

# Flower's console scripts and their entry points (its pyproject's [project.scripts]). Named here rather
# than looked up in the installed metadata at every start: a ClientApp process starts for every message,
# and scanning the metadata of every installed distribution costs ~25 ms of it. test_flower_pieces checks
# the table against Flower's metadata, so an upgrade that moves an entry point fails there, not in a run.
FLOWER_ENTRY_POINTS = {
    "flwr-serverapp": "flwr.superlink.cli:flwr_serverapp",
    "flwr-clientapp": "flwr.supernode.cli:flwr_clientapp",
    "flower-superexec": "flwr.supercore.cli:flower_superexec",
    "flower-supernode": "flwr.supernode.cli:flower_supernode",  # a child of the launcher, restarted when it stops
}
GATED_COMMANDS = tuple(FLOWER_ENTRY_POINTS)


def write_gated_bin(directory: Path, commands: Sequence[str] = GATED_COMMANDS) -> Path:
    """Write the wrappers into ``directory`` (created 0700) and return it, to put first on ``PATH``."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    for name in commands:
        path = directory / name
        path.write_text(
            f"#!{sys.executable}\n"
            "# Written by fedattest: Flower's command with the app allow-list installed first.\n"
            "import sys\n"
            "from fedattest.flower.gated import run_gated\n"
            f"sys.exit(run_gated({name!r}))\n"
        )
        path.chmod(stat.S_IRWXU)
    return directory


def install_gate_from_environment() -> AppGate:
    """Install the gate for the allow-list provisioned to this participant; raises if there is none."""
    where = os.environ.get(IDENTITY_ENV)
    if not where:
        raise FedattestError(f"${IDENTITY_ENV} is not set: refusing to run Flower without the app allow-list")
    gate = AppGate(load_provisioned(Path(where)).allowed_app_hashes)
    install_app_gate(gate)
    return gate


def run_gated(command: str) -> int:
    """Entry of a wrapper: install the gate, then run Flower's ``command`` with the same arguments."""
    configure_logging()
    if command not in FLOWER_ENTRY_POINTS:
        sys.stderr.write(f"error: {command}: not one of Flower's commands that fedattest gates\n")
        return 2
    try:
        install_gate_from_environment()
    except FedattestError as exc:
        sys.stderr.write(f"error: {command}: {exc}\n")
        return 2
    if command == "flwr-clientapp":  # every reply signed, whether or not the app added the mod
        from fedattest.flower.mods import enforce_reply_signing  # noqa: PLC0415

        enforce_reply_signing()
    elif command == "flwr-serverapp":  # attested, with the policy's DP and rounds, whatever the app starts
        from fedattest.flower.serverapp import enforce_policy_in_serverapp  # noqa: PLC0415

        enforce_policy_in_serverapp()
    module, function = FLOWER_ENTRY_POINTS[command].split(":")
    sys.argv[0] = command
    result = getattr(importlib.import_module(module), function)()
    return int(result) if isinstance(result, int) else 0


# Nothing leaves an enclave that the federation did not agree to: Flower's usage telemetry and its update
# check are off in every participant process (and in the children, which inherit the environment).
QUIET_FLOWER = {"FLWR_TELEMETRY_ENABLED": "0", "FLWR_DISABLE_UPDATE_CHECK": "1"}


def quiet_flower() -> None:
    os.environ.update(QUIET_FLOWER)


def configure_logging() -> None:
    """Our log lines (accepted and dropped updates, registered node keys, refusals) on stderr, in every
    participant process; Flower configures its own logger, and httpx's request lines are noise here."""
    log_to_stderr("fedattest", "%(levelname)s fedattest: %(message)s")
