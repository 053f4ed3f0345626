"""The attested Flower federation, with real processes: the demo driver runs a simulated platform, the
coordinator, the aggregator's SuperLink and three SuperNodes over TLS on 127.0.0.1, trains, runs the
attacks and exports the audit bundle; these tests check what it reports and what the processes logged.
Then the SuperLink's hardening pieces, each against Flower's own application and link state."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization

from fedattest.errors import FedattestError
from fedattest.flower import AppGate, fab_hash
from fedattest.flower.gated import FLOWER_ENTRY_POINTS, run_gated, write_gated_bin
from fedattest.flower.superlink import (
    NO_REGISTRATION,
    ONLY_FLEET,
    AttestedNodeRegistry,
    PathFilter,
    gate_run_creation,
    internal_refusal,
    public_refusal,
)
from fedattest.flower.supernode import SuperNodePaths, run_supernode, supernode_argv
from fedattest.pki import identity as ident
from tests.conftest import readme_script

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "digits" / "run_demo.py"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str, Path]:
    pytest.importorskip("sklearn", reason="the example's data comes from scikit-learn (pip install -e .[dev])")
    out = tmp_path_factory.mktemp("federation")
    summary = out / "summary.json"
    # The README's command, as a user runs it (on the installed .venv; it installs nothing). No time
    # limit is asserted: the demo's duration is measured in benchmarks/, the timeout only stops a hang.
    argv, env = readme_script("demo.sh", "--out", str(out / "run"), "--summary", str(summary))
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    return json.loads(summary.read_text()), done.stdout, out / "run"


@pytest.mark.slow  # the whole federation: real Flower processes, three rounds
def test_training_runs_the_policy_rounds_with_attested_members(demo: tuple[dict[str, Any], str, Path]) -> None:
    summary, stdout, out = demo
    assert len(summary["accuracy"]) == 3  # rounds come from the policy, not the app's run config
    assert summary["accuracy"][-1] > 0.5  # ten classes: chance is 0.1
    assert summary["rounds_recorded"] == 3
    assert {(m["name"], m["role"], m["attestation"]) for m in summary["members"]} == {
        ("aggregator", "aggregator", "verified"),
        *{(h, "collaborator", "verified") for h in ("hospital-a", "hospital-b", "hospital-c")},
    }
    serverapp_log = (out / "logs" / "flwr-run.log").read_text()
    for rnd in (1, 2, 3):
        assert f"round {rnd}: 3 attested updates (hospital-a, hospital-b, hospital-c)" in serverapp_log
    superlink_log = (out / "logs" / "superlink.log").read_text()
    assert "registered the attested node key of hospital-a" in superlink_log
    table = stdout[stdout.index("   member        role") :].splitlines()[1:5]
    assert all("verified" in row and "UpToDate" in row and row.rstrip().endswith("True") for row in table), table
    # The server-side DP the policy provisioned was applied.
    assert "central DP noise with" in serverapp_log


@pytest.mark.slow  # the whole federation: real Flower processes, three rounds
def test_a_changed_app_is_approved_and_run_without_activations_or_restarts(demo: tuple[dict[str, Any], str, Path]) -> None:
    """The change cycle in the running federation: add-app, approve, update-policy; every participant takes the
    new version (re-provisioned, no activation spent, no restart) and the changed app trains. It is a plain Flower
    app (no signing mod, a bare FedAvg asking for 5 rounds): the participants sign every reply, count only attested
    updates, add the policy's DP and run the policy's rounds all the same."""
    summary, stdout, out = demo
    cycle = summary["change_cycle"]
    assert cycle["rounds"] == 3 and cycle["attested_rounds"] == 3  # the policy's rounds, not the app's 5
    # A plain FedAvg still aggregates with the policy's DP, and each round's signed report says so.
    assert cycle["dp_recorded"] == [{"noise_multiplier": 0.01, "clipping_norm": 50.0, "sampled_clients": 3}] * 3, cycle
    assert any("the app asked for 5 rounds; the policy's 3 apply" in line for line in cycle["enforced"]), cycle["enforced"]
    assert cycle["activations_before"] == cycle["activations_after"]
    for name in ("superlink", "hospital-a", "hospital-b", "hospital-c"):
        assert "re-provisioned under policy" in (out / "logs" / f"{name}.log").read_text()
    assert "ADDED: app " in stdout and "IN FORCE: policy 'digits-demo' version 2" in stdout


@pytest.mark.slow  # the whole federation: real Flower processes, three rounds
def test_outsiders_cannot_use_control_or_runtime(demo: tuple[dict[str, Any], str, Path]) -> None:
    attacks = demo[0]["attacks"]
    assert attacks["register_node_public"] == 403  # stock Flower: 200, and the outsider's node joins
    assert attacks["acquire_task_public"] == 403  # stock Flower: the outsider gets the ServerApp's task token
    assert attacks["register_node_internal"] == 403
    assert attacks["acquire_task_internal"] == 401  # Flower's SuperExec authentication, with a secret only we hold
    assert ONLY_FLEET[:40] in demo[1] and NO_REGISTRATION[:40] in demo[1]


@pytest.mark.slow  # the whole federation: real Flower processes, three rounds
def test_unattested_node_unapproved_app_and_changed_data_are_refused(demo: tuple[dict[str, Any], str, Path]) -> None:
    summary, stdout, out = demo
    assert summary["attacks"]["unattested_node_refused"]
    assert summary["attacks"]["impostor_refused"]  # before member binding: activated, and hospital-b's node evicted
    assert "No SuperNode found with the given public key" in stdout
    assert summary["attacks"]["unapproved_app_refused"]
    assert "is not in the allowed apps" in stdout and "refusing to install or run it" in stdout
    assert summary["attacks"]["changed_data_detected"]
    assert "data integrity: 'train.npz' chunk 0" in (out / "logs" / "hospital-c.log").read_text()


@pytest.mark.slow  # the whole federation: real Flower processes, three rounds
def test_the_audit_bundle_verifies_offline(demo: tuple[dict[str, Any], str, Path]) -> None:
    summary, _, out = demo
    assert summary["audit_verify_exit"] == 0
    done = subprocess.run(
        [sys.executable, "-m", "fedattest", "audit", "verify", str(out / "audit-bundle.tar"), "--platform",
         str(out / "platform"), "--key", str(out / "coordinator" / "audit-key.pub.pem"), "--json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    doc = json.loads(done.stdout)
    assert doc["ok"] and len(doc["activations"]) == 4
    first_run = [r for r in doc["rounds"] if r["run_id"] == doc["rounds"][0]["run_id"]]
    assert [r["round"] for r in first_run] == [1, 2, 3]
    assert all(r["participants"] == ["hospital-a", "hospital-b", "hospital-c"] for r in first_run)
    # Each round's signed report carries the real metrics of the run (the ClientApps' aggregated training loss, the
    # ServerApp's evaluation) and the Flower node each update came from.
    for r in first_run:
        assert {"train.train_loss", "server.accuracy", "server.loss"} <= set(r["metrics"]), r["metrics"]
        assert 0 <= r["metrics"]["server.accuracy"] <= 1 and set(r["nodes"]) == set(r["participants"]), r
        assert len(set(r["nodes"].values())) == 3 and all(node.isdigit() for node in r["nodes"].values())


# -- the hardening pieces, against Flower's own application ----------------------------------------------


def _flower_app() -> Any:
    from flwr.superlink.main import create_app

    return create_app()  # in-memory link state; no listeners (the ASGI app only)


async def _post(app: Any, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://superlink") as client:
        return await client.post(path, content=b"", headers={"content-type": "application/protobuf"})


@pytest.mark.parametrize(
    ("listener", "path", "ours"),
    [
        ("public", "/v1/control/register-node", True),
        ("public", "/v1/control/start-run", True),
        ("public", "/v1/runtime/acquire-task", True),
        ("public", "/v1/runtime/pull-task-input", True),
        ("public", "/docs", True),
        ("public", "//v1/fleet/create-node", True),
        ("public", "/v1/fleet/create-node", False),
        ("public", "/v1/fleet/activate-node", False),
        ("internal", "/v1/control/register-node", True),
        ("internal", "/v1/control/register-node/", True),
        ("internal", "/v1/control/unregister-node", True),
        ("internal", "/v1/control/list-nodes", False),
        ("internal", "/v1/runtime/acquire-task", False),
    ],
)
def test_each_listener_serves_only_its_apis(listener: str, path: str, ours: bool) -> None:
    refusal = public_refusal if listener == "public" else internal_refusal
    response = asyncio.run(_post(PathFilter(_flower_app(), refusal, listener), path))
    refused_by_us = (
        response.status_code == 403
        and response.headers.get("content-type") == "application/json"
        and (response.json().get("error", "").startswith("fedattest:"))
    )
    assert refused_by_us == ours, (response.status_code, response.text[:200])


def _linkstate() -> Any:
    from flwr.superlink.config_loader import get_federation_manager, get_objectstore_linkstate_factories

    _, factory = get_objectstore_linkstate_factories(":flwr-in-memory:", get_federation_manager(is_simulation=False))
    return factory


def _pem() -> bytes:
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    return ident.new_key().public_key().public_bytes(serialization.Encoding.PEM, spki)


def test_the_registry_follows_the_coordinators_attested_keys() -> None:
    factory = _linkstate()
    now = [1000.0]
    keys = {"hospital-a": _pem(), "hospital-b": _pem()}
    listed: list[dict[str, Any]] = [{"member": m, "public_key": k.decode(), "expires": 2000} for m, k in keys.items()]
    failing = [False]

    def fetch() -> list[dict[str, Any]]:
        if failing[0]:
            raise FedattestError("coordinator unreachable")
        return listed

    registry = AttestedNodeRegistry(factory, fetch, clock=lambda: now[0])
    state = factory.state()
    registry.sync()
    assert {m: state.get_node_id_by_public_key(k) for m, k in keys.items()} == {m: v[0] for m, v in registry.registered.items()}
    # A re-activated member with a new key: the old key stops working, the new one is registered.
    new_b = _pem()
    listed[1] = {"member": "hospital-b", "public_key": new_b.decode(), "expires": 2000}
    registry.sync()
    assert state.get_node_id_by_public_key(keys["hospital-b"]) is None
    assert state.get_node_id_by_public_key(new_b) == registry.registered["hospital-b"][0]
    # A member removed from the policy (the coordinator stops listing it) is removed.
    del listed[0]
    registry.sync()
    assert state.get_node_id_by_public_key(keys["hospital-a"]) is None and "hospital-a" not in registry.registered
    # The coordinator unreachable: keys stay until their identity expires, then go.
    failing[0] = True
    registry.sync()
    assert state.get_node_id_by_public_key(new_b) is not None
    now[0] = 2000.0
    registry.sync()
    assert state.get_node_id_by_public_key(new_b) is None and registry.registered == {}
    # Expired entries are never registered.
    failing[0] = False
    registry.sync()
    assert registry.registered == {}


def test_a_restarted_registry_takes_over_the_persisted_node_keys(caplog: pytest.LogCaptureFixture) -> None:
    """A SuperLink restarted with --persist finds its SuperNodes' keys already registered: it takes those nodes
    over (same node ids: the SuperNodes go on) instead of logging "Public key already in use" every sync."""
    factory = _linkstate()
    keys = {"hospital-a": _pem(), "hospital-b": _pem()}
    listed = [{"member": m, "public_key": k.decode(), "expires": 2000} for m, k in keys.items()]
    before = AttestedNodeRegistry(factory, lambda: listed, clock=lambda: 1000.0)
    before.sync()
    after = AttestedNodeRegistry(factory, lambda: listed, clock=lambda: 1000.0)  # the restarted process, same state
    with caplog.at_level("INFO", logger="fedattest"):
        for _ in range(5):
            after.sync()
    assert after.registered == before.registered
    assert "already in use" not in caplog.text
    assert caplog.text.count("took over the node key of hospital-a") == 1
    # A member revoked while the SuperLink was down: its node, left in the persisted state, is removed.
    revoked_node = before.registered["hospital-b"][0]
    later = AttestedNodeRegistry(factory, lambda: listed[:1], clock=lambda: 1000.0)
    later.sync()
    assert factory.state().get_node_id_by_public_key(keys["hospital-b"]) is None and "hospital-b" not in later.registered
    assert revoked_node not in {n for n, _, _ in later.registered.values()}

    def unreachable() -> list[dict[str, Any]]:
        raise FedattestError("coordinator unreachable")

    caplog.clear()
    quiet = AttestedNodeRegistry(factory, unreachable, clock=lambda: 1000.0)
    with caplog.at_level("WARNING", logger="fedattest"):
        for _ in range(5):
            quiet.sync()
    assert caplog.text.count("could not refresh the attested node keys") == 1  # one line, not one per sync


def test_runs_of_unapproved_apps_are_refused_before_flower_sees_them(monkeypatch: pytest.MonkeyPatch) -> None:
    from flwr.proto.control_pb2 import StartRunRequest
    from flwr.supercore.error import ApiErrorCode, FlowerError
    from flwr.superlink.servicer.control import control_handlers

    reached: list[Any] = []
    monkeypatch.setattr(control_handlers, "start_run", lambda request, *a, **k: reached.append(request) or "started")
    undo = gate_run_creation(AppGate([fab_hash(b"approved fab")]))
    try:
        approved = StartRunRequest()
        approved.fab.content = b"approved fab"
        assert control_handlers.start_run(approved, None, None, None) == "started"
        stored = StartRunRequest()
        stored.fab.hash_str = fab_hash(b"approved fab").upper()
        assert control_handlers.start_run(stored, None, None, None) == "started"
        for request in (StartRunRequest(), StartRunRequest()):
            request.fab.content = b"another fab"
            with pytest.raises(FlowerError) as refused:
                control_handlers.start_run(request, None, None, None)
            assert refused.value.code == ApiErrorCode.NO_PERMISSIONS
            assert fab_hash(b"another fab") in str(refused.value.public_details)
        hub = StartRunRequest()  # an app from the Flower Hub: unknown bytes, refused
        with pytest.raises(FlowerError, match="Flower Hub"):
            control_handlers.start_run(hub, None, None, None)
        assert len(reached) == 2
    finally:
        undo()


def test_the_supernode_command_line_is_fixed_where_it_matters(tmp_path: Path) -> None:
    from flwr.common.config import parse_config_args

    paths = SuperNodePaths(tmp_path / 'state "with" double quotes')
    argv = supernode_argv(paths, "aggregator.example.org:9093", tmp_path / "data dir", 9999, ["--max-retries", "3"])
    node_config = argv[argv.index("--node-config") + 1]
    assert parse_config_args([node_config]) == {
        "fedattest-identity-dir": str(paths.identity),
        "data-dir": str(tmp_path / "data dir"),
    }
    assert argv[argv.index("--root-certificates") + 1] == str(paths.identity / "root_ca.pem")
    assert "--insecure" not in argv and argv[1:3] == ["--max-retries", "3"]
    with pytest.raises(ValueError, match="single quote"):
        supernode_argv(SuperNodePaths(tmp_path / "it's"), "x:1", tmp_path, 1, [])
    for flag in ("--insecure", "--root-certificates=x", "--allow-runtime-dependency-installation"):
        with pytest.raises(ValueError, match="not overridable"):
            run_supernode(paths, "x:1", tmp_path, [flag])
    # The user's own node config is kept (apps that read e.g. partition-id keep working), the reserved keys added.
    argv = supernode_argv(paths, "x:1", tmp_path / "d", 1, ["--node-config", "partition-id=1 data-path='/srv/a b'", "-v"])
    assert argv.count("--node-config") == 1 and "-v" in argv
    assert parse_config_args([argv[argv.index("--node-config") + 1]]) == {
        "partition-id": 1, "data-path": "/srv/a b",
        "fedattest-identity-dir": str(paths.identity), "data-dir": str(tmp_path / "d"),
    }  # fmt: skip
    merged = supernode_argv(paths, "x:1", tmp_path / "d", 1, ["--node-config=partition-id=2"])
    assert parse_config_args([merged[merged.index("--node-config") + 1]])["partition-id"] == 2
    for config, needle in (("data-dir='/elsewhere'", "data-dir is set by fedattest"),
                           ("fedattest-identity-dir='/x' a=1", "fedattest-identity-dir is set by fedattest"),
                           ("my.toml", "give key=value pairs")):  # fmt: skip
        with pytest.raises(ValueError, match=needle):
            run_supernode(paths, "x:1", tmp_path, ["--node-config", config])
    with pytest.raises(ValueError, match="needs a value"):
        run_supernode(paths, "x:1", tmp_path, ["--node-config"])
    assert not paths.state.exists()  # refused before anything was written


def test_flowers_child_processes_refuse_to_start_without_the_allow_list(tmp_path: Path) -> None:
    bin_dir = write_gated_bin(tmp_path / "bin")
    env = {k: v for k, v in os.environ.items() if k != "FEDATTEST_IDENTITY_DIR"}
    done = subprocess.run([str(bin_dir / "flwr-clientapp"), "--help"], env=env, capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 2 and "refusing to run Flower without the app allow-list" in done.stderr
    identity = tmp_path / "identity"
    identity.mkdir()
    provisioned = {"federation": "f", "role": "collaborator", "policy_hash": "00" * 32, "data_commitment": None,
                   "dp": {"noise_multiplier": 1.0, "clipping_norm": 1.0, "sampled_clients": 1, "target_delta": 1e-5},
                   "allowed_app_hashes": ["ab" * 32]}  # fmt: skip
    (identity / "provisioned.json").write_text(json.dumps(provisioned))
    done = subprocess.run([str(bin_dir / "flwr-clientapp"), "--help"], env={**env, "FEDATTEST_IDENTITY_DIR": str(identity)},
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0 and "usage: flwr-clientapp" in done.stdout


def test_the_gated_commands_run_flowers_own_entry_points(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import entry_points

    for command, target in FLOWER_ENTRY_POINTS.items():
        installed = list(entry_points(group="console_scripts", name=command))
        assert [e.value for e in installed] == [target], command
    assert run_gated("flwr-model") == 2  # not a gated command: refused, never run ungated
    assert "not one of Flower's commands that fedattest gates" in capsys.readouterr().err


def test_the_demo_refuses_a_foreign_output_directory(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("not the demo's")
    done = subprocess.run([sys.executable, str(DEMO), "--out", str(tmp_path)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip
    assert done.returncode == 2 and "was not made by this demo" in done.stderr
    assert (tmp_path / "precious.txt").exists()


def test_launcher_usage_errors() -> None:
    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "fedattest", "flower", *args], capture_output=True, text=True,
                              timeout=60, check=False)  # fmt: skip

    common = ["--coordinator", "https://127.0.0.1:1", "--root-ca", "/nonexistent.pem", "--member", "m", "--state", "/tmp/x"]
    done = cli("superlink", *common, "--internal", "0.0.0.0:9091")
    assert done.returncode == 2 and "--internal must be a loopback address" in done.stderr
    done = cli("supernode", *common, "--superlink", "x:1", "--data", "/nonexistent-data")
    assert done.returncode == 2 and "not a directory" in done.stderr
    assert cli("--help").returncode == 0


CHILD = """
import pathlib, sys, time
count = pathlib.Path(sys.argv[1])
n = int(count.read_text()) + 1 if count.exists() else 1
count.write_text(str(n))
if n <= 2:
    sys.exit(305)  # Flower: cannot connect to the SuperLink
