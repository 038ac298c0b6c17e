"""The FastAPI app: the routes, auth and rate limits (an ASGI middleware in front of
/v1), and the write path (idempotency record -> publish once -> await the outcome)."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connectors.vault.intake import Sealer
from schemas.cards import CardError
from schemas.ids import derive_api_command_id, derive_payment_id
from streams.api.acs import Acs
from streams.api.acs import router as acs_router
from streams.api.auth import ApiKeys, RateLimits, retry_after_header
from streams.api.bus import BusUnavailable, CommandBus
from streams.api.commands import create_command, dispute_evidence_command, follow_up_command
from streams.api.dashboard import Dashboard, router
from streams.api.errors import ApiError, not_found, outcome_response, payment_body
from streams.api.idempotency import IdempotencyRecords, InFlightFull, Response, fingerprint
from streams.api.bodies import (
    Accepted,
    AmountIn,
    ConfirmIn,
    CreatePayment,
    Empty,
    ErrorBody,
    EvidenceIn,
    Payment,
    PaymentList,
)
from streams.api.objects import MemoryObjects, Objects
from streams.api.readmodel import LIST_LIMIT_MAX, fresher
from streams.api.stripe_accounts import Registry
from streams.api.stripe_accounts import install as install_accounts
from streams.api.stripe_customers import install as install_customers
from streams.api.stripe_events import Webhooks
from streams.api.stripe_events import install as install_events
from streams.api.stripe_routes import StripeDeps
from streams.api.stripe_routes import install as install_stripe
from streams.settings import Settings

log = logging.getLogger(__name__)

PAYMENT_ID_PATTERN = re.compile(r"^pay_[0-9a-f]{32}$")
API_PREFIX = "/v1/"
IDEMPOTENCY_KEY_MAX_CHARS = 255


@dataclass(frozen=True)
class ApiConfig:
    outcome_timeout_s: float = 10.0
    max_body_bytes: int = 16_384
    rate_per_s: float = 50.0
    rate_burst: int = 100
    rate_queue_max: int = 20
    max_in_flight: int = 10_000
    idempotency_records_max: int = 100_000

    @classmethod
    def from_settings(cls, s: Settings) -> ApiConfig:
        return cls(s.api_outcome_timeout_ms / 1000, s.api_max_body_bytes, s.api_rate_per_s, s.api_rate_burst,
                   s.api_rate_queue_max, s.api_max_in_flight, s.api_idempotency_records_max)


class PaymentReader(Protocol):
    def get(self, payment_id: str) -> dict[str, Any] | None:
        """A payment's view (the keys of payment_body), or None if unknown."""

    def list(self, merchant_id: str, limit: int, starting_after: str | None = None,
             ending_before: str | None = None) -> list[dict[str, Any]]:
        """Up to `limit` of the merchant's payment views with an id above `starting_after`,
        by id; with `ending_before`, those below it, nearest first (descending)."""

    def balance(self, merchant_id: str) -> list[dict[str, Any]]:
        """The merchant's ledger balances: {account, currency, amount} (readmodel.BALANCE_ACCOUNTS)."""

    def disputes(self, merchant_id: str, limit: int, starting_after: str | None = None,
                 ending_before: str | None = None) -> list[dict[str, Any]]:
        """The merchant's disputes by opening event id (ClickHousePayments.disputes)."""

    def dispute(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        """One of the merchant's disputes by its opening event id."""

    def payouts(self, merchant_id: str, limit: int, starting_after: str | None = None,
                ending_before: str | None = None) -> list[dict[str, Any]]:
        """The merchant's payouts by id (ClickHousePayments.payouts)."""

    def payout(self, merchant_id: str, payout_id: str) -> dict[str, Any] | None:
        """One of the merchant's payouts."""

    def saved_card(self, merchant_id: str, payment_id: str) -> str | None:
        """The vault token of the card of one of the merchant's payments that went through."""

    def balance_transactions(self, merchant_id: str, limit: int, after: dict[str, Any] | None = None,
                             before: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """The merchant's balance transactions around a cursor row (ClickHousePayments)."""

    def balance_transaction(self, merchant_id: str, entry_hex: str, kind: str) -> dict[str, Any] | None:
        """One of the merchant's balance transactions."""

    def transfers(self, merchant_id: str, limit: int, starting_after: str | None = None,
                  ending_before: str | None = None, transfer_id: str | None = None) -> list[dict[str, Any]]:
        """The platform's transfers to its connected accounts (ClickHousePayments.transfers)."""

    def application_fees(self, merchant_id: str, limit: int, starting_after: str | None = None,
                         ending_before: str | None = None, fee_id: str | None = None) -> list[dict[str, Any]]:
        """The platform's application fees (ClickHousePayments.application_fees)."""

    def events(self, merchant_id: str, limit: int, starting_after: str | None = None,
               ending_before: str | None = None) -> list[dict[str, Any]]:
        """The merchant's payment events by id (ClickHousePayments.events)."""

    def event(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        """One of the merchant's payment events."""


def _json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body, status_code=status, headers=headers)


def _error_response(e: ApiError) -> JSONResponse:
    return _json(e.status_code, e.body(), dict(e.headers))


class _Gate:
    """ASGI middleware on /v1: Bearer auth, the rate limit of the key, the body size
    bound. Each refusal answers before the app reads anything."""

    def __init__(self, app: ASGIApp, keys: ApiKeys, limits: RateLimits, max_body_bytes: int,
                 clock: Callable[[], float]) -> None:
        self.app, self.keys, self.limits, self.max_body_bytes, self.clock = app, keys, limits, max_body_bytes, clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(API_PREFIX):
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        auth = headers.get("authorization", "")
        who = self.keys.authenticate(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        if who is None:
            e = ApiError(401, "authentication_error", "invalid_api_key", "a valid secret key is required: Authorization: Bearer sk_...",
                         headers=(("WWW-Authenticate", "Bearer"),))
            return await _error_response(e)(scope, receive, send)
        key_id, merchant_id = who
        admitted, wait_s = self.limits.acquire(key_id, self.clock())
        if not admitted:
            e = ApiError(429, "rate_limit_error", "rate_limited", "too many requests for this key",
                         headers=(("Retry-After", retry_after_header(wait_s)),))
            return await _error_response(e)(scope, receive, send)
        if wait_s > 0:
            await asyncio.sleep(wait_s)  # queued: this request owns a future token
        body = await self._read_body(headers, receive)
        if body is None:
            e = ApiError(413, "invalid_request_error", "body_too_large", f"the body is over {self.max_body_bytes} bytes")
            return await _error_response(e)(scope, receive, send)
        scope.setdefault("state", {})["merchant_id"] = merchant_id
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # e.g. http.disconnect
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    async def _read_body(self, headers: dict[str, str], receive: Receive) -> bytes | None:
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_body_bytes:
            return None
        chunks, size = [], 0
        while True:
            msg = await receive()
            if msg["type"] != "http.request":
                break
            chunk = msg.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not msg.get("more_body", False):
                break
        return b"".join(chunks)


def _merchant(request: Request, _: Any = Depends(HTTPBearer(auto_error=False, description="sk_... secret key"))) -> str:
    # _Gate authenticated the request; the HTTPBearer dependency documents it in OpenAPI.
    return request.state.merchant_id


Merchant = Annotated[str, Depends(_merchant)]
IdemKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX_CHARS)]

_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 404, 409, 413, 429, 503)}
_WRITE_RESPONSES = {**_ERRORS, 402: {"model": ErrorBody}, 202: {"model": Accepted}}


