"""`paystream clickhouse migrate` and `paystream sql` against chDB."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from streams.cli.main import app
from streams.settings import get_settings
from tests.unit.connectors.clickhouse.support import traffic

runner = CliRunner()


@pytest.fixture
def env(monkeypatch, ch_url: str, ch_database: str):
    monkeypatch.setenv("PAYSTREAM_CLICKHOUSE_URL", ch_url)
    monkeypatch.setenv("PAYSTREAM_CLICKHOUSE_DATABASE", ch_database)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def test_migrate_then_query_in_three_formats(env, ch_url: str, ch_database: str) -> None:
    r = runner.invoke(app, ["clickhouse", "migrate"])
    assert r.exit_code == 0, r.output
    assert "applied [1, 2, 3, 4, 5, 6, 7, 8, 9]" in r.output
    assert "up to date" in runner.invoke(app, ["clickhouse", "migrate"]).output

    from connectors.clickhouse.client import connect

    client = connect(ch_url, ch_database)
    t = traffic(payments=40, seed=5)
    Sink(client).insert([row for e in t.events for row in rows_for("payment_event", e)])
    client.close()
    q = "SELECT currency, count() AS n FROM payment_events FINAL GROUP BY currency ORDER BY currency"
    expected = {}
    for e in t.events:
        expected[e["currency"]] = expected.get(e["currency"], 0) + 1

    r = runner.invoke(app, ["sql", q, "--format", "json"])
    assert r.exit_code == 0, r.output
    assert {x["currency"]: x["n"] for x in map(json.loads, r.stdout.splitlines())} == expected
    r = runner.invoke(app, ["sql", q, "-f", "csv"])
    rows = list(csv.reader(io.StringIO(r.stdout)))
    assert rows[0] == ["currency", "n"] and {c: int(n) for c, n in rows[1:]} == expected
    r = runner.invoke(app, ["sql", q])
    assert r.exit_code == 0 and all(c in r.stdout for c in expected)

    r = runner.invoke(app, ["sql", "SELECT number FROM system.numbers", "-f", "csv", "--limit", "5"])
    assert r.exit_code == 0 and r.stdout.split() == ["number", "0", "1", "2", "3", "4"]


def test_sql_is_read_only_and_errors_are_one_line(env) -> None:
    assert runner.invoke(app, ["clickhouse", "migrate"]).exit_code == 0
    r = runner.invoke(app, ["sql", "DROP TABLE payments"])
    assert r.exit_code == 1 and "readonly" in r.output.lower()
    r = runner.invoke(app, ["sql", "SELECT nope FROM payments"])
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_sql_before_migrate_says_so(env) -> None:
    r = runner.invoke(app, ["sql", "SELECT 1"])
    assert r.exit_code == 1 and "migrate" in r.output
