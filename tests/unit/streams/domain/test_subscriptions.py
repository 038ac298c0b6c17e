"""Subscriptions as pure logic: the schedule (calendar months, trials), dunning,
proration, cancellation, and the charges' derived, byte-stable identity."""

from __future__ import annotations

import calendar
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.ids import derive_charge_command_id, derive_payment_id
from schemas.times import from_ms, to_ms
from streams.domain.subscriptions import (
    DAY_MS,
    DUNNING_DELAYS_MS,
    MAX_ATTEMPTS,
    Subscription,
    SubscriptionError,
    add_interval,
    charge_key,
    on_command,
    on_outcome,
    on_tick,
    parse_charge_key,
    prorate,
)

COMMANDS = Codec("PaymentCommand")
TOKEN = {
    "token": "tok_" + "A" * 32,
    "bin": "424242",
    "last4": "4242",
    "brand": "visa",
    "exp_month": 12,
    "exp_year": 2031,
}
JAN31 = datetime(2027, 1, 31, 9, 30, tzinfo=UTC)


def create_cmd(
    sid: str = "sub_a",
    *,
    amount: int = 1000,
    interval: str = "month",
    count: int = 1,
    trial: int = 0,
    anchor: datetime = JAN31,
    cid: str = "c1",
) -> dict:
    return {
        "command_id": cid,
        "kind": "create",
        "subscription_id": sid,
        "merchant_id": "m_acme",
        "occurred_at": anchor,
        "plan": {"amount_minor": amount, "currency": "USD", "interval": interval, "interval_count": count},
        "card_token": TOKEN,
        "anchor_at": anchor,
        "trial_days": trial,
        "at_period_end": False,
        "outcome": None,
    }


def new_sub(**kw) -> Subscription:
    sub, out = on_command(None, create_cmd(**kw))
    assert out == ()
    return sub


def outcome_of(charge: dict, payment_status: str) -> dict:
    status = "rejected" if payment_status in ("declined", "failed") else "succeeded"
    return {
        "command_id": charge["command_id"],
        "payment_id": charge["payment_id"],
        "status": status,
        "payment_status": payment_status,
        "reason_code": "card_declined" if status == "rejected" else None,
        "idempotency_key": charge["idempotency_key"],
    }


def run(sub: Subscription, ticks: list[int], pay=lambda charge: "captured") -> tuple[Subscription, list[dict]]:
    """Tick through `ticks`, answering every charge at once with `pay(charge)`."""
    charges: list[dict] = []
    for t in ticks:
        sub, out = on_tick(sub, t)
        while out:
            (charge,) = out
            charges.append(charge)
            sub, out = on_outcome(sub, outcome_of(charge, pay(charge)))
    return sub, charges


def test_month_ends_clamp_and_never_drift() -> None:
    starts = [from_ms(add_interval(to_ms(JAN31), "month", k)) for k in range(5)]
    assert [(d.month, d.day) for d in starts] == [(1, 31), (2, 28), (3, 31), (4, 30), (5, 31)]
    assert all((d.hour, d.minute) == (9, 30) for d in starts)
    leap = to_ms(datetime(2028, 2, 29, tzinfo=UTC))
    assert [from_ms(add_interval(leap, "year", k)).date().isoformat() for k in (1, 4)] == ["2029-02-28", "2032-02-29"]
    assert add_interval(leap, "week", 2) - leap == 14 * DAY_MS


