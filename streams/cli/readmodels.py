"""`paystream sink`, `paystream readmodels rebuild`, `paystream settle`, `paystream reconcile`:
the ClickHouse read models' processes and batch jobs."""

from __future__ import annotations

import signal
import threading
import time
from datetime import date
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress
from rich.table import Table

from connectors.clickhouse.client import ClickHouseError, connect
from connectors.clickhouse.migrate import MigrationError, migrate
from connectors.kafka.clients import MissingTopic
from connectors.providers.rails import RailConfigError
from streams.cli.clickhouse import read_models
from streams.jobs.sink import SinkError, provider_reports, reconcile_day, serve
from streams.jobs.sink import rebuild as rebuild_tables
from streams.domain.reconcile import ReportError
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="ClickHouse read models: rebuild from the topics.")
err = Console(stderr=True)
MAX_SHOWN = 50  # discrepancies listed on the terminal; the table holds them all


def sink(
    max_rows: int = typer.Option(10_000, min=1, max=1_000_000, help="Insert a batch at this many rows"),
    max_wait_ms: int = typer.Option(1_000, min=0, max=60_000, help="... or when its first row waited this long"),
) -> None:
    """Consume payment-events and payment-outcomes into ClickHouse until SIGTERM/SIGINT.
    At least once; inserts are idempotent. Exits 3 when ClickHouse stays unavailable
    (offsets uncommitted: the restarted sink resumes without loss)."""
    settings = get_settings()
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        client = connect(settings.clickhouse_url, settings.clickhouse_database)
        migrate(client)
    except (ClickHouseError, MigrationError) as e:
        err.print(f"[red]sink:[/red] {e}")
        raise typer.Exit(1) from None
    from streams import metrics

    metrics.serve(settings.metrics_port)  # deploy/ probes the sink's /metrics for readiness
    try:
        stats = serve(settings, client, stopping.is_set, max_rows=max_rows, max_wait_ms=max_wait_ms)
    except (ClickHouseError, SinkError) as e:
        err.print(f"[red]sink stopped:[/red] {e}")
        raise typer.Exit(3) from None
    finally:
        client.close()
    err.print(f"sink: stopped after {stats.records} records, {stats.rows_total} rows, {stats.dead_letters} dead letters")


def _day(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: a date as YYYY-MM-DD") from None


def settle(date_: str = typer.Option(..., "--date", help="The day to settle (event time, UTC), YYYY-MM-DD")) -> None:
    """Settle a day per merchant and currency from the ledger (Kafka): post the payout
    entries and instructions, write the settlements table; a second run changes nothing.
    Exits 1 when money owed could not be paid (e.g. no FX rate for a pair)."""
    from streams.jobs.settle import read_registry
    from streams.jobs.settle import SettleError, settle_day

    day, settings = _day(date_), get_settings()
    client = read_models("settle")
    try:
        result = settle_day(settings, client, day, read_registry)
    except (ClickHouseError, SettleError, MissingTopic, TimeoutError) as e:
        err.print(f"[red]settle:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    table = Table("merchant", "currency", "net_minor", "carried_in_minor", "payout_minor", "paid", "fx_rate", "payout_id")
    for s in result.run.settlements:
        paid = f"{s.paid_minor} {s.paid_currency}" if s.payout_id else (f"refused: {s.refused}" if s.refused else "")
        table.add_row(s.merchant_id, s.currency, str(s.net_minor), str(s.carried_in_minor), str(s.payout_minor),
                      paid, s.fx_rate, s.payout_id or "")
    Console().print(table)
    run = result.run
    err.print(f"settle {day}: {len(run.settlements)} settlement(s), {len(run.payouts)} payout(s), "
              f"{len(result.posted_entry_ids)} new entr(ies) posted")
    if result.skipped_records:
        err.print(f"[yellow]settle:[/yellow] {result.skipped_records} undecodable record(s) left out (run `paystream audit`)")
    refused = [s for s in run.settlements if s.refused]
    if refused:
        err.print(f"[red]settle {day}: {len(refused)} owed but not paid:[/red] "
                  + ", ".join(f"{s.merchant_id} {s.currency} ({s.refused})" for s in refused[:MAX_SHOWN]))
        raise typer.Exit(1)


def reconcile(
    date_: str = typer.Option(..., "--date", help="The report day to reconcile, YYYY-MM-DD"),
    report: list[Path] = typer.Option(None, "--report", exists=True, dir_okay=False,
                                      help="Provider report CSV (repeatable); default <data dir>/settlement-reports/[<namespace>/]<date>/*.csv"),
) -> None:
    """Match the providers' settlement reports of a day against the ledger; write the
    `reconciliation` table; exit 1 on any unexplained discrepancy."""
    day, settings = _day(date_), get_settings()
    try:
        rows, lag = provider_reports(settings, day, report)
    except (ReportError, RailConfigError) as e:
        err.print(f"[red]reconcile:[/red] {e}")
        raise typer.Exit(2) from None
    client = read_models("reconcile")
    try:
        result = reconcile_day(client, day, rows, lag)
    except ClickHouseError as e:
        err.print(f"[red]reconcile:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    table = Table("status", "count")
    for status, n in result.counts.items():
        table.add_row(status, str(n))
    Console().print(table)
    for item in [i for i in result.items if i.status != "matched"][:MAX_SHOWN]:
        err.print(f"  {item.status}: {item.provider} {item.provider_ref} {item.detail}")
    if result.discrepancies:
        err.print(f"[red]reconcile {day}: {result.discrepancies} discrepanc(ies)[/red]")
        raise typer.Exit(1)
    err.print(f"reconcile {day}: all {len(result.items)} matched")


@app.command()
def rebuild(
    timeout: float = typer.Option(3600.0, min=1, max=6 * 3600, help="Give up after this many seconds"),
) -> None:
    """Drop the topic-fed tables, recreate them and replay the topics from offset 0
    up to the end offsets seen at start. Stop the sink first (one process per chDB dir)."""
    settings = get_settings()
    client = read_models("rebuild")
    started = time.monotonic()
    try:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as bar:
            task = bar.add_task("replaying", total=None)
            stats = rebuild_tables(settings, client, timeout_s=timeout,
                                   on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    except (ClickHouseError, MigrationError, SinkError) as e:
        err.print(f"[red]rebuild:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    err.print(f"rebuild: {stats.records} records, {stats.rows_total} rows in {elapsed:.1f}s "
              f"({stats.rows_total / elapsed:,.0f} rows/s); {stats.dead_letters} undecodable skipped")
