"""Two-column "field  value" listings, by section (``quote show``, ``quote verify``), styled with click.

They look like a borderless rich table, but cost nothing to import: rich takes ~70 ms to load, more than
the rest of ``fedattest quote show``'s start-up. On a terminal the fields are bold and values coloured;
piped or captured, the text is plain and wide (200 columns unless ``COLUMNS`` says otherwise), so that
64-byte hex values stay on one line each.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
from dataclasses import dataclass, field
from typing import Any, TextIO

import click

_WORDS: dict[str, dict[str, Any]] = {
    "bold": {"bold": True},
    "underline": {"underline": True},
    **{colour: {"fg": colour} for colour in ("red", "green", "yellow", "cyan")},
}
SECTION_STYLE = "bold underline cyan"
PIPE_WIDTH = 200  # columns when the output is not a terminal and COLUMNS is not set


def _styled(text: str, style: str) -> str:
    kwargs: dict[str, Any] = {}
    for word in style.split():
        kwargs.update(_WORDS[word])  # a KeyError here is a typo in a style name: a bug, caught by the tests
    return click.style(text, **kwargs) if kwargs else text


def output_width(stream: TextIO) -> int:
    """``COLUMNS`` if set, else the terminal's width, else :data:`PIPE_WIDTH`."""
    columns = os.environ.get("COLUMNS", "")
    if columns.isdigit() and int(columns) > 0:
        return int(columns)
    try:
        if stream.isatty():
            return shutil.get_terminal_size().columns
    except (AttributeError, ValueError):
        pass
    return PIPE_WIDTH


@dataclass
class FieldList:
    """Rows of (name, value, style) under section titles. Values longer than the space left of the
    terminal are folded onto continuation lines aligned with the value column."""

    _rows: list[tuple[str, str, str, bool]] = field(default_factory=list)  # name, value, style, is a section

    def section(self, title: str) -> None:
        if self._rows:
            self._rows.append(("", "", "", False))
        self._rows.append((title, "", SECTION_STYLE, True))

    def row(self, name: str, value: str, style: str = "") -> None:
        self._rows.append((name, value, style, False))

    def lines(self, width: int) -> list[str]:
        """The listing as lines of at most ``width`` columns (a name longer than that is not cut)."""
        name_width = max((len(name) for name, _, _, _ in self._rows), default=0)
        value_width = max(width - name_width - 2, 16)
        out = []
        for name, value, style, is_section in self._rows:
            if is_section:
                out.append(_styled(name, style))
                continue
            pieces = textwrap.wrap(value, value_width, break_on_hyphens=False, drop_whitespace=True)
            head = _styled(name, "bold") if name else ""
            if not pieces:
                out.append(head)
                continue
            indent = " " * (name_width - len(name) + 2)  # padding outside the styled text, so lines end clean
            out.append(f"{head}{indent}{_styled(pieces[0], style)}")
            out += [f"{' ' * (name_width + 2)}{_styled(piece, style)}" for piece in pieces[1:]]
        return out

    def echo(self, stream: TextIO | None = None) -> None:
        """Print to ``stream`` (stdout): coloured on a terminal, plain otherwise."""
        stream = stream or sys.stdout
        for line in self.lines(output_width(stream)):
            click.echo(line, file=stream)
