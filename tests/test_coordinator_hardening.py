"""Attacks on a running coordinator (from a pen-test), each reproduced against the real process over HTTPS:
bodies that never end, JSON bombs, nonce floods, replayed round reports, slow headers. Each test fails
without its defence; none asserts wall-clock speed (timeouts only stop a hang)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import resource
import select
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from fedattest.coordinator.core import Coordinator, open_coordinator
from fedattest.dcap.verify import QuoteVerifier
from fedattest.participant import activate
from fedattest.policy.approval import approve
from fedattest.policy.federation import parse_policy
from fedattest.tee import SimulatedPlatform, WorkloadIdentity
from tests.coordinator_harness import AGG, COORD, ENROL, KEY, SIGNER, Running, coordinator, policy_text, start, stop, tee


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    tmp = tmp_path_factory.mktemp("hardening")
    with coordinator(tmp, SimulatedPlatform.create(tmp / "platform")) as running:
        yield running


def tls_connect(running: Running, timeout: float = 10.0) -> ssl.SSLSocket:
    """A raw TLS connection to the coordinator, verified against its root (no HTTP client in the way)."""
    url = urlsplit(running.url)
    assert url.hostname is not None and url.port is not None
    raw = socket.create_connection((url.hostname, url.port), timeout=timeout)
    context = ssl.create_default_context(cadata=running.root_pem)
    return context.wrap_socket(raw, server_hostname=url.hostname)


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    response = http.client.HTTPResponse(sock)  # type: ignore[arg-type]
    response.begin()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()


def send_until_answered(sock: ssl.SSLSocket, frames: Iterator[bytes]) -> bytes | None:
    """Send ``frames`` until the server answers; returns the start of its answer (None: all sent unanswered).
    Readable is not enough (TLS 1.3 session tickets arrive after the handshake): only application data is."""
    for frame in frames:
        try:
            sock.sendall(frame)
        except OSError:
            pass  # closed by the server: its answer is waiting
        else:
            if not select.select([sock], [], [], 0)[0]:
                continue
        sock.setblocking(False)
        try:
            return sock.recv(65536)
        except ssl.SSLWantReadError:
            continue
        finally:
            sock.setblocking(True)
    return None


def parse_response(data: bytes, sock: ssl.SSLSocket) -> tuple[int, dict[str, str], bytes]:
    """The whole response that begins with ``data`` (read until the server closes the connection)."""
    while True:
        try:
            more = sock.recv(65536)
        except OSError:
            break
        if not more:
            break
        data += more
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers, body[: int(headers.get("content-length", len(body)))]


# -- 1. body limits -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("framing", ["chunked", "content-length-lies"])
def test_a_body_over_the_limit_is_refused_while_it_arrives(server: Running, framing: str) -> None:
    """200 MB chunked used to be read whole (memory 78 -> 693 MB). Now 413 once 256 KiB are in, and the
    connection is closed instead of read to the end."""
    sock = tls_connect(server)
    head = b"POST /api/v1/activate HTTP/1.1\r\nHost: coordinator\r\nContent-Type: application/json\r\n"
    head += b"Transfer-Encoding: chunked\r\n\r\n" if framing == "chunked" else b"Content-Length: 1000\r\n\r\n"
    sock.sendall(head)
    piece = b" " * 65536
    frame = b"%x\r\n%s\r\n" % (len(piece), piece) if framing == "chunked" else piece
    answer = send_until_answered(sock, iter([frame] * 400))  # 25 MiB if nobody stops us
    assert answer is not None, "the server read 25 MiB without answering"
    status, headers, body = parse_response(answer, sock)
    sock.close()
    if framing == "chunked":
        assert status == 413 and headers.get("connection") == "close", (status, body)
        assert "larger than 262144 bytes" in json.loads(body)["error"]
    else:  # h11 reads exactly the declared 1,000 bytes: the rest is not this request's body
        assert 400 <= status < 500 and "error" in json.loads(body), (status, body)


def test_json_bombs_and_bad_encodings_get_a_4xx_json_error(server: Running) -> None:
    with server.http() as http:
        url = f"{server.url}/api/v1/policy"
        deep = http.post(url, content=b"[" * 100_000 + b"]" * 100_000, headers={"content-type": "application/json"})
        assert deep.status_code == 400 and "nested deeper than 16 levels" in deep.json()["error"], deep.text
        wide = b"{" + b",".join(b'"%d":0' % i for i in range(25_000)) + b"}"
        assert len(wide) < 256 * 1024
        many = http.post(url, content=wide, headers={"content-type": "application/json"})
        assert many.status_code == 400 and "more than 20000 keys and items" in many.json()["error"], many.text
        latin = http.post(url, content=b'{"policy": "\xff", "approvals": []}', headers={"content-type": "application/json"})
        assert latin.status_code == 400 and "not valid UTF-8" in latin.json()["error"], latin.text
        nowhere = http.get(f"{server.url}/api/v1/nothing-here")
        assert nowhere.status_code == 404 and nowhere.json() == {"error": "Not Found"}
        # Escaped quotes that never end a string: the scan stays one pass (a regular expression that retried
        # from every quote took minutes on this); the client's 30 s timeout only stops a hang.
        quotes = http.post(url, content=b'"\\' * 87_000, headers={"content-type": "application/json"})
        assert 400 <= quotes.status_code < 500 and "error" in quotes.json(), quotes.text
        # Brackets inside strings are text, not nesting: a legitimate body still parses.
        fine = http.post(url, json={"policy": "[" * 1000, "approvals": []})
        assert fine.status_code == 400 and "request body refused" not in fine.json()["error"], fine.text
        assert http.get(f"{server.url}/api/v1/status").status_code == 200


# -- 2. nonces --------------------------------------------------------------------------------------------------


def test_a_nonce_flood_does_not_deny_a_legitimate_activation(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform, "--nonce-rate", "5", "--nonce-burst", "100") as running:
        refused: list[str] = []
        with running.http() as http:
            for _ in range(400):  # unauthenticated, as fast as one connection goes
                response = http.post(f"{running.url}/api/v1/nonce")
                if response.status_code == 429:
                    refused.append(response.headers["retry-after"])
                    assert "too many nonce requests" in response.json()["error"]
                else:
                    assert response.status_code == 200, response.text
        assert refused and all(int(r) >= 1 for r in refused)
        time.sleep(int(refused[-1]))  # what Retry-After asks; the flood itself left nothing behind
        result = activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "id", enrolment_key=ENROL["aggregator"]
        )
        assert result.provisioned["role"] == "aggregator"


@pytest.fixture
def local(tmp_path: Path) -> Iterator[Coordinator]:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    now = [1_800_000_000.0]
    made = open_coordinator(
        state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), policy_text=policy_text(),
        approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()], clock=lambda: now[0],
    )  # fmt: skip
    made.now = now  # type: ignore[attr-defined]
    try:
        yield made
    finally:
        made.close()


def test_issued_nonces_take_no_memory_and_keep_their_properties(local: Coordinator) -> None:
    from fedattest.coordinator.activation import ActivationError

    issued = [local.new_nonce() for _ in range(20_000)]
    assert len(set(issued)) == len(issued) and not local._redeemed  # nothing stored per issue
    local._use_nonce(issued[0])
    with pytest.raises(ActivationError, match=r"used already \(replay\)") as replay:
        local._use_nonce(issued[0])
    assert replay.value.status == 409
    forged = issued[1][:-2] + ("00" if issued[1][-2:] != "00" else "01")
    with pytest.raises(ActivationError, match="unknown nonce"):
        local._use_nonce(forged)
    with pytest.raises(ActivationError, match="unknown nonce"):
        local._use_nonce("11" * 32)
    local.now[0] += 301  # type: ignore[attr-defined]
    with pytest.raises(ActivationError, match="expired"):
        local._use_nonce(issued[2])
    assert len(local._redeemed) == 1  # only the redeemed one


# -- 3. round reports ------------------------------------------------------------------------------------------


def test_a_replayed_round_report_is_refused_by_the_store(tmp_path: Path) -> None:
    from fedattest.coordinator.audit import import_log
    from fedattest.flower.rounds import signed_round_report
    from fedattest.pki.signing import UpdateSigner

    platform = SimulatedPlatform.create(tmp_path / "platform")
    agg = tmp_path / "agg"
    with coordinator(tmp_path, platform) as running:
        activate(running.url, running.root_pem, "aggregator", tee(running, AGG), agg, enrolment_key=ENROL["aggregator"])
        signer = UpdateSigner((agg / "key.pem").read_bytes(), (agg / "chain.pem").read_bytes())
        body = signed_round_report(signer, 7, 1, ["hospital-a"], "cd" * 32)
        with running.http() as http:
            assert http.post(f"{running.url}/api/v1/rounds", json=body).status_code == 200
            for _ in range(5):
                again = http.post(f"{running.url}/api/v1/rounds", json=body)
                assert again.status_code == 409 and "round 1 of run 7 is already recorded" in again.json()["error"]
            next_round = http.post(f"{running.url}/api/v1/rounds", json=signed_round_report(signer, 7, 2, [], "cd" * 32))
            assert next_round.status_code == 200, next_round.text
    with coordinator(tmp_path, platform) as restarted, restarted.http() as http:  # the store remembers, not the process
        again = http.post(f"{restarted.url}/api/v1/rounds", json=body)
        assert again.status_code == 409, again.text
        entries, _, _ = import_log(http.get(f"{restarted.url}/api/v1/audit").content)
    assert [(e.data["run_id"], e.data["round"]) for e in entries if e.kind == "round"] == [("7", 1), ("7", 2)]


# -- 4. slow headers ---------------------------------------------------------------------------------------------


def _slow_client(running: Running, opened: list[ssl.SSLSocket], closed: list[bool], stop_at: float) -> None:
    """Slowloris: open a connection, start a request, and send one more header line now and then, forever."""
    try:
        sock = tls_connect(running, timeout=5)
        sock.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: coordinator\r\n")
    except OSError:
        closed.append(True)  # refused at once: as good as closed
        return
    opened.append(sock)
    sock.settimeout(0.2)
    while time.monotonic() < stop_at:
        try:
            if sock.recv(1) == b"":
                break
        except TimeoutError:
            pass
        except (OSError, ssl.SSLError):
            break
        try:
            sock.sendall(b"X-Slow: 1\r\n")
        except OSError:
            break
    else:
        return  # never closed by the server
    closed.append(True)


def test_slow_headers_do_not_starve_legitimate_requests(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    running = start(tmp_path, platform, "--header-timeout", "1", "--max-connections", "16")
    try:
        # Few file descriptors, as under `ulimit -n 1024` with 1,005 attackers, scaled down.
        resource.prlimit(running.process.pid, resource.RLIMIT_NOFILE, (64, 64))
        opened: list[ssl.SSLSocket] = []
        closed: list[bool] = []
        stop_at = time.monotonic() + 20  # the attackers give up after this; only stops a hang
        attackers = [threading.Thread(target=_slow_client, args=(running, opened, closed, stop_at)) for _ in range(70)]
        for thread in attackers:
            thread.start()
            time.sleep(0.005)
        served: dict[str, Any] = {}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not served:
            try:
                with httpx.Client(verify=ssl.create_default_context(cadata=running.root_pem), timeout=2) as http:
                    served = http.get(f"{running.url}/api/v1/status").json()
            except httpx.HTTPError:  # refused, reset or timed out while the slots are taken: try again
                time.sleep(0.2)
        for thread in attackers:
            thread.join(timeout=30)
        for sock in opened:
            sock.close()
        assert served.get("federation") == "hospitals", "a legitimate request was never served"
        assert len(closed) == len(attackers), f"{len(attackers) - len(closed)} slow connections were never closed"
    finally:
        stop(running)


# -- 5. a damaged store ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["not-a-database", "pages-overwritten"])
def test_a_corrupt_store_refuses_to_start_with_one_line(tmp_path: Path, damage: str) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "id", enrolment_key=ENROL["aggregator"]
        )
    store = tmp_path / "state" / "store.sqlite"
    with contextlib.closing(sqlite3.connect(store)) as db:  # everything into the main file, then damage it
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(store.read_bytes())
    assert len(data) > 8192
    if damage == "not-a-database":
        data[:100] = b"\x5a" * 100
    else:  # the header survives; the pages after the first do not
        data[4096:] = bytes((i * 37 + 11) % 256 for i in range(len(data) - 4096))
    store.write_bytes(bytes(data))
    args = [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp_path / "state"),
            "--platform", str(platform.directory), "--policy", str(running.policy_path),
            "--approval", str(tmp_path / "alice.json"), "--listen", "127.0.0.1:0"]  # fmt: skip
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and f"the store {store} is corrupt" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr and "bug" not in proc.stderr


def test_sigterm_removes_the_tls_key_and_url_before_the_process_ends(tmp_path: Path) -> None:
    """uvicorn re-raises SIGTERM as soon as it has shut down, which used to end the process before the
    coordinator removed its TLS private key file and ``url`` from the state directory."""
    import signal as signals

    running = start(tmp_path, SimulatedPlatform.create(tmp_path / "platform"))
    try:
        assert (running.state / "url").exists() and list(running.state.glob("tls-*.key"))
    finally:
        stop(running)
    assert running.process.returncode == -signals.SIGTERM  # still ends as the signal asks
    assert not (running.state / "url").exists()
    assert not list(running.state.glob("tls-*.key")) and not list(running.state.glob("tls-*.pem"))


def test_sigterm_ends_the_coordinator_while_a_client_keeps_an_idle_connection(tmp_path: Path) -> None:
    """The SuperLink and the ServerApp keep one TLS connection to the coordinator open between requests. At
    SIGTERM asyncio waited up to 30 s on each for a close_notify the idle client never sends, so each restart
    took 30 s more. The wait is now bounded (1 s); the timeout below only detects that hang."""
    from fedattest.participant.client import revocation_fetcher

    platform = SimulatedPlatform.create(tmp_path / "platform")
    running = start(tmp_path, platform)
    try:
        revocation_fetcher(running.url, running.root_pem)()  # its connection stays open, idle
        os.killpg(running.process.pid, signal.SIGTERM)
        try:
            running.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the coordinator did not end within 15 s of SIGTERM while a client kept a connection")
    finally:
        stop(running)


# -- a body that never finishes; one address taking every connection ---------------------------------------------


def test_a_body_that_stops_arriving_gets_408_and_the_connection_closed(tmp_path: Path) -> None:
    """The headers arrive in time, then the body stalls (slow-body drip): 408 after --body-timeout, the
    connection closed, and nothing reaches the application."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform, "--body-timeout", "1") as running:
        sock = tls_connect(running, timeout=30)  # the socket timeout only stops a hang
        sock.sendall(b"POST /api/v1/activate HTTP/1.1\r\nHost: coordinator\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 1000\r\n\r\n" + b'{"member": "aggregator", ')  # fmt: skip
        status, _headers, body = read_response(sock)
        assert status == 408 and json.loads(body)["error"] == "request body not received within 1 seconds"
        assert sock.recv(1) == b""  # closed
        sock.close()
        with running.http() as http:
            assert http.get(f"{running.url}/api/v1/metrics").text.count("fedattest_activations_refused_total 0") == 1


