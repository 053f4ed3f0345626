"""Every fenced code block in README.md and docs/*.md is checked, so the docs cannot drift from the code.

What happens to a block depends on its language and on a *marker*: an HTML comment (invisible when the
markdown is rendered) on the line right above the opening fence.

    marker                       language                   check
    (none)                       bash, sh, shell, console   run (console: only the lines after a "$ " prompt)
    (none)                       python                     run with the venv's Python, after a check for undefined names
    (none)                       text                       none: diagrams and sample output
    <!-- synopsis -->            any                        a command-line synopsis (``[optional]``, ``A|B``, ``...``,
                                                            placeholders such as DIR, HEX, URL): every
                                                            ``fedattest GROUP COMMAND`` it names must exist (``--help``
                                                            exits 0) and every option it shows must be one of that
                                                            command's options
    <!-- file: PATH -->          any                        its text is written to PATH (relative to the document's
                                                            directory) for the later blocks, and a later block must use
                                                            it (the workload manifest in docs/workloads.md)
    <!-- not run: REASON -->     any                        none; REASON says why (e.g. it needs Gramine and SGX)

Any other block without a marker (```toml, ```json, no language...) fails the test, and so do an unknown
marker and a marker with no fence under it: no block goes unchecked silently.

How blocks run: each document gets a fresh directory, and its blocks run there one after another in document
order, so later blocks see the files earlier ones made (the docs make their own simulated platform with
``fedattest sim init plat/``). Shell blocks run under ``bash -euo pipefail`` and Python blocks with the venv's
interpreter, with the venv's bin first on PATH, this checkout on PYTHONPATH, HOME in the scratch directory and
no FEDATTEST_* variables from the caller, each in a new session with a timeout. Whatever a block leaves
running (a server the doc started in the background with ``&``) is killed with the block's process group
when the block ends, fails or times out. Errors name the document and line; line numbers in bash messages
and Python tracebacks are the document's own.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
BLOCK_TIMEOUT = 300.0  # seconds per block: a hang fails the test with the block's output instead of blocking the run
# Documents whose blocks take more than ~10 s, marked slow. None today: the longest, docs/coordinator.md (a
# coordinator started, verified and activated against), takes about 4 s.
SLOW: set[str] = set()

FAILED_AT = "docs test: the block failed at line"  # what bash's ERR trap prints, with the document's line number

SHELL = {"bash", "sh", "shell", "console"}
IGNORED = {"text"}

_FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
_COMMENT = re.compile(r"^\s*<!--(?P<body>.*?)-->\s*$")
_MARKER_WORD = re.compile(r"^\s*<!--\s*(synopsis|not run|file)\b")
_OPTION = re.compile(r"(?<![\w-])--?[A-Za-z][\w-]*")
_COMMAND_WORDS = re.compile(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)*")


class DocError(AssertionError):
    """A block that is wrong or cannot be checked; the message starts with ``FILE:LINE:``."""


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository (or a test's name for a made-up document)
    line: int  # line of the opening fence, 1-based
    lang: str  # first word of the info string, lower case ("" without one)
    text: str  # the lines between the fences
    marker: str | None  # the comment right above the fence, without <!-- -->

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def action(self) -> str:
        """``shell``, ``python``, ``synopsis``, ``file`` or ``skip``; :class:`DocError` for a block nothing checks."""
        if self.marker is None:
            if self.lang in SHELL:
                return "shell"
            if self.lang == "python":
                return "python"
            if self.lang in IGNORED:
                return "skip"
            what = f"```{self.lang}" if self.lang else "a ``` (no language)"
            raise DocError(
                f"{self.where}: {what} block that the docs test does not know how to check: make it runnable, or mark it"
                " with <!-- synopsis -->, <!-- file: PATH --> or <!-- not run: REASON --> (see tests/test_docs.py)"
            )
        kind, sep, arg = self.marker.partition(":")
        kind, arg = kind.strip(), arg.strip()
        if kind == "synopsis" and not sep:
            return "synopsis"
        if kind == "not run" and sep and arg:
            return "skip"
        if kind == "file" and sep and arg and not arg.startswith("/") and ".." not in arg.split("/"):
            return "file"
        raise DocError(
            f"{self.where}: unknown marker <!-- {self.marker} --> above the block; the markers are <!-- synopsis -->,"
            " <!-- file: RELATIVE/PATH --> and <!-- not run: REASON --> (a reason is required)"
        )

    @property
    def file_path(self) -> str:
        return (self.marker or "").partition(":")[2].strip()


def parse_blocks(text: str, doc: str) -> list[Block]:
    """The fenced code blocks of a markdown document, with the marker above each."""
    lines = text.splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if m is None:
            if _MARKER_WORD.match(lines[i]) and (i + 1 >= len(lines) or not _FENCE.match(lines[i + 1])):
                raise DocError(f"{doc}:{i + 1}: marker {lines[i].strip()} is not right above a code block's opening fence")
            i += 1
            continue
        start, fence, indent = i, m["fence"], len(m["indent"])
        closing = re.compile(rf"^ {{0,3}}{re.escape(fence[0])}{{{len(fence)},}}\s*$")
        body = []
        i += 1
        while i < len(lines) and not closing.match(lines[i]):
            line = lines[i]
            body.append(line[indent:] if line[:indent].strip() == "" else line.lstrip())
            i += 1
        if i >= len(lines):
            raise DocError(f"{doc}:{start + 1}: code block is never closed")
        i += 1
        marker = None
        if start > 0 and (c := _COMMENT.match(lines[start - 1])):
            marker = c["body"].strip()
        info = m["info"].strip().split()
        blocks.append(Block(doc, start + 1, info[0].lower() if info else "", "\n".join(body) + "\n", marker))
    return blocks


# -- synopsis blocks ------------------------------------------------------------------------------------------


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(0-based line in the block, command line) with backslash continuations joined and # comments removed."""
    out: list[tuple[int, str]] = []
    first, parts = 0, []
    for n, raw in enumerate([*text.splitlines(), ""]):
        line = re.sub(r"(^|\s)#.*$", "", raw).strip()
        if not parts:
            first = n
        continued = line.endswith("\\")
        parts.append(line[:-1] if continued else line)
        if not continued:
            if joined := " ".join(p.strip() for p in parts if p.strip()):
                out.append((first, joined))
            parts = []
    return out


