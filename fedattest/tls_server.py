"""uvicorn's server with the TLS timeouts uvicorn has no setting for, for the servers fedattest runs itself
(the coordinator, the SuperLink's two listeners)."""

from __future__ import annotations

import asyncio
import functools
import socket

import uvicorn

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
