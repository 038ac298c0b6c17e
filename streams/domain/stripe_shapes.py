"""Stripe's shapes of the pipeline's payment views, shared by the API (streams/api/)
and the webhook runner (streams/jobs/webhooks.py): the PaymentIntent, the Dispute
and the Event, so a webhook's body and `GET /v1/events/{id}` are one object built
once (docs/api.md). Pure: plain values in, plain dicts out.

A PaymentIntent is a payment: `pi_<hex>` is `pay_<hex>` (the same 32 hex digits).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from streams.domain.payments import CAPTURABLE

# The version of Stripe's API these shapes follow: the one the pinned `stripe` SDK
# speaks (pyproject.toml); what differs is in docs/api.md. `Stripe-Version` asked by
# a client is accepted and ignored.
API_VERSION = "2026-10-28.endive"

_DISPUTE_CLOSED = {"dispute_won": "won", "dispute_lost": "lost"}


# The pipeline's payment status -> the PaymentIntent's.
_STATUSES = {
    "pending": "processing",
    "requires_review": "processing",
    "submitted": "processing",
    "requires_action": "requires_action",
    "authorized": "requires_capture",
    # Captured in part, the rest still capturable: Stripe's multicapture
    # (final_capture=false) keeps requires_capture too (docs/api.md).
    "partially_captured": "requires_capture",
    "captured": "succeeded",
    "partially_refunded": "succeeded",
    "refunded": "succeeded",
    "settled": "succeeded",
    "voided": "canceled",
    "expired": "canceled",
    "declined": "requires_payment_method",
    "failed": "requires_payment_method",
    "returned": "requires_payment_method",
}

# A decline's reason code -> Stripe's (code, decline_code).
_DECLINES: dict[str, tuple[str, str | None]] = {
    "card_declined": ("card_declined", "generic_decline"),
    "insufficient_funds": ("card_declined", "insufficient_funds"),
    "expired_card": ("expired_card", "expired_card"),
    "incorrect_cvc": ("incorrect_cvc", "incorrect_cvc"),
    "fraud_suspected": ("card_declined", "fraudulent"),
    "fraud_review_declined": ("card_declined", "fraudulent"),
    "amount_limit_exceeded": ("card_declined", "card_velocity_exceeded"),
    "invalid_card_number": ("incorrect_number", None),
    "invalid_cvc": ("invalid_cvc", None),
    "invalid_expiry": ("invalid_expiry_month", None),
    "authentication_failed": ("payment_intent_authentication_failure", None),
    "authentication_unavailable": ("payment_intent_authentication_failure", None),
    "requires_action_timeout": ("payment_intent_authentication_failure", None),
}


def intent_id(payment_id: str) -> str:
    assert payment_id.startswith("pay_"), payment_id
    return "pi_" + payment_id[4:]


def dispute_id(opened_event_id: str) -> str:
    """A dispute is named by the event that opened it: `dp_<hex>` is `evt_<hex>`."""
    assert opened_event_id.startswith("evt_"), opened_event_id
    return "dp_" + opened_event_id[4:]


def intent_status(payment_status: str | None) -> str:
    return _STATUSES.get(payment_status or "", "processing")


def decline(reason: str) -> tuple[str, str | None]:
    """(code, decline_code) of a declined payment's reason."""
    return _DECLINES.get(reason, ("card_declined", reason))


@dataclass(frozen=True)
class IntentRequest:
    """What the merchant asked at creation that no outcome carries back; kept by the
    API process that took the create (bounded), absent elsewhere (docs/api.md)."""

    amount: int
    currency: str
    capture_method: str
    created: int  # unix seconds
    metadata: dict[str, str] = field(default_factory=dict)
    payment_method: str | None = None
    description: str | None = None
    cancellation_reason: str | None = None
    customer: str | None = None
    payment_method_types: tuple[str, ...] = ("card",)
    setup_future_usage: str | None = None
    transfer_destination: str | None = None  # a destination charge's connected account (a split payment)
    application_fee_amount: int | None = None


def unix_seconds(at: Any) -> int | None:
    """A datetime or an Avro timestamp-millis as Unix seconds (None for anything else)."""
    if isinstance(at, datetime):
        return int(at.timestamp())
    if isinstance(at, int):
        return at // 1000  # timestamp-millis
    return None