class CommandLine:
    """fedattest's command tree, walked the way click walks it (so lazily loaded groups work too)."""

    def __init__(self) -> None:
        import click
        import typer
        from typer.testing import CliRunner

        from fedattest.cli import app

        self.app = app
        self.click = click
        self.runner = CliRunner()
        self.root = typer.main.get_command(app)
        self.root_ctx = click.Context(self.root, info_name="fedattest", **self.root.context_settings)
        self._help_ok: dict[tuple[str, ...], bool] = {}

    def resolve(self, words: list[str], where: str) -> tuple[list[tuple[tuple[str, ...], Any, Any]], list[str]]:
        """The commands ``words`` name (``a|b`` names several) and the words after them."""
        level = [(("fedattest",), self.root, self.root_ctx)]
        i = 0
        while isinstance(level[0][1], self.click.Group):
            if i >= len(words) or not _COMMAND_WORDS.fullmatch(words[i]):
                raise DocError(f"{where}: '{' '.join(level[0][0])}' is a group: name one of its commands")
            nxt = []
            for path, group, ctx in level:
                for name in words[i].split("|"):
                    sub = group.get_command(ctx, name)
                    if sub is None:
                        known = ", ".join(group.list_commands(ctx))
                        raise DocError(f"{where}: there is no command '{' '.join(path)} {name}' (its commands: {known})")
                    nxt.append(((*path, name), sub, self.click.Context(sub, info_name=name, parent=ctx, **sub.context_settings)))
            level, i = nxt, i + 1
        return level, words[i:]

    def options(self, command: Any, ctx: Any) -> set[str]:
        names = {o for p in command.params if isinstance(p, self.click.Option) for o in (*p.opts, *p.secondary_opts)}
        help_option = command.get_help_option(ctx)
        return names | (set(help_option.opts) if help_option is not None else set())

    def help_exits_0(self, path: tuple[str, ...]) -> bool:
        if path not in self._help_ok:
            result = self.runner.invoke(self.app, [*path[1:], "--help"])
            self._help_ok[path] = result.exit_code == 0
        return self._help_ok[path]


