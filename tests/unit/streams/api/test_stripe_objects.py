"""Stripe's objects and errors over the pipeline's payments (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from streams.api.errors import ApiError
from streams.api.stripe_objects import outcome_answer, payment_id_of, refund_id, stripe_error
from streams.domain.stripe_shapes import intent_id
from tests.unit.streams.domain.test_stripe_shapes import PID, T0, view


def test_ids_map_both_ways_and_refuse_others() -> None:
    assert intent_id(PID) == "pi_" + "ab" * 16 and payment_id_of(intent_id(PID)) == PID
    for bad in ("pay_" + "ab" * 16, "pi_xyz", "pi_" + "AB" * 16, "pi_" + "ab" * 16 + "0"):
        assert payment_id_of(bad) is None
    assert refund_id("m", "k") == refund_id("m", "k") != refund_id("m2", "k")
    assert refund_id("m", "k").startswith("re_") and len(refund_id("m", "k")) == 35


def test_errors_take_stripes_shape() -> None:
    conflict = stripe_error(ApiError(409, "idempotency_error", "idempotency_conflict", "x"))
    assert (conflict.status_code, conflict.type) == (400, "idempotency_error")
    state = stripe_error(ApiError(409, "invalid_request_error", "already_captured", "already captured"))
    assert (state.status_code, state.code) == (
        400,
        "payment_intent_unexpected_state",
    ) and "already_captured" in state.message
    card = stripe_error(ApiError(402, "card_error", "insufficient_funds", "declined"), intent={"id": "pi_x"})
    assert card.body()["error"] | {"message": None} == {
        "type": "card_error",
        "code": "card_declined",
        "param": None,
        "decline_code": "insufficient_funds",
        "message": None,
        "payment_intent": {"id": "pi_x"},
    }
    renamed = stripe_error(
        ApiError(400, "invalid_request_error", "amount_exceeds_authorized", "too much", "amount_minor"),
        {"amount_minor": "amount_to_capture"},
    )
    assert renamed.param == "amount_to_capture"
    in_use = stripe_error(ApiError(409, "idempotency_error", "idempotency_key_in_use", "busy"))
    assert in_use.status_code == 409


def outcome(status: str, **extra: Any) -> dict[str, Any]:
    return (
        view("authorized")
        | {
            "kind": "create",
            "status": status,
            "reason_code": None,
            "amount_minor": 1000,
            "command_id": "c",
            "occurred_at": T0,
        }
        | extra
    )


def test_outcomes_answer_intents_and_declines_carry_the_intent() -> None:
    status, body, replayed = outcome_answer(outcome("succeeded"), None)
    assert (status, body["status"], replayed) == (200, "requires_capture", False)
    status, body, replayed = outcome_answer(
        outcome("rejected", reason_code="card_declined", payment_status="declined", authorized_minor=0), None
    )
    assert status == 402 and body["error"]["decline_code"] == "generic_decline"
    assert body["error"]["payment_intent"]["status"] == "requires_payment_method"
    status, body, replayed = outcome_answer(outcome("replayed"), None)
    assert status == 200 and replayed
    status, body, _ = outcome_answer(
        outcome("rejected", kind="capture", reason_code="payment_not_found", payment_status=None), None
    )
    assert status == 404 and body["error"]["code"] == "resource_missing"


def test_a_balance_from_the_ledger_accounts() -> None:
    from streams.api.stripe_objects import balance_object

    rows = [
        {"account": "merchant:m_acme:available", "currency": "EUR", "amount": 500},
        {"account": "merchant:m_acme:pending", "currency": "EUR", "amount": -500},
        {"account": "merchant:m_acme:incoming", "currency": "USD", "amount": 30},
        {"account": "merchant:m_acme:pending", "currency": "USD", "amount": 970},
    ]
    assert balance_object("m_acme", rows) == {
        "object": "balance",
        "livemode": False,
        "available": [{"amount": 500, "currency": "eur"}, {"amount": 0, "currency": "usd"}],
        "pending": [{"amount": -500, "currency": "eur"}, {"amount": 1000, "currency": "usd"}],
    }
    assert balance_object("m_acme", []) == {"object": "balance", "livemode": False, "available": [], "pending": []}
    with pytest.raises(AssertionError):
        balance_object("m_acme", [{"account": "merchant:m_other:pending", "currency": "USD", "amount": 1}])


def test_disputes_are_named_by_their_opening_event_and_closed_by_the_network() -> None:
    from streams.api.stripe_objects import opened_event_of
    from streams.domain.stripe_shapes import dispute_id, dispute_object

    evt = "evt_" + "cd" * 16
    assert dispute_id(evt) == "dp_" + "cd" * 16 and opened_event_of(dispute_id(evt)) == evt
    assert opened_event_of("dp_x") is None and opened_event_of(evt) is None
    row = {
        "event_id": evt,
        "payment_id": PID,
        "currency": "EUR",
        "amount_minor": 700,
        "reason_code": "duplicate",
        "occurred_at": T0,
        "closed_as": "",
    }
    d = dispute_object(row)
    assert (d["object"], d["amount"], d["currency"], d["payment_intent"], d["reason"], d["status"], d["created"]) == (
        "dispute",
        700,
        "eur",
        intent_id(PID),
        "duplicate",
        "needs_response",
        int(T0.timestamp()),
    )
    assert (
        dispute_object(row, 2)["status"] == "under_review"
        and dispute_object(row, 2)["evidence_details"]["submission_count"] == 2
    )
    assert dispute_object(row | {"closed_as": "dispute_won"}, 1)["status"] == "won"
    assert dispute_object(row | {"closed_as": "dispute_lost"})["status"] == "lost"


def test_payouts() -> None:
    from datetime import date

    from streams.api.stripe_objects import payout_object

    sent, paid_at = datetime(2026, 11, 26, 1, tzinfo=UTC), datetime(2026, 11, 27, 9, tzinfo=UTC)
    row = {
        "payout_id": "po_1",
        "merchant_id": "m_acme",
        "currency": "EUR",
        "amount_minor": 900,
        "day": date(2026, 11, 25),
        "status": "sent",
        "sent_at": sent,
        "answered_at": None,
        "failure_reason": "",
    }
    po = payout_object(row)
    assert (po["object"], po["amount"], po["currency"], po["status"], po["created"], po["failure_code"]) == (
        "payout",
        900,
        "eur",
        "in_transit",
        int(sent.timestamp()),
        None,
    )
    assert po["arrival_date"] == int(datetime(2026, 11, 26, tzinfo=UTC).timestamp())
    paid = payout_object(row | {"status": "paid", "answered_at": paid_at})
    assert (paid["status"], paid["arrival_date"]) == ("paid", int(paid_at.timestamp()))
    failed = payout_object(row | {"status": "failed", "answered_at": paid_at, "failure_reason": "account_closed"})
    assert (failed["status"], failed["failure_code"]) == ("failed", "account_closed")


def test_a_balance_transaction_is_one_entrys_move_on_one_account() -> None:
    from streams.api.stripe_objects import balance_transaction_object, balance_transaction_of

    at = datetime(2026, 11, 25, tzinfo=UTC)
    txn = balance_transaction_object(
        {
            "entry_id": "je_" + "b" * 32,
            "account": "merchant:m1:available",
            "currency": "USD",
            "event_type": "settlement",
            "payment_id": "stl_x",
            "amount_minor": 941,
            "first_at": at,
        }
    )
    assert (txn["id"], txn["status"], txn["type"], txn["amount"], txn["currency"], txn["source"]) == (
        "txn_" + "b" * 32 + "a",
        "available",
        "transfer",
        941,
        "usd",
        "stl_x",
    )
    assert balance_transaction_of(txn["id"]) == ("b" * 32, "available") and balance_transaction_of("txn_x") is None
