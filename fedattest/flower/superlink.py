"""The attested SuperLink: Flower's SuperLink, hardened, inside the aggregator's enclave.

Stock Flower 1.42 serves the Fleet, Control and Runtime APIs on one HTTP port and authenticates no
Control or Runtime caller, so anyone who can reach the port can register a node key of their own or
take the ServerApp's task token. Here the same Flower application is served on two listeners:

* the **public** listener (``--listen``) answers only ``/v1/fleet/*``, with SuperNode authentication
  on: the SuperNodes' API, nothing else;
* the **internal** listener (loopback) carries Control and Runtime for the SuperLink's own processes.
  Node registration is refused there too: node keys are registered from the coordinator's list of
  attested collaborators only (:class:`AttestedNodeRegistry`, in this process). The task token can be
  acquired only with the SuperExec secret (``--isolation process`` + the secret, which only this process
  and the SuperExec it starts hold), and runs are created only for apps in the policy's allow-list.

Both listeners serve TLS with the certificate the coordinator issued to the aggregator, so SuperNodes,
which trust only the coordinator's root CA, know they talk to the attested aggregator.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from fedattest.asgi_body import CLOSE, BodyTimeoutError, BodyTooLargeError, read_body, replaying, send_json_error
from fedattest.errors import FedattestError
from fedattest.files import PRIVATE_DIR, atomic_write
from fedattest.flower.apps import AppGate, AppNotAllowedError
from fedattest.flower.context import IDENTITY_ENV
from fedattest.flower.gate import install_app_gate
from fedattest.flower.gated import write_gated_bin
from fedattest.flower.participant import ParticipantPaths, PolicyRefresher
from fedattest.flower.provisioned import load_provisioned
from fedattest.listen import listening_socket
from fedattest.participant.client import coordinator_context
from fedattest.tls_server import (
    HEADER_TIMEOUT_SECONDS,
    KEEP_ALIVE_SECONDS,
    MAX_CONNECTIONS,
    MAX_CONNECTIONS_PER_CLIENT,
    TlsServer,
    guarded_protocol,
)

log = logging.getLogger("fedattest.flower.superlink")

FLEET_PREFIX = "/v1/fleet/"
NODE_REGISTRATION = frozenset({"/v1/control/register-node", "/v1/control/unregister-node"})
ONLY_FLEET = "fedattest: only the Fleet API is served on this address (Control and Runtime are internal to the aggregator)"
NO_REGISTRATION = "fedattest: SuperNodes are registered from the coordinator's list of attested collaborators only"

Refusal = Callable[[str], str | None]


def public_refusal(path: str) -> str | None:
    """Why a request to ``path`` on the public listener is refused, or None to serve it."""
    return None if path.startswith(FLEET_PREFIX) else ONLY_FLEET


def internal_refusal(path: str) -> str | None:
    """Why a request to ``path`` on the internal listener is refused, or None to serve it."""
    return NO_REGISTRATION if path.rstrip("/") in NODE_REGISTRATION else None


class PathFilter:
    """ASGI middleware answering 403 with a JSON reason for every request ``refusal`` names."""

    def __init__(self, app: Any, refusal: Refusal, listener: str) -> None:
        self.app, self.refusal, self.listener = app, refusal, listener

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in {"http", "websocket"}:
            reason = self.refusal(str(scope.get("path", "")))
            if reason is not None:
                client = scope.get("client") or ("?", 0)
                log.warning("refused %s from %s:%s on the %s listener: %s", scope.get("path"), *client, self.listener, reason)
                if scope["type"] == "websocket":
                    await send({"type": "websocket.close", "code": 1008})
                    return
                await send_json_error(send, 403, reason, detail=True)
                return
        await self.app(scope, receive, send)


# The largest request body the public listener takes. A Fleet request carries one object (or message heads
# and object ids): Flower cuts every array into chunks of FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE bytes (5 MiB by
# default) and pushes each chunk in its own ``push-object`` request, so the largest legitimate body is one
# chunk plus its head, or a config/metric record (which Flower does not chunk). 16 MiB leaves room for both.
# Flower reads the whole body before it authenticates the SuperNode, so this is also what one
# unauthenticated request can make the SuperLink hold.
MAX_FLEET_BODY = 16 * 1024 * 1024
TOO_LARGE = "fedattest: request body larger than the Fleet API accepts ({limit} bytes)"
# A whole body (at most one 5 MiB array chunk plus its header, see default_max_fleet_body) within this many
# seconds of its headers: 16 MiB in 60 s is 280 KB/s, slower than any site link Flower would be usable on.
FLEET_BODY_TIMEOUT_SECONDS = 60.0


def default_max_fleet_body() -> int:
    """:data:`MAX_FLEET_BODY`, or one of Flower's array chunks plus 1 MiB if chunks are set larger here."""
    from flwr.common.constant import FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE  # noqa: PLC0415 - Flower only here

    return max(MAX_FLEET_BODY, FLWR_PRIVATE_MAX_ARRAY_CHUNK_SIZE + (1 << 20))


