"""One log line per decision the coordinator makes (an activation accepted or refused, a re-provisioning, a
policy version taking force, a round recorded), in logfmt (``key=value``, values quoted when they need it),
so operators can follow a federation and feed the lines to their log tooling. The audit log stays the record
that counts; these lines are for watching it happen."""

from __future__ import annotations

import logging
import re

log = logging.getLogger("fedattest.coordinator")

_BARE = re.compile(r"[A-Za-z0-9_.:/@+-]+")


def _value(value: object) -> str:
    # Control and other unprintable characters (a member name or reason may carry ESC, U+2028...) as escapes.
    text = "".join(c if c.isprintable() or c in "\n\r" else repr(c)[1:-1] for c in ("" if value is None else str(value)))
    if _BARE.fullmatch(text):
        return text
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def event(name: str, /, **fields: object) -> str:
    """Log ``event=name key=value ...`` at INFO (refusals at WARNING) and return the line."""
    line = " ".join([f"event={name}", *(f"{key}={_value(value)}" for key, value in fields.items())])
    log.log(logging.WARNING if fields.get("outcome") == "refused" else logging.INFO, "%s", line)
    return line