if n <= 4:
    sys.exit(0)  # Flower stops itself when the SuperLink forgets it (401 on a heartbeat)
pathlib.Path(sys.argv[2]).write_text(str(__import__("os").getpid()))
time.sleep(600)  # connected: runs until told to stop
"""
LAUNCHER = """
import sys
from fedattest.flower.supernode import Reconnect, keep_running
from fedattest.logs import log_to_stderr
log_to_stderr("fedattest", "%(levelname)s fedattest: %(message)s")
child = [sys.executable, "-c", sys.argv[1], sys.argv[2], sys.argv[3]]
sys.exit(keep_running(lambda: child, "superlink.example.org:9093", Reconnect(first=0.01, most=0.02, settled=600)))
"""


def test_the_supernode_launcher_starts_flowers_supernode_again_until_it_is_stopped(tmp_path: Path) -> None:
    """Flower's SuperNode gives up when its SuperLink is away or has forgotten it; the launcher starts it again, one
    line saying why each time, and stops it with itself (SIGTERM passed on, nothing left running)."""
    import signal
    import time

    count, pid_file = tmp_path / "count", tmp_path / "pid"
    launcher = subprocess.Popen([sys.executable, "-c", LAUNCHER, CHILD, str(count), str(pid_file)], stderr=subprocess.PIPE,
                                text=True, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not pid_file.exists() or not pid_file.read_text():
            assert launcher.poll() is None and time.monotonic() < deadline, "the launcher stopped or never got connected"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=60)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
    assert launcher.returncode == 0 and count.read_text() == "5", err
    lines = err.strip().splitlines()
    assert sum("could not connect: the SuperLink is down" in ln for ln in lines) == 2, err
    assert sum("the SuperLink ended this node's session" in ln for ln in lines) == 2, err
    assert all(ln.startswith("WARNING fedattest: Flower's SuperNode stopped") for ln in lines), err
    with pytest.raises(ProcessLookupError):
        os.kill(child, 0)  # the connected SuperNode was stopped with the launcher


def test_the_public_listener_answers_503_until_the_node_keys_are_registered() -> None:
    """A SuperNode reaching a SuperLink that has just started gets 503 (Flower retries it), not 'unknown key'."""
    import threading

    from flwr.proto.fleet_pb2 import PullMessagesRequest

    from fedattest.flower.superlink import STARTING, public_listener_app
    from tests.test_flower_hardening import FLEET, LIMIT, _flower_app, _post

    seen: list[str] = []
    ready = threading.Event()
    app = public_listener_app(_flower_app(seen), LIMIT, ready)
    response = asyncio.run(_post(app, FLEET, PullMessagesRequest().SerializeToString()))
    assert response.status_code == 503 and response.json() == {"error": STARTING, "detail": STARTING} and seen == []
    ready.set()
    response = asyncio.run(_post(app, FLEET, PullMessagesRequest().SerializeToString()))
    assert response.status_code == 401 and seen == [FLEET]  # now Flower answers (its node authentication)