@settings(max_examples=200)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1), timezones=st.just(UTC)),
    st.sampled_from(["day", "week", "month", "year"]),
    st.integers(1, 5),
    st.integers(0, 40),
)
def test_periods_increase_and_months_keep_the_anchor_day(anchor: datetime, interval: str, count: int, k: int) -> None:
    a = to_ms(anchor)
    this, nxt = add_interval(a, interval, k * count), add_interval(a, interval, (k + 1) * count)
    assert this < nxt
    if interval in ("month", "year"):
        d = from_ms(nxt)
        assert d.day == min(anchor.day, calendar.monthrange(d.year, d.month)[1])
        months = (d.year - anchor.year) * 12 + d.month - anchor.month
        assert months == (k + 1) * count * (12 if interval == "year" else 1)


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(["day", "week", "month"]),
    st.integers(0, 20),
    st.lists(st.integers(1, 40 * DAY_MS), min_size=1, max_size=25),
)
def test_every_period_charged_once_in_order_whatever_the_ticks(interval: str, trial: int, gaps: list[int]) -> None:
    sub = new_sub(interval=interval, trial=trial)
    ticks, t = [], sub.anchor_ms
    for g in gaps:
        t += g
        ticks.append(t)
    sub, charges = run(sub, ticks)
    due = [k for k in range(400) if sub.period_start_ms(k) <= ticks[-1]]
    assert [int(c["metadata"]["period"]) for c in charges] == due  # never skipped, never doubled
    assert [to_ms(c["occurred_at"]) for c in charges] == [sub.period_start_ms(k) for k in due]
    assert all(to_ms(c["occurred_at"]) >= sub.anchor_ms + trial * DAY_MS for c in charges)
    # A tick per day instead gives the very same charges: their bytes do not depend on the ticks.
    daily = list(range(sub.anchor_ms + DAY_MS, ticks[-1], DAY_MS)) + [ticks[-1]]
    _, again = run(new_sub(interval=interval, trial=trial), daily)
    assert [COMMANDS.encode(c) for c in again] == [COMMANDS.encode(c) for c in charges]


def test_a_charge_is_a_valid_create_with_derived_ids() -> None:
    sub, (charge,) = on_tick(new_sub(), to_ms(JAN31) + 1)
    COMMANDS.encode(charge, check=True)
    key = charge_key("sub_a", 0, 0)
    assert charge["idempotency_key"] == key and parse_charge_key(key) == ("sub_a", 0, 0)
    assert charge["command_id"] == derive_charge_command_id("sub_a", 0, 0)
    assert charge["payment_id"] == derive_payment_id("m_acme", key)
    assert charge["card_token"] == TOKEN and charge["card"] is None and charge["amount_minor"] == 1000
    assert parse_charge_key("order-17") is None and parse_charge_key("sub/x/1/2/3") is None


def test_trial_then_billing_from_its_end() -> None:
    sub = new_sub(trial=14)
    assert sub.status == "trialing"
    sub, out = on_tick(sub, to_ms(JAN31) + 13 * DAY_MS)
    assert out == () and sub.status == "trialing"
    sub, (charge,) = on_tick(sub, to_ms(JAN31) + 14 * DAY_MS)
    assert sub.status == "active" and to_ms(charge["occurred_at"]) == to_ms(JAN31) + 14 * DAY_MS


def test_dunning_retries_on_its_schedule_then_cancels() -> None:
    sub = new_sub()
    sub, charges = run(sub, [to_ms(JAN31) + k * DAY_MS for k in range(1, 30)], pay=lambda c: "declined")
    attempts = [(int(c["metadata"]["period"]), int(c["metadata"]["attempt"])) for c in charges]
    assert attempts == [(0, a) for a in range(MAX_ATTEMPTS)]
    dues = [to_ms(c["occurred_at"]) for c in charges]
    assert [b - a for a, b in zip(dues, dues[1:])] == list(DUNNING_DELAYS_MS)
    assert len({c["command_id"] for c in charges}) == MAX_ATTEMPTS
    assert (sub.status, sub.cancel_reason, sub.retries_sent) == ("canceled", "dunning_exhausted", MAX_ATTEMPTS - 1)
    assert on_tick(sub, to_ms(JAN31) + 400 * DAY_MS)[1] == ()