def _held(running: Running, source: str) -> ssl.SSLSocket | None:
    """A TLS connection from ``source`` that the server keeps open (None: closed at once)."""
    url = urlsplit(running.url)
    assert url.hostname is not None and url.port is not None
    raw = socket.create_connection((url.hostname, url.port), timeout=10, source_address=(source, 0))
    sock = ssl.create_default_context(cadata=running.root_pem).wrap_socket(raw, server_hostname=url.hostname)
    sock.settimeout(0.5)
    try:
        if sock.recv(1) == b"":
            sock.close()
            return None
    except TimeoutError:
        return sock  # still open: held
    except (OSError, ssl.SSLError):
        sock.close()
        return None
    return sock


def test_one_address_cannot_take_every_connection(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform, "--max-connections", "20", "--max-connections-per-client", "4",
                     "--header-timeout", "30") as running:  # fmt: skip
        held = [_held(running, "127.0.0.1") for _ in range(6)]
        try:
            assert [s is not None for s in held] == [True] * 4 + [False] * 2  # the fifth and sixth closed at once
            # Another address still gets in (the global cap is far), and is served.
            other = _held(running, "127.0.0.2")
            assert other is not None
            other.settimeout(10)
            other.sendall(b"GET /api/v1/status HTTP/1.1\r\nHost: coordinator\r\n\r\n")
            status, _headers, body = read_response(other)
            assert status == 200 and json.loads(body)["federation"] == "hospitals"
            other.close()
        finally:
            for sock in held:
                if sock is not None:
                    sock.close()


