"""The demo's marketplace: a platform with three connected sellers, a share of the
day's creates split among them (a platform fee on top), and at day end the daily
settlement and the bank payouts run by the demo itself, by event time (`paystream
settle` then `paystream payouts run`). One seller's bank account is closed: its
payouts fail at the bank and are reversed onto its available balance."""

from __future__ import annotations

import random
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.providers.bank import BankRail
from schemas.codec import Codec
from streams.client.merchants import read_registry
from streams.client.observe import Observer
from streams.domain.merchants import connect as connect_account
from streams.domain.merchants import merchant_record
from streams.jobs.payouts import payouts_day
from streams.jobs.settle import settle_day
from streams.settings import Settings

MARKET = "m_market"
SELLERS = ("m_seller_a", "m_seller_b", "m_seller_c")
CLOSED_SELLER = "m_seller_c"  # its bank account is closed: every payout to it fails
SPLIT_SHARE = 0.10  # of the day's creates
PLATFORM_FEE_BPS = 1_000  # the platform keeps 10% of a split payment
MERCHANT_CODEC = Codec("MerchantRecord")


def market_records(as_of: datetime) -> list[dict[str, Any]]:
    """The registry records of the platform and its sellers: verified, connected, paid in USD."""
    platform = merchant_record(MARKET, kyc_status="verified", settlement_currency="USD", updated_at=as_of)
    records = []
    for seller in SELLERS:
        platform, account = connect_account(
            platform, merchant_record(seller, kyc_status="verified", settlement_currency="USD", updated_at=as_of), as_of
        )
        records.append(account)
    return [*records, platform]


def market_split(seed: int, i: int, amount_minor: int) -> dict[str, Any] | None:
    """For about SPLIT_SHARE of the creates (drawn per payment from (seed, i)): the
    create's fields splitting it among one to three sellers; None for the rest."""
    rng = random.Random(f"{seed}:split:{i}")
    if rng.random() >= SPLIT_SHARE:
        return None
    fee = amount_minor * PLATFORM_FEE_BPS // 10_000
    sellers = rng.sample(SELLERS, rng.randint(1, len(SELLERS)))
    rest, parts = amount_minor - fee, []
    for n, seller in enumerate(sellers):
        part = rest if n == len(sellers) - 1 else rest // (len(sellers) - n) + rng.randint(0, 1)
        if part > 0:
            parts.append({"merchant_id": seller, "amount_minor": part})
            rest -= part
    fee += rest  # nothing left over: splits + fee = amount
    return {"merchant_id": MARKET, "splits": parts, "platform_fee_minor": fee} if parts else None


@dataclass(frozen=True)
class Marketplace:
    split_payments: int = 0  # payments whose capture was split
    split_accounts: int = 0  # accounts those captures credited (sellers and the platform)
    payouts_sent: int = 0
    payouts_failed: int = 0  # failed at the bank and reversed
    completed: bool = False


def split_counts(events: Mapping[str, list[dict[str, Any]]]) -> tuple[int, int]:
    """(payments with a split capture, accounts credited by them)."""
    payments, accounts = 0, set()
    for evs in events.values():
        captures = [e for e in evs if e["type"] == "captured" and e.get("splits")]
        payments += bool(captures)
        for e in captures:
            accounts |= {s["merchant_id"] for s in e["splits"]}
            accounts |= {e["merchant_id"]} if e["platform_fee_minor"] else set()
    return payments, len(accounts)


def run_marketplace(settings: Settings, observer: Observer, seed: int, day: date, timeout_s: float) -> Marketplace:
    """Day end: settle `day`, then send its payouts (the next day) and take the bank's
    answers up to the end of its window; wait until the ledger has applied all of it."""

    bank = BankRail(seed=seed, closed_accounts=frozenset({CLOSED_SELLER}))
    client = connect(settings.clickhouse_url, settings.clickhouse_database)
    try:
        migrate(client)
        settled = settle_day(settings, client, day, read_registry)
        paid = payouts_day(settings, client, day + timedelta(days=1 + bank.window_days), bank)
    finally:
        client.close()
    # What this run put on the ledger: a second demo in the same namespace finds the day
    # settled already and posts nothing new, so it waits for nothing it will never see.
    posted = settled.posted_entry_ids | {e.entry_id for e in paid.run.entries}
    deadline = time.monotonic() + timeout_s
    applied = observer.wait_until(
        lambda: posted <= observer.entry_ids and observer.ledger_caught_up(), max(1.0, deadline - time.monotonic())
    )
    payments, accounts = split_counts(observer.events)
    return Marketplace(
        payments,
        accounts,
        len(paid.run.statuses),
        paid.run.count("failed"),
        completed=applied and paid.run.count("sent") == 0,
    )
