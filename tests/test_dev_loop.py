"""A developer's own Flower app (tests/external_app.py, written into a temporary directory: not an app of this
repository) through ``fedattest flower dev``: the federation comes up, the app runs attested; an edit is taken as
a new policy version and the next run is accepted with no identity wiped and no activation spent; the edited app
(plain Flower: no signing mod, no DP, asking for more rounds) still produces signed updates and DP-applied rounds
of the policy's number, recorded in the audit log; the SuperLink killed mid-run is started again, its SuperNodes
reconnect and the next run completes. Then the same app, unchanged, under Flower's own simulation engine."""

from __future__ import annotations

import contextlib
import json
import os
import queue
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.external_app import write_app, write_sites

BIN = Path(sys.executable).parent
DEV = [sys.executable, "-m", "fedattest", "flower", "dev"]


class Output:
    """A process's output lines as they come (a reader thread), kept whole for the failure message."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._proc = proc
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            self._queue.put(line.rstrip("\n"))
        self._queue.put(None)

    def until(self, needle: str, timeout: float = 300) -> str:
        """The next line containing ``needle``; fails with the output so far if the process ends or time runs out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self._queue.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                pytest.fail(f"the dev loop ended before {needle!r}:\n" + "\n".join(self.lines[-60:]))
            self.lines.append(line)
            if needle in line:
                return line
        pytest.fail(f"no {needle!r} within {timeout:.0f} s:\n" + "\n".join(self.lines[-60:]))


