"""Reconciliation of a provider's settlement report against the ledger."""

from __future__ import annotations

import csv
from dataclasses import asdict, replace
from datetime import timedelta

import pytest

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from streams.domain.reconcile import REPORT_COLUMNS, ProviderTxn, ReportError, ledger_side, read_report, reconcile
from tests.unit.connectors.clickhouse.support import DAY0, traffic

D = DAY0.date()
T = traffic(payments=120, seed=9)
BOOKS = ledger_side(T.events)


def test_ledger_side_is_captures_and_refunds_signed() -> None:
    kinds = {e["type"] for e in T.events if e["provider_ref"] in {t.provider_ref for t in BOOKS}}
    assert kinds == {"captured", "refunded"}
    assert any(t.amount_minor < 0 for t in BOOKS) and any(t.amount_minor > 0 for t in BOOKS)


def test_a_faithful_report_matches_everything() -> None:
    result = reconcile(D, list(BOOKS), BOOKS)
    assert result.counts["matched"] == len(BOOKS) and result.discrepancies == 0


def test_injected_discrepancies_are_each_flagged() -> None:
    report = list(BOOKS)
    wrong, dropped, dup = report[0], report[1], report[2]
    report[0] = replace(wrong, amount_minor=wrong.amount_minor + 1)
    del report[1]
    report.append(dup)
    report.append(ProviderTxn("simcard", "prv_unknown", "pay_x", "USD", 700, 30, D))
    report.append(replace(report[3], day=D + timedelta(days=1)))  # another day's report: not this run's
    result = reconcile(D, report, BOOKS)
    by_ref = {(i.provider_ref, i.status) for i in result.items}
    assert (wrong.provider_ref, "amount_mismatch") in by_ref
    assert (dropped.provider_ref, "missing_in_report") in by_ref
    assert (dup.provider_ref, "duplicate_in_report") in by_ref
    assert ("prv_unknown", "missing_in_ledger") in by_ref
    assert result.discrepancies == 4
    assert next(i for i in result.items if i.status == "amount_mismatch").detail.startswith("amount_minor report")


def test_a_timing_difference_is_matched_with_a_note() -> None:
    t = BOOKS[0]
    shifted = replace(t, day=D - timedelta(days=1))  # the ledger booked it the day before
    result = reconcile(D, [t], [shifted])
    (item,) = result.items
    assert item.status == "matched" and "ledger day" in item.detail


def test_report_csv_round_trip_and_bad_rows(tmp_path) -> None:
    path = tmp_path / "report.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, REPORT_COLUMNS)
        w.writeheader()
        w.writerows(asdict(t) for t in BOOKS)
    assert read_report(path) == BOOKS
    path.write_text(",".join(REPORT_COLUMNS) + "\nsimcard,r1,p1,USD,12.5,0,2026-11-25\n")
    with pytest.raises(ReportError, match=":2: bad row"):
        read_report(path)
    path.write_text("a,b\n")
    with pytest.raises(ReportError, match="header"):
        read_report(path)


def test_reconciliation_table_takes_a_run(ch) -> None:
    report = list(BOOKS)[1:]
    result = reconcile(D, report, BOOKS)
    rows = [r for i in result.items for r in rows_for("reconciliation", asdict(i))]
    Sink(ch).insert(rows)
    Sink(ch).insert(rows)
    got = dict(ch.query("SELECT status, count() FROM reconciliation FINAL GROUP BY status").result_rows)
    assert got == {"matched": len(BOOKS) - 1, "missing_in_report": 1}


def test_a_bank_transfer_reconciles_as_its_submission_then_its_return() -> None:
    from dataclasses import replace as with_

    from connectors.providers.rails import DAY_MS, Rail, load_rail_configs
    from connectors.providers.simulated import Call
    from schemas.times import from_ms, to_ms
    from streams.domain.reconcile import from_settlement_row

    rail = Rail(with_(load_rail_configs()["bank_ach"], return_per_mille=1000), 3)
    at_ms = to_ms(DAY0) + 3_600_000
    result = rail.capture("prv_submit", "", "", 10_000, Call("pay_b", "USD", at_ms))
    base = {"provider": "bank_ach", "provider_ref": "prv_submit", "payment_id": "pay_b", "currency": "USD"}
    events = [
        base
        | {
            "type": "bank_submitted",
            "amount_minor": 10_000,
            "fee_minor": result.fee_minor,
            "occurred_at": from_ms(at_ms),
        },
        base
        | {"type": "bank_settled", "amount_minor": 10_000, "fee_minor": 0, "occurred_at": from_ms(at_ms + 2 * DAY_MS)},
        base
        | {"type": "bank_reversed", "amount_minor": 10_000, "fee_minor": 0, "occurred_at": from_ms(at_ms + 4 * DAY_MS)},
    ]
    books = ledger_side(events)
    assert [(t.kind, t.amount_minor) for t in books] == [
        ("capture", 10_000),
        ("return", -10_000),
    ]  # settling moves no provider money
    for days in (2, 4):
        day = D + timedelta(days=days)
        report = [from_settlement_row(r) for r in rail.settlement_report(day)]
        outcome = reconcile(day, report, books, {"bank_ach": 2})
        assert len(report) == 1 and outcome.discrepancies == 0 and outcome.counts["matched"] == 1, outcome.items
