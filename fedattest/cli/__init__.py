"""The ``fedattest`` command line.

``main()`` is the console script. Every command follows the contract in :mod:`fedattest.cli._common`:
results on stdout, one ``error: ...`` line on stderr for anything a user can get wrong, exit code 0
(success / accepted), 1 (evidence refused) or 2 (usage error), and no tracebacks. Set
``FEDATTEST_DEBUG=1`` to get the traceback of an unexpected internal error.

The subcommands are registered lazily (:data:`COMMANDS`): a command's module, and whatever heavy library
it needs (the web stack, Flower), is imported only when that command runs or shows its help.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol, runtime_checkable

import click
import typer
import typer.core
import typer.main
from typer.core import TyperGroup
from typer.models import CommandInfo, TyperInfo

from fedattest import __version__
from fedattest.cli._common import EXIT_REJECTED, EXIT_USAGE, print_error
from fedattest.errors import FedattestError

# Help is formatted by click, as plain text. With rich installed, typer renders help (and even escapes the
# "[default: ...]" of plain help) through typer.rich_utils, whose imports (rich.markdown, markdown_it,
# pygments) cost ~85 ms of every `--help`; typer has no switch for it but this flag, which it reads at
# call time. Our own output still uses rich where it helps (tables, the demo).
typer.core.HAS_RICH = False

INTERNAL_ERROR = 3


@runtime_checkable
class _ClickStyleError(Protocol):
    """click's exceptions (``UsageError``, ``BadParameter``, ``FileError``...) and our ``CliError``."""

    exit_code: int

    def format_message(self) -> str: ...


def run(args: Sequence[str] | None = None, prog_name: str = "fedattest") -> int:
    """Run the command line with ``args`` (default: ``sys.argv[1:]``) and return its exit code, never
    raising (except ``SystemExit`` from a nested ``sys.exit``, which is converted too)."""
    command = typer.main.get_command(app)
    try:
        rv = command.main(args=list(args) if args is not None else None, prog_name=prog_name, standalone_mode=False)
    except SystemExit as exc:  # pragma: no cover - only if a command calls sys.exit itself
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Abort:
        print_error("aborted")
        return EXIT_REJECTED
    except KeyboardInterrupt:
        print_error("interrupted")
        return 130
    except FedattestError as exc:
        # Commands handle fedattest errors themselves; this is the safety net.
        print_error(str(exc))
        return EXIT_REJECTED
    except BrokenPipeError:
        # `fedattest quote show q | head`: the reader left; stop quietly, as other command-line tools do.
        _silence_stdout()
        return EXIT_REJECTED
    except OSError as exc:
        print_error(f"{exc.strerror or exc}{f': {exc.filename}' if exc.filename else ''}")
        return EXIT_USAGE
    except Exception as exc:
        if isinstance(exc, _ClickStyleError):
            if type(exc).__name__ == "NoArgsIsHelpError":
                return exc.exit_code  # the help text has been printed already
            message = exc.format_message()
            hint = _help_hint(exc)
            print_error(f"{message}{hint}")
            return exc.exit_code
        if os.environ.get("FEDATTEST_DEBUG"):
            raise
        print_error(
            f"internal error: {type(exc).__name__}: {exc} (this is a bug in fedattest; set FEDATTEST_DEBUG=1 for a traceback)"
        )
        return INTERNAL_ERROR
    return rv if isinstance(rv, int) else 0


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not fail on a closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # pragma: no cover - no real stdout (e.g. under a test runner)
        pass


_USAGE_ERRORS = {"UsageError", "BadParameter", "MissingParameter", "NoSuchOption", "BadOptionUsage", "BadArgumentUsage"}


def _help_hint(exc: object) -> str:
    """For click usage errors: `` (see 'fedattest quote verify --help')``."""
    ctx = getattr(exc, "ctx", None)
    if ctx is None or type(exc).__name__ not in _USAGE_ERRORS:
        return ""
    return f" (see '{ctx.command_path} --help')"


class _Lazy(NamedTuple):
    """Where a subcommand lives (``module``'s ``attribute``: a ``typer.Typer`` or a command function), and
    the one-line summary ``fedattest --help`` shows for it without importing the module."""

    module: str
    attribute: str
    summary: str