def _read_model_unavailable() -> ApiError:
    return ApiError(503, "api_error", "read_model_unavailable", "listing needs the read model; retry later",
                    headers=(("Retry-After", "5"),))


def _validation_error(exc: RequestValidationError) -> ApiError:
    first = exc.errors()[0] if exc.errors() else {}
    loc = [str(x) for x in first.get("loc", ())]
    kind = first.get("type", "")
    where, path = (loc[0] if loc else ""), loc[1:]
    if kind == "json_invalid":
        return ApiError(400, "invalid_request_error", "invalid_json", "the body is not valid JSON")
    if where == "header":
        return ApiError(400, "invalid_request_error", "idempotency_key_missing" if kind == "missing" else "idempotency_key_invalid",
                        "an Idempotency-Key header of 1..255 characters is required", "Idempotency-Key")
    param = ".".join(path) or None
    if kind == "missing":
        return ApiError(400, "invalid_request_error", "parameter_missing", f"missing {param or 'body'}", param)
    if kind == "extra_forbidden":
        return ApiError(400, "invalid_request_error", "parameter_unknown", f"unknown parameter {param}", param)
    # pydantic's msg names the rule, never the input (which may be a card number).
    return ApiError(400, "invalid_request_error", "parameter_invalid", f"{param or 'body'}: {first.get('msg', 'invalid')}", param)


