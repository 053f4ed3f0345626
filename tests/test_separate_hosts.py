"""The federation on separate hosts (docs/deployment.md): coordinator, aggregator and two collaborators each in
a network namespace of its own, with its own 10.x address, on the simulated TEE. One authority (the party that
plays Intel) makes the platforms; each host is given only its own `sim add-host` directory, with no authority
private key in it, and verifies the coordinator itself. The run completes and the audit log records every
round with both collaborators; a host whose platform another authority issued is refused at activation."""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import re
import shutil
import string
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from cryptography import x509

from fedattest.flower.superlink import SuperLinkPaths, dial_address
from fedattest.pki.identity import names_and_addresses
from tests.netns import Host, hosts

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / "examples" / "digits" / "run_demo.py"
FEDATTEST = [sys.executable, "-m", "fedattest"]
HOSPITALS = ["hospital-a", "hospital-b"]
MEMBERS = ["aggregator", *HOSPITALS]
ROUNDS = 2
AUTHORITY_KEYS = ("root_ca.key", "pck_ca.key", "tcb_signing.key")
# Fixed ports: each host has a network stack of its own, so nothing else listens there.
COORDINATOR_PORT, FLEET_PORT, CONTROL_PORT = 8443, 9093, 9091


def _demo() -> ModuleType:
    """The example's federation driver (examples/digits/run_demo.py): its processes, app build and policy template."""
    name = "fedattest_digits_run_demo"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEMO)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # its dataclasses look their module up while they are defined
    spec.loader.exec_module(module)
    return module


def _run(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=False)


