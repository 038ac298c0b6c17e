"""Recurring payments: a subscription's schedule, dunning and proration, as pure logic.

A subscription bills `amount_minor` of `currency` in advance, every `interval_count`
`interval`s, from its billing anchor (the anchor plus the trial). Each input is one
pure step over a frozen `Subscription`:
  - `on_command(sub, cmd)`: create, cancel (now or at period end), change_plan;
  - `on_tick(sub, now_ms)`: the clock's event time reached `now_ms`: emit the charge due;
  - `on_outcome(sub, outcome)`: the charge's outcome: paid (next period) or failed
    (a dunning retry at a bounded schedule, then canceled).
Every charge is a PaymentCommand `create` whose command_id and idempotency key derive
from (subscription id, period, attempt), and whose event time is the time it was due,
never the time a tick happened to arrive: replaying the same input log from offset 0
emits byte-identical charges, and a re-emission is deduped by the payments stage.

Bounds: at most one charge in flight per subscription, so each input emits at most
one charge per subscription (a catch-up after a long gap proceeds one period per
outcome); at most `MAX_ATTEMPTS` attempts per period; at most `MAX_CREDITED_PER_STEP`
periods settled from a credit balance per step; `RECENT_COMMANDS` command ids kept
for dedup. docs/subscriptions.md has the rules (rounding, cancel, what is left out).
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from schemas.cards import CARD_BRANDS
from schemas.errors import ReasonedError
from schemas.ids import derive_charge_command_id, derive_payment_id
from schemas.money import is_currency
from schemas.state import state_json, state_loads
from schemas.times import from_ms, to_ms

DAY_MS = 24 * 3600 * 1000
INTERVALS = ("day", "week", "month", "year")
# At most a year of days, a year of weeks, 12 months or 5 years between charges.
MAX_INTERVAL_COUNT = {"day": 366, "week": 52, "month": 12, "year": 5}
MAX_TRIAL_DAYS = 730
MAX_AMOUNT_MINOR = 10**12
# Dunning: after a failed attempt, the next one this long after the failed one was due
# (+1 d, +3 d, +5 d); the period is then abandoned and the subscription canceled.
DUNNING_DELAYS_MS = (1 * DAY_MS, 3 * DAY_MS, 5 * DAY_MS)
MAX_ATTEMPTS = 1 + len(DUNNING_DELAYS_MS)
MAX_CREDITED_PER_STEP = 12
RECENT_COMMANDS = 32
STATUSES = ("trialing", "active", "past_due", "canceled")
# A charge's idempotency key: readable, and it names its subscription, so the outcome
# (which carries the key) finds its way back to the subscription's partition.
CHARGE_KEY_PREFIX = "sub/"
# A charge says whose it is in its metadata; before PaymentCommand v8's merchant_initiated
# this key was also what marked a charge as merchant-initiated.
MIT_METADATA_KEY = "subscription_id"
_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CHARGE_KEY = re.compile(r"sub/([A-Za-z0-9_-]{1,64})/(\d{1,9})/(\d{1,2})")
# The outcomes that pay a period; declined and failed (or a rejection) are failed
# attempts. Anything else (provider pending, 3DS step-up, fraud review) is held:
# retrying under a new key while the first may still be approved could charge twice.
PAID_STATUSES = ("captured", "authorized")
FAILED_STATUSES = ("declined", "failed")


class SubscriptionError(ReasonedError, ValueError):
    """A command the subscription refuses; `reason` is a stable code."""


@dataclass(frozen=True)
class Attempt:
    """The charge of one period: attempt `attempt`, due at `due_ms`; `sent` once emitted."""

    period: int
    attempt: int
    amount_minor: int
    due_ms: int
    sent: bool


@dataclass(frozen=True)
class Subscription:
    subscription_id: str
    merchant_id: str
    card_token: dict[str, Any]  # a PaymentCommand CardToken: token, bin, last4, brand, expiry; never a PAN
    amount_minor: int
    currency: str
    interval: str
    interval_count: int
    anchor_ms: int
    trial_days: int
    created_at_ms: int
    status: str = "trialing"
    next_period: int = 0  # the next period to invoice
    paid_periods: int = 0
    pending: Attempt | None = None
    balance_minor: int = 0  # proration carried to the next invoice: > 0 owed, < 0 credit
    cancel_at_ms: int | None = None
    canceled_at_ms: int | None = None
    cancel_reason: str | None = None
    last_tick_ms: int = 0
    charges_sent: int = 0
    retries_sent: int = 0
    charges_paid: int = 0  # periods paid by a charge (paid_periods also counts those a credit paid)
    held: bool = False  # an outcome neither paid nor failed: waiting, never retried
    recent_commands: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert self.interval in INTERVALS and 1 <= self.interval_count <= MAX_INTERVAL_COUNT[self.interval]
        assert self.amount_minor > 0 and 0 <= self.trial_days <= MAX_TRIAL_DAYS
        assert self.pending is None or 0 <= self.pending.attempt < MAX_ATTEMPTS
        assert len(self.recent_commands) <= RECENT_COMMANDS

    @property
    def billing_anchor_ms(self) -> int:
        """Period 0 starts when the trial ends (the anchor itself without a trial)."""
        return self.anchor_ms + self.trial_days * DAY_MS

    def period_start_ms(self, period: int) -> int:
        return add_interval(self.billing_anchor_ms, self.interval, period * self.interval_count)

    def to_json(self) -> bytes:
        return state_json(self)

    @classmethod
    def from_json(cls, raw: bytes) -> Subscription:
        d = state_loads(raw)
        d["pending"] = Attempt(**d["pending"]) if d["pending"] is not None else None
        d["recent_commands"] = tuple(d["recent_commands"])
        return cls(**d)


def add_interval(anchor_ms: int, interval: str, count: int) -> int:
    """`count` intervals after the anchor, calendar-correct: months and years keep the
    anchor's day of month, clamped to the month's last day (Jan 31 + 1 month = Feb 28
    or 29, + 2 months = Mar 31), always counted from the anchor so a clamp never drifts."""
    assert count >= 0
    if interval == "day":
        return anchor_ms + count * DAY_MS
    if interval == "week":
        return anchor_ms + count * 7 * DAY_MS
    months = count * (12 if interval == "year" else 1)
    assert interval in ("month", "year"), interval
    at = from_ms(anchor_ms)
    year, month0 = divmod(at.year * 12 + at.month - 1 + months, 12)
    day = min(at.day, calendar.monthrange(year, month0 + 1)[1])
    return to_ms(at.replace(year=year, month=month0 + 1, day=day))


def prorate(amount_minor: int, remaining_ms: int, period_ms: int) -> int:
    """amount × remaining / period in minor units, rounded half to even."""
    assert 0 <= remaining_ms <= period_ms and period_ms > 0 and amount_minor >= 0
    q, r = divmod(amount_minor * remaining_ms, period_ms)
    return q + (1 if 2 * r > period_ms or (2 * r == period_ms and q % 2) else 0)


def charge_key(subscription_id: str, period: int, attempt: int) -> str:
    return f"{CHARGE_KEY_PREFIX}{subscription_id}/{period}/{attempt}"


def parse_charge_key(idempotency_key: str) -> tuple[str, int, int] | None:
    """(subscription id, period, attempt) of a charge's key, None for any other key."""
    m = _CHARGE_KEY.fullmatch(idempotency_key)
    return (m.group(1), int(m.group(2)), int(m.group(3))) if m else None