def create_app(bus: CommandBus, keys: ApiKeys, *, sealer: Sealer | None, config: ApiConfig = ApiConfig(),
               reader: PaymentReader | None = None, dashboard: Dashboard | None = None, instance: str | None = None,
               objects: Objects | None = None, webhooks: Webhooks | None = None, registry: Registry | None = None,
               clock: Callable[[], float] = time.monotonic,
               now: Callable[[], datetime] = lambda: datetime.now(timezone.utc), acs: Acs | None = None) -> FastAPI:
    """The API over `bus`. `sealer` seals each card to the card-intake key before it is
    published (None publishes the raw card: only for an app that publishes nothing, like
    the OpenAPI spec's). `instance` salts command ids (default: fresh per process,
    docs/api.md); `now` stamps commands' occurred_at: the API is where the event
    happens, so this is the event time, not business logic reading the clock.
    `dashboard` mounts /dashboard (streams/api/dashboard.py), outside /v1 and the spec.
    `acs` mounts the simulated issuer's 3-D Secure routes (streams/api/acs.py).
    `objects` keeps Customers and PaymentMethods (`paystream api`: the api-objects
    topic; default: this process's memory, for tests and the spec). `webhooks` is the
    registry WebhookEndpoints write (None: those routes answer 503). `registry` is the
    merchant registry Accounts read and write (streams/client/kyc.py KycDesk; None:
    those routes answer 503)."""
    instance = instance or secrets.token_hex(8)
    records = IdempotencyRecords(config.idempotency_records_max, config.max_in_flight)
    fp_secret = secrets.token_bytes(32)
    seen: OrderedDict[str, dict[str, Any]] = OrderedDict()  # latest outcome view per payment, bounded

    app = FastAPI(title="paystream merchant API", version="1.0.0",
                  description="Stripe-like payments over the paystream command stream (docs/api.md).")
    app.add_middleware(_Gate, keys=keys, limits=RateLimits(config.rate_per_s, config.rate_burst, config.rate_queue_max),
                       max_body_bytes=config.max_body_bytes, clock=clock)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, e: ApiError) -> JSONResponse:
        return _error_response(e)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        return _error_response(_validation_error(e))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {404: "resource_missing", 405: "method_not_allowed"}.get(e.status_code, "invalid_request")
        return _error_response(ApiError(e.status_code, "invalid_request_error", code, str(e.detail)))

    @app.exception_handler(Exception)
    async def _bug(_: Request, e: Exception) -> JSONResponse:
        log.error("unhandled %s in the API", type(e).__name__)  # no message: it could carry request data
        return _error_response(ApiError(500, "api_error", "internal_error", "internal error"))

    if dashboard is not None:
        app.include_router(router(dashboard))

    def remember(view: dict[str, Any]) -> None:
        if view.get("payment_id") and view.get("payment_status"):
            seen[view["payment_id"]] = view
            seen.move_to_end(view["payment_id"])
            while len(seen) > config.idempotency_records_max:
                seen.popitem(last=False)

    async def write(merchant: str, key: str, route: str, payment_id: str, body: dict[str, Any],
                    command: dict[str, Any], *,
                    answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any], bool]] = outcome_response,
                    pending: Callable[[str], JSONResponse] | None = None) -> JSONResponse:
        """One write: `answer` renders a committed outcome (status, body, replayed),
        `pending` the answer past the timeout (default: 202 with a status URL)."""
        cid = derive_api_command_id(merchant, key, route, instance)
        command = command | {"command_id": cid, "occurred_at": now()}
        if sealer is not None:
            try:  # sealed to this command: the card cannot be replayed into another one
                command = sealer.seal_command(command)
            except CardError as e:
                raise ApiError(402, "card_error", e.reason, e.detail, "card.cvc" if e.reason == "invalid_cvc" else "card.number") from None
        try:
            begin = records.begin(cid, fingerprint(fp_secret, route, body), payment_id)
        except InFlightFull:
            raise ApiError(503, "api_error", "overloaded", "too many requests in flight; retry with the same key",
                           headers=(("Retry-After", "1"),)) from None
        if begin.action == "conflict":
            raise ApiError(409, "idempotency_error", "idempotency_conflict",
                           "this Idempotency-Key was used with other parameters")
        if begin.action == "in_use":
            raise ApiError(409, "idempotency_error", "idempotency_key_in_use",
                           "a request with this Idempotency-Key is in progress; retry later")
        if begin.action == "replay":
            assert begin.response is not None
            return _json(begin.response.status_code, begin.response.body, {"Idempotent-Replayed": "true"})
        settled = False
        try:
            if begin.action == "publish":
                try:
                    await bus.publish(command)
                except BusUnavailable as e:
                    records.forget(cid)
                    settled = True
                    log.warning("publish failed: %s", e)
                    raise ApiError(503, "api_error", "unavailable", "the payment was not submitted; retry with the same key",
                                   headers=(("Retry-After", "1"),)) from None
            outcome = await bus.outcome(cid, config.outcome_timeout_s)
            if outcome is None:
                if pending is not None:
                    return pending(payment_id)
                status_url = f"/v1/payments/{payment_id}"
                return _json(202, {"object": "payment_operation", "payment_id": payment_id, "status": "processing",
                                   "status_url": status_url}, {"Location": status_url})
            remember(outcome)
            status, out_body, replayed = answer(outcome)
            records.finish(cid, Response(status, out_body))
            settled = True
            return _json(status, out_body, {"Idempotent-Replayed": "true"} if replayed else None)
        finally:
            if not settled:
                records.leave(cid)  # timed out or the client went away: the command is out, a retry awaits it

    async def lookup(pid: str) -> dict[str, Any] | None:
        """A payment's view: the read model's, or the outcome this process saw when it is newer."""
        view = None
        if reader is not None:
            try:
                view = await asyncio.to_thread(reader.get, pid)
            except Exception as e:  # the read model is down: answer from what this process saw
                log.warning("read model unavailable: %s", type(e).__name__)
        return fresher(view, seen.get(pid))

    async def from_read_model(query: Callable[[PaymentReader], Any]) -> Any:
        """A query that needs the read model: 503 read_model_unavailable without it."""
        if reader is None:
            raise _read_model_unavailable()
        try:
            return await asyncio.to_thread(query, reader)
        except Exception as e:
            log.warning("read model unavailable: %s", type(e).__name__)
            raise _read_model_unavailable() from None

    async def list_views(merchant: str, limit: int, starting_after: str | None,
                         ending_before: str | None = None) -> list[dict[str, Any]]:
        """Up to `limit` of the merchant's payments from the read model, by id."""
        return await from_read_model(lambda r: r.list(merchant, limit, starting_after, ending_before))

    if acs is not None:
        app.include_router(acs_router(acs, lookup, now, PAYMENT_ID_PATTERN.pattern))

    deps = StripeDeps(write=write, lookup=lookup, read_model=from_read_model, now=now,
                      max_records=config.idempotency_records_max, objects=objects or MemoryObjects())
    install_stripe(app, deps)
    install_customers(app, deps)
    install_events(app, deps, webhooks)
    install_accounts(app, deps, registry)

    def follow_up_id(payment_id: str) -> str:
        if not PAYMENT_ID_PATTERN.match(payment_id):
            raise not_found()
        return payment_id

    @app.post("/v1/payments", response_model=Payment, responses=_WRITE_RESPONSES, summary="Create (authorize) a payment")
    async def create_payment(body: CreatePayment, merchant: Merchant, idempotency_key: IdemKey) -> JSONResponse:
        payment_id = derive_payment_id(merchant, idempotency_key)
        command = create_command(merchant, idempotency_key, payment_id, body.amount_minor, body.currency,
                                 body.capture_method, body.card.model_dump(), body.metadata)
        return await write(merchant, idempotency_key, "create", payment_id, body.model_dump(), command)

    @app.post("/v1/payments/{payment_id}/capture", response_model=Payment, responses=_WRITE_RESPONSES,
              summary="Capture an authorized payment (partially, or what is left)")
    async def capture(payment_id: str, merchant: Merchant, idempotency_key: IdemKey, body: AmountIn | None = None) -> JSONResponse:
        pid, amount = follow_up_id(payment_id), (body.amount_minor if body else None)
        return await write(merchant, idempotency_key, f"capture:{pid}", pid, {"amount_minor": amount},
                           follow_up_command("capture", merchant, idempotency_key, pid, amount))

    @app.post("/v1/payments/{payment_id}/void", response_model=Payment, responses=_WRITE_RESPONSES,
              summary="Void an uncaptured authorization")
    async def void(payment_id: str, merchant: Merchant, idempotency_key: IdemKey, body: Empty | None = None) -> JSONResponse:
        pid = follow_up_id(payment_id)
        return await write(merchant, idempotency_key, f"void:{pid}", pid, {},
                           follow_up_command("void", merchant, idempotency_key, pid, None))

    @app.post("/v1/payments/{payment_id}/refunds", response_model=Payment, responses=_WRITE_RESPONSES,
              summary="Refund a captured payment (partially, or what is left)")
    async def refund(payment_id: str, merchant: Merchant, idempotency_key: IdemKey, body: AmountIn | None = None) -> JSONResponse:
        pid, amount = follow_up_id(payment_id), (body.amount_minor if body else None)
        return await write(merchant, idempotency_key, f"refund:{pid}", pid, {"amount_minor": amount},
                           follow_up_command("refund", merchant, idempotency_key, pid, amount))

    @app.post("/v1/payments/{payment_id}/confirm", response_model=Payment, responses=_WRITE_RESPONSES,
              summary="Complete a 3DS step-up with the cardholder's authentication result")
    async def confirm(payment_id: str, merchant: Merchant, idempotency_key: IdemKey, body: ConfirmIn) -> JSONResponse:
        pid = follow_up_id(payment_id)
        three_ds = body.three_ds.model_dump()
        return await write(merchant, idempotency_key, f"confirm:{pid}", pid, {"three_ds": three_ds},
                           follow_up_command("confirm", merchant, idempotency_key, pid, None) | {"three_ds": three_ds})

    # A dispute is opened and decided by the card network (dispute_open / dispute_close
    # commands from the acquirer's feed); the merchant answers it with evidence.
    @app.post("/v1/payments/{payment_id}/dispute/evidence", response_model=Payment, responses=_WRITE_RESPONSES,
              summary="Submit evidence for the payment's open dispute")
    async def dispute_evidence(payment_id: str, merchant: Merchant, idempotency_key: IdemKey, body: EvidenceIn) -> JSONResponse:
        pid = follow_up_id(payment_id)
        return await write(merchant, idempotency_key, f"dispute_evidence:{pid}", pid, {"evidence": body.evidence},
                           dispute_evidence_command(merchant, idempotency_key, pid, body.evidence))

    @app.get("/v1/payments/{payment_id}", response_model=Payment, responses=_ERRORS, summary="Retrieve a payment")
    async def get_payment(payment_id: str, merchant: Merchant) -> JSONResponse:
        pid = follow_up_id(payment_id)
        view = await lookup(pid)
        if view is None or view["merchant_id"] != merchant:
            raise not_found()  # the same answer for unknown and another merchant's payment
        return _json(200, payment_body(view))

    @app.get("/v1/payments", response_model=PaymentList, responses={**_ERRORS, 403: {"model": ErrorBody}},
             summary="List your payments (from the read model), by payment id")
    async def list_payments(
        merchant: Merchant,
        limit: Annotated[int, Query(ge=1, le=LIST_LIMIT_MAX)] = 10,
        starting_after: Annotated[str | None, Query(pattern=PAYMENT_ID_PATTERN.pattern)] = None,
        merchant_id: Annotated[str | None, Query(alias="merchant", max_length=64,
                                                 description="Optional; must be the key's own merchant")] = None,
    ) -> JSONResponse:
        if merchant_id is not None and merchant_id != merchant:
            raise ApiError(403, "permission_error", "merchant_mismatch", "a key lists its own merchant's payments only",
                           "merchant")
        views = await list_views(merchant, limit + 1, starting_after)
        assert all(v["merchant_id"] == merchant for v in views), "the read model returned another merchant's payment"
        return _json(200, {"object": "list", "url": "/v1/payments", "has_more": len(views) > limit,
                           "data": [payment_body(v) for v in views[:limit]]})

    return app
