"""Daily settlement: pays what the ledger owes each merchant at the cutoff, net of
fees, refunds and disputes; deterministic, so a second run changes nothing."""

from __future__ import annotations

from dataclasses import asdict
from datetime import date, timedelta

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from streams.ledger import apply, entry_from_record, post, shard_for
from streams.settlement import SETTLEMENT, cutoff_ms, settle
from tests.unit.connectors.clickhouse.support import DAY0, SHARDS, traffic
from tests.unit.streams.ledger_support import event

D = DAY0.date()
T = traffic(payments=300, seed=21, start=DAY0)
ENTRIES = [entry_from_record(r) for r in T.entries]


def owed_at(entries, cutoff: int) -> dict[tuple[str, str], int]:
    bal: dict = {}
    for e in entries:
        if e.occurred_at_ms < cutoff:
            bal = apply(bal, e)
    return {(a.split(":")[1], c): -v for (a, c), v in bal.items() if a.endswith(":pending")}


def test_pays_what_is_owed_at_the_cutoff_net_of_everything() -> None:
    run = settle(D, ENTRIES, shards=SHARDS)
    owed = owed_at(ENTRIES, cutoff_ms(D))
    assert {(s.merchant_id, s.currency): s.payout_minor for s in run.settlements} == \
           {k: max(0, v) for k, v in owed.items()}
    assert any(s.refunded_minor for s in run.settlements) and any(s.fees_minor for s in run.settlements)
    for s in run.settlements:
        assert s.net_minor == (s.captured_minor - s.refunded_minor - s.disputed_minor + s.dispute_won_minor
                               - s.fees_minor + s.other_minor)
        assert s.payout_minor == max(0, s.carried_in_minor + s.net_minor)
    assert len(run.payouts) == len(run.entries) == sum(1 for s in run.settlements if s.payout_minor)
    # After posting, every merchant's pending is zero (or negative: carried forward).
    after = owed_at(ENTRIES + list(run.entries), cutoff_ms(D))
    assert all(v <= 0 for v in after.values())
    e = run.entries[0]
    assert e.event_type == SETTLEMENT and e.shard == shard_for(e.merchant_id, SHARDS)


def test_second_run_changes_nothing() -> None:
    first = settle(D, ENTRIES, shards=SHARDS)
    again = settle(D, ENTRIES + list(first.entries), shards=SHARDS)
    assert again == first
    assert settle(D, list(reversed(ENTRIES)), shards=SHARDS) == first  # order does not matter


def test_next_day_pays_only_the_new_money_and_late_events() -> None:
    day1 = settle(D, ENTRIES, shards=SHARDS)
    booked = ENTRIES + list(day1.entries)
    assert settle(D + timedelta(days=1), booked, shards=SHARDS).payouts == ()
    # An event of day D arriving after D was settled: D stays as it was, D+1 pays it.
    late = post(event("captured", amount=1_000, fee=10, payment_id="pay_late", merchant="m_acme",
                      authorized=1_000, captured=1_000, version=2, at=DAY0 + timedelta(hours=23)),
                shard=shard_for("m_acme", SHARDS))
    booked.append(late)
    rerun = settle(D, booked, shards=SHARDS)
    assert (rerun.entries, rerun.payouts) == (day1.entries, day1.payouts)  # what was posted stands
    late_row = next(s for s in rerun.settlements if (s.merchant_id, s.currency) == ("m_acme", "USD"))
    assert late_row.carried_in_minor + late_row.net_minor - late_row.payout_minor == 990  # visible, paid next day
    (p,) = settle(D + timedelta(days=1), booked, shards=SHARDS).payouts
    assert (p.merchant_id, p.currency, p.amount_minor) == ("m_acme", "USD", 990)


def test_a_negative_day_carries_forward() -> None:
    at = DAY0 + timedelta(hours=1)
    shard = shard_for("m_neg", SHARDS)
    evs = [
        event("captured", amount=500, fee=0, payment_id="p1", merchant="m_neg", at=at - timedelta(days=1), version=2),
        event("refunded", amount=2_000, payment_id="p0", merchant="m_neg", at=at, version=3),
        event("captured", amount=3_000, fee=100, payment_id="p2", merchant="m_neg", at=at + timedelta(days=1), version=2),
    ]
    entries = [post(e, shard=shard) for e in evs]
    run0 = settle(D - timedelta(days=1), entries, shards=SHARDS)
    assert [p.amount_minor for p in run0.payouts] == [500]
    booked = entries + list(run0.entries)
    run1 = settle(D, booked, shards=SHARDS)
    (s,) = run1.settlements
    assert (s.refunded_minor, s.net_minor, s.payout_minor, s.entry_id) == (2_000, -2_000, 0, None)
    (s2,) = settle(D + timedelta(days=1), booked + list(run1.entries), shards=SHARDS).settlements
    assert (s2.carried_in_minor, s2.net_minor, s2.payout_minor) == (-2_000, 2_900, 900)


def test_settlements_table_takes_a_run_once(ch) -> None:
    run = settle(D, ENTRIES, shards=SHARDS)
    rows = [r for s in run.settlements for r in rows_for("settlement", asdict(s))]
    Sink(ch).insert(rows)
    Sink(ch).insert(rows)
    got = ch.query("SELECT count(), sum(payout_minor) FROM settlements FINAL").result_rows[0]
    assert got == (len(run.settlements), sum(p.amount_minor for p in run.payouts))
