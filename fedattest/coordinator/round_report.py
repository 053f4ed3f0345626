"""The round report's optional ``metrics`` and ``nodes`` (pure: no I/O): what the aggregator may send, how it
builds them from Flower's metric records, and the coordinator's checks of them.

Both are signed by the aggregator with the rest of the report, and only when present: a report without them
is signed over exactly the keys it had before (older aggregators, and the audit entries they wrote, still
verify). ``metrics`` is what the attested aggregator says its strategy computed; nothing checks the numbers
against anything else. ``nodes`` ties each participant to the Flower node id its update came from.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

# Every key a round report may carry, in the order they were added: what is signed (and what the offline bundle
# re-checks) is the subset present in the report.
SIGNED_KEYS = ("run_id", "round", "participants", "params_sha256", "refused", "dp", "metrics", "nodes")

MAX_METRICS = 32
MAX_METRIC_NAME = 64
# Names are shown on the status page and in terminals: a plain charset, so no name needs escaping to be read
# (the page escapes everything all the same).
METRIC_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-/]{0,63}$")
MAX_SAFE_INTEGER = 2**53  # RFC 8785 numbers are doubles: a larger integer cannot be signed as it is
UINT64 = re.compile(r"^(0|[1-9][0-9]{0,19})$")
# Beyond this many participants the sender leaves ``nodes`` out: with the participants and the refusals, the
# report must stay within the coordinator's 20,000 JSON items.
MAX_NODES = 5_000


def metrics_problem(metrics: Any) -> str | None:
    """Why ``metrics`` cannot be recorded (one line), or None: an object of at most 32 names of the safe charset,
    each naming a finite number (not a boolean, an integer within ±2**53)."""
    if not isinstance(metrics, Mapping):
        return "metrics must be an object of name -> number"
    if len(metrics) > MAX_METRICS:
        return f"metrics has {len(metrics)} names, at most {MAX_METRICS} are recorded"
    for name, value in metrics.items():
        if not isinstance(name, str) or not METRIC_NAME.match(name):
            return (f"metric name {str(name)[:80]!r} is not 1-{MAX_METRIC_NAME} characters of letters, digits, '_', '.',"
                    " '-' and '/' (not starting with '.', '-' or '/')")  # fmt: skip
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"metric {name!r} is not a number ({type(value).__name__})"
        if isinstance(value, float) and not math.isfinite(value):
            return f"metric {name!r} is not finite ({value})"
        if isinstance(value, int) and abs(value) > MAX_SAFE_INTEGER:
            return f"metric {name!r} is an integer beyond ±2**53 (not exactly representable)"
    return None


def nodes_problem(nodes: Any, participants: Iterable[str]) -> str | None:
    """Why ``nodes`` cannot be recorded (one line), or None: an object of participant -> Flower node id as a
    decimal uint64 string, naming only the report's participants and no node twice."""
    if not isinstance(nodes, Mapping):
        return "nodes must be an object of member -> Flower node id"
    taking_part = set(participants)
    seen: dict[str, str] = {}
    for member, node in nodes.items():
        if member not in taking_part:
            return f"nodes names {str(member)[:64]!r}, which is not a participant of this round"
        if not isinstance(node, str) or not UINT64.match(node) or int(node) >= 1 << 64:
            return f"the node id of {member!r} is not a decimal uint64 string: {str(node)[:32]!r}"
        if node in seen:
            return f"node {node} is given for both {seen[node]!r} and {member!r}"
        seen[node] = member
    return None


def report_metrics(records: Mapping[str, Mapping[str, Any] | None]) -> tuple[dict[str, float], list[str]]:
    """The ``metrics`` of a round report from the strategy's metric records, by source (``train``, ``evaluate``,
    ``server``): each scalar named ``SOURCE.NAME``, as a float. Dropped, and named in the second result: lists,
    non-numbers, non-finite values, names outside the charset, and every name beyond the first 32 (sorted)."""
    out: dict[str, float] = {}
    dropped: list[str] = []
    for source, record in records.items():
        for key, value in (record or {}).items():
            name = f"{source}.{key}"
            number = _number(value)
            if not METRIC_NAME.match(name) or not math.isfinite(number):
                dropped.append(name[:80])
                continue
            out[name] = number
    kept = dict(sorted(out.items())[:MAX_METRICS])
    return kept, dropped + sorted(set(out) - set(kept))


def _number(value: Any) -> float:
    """``value`` as a float, NaN when it is not a number (a list, a boolean, text, an integer beyond floats)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return math.nan
    try:
        return float(value)
    except OverflowError:
        return math.nan
