"""Transaction monitoring's case queue for ops, as JSON (docs/compliance.md): the same
cases and decisions as `paystream cases`, for a page or a tool. Installed beside the
dashboard by `paystream api` (streams/cli/api.py), under its path so the dashboard's
session cookie (path /dashboard) reaches it; outside /v1 and the merchant API's spec.

  GET  /dashboard/cases[?status=open&rule=structuring]   {"data": [case, ...]}, oldest opened first
  POST /dashboard/cases/{case_id}/decision               {"decision", "operator", "reason"} -> the decision recorded

Only the ops role: `Authorization: Bearer <ops token>` (PAYSTREAM_DASHBOARD_TOKEN_FILE) or
the dashboard's ops session cookie. The ops token is shared, so the operator names
themselves in the body; the decision's time is the request's. The queue does blocking
Kafka IO, so the handlers run in a thread."""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable
from datetime import datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from streams.api.console import CASE_ERROR_STATUS, Cases
from streams.api.dashboard import OPS
from streams.api.errors import ApiError
from streams.client.cases import select, view
from streams.domain.monitoring import DECISIONS, OPERATOR_MAX_CHARS, REASON_MAX_CHARS, RULES, STATUSES, MonitoringError

BODY_MAX_BYTES = 8_192
RoleOf = Callable[[Request], str | None]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    decision: str = Field(pattern="^(" + "|".join(DECISIONS) + ")$")
    operator: str = Field(min_length=1, max_length=OPERATOR_MAX_CHARS)
    reason: str = Field(min_length=1, max_length=REASON_MAX_CHARS)


def bearer_role(token: bytes | None) -> RoleOf:
    """The ops role for the ops token as a Bearer header (without a dashboard to hold sessions)."""

    def role_of(request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        given = auth[7:].strip().encode() if auth[:7].lower() == "bearer " else b""
        return OPS if token is not None and given and hmac.compare_digest(given, token) else None

    return role_of


def install(app: FastAPI, queue: Cases, role_of: RoleOf, now: Callable[[], datetime]) -> None:
    def require_ops(request: Request) -> None:
        if role_of(request) != OPS:
            raise ApiError(
                401,
                "authentication_error",
                "ops_only",
                "the ops token is required: Authorization: Bearer <ops token>",
                headers=(("WWW-Authenticate", "Bearer"),),
            )

    @app.get("/dashboard/cases", include_in_schema=False)
    async def list_cases(request: Request, status: str | None = None, rule: str | None = None) -> JSONResponse:
        require_ops(request)
        if status is not None and status not in STATUSES or rule is not None and rule not in RULES:
            raise ApiError(
                400,
                "invalid_request_error",
                "parameter_invalid",
                f"status is one of {', '.join(STATUSES)}; rule one of {', '.join(RULES)}",
            )
        cases = await asyncio.to_thread(queue.cases)
        return JSONResponse(
            {"data": [view(c) for c in select(cases, status, rule)]}, headers={"Cache-Control": "no-store"}
        )

    @app.post("/dashboard/cases/{case_id}/decision", include_in_schema=False)
    async def decide(request: Request, case_id: str) -> JSONResponse:
        require_ops(request)  # before the body is read
        body = await request.body()
        if len(body) > BODY_MAX_BYTES:
            raise ApiError(413, "invalid_request_error", "body_too_large", f"the body is over {BODY_MAX_BYTES} bytes")
        try:
            d = Decision.model_validate_json(body)
        except ValidationError as e:
            first = e.errors()[0]
            field = ".".join(str(x) for x in first.get("loc", ())) or "body"
            raise ApiError(
                400, "invalid_request_error", "parameter_invalid", f"{field}: {first.get('msg', 'invalid')}", field
            ) from None
        try:
            record = await asyncio.to_thread(queue.decide, case_id, d.decision, d.operator, d.reason, now())
        except MonitoringError as e:
            raise ApiError(CASE_ERROR_STATUS.get(e.reason, 400), "invalid_request_error", e.reason, e.detail) from None
        return JSONResponse(view(record))