# -- a full disk -------------------------------------------------------------------------------------------------


# Runs argv[2:] with files unable to grow past argv[1] bytes, as on a full disk (writes fail with EFBIG; Python
# ignores SIGXFSZ). A launcher rather than preexec_fn, which is unsafe in a process with threads.
WITH_FILE_SIZE_LIMIT = (
    "import os, resource, sys; limit = int(sys.argv[1]); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); os.execv(sys.argv[2], sys.argv[2:])"
)


@pytest.mark.parametrize("kib", [4, 64, 100])
def test_a_full_disk_at_start_is_one_line_never_a_bug(tmp_path: Path, kib: int) -> None:
    """Before: 'internal error: OperationalError: disk I/O error (this is a bug in fedattest ...)', exit 3, when
    the disk filled while the first policy was stored. Each limit stops the start at a different write."""
    platform = SimulatedPlatform.create(tmp_path / "platform")
    (tmp_path / "policy.toml").write_text(policy_text())
    (tmp_path / "alice.json").write_text(approve(parse_policy(policy_text()), "alice", KEY).to_json())
    args = [sys.executable, "-m", "fedattest", "coordinator", "serve", "--state", str(tmp_path / "state"),
            "--platform", str(platform.directory), "--policy", str(tmp_path / "policy.toml"),
            "--approval", str(tmp_path / "alice.json"), "--listen", "127.0.0.1:0"]  # fmt: skip
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        limited = [sys.executable, "-c", WITH_FILE_SIZE_LIMIT, str(kib << 10), *args]
        proc = subprocess.Popen(limited, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120  # only stops a hang
        while proc.poll() is None and not (tmp_path / "state" / "url").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is not None, f"it started (or hung) on {kib} KiB: {log.read_text()}"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    output = log.read_text()
    assert proc.returncode == 1, (proc.returncode, output)
    assert output.count("\n") == 1 and "free space on its disk" in output, output
    assert "bug" not in output and "Traceback" not in output


def test_a_full_disk_while_running_is_a_503_and_nothing_changes(tmp_path: Path) -> None:
    platform = SimulatedPlatform.create(tmp_path / "platform")
    with coordinator(tmp_path, platform) as running:
        activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "a", enrolment_key=ENROL["aggregator"]
        )
        _soft, hard = resource.prlimit(running.process.pid, resource.RLIMIT_FSIZE)
        resource.prlimit(running.process.pid, resource.RLIMIT_FSIZE, (1, hard))  # no file of it may grow now
        try:
            refused = []
            for i in range(20):  # until a write needs to grow a file (SQLite reuses free pages first)
                with pytest.raises(Exception) as caught:
                    activate(running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / f"b{i}",
                             enrolment_key=ENROL["aggregator"])  # fmt: skip
                refused.append(str(caught.value))
                if "HTTP 503" in refused[-1]:
                    break
        finally:
            resource.prlimit(running.process.pid, resource.RLIMIT_FSIZE, (hard, hard))
        assert "HTTP 503" in refused[-1] and "free space on its disk; nothing was changed" in refused[-1], refused
        with running.http() as http:
            assert http.get(f"{running.url}/api/v1/status").status_code == 200
            before = sum(m["activations"] for m in http.get(f"{running.url}/api/v1/members").json())
        # Space again: the coordinator goes on without a restart, and the refused activations left nothing.
        activate(
            running.url, running.root_pem, "aggregator", tee(running, AGG), tmp_path / "c", enrolment_key=ENROL["aggregator"]
        )
        with running.http() as http:
            assert sum(m["activations"] for m in http.get(f"{running.url}/api/v1/members").json()) == before + 1


