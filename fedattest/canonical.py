"""Canonical JSON for hashed documents: RFC 8785 (JSON Canonicalization Scheme), by the maintained ``rfc8785``
package. Any JCS implementation in another language produces the same bytes: keys sorted by UTF-16 code units,
no whitespace, strings in UTF-8 with minimal escapes, numbers as ECMAScript prints them (``1e-05`` is
``0.00001``, ``50.0`` is ``50``).

JCS numbers are IEEE doubles, so an integer beyond 2**53 cannot be carried: documents with Flower's 64-bit run
ids (round reports, the audit log) keep their own encoding until those ids become strings (issue 12)."""

from __future__ import annotations

from typing import Any

import rfc8785

from fedattest.errors import FormatError


def canonical_json(value: Any) -> bytes:
    """The RFC 8785 bytes of ``value`` (dicts, lists, strings, bools, None, floats and ints within ±2**53)."""
    try:
        return rfc8785.dumps(value)
    except rfc8785.CanonicalizationError as exc:
        raise FormatError("canonical_json", str(exc)) from None