def is_merchant_initiated(cmd: Mapping[str, Any]) -> bool:
    """A create the merchant initiates with no cardholder present: marked so (PaymentCommand
    v8 `merchant_initiated`: a subscription's charge, an API off-session charge on a saved
    card), or a subscription's charge written before the mark (its metadata names it)."""
    return bool(cmd.get("merchant_initiated")) or MIT_METADATA_KEY in (cmd.get("metadata") or {})


def charge_command(sub: Subscription, attempt: Attempt) -> dict[str, Any]:
    """The PaymentCommand create of one attempt: a function of the subscription's
    fixed fields and the attempt only, so every emission of it is the same bytes."""
    key = charge_key(sub.subscription_id, attempt.period, attempt.attempt)
    return {
        "command_id": derive_charge_command_id(sub.subscription_id, attempt.period, attempt.attempt),
        "kind": "create",
        "merchant_id": sub.merchant_id,
        "idempotency_key": key,
        "payment_id": derive_payment_id(sub.merchant_id, key),
        "amount_minor": attempt.amount_minor,
        "currency": sub.currency,
        "capture_method": "automatic",
        "card": None,
        "metadata": {
            MIT_METADATA_KEY: sub.subscription_id,
            "period": str(attempt.period),
            "attempt": str(attempt.attempt),
        },
        "dispute": None,
        "occurred_at": from_ms(attempt.due_ms),
        "card_token": dict(sub.card_token),
        "three_ds": None,
        "sealed_card": None,
        "merchant_initiated": True,
    }


