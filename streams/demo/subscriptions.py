"""The demo's subscriptions: a few dozen customers subscribe the day after the
traffic (some with a trial, some on cards that decline), the clock runs 45 days of
event time, one plan changes and one subscription is canceled at period end, then the
clock runs on to 100 days. Between the two ticks every charge is answered: a tick's
charges chain through their outcomes (retries and periods due by the last tick are
sent when the previous charge's outcome arrives), so two ticks cover three months."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from schemas.times import to_ms
from streams.client.observe import Observer
from streams.client.publish import publish_tick, tokenize_in_vault
from streams.client.subscriptions import (
    cancel_command,
    change_plan_command,
    create_command,
    publish,
    read_subscriptions,
)
from streams.demo.cards import ORDINARY_CARDS, TEST_CARDS, cardholder
from streams.settings import Settings

COUNT = 36
# (currency, amount_minor per period): the demo's price list.
PLANS = (("USD", 999), ("EUR", 1_499), ("GBP", 799), ("JPY", 1_200), ("USD", 2_999))
# Every sixth customer pays with a card the issuers decline (always): dunning, then canceled.
DECLINING_CARDS = ("4000000000000002", "4000000000009995")
FIRST_TICK, CHANGES_AT, LAST_TICK = timedelta(days=45), timedelta(days=46), timedelta(days=100)


@dataclass(frozen=True)
class DemoSubscriptions:
    """The planned creates (their cards sealed onto card-vault already)."""

    creates: tuple[dict[str, Any], ...] = ()
    anchor: datetime | None = None


@dataclass(frozen=True)
class SubscriptionCounts:
    created: int = 0
    charged: int = 0  # charges the provider captured
    retries: int = 0  # dunning attempts after a failed one
    canceled: int = 0  # at period end, or after the last dunning attempt
    held: int = 0  # a charge the risk stage paused (3DS step-up, review): never retried (docs/subscriptions.md)
    complete: bool = False


def plan_subscriptions(settings: Settings, merchants: tuple[str, ...], seed: int, run_id: str, anchor: datetime) -> DemoSubscriptions:
    """COUNT subscription creates, their cards tokenized (sealed onto card-vault,
    acknowledged, before the tokens are returned)."""

    rng = random.Random(f"{seed}:subscriptions")
    cards = []
    for i in range(COUNT):
        pan = DECLINING_CARDS[i // 6 % 2] if i % 6 == 5 else cardholder(TEST_CARDS[rng.randrange(ORDINARY_CARDS)], rng)
        cards.append({"kind": "create", "merchant_id": merchants[i % len(merchants)], "command_id": f"sub-card-{i}",
                      "card": {"number": pan, "exp_month": rng.randint(1, 12), "exp_year": anchor.year + 3}})
    tokens = [r["card_token"] for r in tokenize_in_vault(settings, cards)]
    creates = []
    for i, (card, token) in enumerate(zip(cards, tokens)):
        currency, amount = PLANS[i % len(PLANS)]
        interval = "week" if i % 9 == 4 else "month"
        trial = 14 if i % 3 == 1 else 0
        creates.append(create_command(card["merchant_id"], f"{run_id}-sub-{i}", token, amount, currency, interval, 1, trial,
                                      anchor, anchor - timedelta(hours=1)))
    return DemoSubscriptions(tuple(creates), anchor)


def _settled(settings: Settings, ids: set[str], tick_ms: int) -> bool:
    """Every subscription saw the tick and has no charge waiting for its outcome."""
    subs = {s.subscription_id: s for s in read_subscriptions(settings) if s.subscription_id in ids}
    return subs.keys() == ids and all(
        s.last_tick_ms >= tick_ms and (s.pending is None or not s.pending.sent or s.held or s.status == "canceled")
        for s in subs.values())


def run_subscriptions(settings: Settings, observer: Observer, planned: DemoSubscriptions, timeout_s: float) -> SubscriptionCounts:
    """Create, tick, change a plan, cancel one at period end, tick on; count the result."""
    if not planned.creates or planned.anchor is None:
        return SubscriptionCounts()
    ids = {c["subscription_id"] for c in planned.creates}
    anchor = planned.anchor
    publish(settings, list(planned.creates))
    publish_tick(settings, anchor + FIRST_TICK)
    first = observer.wait_until(lambda: _settled(settings, ids, to_ms(anchor + FIRST_TICK)), timeout_s)
    if first:
        subs = sorted((s for s in read_subscriptions(settings) if s.subscription_id in ids), key=lambda s: s.subscription_id)
        paying = [s for s in subs if s.status == "active" and s.interval == "month" and s.pending is None]
        # The first paying monthly subscription doubles its plan, the second leaves at period end.
        changes = [change_plan_command(s, s.amount_minor * 2, anchor + CHANGES_AT) for s in paying[:1]]
        changes += [cancel_command(s.merchant_id, s.subscription_id, True, anchor + CHANGES_AT) for s in paying[1:2]]
        publish(settings, changes)
    publish_tick(settings, anchor + LAST_TICK)
    last = first and observer.wait_until(lambda: _settled(settings, ids, to_ms(anchor + LAST_TICK)), timeout_s)
    final = [s for s in read_subscriptions(settings) if s.subscription_id in ids]
    return SubscriptionCounts(created=len(final), charged=sum(s.charges_paid for s in final), retries=sum(s.retries_sent for s in final),
                              canceled=sum(1 for s in final if s.status == "canceled"), held=sum(1 for s in final if s.held),
                              complete=last and len(final) == len(ids))