def payment_intent(view: dict[str, Any], request: IntentRequest | None = None) -> dict[str, Any]:
    """The PaymentIntent of a payment view (an outcome or a read-model row), with
    what the create asked when this process took it."""
    status = view.get("payment_status")
    authorized, captured = view.get("authorized_minor") or 0, view.get("captured_minor") or 0
    currency = (view.get("currency") or (request.currency if request else "") or "").lower() or None
    amount = (
        request.amount
        if request
        else (view.get("amount_minor") if view.get("kind") == "create" else None) or authorized
    )
    pi_status = intent_status(status)
    reason = view.get("reason_code")
    last_error = None
    if status in ("declined", "failed", "returned"):
        code, decline_code = decline(reason or "card_declined")
        last_error = {
            "type": "card_error",
            "code": code,
            "decline_code": decline_code,
            "message": f"the payment was declined ({reason or 'declined'})",
            "param": None,
        }
    next_action = None
    if status == "requires_action":
        # The cardholder authenticates at the simulated issuer (or the merchant's own 3DS
        # server), and the merchant confirms with the result and its signed value
        # (Stripe's third-party 3DS parameters; docs/api.md, docs/payments.md).
        next_action = {
            "type": "three_d_secure",
            "three_d_secure": {
                "authenticate_url": f"/v1/payments/{view['payment_id']}/three_ds/authenticate",
                "confirm_url": f"/v1/payment_intents/{intent_id(view['payment_id'])}/confirm",
            },
        }
    cancellation = None
    if pi_status == "canceled":
        cancellation = (
            "automatic"
            if status == "expired"
            else ((request.cancellation_reason if request else None) or "requested_by_customer")
        )
    return {
        "id": intent_id(view["payment_id"]),
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": authorized - captured if status in CAPTURABLE else 0,
        # A submitted bank debit's funds have not arrived: Stripe's processing receives nothing yet.
        "amount_received": 0 if status == "submitted" else captured,
        "capture_method": request.capture_method if request else None,
        "confirmation_method": "automatic",
        "currency": currency,
        "created": request.created if request else unix_seconds(view.get("occurred_at")),
        "description": request.description if request else None,
        "livemode": False,
        "metadata": dict(request.metadata) if request else {},
        "status": pi_status,
        "last_payment_error": last_error,
        "next_action": next_action,
        "cancellation_reason": cancellation,
        "payment_method": request.payment_method if request else None,
        "payment_method_types": list(request.payment_method_types) if request else ["card"],
        "customer": request.customer if request else None,
        "setup_future_usage": request.setup_future_usage if request else None,
        "transfer_data": {"destination": request.transfer_destination}
        if request and request.transfer_destination
        else None,
        "application_fee_amount": request.application_fee_amount if request else None,
        "latest_charge": None,
        "client_secret": None,
        # Ours, not Stripe's: the card as the pipeline knows it (never the number).
        "paystream": {
            "payment_id": view["payment_id"],
            "status": status,
            "refunded_minor": view.get("refunded_minor") or 0,
            "card": {"bin": view.get("card_bin"), "last4": view.get("card_last4")} if view.get("card_last4") else None,
        },
    }


def dispute_object(row: dict[str, Any], submissions: int = 0) -> dict[str, Any]:
    """A dispute from its read-model row (ClickHousePayments.disputes): won or lost once
    the network closed it, else `under_review` once evidence was accepted for it
    (`submissions`: the read model's, or this process's), else `needs_response`."""
    closed = _DISPUTE_CLOSED.get(row.get("closed_as") or "")
    status = closed or ("under_review" if submissions else "needs_response")
    return {
        "id": dispute_id(row["event_id"]),
        "object": "dispute",
        "amount": row["amount_minor"],
        "currency": (row.get("currency") or "").lower() or None,
        "payment_intent": intent_id(row["payment_id"]),
        "charge": None,
        "reason": row.get("reason_code") or "general",
        "status": status,
        "created": unix_seconds(row.get("occurred_at")),
        "livemode": False,
        "metadata": {},
        "is_charge_refundable": False,
        "evidence_details": {
            "due_by": None,
            "has_evidence": submissions > 0,
            "past_due": False,
            "submission_count": submissions,
        },
    }


# Our payment event type -> Stripe's event type, and what `data.object` is.
_EVENT_TYPES = {
    "authorized": ("payment_intent.amount_capturable_updated", "payment_intent"),
    "authorization_pending": ("payment_intent.processing", "payment_intent"),
    "captured": ("payment_intent.succeeded", "payment_intent"),
    "declined": ("payment_intent.payment_failed", "payment_intent"),
    "voided": ("payment_intent.canceled", "payment_intent"),
    "expired": ("payment_intent.canceled", "payment_intent"),
    "refunded": ("charge.refunded", "payment_intent"),
    "dispute_opened": ("charge.dispute.created", "dispute"),
    "dispute_won": ("charge.dispute.closed", "dispute"),
    "dispute_lost": ("charge.dispute.closed", "dispute"),
    "bank_submitted": ("payment_intent.processing", "payment_intent"),
    "bank_settled": ("payment_intent.succeeded", "payment_intent"),
    "bank_returned": ("payment_intent.payment_failed", "payment_intent"),
    "bank_reversed": ("payment_intent.payment_failed", "payment_intent"),
}


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    """Stripe's Event of a payment event: a read-model row (ClickHousePayments.events)
    or the PaymentEvent record itself (the webhook runner's). `data.object` is the
    PaymentIntent as the event left it, or the Dispute it opened or closed (a close
    names its opening in `opened_event_id`). A type Stripe has no name for is
    `paystream.<ours>`. The same event gives the same object from either source."""
    stripe_type, kind = _EVENT_TYPES.get(row["type"], (f"paystream.{row['type']}", "payment_intent"))
    if kind == "dispute":
        opening = row["event_id"] if row["type"] == "dispute_opened" else row.get("opened_event_id")
        closed_as = "" if row["type"] == "dispute_opened" else row["type"]
        obj = dispute_object(row | {"event_id": opening or row["event_id"], "closed_as": closed_as})
    else:
        obj = payment_intent(row)
    return {
        "id": row["event_id"],
        "object": "event",
        "api_version": API_VERSION,
        "created": unix_seconds(row["occurred_at"]),
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": stripe_type,
        "data": {"object": obj},
        # Ours, not Stripe's: the pipeline's event, for ordering and support (the
        # payment's version grows by one per event).
        "paystream": {"type": row["type"], "payment_id": row["payment_id"], "version": row.get("version")},
    }