def test_metrics_count_every_request_under_concurrency(local: Coordinator) -> None:
    """The API counts from several worker threads at once: no increment may be lost (`d[k] += 1` is a read,
    an add and a store, and a thread switch between them loses one)."""
    from fedattest.coordinator.activation import ActivationError

    def refuse(times: int) -> None:
        for _ in range(times):
            with contextlib.suppress(ActivationError):
                local.activate("nobody", None, "", {})

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, to give a lost update every chance
    try:
        threads = [threading.Thread(target=refuse, args=(2000,)) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert local.metrics["activations_refused"] == 16_000
    assert "fedattest_activations_refused_total 16000" in local.metrics_text()


def test_the_coordinator_has_one_clock(tmp_path: Path) -> None:
    """Quotes are verified, certificates issued and tokens stamped at the injected clock's time (the quote was
    verified at the machine's time before, whatever the clock said)."""
    import base64

    import jwt
    from cryptography import x509

    from fedattest.coordinator.activation import ActivationError
    from fedattest.pki import identity as ident

    platform = SimulatedPlatform.create(tmp_path / "platform")
    now = [time.time()]
    made = open_coordinator(
        state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), policy_text=policy_text(),
        approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()], clock=lambda: now[0],
    )  # fmt: skip

    def request() -> dict[str, Any]:
        key = ident.new_key()
        claims = {"member": "aggregator", "nonce": made.new_nonce(), "policy_hash": made.policy.policy_hash().hex(),
                  "keys": {"tls": ident.spki_sha256(key.public_key())}}  # fmt: skip
        quote = platform.tee(WorkloadIdentity(AGG, SIGNER)).quote(ident.claims_report_data(claims))
        return {"member_name": "aggregator", "quote_b64": base64.b64encode(quote).decode(),
                "csr_pem": ident.make_csr(key, "aggregator"), "claims": claims,
                "enrolment": ident.sign_enrolment(ENROL["aggregator"], claims)}  # fmt: skip

    try:
        now[0] += 3600  # an hour from now: the certificate and the token say so
        issued = made.activate(**request())
        cert = x509.load_pem_x509_certificates(issued["certificate_chain"].encode())[0]
        assert abs(cert.not_valid_before_utc.timestamp() - (now[0] - 300)) < 2
        assert jwt.decode(issued["token"], options={"verify_signature": False})["iat"] == int(now[0])
        now[0] += 400 * 86400  # far beyond the collateral's validity: the quote is verified at this time
        with pytest.raises(ActivationError, match="quote rejected"):
            made.activate(**request())
    finally:
        made.close()


