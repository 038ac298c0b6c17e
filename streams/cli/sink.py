"""`paystream sink`: payment-events and payment-outcomes into the ClickHouse read models."""

from __future__ import annotations

import signal
import threading

import typer
from rich.console import Console

from connectors.clickhouse.client import ClickHouseError, connect
from connectors.clickhouse.migrate import MigrationError, migrate
from streams.jobs.sink import SinkError, serve
from streams.settings import get_settings

err = Console(stderr=True, soft_wrap=True)


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
    err.print(
        f"sink: stopped after {stats.records} records, {stats.rows_total} rows, {stats.dead_letters} dead letters"
    )
