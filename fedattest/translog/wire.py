"""Strict reading of the log's JSON documents (tree heads, receipts, proofs), from bytes someone else sent.

A document is refused (``TranslogError`` at step ``format``) unless it is exactly the expected shape: UTF-8
JSON under a size bound, no duplicate keys, no NaN or infinities, exactly the expected keys, integers (not
floats or booleans) within [0, 2^53) so that RFC 8785 can carry them, lowercase hex of the exact length, and
canonical base64 (RFC 4648 §4, with padding).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from fedattest.translog.hashing import HASH_SIZE
from fedattest.translog.refusal import Step, TranslogError

MAX_SAFE_INTEGER = (1 << 53) - 1  # RFC 8785 numbers are doubles: integers beyond this cannot be signed
_HEX = re.compile(r"[0-9a-f]*")


def refuse(field: str, message: str) -> TranslogError:
    return TranslogError(Step.FORMAT, f"{field}: {message}")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError(f"duplicate key {key!r}")
        result[key] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def load(data: bytes | str, what: str, max_bytes: int) -> Any:
    """Parse a JSON document of at most ``max_bytes`` bytes, with the refusals above."""
    raw = data.encode() if isinstance(data, str) else data
    if not isinstance(raw, bytes):
        raise refuse(what, "not bytes")
    if len(raw) > max_bytes:
        raise refuse(what, f"{len(raw)} bytes, more than the {max_bytes} allowed")
    try:
        text = raw.decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise refuse(what, f"not JSON ({str(exc)[:100]})") from None


def fields(obj: Any, what: str, keys: frozenset[str]) -> Mapping[str, Any]:
    """``obj`` as an object with exactly ``keys``."""
    if not isinstance(obj, dict):
        raise refuse(what, "not a JSON object")
    if set(obj) != keys:
        missing, extra = sorted(keys - set(obj)), sorted(set(obj) - keys)
        parts = ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(extra)}"] if extra else [])
        raise refuse(what, "; ".join(parts))
    return obj


def integer(value: Any, what: str, maximum: int = MAX_SAFE_INTEGER) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise refuse(what, "not an integer")
    if not 0 <= value <= maximum:
        raise refuse(what, f"{value} is not in [0, {maximum}]")
    return value


def hex_bytes(value: Any, what: str, size: int = HASH_SIZE) -> bytes:
    """Lowercase hex of exactly ``size`` bytes."""
    if not isinstance(value, str) or len(value) != 2 * size or not _HEX.fullmatch(value):
        raise refuse(what, f"not {2 * size} lowercase hex digits")
    return bytes.fromhex(value)


def hash_list(value: Any, what: str, max_items: int) -> list[bytes]:
    if not isinstance(value, list):
        raise refuse(what, "not a JSON array")
    if len(value) > max_items:
        raise refuse(what, f"{len(value)} hashes, more than the {max_items} allowed")
    return [hex_bytes(item, f"{what}[{i}]") for i, item in enumerate(value)]


def base64_bytes(value: Any, what: str, max_bytes: int) -> bytes:
    """Canonical standard base64 (padding, no line breaks, unused bits zero) of at most ``max_bytes`` bytes."""
    if not isinstance(value, str) or len(value) > 4 * ((max_bytes + 2) // 3):
        raise refuse(what, f"not a base64 string of at most {max_bytes} bytes")
    try:
        decoded = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise refuse(what, "not base64") from None
    if base64.b64encode(decoded).decode() != value:  # one encoding per value, so signatures have one form
        raise refuse(what, "not canonical base64")
    return decoded