def test_a_decline_then_a_paid_retry_resumes_the_schedule() -> None:
    sub = new_sub()
    sub, (first,) = on_tick(sub, to_ms(JAN31))
    sub, out = on_outcome(sub, outcome_of(first, "declined"))
    assert out == () and sub.status == "past_due"
    sub, (retry,) = on_tick(sub, to_ms(JAN31) + DAY_MS)
    assert retry["metadata"]["attempt"] == "1" and retry["command_id"] != first["command_id"]
    sub, out = on_outcome(sub, outcome_of(first, "declined"))  # the old attempt's outcome again: stale
    assert out == () and sub.status == "past_due"
    sub, out = on_outcome(sub, outcome_of(retry, "captured"))
    assert out == () and (sub.status, sub.paid_periods, sub.next_period) == ("active", 1, 1)
    _, (second,) = on_tick(sub, to_ms(datetime(2027, 2, 28, 9, 30, tzinfo=UTC)))
    assert (second["metadata"]["period"], second["metadata"]["attempt"]) == ("1", "0")


def test_a_held_outcome_is_never_retried() -> None:
    sub, (charge,) = on_tick(new_sub(), to_ms(JAN31))
    sub, out = on_outcome(sub, outcome_of(charge, "requires_review"))
    assert out == () and sub.held
    assert on_tick(sub, to_ms(JAN31) + 90 * DAY_MS)[1] == ()


@settings(max_examples=300)
@given(st.integers(0, 10**9), st.integers(1, 10**12), st.data())
def test_proration_is_bounded_and_exact_at_the_ends(amount: int, period_ms: int, data: st.DataObject) -> None:
    remaining = data.draw(st.integers(0, period_ms))
    part = prorate(amount, remaining, period_ms)
    assert 0 <= part <= amount
    assert abs(part * period_ms - amount * remaining) * 2 <= period_ms  # within half a minor unit
    assert prorate(amount, 0, period_ms) == 0 and prorate(amount, period_ms, period_ms) == amount
    assert part + prorate(amount, period_ms - remaining, period_ms) in (amount - 1, amount, amount + 1)


def test_prorate_rounds_half_to_even() -> None:
    assert prorate(5, 1, 2) == 2 and prorate(7, 1, 2) == 4 and prorate(3, 1, 3) == 1


def change(sid: str, amount: int, at: int, cid: str) -> dict:
    return {
        "command_id": cid,
        "kind": "change_plan",
        "subscription_id": sid,
        "merchant_id": "m_acme",
        "occurred_at": from_ms(at),
        "plan": {"amount_minor": amount, "currency": "USD", "interval": "day", "interval_count": 30},
    }


def test_upgrade_mid_period_is_invoiced_with_the_next_period() -> None:
    start = to_ms(JAN31)
    sub, charges = run(new_sub(interval="day", count=30), [start])
    sub, out = on_command(sub, change("sub_a", 2000, start + 15 * DAY_MS, "c2"))
    assert out == () and sub.balance_minor == 1000 - 500  # +1000 for half a period on the new plan, -500 credit
    again, _ = on_command(sub, change("sub_a", 2000, start + 15 * DAY_MS, "c2"))  # redelivered: applied once
    assert again == sub
    sub, charges = run(sub, [start + 30 * DAY_MS])
    assert charges[0]["amount_minor"] == 2000 + 500 and sub.balance_minor == 0


def test_a_downgrade_credit_larger_than_the_invoice_carries_on() -> None:
    start = to_ms(JAN31)
    sub, _ = run(new_sub(amount=10_000, interval="day", count=30), [start])
    sub, _ = on_command(sub, change("sub_a", 100, start + 3 * DAY_MS, "c2"))  # 27/30 unused: 9000 credit, 90 charge
    assert sub.balance_minor == 90 - 9000
    sub, charges = run(sub, [start + k * 30 * DAY_MS for k in range(1, 100)])
    # Periods paid by the credit need no charge; the first charge comes when the credit is spent.
    assert (
        charges[0]["amount_minor"] == 100 - ((9000 - 90) % 100)
        and int(charges[0]["metadata"]["period"]) == 1 + (9000 - 90) // 100
    )
    assert all(c["amount_minor"] == 100 for c in charges[1:])
    assert sub.paid_periods == 100 and sub.balance_minor == 0


def test_change_plan_refuses_another_currency_or_interval() -> None:
    sub = new_sub()
    cmd = change("sub_a", 2000, to_ms(JAN31), "c2")
    with pytest.raises(SubscriptionError, match="plan_mismatch"):
        on_command(sub, cmd)


