"""Batching by count and time, and idempotent inserts into a real chDB:
re-delivery, re-batching and an outage in the middle never double count."""

from __future__ import annotations

import random

import pytest

from connectors.clickhouse.client import ClickHouseError
from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Batcher, Sink, backoff_ms, dedup_token
from tests.unit.connectors.clickhouse.support import traffic

T = traffic(payments=150, seed=11)
ROWS = [r for e in T.events for r in rows_for("payment_event", e)] + [
    r for e in T.entries for r in rows_for("ledger_entry", e)
]
TABLES = ("payments", "payment_events", "ledger_entries", "fraud_decisions", "disputes")


def counts(ch, final: bool = True) -> dict[str, int]:
    f = " FINAL" if final else ""
    return {t: ch.query(f"SELECT count() FROM {t}{f}").result_rows[0][0] for t in TABLES}


def balances(ch) -> list[tuple]:
    return ch.query("SELECT account, currency, balance_minor FROM balances ORDER BY account, currency").result_rows


def test_batcher_by_count() -> None:
    b = Batcher(max_rows=5, max_wait_ms=10_000)
    assert b.add(ROWS[:3], now_ms=0) is None
    batch = b.add(ROWS[3:6], now_ms=1)
    assert batch == ROWS[:6] and len(b) == 0  # a record's rows are never split


def test_batcher_by_age_from_the_first_row() -> None:
    b = Batcher(max_rows=1000, max_wait_ms=100)
    assert b.poll(now_ms=10_000) is None  # nothing waiting, nothing due
    assert b.add(ROWS[:2], now_ms=1_000) is None
    assert b.add(ROWS[2:3], now_ms=1_099) is None
    assert b.poll(now_ms=1_100) == ROWS[:3]
    assert b.take() is None
    b.add(ROWS[:1], now_ms=5_000)
    assert b.take() == ROWS[:1]


def test_batcher_bounds() -> None:
    with pytest.raises(AssertionError):
        Batcher(max_rows=0)
    with pytest.raises(AssertionError):
        Batcher(max_wait_ms=10**9)


def test_backoff_is_exponential_and_capped() -> None:
    assert [backoff_ms(a, 100, 1000) for a in range(1, 7)] == [100, 200, 400, 800, 1000, 1000]
    assert backoff_ms(10**6) == 30_000


def test_dedup_token_is_content_based() -> None:
    vals = [r.values for r in ROWS[:10] if r.table == "payment_events"]
    assert dedup_token("payment_events", vals) == dedup_token("payment_events", list(vals))
    assert dedup_token("payment_events", vals) != dedup_token("payment_events", vals[:-1])


def test_same_batch_twice_changes_no_count(ch) -> None:
    sink = Sink(ch)
    written = sink.insert(ROWS)
    assert written["payment_events"] == len(T.events)
    before, raw_before, bal = counts(ch), counts(ch, final=False), balances(ch)
    assert before["payment_events"] == len(T.events)
    assert before["payments"] == len({e["payment_id"] for e in T.events})
    sink.insert(ROWS)
    assert counts(ch) == before
    assert counts(ch, final=False) == raw_before  # the token dropped the repeat at insert time
    assert balances(ch) == bal


def test_redelivery_in_other_batches_changes_nothing(ch) -> None:
    sink = Sink(ch)
    sink.insert(ROWS)
    before, bal = counts(ch), balances(ch)
    again = ROWS[len(ROWS) // 3 :]
    random.Random(1).shuffle(again)
    for i in range(0, len(again), 97):  # other batch boundaries: other tokens, same keys
        sink.insert(again[i : i + 97])
    assert counts(ch) == before
    assert balances(ch) == bal
    assert sum(b[2] for b in bal) == 0  # the books balance


def test_payments_hold_the_latest_version(ch) -> None:
    Sink(ch).insert(list(reversed(ROWS)))  # newest first: the version decides, not arrival
    last = {}
    for e in T.events:
        last[e["payment_id"]] = max(last.get(e["payment_id"], (0, "")), (e["version"], e["payment_status"]))
    got = dict(ch.query("SELECT payment_id, (version, status) FROM payments FINAL").result_rows)
    assert got == last


def test_outage_mid_batch_retries_and_loses_nothing(ch) -> None:
    """The target table goes away mid-run: the sink backs off, the table comes back
    (in the 'sleep', i.e. while the sink waits) and the batch lands once."""
    sink_ok = Sink(ch)
    sink_ok.insert(ROWS[:500])
    waits: list[float] = []

    def sleep(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 2:
            ch.command("ATTACH TABLE ledger_entries")

    ch.command("DETACH TABLE ledger_entries")
    Sink(ch, attempts=5, base_backoff_ms=10, sleep=sleep).insert(ROWS)  # retries the whole batch
    assert waits == [0.01, 0.02]
    assert counts(ch)["ledger_entries"] == len([r for r in ROWS if r.table == "ledger_entries"])
    assert counts(ch)["payment_events"] == len(T.events)
    assert sum(b[2] for b in balances(ch)) == 0


def test_outage_that_lasts_is_a_clear_error(ch) -> None:
    ch.command("DETACH TABLE disputes")
    try:
        with pytest.raises(ClickHouseError) as e:
            Sink(ch, attempts=3, sleep=lambda s: None).insert([r for r in ROWS if r.table == "disputes"])
        assert e.value.reason == "unavailable" and "3 attempts" in e.value.detail
    finally:
        ch.command("ATTACH TABLE disputes")
