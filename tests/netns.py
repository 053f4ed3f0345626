"""Network namespaces as separate hosts for a test: one namespace per host, each with its own address on one
bridge, which lives in a namespace of its own (the root namespace's interfaces and routes are never touched).

Needs ``ip`` (iproute2) and CAP_NET_ADMIN; :func:`require_netns` skips the test with the reason otherwise,
found by actually adding a namespace. Names carry the pid, so parallel runs never collide, and every
namespace made is deleted on every exit path of :func:`hosts`."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

SUBNET = "10.77.0"  # each run has its own bridge namespace, so runs may share the addresses


def _ip() -> str:
    ip = shutil.which("ip") or next((p for p in ("/usr/sbin/ip", "/sbin/ip") if os.access(p, os.X_OK)), None)
    if ip is None:
        pytest.skip("needs CAP_NET_ADMIN to create network namespaces: the 'ip' command (iproute2) is not installed")
    return ip


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_ip(), *argv], capture_output=True, text=True, timeout=30, check=False)


def require_netns() -> str:
    """The path of ``ip``, once adding (and deleting) a namespace has worked; otherwise the test is skipped."""
    ip = _ip()
    probe = f"fa{os.getpid()}-probe"
    added = _run("netns", "add", probe)
    if added.returncode != 0:
        why = (added.stderr.strip() or f"exit {added.returncode}").splitlines()[-1]
        pytest.skip(f"needs CAP_NET_ADMIN to create network namespaces: 'ip netns add' failed: {why}")
    _run("netns", "del", probe)
    return ip


@dataclass(frozen=True)
class Host:
    name: str  # the host's role in the test, e.g. "coordinator"
    netns: str  # its namespace
    address: str  # its IPv4 address on the bridge

    def exec(self, *argv: str) -> list[str]:
        """``argv`` run inside this host's namespace (``ip netns exec`` keeps the environment, and execs the
        command in place, so the pid and process group are the command's own)."""
        return [_ip(), "netns", "exec", self.netns, *argv]


def _must(*argv: str) -> None:
    done = _run(*argv)
    if done.returncode != 0:
        raise AssertionError(f"ip {' '.join(argv)} failed: {done.stderr.strip()}")


@contextmanager
def hosts(names: list[str]) -> Iterator[dict[str, Host]]:
    """A namespace per name, with address SUBNET.(i+1)/24 and loopback up, joined by a bridge in a namespace of its
    own. Removed again however the block ends."""
    require_netns()
    prefix = f"fa{os.getpid()}"
    bridge = f"{prefix}-br"
    made: list[str] = []
    try:
        _must("netns", "add", bridge)
        made.append(bridge)
        _must("-n", bridge, "link", "add", "br0", "type", "bridge")
        _must("-n", bridge, "link", "set", "br0", "up")
        result: dict[str, Host] = {}
        for i, name in enumerate(names):
            host = Host(name, f"{prefix}-{name}", f"{SUBNET}.{i + 1}")
            _must("netns", "add", host.netns)
            made.append(host.netns)
            port = f"p{i}"  # the bridge's end of the host's cable (names are per namespace)
            _must("-n", bridge, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", host.netns)
            _must("-n", bridge, "link", "set", port, "master", "br0", "up")
            _must("-n", host.netns, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _must("-n", host.netns, "link", "set", "eth0", "up")
            _must("-n", host.netns, "link", "set", "lo", "up")
            result[name] = host
        yield result
    finally:
        for netns in reversed(made):  # deleting a namespace removes its interfaces (and the veth peers) with it
            _run("netns", "del", netns)
