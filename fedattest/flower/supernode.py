"""The attested SuperNode: Flower's SuperNode, started inside the collaborator's enclave after activation.

The launcher keeps Flower's SuperNode running as its child: Flower's SuperNode exits when its SuperLink goes away
or forgets it (a SuperLink restarted without ``--persist`` hands out new node ids: the old one gets 401 on its
next heartbeat), so the launcher starts it again, with a growing delay, and it registers with the node id the
SuperLink now has for its attested key. One log line says why each time, instead of a dead collaborator.

It authenticates to the SuperLink with the node key bound in its quote (the aggregator registered it
from the coordinator's attested list), trusts only the coordinator's root CA for TLS (so it only talks
to the aggregator the coordinator attested), installs the app gate in itself and in every
``flwr-clientapp`` it starts, and passes the identity and data directories to the ClientApp through
``--node-config``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from fedattest.files import PRIVATE_DIR
from fedattest.flower.apps import AppGate
from fedattest.flower.context import DATA_KEY, IDENTITY_ENV, IDENTITY_KEY
from fedattest.flower.gated import write_gated_bin
from fedattest.flower.participant import NODE_KEY, ROOT_CA_FILE, ParticipantPaths, PolicyRefresher
from fedattest.flower.provisioned import load_provisioned

SuperNodePaths = ParticipantPaths
log = logging.getLogger("fedattest.flower")


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
    """Run Flower's SuperNode (a gated child process, started again whenever it stops on its own) until this process
    gets SIGINT or SIGTERM; returns 0 then. With ``policy_refresher``, a policy version the coordinator puts in force
    is taken every ``refresh_seconds`` (re-provisioned, no new activation; the ClientApp processes Flower starts
    read the new parameters)."""
    check_supernode_arguments(superlink, extra)
    supernode_argv(paths, superlink, data_dir, 1, extra)  # refuses bad input before anything is written
    provisioned = load_provisioned(paths.identity)
    gate = AppGate(provisioned.allowed_app_hashes, provisioned.policy_hash)
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

    def command() -> list[str]:
        # Flower's SuperNode runs gated (the allow-list installed first in it). A fresh runtime port each start: the
        # ClientApp executor of a SuperNode that just stopped may still be polling the old one until it notices.
        argv = supernode_argv(paths, superlink, data_dir, free_loopback_port(), extra)
        return [str(paths.gated_bin / "flower-supernode"), *argv[1:]]

    return keep_running(command, superlink)


# Flower's exit code 305 (SUPERNODE_CONNECTION_ERROR) as a process sees it: exit statuses are 8 bits.
SUPERNODE_CONNECTION_ERROR = 305 % 256


@dataclass(frozen=True)
class Reconnect:
    """How the launcher restarts Flower's SuperNode: after ``first`` seconds, doubling up to ``most``; a SuperNode
    that ran ``settled`` seconds or more starts the next wait at ``first`` again."""

    first: float = 1.0
    most: float = 30.0
    settled: float = 60.0


def stop_reason(code: int) -> str:
    """Why Flower's SuperNode stopped, as one line says it. Flower exits 305 when it cannot reach the SuperLink or
    the SuperLink does not (yet) know its key, and stops itself (exit 0) on a 401 heartbeat: the SuperLink
    restarted without its state, or dropped this node."""
    if code == SUPERNODE_CONNECTION_ERROR:
        return "could not connect: the SuperLink is down or has not registered this node's attested key yet"
    if code == 0:
        return "the SuperLink ended this node's session (restarted without --persist, or dropped the node)"
    if code < 0:
        return f"killed by signal {-code}"
    return f"exit {code}"


def keep_running(command: Callable[[], list[str]], superlink: str, reconnect: Reconnect = Reconnect()) -> int:
    """Run ``command()`` (Flower's SuperNode) until this process is told to stop (SIGINT or SIGTERM, passed on to it),
    starting it again whenever it stops on its own. Returns its last exit code (0 when stopped by a signal)."""
    stopping = threading.Event()
    child: subprocess.Popen[bytes] | None = None

    def stop(signum: int, _frame: FrameType | None) -> None:
        stopping.set()
        if child is not None and child.poll() is None:
            child.send_signal(signal.SIGTERM if signum == signal.SIGTERM else signal.SIGINT)

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    delay, code = reconnect.first, 0
    try:
        while not stopping.is_set():
            began = time.monotonic()
            child = subprocess.Popen(command())  # noqa: S603 - our fixed argv, no shell
            try:
                code = child.wait()
            finally:
                if child.poll() is None:  # this process is ending abnormally: never leave Flower running
                    child.kill()
                    child.wait()
            if stopping.is_set():
                return 0 if code in {0, -signal.SIGINT, -signal.SIGTERM} else code
            if time.monotonic() - began >= reconnect.settled:
                delay = reconnect.first
            log.warning("Flower's SuperNode stopped: %s; connecting to the SuperLink at %s again in %.0f s",
                        stop_reason(code), superlink, delay)  # fmt: skip
            if stopping.wait(delay):
                break
            delay = min(delay * 2, reconnect.most)
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
