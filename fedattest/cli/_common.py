"""Helpers shared by the ``fedattest`` commands: reading inputs, decoding evidence, errors and output.

Output contract of every command:

* results (tables, JSON, verdict lines) go to **stdout**;
* a failure the user can cause is one line ``error: ...`` on **stderr**, never a traceback;
* exit codes: ``0`` success (for ``quote verify``: accepted), ``1`` the evidence was examined and
  refused (rejected, or it does not parse as a quote), ``2`` usage error (bad option value, unreadable
  or undecodable input file).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from rich.console import Console

# Evidence files are a few kilobytes; refuse anything absurd (e.g. /dev/zero) instead of reading it.
MAX_INPUT_BYTES = 16 * 1024 * 1024

EXIT_OK = 0
EXIT_REJECTED = 1
EXIT_USAGE = 2


class CliError(Exception):
    """A failure a user caused; printed as one ``error: ...`` line, exiting with ``exit_code``.

    It has the ``exit_code`` / ``format_message()`` shape of click's exceptions, so the top-level handler
    treats both alike.
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if exit_code is not None:
            self.exit_code = exit_code

    def format_message(self) -> str:
        return self.message


class CliUsageError(CliError):
    """Bad option value, unreadable or undecodable input: exit 2."""

    exit_code = EXIT_USAGE


def one_line(message: str) -> str:
    """Collapse a message onto one line (error messages may quote multi-line values)."""
    return " ".join(str(message).split())


def print_error(message: str) -> None:
    """The one line every user-facing failure prints, on stderr."""
    sys.stderr.write(f"error: {one_line(message)}\n")
    sys.stderr.flush()


def fail(message: str, exit_code: int = EXIT_USAGE) -> NoReturn:
    """Raise a :class:`CliError`; the top-level handler prints it and exits."""
    raise CliError(message, exit_code)


