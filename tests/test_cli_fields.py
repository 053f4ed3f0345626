"""fedattest.cli.fields: the two-column listings of quote show / quote verify / sigstruct show."""

from __future__ import annotations

import io

import click
import pytest

from fedattest.cli.fields import PIPE_WIDTH, FieldList, output_width


def listing() -> FieldList:
    fields = FieldList()
    fields.section("Header")
    fields.row("version", "3")
    fields.row("empty", "")
    fields.section("A section title longer than any name")
    fields.row("MRENCLAVE", "ab" * 32, "green")
    return fields


def test_columns_align_on_the_widest_name_or_title_and_sections_are_separated() -> None:
    lines = [click.unstyle(line) for line in listing().lines(200)]
    width = len("A section title longer than any name")
    assert lines == [
        "Header",
        "version".ljust(width) + "  3",
        "empty",
        "",
        "A section title longer than any name",
        "MRENCLAVE".ljust(width) + "  " + "ab" * 32,
    ]


def test_long_values_fold_under_the_value_column() -> None:
    fields = FieldList()
    fields.row("key", "0123456789" * 5)
    lines = fields.lines(25)  # 25 columns: 3 for the name, 2 of gap, 20 for the value
    assert [click.unstyle(line) for line in lines] == [
        "key  01234567890123456789",
        "     01234567890123456789",
        "     0123456789",
    ]


def test_styles_on_a_terminal_and_plain_text_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)  # a pipe: PIPE_WIDTH columns
    styled = listing().lines(PIPE_WIDTH)
    assert any("\x1b[" in line for line in styled)
    out = io.StringIO()
    listing().echo(out)  # not a terminal: click strips the styles
    assert "\x1b[" not in out.getvalue()
    assert out.getvalue().splitlines() == [click.unstyle(line) for line in styled]


def test_an_unknown_style_is_a_bug_not_silence() -> None:
    fields = FieldList()
    fields.row("x", "y", "blinking")
    with pytest.raises(KeyError):
        fields.lines(80)


def test_width_from_columns_else_wide_for_pipes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    assert output_width(io.StringIO()) == PIPE_WIDTH
    monkeypatch.setenv("COLUMNS", "77")
    assert output_width(io.StringIO()) == 77
