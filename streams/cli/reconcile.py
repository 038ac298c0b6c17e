"""`paystream reconcile --date D`: the providers' settlement reports against the ledger,
and the ledger's crypto custody against the simulated chains."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from connectors.clickhouse.client import ClickHouseError
from connectors.providers.chain import build_chains
from connectors.providers.rails import RailConfigError
from streams.cli.clickhouse import read_models
from streams.cli.common import MAX_SHOWN, day_of
from streams.domain.reconcile import ReportError
from streams.jobs.sink import provider_reports, reconcile_day
from streams.settings import get_settings

err = Console(stderr=True, soft_wrap=True)


def reconcile(
    date_: str = typer.Option(..., "--date", help="The report day to reconcile, YYYY-MM-DD"),
    report: list[Path] = typer.Option(
        None,
        "--report",
        exists=True,
        dir_okay=False,
        help="Provider report CSV (repeatable); default <data dir>/settlement-reports/[<namespace>/]<date>/*.csv",
    ),
) -> None:
    """Match the providers' settlement reports of a day against the ledger, and the
    crypto custody against the chain at the day's end.

    Writes the `reconciliation` table; exit 1 on any unexplained discrepancy."""
    day, settings = day_of(date_), get_settings()
    try:
        rows, lag = provider_reports(settings, day, report)
    except (ReportError, RailConfigError) as e:
        err.print(f"[red]reconcile:[/red] {e}")
        raise typer.Exit(2) from None
    client = read_models("reconcile")
    try:
        result = reconcile_day(client, day, rows, lag, build_chains(settings.provider_seed))
    except (ClickHouseError, ReportError) as e:
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