_CLI: list[CommandLine] = []


def command_line() -> CommandLine:
    if not _CLI:
        _CLI.append(CommandLine())
    return _CLI[0]


def check_synopsis(block: Block) -> None:
    for offset, line in logical_lines(block.text):
        where = f"{block.doc}:{block.line + 1 + offset}"
        words = line.split()
        if words[0] == "$":
            words = words[1:]
        if words[0] != "fedattest":
            raise DocError(f"{where}: a synopsis line must start with 'fedattest' (nothing else can be checked): {line!r}")
        cli = command_line()
        commands, rest = cli.resolve(words[1:], where)
        shown = _OPTION.findall(" ".join(rest))
        for path, command, ctx in commands:
            name = " ".join(path)
            if not cli.help_exits_0(path):
                raise DocError(f"{where}: '{name} --help' does not exit 0")
            accepted = cli.options(command, ctx)
            for option in shown:
                if option not in accepted:
                    raise DocError(f"{where}: '{name}' has no option {option} (its options: {', '.join(sorted(accepted))})")


# -- running blocks ---------------------------------------------------------------------------------------------


def console_commands(text: str) -> str:
    """A console block's commands (lines after a "$ " prompt, with their continuations); other lines are its
    sample output and become blank, so line numbers stay the document's."""
    out, continued = [], False
    for line in text.splitlines():
        if line.startswith("$ ") or continued:
            command = line[2:] if line.startswith("$ ") and not continued else line
            out.append(command)
            continued = command.rstrip().endswith("\\")
        else:
            out.append("")
    return "\n".join(out) + "\n"


