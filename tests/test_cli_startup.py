"""The command line starts light: subcommands are imported lazily (``fedattest.cli.COMMANDS``), so the
everyday commands never load the web stack (FastAPI, Starlette, uvicorn, httpx), Flower or numpy.

Each command runs in a fresh interpreter (``python -X importtime -m fedattest ...``) and the modules it
imported are read from the importtime report. Nothing here measures time: benchmarks/cli_startup.py does.
"""

from __future__ import annotations

import importlib
import inspect
import json
import os
import pkgutil
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer
import typer.main
from typer.testing import CliRunner

import fedattest.cli
from fedattest.cli import COMMANDS, app

REPO = Path(__file__).resolve().parents[1]
VECTORS = REPO / "tests" / "vectors"
runner = CliRunner()

# Top-level packages no light command may import: the web stack (and what only it pulls in), Flower (and
# its gRPC transport) and numpy.
HEAVY = frozenset({"fastapi", "starlette", "uvicorn", "httpx", "httpcore", "h11", "anyio", "flwr", "grpc", "numpy"})
SUBCOMMAND_MODULES = frozenset(lazy.module for lazy in COMMANDS.values())


@dataclass(frozen=True)
class Inputs:
    quote: Path  # a simulated SGX quote
    collateral: Path
    root_ca: Path
    dataset: Path
    dataset_root: str
    policy: Path  # as 'policy init' writes it (placeholder keys)
    approved_policy: Path  # with one approver and the members' enrolment keys...
    approval: Path  # ...and that approver's approval


