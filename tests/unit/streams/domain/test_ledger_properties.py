"""Properties of the ledger over random legal payment histories (hypothesis):
every entry balances, the books sum to zero per currency, holds track the open
authorizations, and a redelivered event changes nothing once deduped by entry_id."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain.fx import FxRate, parse_rate
from streams.domain.ledger import (
    SettlementTerms,
    add_into,
    apply,
    apply_once,
    decode_balance,
    encode_balance,
    entry_from_record,
    entry_to_record,
    imbalance,
    post,
    shard_for,
    totals_by_currency,
)
from tests.unit.streams.ledger_support import histories

ENTRIES = Codec("LedgerEntry")
AS_OF = datetime(2026, 11, 25, tzinfo=UTC)
# m_globex is paid in EUR whatever its customers paid in; the others in the payment currency.
EUR_RATES = {"USD": "0.9213", "JPY": "0.006137", "KWD": "2.9981"}


def terms(event: dict) -> SettlementTerms:
    cur = event["currency"]
    if event["merchant_id"] != "m_globex" or cur == "EUR":
        return SettlementTerms(cur)
    return SettlementTerms("EUR", FxRate(cur, "EUR", parse_rate(EUR_RATES[cur]), AS_OF))


def post_all(events: list[dict]) -> list:
    entries = (post(e, shard=shard_for(e["merchant_id"], 4), settlement=terms(e)) for e in events)
    return [x for x in entries if x is not None]


@settings(max_examples=150)
@given(histories())
def test_every_entry_balances_and_the_books_sum_to_zero(events: list[dict]) -> None:
    balances: dict = {}
    for entry in post_all(events):
        assert imbalance(entry.lines) == {}
        assert all(x.debit_minor >= 0 and x.credit_minor >= 0 for x in entry.lines)
        assert entry_from_record(ENTRIES.decode(ENTRIES.encode(entry_to_record(entry)))) == entry
        balances = apply(balances, entry)
        assert totals_by_currency(balances) == {}
    for (_, _), amount in balances.items():
        assert decode_balance(encode_balance(amount)) == amount


@settings(max_examples=150)
@given(histories())
def test_merchant_holds_equal_the_open_authorizations(events: list[dict]) -> None:
    balances: dict = {}
    for entry in post_all(events):
        add_into(balances, entry)
    open_rest: dict = defaultdict(int)
    last = {}
    for e in events:
        last[e["payment_id"]] = e
    closed = {e["payment_id"] for e in events if e["type"] in ("voided", "expired")}
    for pid, e in last.items():
        if pid not in closed:
            open_rest[(f"merchant:{e['merchant_id']}:holds", e["currency"])] -= (
                e["authorized_minor"] - e["captured_minor"]
            )
    holds = {k: v for k, v in balances.items() if k[0].endswith(":holds") and k[0].startswith("merchant:")}
    assert holds == {k: v for k, v in open_rest.items() if v}


@settings(max_examples=100)
@given(histories(), st.data())
def test_redelivered_events_change_nothing_when_deduped_by_entry_id(events: list[dict], data: st.DataObject) -> None:
    once: dict = {}
    for entry in post_all(events):
        add_into(once, entry)
    # Every event delivered one to three times, duplicates anywhere after the original.
    delivered = list(events)
    for e in events:
        for _ in range(data.draw(st.integers(0, 2))):
            delivered.insert(data.draw(st.integers(delivered.index(e) + 1, len(delivered))), dict(e))
    balances: dict = {}
    applied: set[str] = set()
    for entry in post_all(delivered):
        balances, now = apply_once(balances, applied, entry)
        if now:
            applied.add(entry.entry_id)
    assert balances == once
    assert len(applied) == len(post_all(events))
