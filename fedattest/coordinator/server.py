"""Serving the coordinator over HTTPS with uvicorn: its TLS certificate is issued by its own root CA
(the one its quote binds), for the address it listens on."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from datetime import timedelta

import uvicorn
from cryptography.hazmat.primitives import serialization

from fedattest.coordinator import identity as ident
from fedattest.coordinator.api import create_app
from fedattest.coordinator.core import Coordinator
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.listen import listening_socket


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise FedattestError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8443, port 0 picks a free one), got {text!r}")
    return host.strip("[]"), int(port)


def serve(coordinator: Coordinator, host: str, port: int, extra_names: list[str]) -> None:
    """Bind, write ``url`` and ``root_ca.pem`` into the state directory, and serve until stopped."""
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    try:
        ips = [str(ipaddress.ip_address(host))]
        names = ["localhost", *extra_names]
    except ValueError:
        ips, names = ["127.0.0.1"], [host, "localhost", *extra_names]
    key = ident.new_key()
    cert = ident.issue_leaf(
        ca_key=coordinator.state.root_key, ca=coordinator.state.root_ca, public_key=key.public_key(),
        common_name="fedattest coordinator", uris=[f"urn:fedattest:{coordinator.policy.name}:coordinator"],
        dns_names=names, ips=ips, now=ident.utcnow(), lifetime=timedelta(days=30),
    )  # fmt: skip
    state = coordinator.state_dir
    for stale in [*state.glob("tls-*.pem"), *state.glob("tls-*.key")]:  # from a coordinator that was killed
        stale.unlink(missing_ok=True)
    tls_cert, tls_key = state / f"tls-{os.getpid()}.pem", state / f"tls-{os.getpid()}.key"
    chain = cert.public_bytes(serialization.Encoding.PEM) + coordinator.state.root_ca.public_bytes(serialization.Encoding.PEM)
    atomic_write(tls_cert, chain, mode=0o600)
    fmt = serialization.PrivateFormat.PKCS8
    atomic_write(tls_key, key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    url = f"https://{'[' + host + ']' if ':' in host else host}:{port}"
    atomic_write(state / "root_ca.pem", coordinator.state.root_ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    audit_key = coordinator.state.token_key.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    atomic_write(state / "audit-key.pub.pem", audit_key.public_bytes(serialization.Encoding.PEM, spki), mode=0o644)
    atomic_write(state / "url", (url + "\n").encode(), mode=0o644)
    sys.stderr.write(f"fedattest coordinator for {coordinator.policy.name!r} listening on {url}\n")
    sys.stderr.flush()
    config = uvicorn.Config(
        create_app(coordinator), ssl_certfile=str(tls_cert), ssl_keyfile=str(tls_key), log_level="warning",
        access_log=False, lifespan="off", timeout_keep_alive=30,
    )  # fmt: skip
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        for path in (tls_cert, tls_key, state / "url"):
            with contextlib.suppress(OSError):
                path.unlink()
        coordinator.close()
