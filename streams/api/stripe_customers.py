"""Stripe's Customers and PaymentMethods on the merchant API, kept as the API's own
objects (streams/api/objects.py: the compacted `api-objects` topic).

A PaymentMethod is a saved card: a PaymentIntent created with
`setup_future_usage` saves the card it went through with (`pm_<hex>` is that
payment, whose events carry the card's vault token), attached to the intent's
customer; `payment_method=pm_...` with that customer charges it again by token.
The API never tokenizes (the vault is ingest's, in the PCI zone), so there is no
`POST /v1/payment_methods` with a card number (docs/api.md).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from streams.api import stripe_params as params
from streams.api.bus import BusUnavailable
from streams.api.errors import ApiError
from streams.api.stripe_bodies import Customer, CustomerList, Deleted, PaymentMethod, PaymentMethodList
from streams.api.stripe_objects import customer_id, customer_object, payment_method_object
from streams.api.stripe_routes import (_AUTH, _ERRORS, _EXPAND, _HEADERS, _LIST_PARAMS, _METADATA, StripeDeps, _form,
                                       _form_body, _idempotency_key, _query)

_CUSTOMER_SCHEMA = {"type": "object", "properties": {
    "email": {"type": "string"}, "name": {"type": "string"}, "description": {"type": "string"},
    "phone": {"type": "string"}, "metadata": _METADATA, "expand": _EXPAND,
    "invoice_settings": {"type": "object", "properties": {"default_payment_method": {"type": "string"}}}}}
_ATTACH_SCHEMA = {"type": "object", "required": ["customer"], "properties": {"customer": {"type": "string"},
                                                                              "expand": _EXPAND}}
_EMPTY_SCHEMA = {"type": "object", "properties": {"expand": _EXPAND}}
_PM_LIST_PARAMS = [*_LIST_PARAMS, {"name": "customer", "in": "query", "required": False, "schema": {"type": "string"}},
                   {"name": "type", "in": "query", "required": False, "schema": {"type": "string"}}]


def no_such(kind: str, param: str = "id") -> ApiError:
    """Unknown and another merchant's object get the same answer (nothing leaks)."""
    return ApiError(404, "invalid_request_error", "resource_missing", f"No such {kind}", param)


def unavailable() -> ApiError:
    return ApiError(503, "api_error", "unavailable", "not stored; retry with the same Idempotency-Key",
                    headers=(("Retry-After", "1"),))


def page(docs: list[dict[str, Any]], p: params.ListParams, url: str,
         render: Callable[[dict[str, Any]], dict[str, Any]]) -> JSONResponse:
    """A Stripe list of `docs` (sorted by id) after or before the cursor: the rows a
    reader would answer (nearest the cursor first, one more than the limit), paged as
    the read-model lists are (`list_page`)."""
    if p.ending_before is not None:
        rows = [d for d in reversed(docs) if d["id"] < p.ending_before][:p.limit + 1]
    else:
        rows = [d for d in docs if p.starting_after is None or d["id"] > p.starting_after][:p.limit + 1]
    return JSONResponse(params.list_page(rows, p, url, render))


def _fingerprint(form: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(form, sort_keys=True).encode()).hexdigest()


