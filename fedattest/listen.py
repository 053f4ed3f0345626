"""Listening TCP sockets for the servers fedattest runs itself (the coordinator, the SuperLink's two
listeners), bound before uvicorn gets them so the caller knows the port before serving."""

from __future__ import annotations

import socket

from fedattest.errors import FedattestError


def listening_socket(host: str, port: int, backlog: int = 512) -> socket.socket:
    """A socket listening on ``host:port`` (port 0 picks a free one), or :class:`FedattestError` saying why not."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY from the listener. uvicorn only sets it up for sockets it
    # binds itself; without it each request whose headers and body are written separately (all of
    # Flower's, most of ours) waits out the peer's 40 ms delayed ACK. Measured: 44 ms per request
    # instead of under 1 ms, and attested Flower rounds ~25 % slower (benchmarks/flower_overhead.py).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise FedattestError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(backlog)
    return sock
