"""A whole attested federation on this machine, for a developer's own Flower app: what ``fedattest flower dev``
runs. The simulated TEE stands in for SGX; every participant is a real process of its own (coordinator, SuperLink,
one SuperNode per data directory) talking TLS on 127.0.0.1, exactly as in a deployment.

Everything lives in one state directory (:class:`DevLayout`). A second start with the same directory resumes:
the same platform and keys, the sealed identities resumed (no activation spent), the coordinator's sealed state
and audit log kept; an app that changed meanwhile is added to the policy as a new version.

Process handling: each child runs in its own session (a Ctrl-C in the terminal reaches the dev loop only, which
then stops the children in order), logs to ``logs/NAME.log``, and is stopped (SIGTERM to its group, SIGKILL after
10 s) on every exit path. A participant that stops on its own is started again with the same arguments.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from fedattest.errors import FedattestError
from fedattest.files import atomic_write

T = TypeVar("T")
MARKER = ".fedattest-dev"
AGGREGATOR = "aggregator"
APPROVER = "alice"
FEDATTEST = [sys.executable, "-m", "fedattest"]
BIN = Path(sys.executable).parent
# Flower's deployment engine polls its tasks every second; a developer waits for every poll, so poll faster.
FAST_FLOWER = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.2", "FLWR_TELEMETRY_ENABLED": "0", "PYTHONUNBUFFERED": "1"}
NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
DELTA = 1e-5  # the dev federation's privacy budget's δ


@dataclass(frozen=True)
class DevLayout:
    """Where the dev loop keeps everything, under ``root``."""

    root: Path

    platform = property(lambda self: self.root / "platform")
    keys = property(lambda self: self.root / "keys")
    policy = property(lambda self: self.root / "policy.toml")
    approval = property(lambda self: self.root / "approval.json")
    coordinator = property(lambda self: self.root / "coordinator")
    superlink = property(lambda self: self.root / "superlink")
    root_ca = property(lambda self: self.root / "root_ca.pem")
    flwr_home = property(lambda self: self.root / "flwr")
    logs = property(lambda self: self.root / "logs")
    ports = property(lambda self: self.root / "ports.json")

    def member(self, name: str) -> Path:
        return self.root / "members" / name

    def claim(self) -> None:
        """Create the directory, or check it is one this loop made: never write into someone else's directory."""
        if self.root.exists() and any(self.root.iterdir()) and not (self.root / MARKER).exists():
            raise FedattestError(f"{self.root} is not empty and was not made by 'fedattest flower dev': choose another --state")
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.root / MARKER).touch()


class Processes:
    """Background processes by name, each in its own session with its output in ``logs/NAME.log``."""

    def __init__(self, logs: Path, env: dict[str, str]) -> None:
        self.logs, self.env = logs, env
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.argv: dict[str, list[str]] = {}
        logs.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with open(self.logs / f"{name}.log", "ab") as log:  # the child keeps its own descriptor
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)  # noqa: S603
        self.procs[name], self.argv[name] = proc, argv
        return proc

    def log(self, name: str) -> str:
        try:
            return (self.logs / f"{name}.log").read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def says(self, name: str, text: str) -> Callable[[], bool]:
        """A predicate: ``text`` is in what ``name`` logged after this call (its log is kept across restarts)."""
        seen = self.log(name).count(text)
        return lambda: self.log(name).count(text) > seen

    def exited(self) -> dict[str, int]:
        """The processes that stopped on their own since they were started: name -> exit code."""
        return {name: code for name, proc in self.procs.items() if (code := proc.poll()) is not None}

    def restart(self, name: str) -> subprocess.Popen[bytes]:
        return self.start(name, self.argv[name])

    def stop(self, name: str) -> None:
        self.stop_all([name])

    def stop_all(self, names: Iterable[str] | None = None) -> None:
        """SIGTERM to each process group (all at once: each takes seconds to shut down gracefully), SIGKILL to
        whatever still runs 10 s later, and to anything the groups left behind."""
        procs = [self.procs.pop(n) for n in (list(reversed(list(self.procs))) if names is None else names) if n in self.procs]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in procs:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)


def wait_for(what: str, predicate: Callable[[], T | None], procs: Processes, name: str, timeout: float = 120) -> T:
    """Poll ``predicate`` until it returns something truthy; :class:`FedattestError` naming the log if ``name``'s
    process exits first or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        proc = procs.procs.get(name)
        if proc is not None and proc.poll() is not None:
            tail = "\n".join(procs.log(name).strip().splitlines()[-3:])
            raise FedattestError(f"{name} stopped (exit {proc.returncode}) before {what}; {procs.logs / name}.log ends:\n{tail}")
        time.sleep(0.1)
    raise FedattestError(f"timed out after {timeout:.0f} s waiting for {what} (see {procs.logs / name}.log)")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _interesting(line: str) -> bool:
    """A participant's log line worth showing live: ours (activations, refusals, round records) and errors."""
    return "fedattest" in line or line.startswith(("ACTIVATED", "RESUMED", "REPROVISIONED", "error:", "Traceback"))


