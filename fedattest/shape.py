"""Limits on the shape of documents and request bodies someone else wrote, checked before a parser sees them.

Python's parsers (``json``, ``tomllib``) recurse once per nesting level and fail with ``RecursionError``
around 1,000 levels, and a JSON body with millions of keys costs memory and time long before any schema
looks at it. Both checks here work on the text with C string operations (no Python loop per token), so
they stay linear and fast even on the largest document we accept (a 128 MiB audit log). Pure: text in,
verdict out.
"""

from __future__ import annotations

import json
import re
from typing import Any

# Offline verification parses documents someone else wrote (a bundle, a log, a policy, an approval). The
# parsers (json, tomllib) recurse once per nesting level and fail with RecursionError around 1,000 levels;
# the documents fedattest writes nest at most 6 deep. So refuse anything nested deeper than this before parsing.
MAX_NESTING = 64

# Strings and comments, whose brackets do not count. Each pattern also matches a string that is never closed,
# ending in a lone backslash included (without that, the search would retry from every later quote:
# quadratic, minutes on 170 KB of '"\\' repeated), so removing them is linear in the input.
_JSON_SKIP = re.compile(r'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_TOML_SKIP = re.compile(
    r"'''.*?(?:'''|\Z)|\"\"\"(?:[^\\]|\\.)*?(?:\"\"\"|\\?\Z)|'[^'\n]*+(?:'|$)|\"(?:[^\"\\\n]|\\.)*+(?:\"|\\?$)|#[^\n]*+",
    re.DOTALL | re.MULTILINE,
)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")


def nesting_depth(text: str, *, toml: bool = False, limit: int = MAX_NESTING) -> int:
    """An upper bound of how deep ``[`` and ``{`` nest in a JSON (or, with ``toml``, TOML) document, outside
    strings and comments, i.e. of the recursion its parser needs; capped at ``limit + 1``.

    Each pass removes the innermost matched pairs, so a document nested d deep empties in d passes; an
    unmatched opening bracket may still nest what follows it, so each left over counts one level more.
    Linear time per pass (at most ``limit + 1`` passes of C string operations)."""
    brackets = _NOT_BRACKETS.sub("", (_TOML_SKIP if toml else _JSON_SKIP).sub("", text))
    for passes in range(limit + 1):
        if not brackets:
            return passes
        shorter = brackets.replace("[]", "").replace("{}", "")
        if shorter == brackets:
            return min(passes + shorter.count("[") + shorter.count("{"), limit + 1)
        brackets = shorter
    return limit + 1


def check_nesting(text: str | bytes, what: str, *, toml: bool = False) -> None:
    """Raise ``ValueError`` when ``text`` nests deeper than :data:`MAX_NESTING`."""
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    if nesting_depth(text, toml=toml) > MAX_NESTING:
        raise ValueError(f"{what}: nested deeper than {MAX_NESTING} levels")


def load_json(data: str | bytes, what: str) -> Any:
    """``json.loads`` for documents from someone else: refuses deep nesting (``ValueError``) up front."""
    check_nesting(data, what)
    try:
        return json.loads(data)
    except RecursionError:  # pragma: no cover - check_nesting refuses these first
        raise ValueError(f"{what}: nested too deeply") from None


def json_shape_problem(body: bytes | str, max_depth: int, max_items: int) -> str | None:
    """Why a JSON text nests deeper than ``max_depth`` or has more than ``max_items`` keys plus array items
    (counted as the ``[``, ``{`` and ``,`` outside strings), or None. Never parses."""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    if nesting_depth(text, limit=max_depth) > max_depth:
        return f"JSON nested deeper than {max_depth} levels"
    outside = _JSON_SKIP.sub("", text)
    if outside.count("[") + outside.count("{") + outside.count(",") > max_items:
        return f"JSON with more than {max_items} keys and items"
    return None