@contextlib.contextmanager
def running(argv: list[str], cwd: Path) -> Iterator[tuple[subprocess.Popen[str], Output]]:
    proc = subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        yield proc, Output(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C: the loop stops its children itself
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _get(state: Path, path: str) -> Any:
    url = (state / "coordinator" / "url").read_text().strip()
    tls = ssl.create_default_context(cafile=str(state / "root_ca.pem"))  # the root the loop pinned
    return httpx.get(f"{url}{path}", verify=tls, timeout=30).json()


def audit(state: Path) -> list[dict[str, Any]]:
    return list(_get(state, "/api/v1/audit")["entries"])


def activations(state: Path) -> dict[str, int]:
    return {m["name"]: m["activations"] for m in _get(state, "/api/v1/members")}


def run_rounds(entries: list[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
    return [e["data"] for e in entries if e["kind"] == "round" and e["data"]["run_id"] == run_id]


def last_run(entries: list[dict[str, Any]]) -> str:
    return str([e for e in entries if e["kind"] == "round"][-1]["data"]["run_id"])


def wait_until(what: str, predicate: Any, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.2)


@pytest.mark.slow  # a whole federation, three runs and a SuperLink restart
def test_a_developers_own_app_through_the_dev_loop(tmp_path: Path) -> None:
    app = write_app(tmp_path / "my-app")
    sites = write_sites(tmp_path / "data")
    state = tmp_path / "dev"
    argv = [*DEV, str(app), *(f"--data={n}={d}" for n, d in sites.items()), "--state", str(state), "--rounds", "2"]
    with running(argv, tmp_path) as (dev, out):
        out.until("[dev] federation up")
        first = out.until("[dev] run finished")
        assert "exit 0; 2 rounds recorded" in first, "\n".join(out.lines[-40:])
        entries = audit(state)
        before = activations(state)
        assert before == {"aggregator": 1, "site-0": 1, "site-1": 1}
        node_keys = {n: (state / "members" / n / "identity" / "node-key.ssh").read_bytes() for n in sites}
        run1 = last_run(entries)
        assert all(r["participants"] == ["site-0", "site-1"] and r["dp"] for r in run_rounds(entries, run1))

        # The developer's next version: plain Flower (no signing mod, a bare FedAvg asking for 4 rounds).
        write_app(app, plain=True)
        out.until("[dev] the app changed")
        out.until("[dev] policy version 2 in force")
        second = out.until("[dev] run finished")
        assert "exit 0; 2 rounds recorded" in second, "\n".join(out.lines[-60:])  # the policy's 2, not the app's 4
        entries = audit(state)
        assert [e["data"]["version"] for e in entries if e["kind"] == "policy"][-1] == 2
        run2 = last_run(entries)
        assert run2 != run1
        rounds = run_rounds(entries, run2)
        # Signed updates from both attested members counted (the SuperNodes signed what the app did not), the
        # policy's DP applied (the app asked for none) and recorded, each round in the audit log.
        assert [r["round"] for r in rounds] == [1, 2]
        assert all(r["participants"] == ["site-0", "site-1"] and not r.get("refused") for r in rounds)
        assert all(r["dp"]["noise_multiplier"] == 1.0 and r["dp"]["clipping_norm"] == 1.0 for r in rounds)
        assert activations(state) == before  # re-provisioned, none spent
        assert {n: (state / "members" / n / "identity" / "node-key.ssh").read_bytes() for n in sites} == node_keys
        assert any(e["kind"] == "reprovision" for e in entries)

        # The SuperLink killed in the middle of a run: the loop starts it again, the SuperNodes reconnect.
        run3 = kill_the_superlink_mid_run_then_run_again(state, app, sites, out)
        assert "restarted without --persist" in (state / "logs" / "site-0.log").read_text()  # the one line that says why
        assert run3 not in {run1, run2}
        assert activations(state) == before

        os.killpg(dev.pid, signal.SIGINT)  # Ctrl-C: everything stops, the state is kept
        assert dev.wait(timeout=60) == 0
        out.until("[dev] stopped; state kept")



def kill_the_superlink_mid_run_then_run_again(state: Path, app: Path, sites: dict[str, Path], out: Output) -> str:
    """SIGKILL the dev loop's SuperLink (its whole process group) once a run's first round is recorded; wait until
    the loop has started it again and every SuperNode is back (reconnected, or taken over by a SuperLink that kept
    its link state); then one more ``flwr run``, which must complete with the policy's two rounds. Its run id."""
    superlink_pid = json.loads((state / "superlink" / "superlink.json").read_text())["pid"]
    env = {**os.environ, "FLWR_HOME": str(state / "flwr")}
    flwr = [str(BIN / "flwr"), "run", str(app), "attested", "--stream"]
    logs = state / "logs"
    connected = {n: (logs / f"{n}.log").read_text().count("SuperNode ID") for n in sites}
    taken_over = (logs / "superlink.log").read_text().count("took over the node key")
    recorded = len([e for e in audit(state) if e["kind"] == "round"])
    quiet = subprocess.DEVNULL
    with subprocess.Popen(flwr, env=env, stdout=quiet, stderr=quiet, start_new_session=True) as doomed:
        try:
            wait_until("the run's first round", lambda: len([e for e in audit(state) if e["kind"] == "round"]) > recorded)
            os.killpg(superlink_pid, signal.SIGKILL)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(doomed.pid, signal.SIGKILL)
    out.until("[dev] superlink stopped")

    def back(name: str) -> bool:
        reconnected = (logs / f"{name}.log").read_text().count("SuperNode ID") > connected[name]
        return reconnected or (logs / "superlink.log").read_text().count("took over the node key") >= taken_over + len(sites)

    for name in sites:
        wait_until(f"{name} to be back", lambda n=name: back(n))
    done = subprocess.run(flwr, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    entries = audit(state)
    run = last_run(entries)
    assert [r["round"] for r in run_rounds(entries, run)] == [1, 2]
    return run


@pytest.mark.slow  # a whole federation and a SuperLink restart
def test_a_superlink_with_persisted_state_restarted_mid_run_serves_the_next_run(tmp_path: Path) -> None:
    """With --persist, the restarted SuperLink keeps its link state: it takes over the attested nodes' keys (same
    node ids) and the next run completes, with no activation spent."""
    app = write_app(tmp_path / "my-app")
    sites = write_sites(tmp_path / "data")
    state = tmp_path / "dev"
    argv = [*DEV, str(app), *(f"--data={n}={d}" for n, d in sites.items()), "--state", str(state), "--rounds", "2",
            "--persist"]  # fmt: skip
    with running(argv, tmp_path) as (dev, out):
        assert "exit 0; 2 rounds recorded" in out.until("[dev] run finished"), "\n".join(out.lines[-40:])
        before = activations(state)
        first = last_run(audit(state))
        assert kill_the_superlink_mid_run_then_run_again(state, app, sites, out) != first
        assert activations(state) == before
        assert (state / "superlink" / "linkstate.db").exists()
        os.killpg(dev.pid, signal.SIGINT)
        assert dev.wait(timeout=60) == 0


def test_dev_loop_usage_errors(tmp_path: Path) -> None:
    app = write_app(tmp_path / "app")
    data = tmp_path / "d"
    data.mkdir()
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "x").write_text("someone's")
    for args, needle in (
        ([str(app), "--data", "site-a"], "--data needs NAME=DIR"),
        ([str(app), "--data", f"site-a={tmp_path / 'none'}"], "not a directory"),
        ([str(app), "--data", f"Site A={data}"], "a member name is lower-case"),
        ([str(app), "--data", f"aggregator={data}"], "a member name is lower-case"),
        ([str(app), "--data", f"a={data}", "--data", f"a={data}"], "given twice"),
        ([str(tmp_path / "nope"), "--data", f"a={data}"], "not a directory (your Flower app)"),
        ([str(data), "--data", f"a={data}"], "not a Flower app"),
        ([str(app), "--data", f"a={data}", "--state", str(foreign)], "was not made by 'fedattest flower dev'"),
    ):
        done = subprocess.run([*DEV, *args], capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], (args, done)
    assert (foreign / "x").read_text() == "someone's" and sorted(p.name for p in foreign.iterdir()) == ["x"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow  # Flower's simulation engine (Ray)
def test_the_same_app_runs_unchanged_in_flowers_simulation_engine(tmp_path: Path) -> None:
    pytest.importorskip("ray", reason="Flower's simulation engine needs Ray (pip install -e .[dev] brings flwr[simulation])")
    app = write_app(tmp_path / "my-app")
    write_sites(tmp_path / "data")
    home = tmp_path / "flwr"
    home.mkdir()
    (home / "config.toml").write_text('[superlink]\ndefault = "sim"\n\n[superlink.sim]\naddress = ":local:"\n'
                                      "options.num-supernodes = 2\n")  # fmt: skip
    port = str(_free_port())
    # Flower 1.42 serves the local simulation's Control API on its HTTP port: both variables name the same port.
    env = {**os.environ, "FLWR_HOME": str(home), "FLWR_LOCAL_CONTROL_API_PORT": port, "FLWR_LOCAL_SUPERLINK_HTTP_API_PORT": port,
           "FLWR_TELEMETRY_ENABLED": "0", "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip
    try:
        done = subprocess.run([str(BIN / "flwr"), "run", str(app), "sim", "--stream", "--run-config",
                               f"sim-data='{tmp_path / 'data'}'"], env=env, capture_output=True, text=True, timeout=600,
                              check=False)  # fmt: skip
    finally:
        _stop_local_superlink(port)
    log = done.stdout + done.stderr
    assert done.returncode == 0, log[-4000:]
    assert "linreg: final weights" in log
    for feature in ("attested_signing_mod", "committed_dataset", "dp_strategy", "attested_strategy"):
        assert f"{feature}: not attested" in log, feature
    assert "Traceback" not in log


def _stop_local_superlink(port: str) -> None:
    """Flower starts the simulation's SuperLink detached, and leaves it running: stop it (its whole group)."""
    from tests.processes import descendants

    for proc in descendants().values():
        if "flower-superlink" in proc.command and f"--port {port}" in proc.command:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pgid, signal.SIGTERM)