def install(app: FastAPI, deps: StripeDeps) -> None:
    """Add /v1/customers and /v1/payment_methods to `app`."""
    objects = deps.objects

    async def put(doc: dict[str, Any]) -> None:
        try:
            await objects.put(doc)
        except BusUnavailable:
            raise unavailable() from None

    async def own_customer(merchant: str, cus: str, param: str = "id") -> dict[str, Any]:
        doc = await objects.get(merchant, cus) if params.CUSTOMER_ID.match(cus) else None
        if doc is None or doc["object"] != "customer":
            raise no_such("customer", param)
        return doc

    async def own_payment_method(merchant: str, pm: str) -> dict[str, Any]:
        doc = await objects.get(merchant, pm) if params.SAVED_PAYMENT_METHOD.match(pm) else None
        if doc is None or doc["object"] != "payment_method":
            raise no_such("PaymentMethod")
        return doc

    async def checked_default(merchant: str, cus: str, pm: str | None) -> str | None:
        """A customer's default PaymentMethod must be one attached to it ("" unsets)."""
        if not pm:
            return None
        doc = await objects.get(merchant, pm)
        if doc is None or doc.get("customer") != cus:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such PaymentMethod attached to this customer",
                           "invoice_settings[default_payment_method]")
        return pm

    @app.post("/v1/customers", response_model=Customer, responses=_ERRORS, dependencies=_AUTH,
              summary="Create a customer (Stripe)", tags=["stripe"],
              openapi_extra=_form_body(_CUSTOMER_SCHEMA) | {"parameters": _HEADERS})
    async def create_customer(request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        form = await _form(request)
        p = params.customer(form)
        cus, fp = customer_id(merchant, key), _fingerprint(form)
        found = await objects.get(merchant, cus)
        if found is not None:  # Stripe's rules: the same request replays, another is refused
            if found.get("created_with") != fp:
                raise ApiError(400, "idempotency_error", "idempotency_key_reused",
                               "Keys for idempotent requests can only be used with the same parameters they were first used with")
            return JSONResponse(customer_object(found), headers={"Idempotent-Replayed": "true"})
        if p.default_payment_method:
            raise params.invalid("invoice_settings[default_payment_method]", "attach a PaymentMethod to the customer first")
        doc = {"id": cus, "object": "customer", "merchant_id": merchant, "created": int(deps.now().timestamp()),
               **{k: v for k, v in p.fields.items() if v is not None},
               "metadata": {k: v for k, v in (p.metadata or {}).items() if v}, "default_payment_method": None,
               "created_with": fp}
        await put(doc)
        return JSONResponse(customer_object(doc))

    @app.get("/v1/customers/{customer}", response_model=Customer, responses=_ERRORS, dependencies=_AUTH,
             summary="Retrieve a customer (Stripe)", tags=["stripe"])
    async def retrieve_customer(customer: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        return JSONResponse(customer_object(await own_customer(request.state.merchant_id, customer)))

    @app.post("/v1/customers/{customer}", response_model=Customer, responses=_ERRORS, dependencies=_AUTH,
              summary="Update a customer (Stripe)", tags=["stripe"],
              openapi_extra=_form_body(_CUSTOMER_SCHEMA) | {"parameters": _HEADERS})
    async def update_customer(customer: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.customer(await _form(request))
        doc = await own_customer(merchant, customer)
        new = doc | p.fields
        if p.metadata is not None:
            merged = {} if p.metadata == {} else {**doc.get("metadata", {}), **p.metadata}
            new["metadata"] = {k: v for k, v in merged.items() if v}
        if p.default_payment_method is not None:
            new["default_payment_method"] = await checked_default(merchant, customer, p.default_payment_method)
        if new != doc:
            await put(new)
        return JSONResponse(customer_object(new))

    @app.delete("/v1/customers/{customer}", response_model=Deleted, responses=_ERRORS, dependencies=_AUTH,
                summary="Delete a customer; its PaymentMethods are detached (Stripe)", tags=["stripe"])
    async def delete_customer(customer: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        await own_customer(merchant, customer)
        for pm in await objects.list(merchant, "payment_method", lambda d: d.get("customer") == customer):
            await put(pm | {"customer": None})
        try:
            await objects.delete(merchant, customer)
        except BusUnavailable:
            raise unavailable() from None
        return JSONResponse({"id": customer, "object": "customer", "deleted": True})

    @app.get("/v1/customers", response_model=CustomerList, responses=_ERRORS, dependencies=_AUTH,
             summary="List your customers, by id (Stripe cursors)", tags=["stripe"], openapi_extra={"parameters": _LIST_PARAMS})
    async def list_customers(request: Request) -> JSONResponse:
        p = params.list_params(_query(request), params.CUSTOMER_ID, "Customer")
        docs = await objects.list(request.state.merchant_id, "customer")
        return page(docs, p, "/v1/customers", customer_object)

    @app.get("/v1/customers/{customer}/payment_methods", response_model=PaymentMethodList, responses=_ERRORS,
             dependencies=_AUTH, summary="A customer's saved PaymentMethods (Stripe)", tags=["stripe"],
             openapi_extra={"parameters": _PM_LIST_PARAMS[:3] + _PM_LIST_PARAMS[4:]})
    async def customer_payment_methods(customer: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        query = _query(request)
        _, kind, p = params.payment_method_list({k: v for k, v in query.items() if k != "customer"})
        await own_customer(merchant, customer)
        docs = await objects.list(merchant, "payment_method", lambda d: d.get("customer") == customer)
        docs = [d for d in docs if kind in (None, d["type"])]
        return page(docs, p, f"/v1/customers/{customer}/payment_methods", payment_method_object)

    @app.post("/v1/payment_methods", response_model=PaymentMethod, responses=_ERRORS, dependencies=_AUTH,
              summary="Not here: a card is saved by paying with it (setup_future_usage; docs/api.md)", tags=["stripe"],
              openapi_extra={"parameters": _HEADERS})
    async def create_payment_method(request: Request) -> JSONResponse:
        await _form(request)
        raise ApiError(400, "invalid_request_error", "payment_method_create_unsupported",
                       "cards are tokenized in the PCI zone as they pay: save one with a PaymentIntent's "
                       "setup_future_usage (docs/api.md)")

    @app.get("/v1/payment_methods/{payment_method}", response_model=PaymentMethod, responses=_ERRORS,
             dependencies=_AUTH, summary="Retrieve a saved PaymentMethod (Stripe)", tags=["stripe"])
    async def retrieve_payment_method(payment_method: str, request: Request) -> JSONResponse:
        params.expand_only(_query(request))
        return JSONResponse(payment_method_object(await own_payment_method(request.state.merchant_id, payment_method)))

    @app.post("/v1/payment_methods/{payment_method}/attach", response_model=PaymentMethod, responses=_ERRORS,
              dependencies=_AUTH, summary="Attach a saved PaymentMethod to a customer (Stripe)", tags=["stripe"],
              openapi_extra=_form_body(_ATTACH_SCHEMA) | {"parameters": _HEADERS})
    async def attach_payment_method(payment_method: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        cus, _ = params.attach(await _form(request))
        doc = await own_payment_method(merchant, payment_method)
        await own_customer(merchant, cus, "customer")
        if doc.get("customer") not in (None, cus):
            raise ApiError(400, "invalid_request_error", "payment_method_unexpected_state",
                           "this PaymentMethod is attached to another customer; detach it first", "customer")
        if doc.get("customer") != cus:
            doc = doc | {"customer": cus}
            await put(doc)
        return JSONResponse(payment_method_object(doc))

    @app.post("/v1/payment_methods/{payment_method}/detach", response_model=PaymentMethod, responses=_ERRORS,
              dependencies=_AUTH, summary="Detach a PaymentMethod: it cannot be charged again (Stripe)", tags=["stripe"],
              openapi_extra=_form_body(_EMPTY_SCHEMA) | {"parameters": _HEADERS})
    async def detach_payment_method(payment_method: str, request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        params.expand_only(await _form(request))
        doc = await own_payment_method(merchant, payment_method)
        cus = doc.get("customer")
        if cus is None:
            raise ApiError(400, "invalid_request_error", "payment_method_unexpected_state",
                           "this PaymentMethod is not attached to a customer", "payment_method")
        owner = await objects.get(merchant, cus)
        if owner is not None and owner.get("default_payment_method") == payment_method:
            await put(owner | {"default_payment_method": None})
        doc = doc | {"customer": None}
        await put(doc)
        return JSONResponse(payment_method_object(doc))

    @app.get("/v1/payment_methods", response_model=PaymentMethodList, responses=_ERRORS, dependencies=_AUTH,
             summary="List a customer's PaymentMethods (Stripe)", tags=["stripe"],
             openapi_extra={"parameters": _PM_LIST_PARAMS})
    async def list_payment_methods(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        cus, kind, p = params.payment_method_list(_query(request))
        if cus is None:
            raise params.missing("customer")  # Stripe lists a customer's PaymentMethods
        await own_customer(merchant, cus, "customer")
        docs = await objects.list(merchant, "payment_method", lambda d: d.get("customer") == cus and kind in (None, d["type"]))
        return page(docs, p, "/v1/payment_methods", payment_method_object)

