"""Stripe's BalanceTransactions and Events (from the read models: the ledger's lines
and the payment events) and WebhookEndpoints (the webhook registry that `paystream
webhooks run` delivers to, `<data_dir>/webhooks.json`)."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from connectors.webhooks import registry
from streams.api import stripe_params as params
from streams.api.errors import ApiError
from streams.api.forms import FormError, as_list
from streams.api.stripe_customers import no_such, page
from streams.api.stripe_bodies import (BalanceTransaction, BalanceTransactionList, Deleted, Event, EventList,
                                       WebhookEndpoint, WebhookEndpointList)
from streams.api.stripe_objects import balance_transaction_object, balance_transaction_of, webhook_endpoint_object
from streams.api.stripe_routes import (_AUTH, _ERRORS, _EXPAND, _HEADERS, _LIST_PARAMS, StripeDeps, _form, _form_body,
                                       _query)
from streams.domain.stripe_shapes import event_object

EVENT_ID = re.compile(r"^evt_[0-9a-f]{32}$")
TXN_CURSOR = re.compile(r"^txn_[0-9a-f]{32}[pia]$")
WEBHOOK_ENDPOINT_ID = re.compile(r"^we_[0-9a-f]{32}$")
ENABLED_EVENTS_MAX = 256
_ENDPOINT_SCHEMA = {"type": "object", "required": ["url", "enabled_events"], "properties": {
    "url": {"type": "string"}, "enabled_events": {"type": "array", "items": {"type": "string"}},
    "api_version": {"type": "string"}, "expand": _EXPAND}}


@dataclass(frozen=True)
class Webhooks:
    """Where the endpoints live and the merchant's signing secret (`whsec_...`)."""

    registry_path: Path
    secret: Callable[[str], str]