class LiveLogs:
    """Prints the interesting lines of each process's log as they are written, prefixed with its name."""

    def __init__(self, logs: Path, out: IO[str]) -> None:
        self.logs, self.out = logs, out
        self._offsets: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="fedattest-dev-logs", daemon=True)

    def follow(self, name: str) -> None:
        path = self.logs / f"{name}.log"
        self._offsets.setdefault(name, path.stat().st_size if path.exists() else 0)

    def __enter__(self) -> LiveLogs:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self._poll()

    def _follow(self) -> None:
        while not self._stop.wait(0.2):
            self._poll()

    def _poll(self) -> None:
        for name, offset in list(self._offsets.items()):
            try:
                with open(self.logs / f"{name}.log", "rb") as f:
                    f.seek(offset)
                    chunk = f.read()
            except FileNotFoundError:
                continue
            complete = chunk[: chunk.rfind(b"\n") + 1]
            self._offsets[name] = offset + len(complete)
            for line in complete.decode(errors="replace").splitlines():
                if _interesting(line):
                    self.out.write(f"[{name}] {line}\n")
            self.out.flush()


@dataclass
class DevFederation:
    """The local federation of :mod:`fedattest.flower.local`: prepare, start, run, take changes."""

    layout: DevLayout
    data: dict[str, Path]
    rounds: int = 3
    epsilon: float = 50.0  # the dev federation's privacy budget (at DELTA)
    persist: bool = False  # the SuperLink's link state on disk, so runs and node ids survive its restart
    say: Callable[[str], None] = print
    env: dict[str, str] = field(default_factory=dict)
    procs: Processes | None = None
    url: str = ""
    control: str = ""

    def __post_init__(self) -> None:
        if not self.data:
            raise FedattestError("give at least one --data NAME=DIR (a collaborator and its data)")
        for name, directory in self.data.items():
            if not NAME.fullmatch(name) or name == AGGREGATOR:
                raise FedattestError(f"--data {name}=...: a member name is lower-case letters, digits, '.', '_', '-' "
                                     f"(not {AGGREGATOR!r}), 1-63 characters")  # fmt: skip
            if not directory.is_dir():
                raise FedattestError(f"--data {name}={directory}: not a directory")
        self.env = {**os.environ, **FAST_FLOWER, "FLWR_HOME": str(self.layout.flwr_home),
                    "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}  # fmt: skip

    # -- preparing: platform, keys, commitments, policy -------------------------------------------------------------

    def prepare(self, app_hash: str) -> None:
        """Platform, keys, data commitments and the approved policy allowing ``app_hash`` (made once; on a later
        start, the policy gains the app's hash as a new version if it lacks it)."""
        from fedattest.data.commit import commit_directory  # noqa: PLC0415
        from fedattest.policy.approval import generate_key, private_key_pem, public_key_pem  # noqa: PLC0415
        from fedattest.policy.template import policy_template  # noqa: PLC0415
        from fedattest.tee import SimulatedPlatform  # noqa: PLC0415

        lay = self.layout
        if not lay.platform.exists():
            SimulatedPlatform.create(lay.platform)
            self.say(f"[dev] simulated SGX platform made in {lay.platform}")
        lay.keys.mkdir(mode=0o700, exist_ok=True)
        public: dict[str, str] = {}
        for name in (APPROVER, AGGREGATOR, *self.data):
            key_file = lay.keys / f"{name}.key"
            if not key_file.exists():
                key = generate_key()
                atomic_write(key_file, private_key_pem(key), mode=0o600)
                atomic_write(lay.keys / f"{name}.pub.pem", public_key_pem(key.public_key()).encode(), mode=0o644)
            public[name] = (lay.keys / f"{name}.pub.pem").read_text()
        roots = {}
        for name, directory in self.data.items():
            roots[name] = commit_directory(directory)[0].root.hex()
            self.say(f"[dev] {name}: data in {directory} committed, root {roots[name][:16]}...")
        if not lay.policy.exists():
            text = policy_template("dev", [(APPROVER, public[APPROVER])], 1, {k: v for k, v in public.items() if k != APPROVER},
                                   simulated=True, commitments=roots, collaborators=tuple(self.data), app_hashes=(app_hash,),
                                   rounds=self.rounds, privacy=(self.epsilon, DELTA))  # fmt: skip
            atomic_write(lay.policy, text.encode(), mode=0o644)
            self._approve()
            return
        policy = self._policy()
        members = {m.name: m for m in policy.members}
        for name, root in roots.items():
            member = members.get(name)
            if member is None or member.data_commitment is None or member.data_commitment.hex() != root:
                raise FedattestError(
                    f"{name}: {'not a member of' if member is None else 'its data differs from its commitment in'}"
                    f" {lay.policy}: a dev federation's members and data are fixed when it is made; start a new one with"
                    f" another --state (or delete {lay.root})"
                )
        if app_hash not in {h.hex() for h in policy.apps.allowed_hashes}:
            self._add_app(app_hash)

    def _policy(self) -> Any:
        from fedattest.policy.federation import parse_policy  # noqa: PLC0415

        return parse_policy(self.layout.policy.read_text())

    def _approve(self) -> None:
        from fedattest.policy.approval import approve, load_private_key  # noqa: PLC0415

        key = load_private_key((self.layout.keys / f"{APPROVER}.key").read_bytes())
        atomic_write(self.layout.approval, approve(self._policy(), APPROVER, key).to_json().encode(), mode=0o644)

    def _add_app(self, app_hash: str) -> str:
        from fedattest.policy.edit import with_app_hash  # noqa: PLC0415

        text, updated = with_app_hash(self.layout.policy.read_text(), app_hash)
        atomic_write(self.layout.policy, text.encode(), mode=0o644)
        self._approve()
        self.say(f"[dev] policy: app {app_hash[:16]}... added; policy hash now {updated.policy_hash().hex()[:16]}...")
        return str(updated.policy_hash().hex())

    # -- running the processes ---------------------------------------------------------------------------------------

    def start(self, procs: Processes, live: LiveLogs) -> None:
        """Start the coordinator (verified against the policy), the SuperLink and one SuperNode per member, and
        wait until every SuperNode is connected."""
        from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

        from fedattest.dcap.verify import QuoteVerifier  # noqa: PLC0415
        from fedattest.participant.client import verify_coordinator  # noqa: PLC0415
        from fedattest.tee import SimulatedPlatform  # noqa: PLC0415

        self.procs = procs
        lay = self.layout
        ports = json.loads(lay.ports.read_text()) if lay.ports.exists() else {"fleet": free_port(), "control": free_port()}
        atomic_write(lay.ports, json.dumps(ports).encode(), mode=0o644)
        (lay.coordinator / "url").unlink(missing_ok=True)
        self._start(live, "coordinator", [*FEDATTEST, "coordinator", "serve", "--state", str(lay.coordinator), "--platform",
                                          str(lay.platform), "--policy", str(lay.policy), "--approval", str(lay.approval),
                                          "--listen", "127.0.0.1:0"])  # fmt: skip
        self.url = wait_for("the coordinator to listen", lambda: _read(lay.coordinator / "url"), procs, "coordinator")
        platform = SimulatedPlatform.load(lay.platform)
        verifier, collateral_for = QuoteVerifier(platform.root_ca), lambda _quote: platform.collateral()
        # The coordinator puts the policy file in force as it starts (a newer version than its sealed one is approved
        # by the same approver): verified against that file, the quote binds its hash.
        root, verified, _ = verify_coordinator(self.url, self._policy(), verifier=verifier, collateral_for=collateral_for)
        atomic_write(lay.root_ca, root.public_bytes(serialization.Encoding.PEM), mode=0o644)
        code = verified.mr_enclave.hex()[:16] if verified.mr_enclave else "?"
        self.say(f"[dev] coordinator at {self.url}: verified (MRENCLAVE {code}..., simulated platform)")
        common = ["--coordinator", self.url, "--root-ca", str(lay.root_ca), "--platform", str(lay.platform)]
        (lay.superlink / "superlink.json").unlink(missing_ok=True)
        self._start(live, "superlink", [*FEDATTEST, "flower", "superlink", *common, "--member", AGGREGATOR,
                                        "--enrolment-key", str(lay.keys / f"{AGGREGATOR}.key"), "--state", str(lay.superlink),
                                        "--listen", f"127.0.0.1:{ports['fleet']}", "--internal",
                                        f"127.0.0.1:{ports['control']}", "--refresh", "0.5",
                                        *(["--persist"] if self.persist else [])])  # fmt: skip
        wait_for("the SuperLink to listen", lambda: _read(lay.superlink / "superlink.json"), procs, "superlink")
        self.control = f"localhost:{ports['control']}"  # the name in the aggregator's certificate
        connected = {name: procs.says(name, "SuperNode ID") for name in self.data}
        for name, directory in self.data.items():
            self._start(live, name, [*FEDATTEST, "flower", "supernode", *common, "--member", name, "--enrolment-key",
                                     str(lay.keys / f"{name}.key"), "--superlink", f"localhost:{ports['fleet']}",
                                     "--data", str(directory.resolve()), "--state", str(lay.member(name))])  # fmt: skip
        lay.flwr_home.mkdir(parents=True, exist_ok=True)
        atomic_write(lay.flwr_home / "config.toml", (
            f'[superlink]\ndefault = "attested"\n\n[superlink.attested]\naddress = "{self.control}"\n'
            f'root-certificates = "{lay.root_ca}"\n').encode(), mode=0o644)  # fmt: skip
        for name, predicate in connected.items():
            wait_for(f"{name} to connect to the SuperLink", predicate, procs, name)
        self.say(f"[dev] federation up: coordinator, SuperLink (aggregator), SuperNodes {', '.join(self.data)}")

    def _start(self, live: LiveLogs, name: str, argv: list[str]) -> None:
        assert self.procs is not None
        live.follow(name)
        self.procs.start(name, argv)

    def put_policy_in_force(self) -> None:
        """Submit the current policy file and its approval to the running coordinator."""
        from fedattest.participant.client import submit_policy  # noqa: PLC0415

        result = submit_policy(self.url, self.layout.root_ca.read_text(), self.layout.policy.read_text(),
                               [self.layout.approval.read_text()])  # fmt: skip
        self.say(f"[dev] policy version {result.get('version', '?')} in force on the coordinator"
                 f" ({str(result.get('policy_hash', ''))[:16]}...)")  # fmt: skip

    def take_app(self, app_hash: str) -> None:
        """Allow a changed app: a new policy version, approved and put in force; returns once every participant
        re-provisioned under it (no activation spent, nothing restarted)."""
        assert self.procs is not None
        procs = self.procs
        taken = {name: procs.says(name, "re-provisioned under policy") for name in ("superlink", *self.data)}
        policy_hash = self._add_app(app_hash)
        self.put_policy_in_force()
        for name, predicate in taken.items():
            wait_for(f"{name} to take policy {policy_hash[:16]}...", predicate, procs, name, timeout=60)

    def flwr_run(self, app_dir: Path, out: IO[str], extra: Iterable[str] = ()) -> int:
        """``flwr run APP attested --stream``, its output passed on to ``out``; returns its exit code."""
        argv = [str(BIN / "flwr"), "run", str(app_dir), "attested", "--stream", *extra]
        pipe = subprocess.PIPE
        with subprocess.Popen(argv, env=self.env, stdout=pipe, stderr=subprocess.STDOUT, text=True,  # noqa: S603
                              start_new_session=True) as run:  # fmt: skip
            try:
                assert run.stdout is not None
                for line in run.stdout:
                    out.write(line)
                    out.flush()
                return run.wait()
            finally:
                if run.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(run.pid, signal.SIGTERM)
                    run.wait()

    def _get(self, path: str) -> Any:
        import httpx  # noqa: PLC0415

        from fedattest.participant.client import coordinator_answer, coordinator_context  # noqa: PLC0415

        with httpx.Client(verify=coordinator_context(self.layout.root_ca.read_text()), timeout=30) as http:
            return coordinator_answer(http.get(f"{self.url}{path}"), f"GET {path}")

    def activations(self) -> dict[str, int]:
        """Activations spent so far, by member (the coordinator's count)."""
        return {m["name"]: int(m["activations"]) for m in self._get("/api/v1/members")}

    def audit_entries(self) -> list[dict[str, Any]]:
        """The coordinator's audit log, as JSON entries."""
        return list(self._get("/api/v1/audit").get("entries", []))


def recorded_rounds(entries: list[dict[str, Any]]) -> int:
    """Round reports among audit ``entries``."""
    return sum(1 for e in entries if e.get("kind") == "round")


def budget_spent(entries: list[dict[str, Any]]) -> str:
    """The privacy ledger as audit ``entries`` have it: "ε X of Y spent at δ Z (N releases)"."""
    reserved = [e["data"] for e in entries if e.get("kind") == "reservation"]
    if not reserved:
        return "no privacy budget spent"
    last = reserved[-1]
    return (f"ε {float(last['epsilon_after']):.3g} of {last['budget']['epsilon']:g} spent at δ {last['budget']['delta']:g}"
            f" ({len(reserved)} releases)")  # fmt: skip


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def app_fingerprint(app_dir: Path) -> tuple[tuple[str, int, int], ...]:
    """A cheap fingerprint of the files of an app directory (path, size, mtime), to notice edits; what matters
    is then decided by the app's hash (the FAB Flower builds)."""
    out = []
    for path in sorted(app_dir.rglob("*")):
        rel = path.relative_to(app_dir)
        if any(part in {"__pycache__", ".git"} or part.startswith(".") for part in rel.parts) or path.suffix == ".fab":
            continue
        with contextlib.suppress(OSError):
            st = path.stat()
            if path.is_file():
                out.append((str(rel), st.st_size, st.st_mtime_ns))
    return tuple(out)
