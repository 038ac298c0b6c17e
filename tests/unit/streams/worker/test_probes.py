"""The worker's gauges that no single event sets: lag, ledger imbalance, breakers."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.providers.breaker import Transition
from streams import metrics
from streams.domain.ledger import balance_key, encode_balance
from streams.worker.probes import BreakerBoard, Progress, StallWatch, TooManyBalances, ledger_imbalance, partition_lag


def test_lag_counts_from_the_committed_offset_or_the_log_start() -> None:
    assert partition_lag(0, 100, 60) == 40
    assert partition_lag(0, 100, -1001) == 100  # the group never committed here: all of it
    assert partition_lag(30, 100, 10) == 70  # committed below a deleted head: from the head
    assert partition_lag(0, 100, 100) == 0
    assert partition_lag(0, 0, -1001) == 0


@given(st.integers(0, 10**9), st.integers(0, 10**9), st.integers(-1001, 2 * 10**9))
def test_lag_is_never_negative_nor_more_than_the_log(low: int, span: int, committed: int) -> None:
    assert 0 <= partition_lag(low, low + span, committed) <= span


def balances(rows: dict[tuple[str, str], int]) -> list[tuple[bytes, bytes]]:
    return [(balance_key(a, c), encode_balance(v)) for (a, c), v in rows.items()]


def test_balanced_books_show_zero_per_currency_and_a_broken_one_its_difference() -> None:
    books = {
        ("m_1:pending", "USD"): -1_000,
        ("house:clearing:0", "USD"): 1_000,
        ("m_2:available", "EUR"): -250,
        ("house:fees:0", "EUR"): 250,
    }
    assert ledger_imbalance(balances(books)) == {"USD": 0, "EUR": 0}
    books[("house:fees:0", "EUR")] = 245  # five cents gone
    assert ledger_imbalance(balances(books)) == {"USD": 0, "EUR": -5}


def test_too_many_balances_are_refused_not_half_summed() -> None:
    rows = balances({(f"m_{i}:pending", "USD"): 1 for i in range(3)})
    assert ledger_imbalance(rows, max_records=3) == {"USD": 3}
    with pytest.raises(TooManyBalances):
        ledger_imbalance(rows, max_records=2)


def change(provider: str, to_state: str) -> Transition:
    return Transition(provider, "closed", to_state, 0, "failure_rate", 10, 6, 0)


def test_a_provider_shows_its_worst_breaker_over_the_partitions() -> None:
    board = BreakerBoard(("visa_a", "visa_b"))
    assert board.worst() == {"visa_a": metrics.BREAKER_CLOSED, "visa_b": metrics.BREAKER_CLOSED}
    board.apply(0, change("visa_a", "open"))
    board.apply(1, change("visa_a", "half_open"))
    assert board.worst()["visa_a"] == metrics.BREAKER_OPEN
    board.apply(0, change("visa_a", "closed"))  # partition 0 recovered; 1 still probing
    assert board.worst() == {"visa_a": metrics.BREAKER_HALF_OPEN, "visa_b": metrics.BREAKER_CLOSED}


# --- the worker's own stall detector ---

TP = ("chaos.payment-commands-risk", 1)


def test_a_ready_worker_whose_partition_does_not_move_is_stalled() -> None:
    watch = StallWatch(stall_s=60)
    assert watch.observe(0, {TP: Progress(301, 2000)}, ready=True) == []
    assert watch.observe(59, {TP: Progress(301, 2100)}, ready=True) == []
    assert watch.observe(60, {TP: Progress(301, 2140)}, ready=True) == [TP]


def test_restoring_tables_is_not_a_stall() -> None:
    # The 20,000-command chaos run: workers restoring 300,000 changelog records for
    # minutes were restarted as "stalled", and each restart began the restore again.
    watch = StallWatch(stall_s=60)
    watch.observe(0, {TP: Progress(301, 2000)}, ready=True)
    assert watch.observe(120, {TP: Progress(301, 2000)}, ready=False) == []
    assert watch.observe(130, {TP: Progress(301, 2000)}, ready=True) == []  # the clock starts again when ready
    assert watch.observe(189, {TP: Progress(301, 2000)}, ready=True) == []
    assert watch.observe(190, {TP: Progress(301, 2000)}, ready=True) == [TP]


def test_a_moving_or_caught_up_partition_is_not_stalled() -> None:
    watch = StallWatch(stall_s=60)
    other = ("chaos.payment-commands", 0)
    for t in range(0, 600, 30):
        # lag stays high but the committed offset moves; the other is caught up (its commit marker)
        assert watch.observe(t, {TP: Progress(1000 + t, 5000), other: Progress(77, 1)}, ready=True) == []


def test_a_partition_found_idle_starts_its_clock_again() -> None:
    # Its lag is an aborted transaction's records and markers: nothing to process.
    watch = StallWatch(stall_s=60)
    watch.observe(0, {TP: Progress(301, 7)}, ready=True)
    assert watch.observe(60, {TP: Progress(301, 7)}, ready=True) == [TP]
    watch.idle(TP, 60)
    assert watch.observe(119, {TP: Progress(301, 7)}, ready=True) == []
    assert watch.observe(120, {TP: Progress(301, 7)}, ready=True) == [TP]  # asked again a stall_s later


def test_a_revoked_partition_is_forgotten() -> None:
    watch = StallWatch(stall_s=60)
    watch.observe(0, {TP: Progress(301, 2000)}, ready=True)
    watch.observe(30, {}, ready=True)  # moved to another worker
    assert watch.observe(70, {TP: Progress(301, 2000)}, ready=True) == []  # back: a fresh clock
    assert watch.observe(130, {TP: Progress(301, 2000)}, ready=True) == [TP]


@given(st.lists(st.tuples(st.integers(0, 3), st.booleans()), max_size=40))
def test_never_stalled_while_every_reading_moves(steps: list[tuple[int, bool]]) -> None:
    watch, committed, now = StallWatch(stall_s=60), 0, 0.0
    for advance, ready in steps:
        committed, now = committed + 1, now + 30 * advance
        assert watch.observe(now, {TP: Progress(committed, 500)}, ready) == []
