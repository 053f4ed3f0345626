"""``fedattest flower dev``: a complete local attested federation for the developer's own Flower app, kept running
and taking every saved change of the app as a new policy version (see :mod:`fedattest.flower.local`)."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from fedattest.cli._common import EXIT_REJECTED, CliError, CliUsageError
from fedattest.errors import FedattestError

if TYPE_CHECKING:
    from fedattest.flower.local import DevFederation, Processes

HELP = (
    "Run a complete attested federation on this machine for your own Flower app: a simulated SGX platform, a policy"
    " (your app's hash, one collaborator per --data with its data commitment, the aggregator), the coordinator,"
    " the SuperLink and one SuperNode per --data, each its own process over TLS; then 'flwr run APP attested', with"
    " its output and the participants' fedattest lines live. It then watches APP_DIR: each saved change is"
    " allowed as a new policy version (approved, put in force; the participants re-provision, no activation"
    " spent) and run again. A participant that stops is started again. Ctrl-C stops everything; the state"
    " directory is kept, and the same command resumes it.\n\n"
    "Examples:\n\n"
    "  fedattest flower dev ./my-app --data site-a=data/a --data site-b=data/b\n\n"
    "  fedattest flower dev ./my-app --data site-a=data/a --once     # one run, then stop (exit code of flwr run)\n\n"
    "  FLWR_HOME=.fedattest-dev/flwr flwr run ./my-app attested     # another run, from a second terminal"
)


AppDirArg = Annotated[Path, typer.Argument(metavar="APP_DIR", help="Your Flower app (its pyproject.toml).", show_default=False)]


def run_dev(  # noqa: PLR0917 - typer maps parameters to options
    app_dir: AppDirArg,
    data: Annotated[list[str], typer.Option("--data", metavar="NAME=DIR", help="A collaborator and its data; repeatable.")],
    state: Annotated[Path, typer.Option("--state", metavar="DIR", help="Where everything is kept.")] = Path(".fedattest-dev"),
    rounds: Annotated[int, typer.Option("--rounds", min=1, max=10_000, help="Training rounds the policy allows.")] = 3,
    once: Annotated[bool, typer.Option("--once", help="Run the app once, then stop everything (no watching).")] = False,
    epsilon: Annotated[
        float,
        typer.Option("--epsilon", min=0.01, max=100, help="The federation's privacy budget ε (δ 1e-5), kept by the coordinator."),
    ] = 50.0,
    persist: Annotated[
        bool, typer.Option("--persist", help="The SuperLink keeps its link state on disk (flower superlink --persist).")
    ] = False,
) -> None:
    from fedattest.flower.apps import app_hash  # noqa: PLC0415 - Flower's builder, only here
    from fedattest.flower.local import DevFederation, DevLayout, LiveLogs, Processes  # noqa: PLC0415

    members: dict[str, Path] = {}
    for item in data:
        name, sep, where = item.partition("=")
        if not sep or not name or not where:
            raise CliUsageError(f"--data needs NAME=DIR, got {item!r}")
        if name in members:
            raise CliUsageError(f"--data {name}: given twice")
        members[name] = Path(where)
    if not app_dir.is_dir():
        raise CliUsageError(f"{app_dir}: not a directory (your Flower app)")
    app_dir = app_dir.resolve()
    try:
        fed = DevFederation(DevLayout(state.resolve()), members, rounds, epsilon, persist=persist, say=_say)
        digest = app_hash(app_dir)
        fed.layout.claim()
    except FedattestError as exc:
        raise CliUsageError(str(exc)) from None

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # the same orderly teardown as a Ctrl-C

    signal.signal(signal.SIGTERM, stop)
    procs = Processes(fed.layout.logs, fed.env)
    code = 0
    try:
        with LiveLogs(fed.layout.logs, sys.stdout) as live:
            _say(f"[dev] app {app_dir.name}: hash {digest[:16]}...; state in {fed.layout.root}")
            fed.prepare(digest)
            fed.start(procs, live)
            code = _run(fed, app_dir)
            if not once:
                _watch(fed, app_dir, digest, procs)
    except KeyboardInterrupt:
        _say("\n[dev] stopping...")
    except FedattestError as exc:
        raise CliError(f"{exc} (logs in {fed.layout.logs})", EXIT_REJECTED) from None
    finally:
        # A second Ctrl-C must not cut the teardown short and leave participants running: it is ignored now.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        procs.stop_all()
    _say(f"[dev] stopped; state kept in {fed.layout.root}: the same command resumes it (no activation spent)")
    raise typer.Exit(0 if code == 0 else EXIT_REJECTED)


def _say(text: str) -> None:
    print(text, flush=True)


def _run(fed: DevFederation, app_dir: Path) -> int:
    from fedattest.flower.local import budget_spent, recorded_rounds  # noqa: PLC0415

    before = recorded_rounds(fed.audit_entries())
    _say(f"[dev] $ flwr run {app_dir.name} attested --stream")
    code = fed.flwr_run(app_dir, sys.stdout)
    entries = fed.audit_entries()  # one read of the log for both figures
    spent = fed.activations()
    _say(f"[dev] run finished: exit {code}; {recorded_rounds(entries) - before} rounds recorded in the audit log;"
         f" {budget_spent(entries)}; activations spent: " + ", ".join(f"{k} {v}" for k, v in spent.items()))  # fmt: skip
    return code


def _watch(fed: DevFederation, app_dir: Path, digest: str, procs: Processes) -> None:
    from fedattest.flower.apps import app_hash  # noqa: PLC0415
    from fedattest.flower.local import app_fingerprint  # noqa: PLC0415

    _say(f"[dev] watching {app_dir} (save a change to run it again; Ctrl-C stops everything). Another run from a second"
         f" terminal: FLWR_HOME={fed.layout.flwr_home} flwr run {app_dir} attested")  # fmt: skip
    seen = app_fingerprint(app_dir)
    while True:
        time.sleep(1.0)
        for name, exit_code in procs.exited().items():
            _say(f"[dev] {name} stopped (exit {exit_code}): starting it again")
            procs.restart(name)
        now = app_fingerprint(app_dir)
        if now == seen:
            continue
        seen = now
        try:
            changed = app_hash(app_dir)
        except FedattestError as exc:
            _say(f"[dev] the app does not build: {exc}")
            continue
        if changed == digest:
            continue
        digest = changed
        _say(f"[dev] the app changed: hash {digest[:16]}...")
        fed.take_app(digest)
        _run(fed, app_dir)
