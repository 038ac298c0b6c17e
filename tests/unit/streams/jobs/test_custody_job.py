"""Reconciliation against the chain, end to end over the read models: crypto events and
journal entries through the sink's rows into chDB, then `reconcile_day` with the chains
(streams/jobs/sink.py `custody_day`)."""

from __future__ import annotations

from typing import Any

from connectors.clickhouse.rows import COLUMNS, rows_for
from connectors.clickhouse.sink import Sink
from streams.domain.reconcile import chain_custody, day_end_ms, ledger_custody, ledger_side
from streams.jobs.sink import (
    CUSTODY_CHECKPOINT_LAG_DAYS,
    booked_custody,
    crypto_events,
    custody_checkpoint,
    reconcile_day,
)
from tests.unit.deploy.alert_support import sample
from tests.unit.streams.conftest import Commands
from tests.unit.streams.domain.test_crypto import POLICY
from tests.unit.streams.domain.test_reconcile_chain import CHAIN, traffic


def fill(ch, events: list[dict[str, Any]], entries: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    rows = [r for e in events for r in rows_for("payment_event", e)]
    Sink(ch).insert(rows + [r for x in entries for r in rows_for("ledger_entry", x)])


def test_a_crypto_event_fills_its_crypto_columns() -> None:
    events, _ = traffic(Commands())
    quoted = next(e for e in events if e["type"] == "crypto_quoted")
    ev_row, pay_row = rows_for("payment_event", quoted)[:2]
    ev = dict(zip(COLUMNS["payment_events"], ev_row.values))
    c = quoted["crypto"]
    assert (
        ev["asset"],
        ev["asset_amount_minor"],
        ev["asset_due_minor"],
        ev["crypto_address"],
        ev["quote_expires_at"],
    ) == ("USDC", c["due_minor"], c["due_minor"], c["address"], c["expires_at"])
    assert dict(zip(COLUMNS["payments"], pay_row.values))["asset"] == "USDC"
    received = next(e for e in events if e["type"] == "crypto_received")
    assert (
        dict(zip(COLUMNS["payment_events"], rows_for("payment_event", received)[0].values))["crypto_tx_ids"]
        == received["crypto"]["tx_ids"]
        != []
    )
    card = next(
        e for e in rows_for("payment_event", {**quoted, "crypto": None, "method": None}) if e.table == "payment_events"
    )
    assert dict(zip(COLUMNS["payment_events"], card.values))["asset"] == ""


def test_books_that_agree_with_the_chain_report_nothing(ch) -> None:
    events, entries = traffic(Commands())
    fill(ch, events, entries)
    day = events[-1]["occurred_at"].date()
    cutoff = day_end_ms(day)
    # the read models give what the topics give
    assert chain_custody(crypto_events(ch, cutoff), {"USDC": CHAIN}, POLICY, cutoff) == chain_custody(
        events, {"USDC": CHAIN}, POLICY, cutoff
    )
    assert booked_custody(ch, cutoff) == ledger_custody(entries, cutoff) != {}
    result = reconcile_day(ch, day, [], {}, {"USDC": CHAIN}, POLICY)
    assert [(i.status, i.provider, i.currency) for i in result.items] == [("matched", "sim_usdc", "USDC")]
    assert result.discrepancies == 0
    assert reconcile_day(ch, day, [], {}).items == ()  # without the chains: the providers only, as before
    # a merchant's refund of a crypto payment is a send on the chain, never expected in a provider's report
    assert any(e["type"] == "refunded" for e in events) and ledger_side(events) == []


def test_books_that_disagree_with_the_chain_report_a_custody_mismatch(ch) -> None:
    events, entries = traffic(Commands())
    dropped = next(i for i, x in enumerate(entries) if x["event_type"] == "crypto_received")
    amount = next(line["debit_minor"] for line in entries[dropped]["lines"] if line["debit_minor"])
    fill(ch, events, entries[:dropped] + entries[dropped + 1 :])  # a receipt the ledger never booked
    day = events[-1]["occurred_at"].date()
    before = sample("paystream_settlement_discrepancies_total", kind="custody_mismatch")
    result = reconcile_day(ch, day, [], {}, {"USDC": CHAIN}, POLICY)
    (item,) = result.items
    assert item.status == "custody_mismatch" and item.report_amount_minor - item.ledger_amount_minor == amount
    assert result.discrepancies == 1
    assert sample("paystream_settlement_discrepancies_total", kind="custody_mismatch") == before + 1
    got = ch.query(
        "SELECT status, provider, provider_ref, currency FROM reconciliation FINAL WHERE day = {d:Date}",
        parameters={"d": day},
    ).result_rows
    assert got == [("custody_mismatch", "sim_usdc", "custody:USDC", "USDC")]


def test_a_custody_check_starts_from_its_checkpoint_and_reads_only_what_is_left(ch) -> None:
    from datetime import timedelta

    events, entries = traffic(Commands())
    fill(ch, events, entries)
    day = events[-1]["occurred_at"].date()
    full = reconcile_day(ch, day, [], {}, {"USDC": CHAIN}, POLICY).items
    # The day is checked from the start; its checkpoint is CUSTODY_CHECKPOINT_LAG_DAYS before it.
    lag = timedelta(days=CUSTODY_CHECKPOINT_LAG_DAYS)
    assert custody_checkpoint(ch, day_end_ms(day - lag)).cutoff_ms == day_end_ms(day - lag)
    later = day + 2 * lag + timedelta(days=1)
    (item,) = reconcile_day(ch, later, [], {}, {"USDC": CHAIN}, POLICY).items
    assert (item.status, item.report_amount_minor) == ("matched", full[0].report_amount_minor)
    cp = custody_checkpoint(ch, day_end_ms(later - lag))
    assert cp.cutoff_ms == day_end_ms(later - lag) and cp.chain_settled == {"USDC": item.report_amount_minor}
    assert cp.ledger == {"USDC": item.ledger_amount_minor}
    # from that checkpoint on, every quote's watch has ended: nothing of the old days is read again
    watched_ms = POLICY.watch_ms + POLICY.poll_ms
    assert crypto_events(ch, day_end_ms(later + lag), cp.cutoff_ms, watched_ms) == []
    assert len(crypto_events(ch, day_end_ms(later + lag))) == sum(
        1 for e in events if e["type"] in ("crypto_quoted", "crypto_refunded", "refunded") and e.get("crypto")
    )
    assert booked_custody(ch, day_end_ms(later + lag), cp) == booked_custody(ch, day_end_ms(later + lag))