def _remember(sub: Subscription, command_id: str) -> Subscription:
    return replace(sub, recent_commands=(*sub.recent_commands, command_id)[-RECENT_COMMANDS:])


def _check_plan(amount_minor: Any, currency: Any) -> None:
    if not isinstance(amount_minor, int) or isinstance(amount_minor, bool) or not 0 < amount_minor <= MAX_AMOUNT_MINOR:
        raise SubscriptionError("invalid_amount", f"amount_minor must be an integer in 1..{MAX_AMOUNT_MINOR}")
    if not is_currency(currency):
        raise SubscriptionError("invalid_currency", f"{currency!r} is not an ISO 4217 code")


def create(cmd: dict[str, Any]) -> Subscription:
    """A new subscription from a create command; SubscriptionError names what is wrong."""
    sid, merchant, plan = cmd.get("subscription_id"), cmd.get("merchant_id"), cmd.get("plan")
    if not isinstance(sid, str) or not _ID.fullmatch(sid):
        raise SubscriptionError("invalid_subscription_id", "subscription_id: 1..64 of A-Z a-z 0-9 _ -")
    if not merchant:
        raise SubscriptionError("missing_merchant", "create needs merchant_id")
    if plan is None:
        raise SubscriptionError("missing_plan", "create needs a plan")
    _check_plan(plan["amount_minor"], plan["currency"])
    interval, count = plan["interval"], plan["interval_count"]
    if interval not in INTERVALS or not 1 <= count <= MAX_INTERVAL_COUNT.get(interval, 0):
        raise SubscriptionError(
            "invalid_interval", f"interval one of {INTERVALS}, count 1..{MAX_INTERVAL_COUNT.get(interval)}"
        )
    trial = cmd.get("trial_days") or 0
    if not 0 <= trial <= MAX_TRIAL_DAYS:
        raise SubscriptionError("invalid_trial", f"trial_days in 0..{MAX_TRIAL_DAYS}")
    token = cmd.get("card_token")
    if token is None or token["brand"] not in CARD_BRANDS:
        raise SubscriptionError("missing_card_token", "create needs a vault card token (never a card number)")
    at_ms = to_ms(cmd["occurred_at"])
    anchor = cmd.get("anchor_at")
    return Subscription(
        subscription_id=sid,
        merchant_id=merchant,
        card_token=dict(token),
        amount_minor=plan["amount_minor"],
        currency=plan["currency"],
        interval=interval,
        interval_count=count,
        anchor_ms=to_ms(anchor) if anchor is not None else at_ms,
        trial_days=trial,
        created_at_ms=at_ms,
        status="trialing" if trial else "active",
        recent_commands=(cmd["command_id"],),
    )


