"""The few CBOR (RFC 8949) items RA-TLS evidence uses: unsigned integers, byte and text strings, arrays,
maps and tags. Definite lengths and shortest encodings only, on both sides.

Written by hand because it is about a hundred lines for exactly these types, and a general CBOR library
would be a dependency for one certificate extension.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fedattest.errors import FormatError


@dataclass(frozen=True)
class Tag:
    number: int
    value: Any


def _head(major: int, n: int) -> bytes:
    if n < 24:
        return bytes([major << 5 | n])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * size):
            return bytes([major << 5 | info]) + n.to_bytes(size, "big")
    raise FormatError("cbor", "integer too large")


def encode(value: Any) -> bytes:
    if isinstance(value, bool) or value is None:
        raise FormatError("cbor", f"unsupported item {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise FormatError("cbor", "negative integers are not used here")
        return _head(0, value)
    if isinstance(value, bytes):
        return _head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _head(3, len(raw)) + raw
    if isinstance(value, list):
        return _head(4, len(value)) + b"".join(encode(v) for v in value)
    if isinstance(value, dict):
        return _head(5, len(value)) + b"".join(encode(k) + encode(v) for k, v in value.items())
    if isinstance(value, Tag):
        return _head(6, value.number) + encode(value.value)
    raise FormatError("cbor", f"unsupported item of type {type(value).__name__}")


def decode(data: bytes, where: str = "cbor") -> Any:
    """Decode exactly one item that covers all of ``data``."""
    value, end = _decode(data, 0, where, depth=0)
    if end != len(data):
        raise FormatError(where, f"{len(data) - end} bytes after the CBOR item")
    return value


def _decode(data: bytes, pos: int, where: str, depth: int) -> tuple[Any, int]:
    if depth > 16:
        raise FormatError(where, "nested too deeply")
    if pos >= len(data):
        raise FormatError(where, "truncated")
    major, info = data[pos] >> 5, data[pos] & 0x1F
    pos += 1
    if info < 24:
        n = info
    elif info in (24, 25, 26, 27):
        size = 1 << (info - 24)
        if pos + size > len(data):
            raise FormatError(where, "truncated")
        n = int.from_bytes(data[pos : pos + size], "big")
        pos += size
        if n < (24 if size == 1 else 1 << (8 * size // 2)):
            raise FormatError(where, "not the shortest encoding")
    else:
        raise FormatError(where, "indefinite lengths and reserved values are not accepted")
    if major == 0:
        return n, pos
    if major in (2, 3):
        if pos + n > len(data):
            raise FormatError(where, "truncated string")
        raw = data[pos : pos + n]
        if major == 2:
            return raw, pos + n
        try:
            return raw.decode("utf-8"), pos + n
        except UnicodeDecodeError:
            raise FormatError(where, "text string is not UTF-8") from None
    if major == 4:
        items = []
        for _ in range(n):
            item, pos = _decode(data, pos, where, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        out: dict[Any, Any] = {}
        for _ in range(n):
            key, pos = _decode(data, pos, where, depth + 1)
            if not isinstance(key, str | int) or key in out:
                raise FormatError(where, "map keys must be unique strings or integers")
            out[key], pos = _decode(data, pos, where, depth + 1)
        return out, pos
    if major == 6:
        value, pos = _decode(data, pos, where, depth + 1)
        return Tag(n, value), pos
    raise FormatError(where, f"CBOR major type {major} is not accepted here")
