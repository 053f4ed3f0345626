"""Serving the coordinator over HTTPS with uvicorn: its TLS certificate is issued by its own root CA
(the one its quote binds), for the address it listens on."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import uvicorn
from cryptography.hazmat.primitives import serialization

from fedattest.coordinator.api import BODY_TIMEOUT_SECONDS, NONCE_BURST, NONCE_RATE_PER_SECOND, create_app
from fedattest.coordinator.core import Coordinator
from fedattest.errors import FedattestError
from fedattest.files import atomic_write
from fedattest.listen import listening_socket
from fedattest.logs import log_to_stderr
from fedattest.pki import identity as ident
from fedattest.tls_server import (
    HEADER_TIMEOUT_SECONDS,
    KEEP_ALIVE_SECONDS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
    TlsServer,
    guarded_protocol,
)


class _Server(TlsServer):
    """uvicorn's server with fedattest's TLS timeouts (:class:`fedattest.tls_server.TlsServer`), and that does
    not re-raise SIGTERM/SIGINT itself: uvicorn re-raises a captured signal as soon as it has shut
    down, which ends the process before :func:`serve` has removed the TLS key file and ``url`` and closed
    the coordinator. The signal is kept in ``stop_signal`` for :func:`serve` to raise after that."""

    stop_signal: int | None = None
    on_started: Callable[[], None] | None = None  # once serving, with the signal handlers in place

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        with super().capture_signals():
            yield
            if self._captured_signals:
                self.stop_signal = self._captured_signals[-1]
            self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self.on_started is not None:
            self.on_started()


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise FedattestError(f"--listen must be HOST:PORT (e.g. 127.0.0.1:8443, port 0 picks a free one), got {text!r}")
    return host.strip("[]"), int(port)


def _log_events_to_stderr() -> None:
    """The coordinator's decision lines (:mod:`fedattest.coordinator.events`) on stderr, one per line."""
    log_to_stderr("fedattest.coordinator", "fedattest coordinator: %(message)s")


def serve(
    coordinator: Coordinator,
    state: Path,
    host: str,
    port: int,
    extra_names: list[str],
    *,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
    max_per_client: int = MAX_CONNECTIONS_PER_CLIENT,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
    nonce_rate: float = NONCE_RATE_PER_SECOND,
    nonce_burst: int = NONCE_BURST,
) -> None:
    """Bind, write ``url``, ``root_ca.pem`` and the TLS files into the state directory ``state``, and serve until
    stopped."""
    sock = listening_socket(host, port)
    port = sock.getsockname()[1]
    # The certificate names what clients may connect to: the listen address, localhost, and the operator's
    # --dns-name values (names or addresses, e.g. the address other hosts reach it at). No client dials a
    # wildcard address: on this machine, loopback reaches it, so the certificate and `url` name that instead.
    extra_dns, extra_ips = ident.names_and_addresses(extra_names)
    url_host = host
    try:
        listen_ip = ipaddress.ip_address(host)
        if listen_ip.is_unspecified:
            url_host = "127.0.0.1" if listen_ip.version == 4 else "::1"
        ips, names = [url_host], ["localhost", *extra_dns]
    except ValueError:
        ips, names = ["127.0.0.1"], [host, "localhost", *extra_dns]
    ips = list(dict.fromkeys([*ips, *extra_ips]))
    key = ident.new_key()
    cert = ident.issue_leaf(
        ca_key=coordinator.state.root_key, ca=coordinator.state.root_ca, public_key=key.public_key(),
        common_name="fedattest coordinator", uris=[f"urn:fedattest:{coordinator.policy.name}:coordinator"],
        dns_names=names, ips=ips, now=ident.utcnow(), lifetime=timedelta(days=30),
    )  # fmt: skip
    for stale in [*state.glob("tls-*.pem"), *state.glob("tls-*.key")]:  # from a coordinator that was killed
        stale.unlink(missing_ok=True)
    tls_cert, tls_key = state / f"tls-{os.getpid()}.pem", state / f"tls-{os.getpid()}.key"
    chain = cert.public_bytes(serialization.Encoding.PEM) + coordinator.state.root_ca.public_bytes(serialization.Encoding.PEM)
    atomic_write(tls_cert, chain, mode=0o600)
    fmt = serialization.PrivateFormat.PKCS8
    atomic_write(tls_key, key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption()))
    url = f"https://{'[' + url_host + ']' if ':' in url_host else url_host}:{port}"
    atomic_write(state / "root_ca.pem", coordinator.state.root_ca.public_bytes(serialization.Encoding.PEM), mode=0o644)
    audit_key = coordinator.state.token_key.public_key()
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    atomic_write(state / "audit-key.pub.pem", audit_key.public_bytes(serialization.Encoding.PEM, spki), mode=0o644)
    protocol = guarded_protocol(header_timeout, max_connections, max_per_client)
    config = uvicorn.Config(
        create_app(coordinator, nonce_rate=nonce_rate, nonce_burst=nonce_burst, body_timeout=body_timeout),
        ssl_certfile=str(tls_cert),
        ssl_keyfile=str(tls_key), log_level="warning", access_log=False, lifespan="off", http=protocol,
        timeout_keep_alive=int(min(KEEP_ALIVE_SECONDS, header_timeout)) or 1, limit_concurrency=max_connections + 1,
    )  # fmt: skip
    server = _Server(config)

    def announce() -> None:
        # Written only once uvicorn serves with its signal handlers installed: whoever waits for `url`
        # (an operator's script, the tests) may then stop the coordinator and its clean-up still runs.
        atomic_write(state / "url", (url + "\n").encode(), mode=0o644)
        sys.stderr.write(f"fedattest coordinator for {coordinator.policy.name!r} listening on {url}\n")
        sys.stderr.flush()

    server.on_started = announce
    _log_events_to_stderr()
    try:
        server.run(sockets=[sock])
    finally:
        for path in (tls_cert, tls_key, state / "url"):
            with contextlib.suppress(OSError):
                path.unlink()
        coordinator.close()
    if server.stop_signal is not None:
        signal.raise_signal(server.stop_signal)  # end as the signal asks (SIGTERM: killed by it; SIGINT: interrupted)
