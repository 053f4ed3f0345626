"""The leak guard itself (tests/processes.py) catches what it is there to catch."""

from __future__ import annotations

import os
import subprocess
import sys

from tests import processes


def test_a_process_left_running_is_found_and_killed() -> None:
    before = set(processes.descendants())
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"], start_new_session=True)
    leaked = processes.left_behind(before, grace=0.2)
    assert [p.pid for p in leaked] == [proc.pid]
    assert proc.wait(timeout=30) == -9


def test_an_orphan_is_adopted_and_found() -> None:
    """`sh -c 'sleep &'`: the shell exits at once and its child is orphaned; the subreaper keeps it ours."""
    assert processes.become_subreaper()
    before = set(processes.descendants())
    out = subprocess.run(
        ["sh", "-c", "sleep 120 >/dev/null 2>&1 & echo $!"], capture_output=True, text=True, check=True, timeout=30
    )
    orphan = int(out.stdout)
    assert processes.descendants()[orphan].ppid == os.getpid()
    leaked = processes.left_behind(before, grace=0.2)
    assert [p.pid for p in leaked] == [orphan]
    gone = processes.descendants().get(orphan)
    assert gone is None or not gone.running


def test_a_process_that_exits_within_the_grace_period_is_not_a_leak() -> None:
    before = set(processes.descendants())
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    assert processes.left_behind(before, grace=60) == []
    assert proc.wait(timeout=30) == 0