# Every subcommand, in the order ``fedattest --help`` lists them. A command's module is imported only when
# the command runs or its own help is shown, so ``fedattest --version`` and ``fedattest --help`` stay fast
# and a light command does not pay for the web stack or Flower. Each summary must be the first paragraph
# of the command's own help (tests/test_cli_startup.py checks both that and that nothing is missing).
COMMANDS: dict[str, _Lazy] = {
    "demo": _Lazy(
        "fedattest.cli.demo",
        "demo_command",
        "Run the fedattest demo: simulated platform, quote, verification and appraisal, then the real hardware quotes in"
        " a verdict table.",
    ),
    "quote": _Lazy("fedattest.cli.quote", "app", "Inspect and verify DCAP quotes (SGX v3/v4/v5 and TDX v4/v5)."),
    "sim": _Lazy(
        "fedattest.cli.sim",
        "app",
        "A simulated SGX platform: quotes and collateral in Intel's exact formats, under a local root CA instead of"
        " Intel's, so every flow runs without SGX hardware.",
    ),
    "data": _Lazy(
        "fedattest.cli.data",
        "app",
        "Commit a dataset to a 32-byte root before training, and check data against it.",
    ),
    "workload": _Lazy(
        "fedattest.cli.workload",
        "app",
        "Measure a workload from its manifest, run it in the simulated TEE, or write a Gramine manifest for real SGX.",
    ),
    "sigstruct": _Lazy("fedattest.cli.sigstruct", "app", "Inspect SGX SIGSTRUCTs (the .sig files gramine-sgx-sign writes)."),
    "policy": _Lazy(
        "fedattest.cli.policy",
        "app",
        "Write, check, hash and approve the federation policy (one TOML document all members approve).",
    ),
    "audit": _Lazy(
        "fedattest.cli.audit",
        "app",
        "Export a coordinator's audit bundle and check it (or a bare audit log) offline.",
    ),
    "passport": _Lazy(
        "fedattest.cli.passport",
        "app",
        "Check a member's passport (its activation token and certificate chain) offline, against the pinned root.",
    ),
    "coordinator": _Lazy(
        "fedattest.cli.coordinator",
        "app",
        "Run the attested coordinator, or verify one and pin its root CA.",
    ),
    "participant": _Lazy("fedattest.cli.coordinator", "participant_app", "Activate an enclave with the coordinator."),
    "flower": _Lazy(
        "fedattest.cli.flower",
        "app",
        "Run an attested Flower participant: activate with the coordinator inside the TEE, then start Flower.",
    ),
    "status": _Lazy(
        "fedattest.cli.status",
        "status_command",
        "Show a running federation: its policy, members and runs, as the coordinator records them.",
    ),
}

# Set in a context's ``meta`` while the group formats its help: the command list then shows the summaries
# from COMMANDS instead of importing every module for its help text.
_SUMMARIES_ONLY = "fedattest.cli.summaries_only"

# click >= 8.4 suggests close matches for an unknown command itself; typer's own suggestion would repeat them.
_CLICK_SUGGESTS = hasattr(click.exceptions, "NoSuchCommand")


def _load(name: str, lazy: _Lazy) -> click.Command:
    """Import ``lazy.module`` and build the click command for ``name``, exactly as ``app.add_typer(sub_app,
    name=name)`` or ``app.command(name)(function)`` would have at import time."""
    # __import__ rather than importlib.import_module: only the former shows up in `python -X importtime`.
    target = getattr(__import__(lazy.module, fromlist=[lazy.attribute]), lazy.attribute)
    if isinstance(target, typer.Typer):
        return typer.main.get_group_from_info(
            TyperInfo(target, name=name),
            pretty_exceptions_short=app.pretty_exceptions_short,
            rich_markup_mode=app.rich_markup_mode,
            suggest_commands=not _CLICK_SUGGESTS,
        )
    return typer.main.get_command_from_info(
        CommandInfo(name=name, callback=target),
        pretty_exceptions_short=app.pretty_exceptions_short,
        rich_markup_mode=app.rich_markup_mode,
    )


class _Group(TyperGroup):
    """The top-level group.

    * Its subcommands (:data:`COMMANDS`) are imported on first use: listing them (``--help``) takes the
      summaries from the table.
    * In standalone mode (the console script, ``CliRunner``) errors are printed by :func:`run` as one line
      instead of typer's multi-line panels.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [*COMMANDS, *(name for name in super().list_commands(ctx) if name not in COMMANDS)]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        lazy = COMMANDS.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        if ctx.meta.get(_SUMMARIES_ONLY):
            return click.Command(cmd_name, help=lazy.summary, short_help=lazy.summary)
        command = self.commands.get(cmd_name)
        if command is None:
            command = self.commands[cmd_name] = _load(cmd_name, lazy)
        return command

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        ctx.meta[_SUMMARIES_ONLY] = True
        try:
            super().format_help(ctx, formatter)
        finally:
            ctx.meta.pop(_SUMMARIES_ONLY, None)

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None, list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            # Suggest from every registered command, not just the ones loaded so far.
            if _CLICK_SUGGESTS and isinstance(exc, click.exceptions.NoSuchCommand):
                raise click.exceptions.NoSuchCommand(exc.command_name, possibilities=self.list_commands(ctx), ctx=ctx) from None
            raise

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        windows_expand_args: bool = True,
        **extra: Any,
    ) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, windows_expand_args, **extra)
        sys.exit(run(args, prog_name or "fedattest"))


app = typer.Typer(
    cls=_Group,
    name="fedattest",
    help=(
        "Attestation and data integrity for federated learning on Intel SGX enclaves.\n\n"
        "Inspect and verify DCAP quotes (SGX and TDX), create simulated SGX platforms, and run the demo.\n\n"
        "Exit codes: 0 success / accepted, 1 evidence rejected, 2 usage error. Errors are one line on stderr.\n\n"
        "Example: fedattest quote verify quote.bin --collateral collateral.json --expect-mrenclave 3b94...b7"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"fedattest {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", "-V", callback=_version, is_eager=True, help="Print the fedattest version and exit."
    ),
) -> None:
    """Attestation and data integrity for federated learning on Intel SGX enclaves."""


def main() -> None:
    """Console script entry point (``fedattest``)."""
    sys.exit(run())


__all__ = ["COMMANDS", "app", "main", "run"]
