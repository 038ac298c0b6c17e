"""A business day end to end against the real broker, through the CLI as ops run it:
payments on the simulated rails, the sink into chDB, the read models' totals
against the ledger's own balances, `paystream settle` (a merchant paid in another
currency at the FX topic's rate; a second run posts nothing; the audit still
passes), then `paystream providers report` and `paystream reconcile` clean, and an
injected discrepancy flagged."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import timedelta
from decimal import ROUND_HALF_EVEN, Decimal

import pytest
from typer.testing import CliRunner

from connectors.clickhouse.client import connect
from schemas.codec import Codec
from streams.cli.main import app
from streams.client.books import book_records, live_balances, public_keys
from streams.client.observe import Observer
from streams.domain.audit import audit
from streams.jobs.sink import catch_up
from streams.settings import Settings, get_settings
from streams.topics import topic_names
from tests.integration.support import T0, WAIT_S, Pipeline, create, follow_up, make_settings, run, start_worker

pytestmark = pytest.mark.integration

runner = CliRunner()
DAY = T0.date()
RATE = "0.92345"


def env_of(settings: Settings) -> dict[str, str]:
    fields = (
        "namespace",
        "partitions",
        "data_dir",
        "keys_dir",
        "providers_dir",
        "clickhouse_url",
        "clickhouse_database",
        "providers",
        "fraud_scoring",
    )
    return {f"PAYSTREAM_{f.upper()}": str(getattr(settings, f)) for f in fields}


@pytest.fixture(scope="module")
def day(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("settle")
    settings = make_settings(tmp, "settle").model_copy(
        update={"providers": "rails", "clickhouse_database": "it_settle"}
    )
    worker = start_worker(settings)
    yield Pipeline(settings, worker)
    assert worker.stop() == 0, worker.log_tail()


def cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> tuple[int, str]:
    for k, v in env_of(settings).items():
        monkeypatch.setenv(k, v)
    get_settings.cache_clear()
    try:
        r = runner.invoke(app, list(args))
    finally:
        get_settings.cache_clear()
    return r.exit_code, r.output


def test_a_day_settles_in_the_merchants_currency_and_reconciles(day: Pipeline, monkeypatch: pytest.MonkeyPatch) -> None:
    s = day.settings
    eu, us = f"m_eu_{uuid.uuid4().hex[:6]}", f"m_us_{uuid.uuid4().hex[:6]}"
    code, out = cli(monkeypatch, s, "merchants", "add", eu, "--settlement-currency", "EUR", "--verified")
    assert code == 0, out
    code, out = cli(monkeypatch, s, "fx", "set", "USD", "EUR", RATE, "--as-of", (T0 - timedelta(hours=2)).isoformat())
    assert code == 0, out

    creates = [create(m, f"k{i}", amount=1_000 + 37 * i) for m in (eu, us) for i in range(12)]
    captures = [
        follow_up("capture", c["merchant_id"], c["payment_id"], f"cap-{c['idempotency_key']}", c["amount_minor"])
        for c in creates
    ]
    refunds = [
        follow_up("refund", c["merchant_id"], c["payment_id"], f"ref-{c['idempotency_key']}", 300) for c in creates[::4]
    ]
    run(day, creates)
    cap_seen, ref_seen = run(day, captures), run(day, refunds)
    captured = {c["payment_id"] for c in captures if cap_seen.outcomes[c["command_id"]][0]["status"] == "succeeded"}
    assert len(captured) >= 12, "the rails declined almost everything"
    with Observer(s, from_beginning=True) as books:
        assert books.wait_until(books.books_applied, WAIT_S)

    client = connect(s.clickhouse_url, s.clickhouse_database)
    try:  # chDB is one engine per process: left open, it breaks every later test
        code, out = cli(monkeypatch, s, "clickhouse", "migrate")
        assert code == 0, out
        catch_up(s, client)
        # The read model's balances (the cookbook's "Balances now") are the ledger's own, to the minor unit.
        ch = {
            (a, c): b
            for a, c, b in client.query(
                "SELECT account, currency, balance_minor FROM balances WHERE balance_minor != 0"
            ).result_rows
        }
        assert ch == live_balances(s)
        volume = dict(
            client.query(
                "SELECT merchant_id, sum(amount_minor) FROM payment_events FINAL WHERE type = 'captured' "
                "GROUP BY merchant_id"
            ).result_rows
        )
        credited = dict(
            client.query(
                "SELECT merchant_id, sum(credit_minor) FROM ledger_entries FINAL WHERE event_type = 'captured' "
                "AND account LIKE 'merchant:%:pending' GROUP BY merchant_id"
            ).result_rows
        )
        assert volume == credited and set(volume) == {eu, us}

        owed = {m: -live_balances(s).get((f"merchant:{m}:pending", "USD"), 0) for m in (eu, us)}
        code, out = cli(monkeypatch, s, "settle", "--date", DAY.isoformat())
        assert code == 0, out
        assert "2 new entr(ies) posted" in out
        code, again = cli(monkeypatch, s, "settle", "--date", DAY.isoformat())
        assert code == 0 and "0 new entr(ies) posted" in again, again

        with Observer(s, from_beginning=True) as books:
            assert books.wait_until(books.books_applied, WAIT_S)
        balances = live_balances(s)
        paid_eur = int((Decimal(owed[eu]) * Decimal(RATE)).quantize(Decimal(1), ROUND_HALF_EVEN))
        assert balances[(f"merchant:{eu}:available", "EUR")] == -paid_eur
        assert balances[(f"merchant:{us}:available", "USD")] == -owed[us]
        assert (f"merchant:{eu}:pending", "USD") not in balances and (f"merchant:{us}:pending", "USD") not in balances
        payouts = read_payouts(s)
        assert sorted((p["merchant_id"], p["currency"], p["amount_minor"]) for p in payouts) == sorted(
            [(eu, "EUR", paid_eur), (us, "USD", owed[us])]
        )
        report = audit(
            book_records(s), public_keys(s), events_topic=topic_names(s).events, entries_topic=topic_names(s).ledger
        )
        assert report.ok, report.first_failure()

        # The rails' reports: each capture and refund of DAY appears on its rail's report settle_days later.
        matched = 0
        for lag in (1, 2):
            report_day = (DAY + timedelta(days=lag)).isoformat()
            code, out = cli(monkeypatch, s, "providers", "report", "--date", report_day)
            assert code == 0, out
            code, out = cli(monkeypatch, s, "reconcile", "--date", report_day)
            assert code == 0, out
            matched += int(m.group(1)) if (m := re.search(r"all (\d+) matched", out)) else 0
        assert matched == len(captured) + sum(
            1 for r in refunds if ref_seen.outcomes[r["command_id"]][0]["status"] == "succeeded"
        )
        code, out = cli(
            monkeypatch,
            s,
            "providers",
            "report",
            "--date",
            (DAY + timedelta(days=1)).isoformat(),
            "--inject-discrepancy",
        )
        assert code == 0, out
        code, out = cli(monkeypatch, s, "reconcile", "--date", (DAY + timedelta(days=1)).isoformat())
        assert code == 1 and "amount_mismatch" in out, out
    finally:
        client.close()


def read_payouts(s: Settings) -> list[dict]:
    from connectors.kafka.clients import read_to_end

    codec = Codec("PayoutInstruction")
    return [codec.decode(m.value()) for m in read_to_end(s.bootstrap_servers, [topic_names(s).payouts], s.partitions)]
