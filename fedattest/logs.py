"""Our log lines on stderr: one handler per logger, installed once, not propagated (Flower and uvicorn configure
their own loggers, and their lines are not ours to reformat)."""

from __future__ import annotations

import logging
import sys


def log_to_stderr(name: str, line_format: str, level: int = logging.INFO) -> logging.Logger:
    """Send logger ``name``'s records at ``level`` and above to stderr as ``line_format`` (a logging format)."""
    log = logging.getLogger(name)
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(line_format))
        log.addHandler(handler)
    log.setLevel(level)
    log.propagate = False
    return log
