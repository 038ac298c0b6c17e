"""`paystream settle` and `paystream reconcile` against chDB."""

from __future__ import annotations

from dataclasses import replace

import pytest
from typer.testing import CliRunner

from streams.cli.main import app
from streams.domain.reconcile import ledger_side, write_report
from streams.settings import get_settings
from tests.unit.connectors.clickhouse.support import DAY0
from tests.unit.streams.jobs.test_sink_job import DAYS, fill

runner = CliRunner()
D = DAY0.date()


@pytest.fixture
def env(monkeypatch, tmp_path, ch, ch_url: str, ch_database: str):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("PAYSTREAM_CLICKHOUSE_URL", ch_url)
    monkeypatch.setenv("PAYSTREAM_CLICKHOUSE_DATABASE", ch_database)
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PAYSTREAM_PARTITIONS", "8")  # the ledger shards of the test traffic
    get_settings.cache_clear()
    fill(ch)
    yield ch
    get_settings.cache_clear()


def test_settle_refuses_a_bad_date(env) -> None:
    assert runner.invoke(app, ["settle", "--date", "2026-13-01"]).exit_code == 2  # settling itself: tests/integration


def test_reconcile_clean_then_an_injected_discrepancy_exits_1(env, tmp_path) -> None:
    books = [t for t in ledger_side(DAYS.events) if t.day == D]  # simcard is no rail of rails.toml: lag 0
    reports = tmp_path / "settlement-reports" / D.isoformat()
    reports.mkdir(parents=True)
    write_report(reports / "simcard.csv", books)
    r = runner.invoke(app, ["reconcile", "--date", D.isoformat()])
    assert r.exit_code == 0, r.output
    assert f"all {len(books)} matched" in r.output
    bad = tmp_path / "bad.csv"
    write_report(bad, [replace(books[0], fee_minor=books[0].fee_minor + 5), *books[1:]])
    r = runner.invoke(app, ["reconcile", "--date", D.isoformat(), "--report", str(bad)])
    assert r.exit_code == 1 and "amount_mismatch" in r.output and "fee_minor report" in r.output
    got = env.query("SELECT status, count() FROM reconciliation FINAL GROUP BY status ORDER BY status").result_rows
    assert got == [("amount_mismatch", 1), ("matched", len(books) - 1)]


def test_reconcile_without_a_report_says_so(env) -> None:
    r = runner.invoke(app, ["reconcile", "--date", D.isoformat()])
    assert r.exit_code == 2 and "no provider report" in r.output