def on_command(sub: Subscription | None, cmd: dict[str, Any]) -> tuple[Subscription, tuple[dict[str, Any], ...]]:
    """Apply a create, cancel or change_plan; the charges it emits (none: ticks and
    outcomes emit). A command id already applied changes nothing (a redelivery)."""
    kind = cmd["kind"]
    if kind == "create":
        new = create(cmd)
        if sub is None:
            return new, ()
        same = (
            new.merchant_id,
            new.card_token,
            new.amount_minor,
            new.currency,
            new.interval,
            new.interval_count,
            new.anchor_ms,
            new.trial_days,
        ) == (
            sub.merchant_id,
            sub.card_token,
            sub.amount_minor,
            sub.currency,
            sub.interval,
            sub.interval_count,
            sub.anchor_ms,
            sub.trial_days,
        )
        if same:
            return sub, ()
        raise SubscriptionError("subscription_exists", "this subscription_id exists with other terms")
    if sub is None:
        raise SubscriptionError("subscription_not_found", f"no subscription {cmd.get('subscription_id')}")
    if cmd.get("merchant_id") != sub.merchant_id:
        raise SubscriptionError("subscription_not_found", f"no subscription {sub.subscription_id} for this merchant")
    if cmd["command_id"] in sub.recent_commands:
        return sub, ()
    at_ms = to_ms(cmd["occurred_at"])
    if kind == "cancel":
        return _remember(_cancel(sub, at_ms, bool(cmd.get("at_period_end"))), cmd["command_id"]), ()
    if kind == "change_plan":
        return _remember(_change_plan(sub, cmd, at_ms), cmd["command_id"]), ()
    raise SubscriptionError("unknown_kind", f"{kind} is not a subscription command")


def _cancel(sub: Subscription, at_ms: int, at_period_end: bool) -> Subscription:
    if sub.status == "canceled":
        return sub
    if at_period_end and sub.pending is None:
        # The paid period (or the trial) runs out; the period after it is never invoiced.
        return replace(sub, cancel_at_ms=max(at_ms, sub.period_start_ms(sub.next_period)))
    # Now: nothing more is invoiced or retried. A charge in flight keeps its outcome's record.
    pending = sub.pending if sub.pending is not None and sub.pending.sent else None
    return replace(
        sub, status="canceled", canceled_at_ms=at_ms, cancel_reason="canceled", pending=pending, cancel_at_ms=None
    )


def _change_plan(sub: Subscription, cmd: dict[str, Any], at_ms: int) -> Subscription:
    if sub.status == "canceled":
        raise SubscriptionError("subscription_canceled", "a canceled subscription cannot change plan")
    plan = cmd.get("plan")
    if plan is None:
        raise SubscriptionError("missing_plan", "change_plan needs a plan")
    _check_plan(plan["amount_minor"], plan["currency"])
    if (plan["currency"], plan["interval"], plan["interval_count"]) != (sub.currency, sub.interval, sub.interval_count):
        raise SubscriptionError("plan_mismatch", "change_plan changes the amount; currency and interval stay")
    new = plan["amount_minor"]
    paid = sub.paid_periods
    # Proration applies inside a period that was paid (not in the trial, not during dunning).
    if sub.pending is None and paid > 0 and sub.next_period == paid:
        start, end = sub.period_start_ms(paid - 1), sub.period_start_ms(paid)
        if start <= at_ms < end:
            remaining, length = end - at_ms, end - start
            net = prorate(new, remaining, length) - prorate(sub.amount_minor, remaining, length)
            return replace(sub, amount_minor=new, balance_minor=sub.balance_minor + net)
    return replace(sub, amount_minor=new)


def on_tick(sub: Subscription, now_ms: int) -> tuple[Subscription, tuple[dict[str, Any], ...]]:
    """The clock reached `now_ms` (event time): emit the charge that is due, if any."""
    if now_ms <= sub.last_tick_ms:
        return sub, ()  # an old or repeated tick: time never runs backwards
    return _advance(replace(sub, last_tick_ms=now_ms))


