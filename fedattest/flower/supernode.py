"""The attested SuperNode: Flower's SuperNode, started inside the collaborator's enclave after activation.

It authenticates to the SuperLink with the node key bound in its quote (the aggregator registered it
from the coordinator's attested list), trusts only the coordinator's root CA for TLS (so it only talks
to the aggregator the coordinator attested), installs the app gate in itself and in every
``flwr-clientapp`` it starts, and passes the identity and data directories to the ClientApp through
``--node-config``.
"""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from fedattest.files import PRIVATE_DIR
from fedattest.flower.apps import AppGate
from fedattest.flower.context import DATA_KEY, IDENTITY_ENV, IDENTITY_KEY
from fedattest.flower.gate import install_app_gate
from fedattest.flower.gated import write_gated_bin
from fedattest.flower.participant import NODE_KEY, ROOT_CA_FILE, ParticipantPaths, PolicyRefresher
from fedattest.flower.provisioned import load_provisioned

SuperNodePaths = ParticipantPaths


def free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _toml_string(value: str) -> str:
    # A TOML literal string: Flower's --node-config parser splits on quotes and does not understand escapes.
    if "'" in value or "\n" in value:
        raise ValueError(f"{value!r}: a path with a single quote or newline cannot be passed through Flower's --node-config")
    return f"'{value}'"


RESERVED_NODE_CONFIG = (IDENTITY_KEY, DATA_KEY)


def user_node_config(extra: Sequence[str]) -> tuple[list[str], str]:
    """Split the user's ``--node-config`` (``--node-config VALUE`` or ``--node-config=VALUE``, Flower's
    ``key=value`` pairs) out of the extra Flower options: (the other options, the user's pairs, "" if none).
    ``ValueError`` for a reserved key (fedattest sets it) or a TOML file (Flower cannot mix one with pairs)."""
    from flwr.common.config import parse_config_args  # noqa: PLC0415 - Flower's own parser of the option

    rest: list[str] = []
    given: list[str] = []
    items = iter(extra)
    for item in items:
        if item == "--node-config":
            value = next(items, None)
            if value is None:
                raise ValueError("--node-config needs a value (key=value pairs)")
            given.append(value)
        elif item.startswith("--node-config="):
            given.append(item.removeprefix("--node-config="))
        else:
            rest.append(item)
    pairs = " ".join(given)
    if pairs.strip().endswith(".toml"):
        raise ValueError("--node-config: give key=value pairs (fedattest adds its own, which Flower cannot mix with a file)")
    reserved = sorted(set(parse_config_args([pairs]) if pairs else {}) & set(RESERVED_NODE_CONFIG))
    if reserved:
        raise ValueError(f"--node-config: {', '.join(reserved)} is set by fedattest (security-relevant), not overridable")
    return rest, pairs


def supernode_argv(paths: SuperNodePaths, superlink: str, data_dir: Path, runtime_port: int, extra: Sequence[str]) -> list[str]:
    """The flower-supernode command line. The security-relevant flags are not overridable by ``extra``; the
    user's ``--node-config`` pairs are kept, with fedattest's reserved keys added (apps that read their own
    node config, e.g. ``partition-id``, keep working)."""
    extra, pairs = user_node_config(extra)
    node_config = f"{IDENTITY_KEY}={_toml_string(str(paths.identity))} {DATA_KEY}={_toml_string(str(data_dir))}"
    if pairs:
        node_config = f"{pairs} {node_config}"
    return [
        "flower-supernode", *extra,
        "--superlink", superlink,
        "--root-certificates", str(paths.identity / ROOT_CA_FILE),
        "--auth-supernode-private-key", str(paths.identity / NODE_KEY),
        "--node-config", node_config,
        "--isolation", "subprocess",
        "--host", "127.0.0.1", "--port", str(runtime_port),
    ]  # fmt: skip


FIXED_FLAGS = frozenset({
    "--superlink", "--root-certificates", "--auth-supernode-private-key", "--auth-supernode-public-key", "--node-config",
    "--isolation", "--insecure", "--trusted-entities", "--allow-runtime-dependency-installation", "--host", "--port",
})  # fmt: skip


def check_supernode_arguments(superlink: str, extra: Sequence[str]) -> None:
    """``ValueError`` naming what is wrong with the SuperLink address or the extra Flower options (a flag fedattest
    sets for security), so that the launcher refuses them before it activates."""
    host, sep, port = superlink.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--superlink must be HOST:PORT (the SuperLink's public Fleet API), got {superlink!r}")
    rest, _ = user_node_config(extra)
    clash = sorted({a.split("=")[0] for a in rest} & FIXED_FLAGS)
    if clash:
        raise ValueError(f"{', '.join(clash)}: set by fedattest (security-relevant), not overridable")


def run_supernode(
    paths: SuperNodePaths,
    superlink: str,
    data_dir: Path,
    extra: Sequence[str] = (),
    *,
    policy_refresher: Callable[[AppGate], PolicyRefresher] | None = None,
    refresh_seconds: float = 2.0,
) -> int:
    """Run Flower's SuperNode in this process until it exits; returns its exit code. With ``policy_refresher``, a
    policy version the coordinator puts in force is taken every ``refresh_seconds`` (re-provisioned, no new
    activation; the ClientApp processes Flower starts read the new parameters)."""
    from flwr.supernode.cli.flower_supernode import flower_supernode  # noqa: PLC0415 - Flower only here

    check_supernode_arguments(superlink, extra)
    argv = supernode_argv(paths, superlink, data_dir, free_loopback_port(), extra)  # refuses bad input before any change
    provisioned = load_provisioned(paths.identity)
    gate = AppGate(provisioned.allowed_app_hashes, provisioned.policy_hash)
    install_app_gate(gate)
    if policy_refresher is not None:
        refresher = policy_refresher(gate)

        def keep_provisioned() -> None:
            while True:  # a daemon thread: it ends with the process
                time.sleep(refresh_seconds)
                refresher.check()

        threading.Thread(target=keep_provisioned, name="fedattest-policy", daemon=True).start()
    paths.flwr_home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    write_gated_bin(paths.gated_bin)
    os.environ["PATH"] = f"{paths.gated_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    os.environ["FLWR_HOME"] = str(paths.flwr_home)
    os.environ[IDENTITY_ENV] = str(paths.identity)
    os.environ["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    sys.argv = argv
    try:
        flower_supernode()
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