def install(app: FastAPI, deps: StripeDeps, webhooks: Webhooks | None) -> None:
    """Add /v1/balance_transactions, /v1/events and /v1/webhook_endpoints to `app`."""
    registry_lock = asyncio.Lock()  # one writer of the registry file in this process

    async def own_txn(merchant: str, txn: str, param: str = "id") -> dict[str, Any]:
        named = balance_transaction_of(txn)
        row = None if named is None else await deps.read_model(lambda r: r.balance_transaction(merchant, *named))
        if row is None:
            raise no_such("balance transaction", param)
        return row

    @app.get("/v1/balance_transactions", response_model=BalanceTransactionList, responses=_ERRORS, dependencies=_AUTH,
             summary="Your balance transactions, from the ledger, oldest first (Stripe cursors)", tags=["stripe"],
             openapi_extra={"parameters": _LIST_PARAMS})
    async def list_balance_transactions(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), TXN_CURSOR, "balance transaction")
        after = await own_txn(merchant, p.starting_after, "starting_after") if p.starting_after else None
        before = await own_txn(merchant, p.ending_before, "ending_before") if p.ending_before else None
        rows = await deps.read_model(lambda r: r.balance_transactions(merchant, p.limit + 1, after, before))
        return JSONResponse(params.list_page(rows, p, "/v1/balance_transactions", balance_transaction_object))

    @app.get("/v1/balance_transactions/{txn}", response_model=BalanceTransaction, responses=_ERRORS, dependencies=_AUTH,
             summary="Retrieve a balance transaction (Stripe)", tags=["stripe"])
    async def retrieve_balance_transaction(txn: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        return JSONResponse(balance_transaction_object(await own_txn(request.state.merchant_id, txn)))

    @app.get("/v1/events", response_model=EventList, responses=_ERRORS, dependencies=_AUTH,
             summary="Your payments' events, by id (Stripe cursors)", tags=["stripe"], openapi_extra={"parameters": _LIST_PARAMS})
    async def list_events(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), EVENT_ID, "Event")
        rows = await deps.read_model(lambda r: r.events(merchant, p.limit + 1, p.starting_after, p.ending_before))
        assert all(row["merchant_id"] == merchant for row in rows), "the read model returned another merchant's event"
        return JSONResponse(params.list_page(rows, p, "/v1/events", event_object))

    @app.get("/v1/events/{event}", response_model=Event, responses=_ERRORS, dependencies=_AUTH,
             summary="Retrieve an event (Stripe)", tags=["stripe"])
    async def retrieve_event(event: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        merchant = request.state.merchant_id
        row = await deps.read_model(lambda r: r.event(merchant, event)) if EVENT_ID.match(event) else None
        if row is None:
            raise no_such("event")
        return JSONResponse(event_object(row))

    def configured() -> Webhooks:
        if webhooks is None:
            raise ApiError(503, "api_error", "webhooks_unavailable", "this API serves no webhook registry",
                           headers=(("Retry-After", "60"),))
        return webhooks

    def load(path: Path) -> registry.Registry:
        try:
            return registry.load(path)
        except registry.RegistryError:
            raise ApiError(503, "api_error", "webhooks_unavailable", "the webhook registry cannot be read",
                           headers=(("Retry-After", "5"),)) from None

    def own_endpoint(merchant: str, endpoint_id: str) -> registry.Endpoint:
        for endpoint in load(configured().registry_path).of(merchant):
            if endpoint.endpoint_id == endpoint_id:
                return endpoint
        raise no_such("webhook endpoint")

    @app.post("/v1/webhook_endpoints", response_model=WebhookEndpoint, responses=_ERRORS, dependencies=_AUTH,
              summary="Register a webhook endpoint: every event of yours goes to it (Stripe)", tags=["stripe"],
              openapi_extra=_form_body(_ENDPOINT_SCHEMA) | {"parameters": _HEADERS})
    async def create_webhook_endpoint(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        form = await _form(request)
        params.reject_unknown(form, {"url", "enabled_events", "api_version", "expand"})
        params.expand(form)
        url = params.string(form, "url", max_chars=registry.MAX_URL_CHARS)
        if url is None:
            raise params.missing("url")
        if form.get("enabled_events") is None:
            raise params.missing("enabled_events")
        try:
            events = as_list(form["enabled_events"], "enabled_events")
        except FormError as e:
            raise params.form_error(e) from None
        if not events or len(events) > ENABLED_EVENTS_MAX or not all(isinstance(e, str) and 0 < len(e) <= 100 for e in events):
            raise params.invalid("enabled_events", f"enabled_events takes 1..{ENABLED_EVENTS_MAX} event types")
        params.string(form, "api_version", max_chars=100)
        hooks = configured()
        try:  # before registering: an endpoint whose secret cannot be handed out is not made
            secret = hooks.secret(merchant)
        except Exception as e:  # the key store is not readable (its message names paths, not secrets)
            raise ApiError(503, "api_error", "webhooks_unavailable", f"the webhook signing key: {type(e).__name__}",
                           headers=(("Retry-After", "5"),)) from None
        async with registry_lock:  # read-modify-write of the file; the same URL again is the same endpoint
            try:
                reg, endpoint = registry.add(load(hooks.registry_path), merchant, url)
            except registry.RegistryError as e:
                raise params.invalid("url", str(e)[:200]) from None
            await asyncio.to_thread(registry.save, reg, hooks.registry_path)
        return JSONResponse(webhook_endpoint_object(endpoint.endpoint_id, endpoint.url, secret))

    @app.get("/v1/webhook_endpoints", response_model=WebhookEndpointList, responses=_ERRORS, dependencies=_AUTH,
             summary="Your webhook endpoints (Stripe)", tags=["stripe"], openapi_extra={"parameters": _LIST_PARAMS})
    async def list_webhook_endpoints(request: Request) -> JSONResponse:
        p = params.list_params(_query(request), WEBHOOK_ENDPOINT_ID, "webhook endpoint")
        mine = sorted(load(configured().registry_path).of(request.state.merchant_id), key=lambda e: e.endpoint_id)
        docs = [{"id": e.endpoint_id, "url": e.url} for e in mine]
        return page(docs, p, "/v1/webhook_endpoints", lambda d: webhook_endpoint_object(d["id"], d["url"]))

    @app.get("/v1/webhook_endpoints/{endpoint}", response_model=WebhookEndpoint, responses=_ERRORS, dependencies=_AUTH,
             summary="Retrieve a webhook endpoint (Stripe)", tags=["stripe"])
    async def retrieve_webhook_endpoint(endpoint: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        found = own_endpoint(request.state.merchant_id, endpoint)
        return JSONResponse(webhook_endpoint_object(found.endpoint_id, found.url))

    @app.delete("/v1/webhook_endpoints/{endpoint}", response_model=Deleted, responses=_ERRORS, dependencies=_AUTH,
                summary="Delete a webhook endpoint (Stripe)", tags=["stripe"])
    async def delete_webhook_endpoint(endpoint: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        hooks = configured()
        async with registry_lock:
            own_endpoint(merchant, endpoint)
            reg = registry.remove(load(hooks.registry_path), merchant, endpoint)
            await asyncio.to_thread(registry.save, reg, hooks.registry_path)
        return JSONResponse({"id": endpoint, "object": "webhook_endpoint", "deleted": True})
