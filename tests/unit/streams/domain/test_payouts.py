"""Bank payouts (streams/domain/payouts.py): what a run posts, that a re-run posts nothing,
that a failed payout gives the merchant back exactly what it sent, and the audit's check."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.providers.bank import DAY_MS, BankRail
from schemas.codec import Codec
from streams.domain.ledger import (
    PAYOUT_PAID,
    PAYOUT_SENT,
    REVERSAL,
    Line,
    add_into,
    entry_to_record,
    merchant_account,
    totals_by_currency,
)
from streams.domain.payouts import PayoutCheck, failed_entry, paid_entry, payout_of_settlement, run_payouts, sent_entry
from streams.domain.settlement import cutoff_ms, settlement_entry

DAY = date(2026, 11, 25)
SHARDS = 4
SENT_AT = cutoff_ms(DAY)
CLOSED = BankRail(closed_accounts=frozenset({"m_closed"}))


def settled(merchant: str, amount: int, currency: str = "USD", day: date = DAY):  # type: ignore[no-untyped-def]
    return settlement_entry(merchant, currency, day, amount, shards=SHARDS)


def check(entries) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    audit = PayoutCheck(window_ms=CLOSED.window_ms)
    for e in entries:
        audit.seen(e)
        if e.event_type == "settlement":
            audit.settled(e)
        elif e.event_type in (PAYOUT_SENT, PAYOUT_PAID, REVERSAL):
            audit.feed(e)
    return [(reason, e.entry_id) for e, reason, _ in audit.finish()]


def test_a_payout_is_sent_the_next_day_and_answered_by_the_bank_later() -> None:
    settlements = [settled("m_ok", 5_000), settled("m_closed", 700)]
    payouts = [payout_of_settlement(e) for e in settlements]
    run = run_payouts(payouts, {}, as_of_ms=SENT_AT, bank=CLOSED, shards=SHARDS)
    assert [e.event_type for e in run.entries] == [PAYOUT_SENT, PAYOUT_SENT]
    assert {e.occurred_at_ms for e in run.entries} == {SENT_AT}
    assert run.count("sent") == 2

    later = run_payouts(
        payouts, {e.entry_id: e for e in run.entries}, as_of_ms=SENT_AT + 10 * DAY_MS, bank=CLOSED, shards=SHARDS
    )
    by_merchant = {e.merchant_id: e for e in later.entries}
    assert (by_merchant["m_ok"].event_type, by_merchant["m_ok"].occurred_at_ms) == (PAYOUT_PAID, SENT_AT + DAY_MS)
    failed = by_merchant["m_closed"]
    assert (failed.event_type, failed.occurred_at_ms) == (REVERSAL, SENT_AT + 3 * DAY_MS)
    assert {s.merchant_id: (s.status, s.failure_reason) for s in later.statuses} == {
        "m_ok": ("paid", ""),
        "m_closed": ("failed", "account_closed"),
    }
    assert check([*settlements, *run.entries, *later.entries]) == []


def test_a_rerun_posts_nothing_new() -> None:
    payouts = [payout_of_settlement(settled("m_ok", 5_000))]
    first = run_payouts(payouts, {}, as_of_ms=SENT_AT + 10 * DAY_MS, bank=CLOSED, shards=SHARDS)
    again = run_payouts(
        payouts + payouts,
        {e.entry_id: e for e in first.entries},
        as_of_ms=SENT_AT + 10 * DAY_MS,
        bank=CLOSED,
        shards=SHARDS,
    )
    assert len(first.entries) == 2 and again.entries == () and again.statuses == first.statuses


def test_the_bank_is_deterministic_by_seed_and_payout() -> None:
    bank = BankRail(seed=7, fail_per_mille=500)
    answers = [bank.answer(f"po_{i}", "m", 0) for i in range(200)]
    assert answers == [BankRail(seed=7, fail_per_mille=500).answer(f"po_{i}", "m", 0) for i in range(200)]
    assert 60 < sum(a.status == "failed" for a in answers) < 140
    assert {a.reason for a in answers if a.status == "failed"} <= {
        "account_closed",
        "invalid_account",
        "beneficiary_bank_rejected",
    }
    assert answers != [BankRail(seed=8, fail_per_mille=500).answer(f"po_{i}", "m", 0) for i in range(200)]


def test_payout_entries_encode_as_ledger_entries() -> None:
    sent = sent_entry(payout_of_settlement(settled("m_ok", 5_000)), shard=1)
    for e in (sent, paid_entry(sent, SENT_AT + DAY_MS), failed_entry(sent, SENT_AT + DAY_MS)):
        Codec("LedgerEntry").encode(entry_to_record(e), check=True)


# --- the audit's check ---


def test_the_audit_names_a_payout_paid_twice_answered_both_ways_or_left_unanswered() -> None:
    s = settled("m_ok", 5_000)
    sent = sent_entry(payout_of_settlement(s), shard=s.shard)
    paid = paid_entry(sent, SENT_AT + DAY_MS)
    failed = failed_entry(sent, SENT_AT + 3 * DAY_MS)
    assert check([s, sent, paid, replace(paid, entry_id="je_other")]) == [("payout_twice", sent.entry_id)]
    assert check([s, sent, paid, failed]) == [("payout_paid_and_failed", paid.entry_id)]
    assert check([s, sent, paid]) == []
    late = settled("m_ok", 1, day=date(2026, 12, 25))  # the ledger has moved on past the bank's window
    assert check([s, sent, late]) == [("payout_unanswered", sent.entry_id)]
    assert check([s, sent, settled("m_ok", 1, day=date(2026, 11, 26))]) == []  # still within the window


def test_the_audit_names_a_send_its_settlement_does_not_instruct() -> None:
    s = settled("m_ok", 5_000)
    sent = sent_entry(payout_of_settlement(s), shard=s.shard)
    more = replace(
        sent,
        lines=(
            Line(merchant_account("m_ok", "available"), "USD", debit_minor=5_001),
            replace(sent.lines[1], credit_minor=5_001),
        ),
    )
    assert check([s, more]) == [("payout_mismatch", sent.entry_id)]
    assert check([sent]) == [("payout_mismatch", sent.entry_id)]  # no settlement at all
    assert check([s, paid_entry(sent, SENT_AT + 1)]) == [
        ("payout_answer_without_send", paid_entry(sent, SENT_AT + 1).entry_id)
    ]


@settings(max_examples=100, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["m_a", "m_b", "m_closed", "m_d"]), st.integers(1, 10**9), st.integers(0, 5)),
        min_size=1,
        max_size=12,
    ),
    st.integers(0, 1000),
    st.integers(0, 12),
    st.integers(0, 2**32),
)
def test_payouts_keep_the_books_and_a_failed_payout_restores_the_balance_exactly(
    days: list[tuple[str, int, int]], fail_per_mille: int, as_of_days: int, seed: int
) -> None:
    bank = BankRail(seed=seed, fail_per_mille=fail_per_mille, closed_accounts=frozenset({"m_closed"}))
    settlements = {}
    for merchant, amount, d in days:  # one settlement per merchant and day
        e = settled(merchant, amount, day=date(2026, 11, 20 + d))
        settlements.setdefault(e.entry_id, e)
    payouts = [payout_of_settlement(e) for e in settlements.values()]
    as_of = SENT_AT + as_of_days * DAY_MS
    run = run_payouts(payouts, {}, as_of_ms=as_of, bank=bank, shards=SHARDS)
    balances: dict = {}
    for e in [*settlements.values(), *run.entries]:
        add_into(balances, e)
    assert not totals_by_currency(balances)
    for merchant in {p.merchant_id for p in payouts}:
        mine = [s for s in run.statuses if s.merchant_id == merchant]
        owed = sum(p.amount_minor for p in payouts if p.merchant_id == merchant)
        gone = sum(s.amount_minor for s in mine if s.status in ("sent", "paid"))
        assert -balances.get((merchant_account(merchant, "available"), "USD"), 0) == owed - gone
    in_transit = sum(v for (a, _), v in balances.items() if a.startswith("house:payouts_in_transit:"))
    bank_out = sum(v for (a, _), v in balances.items() if a.startswith("house:bank:"))
    assert -in_transit == sum(s.amount_minor for s in run.statuses if s.status == "sent")
    assert -bank_out == sum(s.amount_minor for s in run.statuses if s.status == "paid")
    assert check([*settlements.values(), *run.entries]) == []
    again = run_payouts(payouts, {e.entry_id: e for e in run.entries}, as_of_ms=as_of, bank=bank, shards=SHARDS)
    assert again.entries == ()
