"""Stripe's routes on the merchant API: PaymentIntents and Refunds over the same
write path as /v1/payments (streams/api/app.py: idempotency record -> publish once
-> await the outcome), answered with Stripe's objects and errors
(streams/api/stripe_objects.py) from Stripe's form bodies (streams/api/forms.py,
streams/api/stripe_params.py). docs/api.md says what differs from Stripe and why.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer

from schemas.ids import derive_payment_id
from streams.api import stripe_params as params
from streams.api.bodies import ErrorBody
from streams.api.bus import BusUnavailable
from streams.api.commands import create_command, dispute_accept_command, dispute_evidence_command, follow_up_command
from streams.api.errors import ApiError
from streams.api.forms import FormError, decode_form
from streams.api.objects import Objects
from streams.api.stripe_bodies import (
    Balance,
    Dispute,
    DisputeList,
    PaymentIntent,
    PaymentIntentList,
    Payout,
    PayoutList,
    Refund,
    RefundList,
)
from streams.api.stripe_objects import (
    REFUND_ID,
    balance_object,
    mandate_id,
    opened_event_of,
    outcome_answer,
    payment_id_of,
    payout_object,
    refund_id,
    refund_object,
    saved_payment_method_id,
    stripe_error,
)
from streams.domain.stripe_shapes import IntentRequest, dispute_id, dispute_object, payment_intent
from streams.stages.ingest import EVIDENCE_MAX_CHARS

IDEMPOTENCY_KEY_MAX_CHARS = 255
# A payment's card is saved once it went through (setup_future_usage).
SAVES_CARD = frozenset({"authorized", "partially_captured", "captured"})
# How long a charge of a just-saved card waits for the sink to bring its token.
SAVED_CARD_WAIT_S = 10.0
READ_MODEL_POLL_S = 0.2
FORM = "application/x-www-form-urlencoded"

# Our parameter names (the pipeline's, in ApiError.param) -> each route's.
_CREATE_PARAMS = {
    "amount_minor": "amount",
    "card.number": "payment_method_data[card][number]",
    "card.cvc": "payment_method_data[card][cvc]",
    "card.exp_month": "payment_method_data[card][exp_month]",
    "card.exp_year": "payment_method_data[card][exp_year]",
    "card": "payment_method",
    "splits": "transfer_data[destination]",
    "platform_fee_minor": "application_fee_amount",
}
_CAPTURE_PARAMS = {"amount_minor": "amount_to_capture"}
_REFUND_PARAMS = {"amount_minor": "amount"}

Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any], bool]]
Pending = Callable[[str], JSONResponse]
Write = Callable[..., Awaitable[JSONResponse]]
Lookup = Callable[[str], Awaitable[dict[str, Any] | None]]

K = TypeVar("K")
V = TypeVar("V")


@dataclass
class Bounded(Generic[K, V]):
    """An insertion-ordered map that forgets its oldest entries past `max_items`."""

    max_items: int
    _items: OrderedDict[K, V] = field(default_factory=OrderedDict)

    def get(self, key: K) -> V | None:
        return self._items.get(key)

    def put(self, key: K, value: V) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def setdefault(self, key: K, value: V) -> V:
        if key not in self._items:
            self.put(key, value)
        return self._items[key]


@dataclass
class StripeDeps:
    """What the Stripe routes take from the app: its write path, its payment lookup
    and its read-model queries."""

    write: Write  # write(merchant, key, route, payment_id, body, command, answer=, pending=)
    lookup: Lookup  # a payment's view: the read model's, or this process's newer outcome
    read_model: Callable[[Callable[[Any], Any]], Awaitable[Any]]  # runs a PaymentReader query; 503 without one
    now: Callable[[], datetime]
    max_records: int
    objects: Objects  # Customers and saved PaymentMethods (streams/api/objects.py)


_ERRORS = {code: {"model": ErrorBody} for code in (400, 401, 402, 404, 409, 413, 429, 503)}
# The app's gate authenticates; this documents the bearer key in the spec.
_AUTH = [Depends(HTTPBearer(auto_error=False, description="sk_... secret key"))]


def _form_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"requestBody": {"required": False, "content": {FORM: {"schema": schema}}}}


_EXPAND = {"type": "array", "items": {"type": "string"}}
_METADATA = {"type": "object", "additionalProperties": {"type": "string"}}
_CREATE_SCHEMA = {
    "type": "object",
    "required": ["amount", "currency", "confirm"],
    "properties": {
        "amount": {"type": "integer", "minimum": 1},
        "currency": {"type": "string"},
        "confirm": {"type": "boolean", "description": "Must be true: paystream authorizes as it creates."},
        "capture_method": {"type": "string", "enum": ["automatic", "automatic_async", "manual"]},
        "payment_method": {
            "type": "string",
            "description": "A saved PaymentMethod (pm_<hex>, with its customer) or one of "
            "Stripe's test PaymentMethods (pm_card_visa, ...).",
        },
        "payment_method_types": {
            "type": "array",
            "items": {"type": "string", "enum": sorted(params.PAYMENT_METHOD_TYPES)},
        },
        "payment_method_data": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": sorted(params.PAYMENT_METHOD_TYPES)},
                "card": {
                    "type": "object",
                    "description": "A card, or a device wallet's token: card[wallet][type, token, cryptogram].",
                    "properties": {
                        "number": {"type": "string"},
                        "exp_month": {"type": "integer"},
                        "exp_year": {"type": "integer"},
                        "cvc": {"type": "string"},
                        "wallet": {
                            "type": "object",
                            "properties": {
                                "type": {"type": "string", "enum": ["apple_pay", "google_pay"]},
                                "token": {"type": "string"},
                                "cryptogram": {"type": "string"},
                            },
                        },
                    },
                },
                "us_bank_account": {
                    "type": "object",
                    "properties": {
                        "account_number": {"type": "string"},
                        "routing_number": {"type": "string"},
                        "account_holder_type": {"type": "string", "enum": ["company", "individual"]},
                        "account_type": {"type": "string", "enum": ["checking", "savings"]},
                    },
                },
                "sepa_debit": {"type": "object", "properties": {"iban": {"type": "string"}}},
                "billing_details": {"type": "object"},
            },
        },
        "customer": {"type": "string"},
        "setup_future_usage": {"type": "string", "enum": sorted(params.SETUP_FUTURE_USAGE)},
        "off_session": {"anyOf": [{"type": "boolean"}, {"type": "string", "enum": ["one_off", "recurring"]}]},
        "mandate": {"type": "string", "description": "A bank debit mandate the merchant holds (1..35 characters)."},
        "mandate_data": {
            "type": "object",
            "properties": {
                "customer_acceptance": {
                    "type": "object",
                    "properties": {
                        "type": {"type": "string", "enum": ["offline", "online"]},
                        "online": {
                            "type": "object",
                            "properties": {"ip_address": {"type": "string"}, "user_agent": {"type": "string"}},
                        },
                    },
                }
            },
        },
        "metadata": _METADATA,
        "description": {"type": "string"},
        "expand": _EXPAND,
    },
}
_CAPTURE_SCHEMA = {
    "type": "object",
    "properties": {
        "amount_to_capture": {"type": "integer", "minimum": 1},
        "final_capture": {"type": "boolean"},
        "expand": _EXPAND,
    },
}
_CANCEL_SCHEMA = {
    "type": "object",
    "properties": {
        "cancellation_reason": {"type": "string", "enum": sorted(params.CANCELLATION_REASONS)},
        "expand": _EXPAND,
    },
}
_CONFIRM_SCHEMA = {
    "type": "object",
    "properties": {
        "payment_method_options": {
            "type": "object",
            "properties": {
                "card": {
                    "type": "object",
                    "properties": {
                        "three_d_secure": {
                            "type": "object",
                            "properties": {
                                "ares_trans_status": {"type": "string", "enum": sorted(params.THREE_DS_STATUSES)},
                                "electronic_commerce_indicator": {"type": "string"},
                                "transaction_id": {"type": "string"},
                                "version": {"type": "string"},
                                "cryptogram": {"type": "string"},
                            },
                        }
                    },
                }
            },
        },
        "expand": _EXPAND,
    },
}
_REFUND_SCHEMA = {
    "type": "object",
    "required": ["payment_intent"],
    "properties": {
        "payment_intent": {"type": "string"},
        "amount": {"type": "integer", "minimum": 1},
        "reason": {"type": "string", "enum": sorted(params.REFUND_REASONS)},
        "metadata": _METADATA,
        "expand": _EXPAND,
        # Always so here: a refund reverses the transfers and refunds the fee pro rata.
        "reverse_transfer": {"type": "boolean", "enum": [True]},
        "refund_application_fee": {"type": "boolean", "enum": [True]},
    },
}
_DISPUTE_SCHEMA = {
    "type": "object",
    "required": ["evidence"],
    "properties": {
        "evidence": {"type": "object", "additionalProperties": {"type": "string"}},
        "submit": {"type": "boolean"},
        "expand": _EXPAND,
    },
}
_LIST_PARAMS = [
    {"name": "limit", "in": "query", "required": False, "schema": {"type": "integer", "minimum": 1, "maximum": 100}},
    {"name": "starting_after", "in": "query", "required": False, "schema": {"type": "string"}},
    {"name": "ending_before", "in": "query", "required": False, "schema": {"type": "string"}},
]
_HEADERS = [
    {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "schema": {"type": "string", "minLength": 1, "maxLength": IDEMPOTENCY_KEY_MAX_CHARS},
    },
    {
        "name": "Stripe-Version",
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "Accepted and ignored: one version of the objects is served.",
    },
]


async def _form(request: Request) -> dict[str, Any]:
    body = await request.body()
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if body and ctype != FORM:
        raise ApiError(
            400,
            "invalid_request_error",
            "invalid_content_type",
            f"send the parameters as {FORM}, as Stripe's API takes them",
        )
    try:
        return decode_form(body)
    except FormError as e:
        raise params.form_error(e) from None


def _query(request: Request) -> dict[str, Any]:
    try:
        return decode_form(request.url.query)
    except FormError as e:
        raise params.form_error(e) from None


def _idempotency_key(request: Request) -> str:
    """Optional as in Stripe; the pipeline needs one on every command, so a write
    without it gets a random one (a retry of it is then a new request)."""
    key = request.headers.get("idempotency-key")
    if key is None:
        return "auto_" + secrets.token_hex(16)
    if not 1 <= len(key) <= IDEMPOTENCY_KEY_MAX_CHARS:
        raise ApiError(
            400,
            "invalid_request_error",
            "idempotency_key_invalid",
            f"an Idempotency-Key is 1..{IDEMPOTENCY_KEY_MAX_CHARS} characters",
            "Idempotency-Key",
        )
    return key


def _intent_payment_id(pi: str) -> str:
    pid = payment_id_of(pi)
    if pid is None:
        raise no_such_intent(pi)
    return pid


def no_such_intent(pi: str) -> ApiError:
    return ApiError(404, "invalid_request_error", "resource_missing", "No such payment_intent", "intent")


def install(app: FastAPI, deps: StripeDeps) -> None:
    """Add /v1/payment_intents and /v1/refunds to `app`."""
    intents: Bounded[str, IntentRequest] = Bounded(deps.max_records)
    refunds: Bounded[str, tuple[str, dict[str, Any]]] = Bounded(deps.max_records)  # id -> (merchant, refund)

    def intent_pending(payment_id: str, asked: IntentRequest | None = None) -> JSONResponse:
        # Past the outcome timeout: the command is out, a retry with the key awaits it.
        body = payment_intent({"payment_id": payment_id, "payment_status": "pending"}, intents.get(payment_id) or asked)
        return JSONResponse(body, headers={"Location": f"/v1/payment_intents/{body['id']}"})

    async def write(
        merchant: str,
        key: str,
        route: str,
        payment_id: str,
        body: dict[str, Any],
        command: dict[str, Any],
        answer: Answer,
        names: dict[str, str],
        pending: Pending,
    ) -> JSONResponse:
        try:
            return await deps.write(merchant, key, route, payment_id, body, command, answer=answer, pending=pending)
        except ApiError as e:
            raise stripe_error(e, names) from None

    def own(view: dict[str, Any] | None, merchant: str, pi: str) -> dict[str, Any]:
        if view is None or view["merchant_id"] != merchant:
            raise no_such_intent(pi)  # the same answer for unknown and another merchant's
        return view

    @app.post(
        "/v1/payment_intents",
        response_model=PaymentIntent,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Create and confirm a PaymentIntent (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_CREATE_SCHEMA) | {"parameters": _HEADERS},
    )
    async def create_intent(request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        form = await _form(request)
        p = params.create_intent(form)  # its refusals are Stripe's already
        payment_id = derive_payment_id(merchant, key)
        if p.customer is not None and await deps.objects.get(merchant, p.customer) is None:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such customer", "customer")
        source, instrument = p.source, dict(p.source.instrument)
        if source.saved:
            assert p.payment_method is not None
            instrument = {"card_token": await saved_card(merchant, p.payment_method, p.customer)}
        if source.method == "bank_transfer":  # the mandate the merchant holds, or the one accepted now
            instrument["bank_account"] = instrument["bank_account"] | {
                "mandate_id": p.mandate or mandate_id(payment_id)
            }
        saves = saved_payment_method_id(payment_id) if p.setup_future_usage else None
        dest = p.destination
        asked = IntentRequest(
            p.amount,
            p.currency.lower(),
            p.capture_method,
            int(deps.now().timestamp()),
            p.metadata,
            p.payment_method,
            p.description,
            customer=p.customer,
            payment_method_types=(source.type,),
            setup_future_usage=p.setup_future_usage,
            transfer_destination=dest.account if dest else None,
            application_fee_amount=dest.fee_minor if dest else None,
        )

        def answer(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            # Kept once an outcome answers this request's parameters (a request refused
            # before publishing, or the pipeline's conflict, leaves nothing behind).
            if outcome.get("reason_code") != "idempotency_conflict":
                at = outcome.get("occurred_at")
                kept = replace(asked, created=int(at.timestamp())) if isinstance(at, datetime) else asked
                if saves and outcome.get("payment_status") in SAVES_CARD:
                    kept = replace(kept, payment_method=saves)
                intents.setdefault(payment_id, kept)
            return outcome_answer(outcome, intents.get(payment_id), _CREATE_PARAMS)

        command = create_command(
            merchant,
            key,
            payment_id,
            p.amount,
            p.currency,
            p.capture_method,
            p.card,
            p.metadata,
            source.method,
            **instrument,
        ) | {"merchant_initiated": p.merchant_initiated}
        if dest is not None:  # a destination charge is a split: the account's part, the platform's fee
            command |= {
                "splits": [{"merchant_id": dest.account, "amount_minor": p.amount - dest.fee_minor}],
                "platform_fee_minor": dest.fee_minor,
            }
        response = await write(
            merchant,
            key,
            "pi_create",
            payment_id,
            form,
            command,
            answer,
            _CREATE_PARAMS,
            lambda pid: intent_pending(pid, asked),
        )
        if saves and response.status_code == 200 and json.loads(response.body).get("payment_method") == saves:
            await save_card(merchant, saves, payment_id, p)
        return response

    async def save_card(merchant: str, pm: str, payment_id: str, p: params.CreateIntent) -> None:
        """Keep the card a payment went through with as a PaymentMethod (its token stays
        in the vault and on the payment's events), attached to the intent's customer."""
        if await deps.objects.get(merchant, pm) is not None:
            return  # a replay: saved already (and maybe attached or detached since)
        card = {k: p.source.details[k] for k in ("brand", "last4", "bin", "exp_month", "exp_year")}
        try:
            await deps.objects.put(
                {
                    "id": pm,
                    "object": "payment_method",
                    "merchant_id": merchant,
                    "type": "card",
                    "card": card,
                    "payment_id": payment_id,
                    "customer": p.customer,
                    "created": int(deps.now().timestamp()),
                    "metadata": {},
                    "card_token": None,
                }
            )
        except BusUnavailable:
            raise ApiError(
                503,
                "api_error",
                "unavailable",
                "the payment went through but its card was not saved yet; retry with the same Idempotency-Key",
                headers=(("Retry-After", "1"),),
            ) from None

    async def saved_card(merchant: str, pm: str, customer: str | None) -> dict[str, Any]:
        """The CardToken of a saved PaymentMethod: its token from the read model (the
        payment's events carry it; kept on the object once found), never a card number."""
        doc = await deps.objects.get(merchant, pm)
        if doc is None:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such PaymentMethod", "payment_method")
        if doc.get("customer") is None:
            raise params.invalid("payment_method", "a saved PaymentMethod is used again once attached to a customer")
        if customer != doc["customer"]:
            raise params.invalid("customer", "the PaymentMethod is attached to a customer: name that customer")
        token = doc.get("card_token")
        deadline = time.monotonic() + SAVED_CARD_WAIT_S
        while token is None:  # the sink lags the payment that saved it by a moment
            token = await deps.read_model(lambda r: r.saved_card(merchant, doc["payment_id"]))
            if token is None and time.monotonic() > deadline:
                raise ApiError(
                    503,
                    "api_error",
                    "payment_method_not_ready",
                    "the saved card is not readable yet; retry",
                    "payment_method",
                    headers=(("Retry-After", "1"),),
                )
            if token is None:
                await asyncio.sleep(READ_MODEL_POLL_S)
        if doc.get("card_token") is None:
            with contextlib.suppress(BusUnavailable):  # only a cache: the read model answers again next time
                await deps.objects.put(doc | {"card_token": token})
        card = doc["card"]
        return {
            "token": token,
            "bin": card["bin"],
            "last4": card["last4"],
            "brand": card["brand"],
            "exp_month": card["exp_month"],
            "exp_year": card["exp_year"],
        }

    @app.get(
        "/v1/payment_intents/{intent}",
        response_model=PaymentIntent,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve a PaymentIntent (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_intent(intent: str, request: Request) -> JSONResponse:
        params.expand(_query(request))
        pid = _intent_payment_id(intent)
        view = own(await deps.lookup(pid), request.state.merchant_id, intent)
        return JSONResponse(payment_intent(view, intents.get(pid)))

    @app.post(
        "/v1/payment_intents/{intent}/capture",
        response_model=PaymentIntent,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Capture a PaymentIntent, in part or what is left (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_CAPTURE_SCHEMA) | {"parameters": _HEADERS},
    )
    async def capture_intent(intent: str, request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        pid = _intent_payment_id(intent)
        form = await _form(request)
        p = params.capture(form)
        return await write(
            merchant,
            key,
            f"pi_capture:{pid}",
            pid,
            form,
            follow_up_command("capture", merchant, key, pid, p.amount),
            lambda o: outcome_answer(o, intents.get(pid), _CAPTURE_PARAMS),
            _CAPTURE_PARAMS,
            intent_pending,
        )

    @app.post(
        "/v1/payment_intents/{intent}/cancel",
        response_model=PaymentIntent,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Cancel (void) an uncaptured PaymentIntent (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_CANCEL_SCHEMA) | {"parameters": _HEADERS},
    )
    async def cancel_intent(intent: str, request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        pid = _intent_payment_id(intent)
        form = await _form(request)
        reason, _ = params.cancel(form)

        def answer(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            asked = intents.get(pid)
            if asked is not None and reason and outcome.get("payment_status") == "voided":
                asked = replace(asked, cancellation_reason=reason)
                intents.put(pid, asked)
            return outcome_answer(outcome, asked)

        return await write(
            merchant,
            key,
            f"pi_cancel:{pid}",
            pid,
            form,
            follow_up_command("void", merchant, key, pid, None),
            answer,
            {},
            intent_pending,
        )

    @app.post(
        "/v1/payment_intents/{intent}/confirm",
        response_model=PaymentIntent,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Confirm a PaymentIntent in requires_action with its 3DS result (Stripe's third-party 3DS)",
        tags=["stripe"],
        openapi_extra=_form_body(_CONFIRM_SCHEMA) | {"parameters": _HEADERS},
    )
    async def confirm_intent(intent: str, request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        pid = _intent_payment_id(intent)
        form = await _form(request)
        three_ds, _ = params.confirm(form)
        return await write(
            merchant,
            key,
            f"pi_confirm:{pid}",
            pid,
            form,
            follow_up_command("confirm", merchant, key, pid, None) | {"three_ds": three_ds},
            lambda o: outcome_answer(o, intents.get(pid)),
            {},
            intent_pending,
        )

    @app.get(
        "/v1/payment_intents",
        response_model=PaymentIntentList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="List your PaymentIntents, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_intents(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request))
        after = payment_id_of(p.starting_after) if p.starting_after else None
        before = payment_id_of(p.ending_before) if p.ending_before else None
        views = await deps.read_model(lambda r: r.list(merchant, p.limit + 1, after, before))
        assert all(v["merchant_id"] == merchant for v in views), "the read model returned another merchant's payment"
        return JSONResponse(
            params.list_page(views, p, "/v1/payment_intents", lambda v: payment_intent(v, intents.get(v["payment_id"])))
        )

    @app.post(
        "/v1/refunds",
        response_model=Refund,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Refund a PaymentIntent (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_REFUND_SCHEMA) | {"parameters": _HEADERS},
    )
    async def create_refund(request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        form = await _form(request)
        p = params.create_refund(form)
        pid = payment_id_of(p.payment_intent)
        if pid is None:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such payment_intent", "payment_intent")
        re_id = refund_id(merchant, key)
        before = await deps.lookup(pid) if p.amount is None else None
        created = int(deps.now().timestamp())

        def answer(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            status, body, replayed = outcome_answer(outcome, intents.get(pid), _REFUND_PARAMS)
            if status != 200:
                if status == 404:
                    body["error"]["param"] = "payment_intent"
                return status, body, replayed
            amount = p.amount
            if amount is None:  # all that was left: what this refund moved, as far as this process saw
                amount = outcome["refunded_minor"] - ((before or {}).get("refunded_minor") or 0)
            refund = refund_object(re_id, outcome, amount, created, p.reason, p.metadata)
            refunds.put(re_id, (merchant, refund))
            return 200, refund, replayed

        def pending(_pid: str) -> JSONResponse:
            return JSONResponse(
                {
                    "id": re_id,
                    "object": "refund",
                    "amount": p.amount,
                    "currency": None,
                    "payment_intent": p.payment_intent,
                    "charge": None,
                    "created": created,
                    "metadata": p.metadata,
                    "reason": p.reason,
                    "status": "pending",
                }
            )

        return await write(
            merchant,
            key,
            f"pi_refund:{pid}",
            pid,
            form,
            follow_up_command("refund", merchant, key, pid, p.amount),
            answer,
            _REFUND_PARAMS,
            pending,
        )

    @app.get(
        "/v1/balance",
        response_model=Balance,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Your balance, from the ledger (Stripe)",
        tags=["stripe"],
    )
    async def balance(request: Request) -> JSONResponse:
        params.expand(_query(request))
        merchant = request.state.merchant_id
        return JSONResponse(balance_object(merchant, await deps.read_model(lambda r: r.balance(merchant))))

    submitted: Bounded[str, int] = Bounded(deps.max_records)  # dispute id -> evidence this process sent

    def submissions(row: dict[str, Any]) -> int:
        """The evidence accepted for it: the read model's count, or more this process sent
        since (the read model is as fresh as the sink)."""
        return max(row.get("submissions") or 0, submitted.get(dispute_id(row["event_id"])) or 0)

    async def own_dispute(dp: str, merchant: str) -> dict[str, Any]:
        event_id = opened_event_of(dp)
        row = None if event_id is None else await deps.read_model(lambda r: r.dispute(merchant, event_id))
        if row is None:  # the read model answers for this merchant only: another's is unknown
            raise ApiError(404, "invalid_request_error", "resource_missing", "No such dispute", "dispute")
        return row

    @app.get(
        "/v1/disputes",
        response_model=DisputeList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="List your disputes, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_disputes(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), params.DISPUTE_CURSOR, "Dispute")
        after = opened_event_of(p.starting_after) if p.starting_after else None
        before = opened_event_of(p.ending_before) if p.ending_before else None
        rows = await deps.read_model(lambda r: r.disputes(merchant, p.limit + 1, after, before))
        assert all(row["merchant_id"] == merchant for row in rows), "the read model returned another merchant's dispute"
        return JSONResponse(
            params.list_page(
                rows,
                p,
                "/v1/disputes",
                lambda row: dispute_object(row, submissions(row)),
            )
        )

    @app.get(
        "/v1/disputes/{dispute}",
        response_model=Dispute,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve a dispute (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_dispute(dispute: str, request: Request) -> JSONResponse:
        params.expand(_query(request))
        row = await own_dispute(dispute, request.state.merchant_id)
        return JSONResponse(dispute_object(row, submissions(row)))

    @app.post(
        "/v1/disputes/{dispute}",
        response_model=Dispute,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Answer a dispute with evidence (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body(_DISPUTE_SCHEMA) | {"parameters": _HEADERS},
    )
    async def update_dispute(dispute: str, request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        form = await _form(request)
        evidence = params.dispute_evidence(form, EVIDENCE_MAX_CHARS)
        row = await own_dispute(dispute, merchant)
        if row.get("closed_as"):
            raise ApiError(400, "invalid_request_error", "dispute_closed", "This dispute is already closed", "dispute")
        pid = row["payment_id"]

        def answer(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            status, body, replayed = outcome_answer(outcome, intents.get(pid))
            if status != 200:
                return status, body, replayed
            if not replayed:
                submitted.put(dispute, submissions(row) + 1)
            return 200, dispute_object(row, max(submissions(row), 1)), replayed

        def pending(_pid: str) -> JSONResponse:
            return JSONResponse(dispute_object(row, submissions(row)))

        return await write(
            merchant,
            key,
            f"pi_dispute_evidence:{pid}",
            pid,
            form,
            dispute_evidence_command(merchant, key, pid, evidence),
            answer,
            {},
            pending,
        )

    @app.post(
        "/v1/disputes/{dispute}/close",
        response_model=Dispute,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Accept a dispute: it closes lost (Stripe)",
        tags=["stripe"],
        openapi_extra=_form_body({"type": "object", "properties": {"expand": _EXPAND}}) | {"parameters": _HEADERS},
    )
    async def close_dispute(dispute: str, request: Request) -> JSONResponse:
        merchant, key = request.state.merchant_id, _idempotency_key(request)
        form = await _form(request)
        params.expand_only(form)
        row = await own_dispute(dispute, merchant)
        if row.get("closed_as") == "dispute_lost":
            return JSONResponse(dispute_object(row, submitted.get(dispute) or 0))  # accepted (or lost) already
        if row.get("closed_as"):
            raise ApiError(400, "invalid_request_error", "dispute_closed", "This dispute is already closed", "dispute")
        pid = row["payment_id"]
        lost = row | {"closed_as": "dispute_lost"}

        def answer(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
            status, body, replayed = outcome_answer(outcome, intents.get(pid))
            if status != 200:
                return status, body, replayed
            return 200, dispute_object(lost, submitted.get(dispute) or 0), replayed

        def pending(_pid: str) -> JSONResponse:  # past the timeout: the close is out, not yet applied
            return JSONResponse(dispute_object(row, submitted.get(dispute) or 0))

        return await write(
            merchant,
            key,
            f"pi_dispute_close:{pid}",
            pid,
            form,
            dispute_accept_command(merchant, key, pid),
            answer,
            {},
            pending,
        )

    @app.get(
        "/v1/payouts",
        response_model=PayoutList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="List your payouts, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_payouts(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), params.PAYOUT_CURSOR, "Payout")
        rows = await deps.read_model(lambda r: r.payouts(merchant, p.limit + 1, p.starting_after, p.ending_before))
        assert all(row["merchant_id"] == merchant for row in rows), "the read model returned another merchant's payout"
        return JSONResponse(params.list_page(rows, p, "/v1/payouts", payout_object))

    @app.get(
        "/v1/payouts/{payout}",
        response_model=Payout,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve a payout (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_payout(payout: str, request: Request) -> JSONResponse:
        params.expand(_query(request))
        merchant = request.state.merchant_id
        row = None
        if params.PAYOUT_CURSOR.match(payout):
            row = await deps.read_model(lambda r: r.payout(merchant, payout))
        if row is None:
            raise ApiError(404, "invalid_request_error", "resource_missing", "No such payout", "payout")
        return JSONResponse(payout_object(row))

    @app.get(
        "/v1/refunds/{refund}",
        response_model=Refund,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="Retrieve a refund (Stripe)",
        tags=["stripe"],
    )
    async def retrieve_refund(refund: str, request: Request) -> JSONResponse:
        params.expand(_query(request))
        merchant = request.state.merchant_id
        found = refunds.get(refund)
        if found is not None and found[0] == merchant:
            return JSONResponse(found[1])  # with the reason and metadata this process was given
        rows = []
        if REFUND_ID.match(refund):  # another process's, or before a restart: the read model's
            rows = await deps.read_model(lambda r: r.refunds(merchant, 1, refund_id=refund))
        if not rows:
            raise ApiError(404, "invalid_request_error", "resource_missing", "No such refund", "id")
        return JSONResponse(stored_refund(rows[0]))

    @app.get(
        "/v1/refunds",
        response_model=RefundList,
        responses=_ERRORS,
        dependencies=_AUTH,
        summary="List your refunds, by id (Stripe cursors)",
        tags=["stripe"],
        openapi_extra={"parameters": _LIST_PARAMS},
    )
    async def list_refunds(request: Request) -> JSONResponse:
        merchant = request.state.merchant_id
        p = params.list_params(_query(request), REFUND_ID, "Refund")
        rows = await deps.read_model(lambda r: r.refunds(merchant, p.limit + 1, p.starting_after, p.ending_before))
        return JSONResponse(params.list_page(rows, p, "/v1/refunds", stored_refund))

    def stored_refund(row: dict[str, Any]) -> dict[str, Any]:
        """A refund from the read model; the reason and metadata live only in the process
        that took it (as an intent's metadata)."""
        kept = refunds.get(row["id"])
        if kept is not None:
            return kept[1]
        at = row["occurred_at"]
        created = int(at.replace(tzinfo=UTC).timestamp()) if at.tzinfo is None else int(at.timestamp())
        return refund_object(row["id"], row, row["amount_minor"], created, None, {})