def padded_64(value: str | None, option: str) -> bytes:
    """Up to 64 bytes of hex, zero-padded on the right (default: 64 zero bytes): a CONFIGID or report data."""
    if value is None:
        return bytes(64)
    text = value.strip().removeprefix("0x").removeprefix("0X")
    if len(text) > 128 or len(text) % 2:
        raise CliUsageError(f"{option} needs up to 128 hex digits (64 bytes), got {len(text)} digits")
    data = parse_hex(text, len(text) // 2, option)
    return data + bytes(64 - len(data))


EnrolmentKeyOpt = Annotated[
    Path | None,
    typer.Option(
        "--enrolment-key",
        metavar="FILE",
        help="The member's enrolment private key (NAME.key from 'fedattest policy keygen'): it signs this enclave's"
        " claims. Needed to activate, not to resume a sealed identity.",
    ),
]


def enrolment_key_loader(path: Path | None, member: str) -> Callable[[], Ed25519PrivateKey]:
    """The member's enrolment key from ``--enrolment-key``, read only when an activation needs it (a still
    valid sealed identity resumes without it); a missing option or unusable file is a usage error then."""

    def load() -> Ed25519PrivateKey:
        from fedattest.policy.approval import load_private_key  # noqa: PLC0415 - cryptography, only when needed

        if path is None:
            raise CliUsageError(
                f"activating as {member!r} needs {member!r}'s enrolment key: --enrolment-key FILE (the private half of"
                f" the enrolment_key the policy lists for {member!r}; 'fedattest policy keygen {member}' makes one)"
            )
        from fedattest.errors import FedattestError  # noqa: PLC0415

        try:
            return load_private_key(read_input(str(path), "enrolment key"), f"--enrolment-key {path}")
        except FedattestError as exc:  # not a PEM Ed25519 private key (an unreadable file is a CliUsageError already)
            raise CliUsageError(str(exc)) from None

    return load


# -- output ---------------------------------------------------------------------------------------


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr). When the stream is not a terminal (piped, captured by a
    test, written to a log) and ``COLUMNS`` is not set, use a wide page instead of rich's 80 columns, so
    64-byte hex values and tables stay on one line each."""
    from rich.console import Console  # noqa: PLC0415 - rich costs ~40 ms to import; --version needs none of it

    stream = sys.stderr if stderr else sys.stdout
    width: int | None = None
    if "COLUMNS" not in os.environ and not _isatty(stream):
        width = 200
    return Console(file=stream, width=width, highlight=False, soft_wrap=False)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def print_rich(renderable: Any, *, stderr: bool = False) -> None:
    """Print a rich renderable (table, text). On a terminal: with colour. Otherwise plain, each line
    stripped of the padding rich adds, so logs and pipes get clean text."""
    con = console(stderr=stderr)
    if con.is_terminal:
        con.print(renderable)
        return
    with con.capture() as captured:
        con.print(renderable)
    stream = sys.stderr if stderr else sys.stdout
    stream.write("".join(line.rstrip() + "\n" for line in captured.get().splitlines()))
    stream.flush()


def print_json(obj: Any) -> None:
    """Exactly one JSON document on stdout (plain text, no colour, no wrapping)."""
    sys.stdout.write(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    sys.stdout.flush()


def print_line(text: str) -> None:
    """One plain line on stdout (verdict lines: never wrapped or styled by rich)."""
    sys.stdout.write(one_line(text) + "\n")
    sys.stdout.flush()


# -- reading inputs -------------------------------------------------------------------------------


def read_input(path: str, what: str) -> bytes:
    """The bytes of ``path`` (``-``: standard input). Unreadable, empty or oversized input is a usage
    error naming ``what`` and the path."""
    label = "standard input" if path == "-" else repr(path)
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with Path(path).open("rb") as fh:
                data = fh.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise CliUsageError(f"cannot read {what} {label}: {exc.strerror or exc}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise CliUsageError(f"{what} {label} is larger than {MAX_INPUT_BYTES // (1024 * 1024)} MiB: is it the right file?")
    if not data:
        raise CliUsageError(f"{what} {label} is empty")
    return data


_TEXT_BYTES = frozenset(b"\t\n\r\x0b\x0c" + bytes(range(0x20, 0x7F)))
_HEX = re.compile(r"[0-9a-fA-F]*")
_B64 = re.compile(r"[A-Za-z0-9+/_-]*={0,2}")

QUOTE_INPUT_RULE = (
    "QUOTE is a file ('-' for standard input) holding the quote as raw bytes, hex or base64, detected as"
    " follows: any byte outside printable ASCII and whitespace means raw binary; otherwise, with all"
    " whitespace removed, only hex digits (optionally prefixed 0x) means hex; otherwise base64 (standard"
    " or URL-safe alphabet, padding optional). Anything else is refused."
)


def decode_evidence(data: bytes, label: str) -> tuple[bytes, str]:
    """Decode evidence bytes by the rule in :data:`QUOTE_INPUT_RULE`; returns ``(raw, encoding)`` with
    encoding ``"raw"``, ``"hex"`` or ``"base64"``. Text that is neither hex nor base64 is a usage error."""
    if not all(b in _TEXT_BYTES for b in data):
        return data, "raw"
    text = "".join(data.decode("ascii").split())
    if not text:
        raise CliUsageError(f"{label} holds only whitespace")
    hex_text = text[2:] if text[:2] in ("0x", "0X") else text
    if hex_text and _HEX.fullmatch(hex_text):
        if len(hex_text) % 2:
            raise CliUsageError(f"{label} looks like hex but has an odd number of digits ({len(hex_text)})")
        return bytes.fromhex(hex_text), "hex"
    if _B64.fullmatch(text):
        alt = b"-_" if ("-" in text or "_" in text) else None
        if alt and ("+" in text or "/" in text):
            raise CliUsageError(f"{label} mixes the standard and URL-safe base64 alphabets")
        padded = text + "=" * (-len(text) % 4)
        try:
            raw = base64.b64decode(padded, altchars=alt, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if raw:
            return raw, "base64"
    raise CliUsageError(f"{label} is text but neither hex nor base64 (and not a raw binary quote)")


def parse_hex(value: str, size: int, option: str) -> bytes:
    """``size`` bytes from hex text (``0x`` prefix and surrounding whitespace allowed); usage error otherwise."""
    text = value.strip()
    text = text[2:] if text[:2] in ("0x", "0X") else text
    if not _HEX.fullmatch(text) or len(text) != size * 2:
        raise CliUsageError(f"{option} needs {size * 2} hex digits ({size} bytes), got {value!r}")
    return bytes.fromhex(text)


def parse_time(value: str, option: str = "--at") -> datetime:
    """A verification time: Unix seconds (e.g. ``1750334171``) or ISO-8601 with a timezone
    (e.g. ``2025-06-19T12:00:00Z`` or ``2025-06-19T14:00:00+02:00``)."""
    text = value.strip()
    if re.fullmatch(r"[0-9]+(\.[0-9]+)?", text):
        try:
            return datetime.fromtimestamp(float(text), UTC)
        except (OverflowError, ValueError, OSError):
            raise CliUsageError(f"{option}: {value!r} is out of range as Unix seconds") from None
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise CliUsageError(
            f"{option}: {value!r} is neither Unix seconds nor ISO-8601 (e.g. 1750334171 or 2025-06-19T12:00:00Z)"
        ) from None
    if when.tzinfo is None:
        raise CliUsageError(f"{option}: {value!r} has no timezone; add one, e.g. {text}Z for UTC")
    return when.astimezone(UTC)


def iso(when: datetime | None) -> str | None:
    """``2025-06-19T12:00:00Z`` (UTC), or None."""
    if when is None:
        return None
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/fedattest`` or ``~/.cache/fedattest``."""
    base = os.environ.get("XDG_CACHE_HOME")
    root = Path(base) if base else Path.home() / ".cache"
    return root / "fedattest"


def exit_with(code: int) -> NoReturn:
    raise typer.Exit(code)
