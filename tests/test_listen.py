"""The listening sockets of our own servers: accepted connections must not wait out delayed ACKs."""

from __future__ import annotations

import socket

import pytest

from fedattest.errors import FedattestError
from fedattest.listen import listening_socket


def test_accepted_connections_have_nodelay() -> None:
    with listening_socket("127.0.0.1", 0) as server, socket.create_connection(server.getsockname()[:2]):
        accepted, _ = server.accept()
        with accepted:
            assert accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def test_a_port_in_use_is_a_clear_error() -> None:
    with listening_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        # SO_REUSEADDR lets a second socket bind a port that is only in TIME_WAIT, never one in LISTEN.
        with pytest.raises(FedattestError, match=rf"cannot listen on 127.0.0.1:{port}: "):
            listening_socket("127.0.0.1", port)
