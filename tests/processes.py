"""Every process a test starts must be gone when it ends: the leak guard behind conftest's autouse fixtures.

The pytest process makes itself a *child subreaper* (Linux ``PR_SET_CHILD_SUBREAPER``), so a process
whose parent exits (``sh -c 'server &'``, a daemonising tool, a launcher killed without its group) is
re-parented to pytest instead of to init, and stays visible as a descendant. After a test, any descendant
that was not there before it is killed (its whole process group) and reported.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36
PROC = Path("/proc")


def become_subreaper() -> bool:
    """Adopt orphaned descendants; False where the kernel does not offer it (then orphans escape the guard)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    pgid: int
    state: str
    command: str

    @property
    def running(self) -> bool:
        return self.state not in ("Z", "X")


def _read(pid: int) -> Proc | None:
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return None  # gone meanwhile
    # The command name is in parentheses and may itself contain spaces or ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    command = raw.replace(b"\0", b" ").decode(errors="replace").strip() or stat[stat.index("(") + 1 : stat.rindex(")")]
    return Proc(pid, int(fields[1]), int(fields[2]), fields[0], command)


def descendants(root: int | None = None) -> dict[int, Proc]:
    """All processes below ``root`` (default: this process), by pid."""
    root = os.getpid() if root is None else root
    table = [p for p in (_read(int(d.name)) for d in PROC.iterdir() if d.name.isdigit()) if p is not None]
    children: dict[int, list[Proc]] = {}
    for proc in table:
        children.setdefault(proc.ppid, []).append(proc)
    found: dict[int, Proc] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child.pid not in found:
                found[child.pid] = child
                todo.append(child.pid)
    return found


def reap() -> None:
    """Collect exited children of ours (adopted orphans included) so they do not linger as zombies. Only
    at the end of a session: reaping a child that a ``Popen`` object still owns would hide its exit code."""
    _reap(descendants().values())


def _reap(procs: Iterable[Proc]) -> None:
    for proc in procs:
        if not proc.running and proc.ppid == os.getpid():
            with contextlib.suppress(ChildProcessError):
                os.waitpid(proc.pid, os.WNOHANG)


def left_behind(before: set[int], grace: float = 10.0) -> list[Proc]:
    """Descendants that are still running and were not there in ``before``. Processes that are on their way
    out (a test sent SIGTERM just before returning) get ``grace`` seconds; what is left after that is killed,
    with its process group, and returned. Exited processes (zombies) are not running and do not count."""
    deadline = time.monotonic() + grace
    while True:
        now = descendants()
        alive = [p for pid, p in now.items() if pid not in before and p.running]
        if not alive or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for proc in alive:
        kill(proc)
    return alive


def kill(proc: Proc) -> None:
    """SIGKILL the process and, when it leads a group of its own, the whole group."""
    try:
        if proc.pgid == proc.pid and proc.pgid != os.getpgid(0):
            os.killpg(proc.pgid, signal.SIGKILL)
        else:
            os.kill(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def describe(procs: Iterable[Proc]) -> str:
    return "; ".join(f"pid {p.pid} (group {p.pgid}): {p.command[:160]}" for p in procs)
