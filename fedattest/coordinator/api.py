"""The coordinator's HTTPS API (FastAPI). Versioned under /api/v1; the OpenAPI document is at
/api/v1/openapi.json. Bad input gets a 4xx JSON error ``{"error": "..."}`` and changes nothing."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from importlib import resources
from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from fedattest.asgi_body import CLOSE, BodyTimeoutError, BodyTooLargeError, read_body, replaying, send_json_error
from fedattest.coordinator.activation import ActivationError
from fedattest.coordinator.core import Coordinator
from fedattest.coordinator.store import StoreUnavailableError
from fedattest.errors import FedattestError
from fedattest.shape import json_shape_problem

MAX_BODY_BYTES = 256 * 1024  # the largest legitimate body (an activation with a quote) is ~20 KiB
MAX_JSON_DEPTH = 16  # our deepest document (activation: body -> claims -> keys) is 3 levels
MAX_JSON_ITEMS = 20_000  # keys plus array items in one body: a round report names at most 10,000 members
BODY_TIMEOUT_SECONDS = 30.0  # to receive a whole body once its headers are in (slow-body drip)
NONCE_RATE_PER_SECOND = 100.0  # POST /nonce per client address, sustained ...
NONCE_BURST = 500  # ... and in a burst (50 participants starting at once, each retrying)
MAX_RATE_CLIENTS = 4096  # client addresses remembered by the rate limiter (least recently seen go first)
# The status page and its script and style are served from the package (no CDN, nothing inline), under a policy
# that lets the page load only them and fetch only this origin, run no inline script, and never parse a string as
# markup (Trusted Types): a name that reaches the page is text whatever it holds.
PAGE_CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'none'; base-uri 'none';"
    " form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; trusted-types 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY", "Cache-Control": "no-store", "Cross-Origin-Resource-Policy": "same-origin",
}  # fmt: skip
PAGE_FILES = {"status.html": "text/html; charset=utf-8", "status.js": "text/javascript; charset=utf-8",
              "status.css": "text/css; charset=utf-8"}  # fmt: skip


class BodyLimit:
    """Pure ASGI middleware: reads each request body *as it arrives*, counting bytes, and refuses with 413 as
    soon as the count passes ``max_bytes`` (a Content-Length over the limit is refused before reading; a
    chunked or under-declared body when the count passes it). A body that is not UTF-8, or JSON nested too
    deep or with too many keys/items, is refused with 400 before any parser sees it. The body must arrive
    within ``timeout`` seconds (408). The application then gets the body in one piece."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES, timeout: float = BODY_TIMEOUT_SECONDS) -> None:
        self.app, self.max_bytes, self.timeout = app, max_bytes, timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            body = await read_body(scope, receive, self.max_bytes, self.timeout)
        except BodyTooLargeError:
            await send_json_error(send, 413, f"request body larger than {self.max_bytes} bytes", CLOSE)
            return
        except BodyTimeoutError:
            await send_json_error(send, 408, f"request body not received within {self.timeout:g} seconds", CLOSE)
            return
        if body is None:
            return  # the client went away
        if body:
            try:
                body.decode("utf-8")
            except UnicodeDecodeError as exc:
                await send_json_error(send, 400, f"request body is not valid UTF-8 (byte {exc.start})")
                return
            problem = json_shape_problem(body, MAX_JSON_DEPTH, MAX_JSON_ITEMS)
            if problem is not None:
                await send_json_error(send, 400, f"request body refused: {problem}")
                return
        await self.app(scope, replaying(receive, body), send)


class RateLimiter:
    """A token bucket per client address, in a bounded table (the least recently seen address goes first)."""

    def __init__(self, rate: float, burst: int, max_clients: int = MAX_RATE_CLIENTS, clock: Any = time.monotonic) -> None:
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, client: str) -> float:
        """0 if ``client`` may go ahead now (and takes a token), else the seconds until it may."""
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            wait = 0.0 if tokens >= 1 else (1 - tokens) / self.rate
            self._buckets[client] = (tokens - 1 if wait == 0 else tokens, now)
            while len(self._buckets) > self.max_clients:
                self._buckets.popitem(last=False)
        return wait