class BodyLimit:
    """ASGI middleware: refuses with 413 any HTTP request whose body is larger than ``max_body``, before the
    application sees it. A declared Content-Length over the limit is refused without reading the body; a
    chunked body (or any other) is counted as it arrives and refused the moment it passes the limit. A body
    not complete within ``timeout`` seconds of its headers gets 408 (a slow sender holds no memory or slot
    for longer). The application gets the body only once it is complete and within the limit."""

    def __init__(self, app: Any, max_body: int, listener: str, timeout: float = FLEET_BODY_TIMEOUT_SECONDS) -> None:
        if max_body < 1:
            raise ValueError("the body limit must be at least 1 byte")
        self.app, self.max_body, self.listener, self.timeout = app, max_body, listener, timeout

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        client = scope.get("client") or ("?", 0)
        try:
            body = await read_body(scope, receive, self.max_body, self.timeout)
        except BodyTooLargeError as exc:
            log.warning("refused %s from %s:%s on the %s listener: body of %s bytes, over the limit of %d",
                        scope.get("path"), *client, self.listener, exc.size, self.max_body)  # fmt: skip
            await send_json_error(send, 413, TOO_LARGE.format(limit=self.max_body), CLOSE, detail=True)
            return
        except BodyTimeoutError:
            log.warning("refused %s from %s:%s on the %s listener: body not received within %g s",
                        scope.get("path"), *client, self.listener, self.timeout)  # fmt: skip
            await send_json_error(
                send, 408, f"fedattest: request body not received within {self.timeout:g} seconds", CLOSE, detail=True
            )
            return
        if body is None:
            return  # the client went away
        await self.app(scope, replaying(receive, body), send)


STARTING = "fedattest: the SuperLink is starting (the attested node keys are not registered yet): retry"


class UntilReady:
    """ASGI middleware answering 503 (which Flower's SuperNode retries) until ``ready`` is set: a SuperNode that
    connects to a SuperLink that has just started, before its attested node keys are registered, waits instead of
    being told its key is unknown (a refusal Flower's SuperNode does not retry)."""

    def __init__(self, app: Any, ready: threading.Event) -> None:
        self.app, self.ready = app, ready

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http" and not self.ready.is_set():
            await send_json_error(send, 503, STARTING, detail=True)
            return
        await self.app(scope, receive, send)


def public_listener_app(app: Any, max_body: int, ready: threading.Event | None = None) -> Any:
    """What the public listener serves: only the Fleet API (other paths 403, unread), bodies up to ``max_body``; with
    ``ready``, 503 to every request until it is set."""
    served = PathFilter(BodyLimit(app, max_body, "public"), public_refusal, "public")
    return served if ready is None else UntilReady(served, ready)


