"""Request bodies read within a size limit *as they arrive*, for the servers fedattest puts in front of an
ASGI application (the coordinator's API, the SuperLink's public Fleet listener).

Frameworks read a whole body before anything can look at it, and a ``Content-Length`` check alone does not
bound a chunked body. Here a declared length over the limit is refused unread, any other body is counted
chunk by chunk and refused the moment it passes the limit, and the application then gets the body in one
piece through :func:`replaying`. A body must also arrive within a deadline, so a slow sender holds neither
memory nor a slot for long. Plain ASGI messages: no web framework is imported (anyio bounds the wait).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
CLOSE = [(b"connection", b"close")]  # after a refusal mid-body: close rather than read the rest


class BodyTooLargeError(Exception):
    """The body is over the limit; ``size`` says what was seen (the declared length, or the count so far)."""

    def __init__(self, size: str) -> None:
        super().__init__(size)
        self.size = size


class BodyTimeoutError(Exception):
    """The body did not arrive within ``seconds`` of its headers."""

    def __init__(self, seconds: float) -> None:
        super().__init__(seconds)
        self.seconds = seconds


async def read_body(
    scope: MutableMapping[str, Any], receive: Receive, max_bytes: int, timeout: float | None = None
) -> bytes | None:
    """The whole body of an HTTP request, at most ``max_bytes``; None if the client went away first.
    Raises :class:`BodyTooLargeError` for a declared ``Content-Length`` over the limit (or not a number), before
    reading, and for any body whose count passes it, as soon as it does; :class:`BodyTimeoutError` when the
    body is not complete within ``timeout`` seconds (None: no deadline)."""
    if timeout is None:
        return await _read_body(scope, receive, max_bytes)
    with anyio.move_on_after(timeout):
        return await _read_body(scope, receive, max_bytes)
    raise BodyTimeoutError(timeout)  # reached only when the deadline cancelled the read


async def _read_body(scope: MutableMapping[str, Any], receive: Receive, max_bytes: int) -> bytes | None:
    for name, value in scope.get("headers", []):
        if name.lower() == b"content-length" and (not value.isdigit() or int(value) > max_bytes):
            raise BodyTooLargeError(value.decode("latin-1")[:32])
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            raise BodyTooLargeError(f"more than {size - len(chunk)}+{len(chunk)}")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def replaying(receive: Receive, body: bytes) -> Receive:
    """A ``receive`` that hands the application ``body`` in one message, then the connection's own messages."""
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


async def send_json_error(
    send: Send, status: int, message: str, headers: list[tuple[bytes, bytes]] | None = None, *, detail: bool = False
) -> None:
    """A complete ``{"error": message}`` response with ``status``; with ``detail``, the message also under ``detail``,
    the key Flower's CLI prints from an error response (else ``flwr`` shows only the status)."""
    body = json.dumps({"error": message, "detail": message} if detail else {"error": message}).encode()
    start = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *(headers or [])]
    await send({"type": "http.response.start", "status": status, "headers": start})
    await send({"type": "http.response.body", "body": body})