def _ok(argv: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = _run(argv, env, timeout)
    assert done.returncode == 0, f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
    return done


def _wait(what: str, predicate: Callable[[], Any], procs: Any, name: str, timeout: float = 120) -> Any:
    """Poll until ``predicate`` holds; fail at once if the process ``name`` has exited (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        if procs.procs[name].poll() is not None:
            raise AssertionError(f"{name} exited while waiting for {what}:\n{procs.log(name)[-3000:]}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}; {name}'s log:\n{procs.log(name)[-3000:]}")


def _policy(demo: ModuleType, out: Path, roots: dict[str, str], app_hash: str, *, keys: Path, aggregator: str) -> Path:
    """The example's policy for two collaborators: hospital-c's entry removed, the DP's sampled clients 2, and the
    aggregator's certificate naming the address SuperNodes connect to (and localhost, for `flwr run` on its host)."""
    from fedattest.cli.coordinator import DEFAULT_SIM_MRENCLAVE
    from fedattest.cli.flower import SIM_SUPERLINK_MRENCLAVE, SIM_SUPERNODE_MRENCLAVE

    template = (demo.HERE / "policy.template.toml").read_text()
    template = re.sub(r'\[\[members\]\]\nname = "hospital-c".*?max_activations = 5\n\n', "", template, flags=re.DOTALL)
    assert "hospital-c" not in template
    template = template.replace("sampled_clients = 3", "sampled_clients = 2")
    template = template.replace('dns_names = ["localhost"]', f'dns_names = ["localhost", "{aggregator}"]')
    text = string.Template(template).substitute(
        coordinator_mrenclave=DEFAULT_SIM_MRENCLAVE, aggregator_mrenclave=SIM_SUPERLINK_MRENCLAVE,
        collaborator_mrenclave=SIM_SUPERNODE_MRENCLAVE, rounds=ROUNDS, app_hash=app_hash,
        alice_public_key=(out / "alice.pub.pem").read_text().strip(),
        **{f"commitment_{h.replace('-', '_')}": roots[h] for h in HOSPITALS},
        **{f"enrolment_key_{m.replace('-', '_')}": (keys / f"{m}.pub.pem").read_text().strip() for m in MEMBERS},
    )  # fmt: skip
    policy = out / "policy.toml"
    policy.write_text(text)
    return policy


def _authority_keys_in(directory: Path, authority: Path) -> list[str]:
    """Files under ``directory`` that are, or contain, one of the authority's private keys."""
    secrets = [(authority / k).read_bytes() for k in AUTHORITY_KEYS]
    files = [p for p in directory.rglob("*") if p.is_file()]
    return [str(p) for p in files if p.name in AUTHORITY_KEYS or any(s in p.read_bytes() for s in secrets)]


def test_names_that_are_addresses_go_into_ip_address_sans() -> None:
    assert names_and_addresses(["aggregator.example.org", "10.77.0.2", "localhost", "[fd00::2]"]) == (
        ["aggregator.example.org", "localhost"],
        ["10.77.0.2", "fd00::2"],
    )


def test_the_superlink_announces_the_fleet_address_clients_dial() -> None:
    assert dial_address("10.77.0.2", 9093) == "10.77.0.2:9093"
    assert dial_address("aggregator.example.org", 9093) == "aggregator.example.org:9093"
    assert dial_address("fd00::2", 9093) == "[fd00::2]:9093"
    for here in ("127.0.0.1", "::1", "0.0.0.0", "::"):  # this machine: the name its certificate carries
        assert dial_address(here, 9093) == "localhost:9093"


@pytest.mark.slow  # a whole federation: four hosts, real Flower processes, two rounds
def test_a_federation_on_separate_hosts(tmp_path: Path) -> None:
    pytest.importorskip("sklearn", reason="the example's data comes from scikit-learn (pip install -e .[dev])")
    demo = _demo()
    out = tmp_path
    with hosts(["coordinator", "aggregator", *HOSPITALS]) as net, demo.federation(out) as fed:
        env, procs = fed["env"], fed["procs"]
        _federate(demo, out, net, env, procs)


def _give(host_dir: Path, *files: Path) -> None:
    for f in files:
        shutil.copyfile(f, host_dir / f.name)


def _federate(demo: ModuleType, out: Path, net: dict[str, Host], env: dict[str, str], procs: Any) -> None:
    # -- the authority (whoever plays Intel): its directory stays here, and each host gets its own platform.
    authority = out / "authority"
    _ok([*FEDATTEST, "sim", "init", str(authority)], env)
    home = {name: out / "hosts" / name for name in net}
    for directory in home.values():
        directory.mkdir(parents=True)
        _ok([*FEDATTEST, "sim", "add-host", "--authority", str(authority), str(directory / "platform")], env)

    # -- the data owners commit; the app is built; approver and members make their keys; the policy is approved.
    _ok([sys.executable, str(demo.HERE / "prepare_data.py"), str(out / "data"), "--hospitals", "2", "--holdout",
         str(out / "holdout.json")], env)  # fmt: skip
    roots = {}
    for h in HOSPITALS:
        shutil.copytree(out / "data" / h, home[h] / "data")
        roots[h] = json.loads(_ok([*FEDATTEST, "data", "commit", str(home[h] / "data"), "--json"], env).stdout)["root"]
    app_dir, app_hash = demo.build_fab(demo.HERE, out / "holdout.json", out / "app", env)
    _ok([*FEDATTEST, "policy", "keygen", "alice", "--dir", str(out)], env)
    for m in MEMBERS:
        _ok([*FEDATTEST, "policy", "keygen", m, "--dir", str(home[m])], env)  # each member makes and keeps its key
    keys = out / "public-keys"
    keys.mkdir()
    for m in MEMBERS:
        _give(keys, home[m] / f"{m}.pub.pem")
    policy = _policy(demo, out, roots, app_hash, keys=keys, aggregator=net["aggregator"].address)
    approval = out / "alice.approval.json"
    _ok([*FEDATTEST, "policy", "approve", str(policy), "--name", "alice", "--key", str(out / "alice.key"), "-o", str(approval)],
        env)  # fmt: skip
    for directory in home.values():
        _give(directory, policy)  # the policy is public: every host has the approved text
    _give(home["coordinator"], approval)
    for name, directory in home.items():
        assert not _authority_keys_in(directory, authority), name

    # -- the coordinator, on its host; it listens on every interface and names its address in its certificate.
    coord = net["coordinator"]
    coord_state = home["coordinator"] / "state"
    procs.start("coordinator", coord.exec(
        *FEDATTEST, "coordinator", "serve", "--state", str(coord_state), "--platform", str(home["coordinator"] / "platform"),
        "--policy", str(home["coordinator"] / "policy.toml"), "--approval", str(home["coordinator"] / approval.name),
        "--listen", f"0.0.0.0:{COORDINATOR_PORT}", "--dns-name", coord.address,
    ))  # fmt: skip
    _wait("the coordinator", (coord_state / "url").exists, procs, "coordinator")
    # On its own host it is reached over loopback (no client dials 0.0.0.0); other hosts use its address.
    assert (coord_state / "url").read_text().strip() == f"https://127.0.0.1:{COORDINATOR_PORT}"
    url = f"https://{coord.address}:{COORDINATOR_PORT}"

    # -- every member verifies the coordinator from its own host, with its own platform's public root and collateral.
    for m in MEMBERS:
        done = _ok(net[m].exec(*FEDATTEST, "coordinator", "verify", url, "--policy", str(home[m] / "policy.toml"),
                               "--platform", str(home[m] / "platform"), "-o", str(home[m] / "root.pem")), env)  # fmt: skip
        assert "VERIFIED" in done.stdout and "SIMULATED" in done.stdout, done.stdout

    # -- a platform another authority issued: its quote does not chain to our root, and activation says so.
    other = out / "other-authority"
    _ok([*FEDATTEST, "sim", "init", str(other)], env)
    foreign = home["hospital-a"] / "foreign-platform"
    _ok([*FEDATTEST, "sim", "add-host", "--authority", str(other), str(foreign)], env)
    from fedattest.cli.flower import SIM_SUPERNODE_MRENCLAVE

    refused = _run(net["hospital-a"].exec(
        *FEDATTEST, "participant", "activate", "--coordinator", url, "--root-ca", str(home["hospital-a"] / "root.pem"),
        "--member", "hospital-a", "--enrolment-key", str(home["hospital-a"] / "hospital-a.key"), "--platform", str(foreign),
        "--mrenclave", SIM_SUPERNODE_MRENCLAVE, "--out", str(home["hospital-a"] / "foreign-identity"),
    ), env)  # fmt: skip
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert "does not end at the trust root" in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    # ... and a host of the other authority cannot verify our coordinator either.
    mistrust = _run(net["hospital-a"].exec(*FEDATTEST, "coordinator", "verify", url, "--policy", str(policy), "--platform",
                                           str(foreign), "-o", str(out / "never.pem")), env)  # fmt: skip
    assert mistrust.returncode == 1 and "does not end at the trust root" in mistrust.stderr, mistrust.stderr

    # -- the aggregator: Fleet API on its address, Control and Runtime on its loopback.
    agg = net["aggregator"]
    sl_state = home["aggregator"] / "state"
    common = ["--coordinator", url]
    procs.start("superlink", agg.exec(
        *FEDATTEST, "flower", "superlink", *common, "--root-ca", str(home["aggregator"] / "root.pem"), "--member",
        "aggregator", "--enrolment-key", str(home["aggregator"] / "aggregator.key"), "--platform",
        str(home["aggregator"] / "platform"), "--state", str(sl_state), "--listen", f"{agg.address}:{FLEET_PORT}",
        "--internal", f"127.0.0.1:{CONTROL_PORT}", "--refresh", "0.5",
    ))  # fmt: skip
    _wait("the SuperLink", (sl_state / "superlink.json").exists, procs, "superlink")
    fleet = json.loads((sl_state / "superlink.json").read_text())["fleet"]
    assert fleet == f"{agg.address}:{FLEET_PORT}"  # the address it tells others to dial is the one it listens on
    # Its certificate names the address SuperNodes dial as an IP address SAN (the policy's dns_names), which is
    # what their TLS checks an address against.
    leaf = x509.load_pem_x509_certificates((SuperLinkPaths(sl_state).identity / "chain.pem").read_bytes())[0]
    sans = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address(agg.address)]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]
    for h in HOSPITALS:
        procs.start(h, net[h].exec(
            *FEDATTEST, "flower", "supernode", *common, "--root-ca", str(home[h] / "root.pem"), "--member", h,
            "--enrolment-key", str(home[h] / f"{h}.key"), "--platform", str(home[h] / "platform"),
            "--superlink", fleet, "--data", str(home[h] / "data"), "--state", str(home[h] / "state"),
        ))  # fmt: skip
    for h in HOSPITALS:
        _wait(f"{h} to activate", lambda h=h: "ACTIVATED" in procs.log(h), procs, h)
    for h in HOSPITALS:
        _wait(f"the SuperLink to register {h}", lambda h=h: f"registered the attested node key of {h}" in procs.log("superlink"),
              procs, "superlink")  # fmt: skip

    # -- the run, submitted on the aggregator's host: Control listens on its loopback only, by design.
    demo.flwr_config(out / "flwr-cli", f"localhost:{CONTROL_PORT}", home["aggregator"] / "root.pem")
    done = _run(agg.exec(str(demo.BIN / "flwr"), "run", str(app_dir), "attested", "--stream"), env, timeout=600)
    log = done.stdout + done.stderr
    (out / "logs" / "flwr-run.log").write_text(log)
    assert done.returncode == 0, log[-4000:]
    for rnd in range(1, ROUNDS + 1):
        assert f"round {rnd}: 2 attested updates (hospital-a, hospital-b)" in log, log[-4000:]

    # -- the audit log, fetched from the aggregator's host and checked offline by an auditor with public files only.
    bundle = out / "audit-bundle.tar"
    _ok(agg.exec(*FEDATTEST, "audit", "export", "--coordinator", url, "--root-ca", str(home["aggregator"] / "root.pem"),
                 "-o", str(bundle)), env)  # fmt: skip
    auditor = out / "auditor"  # given only public files: a platform's description and root, the audit key
    auditor.mkdir()
    _give(auditor, home["aggregator"] / "platform" / "platform.json", home["aggregator"] / "platform" / "root_ca.pem",
          coord_state / "audit-key.pub.pem")  # fmt: skip
    verdict = _ok([*FEDATTEST, "audit", "verify", str(bundle), "--platform", str(auditor), "--key",
                   str(auditor / "audit-key.pub.pem"), "--json"], env)  # fmt: skip
    doc = json.loads(verdict.stdout)
    assert doc["ok"], doc
    assert sorted(a["member"] for a in doc["activations"]) == sorted(MEMBERS)
    assert [r["round"] for r in doc["rounds"]] == list(range(1, ROUNDS + 1))
    assert all(r["participants"] == HOSPITALS for r in doc["rounds"]), doc["rounds"]
    for name, directory in home.items():  # nothing the federation wrote put an authority key on a host
        assert not _authority_keys_in(directory, authority), name