@dataclass
class AttestedNodeRegistry:
    """Keeps the node keys Flower accepts equal to the coordinator's attested collaborator keys: adds new
    ones, and removes a key when its member's identity expires, is replaced or leaves the policy."""

    state_factory: Any
    fetch: Callable[[], list[dict[str, Any]]]
    clock: Callable[[], float] = time.time
    registered: dict[str, tuple[int, bytes, float]] = field(default_factory=dict)  # member -> (node id, PEM, expires)
    _reported: set[str] = field(default_factory=set)  # registration problems logged once already
    _swept: bool = False  # nodes left in a persisted link state by an earlier run were checked once

    def sync(self) -> None:
        """One reconciliation. If the coordinator cannot be reached, keys still drop out when they expire."""
        from flwr.common.constant import HEARTBEAT_DEFAULT_INTERVAL, NOOP_ACCOUNT_NAME, NOOP_FLWR_AID  # noqa: PLC0415

        now = self.clock()
        try:
            listed: dict[str, tuple[bytes, float]] | None = {
                str(e["member"]): (str(e["public_key"]).encode(), float(e["expires"])) for e in self.fetch()
            }
        except (FedattestError, httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
            problem = f"refresh: {exc}"
            if problem not in self._reported:
                self._reported.add(problem)
                log.warning("could not refresh the attested node keys from the coordinator (retrying quietly): %s", exc)
            listed = None
        state = self.state_factory.state()
        if listed is not None and not self._swept:
            # A persisted link state may hold nodes registered before a restart whose identities were revoked or
            # expired meanwhile: only keys the coordinator lists now stay (the others are taken over below).
            attested = {pem for pem, expires in listed.values() if expires > now}
            for info in state.get_node_info(owner_aids=[NOOP_FLWR_AID]):
                if info.status != "unregistered" and bytes(info.public_key) not in attested:
                    with contextlib.suppress(ValueError):
                        state.delete_node(owner_aid=NOOP_FLWR_AID, node_id=info.node_id)
                    log.warning("removed node %s, registered before a restart: its key is no longer attested", info.node_id)
            self._swept = True
        for member, (node_id, pem, expires) in list(self.registered.items()):
            gone = listed is not None and (listed.get(member) or (b"",))[0] != pem
            if gone or expires <= now:
                with contextlib.suppress(ValueError):
                    state.delete_node(owner_aid=NOOP_FLWR_AID, node_id=node_id)
                del self.registered[member]
                why = "its identity expired" if expires <= now else "it is no longer attested with this key"
                log.warning("removed the node key of %s (node %s): %s", member, node_id, why)
        for member, (pem, expires) in (listed or {}).items():
            if member in self.registered or expires <= now:
                continue
            # A persisted link state still holds the keys registered before a restart: take those nodes over
            # (their SuperNodes keep their node ids) instead of failing to register them again every sync.
            known = state.get_node_id_by_public_key(pem)
            if known is not None:
                self.registered[member] = (known, pem, expires)
                log.info("took over the node key of %s registered before a restart (node %s)", member, known)
                continue
            try:
                node_id = state.create_node(
                    owner_aid=NOOP_FLWR_AID, owner_name=NOOP_ACCOUNT_NAME, public_key=pem,
                    heartbeat_interval=HEARTBEAT_DEFAULT_INTERVAL, name=member,
                )  # fmt: skip
            except ValueError as exc:
                problem = f"{member}: {exc}"
                if problem not in self._reported:  # one line per problem, not one per sync
                    self._reported.add(problem)
                    log.error("could not register the node key of %s (retrying quietly): %s", member, exc)
                continue
            self.registered[member] = (node_id, pem, expires)
            log.info("registered the attested node key of %s as node %s", member, node_id)


def coordinator_node_keys(url: str, root_ca_pem: str, timeout: float = 10.0) -> Callable[[], list[dict[str, Any]]]:
    """A fetcher of the coordinator's attested collaborator node keys (TLS verified against its root).

    It keeps one connection open across calls: a fresh TLS handshake on both sides every refresh would
    take CPU from the training on a small machine. Calls must not overlap (the registry makes one at a time).
    """
    http = httpx.Client(verify=coordinator_context(root_ca_pem), timeout=timeout)

    def fetch() -> list[dict[str, Any]]:
        response = http.get(f"{url}/api/v1/public-keys/node", params={"role": "collaborator"})
        if response.status_code != 200:
            raise FedattestError(f"GET /api/v1/public-keys/node: HTTP {response.status_code}")
        body = response.json()
        if not isinstance(body, list):
            raise FedattestError("GET /api/v1/public-keys/node: not a list")
        return body

    return fetch


def gate_run_creation(gate: AppGate) -> Callable[[], None]:
    """Refuse ``flwr run`` (Control API StartRun) for any app not in the allow-list, with the reason, before
    the SuperLink stores the app or creates the run. Returns a function that undoes it."""
    from flwr.supercore.error import ApiErrorCode, FlowerError  # noqa: PLC0415 - Flower only here
    from flwr.superlink.servicer.control import control_handlers  # noqa: PLC0415

    original = control_handlers.start_run

    def gated_start_run(request: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            if request.fab.content:
                gate.check(request.fab.content)
            elif request.fab.hash_str:
                gate.check_hash(request.fab.hash_str)
            else:
                raise AppNotAllowedError("(an app from the Flower Hub, unknown until fetched)")
        except AppNotAllowedError as exc:
            log.error("refused a run: %s", exc)
            raise FlowerError(ApiErrorCode.NO_PERMISSIONS, str(exc), public_details=str(exc)) from None
        return original(request, *args, **kwargs)

    control_handlers.start_run = gated_start_run

    def undo() -> None:
        control_handlers.start_run = original

    return undo


class _Server(TlsServer):
    """A uvicorn server with fedattest's TLS timeouts that leaves signals to :func:`serve_superlink` (two
    servers share one loop)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class SuperLinkPaths(ParticipantPaths):
    """The participant's layout, plus the addresses file the SuperLink writes once it listens."""

    @property
    def addresses(self) -> Path:
        return self.state / "superlink.json"


def dial_address(host: str, port: int) -> str:
    """Where clients reach a listener on ``host``: a loopback or wildcard address by ``localhost`` (the name the
    aggregator's certificate carries for this machine), any other address or name as it is (the policy's
    ``dns_names`` must list it, see docs/deployment.md)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"{host}:{port}"
    if address.is_loopback or address.is_unspecified:
        return f"localhost:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


IN_MEMORY = ":flwr-in-memory:"  # Flower's own default: runs do not outlive the SuperLink process


def _lifespan_config(paths: SuperLinkPaths, host: str, port: int, secret: bytes, database: str) -> Any:
    from flwr.common.constant import CONTROL_API_DEFAULT_SERVER_ADDRESS, TRANSPORT_TYPE_GRPC_RERE  # noqa: PLC0415
    from flwr.superlink.config_loader import SuperLinkLifespanConfig, load_control_authn_plugin  # noqa: PLC0415

    ident = paths.identity
    root, chain, key = ident / "root_ca.pem", ident / "chain.pem", ident / "key.pem"
    return SuperLinkLifespanConfig(
        control_address=CONTROL_API_DEFAULT_SERVER_ADDRESS, health_server_address=None, host=host, port=port,
        insecure=False, certificates=(root.read_bytes(), chain.read_bytes(), key.read_bytes()),
        superexec_auth_secret=secret, authn_plugin=load_control_authn_plugin(), event_log_plugin=None,
        fleet_event_log_plugin=None, enable_event_log=False, artifact_provider=None, enable_supernode_auth=True,
        fleet_api_type=TRANSPORT_TYPE_GRPC_RERE, fleet_api_address=None, simulation=False,
        ssl_ca_certfile=str(root), ssl_certfile=str(chain), ssl_keyfile=str(key),
        database=database, isolation="process", runtime_dependency_install=False,
    )  # fmt: skip


def child_environment(paths: SuperLinkPaths) -> dict[str, str]:
    """The environment of Flower's child processes: gated commands first on PATH, enclave-private FLWR_HOME,
    the identity directory for the apps, and no runtime dependency installation."""
    env = dict(os.environ)
    env["PATH"] = f"{paths.gated_bin}{os.pathsep}{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["FLWR_HOME"] = str(paths.flwr_home)
    env[IDENTITY_ENV] = str(paths.identity)
    env["FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION"] = "1"
    return env


def serve_superlink(
    paths: SuperLinkPaths,
    *,
    listen: tuple[str, int],
    internal: tuple[str, int],
    coordinator_url: str,
    root_ca_pem: str,
    refresh_seconds: float = 2.0,
    persist: bool = False,
    max_fleet_body: int | None = None,
    header_timeout: float = HEADER_TIMEOUT_SECONDS,
    max_connections: int = MAX_CONNECTIONS,
    policy_refresher: Callable[[AppGate], PolicyRefresher] | None = None,
    sockets: tuple[socket.socket, socket.socket] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM. With ``policy_refresher``, every ``refresh_seconds`` the participant also takes
    a new policy version the coordinator put in force (re-provisioned, the allow-list updated: the next
    ``flwr run`` of a newly allowed app is accepted without a restart).

    The identity must already be activated into ``paths.identity``. With
    ``persist``, Flower's link state is an SQLite file in the state directory (runs survive a restart, at
    the cost of a synchronous write per message); otherwise it is in memory, as in stock Flower. Request bodies
    on the public listener are limited to ``max_fleet_body`` bytes (default :func:`default_max_fleet_body`)."""
    from flwr.superlink.cli.flower_superlink import SuperLinkLifespan  # noqa: PLC0415 - Flower only here
    from flwr.superlink.main import create_app  # noqa: PLC0415

    provisioned = load_provisioned(paths.identity)
    gate = AppGate(provisioned.allowed_app_hashes, provisioned.policy_hash)
    install_app_gate(gate)
    gate_run_creation(gate)
    refresher = policy_refresher(gate) if policy_refresher is not None else None
    for name in ("FLWR_INTERNAL_GRPC_CONTROL_API", "FLWR_INTERNAL_GRPC_FLEET_API"):
        os.environ.pop(name, None)  # no legacy gRPC listeners beside the two filtered ones
    env = child_environment(paths)
    os.environ.update({k: env[k] for k in ("FLWR_HOME", IDENTITY_ENV, "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION")})
    paths.flwr_home.mkdir(mode=PRIVATE_DIR, parents=True, exist_ok=True)
    write_gated_bin(paths.gated_bin)

    # Bound by the caller before it activated (a port in use must not cost an activation), or here.
    public_sock, internal_sock = sockets or (listening_socket(*listen), listening_socket(*internal))
    public_port, internal_port = public_sock.getsockname()[1], internal_sock.getsockname()[1]
    secret = secrets.token_bytes(32)
    secret_file = paths.state / "superexec.secret"
    atomic_write(secret_file, secret)

    database = str(paths.state / "linkstate.db") if persist else IN_MEMORY
    config = _lifespan_config(paths, internal[0], internal_port, secret, database)
    app = create_app(config, SuperLinkLifespan)
    tls = {"ssl_certfile": config.ssl_certfile, "ssl_keyfile": config.ssl_keyfile, "log_level": "warning"}
    limit = max_fleet_body or default_max_fleet_body()
    # The public listener gets the coordinator's connection guards: a header deadline, and caps on open
    # connections in all and per address (Flower's own server has neither).
    guarded = guarded_protocol(header_timeout, max_connections, MAX_CONNECTIONS_PER_CLIENT)
    registered = threading.Event()  # the public listener answers 503 until the first registry sync is done
    public = _Server(uvicorn.Config(public_listener_app(app, limit, registered), lifespan="on", http=guarded,
                                    timeout_keep_alive=int(min(KEEP_ALIVE_SECONDS, header_timeout)) or 1,
                                    limit_concurrency=max_connections + 1, **tls))  # fmt: skip
    inner = _Server(uvicorn.Config(PathFilter(app, internal_refusal, "internal"), lifespan="off", **tls))
    registry = AttestedNodeRegistry(app.state.linkstate_factory, coordinator_node_keys(coordinator_url, root_ca_pem))
    stop = threading.Event()

    def keep_registry() -> None:
        while not stop.is_set():
            registry.sync()
            if refresher is not None:
                refresher.check()
            stop.wait(refresh_seconds)

    superexec: subprocess.Popen[bytes] | None = None

    async def main() -> None:
        nonlocal superexec
        loop = asyncio.get_running_loop()

        def shut_down() -> None:
            public.should_exit = inner.should_exit = True

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, shut_down)
        tasks = [asyncio.create_task(public.serve([public_sock])), asyncio.create_task(inner.serve([internal_sock]))]
        while not (public.started and inner.started):
            if any(t.done() for t in tasks):
                break
            await asyncio.sleep(0.05)
        if public.started and inner.started:
            registry.sync()
            registered.set()
            threading.Thread(target=keep_registry, name="fedattest-node-registry", daemon=True).start()
            superexec = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [
                    str(paths.gated_bin / "flower-superexec"), "--runtime-api-address", f"localhost:{internal_port}",
                    "--root-certificates", str(paths.identity / "root_ca.pem"),
                    "--superexec-auth-secret-file", str(secret_file), "--parent-pid", str(os.getpid()),
                ],
                env=env,
            )  # fmt: skip
            atomic_write(
                paths.addresses,
                json.dumps(
                    {"fleet": dial_address(listen[0], public_port), "control": f"localhost:{internal_port}", "pid": os.getpid()}
                ).encode(),
                mode=0o644,
            )
            sys.stderr.write(
                f"fedattest SuperLink: Fleet API on {listen[0]}:{public_port} (public);"
                f" Control and Runtime on {internal[0]}:{internal_port} (internal); Fleet request bodies up to {limit} bytes\n"
            )
            sys.stderr.flush()
        else:
            public.should_exit = inner.should_exit = True
        await asyncio.gather(*tasks, return_exceptions=True)

    try:
        asyncio.run(main())
    finally:
        stop.set()
        if superexec is not None:
            superexec.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                superexec.wait(timeout=5)
        paths.addresses.unlink(missing_ok=True)