class Claims(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    nonce: str = Field(pattern=r"^[0-9a-f]{64}$")
    policy_hash: str = Field(pattern=r"^[0-9a-f]{64}$")
    keys: dict[str, str]


class PolicyUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    policy: str = Field(max_length=128 * 1024)
    approvals: list[str] = Field(max_length=256)


class Refusal(BaseModel):
    """An update the aggregator refused: ``member`` is who signed it, or ``node N`` when no signature
    verified (so it need not be a policy member)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    reason: str = Field(max_length=512)


class AppliedDp(BaseModel):
    """The server-side DP a round was aggregated with, as the aggregator signed it."""

    model_config = ConfigDict(extra="forbid")
    noise_multiplier: float = Field(ge=0)
    clipping_norm: float = Field(gt=0)
    sampled_clients: int = Field(ge=1)


class RoundReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    # Flower run ids are uint64: a decimal string, since RFC 8785 JSON carries integers only up to 2**53.
    run_id: str = Field(pattern=r"^(0|[1-9][0-9]{0,19})$")
    round: int = Field(ge=0, lt=1 << 31)
    participants: list[str] = Field(max_length=10_000)
    params_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    # Optional, and signed only when present: a report without it is signed over the four keys above.
    refused: list[Refusal] | None = Field(default=None, max_length=10_000)
    # Optional, and signed only when present: the DP the round was aggregated with (the coordinator compares it
    # with the policy's); fedattest's aggregator always sends it.
    dp: AppliedDp | None = None
    # Optional, and signed only when present: the round's aggregated metrics (name -> finite number) and the Flower
    # node id of each participant. Typed loosely here so that the coordinator refuses a bad value with its own
    # reason (fedattest.coordinator.round_report), not a validation error.
    metrics: dict[str, Any] | None = Field(default=None, max_length=1024)
    nodes: dict[str, Any] | None = Field(default=None, max_length=10_000)

    @field_validator("run_id")
    @classmethod
    def _uint64(cls, value: str) -> str:
        if int(value) >= 1 << 64:
            raise ValueError("a Flower run id is a uint64 (below 18446744073709551616)")
        return value


class SignedRoundReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    report: RoundReport
    certificate: str = Field(max_length=16 * 1024)
    signature: str = Field(max_length=1024)


class Reservation(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    run_id: str = Field(pattern=r"^(0|[1-9][0-9]{0,19})$")  # a Flower run id (uint64), as in round reports
    round: int = Field(ge=1, lt=1 << 31)


class SignedReservation(BaseModel):
    """The aggregator asking the privacy ledger for one release's budget (``POST /api/v1/reserve``)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    reservation: Reservation
    certificate: str = Field(max_length=16 * 1024)
    signature: str = Field(max_length=1024)


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    quote: str | None = Field(default=None, max_length=128 * 1024)
    csr: str = Field(max_length=16 * 1024)
    claims: Claims
    public_keys: dict[str, str] = Field(default_factory=dict, max_length=8)
    # The member's Ed25519 signature over the claims, base64 (64 bytes); refused with 403 when missing.
    enrolment: str | None = Field(default=None, max_length=128)
    # The caller (a launcher) runs this identity and heartbeats: it counts as the member's running one at once.
    live: bool = False


class ReprovisionRequest(BaseModel):
    """A live identity asking to be provisioned under the policy now in force (no new activation)."""

    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    quote: str | None = Field(default=None, max_length=128 * 1024)
    certificate: str = Field(max_length=16 * 1024)
    claims: Claims
    # ECDSA by the certificate's key over the claims (fedattest.pki.identity.sign_reprovision), base64 DER.
    signature: str = Field(max_length=256)


class AliveClaims(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    serial: str = Field(pattern=r"^[0-9a-f]{1,40}$")  # the certificate's serial, hex (RFC 5280: at most 20 bytes)
    time: int = Field(ge=0, lt=1 << 53)  # seconds since the epoch (an RFC 8785 number)


class Heartbeat(BaseModel):
    """A running identity saying so (``POST /api/v1/alive``), signed with its certificate's key."""

    model_config = ConfigDict(extra="forbid", strict=True)
    certificate: str = Field(max_length=16 * 1024)
    claims: AliveClaims
    # ECDSA by the certificate's key over the claims (fedattest.pki.identity.sign_alive), base64 DER.
    signature: str = Field(max_length=256)


def _page_files() -> dict[str, bytes]:
    """The status page's files, read once from the package (they ship in the wheel: pyproject's package-data)."""
    web = resources.files("fedattest.coordinator") / "web"
    return {name: (web / name).read_bytes() for name in PAGE_FILES}


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    coordinator: Coordinator,
    *,
    nonce_rate: float = NONCE_RATE_PER_SECOND,
    nonce_burst: int = NONCE_BURST,
    body_timeout: float = BODY_TIMEOUT_SECONDS,
) -> FastAPI:
    activation_threads = anyio.CapacityLimiter(2)
    read_threads = anyio.CapacityLimiter(4)  # reads of the store, off the event loop
    nonce_limiter = RateLimiter(nonce_rate, nonce_burst)
    app = FastAPI(
        title="fedattest coordinator",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    app.add_middleware(BodyLimit, timeout=body_timeout)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg')}")

    @app.exception_handler(ActivationError)
    async def refused(_: Request, exc: ActivationError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(StoreUnavailableError)
    async def unavailable(_: Request, exc: StoreUnavailableError) -> JSONResponse:
        return _error(503, str(exc))

    @app.exception_handler(FedattestError)
    async def failed(_: Request, exc: FedattestError) -> JSONResponse:
        return _error(400, str(exc))

    # Endpoints that read the store run in worker threads: the event loop keeps accepting and answering
    # (nonces, bodies, TLS) while a large store is read. They are also bounded: counts come from SQLite, and
    # per member only its latest record is loaded.
    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        result: dict[str, Any] = await anyio.to_thread.run_sync(coordinator.status, limiter=read_threads)
        return result

    @app.get("/api/v1/quote")
    async def quote(nonce: str = Query(pattern=r"^[0-9a-f]{64}$", description="32 random bytes, hex")) -> dict[str, Any]:
        return coordinator.quote(bytes.fromhex(nonce))

    @app.get("/api/v1/policy")
    async def policy() -> dict[str, Any]:
        return {"policy_hash": coordinator.policy.policy_hash().hex(), "policy": coordinator.policy.canonical_bytes().decode()}

    @app.post("/api/v1/policy")
    async def update_policy(body: PolicyUpdate) -> dict[str, Any]:
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.update_policy(body.policy, body.approvals), limiter=activation_threads
        )
        return result

    @app.post("/api/v1/nonce")
    async def nonce(request: Request) -> Response:
        wait = nonce_limiter.retry_after(request.client.host if request.client else "")
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            return JSONResponse(
                {"error": f"too many nonce requests from this address: retry after {seconds} s"},
                status_code=429,
                headers={"Retry-After": str(seconds)},
            )
        return JSONResponse({"nonce": coordinator.new_nonce()})

    @app.post("/api/v1/activate")
    async def activate(body: ActivationRequest) -> dict[str, Any]:
        # Off the event loop (collateral may be fetched from a PCCS), but through few threads: the work is
        # CPU-bound under the GIL, and many threads would only contend for it and for the store.
        claims = body.claims.model_dump()
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.activate(
                body.member, body.quote, body.csr, claims, body.public_keys, enrolment=body.enrolment, live=body.live
            ),
            limiter=activation_threads,
        )
        return result

    @app.post("/api/v1/reprovision")
    async def reprovision(body: ReprovisionRequest) -> dict[str, Any]:
        claims = body.claims.model_dump()
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.reprovision(body.member, body.quote, body.certificate, claims, body.signature),
            limiter=activation_threads,
        )
        return result

    @app.post("/api/v1/alive")
    async def alive(body: Heartbeat) -> dict[str, Any]:
        # A signature check and one indexed read per heartbeat (every 5 s per participant): the read threads.
        claims = body.claims.model_dump()
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.alive(body.certificate, claims, body.signature), limiter=read_threads
        )
        return result

    @app.post("/api/v1/rounds")
    async def rounds(body: SignedRoundReport) -> dict[str, Any]:
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.report_round(body.certificate, body.signature, body.report.model_dump(exclude_none=True)),
            limiter=activation_threads,
        )
        return result

    @app.post("/api/v1/reserve")
    async def reserve(body: SignedReservation) -> dict[str, Any]:
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.reserve(body.certificate, body.signature, body.reservation.model_dump()),
            limiter=activation_threads,
        )
        return result

    @app.get("/api/v1/public-keys/{name}")
    async def public_keys(name: str, role: str | None = None) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await anyio.to_thread.run_sync(
            lambda: coordinator.public_keys(name, role), limiter=read_threads
        )
        return result

    @app.get("/api/v1/crl")
    async def crl() -> Response:
        """The revocation list: DER X.509 CRL signed by the root CA (see fedattest.pki.crl)."""
        der: bytes = await anyio.to_thread.run_sync(coordinator.crl, limiter=read_threads)
        return Response(der, media_type="application/pkix-crl")

    @app.get("/api/v1/members")
    async def members() -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = await anyio.to_thread.run_sync(coordinator.members, limiter=read_threads)
        return result

    @app.get("/api/v1/audit")
    async def audit() -> Response:
        exported: bytes = await anyio.to_thread.run_sync(coordinator.audit_export, limiter=read_threads)
        return Response(exported, media_type="application/json")

    @app.get("/api/v1/audit/evidence")
    async def audit_evidence() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(coordinator.evidence, limiter=read_threads)

    @app.get("/api/v1/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [coordinator.jwk]}

    @app.get("/api/v1/overview")
    async def overview() -> JSONResponse:
        """The federation at a glance (what the /status page shows): policy, members, the latest runs and their
        rounds' metrics. Bounded: see fedattest.coordinator.overview."""
        result: dict[str, Any] = await anyio.to_thread.run_sync(coordinator.overview, limiter=read_threads)
        return JSONResponse(result, headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"})

    page = _page_files()

    @app.get("/status", include_in_schema=False)
    async def status_page() -> Response:
        return Response(page["status.html"], media_type=PAGE_FILES["status.html"], headers=PAGE_HEADERS)

    @app.get("/status/{name}", include_in_schema=False)
    async def status_asset(name: str) -> Response:
        if name not in {"status.js", "status.css"}:
            return _error(404, f"no such file: {name[:64]!r}")
        return Response(page[name], media_type=PAGE_FILES[name], headers=PAGE_HEADERS)

    @app.get("/api/v1/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(coordinator.metrics_text(), media_type="text/plain; version=0.0.4")

    return app