def _advance(sub: Subscription) -> tuple[Subscription, tuple[dict[str, Any], ...]]:
    """Whatever is due by the last tick: a scheduled retry, the next period's invoice
    (settled from a credit without a charge when the credit covers it), the end of a
    cancel at period end. At most one charge."""
    now = sub.last_tick_ms
    for _ in range(MAX_CREDITED_PER_STEP):
        if sub.status == "canceled" or sub.held:
            return sub, ()
        if sub.pending is not None:
            if sub.pending.sent or sub.pending.due_ms > now:
                return sub, ()
            attempt = replace(sub.pending, sent=True)
            sub = replace(
                sub,
                pending=attempt,
                charges_sent=sub.charges_sent + 1,
                retries_sent=sub.retries_sent + (attempt.attempt > 0),
            )
            return sub, (charge_command(sub, attempt),)
        start = sub.period_start_ms(sub.next_period)
        if sub.cancel_at_ms is not None and sub.cancel_at_ms <= now and start >= sub.cancel_at_ms:
            return replace(
                sub, status="canceled", canceled_at_ms=sub.cancel_at_ms, cancel_reason="canceled_at_period_end"
            ), ()
        if start > now:
            return sub, ()
        amount = sub.amount_minor + sub.balance_minor
        if amount <= 0:  # the credit pays this period; what is left of it carries on
            sub = replace(
                sub,
                balance_minor=amount,
                next_period=sub.next_period + 1,
                paid_periods=sub.paid_periods + 1,
                status="active",
            )
            continue
        attempt = Attempt(sub.next_period, 0, amount, start, sent=True)
        sub = replace(
            sub,
            pending=attempt,
            balance_minor=0,
            status="active" if sub.status == "trialing" else sub.status,
            charges_sent=sub.charges_sent + 1,
        )
        return sub, (charge_command(sub, attempt),)
    return sub, ()


def outcome_class(outcome: dict[str, Any]) -> str:
    """paid | failed | held, from a PaymentOutcome of a charge."""
    if outcome["status"] == "rejected" or outcome["payment_status"] in FAILED_STATUSES:
        return "failed"
    return "paid" if outcome["payment_status"] in PAID_STATUSES else "held"


def on_outcome(sub: Subscription, outcome: dict[str, Any]) -> tuple[Subscription, tuple[dict[str, Any], ...]]:
    """A charge's PaymentOutcome. Only the outcome of the attempt in flight counts (by
    its command_id); a stale or repeated one changes nothing."""
    attempt = sub.pending
    if (
        attempt is None
        or not attempt.sent
        or outcome["command_id"] != derive_charge_command_id(sub.subscription_id, attempt.period, attempt.attempt)
    ):
        return sub, ()
    result = outcome_class(outcome)
    if result == "held":
        return replace(sub, held=True), ()
    if result == "paid":
        sub = replace(
            sub,
            pending=None,
            next_period=attempt.period + 1,
            paid_periods=sub.paid_periods + 1,
            charges_paid=sub.charges_paid + 1,
            status="active" if sub.status != "canceled" else "canceled",
        )
        return _advance(sub)  # a period that came due meanwhile is invoiced now (catch-up)
    if sub.status == "canceled":
        return replace(sub, pending=None), ()
    if attempt.attempt + 1 >= MAX_ATTEMPTS:
        return replace(
            sub, pending=None, status="canceled", canceled_at_ms=attempt.due_ms, cancel_reason="dunning_exhausted"
        ), ()
    retry = Attempt(
        attempt.period,
        attempt.attempt + 1,
        attempt.amount_minor,
        attempt.due_ms + DUNNING_DELAYS_MS[attempt.attempt],
        sent=False,
    )
    return _advance(replace(sub, pending=retry, status="past_due"))


def describe(sub: Subscription) -> dict[str, Any]:
    """A subscription for `paystream subscriptions list`: no token, its card's last four."""

    def iso(ms: int | None) -> str | None:
        return from_ms(ms).isoformat() if ms is not None else None

    nxt = sub.pending.due_ms if sub.pending is not None else sub.period_start_ms(sub.next_period)
    return {
        "subscription_id": sub.subscription_id,
        "merchant_id": sub.merchant_id,
        "status": sub.status,
        "amount_minor": sub.amount_minor,
        "currency": sub.currency,
        "every": f"{sub.interval_count} {sub.interval}",
        "card_last4": sub.card_token["last4"],
        "paid_periods": sub.paid_periods,
        "next_charge_at": None if sub.status == "canceled" else iso(nxt),
        "balance_minor": sub.balance_minor,
        "attempt": sub.pending.attempt if sub.pending is not None else None,
        "cancel_at": iso(sub.cancel_at_ms),
        "cancel_reason": sub.cancel_reason,
        "held": sub.held,
    }
