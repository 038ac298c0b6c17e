"""Stripe's PaymentIntent, Dispute and Event shapes of the pipeline's payment views
(pure; shared by the API and the webhook runner)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pytest

from streams.domain.stripe_shapes import (API_VERSION, IntentRequest, decline, event_object, intent_id, intent_status,
                                          payment_intent)

PID = "pay_" + "ab" * 16
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=timezone.utc)


def view(status: str, authorized: int = 1000, captured: int = 0, **extra: Any) -> dict[str, Any]:
    return {"payment_id": PID, "merchant_id": "m_acme", "payment_status": status, "currency": "USD",
            "authorized_minor": authorized, "captured_minor": captured, "refunded_minor": 0,
            "card_bin": "424242", "card_last4": "4242"} | extra


@pytest.mark.parametrize("ours,theirs", [
    ("authorized", "requires_capture"), ("partially_captured", "requires_capture"), ("captured", "succeeded"),
    ("partially_refunded", "succeeded"), ("refunded", "succeeded"), ("voided", "canceled"), ("expired", "canceled"),
    ("declined", "requires_payment_method"), ("failed", "requires_payment_method"),
    ("requires_action", "requires_action"), ("pending", "processing"), ("requires_review", "processing"), (None, "processing"),
])
def test_statuses(ours: str | None, theirs: str) -> None:
    assert intent_status(ours) == theirs


def test_an_intent_from_the_create_request_and_an_outcome() -> None:
    asked = IntentRequest(1000, "usd", "manual", 1_700_000_000, {"order": "o-1"}, None, "a hat")
    pi = payment_intent(view("partially_captured", captured=400), asked)
    assert (pi["id"], pi["object"], pi["amount"], pi["amount_capturable"], pi["amount_received"]) == (
        intent_id(PID), "payment_intent", 1000, 600, 400)
    assert (pi["status"], pi["capture_method"], pi["currency"], pi["metadata"], pi["created"]) == (
        "requires_capture", "manual", "usd", {"order": "o-1"}, 1_700_000_000)
    assert pi["paystream"]["card"] == {"bin": "424242", "last4": "4242"} and pi["last_payment_error"] is None


def test_without_the_request_an_intent_is_what_the_outcome_says() -> None:
    pi = payment_intent(view("captured", captured=1000, occurred_at=T0))
    assert (pi["amount"], pi["amount_capturable"], pi["capture_method"], pi["metadata"]) == (1000, 0, None, {})
    assert pi["created"] == int(T0.timestamp())
    declined = payment_intent(view("declined", authorized=0, kind="create", amount_minor=700, reason_code="insufficient_funds"))
    assert declined["amount"] == 700 and declined["status"] == "requires_payment_method"
    assert declined["last_payment_error"]["code"] == "card_declined"
    assert declined["last_payment_error"]["decline_code"] == "insufficient_funds"


def test_3ds_step_up_is_requires_action_with_next_action() -> None:
    pi = payment_intent(view("requires_action", authorized=0))
    assert pi["status"] == "requires_action" and pi["next_action"]["type"] == "three_d_secure"
    assert pi["next_action"]["three_d_secure"]["confirm_url"] == f"/v1/payment_intents/{intent_id(PID)}/confirm"


def test_a_cancel_keeps_its_reason_and_an_expiry_is_automatic() -> None:
    asked = IntentRequest(1000, "usd", "manual", 1, cancellation_reason="duplicate")
    assert payment_intent(view("voided"), asked)["cancellation_reason"] == "duplicate"
    assert payment_intent(view("voided"))["cancellation_reason"] == "requested_by_customer"
    assert payment_intent(view("expired"), asked)["cancellation_reason"] == "automatic"
    assert payment_intent(view("captured"), asked)["cancellation_reason"] is None


@pytest.mark.parametrize("reason,code,decline_code", [
    ("card_declined", "card_declined", "generic_decline"), ("insufficient_funds", "card_declined", "insufficient_funds"),
    ("expired_card", "expired_card", "expired_card"), ("incorrect_cvc", "incorrect_cvc", "incorrect_cvc"),
    ("fraud_suspected", "card_declined", "fraudulent"), ("something_new", "card_declined", "something_new"),
])
def test_declines(reason: str, code: str, decline_code: str) -> None:
    assert decline(reason) == (code, decline_code)


def test_events_name_stripes_types_and_a_dispute_close_names_its_dispute() -> None:
    at = datetime(2026, 11, 25, tzinfo=timezone.utc)
    base = {"payment_id": "pay_" + "a" * 32, "merchant_id": "m1", "currency": "USD", "amount_minor": 500, "fee_minor": 0,
            "payment_status": "captured", "authorized_minor": 500, "captured_minor": 500, "refunded_minor": 0,
            "reason_code": None, "card_bin": "424242", "card_last4": "4242", "version": 2, "occurred_at": at}
    captured = event_object(base | {"event_id": "evt_" + "1" * 32, "type": "captured"})
    assert (captured["type"], captured["data"]["object"]["id"], captured["data"]["object"]["status"]) == (
        "payment_intent.succeeded", "pi_" + "a" * 32, "succeeded")
    assert captured["api_version"] == API_VERSION and captured["paystream"] == {
        "type": "captured", "payment_id": "pay_" + "a" * 32, "version": 2}
    closed = event_object(base | {"event_id": "evt_" + "3" * 32, "type": "dispute_lost", "opened_event_id": "evt_" + "2" * 32})
    assert (closed["type"], closed["data"]["object"]["id"], closed["data"]["object"]["status"]) == (
        "charge.dispute.closed", "dp_" + "2" * 32, "lost")
    assert event_object(base | {"event_id": "evt_" + "4" * 32, "type": "settled"})["type"] == "paystream.settled"


def test_a_destination_charge_shows_its_destination_and_fee() -> None:
    asked = IntentRequest(1000, "usd", "automatic", 1, transfer_destination="acct_1", application_fee_amount=100)
    pi = payment_intent(view("captured", captured=1000), asked)
    assert (pi["transfer_data"], pi["application_fee_amount"]) == ({"destination": "acct_1"}, 100)
    assert (payment_intent(view("captured"))["transfer_data"], payment_intent(view("captured"))["application_fee_amount"]) == (
        None, None)
