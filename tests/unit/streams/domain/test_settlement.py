"""Daily settlement: pays what the ledger owes each merchant at the cutoff, net of
fees, refunds and disputes; deterministic, so a second run changes nothing."""

from __future__ import annotations

from dataclasses import asdict, replace
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from streams.domain.audit import payout_problem
from streams.domain.fx import FxRate, RateBook, parse_rate
from streams.domain.ledger import apply, entry_from_record, imbalance, post, shard_for, totals_by_currency
from streams.domain.settlement import DAY_MS, SETTLEMENT, cutoff_ms, settle
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
    assert {(s.merchant_id, s.currency): s.payout_minor for s in run.settlements} == {
        k: max(0, v) for k, v in owed.items()
    }
    assert any(s.refunded_minor for s in run.settlements) and any(s.fees_minor for s in run.settlements)
    for s in run.settlements:
        assert s.net_minor == (
            s.captured_minor - s.refunded_minor - s.disputed_minor + s.dispute_won_minor - s.fees_minor + s.other_minor
        )
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
    late = post(
        event(
            "captured",
            amount=1_000,
            fee=10,
            payment_id="pay_late",
            merchant="m_acme",
            authorized=1_000,
            captured=1_000,
            version=2,
            at=DAY0 + timedelta(hours=23),
        ),
        shard=shard_for("m_acme", SHARDS),
    )
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
        event(
            "captured", amount=3_000, fee=100, payment_id="p2", merchant="m_neg", at=at + timedelta(days=1), version=2
        ),
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


# --- paid in the merchant's settlement currency ---

NOON = DAY0 + timedelta(hours=12)


def captures(merchant: str, currency: str, amounts: list[int]) -> list:
    shard = shard_for(merchant, SHARDS)
    return [
        post(
            event(
                "captured",
                amount=a,
                fee=0,
                payment_id=f"{merchant}-{i}",
                merchant=merchant,
                currency=currency,
                authorized=a,
                captured=a,
                version=2,
                at=NOON,
            ),
            shard=shard,
        )
        for i, a in enumerate(amounts)
    ]


def rate(base: str, quote: str, text: str, at: datetime = NOON) -> FxRate:
    return FxRate(base, quote, parse_rate(text), at, "treasury")


def test_a_merchant_paid_in_another_currency_gets_the_rate_of_the_cutoff_rounded_half_even() -> None:
    entries = captures("m_eu", "USD", [10_001, 5])  # 10,006 cents
    rates = RateBook(
        [
            rate("USD", "EUR", "0.9"),
            rate("USD", "EUR", "0.92345", NOON + timedelta(hours=1)),
            rate("USD", "EUR", "5", DAY0 + timedelta(days=1)),
        ]
    )  # quoted after the cutoff: not used
    run = settle(D, entries, shards=SHARDS, settlement_currency={"m_eu": "EUR"}, rates=rates)
    (s,), (p,), (e,) = run.settlements, run.payouts, run.entries
    exact = Decimal(10_006) * Decimal("0.92345")  # 9239.9407 euro cents
    assert (s.payout_minor, s.paid_currency, s.paid_minor, s.fx_rate, s.refused) == (
        10_006,
        "EUR",
        int(exact.quantize(Decimal(1), ROUND_HALF_EVEN)),
        "0.92345",
        "",
    )
    assert (p.currency, p.amount_minor, p.source_currency, p.source_minor) == ("EUR", 9_240, "USD", 10_006)
    assert imbalance(e.lines) == {} and {x.currency for x in e.lines} == {"USD", "EUR"}
    assert e.fx is not None and Decimal(e.fx.residual) == exact - 9_240
    assert payout_problem(e) is None
    books: dict = {}
    for x in entries + [e]:
        books = apply(books, x)
    assert totals_by_currency(books) == {}
    assert books[("merchant:m_eu:available", "EUR")] == -9_240 and ("merchant:m_eu:pending", "USD") not in books
    assert settle(D, entries + [e], shards=SHARDS, settlement_currency={"m_eu": "EUR"}, rates=RateBook()) == run


def test_no_rate_for_the_pair_pays_nothing_and_the_debt_carries_to_a_day_with_a_rate() -> None:
    entries = captures("m_jp", "EUR", [1_000])
    run = settle(
        D, entries, shards=SHARDS, settlement_currency={"m_jp": "JPY"}, rates=RateBook([rate("JPY", "EUR", "0.006")])
    )
    (s,) = run.settlements
    assert (run.entries, run.payouts, s.payout_minor, s.refused, s.entry_id) == ((), (), 0, "missing_fx_rate", None)
    later = settle(
        D + timedelta(days=1),
        entries,
        shards=SHARDS,
        settlement_currency={"m_jp": "JPY"},
        rates=RateBook([rate("EUR", "JPY", "162.9871")]),
    )
    (p,) = later.payouts
    assert (p.currency, p.amount_minor, p.source_minor) == ("JPY", 1_630, 1_000)  # 1,629.871 yen -> 1,630


def test_an_altered_payout_entry_is_named_by_the_audit_rule() -> None:
    entries = captures("m_eu", "USD", [2_000])
    (e,) = settle(
        D, entries, shards=SHARDS, settlement_currency={"m_eu": "EUR"}, rates=RateBook([rate("USD", "EUR", "0.5")])
    ).entries
    lines = list(e.lines)
    lines[-2:] = [
        replace(lines[-2], debit_minor=1_001),
        replace(lines[-1], credit_minor=1_001),
    ]  # balanced, but not the rate
    assert payout_problem(replace(e, lines=tuple(lines))) == "lines differ from the payout rule"
    assert "ids" in payout_problem(replace(e, occurred_at_ms=e.occurred_at_ms - DAY_MS))


@settings(max_examples=150, deadline=None)
@given(
    amounts=st.lists(st.integers(1, 10**12), min_size=1, max_size=6),
    currency=st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
    target=st.sampled_from(["USD", "JPY", "KWD", "EUR"]),
    rate_text=st.from_regex(r"[0-9]{1,4}\.[0-9]{1,8}", fullmatch=True).filter(lambda t: Decimal(t) > 0),
)
def test_payouts_in_any_currency_balance_and_round_once(amounts, currency, target, rate_text) -> None:  # type: ignore[no-untyped-def]
    if currency == target:
        return
    entries = captures("m_any", currency, amounts)
    run = settle(
        D,
        entries,
        shards=SHARDS,
        settlement_currency={"m_any": target},
        rates=RateBook([rate(currency, target, rate_text)]),
    )
    shift = {"JPY": 0, "USD": 2, "EUR": 2, "KWD": 3}
    exact = Decimal(sum(amounts)) * Decimal(rate_text) * Decimal(10) ** (shift[target] - shift[currency])
    if exact <= Decimal("0.5"):  # HALF_EVEN: pays nothing: the debt stays owed rather than vanish into the FX account
        assert run.entries == () and run.settlements[0].refused == "converts_to_zero"
        return
    (e,) = run.entries
    books: dict = {}
    for x in entries + [e]:
        books = apply(books, x)
    assert totals_by_currency(books) == {}  # every currency still balances
    assert run.payouts[0].amount_minor == int(exact.quantize(Decimal(1), ROUND_HALF_EVEN))
    assert abs(exact - run.payouts[0].amount_minor) <= Decimal("0.5")  # less than a minor unit, recorded on the entry
    assert Decimal(e.fx.residual) == exact - run.payouts[0].amount_minor
