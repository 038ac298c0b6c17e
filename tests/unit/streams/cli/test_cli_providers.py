"""`paystream providers report`: the rails' journals -> settlement CSVs that
`read_report` parses and that reconcile against the same records as the ledger's."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.providers.rails import DAY_MS, Rail, build_rails, day_of_ms
from connectors.providers.simulated import Call
from streams.cli.main import app
from streams.domain.reconcile import (
    ProviderTxn,
    from_settlement_row,
    ledger_side,
    read_report,
    reconcile,
)
from streams.settings import get_settings

runner = CliRunner()
T0_MS = 1_795_000_000_000  # 2026-11-18
SEED = 5
VISA = ("424242", "4242")
REPORT_DAY = day_of_ms(T0_MS) + timedelta(days=2)  # cards of day 1, the bank rail of day 0


@pytest.fixture
def data_dir(monkeypatch, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYSTREAM_PROVIDER_SEED", str(SEED))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def pay(rails: dict[str, Rail], n: int = 40) -> None:
    """Payments on every rail over days 0 and 1: authorize, capture, refund some."""
    for i in range(n):
        r = rails[sorted(rails)[i % len(rails)]]
        at = T0_MS + (i // len(rails) % 2) * DAY_MS + i
        cur = "USD" if "USD" in r.config.currencies else min(r.config.currencies)  # SEPA debits in EUR only
        c = Call(f"p{i}", cur, at)
        if r.authorize(f"a{i}", *VISA, 1_000 + i, cur, c).status == "approved":
            r.capture(f"c{i}", *VISA, 1_000 + i, c)
            if i % 3 == 0:
                r.refund(f"r{i}", 400, c)


def ledger_events(rails: dict[str, Rail]) -> list[dict[str, Any]]:
    """What the ledger posted for the same calls: one captured/refunded event each."""
    kinds = {"capture": "captured", "refund": "refunded"}
    return [
        {
            "type": kinds[rec.operation],
            "provider": name,
            "provider_ref": rec.key,
            "payment_id": rec.payment_id,
            "currency": rec.currency,
            "amount_minor": rec.amount_minor,
            "fee_minor": rec.result.fee_minor,
            "occurred_at": rec.at_ms,
        }
        for name, rail in rails.items()
        for rec in rail.records.values()
        if rec.operation in kinds and rec.result.status == "approved"
    ]


def reports(out: Path) -> list[ProviderTxn]:
    return [t for f in sorted(out.glob("*.csv")) for t in read_report(f)]


def test_report_from_the_journals_reconciles_with_the_same_records(data_dir: Path):
    rails = build_rails(SEED, journal_dir=data_dir / "providers")  # the worker's rails
    pay(rails)
    r = runner.invoke(app, ["providers", "report", "--date", REPORT_DAY.isoformat()])
    assert r.exit_code == 0, r.output
    out = data_dir / "settlement-reports" / REPORT_DAY.isoformat()
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{n}.csv" for n in rails)  # no temp files left
    rows = reports(out)
    assert rows == [t for n in sorted(rails) for t in map(from_settlement_row, rails[n].settlement_report(REPORT_DAY))]
    assert {t.provider for t in rows} == set(rails) and len(rows) >= 20  # the bank rail's too
    lag = {n: rail.config.settle_days for n, rail in rails.items()}
    result = reconcile(REPORT_DAY, rows, ledger_side(ledger_events(rails)), lag)
    assert result.discrepancies == 0 and result.counts["matched"] == len(rows)


def test_an_injected_discrepancy_is_the_one_reconcile_flags(data_dir: Path, tmp_path: Path):
    rails = build_rails(SEED, journal_dir=data_dir / "providers")
    pay(rails)
    out = tmp_path / "elsewhere"
    r = runner.invoke(
        app, ["providers", "report", "--date", REPORT_DAY.isoformat(), "--out", str(out), "--inject-discrepancy"]
    )
    assert r.exit_code == 0, r.output
    assert "injected: acq_north" in r.output
    lag = {n: rail.config.settle_days for n, rail in rails.items()}
    result = reconcile(REPORT_DAY, reports(out), ledger_side(ledger_events(rails)), lag)
    (bad,) = [i for i in result.items if i.status != "matched"]
    assert bad.status == "amount_mismatch" and bad.report_amount_minor == bad.ledger_amount_minor + 1


def test_no_journals_is_a_clear_error(data_dir: Path):
    r = runner.invoke(app, ["providers", "report", "--date", REPORT_DAY.isoformat()])
    assert r.exit_code == 2 and "no provider journals" in r.output


def test_a_bad_date_is_refused(data_dir: Path):
    r = runner.invoke(app, ["providers", "report", "--date", "18/11/2026"])
    assert r.exit_code == 2 and "--date" in r.output


def test_evaluate_routing_prints_the_comparison_and_writes_json(tmp_path: Path) -> None:
    import json

    out = tmp_path / "routing.json"
    result = runner.invoke(
        app, ["providers", "evaluate-routing", "--payments", "300", "--partitions", "2", "--json", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "written to" in result.output  # the table wraps at the runner's width: the JSON is checked
    data = json.loads(out.read_text())
    assert data["payments"] == 300 and set(data["scenarios"]) == {"steady", "drift"}