def test_the_coordinator_is_handed_its_store(tmp_path: Path) -> None:
    """The shell is given its store (through an opener called after the sealed head's checks): what a
    replicated store will plug into. The default is SQLite in the state directory."""
    from fedattest.coordinator.store import SqliteStore

    opened: list[SqliteStore] = []

    def open_store(path: Path) -> SqliteStore:
        opened.append(SqliteStore(path))
        return opened[-1]

    platform = SimulatedPlatform.create(tmp_path / "platform")
    made = open_coordinator(
        state_dir=tmp_path / "state", tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), policy_text=policy_text(),
        approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()], open_store=open_store,
    )  # fmt: skip
    try:
        assert len(opened) == 1 and made.store is opened[0] and opened[0].path == tmp_path / "state" / "store.sqlite"
        assert [e.kind for e in opened[0].audit_entries()] == ["policy"]  # the first policy went into it
    finally:
        made.close()


def test_the_core_runs_on_what_it_is_handed(tmp_path: Path) -> None:
    """The coordinator core does no file I/O of its own: handed a store, a way to unseal its state, a TEE and a
    clock, it writes nothing but through the store, and decides on the clock it was given."""
    from fedattest.coordinator.state_dir import SealedState
    from fedattest.coordinator.store import SqliteStore

    platform = SimulatedPlatform.create(tmp_path / "platform")
    work = tmp_path / "work"
    work.mkdir()
    unsealed: list[str] = []

    def unseal(federation: str) -> SealedState:
        unsealed.append(federation)
        return SealedState.create(federation, datetime.fromtimestamp(1_800_000_000, UTC))

    core = Coordinator(
        tee=platform.tee(WorkloadIdentity(COORD, SIGNER)), verifier=QuoteVerifier(platform.root_ca),
        collateral_for=lambda _q: platform.collateral(), store=SqliteStore(work / "only.sqlite"), unseal_state=unseal,
        policy_text=policy_text(), approvals=[approve(parse_policy(policy_text()), "alice", KEY).to_json()],
        clock=lambda: 1_800_000_000.0,
    )  # fmt: skip
    try:
        assert unsealed == ["hospitals"]  # once, after the policy named the federation
        assert core._utc() == datetime.fromtimestamp(1_800_000_000, UTC)
        nonce = core.new_nonce()
        core._use_nonce(nonce)
        assert {p.name for p in work.iterdir()} <= {"only.sqlite", "only.sqlite-wal", "only.sqlite-shm"}
        assert [e.kind for e in core.store.audit_entries()][:1] == ["policy"]  # the policy taken force, via the store
        assert core._utc().isoformat().startswith("2027-01-15")  # the clock it was handed, not the machine's
    finally:
        core.close()
