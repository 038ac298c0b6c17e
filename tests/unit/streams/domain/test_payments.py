"""The payment state machine, `decide`, by example: one scenario per lifecycle rule."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest

from connectors.providers.simulated import ProviderResult
from schemas.codec import Codec
from schemas.ids import derive_outcome_id
from streams.domain.payments import MAX_FOLLOW_UPS, Decision, Payment, Policy, Saga, decide
from tests.unit.streams.conftest import ScriptedProvider, saga_of

POLICY = Policy()
WINDOW = timedelta(days=7)
MS = timedelta(milliseconds=1)
OUTCOMES = Codec("PaymentOutcome")


DECLINED = ProviderResult("declined", "card_declined")


def declining() -> ScriptedProvider:
    return ScriptedProvider(authorize_result=DECLINED)


def apply(payment: Payment | None, cmd: dict[str, Any], saga: Saga | None = None, policy: Policy = POLICY) -> Decision:
    """decide() plus what must hold for every decision: one well-formed outcome for the command."""
    d = decide(payment, cmd, saga or saga_of(), policy)
    assert d.outcome["command_id"] == cmd["command_id"]
    assert d.outcome["outcome_id"] == derive_outcome_id(cmd["command_id"])
    assert d.outcome["kind"] == cmd["kind"]
    OUTCOMES.encode(d.outcome, check=True)
    return d


def ok(payment: Payment | None, cmd: dict[str, Any], **kw: Any) -> Payment:
    d = apply(payment, cmd, **kw)
    assert d.outcome["status"] == "succeeded", d.outcome
    assert d.changed and d.payment is not None
    assert d.outcome["payment_status"] == d.payment.status
    return d.payment


def refused(payment: Payment | None, cmd: dict[str, Any], reason: str, **kw: Any) -> Decision:
    d = apply(payment, cmd, **kw)
    assert (d.outcome["status"], d.outcome["reason_code"]) == ("rejected", reason)
    assert not d.changed
    assert d.payment is payment  # untouched
    return d


def amounts(p: Payment) -> tuple[str, int, int, int]:
    return p.status, p.authorized_minor, p.captured_minor, p.refunded_minor


# --- create ---


def test_automatic_create_is_captured(cmds) -> None:
    d = apply(None, cmds.create(amount=10_000))

    p = d.payment
    assert d.changed
    assert amounts(p) == ("captured", 10_000, 10_000, 0)
    assert (p.payment_id, p.merchant_id, p.currency, p.capture_method) == (
        cmds.create()["payment_id"],
        "m_acme",
        "USD",
        "automatic",
    )
    assert (p.card_bin, p.card_last4, p.version) == ("424242", "4242", 2)  # authorized, captured
    assert p.created_at_ms == int(cmds.t0.timestamp()) * 1000
    assert d.outcome["status"] == "succeeded"
    assert (d.outcome["payment_status"], d.outcome["captured_minor"], d.outcome["card_last4"]) == (
        "captured",
        10_000,
        "4242",
    )
    assert set(p.idempotency) == {"order-1"}


def test_manual_create_is_authorized(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    assert amounts(p) == ("authorized", 10_000, 0, 0)


def test_decline_is_stored_under_the_key_and_replayed(cmds) -> None:
    provider = declining()
    d = apply(None, cmds.create(), saga=saga_of(provider))
    assert (d.outcome["status"], d.outcome["reason_code"], d.outcome["payment_status"]) == (
        "rejected",
        "card_declined",
        "declined",
    )
    assert d.changed  # a declined payment exists and its key is taken
    assert amounts(d.payment) == ("declined", 0, 0, 0)
    assert "order-1" in d.payment.idempotency

    retry = apply(
        d.payment, cmds.create(command_id="cmd-retry", at=cmds.t0 + timedelta(minutes=1)), saga=saga_of(provider)
    )
    assert (retry.outcome["status"], retry.outcome["reason_code"], retry.outcome["payment_status"]) == (
        "replayed",
        "card_declined",
        "declined",
    )
    assert not retry.changed and retry.payment is d.payment
    assert provider.calls("authorize") == 1  # the card is never charged again


def test_declined_payment_takes_no_follow_ups(cmds) -> None:
    p = apply(None, cmds.create(capture_method="manual"), saga=saga_of(declining())).payment
    pid = p.payment_id
    refused(p, cmds.capture(pid, "cap-1"), "payment_declined")
    refused(p, cmds.void(pid, "void-1"), "payment_declined")
    refused(p, cmds.refund(pid, "ref-1"), "not_captured")
    refused(p, cmds.expire(pid, "exp-1", at=cmds.t0 + WINDOW), "not_expirable")


# --- idempotency ---


def test_same_key_same_body_is_replayed(cmds) -> None:
    first = apply(None, cmds.create(capture_method="manual"))
    retry_cmd = cmds.create(capture_method="manual", command_id="cmd-retry", at=cmds.t0 + timedelta(hours=1))

    provider = ScriptedProvider()
    retry = apply(first.payment, retry_cmd, saga=saga_of(provider))
    assert provider.journal == {}, "a replay called the provider"

    assert retry.outcome["status"] == "replayed"
    assert not retry.changed and retry.payment is first.payment
    assert retry.outcome["occurred_at"] == retry_cmd["occurred_at"]
    ids = {"outcome_id", "command_id", "status", "occurred_at"}
    assert {k: v for k, v in retry.outcome.items() if k not in ids} == {
        k: v for k, v in first.outcome.items() if k not in ids
    }


def test_replay_returns_the_original_answer_after_the_payment_moved_on(cmds) -> None:
    p = ok(None, cmds.create())
    p = ok(p, cmds.refund(p.payment_id, "ref-1", amount=500))
    retry = apply(p, cmds.create(command_id="cmd-retry"))
    assert retry.outcome["status"] == "replayed"
    assert (retry.outcome["payment_status"], retry.outcome["refunded_minor"]) == ("captured", 0)
    assert retry.payment is p


def test_follow_up_retry_is_replayed_and_captures_once(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=4_000))
    retry = apply(
        p, cmds.capture(p.payment_id, "cap-1", amount=4_000, command_id="cmd-retry", at=cmds.t0 + timedelta(seconds=5))
    )
    assert retry.outcome["status"] == "replayed"
    assert retry.payment is p and p.captured_minor == 4_000


@pytest.mark.parametrize(
    "change",
    [{"amount": 9_999}, {"currency": "EUR"}, {"capture_method": "manual"}, {"metadata": {"order": "2"}}],
)
def test_same_key_different_body_is_a_conflict(cmds, change: dict[str, Any]) -> None:
    p = ok(None, cmds.create())
    d = refused(p, cmds.create(command_id="cmd-2", **change), "idempotency_conflict")
    assert d.outcome["captured_minor"] == 10_000  # the answer shows the current state


def test_follow_up_key_conflict(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=4_000))
    refused(p, cmds.capture(p.payment_id, "cap-1", amount=5_000, command_id="cmd-2"), "idempotency_conflict")
    # The create's key is taken too.
    refused(p, cmds.capture(p.payment_id, "order-1", amount=1), "idempotency_conflict")


def test_a_rejected_command_leaves_its_key_free(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    refused(p, cmds.capture(p.payment_id, "cap-1", amount=20_000), "amount_exceeds_authorized")
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=5_000, command_id="cmd-fixed"))
    assert p.captured_minor == 5_000


def test_operations_per_payment_are_bounded(cmds) -> None:
    p = ok(None, cmds.create(amount=1_000))
    for i in range(MAX_FOLLOW_UPS - 1):
        p = ok(p, cmds.refund(p.payment_id, f"ref-{i}", amount=1))
    refused(p, cmds.refund(p.payment_id, "one-too-many", amount=1), "too_many_operations")


# --- capture ---


def test_partial_captures_up_to_the_authorized_amount(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    pid = p.payment_id

    p = ok(p, cmds.capture(pid, "cap-1", amount=4_000))
    assert amounts(p) == ("partially_captured", 10_000, 4_000, 0)
    refused(p, cmds.capture(pid, "cap-2", amount=6_001), "amount_exceeds_authorized")
    p = ok(p, cmds.capture(pid, "cap-3", amount=6_000))
    assert amounts(p) == ("captured", 10_000, 10_000, 0)
    refused(p, cmds.capture(pid, "cap-4", amount=1), "already_captured")
    assert p.version == 3  # authorized, captured, captured


def test_capture_without_amount_takes_the_remainder(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=2_500))
    p = ok(p, cmds.capture(p.payment_id, "cap-2"))
    assert amounts(p) == ("captured", 10_000, 10_000, 0)


def test_capture_of_an_automatic_payment_is_refused(cmds) -> None:
    p = ok(None, cmds.create())
    refused(p, cmds.capture(p.payment_id, "cap-1"), "already_captured")


def test_capture_at_the_end_of_the_window_is_refused(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    refused(p, cmds.capture(p.payment_id, "cap-1", at=cmds.t0 + WINDOW), "authorization_expired")
    assert ok(p, cmds.capture(p.payment_id, "cap-1", at=cmds.t0 + WINDOW - MS)).status == "captured"


# --- void ---


def test_void_before_capture(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    pid = p.payment_id
    p = ok(p, cmds.void(pid, "void-1"))
    assert amounts(p) == ("voided", 10_000, 0, 0)
    refused(p, cmds.void(pid, "void-2"), "already_voided")
    refused(p, cmds.capture(pid, "cap-1"), "already_voided")
    refused(p, cmds.refund(pid, "ref-1"), "not_captured")
    refused(p, cmds.expire(pid, "exp-1", at=cmds.t0 + WINDOW), "not_expirable")


def test_no_void_after_capture(cmds) -> None:
    p = ok(None, cmds.create())
    refused(p, cmds.void(p.payment_id, "void-1"), "already_captured")
    manual = ok(None, cmds.create("order-2", capture_method="manual"))
    partial = ok(manual, cmds.capture(manual.payment_id, "cap-1", amount=1))
    refused(partial, cmds.void(manual.payment_id, "void-1"), "already_captured")


# --- refund ---


def test_partial_and_multiple_refunds_up_to_the_captured_amount(cmds) -> None:
    p = ok(None, cmds.create())
    pid = p.payment_id

    p = ok(p, cmds.refund(pid, "ref-1", amount=3_000))
    assert amounts(p) == ("partially_refunded", 10_000, 10_000, 3_000)
    refused(p, cmds.refund(pid, "ref-2", amount=7_001), "amount_exceeds_captured")
    p = ok(p, cmds.refund(pid, "ref-3", amount=2_000))
    p = ok(p, cmds.refund(pid, "ref-4", amount=5_000))
    assert amounts(p) == ("refunded", 10_000, 10_000, 10_000)
    refused(p, cmds.refund(pid, "ref-5", amount=1), "already_refunded")


def test_refund_is_bounded_by_captured_not_authorized(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    refused(p, cmds.refund(p.payment_id, "ref-0", amount=1), "not_captured")
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=4_000))
    refused(p, cmds.refund(p.payment_id, "ref-1", amount=4_001), "amount_exceeds_captured")
    p = ok(p, cmds.refund(p.payment_id, "ref-2"))  # no amount: the rest of what was captured
    assert amounts(p) == ("refunded", 10_000, 4_000, 4_000)


# --- expire ---


def test_expire_only_after_the_window(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    pid = p.payment_id

    refused(p, cmds.expire(pid, "exp-1", at=cmds.t0 + WINDOW - MS), "authorization_window_open")
    p = ok(p, cmds.expire(pid, "exp-1", at=cmds.t0 + WINDOW))
    assert amounts(p) == ("expired", 10_000, 0, 0)
    refused(p, cmds.capture(pid, "cap-1", at=cmds.t0 + WINDOW), "already_expired")
    refused(p, cmds.void(pid, "void-1", at=cmds.t0 + WINDOW), "already_expired")


def test_expire_uses_the_policy_window(cmds) -> None:
    policy = Policy(auth_window=timedelta(hours=1))
    p = ok(None, cmds.create(capture_method="manual"))
    refused(
        p,
        cmds.expire(p.payment_id, "exp-1", at=cmds.t0 + timedelta(minutes=59)),
        "authorization_window_open",
        policy=policy,
    )
    assert ok(p, cmds.expire(p.payment_id, "exp-1", at=cmds.t0 + timedelta(hours=1)), policy=policy).status == "expired"


def test_only_an_open_authorization_expires(cmds) -> None:
    p = ok(None, cmds.create())
    refused(p, cmds.expire(p.payment_id, "exp-1", at=cmds.t0 + timedelta(days=30)), "not_expirable")


# --- scoping and lookup ---


def test_currency_mismatch(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    refused(p, cmds.capture(p.payment_id, "cap-1", currency="EUR"), "currency_mismatch")
    assert ok(p, cmds.capture(p.payment_id, "cap-1", currency="USD")).status == "captured"


def test_another_merchants_payment_is_not_found(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    d = refused(p, cmds.capture(p.payment_id, "cap-1", merchant="m_globex"), "payment_not_found")
    # Nothing about the payment leaks, not even through a key it knows.
    assert (d.outcome["payment_status"], d.outcome["authorized_minor"], d.outcome["card_last4"]) == (None, 0, None)
    refused(p, cmds.capture(p.payment_id, "order-1", merchant="m_globex"), "payment_not_found")


def test_unknown_payment_is_not_found(cmds) -> None:
    d = refused(None, cmds.capture("pay_unknown", "cap-1"), "payment_not_found")
    assert d.payment is None
    assert d.outcome["payment_id"] == "pay_unknown"


# --- the stored form ---


def test_payment_json_round_trip(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual", metadata={"order": "1"}))
    p = ok(p, cmds.capture(p.payment_id, "cap-1", amount=6_000))
    p = ok(p, cmds.refund(p.payment_id, "ref-1", amount=1_000))

    data = p.to_json()

    assert Payment.from_json(data) == p
    assert Payment.from_json(data).to_json() == data  # canonical bytes
    stored = json.loads(data)
    assert all(type(stored[k]) is int for k in ("amount_minor", "authorized_minor", "captured_minor", "refunded_minor"))
    assert set(stored["idempotency"]) == {"order-1", "cap-1", "ref-1"}


def test_stored_state_decides_like_the_live_one(cmds) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    restored = Payment.from_json(p.to_json())
    refused(restored, cmds.create(command_id="cmd-2", amount=1), "idempotency_conflict")
    assert apply(restored, cmds.create(capture_method="manual", command_id="cmd-3")).outcome["status"] == "replayed"


@pytest.mark.parametrize(
    "change",
    [
        {"captured_minor": 10_001, "authorized_minor": 10_000},
        {"refunded_minor": 1},
        {"status": "paid"},
        {"status": "voided"},
        {"released_minor": 10_001},
    ],
)
def test_impossible_states_cannot_be_built(cmds, change: dict[str, Any]) -> None:
    p = ok(None, cmds.create(capture_method="manual"))
    with pytest.raises(AssertionError):
        replace(p, **change)


# --- the saga: fraud hook, provider keys, unknown outcomes, compensation, events ---

TIMEOUT = ProviderResult("unknown", "provider_timeout")


def types(d: Decision) -> list[str]:
    return [e["type"] for e in d.events]


def test_events_carry_what_moved(cmds) -> None:
    d = apply(None, cmds.create(amount=10_000))
    assert types(d) == ["authorized", "captured"]
    assert [(e["amount_minor"], e["version"], e["payment_status"]) for e in d.events] == [
        (10_000, 1, "authorized"),
        (10_000, 2, "captured"),
    ]
    assert all(e["command_id"] == cmds.create()["command_id"] and e["card_token"] for e in d.events)
    p = d.payment
    d = apply(p, cmds.refund(p.payment_id, "ref-1", amount=300))
    assert types(d) == ["refunded"] and d.events[0]["amount_minor"] == 300 and d.events[0]["version"] == 3


def test_a_retried_command_reuses_its_provider_keys(cmds) -> None:
    """A redelivery after a crash asks the provider again under the same keys: one charge."""
    provider = ScriptedProvider()
    first = apply(None, cmds.create(), saga=saga_of(provider))
    again = apply(None, cmds.create(), saga=saga_of(provider))
    assert first.events == again.events
    assert set(provider.journal.values()) == {2} and len(provider.journal) == 2  # one authorize key, one capture key


def test_fraud_decline_never_reaches_the_provider(cmds) -> None:
    from streams.domain.payments import FraudVerdict

    provider = ScriptedProvider()
    d = apply(None, cmds.create(), saga=saga_of(provider, fraud=lambda c: FraudVerdict("decline", ("velocity",))))
    assert (d.outcome["status"], d.outcome["reason_code"], d.payment.status) == (
        "rejected",
        "fraud_suspected",
        "declined",
    )
    assert provider.journal == {}
    assert types(d) == ["declined"] and d.payment.fraud_action == "decline"


def test_timeout_leaves_the_payment_pending_and_a_status_query_resolves_it(cmds) -> None:
    provider = ScriptedProvider(authorize_result=TIMEOUT)
    saga = saga_of(provider)
    d = apply(None, cmds.create(), saga=saga)
    assert (d.outcome["status"], d.payment.status, types(d)) == ("succeeded", "pending", ["authorization_pending"])
    (resolve,) = d.commands
    assert (resolve["kind"], resolve["payment_id"]) == ("resolve", d.payment.payment_id)
    # Follow-ups wait for the answer.
    refused(d.payment, cmds.capture(d.payment.payment_id, "cap-1"), "payment_pending", saga=saga)

    r = apply(d.payment, resolve, saga=saga)
    assert (r.outcome["status"], r.payment.status, types(r)) == ("succeeded", "captured", ["authorized", "captured"])
    assert provider.calls("authorize") == 1 and provider.calls("status") == 1  # never a second authorization
    assert r.payment.provider_ref == d.payment.provider_ref
    refused(r.payment, resolve, "not_pending", saga=saga)  # a stray resolve changes nothing


def test_an_unreachable_provider_is_queried_a_bounded_number_of_times(cmds) -> None:
    from streams.domain.payments import MAX_RESOLVE_ATTEMPTS

    provider = ScriptedProvider(
        authorize_result=TIMEOUT, status_results=[ProviderResult("unknown", "provider_unreachable")]
    )
    saga = saga_of(provider)
    d = apply(None, cmds.create(), saga=saga)
    p, queries = d.payment, list(d.commands)
    while queries:
        r = apply(p, queries.pop(), saga=saga)
        p = r.payment
        queries.extend(r.commands)
    assert provider.calls("status") == MAX_RESOLVE_ATTEMPTS
    assert (r.outcome["reason_code"], p.status, p.resolve_attempts) == (
        "provider_unreachable",
        "pending",
        MAX_RESOLVE_ATTEMPTS,
    )
    assert provider.calls("authorize") == 1


def test_a_refused_capture_is_compensated_by_a_void(cmds) -> None:
    provider = ScriptedProvider(capture_result=ProviderResult("declined", "capture_refused"))
    d = apply(None, cmds.create(), saga=saga_of(provider))
    assert (d.outcome["status"], d.outcome["reason_code"], d.payment.status) == ("rejected", "capture_failed", "failed")
    assert types(d) == ["authorized", "voided"]
    assert d.events[1]["amount_minor"] == 10_000 and d.payment.hold_minor == 0
    assert provider.calls("void") == 1
    refused(d.payment, cmds.capture(d.payment.payment_id, "cap-1"), "payment_failed")


def test_expiry_timer_releases_the_rest_of_a_partial_capture(cmds) -> None:
    from streams.domain.payments import expire_due

    d = apply(None, cmds.create(capture_method="manual"))
    (timer,) = d.timers
    assert (timer.kind, timer.due_ms) == ("expire", d.payment.created_at_ms + POLICY.auth_window_ms)
    p = ok(d.payment, cmds.capture(d.payment.payment_id, "cap-1", amount=4_000))

    e = expire_due(p, timer, saga_of(), POLICY)
    assert types(e) == ["expired"] and e.events[0]["amount_minor"] == 6_000 and e.outcome is None
    assert (e.payment.status, e.payment.hold_minor, e.payment.released_minor) == ("partially_captured", 0, 6_000)
    refused(e.payment, cmds.capture(p.payment_id, "cap-2", amount=1), "authorization_expired")
    assert expire_due(e.payment, timer, saga_of(), POLICY) is None  # fires once
    assert expire_due(ok(p, cmds.capture(p.payment_id, "cap-3")), timer, saga_of(), POLICY) is None  # nothing held


def test_the_follow_up_bound_is_the_policy_s(cmds) -> None:
    policy = Policy(max_follow_ups=2)
    p = decide(None, cmds.create(amount=1_000), saga_of(), policy).payment
    p = decide(p, cmds.refund(p.payment_id, "ref-1", amount=1), saga_of(), policy).payment
    out = decide(p, cmds.refund(p.payment_id, "ref-2", amount=1), saga_of(), policy).outcome
    assert (out["status"], out["reason_code"]) == ("rejected", "too_many_operations")


# --- disputes ---

FRAUD_LABELS = Codec("FraudLabel")
EVENTS = Codec("PaymentEvent")


def captured(cmds, amount: int = 10_000) -> Payment:  # type: ignore[no-untyped-def]
    return ok(None, cmds.create(amount=amount))


def test_dispute_opens_for_the_disputable_rest_with_a_fee(cmds) -> None:
    p = captured(cmds)
    p = ok(p, cmds.refund(p.payment_id, "r1", amount=3_000))
    d = apply(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="fraudulent"))
    (e,) = d.events
    EVENTS.encode(e, check=True)
    assert (e["type"], e["amount_minor"], e["fee_minor"], e["reason_code"]) == (
        "dispute_opened",
        7_000,
        1_500,
        "fraudulent",
    )
    assert (d.payment.dispute_minor, d.payment.status, d.payment.refunded_minor) == (7_000, "partially_refunded", 3_000)
    assert d.payment.dispute_due_ms == p.created_at_ms + 21 * 24 * 3600 * 1000


def test_dispute_fee_comes_from_the_policy(cmds) -> None:
    p = captured(cmds)
    d = apply(
        p,
        cmds.dispute("dispute_open", p.payment_id, "d1", amount=100, reason="general"),
        policy=Policy(dispute_fee_minor=0),
    )
    assert (d.events[0]["amount_minor"], d.events[0]["fee_minor"]) == (100, 0)


def test_dispute_rules(cmds) -> None:
    manual = ok(None, cmds.create("order-2", capture_method="manual"))
    refused(manual, cmds.dispute("dispute_open", manual.payment_id, "d1", reason="general"), "not_disputable")
    p = captured(cmds)
    refused(
        p,
        cmds.dispute("dispute_open", p.payment_id, "d1", amount=10_001, reason="general"),
        "amount_exceeds_disputable",
    )
    refused(p, cmds.dispute("dispute_close", p.payment_id, "c0", outcome="won"), "no_open_dispute")
    refused(p, cmds.dispute("dispute_evidence", p.payment_id, "e0", evidence="x"), "no_open_dispute")
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", amount=4_000, reason="general"))
    refused(p, cmds.dispute("dispute_open", p.payment_id, "d2", reason="general"), "dispute_already_open")
    refused(p, cmds.refund(p.payment_id, "r1", amount=1), "dispute_in_progress")


def test_capture_is_refused_while_a_dispute_is_open(cmds) -> None:
    p = ok(None, cmds.create("order-2", capture_method="manual"))
    p = ok(p, cmds.capture(p.payment_id, "c1", amount=4_000))
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="general"))
    refused(p, cmds.capture(p.payment_id, "c2", amount=1_000), "dispute_in_progress")


def test_evidence_is_kept_until_its_due_date_and_bounded(cmds) -> None:
    p = captured(cmds)
    due = cmds.t0 + timedelta(days=2)
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="product_not_received", due=due))
    version = p.version
    p = ok(p, cmds.dispute("dispute_evidence", p.payment_id, "e1", evidence="tracking 1Z999", at=due))
    assert (p.dispute_evidence, p.version) == (("tracking 1Z999",), version)  # no event: no money moves
    assert Payment.from_json(p.to_json()) == p
    refused(p, cmds.dispute("dispute_evidence", p.payment_id, "e2", evidence="late", at=due + MS), "evidence_overdue")
    for i in range(2, 11):
        p = ok(p, cmds.dispute("dispute_evidence", p.payment_id, f"e{i}", evidence=str(i)))
    refused(p, cmds.dispute("dispute_evidence", p.payment_id, "e11", evidence="11"), "too_much_evidence")


def test_accepted_evidence_rides_on_its_outcome_and_nowhere_else(cmds) -> None:
    p = captured(cmds)
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="product_not_received"))
    submit = cmds.dispute("dispute_evidence", p.payment_id, "e1", evidence="tracking 1Z999")
    d = apply(p, submit)
    assert d.outcome["dispute_evidence"] == "tracking 1Z999"  # PaymentOutcome v2: for the read model
    assert d.payment is not None and "tracking" not in json.dumps(d.payment.idempotency)  # kept once, in the dispute
    replay = apply(d.payment, submit | {"command_id": "again"})
    assert replay.outcome["status"] == "replayed" and replay.outcome.get("dispute_evidence") is None
    assert apply(p, cmds.capture(p.payment_id, "c9")).outcome["dispute_evidence"] is None


def test_a_won_dispute_gives_the_funds_back_and_can_be_refunded_later(cmds) -> None:
    p = captured(cmds)
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="fraudulent"))
    d = apply(p, cmds.dispute("dispute_close", p.payment_id, "c1", outcome="won"))
    assert [(e["type"], e["amount_minor"], e["reason_code"]) for e in d.events] == [
        ("dispute_won", 10_000, "fraudulent")
    ]
    assert d.labels == ()  # won: no chargeback, no label
    assert (d.payment.dispute_minor, d.payment.dispute_lost_minor) == (0, 0)
    p = ok(d.payment, cmds.refund(p.payment_id, "r1"))
    assert (p.status, p.refunded_minor) == ("refunded", 10_000)


def test_a_disputes_close_names_its_opening_and_the_next_dispute_its_own(cmds) -> None:
    """The close's event carries the opening's event id (the API names a dispute by it)."""
    p = captured(cmds)
    opened = apply(p, cmds.dispute("dispute_open", p.payment_id, "d1", amount=4_000, reason="general"))
    [opening] = opened.events
    assert "dispute_event_id" not in opening and opened.payment.dispute_event_id == opening["event_id"]
    assert Payment.from_json(opened.payment.to_json()) == opened.payment
    won = apply(opened.payment, cmds.dispute("dispute_close", p.payment_id, "c1", outcome="won"))
    assert won.events[0]["dispute_event_id"] == opening["event_id"] and won.payment.dispute_event_id is None
    again = apply(won.payment, cmds.dispute("dispute_open", p.payment_id, "d2", amount=1_000, reason="general"))
    lost = apply(again.payment, cmds.dispute("dispute_close", p.payment_id, "c2", outcome="lost"))
    assert lost.events[0]["dispute_event_id"] == again.events[0]["event_id"] != opening["event_id"]
    for e in (*won.events, *lost.events):
        EVENTS.encode(e | {"chain_seq": 1}, check=True)


def test_a_lost_fraud_dispute_emits_a_fraud_label(cmds) -> None:
    p = captured(cmds)
    p = ok(p, cmds.refund(p.payment_id, "r1", amount=1_000))
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", amount=6_000, reason="fraudulent"))
    at = cmds.t0 + timedelta(days=30)
    d = apply(p, cmds.dispute("dispute_close", p.payment_id, "c1", outcome="lost", at=at))
    (label,) = d.labels
    FRAUD_LABELS.encode(label, check=True)
    assert (label["payment_id"], label["card_token"], label["fraud"], label["source"]) == (
        p.payment_id,
        p.card_token,
        True,
        "chargeback",
    )
    assert (label["amount_minor"], label["reason_code"], label["occurred_at"]) == (6_000, "fraudulent", at)
    assert label["tx_occurred_at"] == cmds.t0
    q = d.payment
    assert (q.dispute_lost_minor, q.disputable_minor) == (6_000, 3_000)
    # Only the rest is refundable; refunding all of it makes the payment refunded.
    refused(q, cmds.refund(q.payment_id, "r2", amount=3_001), "amount_exceeds_captured")
    assert ok(q, cmds.refund(q.payment_id, "r3")).status == "refunded"


def test_a_lost_dispute_for_another_reason_is_no_fraud_label(cmds) -> None:
    p = captured(cmds)
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="product_not_received"))
    assert apply(p, cmds.dispute("dispute_close", p.payment_id, "c1", outcome="lost")).labels == ()


def test_a_dispute_command_replays_and_conflicts_by_its_key(cmds) -> None:
    p = captured(cmds)
    cmd = cmds.dispute("dispute_open", p.payment_id, "d1", reason="general")
    q = ok(p, cmd)
    assert apply(q, cmd | {"command_id": "retry"}).outcome["status"] == "replayed"
    other = cmds.dispute("dispute_open", p.payment_id, "d1", reason="duplicate", command_id="retry-2")
    refused(q, other, "idempotency_conflict")
