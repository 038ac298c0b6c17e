"""`paystream sink`, `paystream readmodels rebuild`, `paystream settle`, `paystream reconcile`:
the ClickHouse read models' processes and batch jobs."""

from __future__ import annotations

import time

import typer
from rich.console import Console
from rich.progress import MofNCompleteColumn, Progress

from connectors.clickhouse.client import ClickHouseError
from connectors.clickhouse.migrate import MigrationError
from streams.cli.clickhouse import read_models
from streams.jobs.sink import SinkError
from streams.jobs.sink import rebuild as rebuild_tables
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="ClickHouse read models: rebuild from the topics.")
err = Console(stderr=True)


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
            stats = rebuild_tables(
                settings,
                client,
                timeout_s=timeout,
                on_progress=lambda done, total: bar.update(task, completed=done, total=total),
            )
    except (ClickHouseError, MigrationError, SinkError) as e:
        err.print(f"[red]rebuild:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    elapsed = max(time.monotonic() - started, 1e-9)
    err.print(
        f"rebuild: {stats.records} records, {stats.rows_total} rows in {elapsed:.1f}s "
        f"({stats.rows_total / elapsed:,.0f} rows/s); {stats.dead_letters} undecodable skipped"
    )
