"""The ledger over wallet, bank-transfer and BNPL lifecycles (docs/ledger.md, Payment
methods): postings by example, the return after settlement and payout, and the
invariants over random histories run through `decide` (hypothesis)."""

from __future__ import annotations

from collections import defaultdict
from datetime import timedelta
from typing import Any

from hypothesis import given, settings

from schemas.ids import derive_payment_id
from streams.domain.ledger import JournalEntry, add_into, imbalance, post, shard_for, totals_by_currency
from streams.domain.settlement import settle
from tests.unit.streams.ledger_support import CMDS, FEE, MANDATE, method_histories, run_methods

SHARDS = 4
DAY = timedelta(days=1)


def entries_of(events: list[dict[str, Any]]) -> list[JournalEntry]:
    posted = (post(e, shard=shard_for(e["merchant_id"], SHARDS)) for e in events)
    return [x for x in posted if x is not None]


def balances_of(entries: list[JournalEntry]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for entry in entries:
        add_into(out, entry)
    return out


def house(balances: dict[tuple[str, str], int], kind: str) -> int:
    return sum(v for (account, _), v in balances.items() if account.startswith(f"house:{kind}:"))


def bank_create(key: str = "order-1", amount: int = 10_000) -> dict[str, Any]:
    return CMDS.create(key, amount=amount) | {"method": "bank_transfer", "card": None, "bank_account": MANDATE}


def notice(kind: str, pid: str, key: str, days: float, code: str | None = None) -> dict[str, Any]:
    return CMDS.follow_up(kind, pid, key, at=CMDS.t0 + days * DAY) | {"return_code": code}


def test_a_bank_transfer_posts_in_flight_then_payable() -> None:
    pid = derive_payment_id(CMDS.merchant, "order-1")
    _, events = run_methods([bank_create()])
    b = balances_of(entries_of(events))
    m = f"merchant:{CMDS.merchant}"
    # Submitted: owed to the merchant once it arrives, not payable yet; the fee is taken now.
    assert b[(f"{m}:incoming", "USD")] == -10_000 and b[(f"{m}:pending", "USD")] == FEE
    assert house(b, "bank_transit") == 10_000
    _, events = run_methods([bank_create(), notice("bank_settle", pid, "n1", 2)])
    b = balances_of(entries_of(events))
    assert (f"{m}:incoming", "USD") not in b and b[(f"{m}:pending", "USD")] == FEE - 10_000
    assert house(b, "bank_transit") == 0 and house(b, "clearing") == 10_000


def test_a_return_before_settlement_leaves_only_the_fee() -> None:
    pid = derive_payment_id(CMDS.merchant, "order-1")
    _, events = run_methods([bank_create(), notice("bank_return", pid, "n1", 1, "R01")])
    b = balances_of(entries_of(events))
    assert b == {
        (f"merchant:{CMDS.merchant}:pending", "USD"): FEE,
        (f"house:fees:{shard_for(CMDS.merchant, SHARDS)}", "USD"): -FEE,
    }


def test_bank_transfer_return_after_settlement_reverses_correctly() -> None:
    """Submitted day 0, settled day 2, paid out by the day's settlement (paystream settle),
    returned day 4: the rail took the money back, the merchant owes it again (its pending
    balance goes negative, carried into later settlements); only the fee stays booked."""
    pid = derive_payment_id(CMDS.merchant, "order-1")
    settle_day = (CMDS.t0 + 2 * DAY).date()
    _, events = run_methods([bank_create(), notice("bank_settle", pid, "n1", 2)])
    entries = entries_of(events)
    payout = settle(settle_day, entries, shards=SHARDS)
    assert [p.amount_minor for p in payout.payouts] == [10_000 - FEE]  # only settled money is paid out
    entries += payout.entries
    _, events = run_methods(
        [bank_create(), notice("bank_settle", pid, "n1", 2), notice("bank_return", pid, "n2", 4, "R01")]
    )
    reversal = entries_of(events)[-1]
    assert reversal.event_type == "bank_reversed" and imbalance(reversal.lines) == {}
    b = balances_of([*entries, reversal])
    m = f"merchant:{CMDS.merchant}"
    assert b[(f"{m}:pending", "USD")] == 10_000  # owed back by the merchant
    assert b[(f"{m}:available", "USD")] == -(10_000 - FEE)  # what it was paid
    merchant_total = sum(v for (a, _), v in b.items() if a.startswith(m))
    assert merchant_total == FEE  # back where it started, apart from the fee it paid
    assert house(b, "clearing") == 0 and house(b, "bank_transit") == 0 and house(b, "fees") == -FEE
    assert totals_by_currency(b) == {}
    # The next day's settlement pays nothing: the negative balance carries.
    nxt = settle((CMDS.t0 + 4 * DAY).date(), [*entries, reversal], shards=SHARDS)
    assert nxt.payouts == () and [s.carried_in_minor + s.net_minor for s in nxt.settlements] == [-10_000]


def test_before_settlement_nothing_of_a_bank_transfer_is_paid_out() -> None:
    _, events = run_methods([bank_create()])
    run_ = settle(CMDS.t0.date(), entries_of(events), shards=SHARDS)
    assert run_.payouts == ()


# --- hypothesis: random histories of all four methods through decide ---


@settings(max_examples=150, deadline=None)
@given(method_histories())
def test_ledger_invariants_hold_across_methods_and_returns(commands: list[dict[str, Any]]) -> None:
    payments, events = run_methods(commands)
    entries = entries_of(events)
    for entry in entries:
        assert imbalance(entry.lines) == {}
        assert all(x.debit_minor >= 0 and x.credit_minor >= 0 for x in entry.lines)
    b = balances_of(entries)
    assert totals_by_currency(b) == {}
    in_flight = sum(p.captured_minor for p in payments.values() if p.status == "submitted")
    # What is in flight is owed to merchants but not payable, and the house waits for it.
    assert -sum(v for (a, _), v in b.items() if a.endswith(":incoming")) == in_flight == house(b, "bank_transit")
    # The merchant's pending balance (before payouts) is what it keeps, less fees.
    kept = sum(
        p.captured_minor - p.refunded_minor - p.dispute_lost_minor - p.dispute_minor - p.returned_minor
        for p in payments.values()
        if p.status != "submitted"
    )
    fees = sum(e["fee_minor"] for e in events)
    assert -b.get((f"merchant:{CMDS.merchant}:pending", "USD"), 0) == kept - fees
    for p in payments.values():
        assert p.method == "bank_transfer" or p.status not in ("submitted", "settled", "returned")
        assert p.refunded_minor + p.returned_minor + p.dispute_lost_minor + p.dispute_minor <= p.captured_minor
    # A redelivered history posts the same entries (ids derived from the events).
    assert entries_of(events) == entries
    by_type = defaultdict(int)
    for e in events:
        by_type[e["type"]] += 1
    assert by_type["bank_settled"] + by_type["bank_returned"] <= by_type["bank_submitted"]
