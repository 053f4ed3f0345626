"""The coordinator's HTTPS API (FastAPI). Versioned under /api/v1; the OpenAPI document is at
/api/v1/openapi.json. Bad input gets a 4xx JSON error ``{"error": "..."}`` and changes nothing."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from fedattest.coordinator.core import ActivationError, Coordinator
from fedattest.errors import FedattestError

MAX_BODY_BYTES = 256 * 1024


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


class RoundReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    run_id: int = Field(ge=0, lt=1 << 64)  # Flower run ids are uint64
    round: int = Field(ge=0, lt=1 << 31)
    participants: list[str] = Field(max_length=10_000)
    params_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class SignedRoundReport(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    report: RoundReport
    certificate: str = Field(max_length=16 * 1024)
    signature: str = Field(max_length=1024)


class ActivationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    member: str = Field(max_length=64)
    quote: str | None = Field(default=None, max_length=128 * 1024)
    csr: str = Field(max_length=16 * 1024)
    claims: Claims
    public_keys: dict[str, str] = Field(default_factory=dict, max_length=8)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(coordinator: Coordinator) -> FastAPI:
    activation_threads = anyio.CapacityLimiter(2)
    app = FastAPI(
        title="fedattest coordinator",
        version="1",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return _error(413, f"request body larger than {MAX_BODY_BYTES} bytes")
        response: Response = await call_next(request)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return _error(422, f"{where or 'body'}: {first.get('msg')}")

    @app.exception_handler(ActivationError)
    async def refused(_: Request, exc: ActivationError) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.exception_handler(FedattestError)
    async def failed(_: Request, exc: FedattestError) -> JSONResponse:
        return _error(400, str(exc))

    @app.get("/api/v1/status")
    async def status() -> dict[str, Any]:
        return coordinator.status()

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
    async def nonce() -> dict[str, str]:
        return {"nonce": coordinator.new_nonce()}

    @app.post("/api/v1/activate")
    async def activate(body: ActivationRequest) -> dict[str, Any]:
        # Off the event loop (collateral may be fetched from a PCCS), but through few threads: the work is
        # CPU-bound under the GIL, and many threads would only contend for it and for the store.
        claims = body.claims.model_dump()
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.activate(body.member, body.quote, body.csr, claims, body.public_keys), limiter=activation_threads
        )
        return result

    @app.post("/api/v1/rounds")
    async def rounds(body: SignedRoundReport) -> dict[str, Any]:
        result: dict[str, Any] = await anyio.to_thread.run_sync(
            lambda: coordinator.report_round(body.certificate, body.signature, body.report.model_dump()),
            limiter=activation_threads,
        )
        return result

    @app.get("/api/v1/public-keys/{name}")
    async def public_keys(name: str, role: str | None = None) -> list[dict[str, Any]]:
        return coordinator.public_keys(name, role)

    @app.get("/api/v1/members")
    async def members() -> list[dict[str, Any]]:
        return coordinator.members()

    @app.get("/api/v1/audit")
    async def audit() -> Response:
        return Response(coordinator.audit_export(), media_type="application/json")

    @app.get("/api/v1/audit/evidence")
    async def audit_evidence() -> dict[str, Any]:
        return await anyio.to_thread.run_sync(coordinator.evidence)

    @app.get("/api/v1/jwks")
    async def jwks() -> dict[str, Any]:
        return {"keys": [coordinator.jwk]}

    @app.get("/api/v1/metrics")
    async def metrics() -> PlainTextResponse:
        return PlainTextResponse(coordinator.metrics_text(), media_type="text/plain; version=0.0.4")

    return app
