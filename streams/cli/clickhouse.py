"""`paystream clickhouse migrate` and `paystream sql "SELECT ..."`: the read models' CLI."""

from __future__ import annotations

import csv
import json
import sys
from enum import StrEnum
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from connectors.clickhouse.client import ClickHouseError, connect
from connectors.clickhouse.migrate import MigrationError
from connectors.clickhouse.migrate import migrate as run_migrations
from streams.cli.common import read_models
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="ClickHouse read models (chDB in-process, or a server by URL).")
err = Console(stderr=True)


MAX_ROWS = 1_000_000


class Format(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


@app.command()
def migrate() -> None:
    """Create the database and apply the schema migrations it lacks (idempotent)."""
    settings = get_settings()
    try:
        client = connect(settings.clickhouse_url, settings.clickhouse_database)
        try:
            applied = run_migrations(client)
        finally:
            client.close()
    except (ClickHouseError, MigrationError) as e:
        err.print(f"[red]clickhouse migrate failed:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"clickhouse: applied {applied}" if applied else "clickhouse: up to date")


def sql(
    query: str = typer.Argument(..., help='One read-only query, e.g. "SELECT count() FROM payments FINAL"'),
    format: Format = typer.Option(Format.table, "--format", "-f", help="table | csv | json (JSON lines)"),
    limit: int = typer.Option(10_000, min=1, max=MAX_ROWS, help="At most this many rows are printed"),
) -> None:
    """Run a read-only query against the read models and print the rows."""
    client = read_models("sql")
    try:
        # readonly=2: no writes, no DDL, but per-query settings stay allowed.
        result = client.query(
            query, settings={"readonly": 2, "max_result_rows": limit, "result_overflow_mode": "break"}
        )
    except Exception as e:  # the driver's errors carry the server's message; show its first line
        err.print(f"[red]sql:[/red] {(str(e).strip().splitlines() or [type(e).__name__])[0][:500]}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    names, rows = list(result.column_names), result.result_rows[:limit]
    if format is Format.csv:
        out = csv.writer(sys.stdout)
        out.writerow(names)
        out.writerows(rows)
    elif format is Format.json:
        for row in rows:
            print(json.dumps(dict(zip(names, row)), default=_json_value, ensure_ascii=False))
    else:
        table = Table(*names)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)
    if len(result.result_rows) >= limit:
        err.print(f"(stopped at --limit {limit} rows)")


def _json_value(value: Any) -> Any:
    return str(value)  # dates, datetimes, decimals, UUIDs: their ISO / exact text


app.command("sql")(sql)