def cli(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result.stdout


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    d = tmp_path_factory.mktemp("startup")
    cli("sim", "init", d / "platform")
    cli("sim", "quote", "-p", d / "platform", "--mrenclave", "ab" * 32, "--mrsigner", "cd" * 32, "-o", d / "q.bin")
    cli("sim", "collateral", "-p", d / "platform", "-o", d / "collateral.json")
    dataset = d / "dataset"
    (dataset / "part").mkdir(parents=True)
    (dataset / "a.csv").write_text("x,y\n1,2\n")
    (dataset / "part" / "b.bin").write_bytes(bytes(range(256)) * 64)
    found = re.search(r"\b[0-9a-f]{64}\b", cli("data", "commit", dataset))
    assert found, "data commit printed no root"
    cli("policy", "init", "-o", d / "policy.toml")
    cli("policy", "keygen", "alice", "--dir", d)
    members = []
    for member in ("aggregator", "hospital-a"):
        cli("policy", "keygen", member, "--dir", d)
        members += ["--enrolment-key", f"{member}={d / f'{member}.pub.pem'}"]
    cli("policy", "init", "--approver", f"alice={d / 'alice.pub.pem'}", *members, "-o", d / "approved.toml")
    cli("policy", "approve", d / "approved.toml", "--name", "alice", "--key", d / "alice.key", "-o", d / "alice.json")
    return Inputs(
        quote=d / "q.bin",
        collateral=d / "collateral.json",
        root_ca=d / "platform" / "root_ca.der",
        dataset=dataset,
        dataset_root=found.group(0),
        policy=d / "policy.toml",
        approved_policy=d / "approved.toml",
        approval=d / "alice.json",
    )


@dataclass(frozen=True)
class Imported:
    """What one run imported, from ``-X importtime``: module names in import order, with their depth
    (an entry's importer is the next entry one level up)."""

    entries: list[tuple[int, str]]

    @classmethod
    def parse(cls, stderr: str) -> Imported:
        entries = []
        for line in stderr.splitlines():
            if not line.startswith("import time:") or line.endswith("| imported package"):
                continue
            name_field = line.split("|", 2)[2]
            name = name_field.strip()
            entries.append(((len(name_field) - len(name_field.lstrip()) - 1) // 2, name))
        return cls(entries)

    def names(self) -> set[str]:
        return {name for _, name in self.entries}

    def offenders(self, forbidden: frozenset[str]) -> list[str]:
        """For each forbidden package imported (``x`` covers ``x.y``), the first of its modules imported
        and the chain of imports that brought it in."""
        out, seen = [], set()
        for i, (depth, name) in enumerate(self.entries):
            package = next((f for f in forbidden if name == f or name.startswith(f + ".")), None)
            if package is None or package in seen:
                continue
            seen.add(package)
            chain, want = [name], depth - 1
            for d, importer in self.entries[i + 1 :]:
                if want < 0:
                    break
                if d == want:
                    chain.append(importer)
                    want -= 1
            out.append(" <- ".join(chain))
        return out


def run_imports(*args: str | Path) -> tuple[subprocess.CompletedProcess[str], Imported]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPROFILEIMPORTTIME", "PYTHONSTARTUP")}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "fedattest", *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    imported = Imported.parse(proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if not line.startswith("import time:")]
    assert proc.returncode == 0, (args, proc.returncode, proc.stdout[-2000:], errors)
    assert "fedattest.cli" in imported.names(), "no importtime report: did the command run?"
    return proc, imported


# (id, argv given the inputs, text its stdout must contain, what else it must not import). Besides HEAVY,
# no command may import another command's module; --version and --help import none; help, quote show and
# sigstruct show are printed without rich (fedattest.cli.fields); and the commands that only read a file
# need no pydantic (quote verify and policy check do: the reference values and the policy schema are
# pydantic models).
LIGHT_COMMANDS = [
    ("version", lambda i: ["--version"], "fedattest ", {"rich", "pydantic", "cryptography", *SUBCOMMAND_MODULES}),
    ("help", lambda i: ["--help"], "sigstruct", {"rich", "pydantic", "cryptography", *SUBCOMMAND_MODULES}),
    ("quote-show-sim", lambda i: ["quote", "show", i.quote], "MRENCLAVE", {"rich", "pydantic"}),
    ("quote-show-tdx", lambda i: ["quote", "show", VECTORS / "dcap" / "phala_tdx_v4.quote"], "MRTD", {"rich", "pydantic"}),
    (
        "sigstruct-show",
        lambda i: ["sigstruct", "show", VECTORS / "sigstruct" / "helloworld.sig"],
        "mrenclave",
        {"rich", "pydantic"},
    ),
    ("data-commit", lambda i: ["data", "commit", i.dataset], "", set()),
    ("data-verify", lambda i: ["data", "verify", i.dataset, "--root", i.dataset_root], "", set()),
    ("policy-check", lambda i: ["policy", "check", i.approved_policy], "OK: policy", set()),
    (
        "policy-check-approval",
        lambda i: ["policy", "check", i.approved_policy, "--approval", i.approval],
        "APPROVED",
        set(),
    ),
    (
        "quote-verify",
        lambda i: ["quote", "verify", i.quote, "--collateral", i.collateral, "--root-ca", i.root_ca, "--allow-simulation"],
        "ACCEPTED",
        set(),
    ),
]


@pytest.mark.parametrize(
    ("argv", "expect", "also_forbidden"), [c[1:] for c in LIGHT_COMMANDS], ids=[c[0] for c in LIGHT_COMMANDS]
)
def test_light_command_imports_nothing_heavy(
    inputs: Inputs, argv: Callable[[Inputs], list[str | Path]], expect: str, also_forbidden: set[str]
) -> None:
    args = argv(inputs)
    proc, imported = run_imports(*args)
    assert expect in proc.stdout
    # The command's own module is allowed, of course; every other subcommand's module is not.
    own = {COMMANDS[str(args[0])].module} if str(args[0]) in COMMANDS else set()
    offenders = imported.offenders(frozenset(HEAVY | SUBCOMMAND_MODULES | also_forbidden) - own)
    assert not offenders, f"'fedattest {' '.join(map(str, args))}' imported: " + "; ".join(offenders)


def test_offenders_names_the_import_chain() -> None:
    report = "\n".join(
        f"import time: {n:>9} | {n:>10} | {'  ' * depth}{name}"
        for n, (depth, name) in enumerate(
            [(3, "fastapi.x"), (2, "fastapi"), (2, "json"), (1, "mod.server"), (0, "mod"), (0, "numpyish")], start=1
        )
    )
    imported = Imported.parse("import time: self [us] | cumulative | imported package\n" + report)
    assert imported.offenders(frozenset({"fastapi", "numpy"})) == ["fastapi.x <- fastapi <- mod.server <- mod"]


def test_a_heavy_command_still_loads_its_module() -> None:
    """The other side of laziness: a command's help does load its module (and here, the web stack). This
    also checks that the lazily imported modules show up in the importtime report at all (they would not
    if they were imported with importlib.import_module), or the checks above would pass vacuously."""
    proc, imported = run_imports("coordinator", "--help")
    assert "serve" in proc.stdout
    assert "fedattest.cli.coordinator" in imported.names()


# -- the summary table ------------------------------------------------------------------------------------


def _first_paragraph(text: str) -> str:
    return " ".join(inspect.cleandoc(text).split("\n\n")[0].split())


def _loaded(name: str) -> click.Command:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    with click.Context(group) as ctx:
        command = group.get_command(ctx, name)
    assert command is not None, name
    return command


def test_summary_table_lists_every_registered_command() -> None:
    group = typer.main.get_command(app)
    assert isinstance(group, click.Group)
    with click.Context(group) as ctx:
        listed = group.list_commands(ctx)
    # Nothing registered the eager way (app.add_typer / app.command) behind the table's back.
    assert listed == list(COMMANDS)
    assert not app.registered_groups and not app.registered_commands


@pytest.mark.parametrize("name", list(COMMANDS))
def test_summary_is_the_commands_own_first_paragraph(name: str) -> None:
    command = _loaded(name)
    assert command.name == name
    assert COMMANDS[name].summary == _first_paragraph(command.help or ""), (
        f"update the summary of {name!r} in fedattest/cli/__init__.py COMMANDS to the first paragraph of its help"
    )


def test_every_command_defined_in_the_cli_package_is_in_the_table() -> None:
    """Every ``typer.Typer`` (and every ``*_command`` function) in a fedattest/cli module must be in
    COMMANDS, or ``fedattest --help`` would not list it and nothing could run it."""
    registered = {id(getattr(importlib.import_module(lazy.module), lazy.attribute)) for lazy in COMMANDS.values()}
    registered.add(id(app))  # the top level itself
    missing = []
    for info in pkgutil.iter_modules(fedattest.cli.__path__, "fedattest.cli."):
        for attribute, value in vars(importlib.import_module(info.name)).items():
            is_command = isinstance(value, typer.Typer) or (callable(value) and attribute.endswith("_command"))
            if is_command and id(value) not in registered:
                missing.append(f"{info.name}.{attribute}")
    assert not missing, f"not in fedattest.cli.COMMANDS: {missing}"


def test_top_level_help_lists_every_command_with_its_summary() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.stderr
    # click's plain help: "  name  summary", the summary folded onto indented continuation lines.
    commands = result.stdout[result.stdout.index("\nCommands:\n") :]
    rows = [(name, " ".join(text.split())) for name, text in re.findall(r"^  (\S+) +(.+(?:\n {4,}.+)*)", commands, re.MULTILINE)]
    listed = [(name, summary) for name, summary in rows if name in COMMANDS]
    assert [name for name, _ in listed] == list(COMMANDS)
    for name, summary in listed:
        assert summary == COMMANDS[name].summary


def test_unknown_command_suggests_from_every_command() -> None:
    result = runner.invoke(app, ["coordinatr"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == ["error: No such command 'coordinatr'. Did you mean 'coordinator'?"]


def test_startup_benchmark_reports_every_command() -> None:
    """benchmarks/cli_startup.py runs (one round) and reports each command against `python -c pass`."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "cli_startup.py"), "--runs", "1", "--no-script", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    rows = {row["command"]: row for row in json.loads(proc.stdout)["results"]}
    assert rows["python -c pass"]["baseline"]
    for label in ("--version", "--help", "quote show Q", "sigstruct show S", "data commit DIR", "policy check P"):
        row = rows[f"python -m fedattest {label}"]
        assert row["median_s"] > 0 and row["ratio"] > 0 and isinstance(row["target_met"], bool)
