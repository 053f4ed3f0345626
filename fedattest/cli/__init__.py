"""The ``fedattest`` command line.

``main()`` is the console script. Every command follows the contract in :mod:`fedattest.cli._common`:
results on stdout, one ``error: ...`` line on stderr for anything a user can get wrong, exit code 0
(success / accepted), 1 (evidence refused) or 2 (usage error), and no tracebacks. Set
``FEDATTEST_DEBUG=1`` to get the traceback of an unexpected internal error.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import typer
from typer.core import TyperGroup

from fedattest import __version__
from fedattest.cli._common import EXIT_REJECTED, EXIT_USAGE, print_error
from fedattest.cli.audit import app as audit_app
from fedattest.cli.coordinator import app as coordinator_app
from fedattest.cli.coordinator import participant_app
from fedattest.cli.data import app as data_app
from fedattest.cli.demo import demo_command
from fedattest.cli.flower import app as flower_app
from fedattest.cli.policy import app as policy_app
from fedattest.cli.quote import app as quote_app
from fedattest.cli.sigstruct import app as sigstruct_app
from fedattest.cli.sim import app as sim_app
from fedattest.cli.workload import app as workload_app
from fedattest.errors import FedattestError

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


class _Group(TyperGroup):
    """The top-level group: in standalone mode (the console script, ``CliRunner``) errors are printed by
    :func:`run` as one line instead of typer's multi-line panels."""

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


app.add_typer(quote_app, name="quote")
app.add_typer(sim_app, name="sim")
app.add_typer(data_app, name="data")
app.add_typer(workload_app, name="workload")
app.add_typer(sigstruct_app, name="sigstruct")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(coordinator_app, name="coordinator")
app.add_typer(participant_app, name="participant")
app.add_typer(flower_app, name="flower")
app.command("demo")(demo_command)


def main() -> None:
    """Console script entry point (``fedattest``)."""
    sys.exit(run())


__all__ = ["app", "main", "run"]
