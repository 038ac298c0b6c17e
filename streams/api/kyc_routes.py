"""KYC onboarding on the merchant API: the authenticated merchant applies and reads
its case (streams/domain/kyc.py, docs/compliance.md). Installed beside the payment routes by
`paystream api` (streams/cli/api.py), outside create_app so it stays its own module.

  POST /v1/kyc/application   apply: the provider's checks run, the case's outcome is answered
  GET  /v1/kyc               the case: state, each check, verified_until

The desk does blocking Kafka IO, so the handlers are plain functions (FastAPI runs
them in its thread pool). The body's owner names are personal data: never logged,
and not echoed back (the view leaves them out)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from streams.api.errors import ApiError
from streams.client.kyc import view
from streams.domain import kyc


class Desk(Protocol):
    def registry(self) -> dict[str, dict[str, Any]]: ...
    def apply(self, merchant_id: str, app: dict[str, Any], at: datetime) -> dict[str, Any]: ...


class KycApplication(BaseModel):
    model_config = ConfigDict(extra="forbid")
    legal_name: str = Field(min_length=1, max_length=200)
    country: str = Field(min_length=2, max_length=2, description="ISO 3166-1 alpha-2")
    registration_number: str = Field(min_length=3, max_length=32)
    owners: list[str] = Field(min_length=1, max_length=kyc.MAX_OWNERS, description="Beneficial owners' names")
    documents: dict[str, str] = Field(default_factory=dict, description="kind -> document store reference")


_STATUS = {"invalid_application": 400, "kyc_in_progress": 409}


def install(app: FastAPI, desk: Desk, now: Callable[[], datetime]) -> None:
    """`now` stamps the application: the API is where it happens (its event time)."""

    def answer(record: dict[str, Any]) -> JSONResponse:
        body = view(record)
        body["verified_until"] = body["verified_until"].isoformat() if body["verified_until"] else None
        return JSONResponse(body)

    @app.post("/v1/kyc/application", summary="Apply for KYC verification (the checks run at once)")
    def apply_kyc(request: Request, body: KycApplication) -> JSONResponse:
        merchant = request.state.merchant_id
        try:
            application = kyc.application(
                body.legal_name, body.country, body.registration_number, body.owners, body.documents
            )
            record = desk.apply(merchant, application, now())
        except kyc.KycError as e:
            raise ApiError(_STATUS.get(e.reason, 400), "invalid_request_error", e.reason, e.detail) from None
        return answer(record)

    @app.get("/v1/kyc", summary="The merchant's KYC case")
    def get_kyc(request: Request) -> JSONResponse:
        record = desk.registry().get(request.state.merchant_id)
        if record is None or record.get("kyc") is None:
            raise ApiError(404, "invalid_request_error", "resource_missing", "no KYC application")
        return answer(record)
