"""uvicorn's server and HTTP protocol with the guards uvicorn has no setting for, for the servers fedattest
runs itself (the coordinator, the SuperLink's listeners): TLS handshake and shutdown timeouts, a deadline for
request headers, and caps on open connections, in all and per client address."""

from __future__ import annotations

import asyncio
import functools
import socket
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HANDSHAKE_TIMEOUT_SECONDS = 10.0  # TLS handshake (asyncio's default is 60 s)
# At shutdown each TLS connection waits for the peer's close_notify. An idle keep-alive client (the SuperLink's
# node-key refresh, the ServerApp's revocation checks, a SuperNode between pulls) never reads it, and asyncio's
# default wait is 30 s: every restart took 30 s more.
SSL_SHUTDOWN_TIMEOUT_SECONDS = 1.0


class TlsServer(uvicorn.Server):
    """Listeners with a TLS handshake timeout and a bounded TLS shutdown per connection."""

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        loop = asyncio.get_running_loop()
        create_server = loop.create_server
        loop.create_server = functools.partial(  # type: ignore[method-assign]
            create_server, ssl_handshake_timeout=HANDSHAKE_TIMEOUT_SECONDS, ssl_shutdown_timeout=SSL_SHUTDOWN_TIMEOUT_SECONDS
        )
        try:
            await super().startup(sockets)
        finally:
            del loop.create_server


HEADER_TIMEOUT_SECONDS = 10.0  # from connection (or the previous response) to a request's complete headers
KEEP_ALIVE_SECONDS = 5.0  # an idle connection between requests
MAX_CONNECTIONS = 512  # open HTTP connections; well under the usual 1,024 file descriptors
MAX_CONNECTIONS_PER_CLIENT = 128  # from one address: one attacker cannot take every slot (50 clients behind a NAT can)


class _Limits:
    header_timeout = HEADER_TIMEOUT_SECONDS
    max_connections = MAX_CONNECTIONS
    max_per_client = MAX_CONNECTIONS_PER_CLIENT


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with two guards against slow clients (slowloris): a connection beyond
    ``max_connections`` (or beyond ``max_per_client`` from one address) is closed at once, and one whose
    request headers are not complete within ``header_timeout`` seconds of connecting (or of its previous
    response) is closed. uvicorn's own
    keep-alive timer restarts on every byte received, so a client dripping one header byte at a time
    would otherwise hold its connection (and a file descriptor) forever."""

    limits: type[_Limits] = _Limits
    _header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        host = self.client[0] if self.client else None
        if len(self.connections) > self.limits.max_connections or (
            sum(1 for c in self.connections if c.client is not None and c.client[0] == host) > self.limits.max_per_client
        ):
            transport.abort()  # connection_lost follows and forgets it
            return
        self._arm_header_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_header_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _arm_header_timer(self) -> None:
        self._cancel_header_timer()  # one timer per connection: none outlives it or holds old requests
        if not self.transport.is_closing():
            self._header_timer = self.loop.call_later(self.limits.header_timeout, self._header_deadline, self.cycle)

    def _header_deadline(self, cycle: Any) -> None:
        # Still no new request (the same cycle, finished or none): the headers did not arrive in time.
        if self.cycle is cycle and (cycle is None or cycle.response_complete) and not self.transport.is_closing():
            self.transport.abort()


def guarded_protocol(header_timeout: float, max_connections: int, max_per_client: int) -> type[GuardedH11Protocol]:
    """A :class:`GuardedH11Protocol` with these limits, for ``uvicorn.Config(http=...)``."""
    values = {"header_timeout": header_timeout, "max_connections": max_connections,
              "max_per_client": min(max_per_client, max_connections)}  # fmt: skip
    limits = type("Limits", (_Limits,), values)
    return type("Protocol", (GuardedH11Protocol,), {"limits": limits})
