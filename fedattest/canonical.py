"""Canonical JSON for every signed or hashed document: RFC 8785 (JSON Canonicalization Scheme), by the
maintained ``rfc8785`` package. Any JCS implementation in another language produces the same bytes: keys
sorted by UTF-16 code units, no whitespace, strings in UTF-8 with minimal escapes, numbers as ECMAScript
prints them (``1e-05`` is ``0.00001``, ``50.0`` is ``50``).

JCS numbers are IEEE doubles, so an integer beyond ±2**53 cannot be carried and is refused: such values (a
Flower run id is a uint64) are written as decimal strings.

Version 1 records (audit entries, claims and round reports written before fedattest used RFC 8785) were
hashed over Python's ``json.dumps`` with sorted keys; :func:`v1_json` reproduces those bytes so that old
logs still verify. Nothing new is written in version 1.
"""

from __future__ import annotations

import json
from typing import Any

import rfc8785

from fedattest.errors import FormatError

CURRENT_VERSION = 2  # the encoding of records written now: RFC 8785
VERSIONS = (1, 2)


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (dicts, lists, strings, bools, None, floats and ints within ±2**53)."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise FormatError("canonical_json", str(exc)) from None


def v1_json(value: Any, *, ascii_only: bool) -> bytes:
    """The version 1 bytes of ``value``: ``json.dumps`` with sorted keys and no whitespace; claims and round
    reports escaped non-ASCII characters (``ascii_only``), audit entries did not. Only for verifying old records."""
    try:
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=ascii_only, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise FormatError("canonical_json", str(exc)) from None


def versioned_json(value: Any, version: int, *, v1_ascii_only: bool) -> bytes:
    """``value`` in the encoding of record version ``version`` (see the module docstring)."""
    if version == CURRENT_VERSION:
        return canonical_json(value)
    if version == 1:
        return v1_json(value, ascii_only=v1_ascii_only)
    raise FormatError("canonical_json", f"unknown record version {version} (known: {', '.join(map(str, VERSIONS))})")