def block_environment(scratch: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FEDATTEST_") and k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}"
    # The blocks run this checkout's fedattest, the code the rest of the suite tests, even where the venv's
    # editable install points at another checkout (a git worktree sharing one venv).
    env["PYTHONPATH"] = str(REPO)
    home = scratch / "home"
    home.mkdir(exist_ok=True)
    env["HOME"] = str(home)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _exited(pid: int, timeout: float) -> bool:
    """Wait for the child ``pid`` to exit *without reaping it*, so its process group id cannot be reused
    before the group is killed."""
    deadline = time.monotonic() + timeout
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def run_process(argv: list[str], *, cwd: Path, env: dict[str, str], log: Path, where: str, timeout: float) -> None:
    """Run ``argv`` in a new session; kill its whole process group whatever happens; :class:`DocError` with
    the output unless it exits 0."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            finished = _exited(proc.pid, timeout)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the block and anything it left running in the background
            code = proc.wait()
    if not finished or code != 0:
        output = log.read_text(errors="replace")
        tail = "\n".join(output.splitlines()[-40:])
        status = f"did not finish in {timeout:.0f} s" if not finished else f"exited {code}"
        doc = where.rsplit(":", 1)[0]
        # The failing line: from bash's ERR trap, or the last frame of the block in a Python traceback.
        lines = re.findall(rf"^{re.escape(FAILED_AT)} (\d+)$", output, re.MULTILINE) or re.findall(
            rf'^  File ".*/{re.escape(Path(doc).name)}", line (\d+)', output, re.MULTILINE
        )
        at = f" (at {doc}:{lines[-1]})" if lines else ""
        raise DocError(f"{where}: the block {status}{at}; its output (last 40 lines):\n{tail}")


def check_python_names(block: Block, padded: str, scratch: Path) -> None:
    """Undefined names, even in functions a block only defines (so `...` stands only where code may be elided)."""
    ruff = VENV_BIN / "ruff"
    if not ruff.exists():
        return
    name = f"{block.doc}.py"
    done = subprocess.run(
        [str(ruff), "check", "--isolated", "--no-cache", "--select", "F821,F822,F823", "--output-format", "concise",
         "--stdin-filename", name, "-"],
        input=padded, capture_output=True, text=True, cwd=scratch, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise DocError(f"{block.where}: the Python block uses undefined names (line numbers are the document's):\n{done.stdout}")


def run_block(block: Block, workdir: Path, scratch: Path, env: dict[str, str], timeout: float) -> None:
    # Padding with the lines above the block makes bash's and Python's line numbers the document's.
    pad = "\n" * block.line
    script = scratch / Path(block.doc).name
    if block.action == "shell":
        text = console_commands(block.text) if block.lang == "console" else block.text
        trap = f"trap 'echo \"{FAILED_AT} $LINENO\" >&2' ERR"  # on the first padding line: numbering unchanged
        argv = ["bash", "-euo", "pipefail", "-c", trap + pad + text, block.doc]
    else:
        check_python_names(block, pad + block.text, scratch)
        script.write_text(pad + block.text)
        argv = [sys.executable, str(script)]
    run_process(argv, cwd=workdir, env=env, log=scratch / f"line-{block.line}.log", where=block.where, timeout=timeout)


def check_document(doc: str, text: str, workdir: Path, scratch: Path, timeout: float = BLOCK_TIMEOUT) -> list[Block]:
    """Check every block of one document (see the module docstring); returns the blocks."""
    blocks = parse_blocks(text, doc)
    actions = [b.action for b in blocks]  # every block must be known before anything runs
    runnable = {"shell", "python"}
    for i, block in enumerate(blocks):
        if actions[i] == "file" and not any(
            actions[j] in runnable and block.file_path in blocks[j].text for j in range(i + 1, len(blocks))
        ):
            raise DocError(f"{block.where}: the block is written to {block.file_path}, but no later block uses it")
    for block in blocks:
        if block.action == "synopsis":
            check_synopsis(block)
    env = block_environment(scratch)
    for block in blocks:
        if block.action == "file":
            target = workdir / block.file_path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text)
        elif block.action in runnable:
            run_block(block, workdir, scratch, env, timeout)
    return blocks


def documents() -> list[str]:
    return ["README.md", *sorted(p.relative_to(REPO).as_posix() for p in (REPO / "docs").glob("*.md"))]


@pytest.mark.parametrize("doc", [pytest.param(d, id=d, marks=[pytest.mark.slow] if d in SLOW else []) for d in documents()])
def test_every_block_of_the_document_runs_or_is_checked(doc: str, tmp_path: Path) -> None:
    workdir, scratch = tmp_path / "work", tmp_path / "scratch"
    workdir.mkdir()
    scratch.mkdir()
    try:
        check_document(doc, (REPO / doc).read_text(encoding="utf-8"), workdir, scratch)
    except DocError as exc:
        message = str(exc)
    else:
        return
    pytest.fail(message, pytrace=False)  # outside the except: the message alone, without a chained traceback


def test_slow_documents_exist() -> None:
    assert set(documents()) >= SLOW


# -- the checker itself, on made-up documents ---------------------------------------------------------------------


def _check(tmp_path: Path, text: str, timeout: float = 60.0) -> list[Block]:
    (tmp_path / "w").mkdir(parents=True)
    (tmp_path / "s").mkdir()
    return check_document("made-up.md", text, tmp_path / "w", tmp_path / "s", timeout)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("intro\n\n```toml\na = 1\n```\n", "made-up.md:3: ```toml block that the docs test does not know how to check"),
        ("```\nls\n```\n", "made-up.md:1: a ``` (no language) block"),
        ("<!-- not run -->\n```bash\nx\n```\n", "made-up.md:2: unknown marker <!-- not run -->"),
        ("<!-- skip -->\n```bash\nx\n```\n", "made-up.md:2: unknown marker"),
        ("<!-- synopsis -->\n\n```bash\nx\n```\n", "made-up.md:1: marker <!-- synopsis --> is not right above"),
        ("```bash\nx\n", "made-up.md:1: code block is never closed"),
        ("<!-- file: a.toml -->\n```toml\na = 1\n```\n", "made-up.md:2: the block is written to a.toml, but no later block"),
    ],
    ids=["toml", "no-language", "reasonless-not-run", "unknown-marker", "marker-not-above", "unclosed", "unused-file"],
)
def test_blocks_nothing_checks_are_refused(tmp_path: Path, text: str, needle: str) -> None:
    with pytest.raises(DocError, match=re.escape(needle)):
        _check(tmp_path, text)


@pytest.mark.parametrize(
    ("synopsis", "needle"),
    [
        (
            "fedattest sim init DIR [--scenario S]\nfedattest sim init DIR [--scenarios S]",
            "made-up.md:5: 'fedattest sim init' has no option --scenarios",
        ),
        (
            "fedattest quote verify QUOTE \\\n    --collateral FILE [--root-ca DER] [-x]",
            "made-up.md:4: 'fedattest quote verify' has no option -x",
        ),
        ("fedattest sim initialise DIR", "made-up.md:4: there is no command 'fedattest sim initialise'"),
        ("fedattest policy keygen|init|approve|shw ...", "there is no command 'fedattest policy shw'"),
        ("fedattest policy [--json]", "made-up.md:4: 'fedattest policy' is a group"),
        ("gramine-sgx workload", "made-up.md:4: a synopsis line must start with 'fedattest'"),
    ],
    ids=["option", "short-option-continued", "command", "alternative", "group", "other-program"],
)
def test_synopsis_names_only_real_commands_and_options(tmp_path: Path, synopsis: str, needle: str) -> None:
    text = f"Usage:\n<!-- synopsis -->\n```bash\n{synopsis}\n```\n"
    with pytest.raises(DocError, match=re.escape(needle)):
        _check(tmp_path, text)


def test_a_correct_synopsis_passes(tmp_path: Path) -> None:
    synopsis = (
        "fedattest quote verify QUOTE (--collateral FILE | --pccs URL) [--expect-mrenclave HEX ...] [--json]  # a comment\n"
        "fedattest policy keygen|init|check|hash|approve|show ...\nfedattest demo [--out DIR]\n"
    )
    _check(tmp_path, f"<!-- synopsis -->\n```bash\n{synopsis}```\n")


def test_blocks_run_in_order_in_one_directory_with_the_document_line_numbers(tmp_path: Path) -> None:
    text = (
        "```bash\necho 'print(\"from a file\")' > made.py\n```\n\n"
        "<!-- file: data.txt -->\n```text\nhello\n```\n\n"
        "```python\nimport pathlib\nassert pathlib.Path('data.txt').read_text() == 'hello\\n'\n"
        "exec(open('made.py').read())\n```\n"
        "```console\n$ test -f made.py && \\\n  echo ok\nok\n```\n"
    )
    _check(tmp_path, text)
    with pytest.raises(DocError, match=r"made-up\.md:1: the block exited 3(.|\n)*made-up\.md: line 3: no-such-command"):
        _check(tmp_path / "b", "```bash\ntrue\nno-such-command || exit 3\n```\n")
    with pytest.raises(DocError, match=r"made-up\.md:1: the block exited 1 \(at made-up\.md:4\)"):
        _check(tmp_path / "e", "```bash\ntrue\n\nfalse\necho never\n```\n")
    with pytest.raises(DocError, match=r"made-up\.md:2: the block exited 1 \(at made-up\.md:4\)(.|\n)*ZeroDivisionError"):
        _check(tmp_path / "c", "\n```python\nx = 1\n1 / 0\n```\n")
    with pytest.raises(DocError, match=r"made-up\.md:1: the Python block uses undefined names(.|\n)*made-up\.md\.py:3:"):
        _check(tmp_path / "d", "```python\ndef f():\n    return undefined_thing\n```\n")


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie counts), waiting a little for the kernel to finish a SIGKILL."""
    deadline = time.monotonic() + 10
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X") or time.monotonic() >= deadline:
            return state in ("Z", "X")
        time.sleep(0.02)


def test_what_a_block_leaves_running_is_killed(tmp_path: Path) -> None:
    blocks = _check(tmp_path, "```bash\nsleep 600 &\necho $! > server.pid\n```\n")
    assert len(blocks) == 1
    assert _gone(int((tmp_path / "w" / "server.pid").read_text()))
    with pytest.raises(DocError, match=re.escape("made-up.md:1: the block did not finish in 1 s")):
        _check(tmp_path / "t", "```bash\nsleep 600 &\necho $! > server.pid\nwait\n```\n", timeout=1.0)
    assert _gone(int((tmp_path / "t" / "w" / "server.pid").read_text()))