def cancel(at: int, cid: str, at_period_end: bool) -> dict:
    return {
        "command_id": cid,
        "kind": "cancel",
        "subscription_id": "sub_a",
        "merchant_id": "m_acme",
        "occurred_at": from_ms(at),
        "at_period_end": at_period_end,
    }


def test_cancel_at_period_end_bills_nothing_after_it() -> None:
    start = to_ms(JAN31)
    sub, _ = run(new_sub(), [start])
    sub, _ = on_command(sub, cancel(start + DAY_MS, "c2", True))
    assert sub.status == "active" and sub.cancel_at_ms == sub.period_start_ms(1)
    sub, charges = run(sub, [sub.period_start_ms(1), sub.period_start_ms(5)])
    assert charges == [] and (sub.status, sub.cancel_reason) == ("canceled", "canceled_at_period_end")


def test_cancel_now_stops_retries() -> None:
    sub, (charge,) = on_tick(new_sub(), to_ms(JAN31))
    sub, _ = on_outcome(sub, outcome_of(charge, "declined"))
    sub, _ = on_command(sub, cancel(to_ms(JAN31) + 1, "c2", False))
    assert sub.status == "canceled" and sub.pending is None
    assert on_tick(sub, to_ms(JAN31) + 60 * DAY_MS)[1] == ()


def test_bad_creates_and_conflicts_are_refused() -> None:
    for bad, reason in (
        (create_cmd(amount=0), "invalid_amount"),
        (create_cmd(interval="fortnight"), "invalid_interval"),
        (create_cmd(count=13), "invalid_interval"),
        (create_cmd(trial=-1), "invalid_trial"),
        (create_cmd(sid="a/b"), "invalid_subscription_id"),
        (create_cmd() | {"card_token": None}, "missing_card_token"),
    ):
        with pytest.raises(SubscriptionError, match=reason):
            on_command(None, bad)
    sub = new_sub()
    assert on_command(sub, create_cmd(cid="c9"))[0] == sub  # the same create again: nothing changes
    with pytest.raises(SubscriptionError, match="subscription_exists"):
        on_command(sub, create_cmd(amount=5))
    with pytest.raises(SubscriptionError, match="subscription_not_found"):
        on_command(sub, cancel(to_ms(JAN31), "c3", False) | {"merchant_id": "m_other"})


def test_state_round_trips() -> None:
    sub, _ = on_tick(new_sub(trial=3), to_ms(JAN31) + 5 * DAY_MS)
    sub = replace(sub, balance_minor=-7)
    assert Subscription.from_json(sub.to_json()) == sub


@settings(max_examples=150, deadline=None)
@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 10))
def test_dunning_is_bounded_whatever_the_outcomes(paid: list[bool], step_days: int) -> None:
    answers = iter(paid)
    sub = new_sub()
    ticks = [to_ms(JAN31) + k * step_days * DAY_MS for k in range(1, 60)]
    sub, charges = run(sub, ticks, pay=lambda c: "captured" if next(answers, True) else "declined")
    seen: dict[int, list[int]] = {}
    for c in charges:
        seen.setdefault(int(c["metadata"]["period"]), []).append(int(c["metadata"]["attempt"]))
    assert list(seen) == list(range(len(seen)))  # periods in order, none skipped
    for attempts in seen.values():
        assert attempts == list(range(len(attempts))) and len(attempts) <= MAX_ATTEMPTS
    assert len({c["command_id"] for c in charges}) == len(charges)  # no charge sent twice
    exhausted = [p for p, a in seen.items() if len(a) == MAX_ATTEMPTS and p == max(seen) and sub.status == "canceled"]
    assert (sub.status == "canceled") == bool(exhausted)
    # Every period but the last was paid (the next one is invoiced only then); the last unless dunning is on or over.
    last_paid = sub.status != "canceled" and sub.pending is None
    assert sub.charges_paid == len(seen) - 1 + last_paid
