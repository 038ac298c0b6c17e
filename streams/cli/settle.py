"""`paystream settle --date D`: settle a day per merchant and currency from the ledger."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from connectors.clickhouse.client import ClickHouseError
from connectors.kafka.clients import MissingTopic
from streams.cli.clickhouse import read_models
from streams.cli.common import MAX_SHOWN, day_of
from streams.settings import get_settings

err = Console(stderr=True, soft_wrap=True)


def settle(date_: str = typer.Option(..., "--date", help="The day to settle (event time, UTC), YYYY-MM-DD")) -> None:
    """Settle a day per merchant and currency from the ledger.

    Reads the ledger from Kafka, posts the payout
    entries and instructions, write the settlements table; a second run changes nothing.
    Exits 1 when money owed could not be paid (e.g. no FX rate for a pair)."""
    from streams.client.merchants import read_registry
    from streams.jobs.settle import SettleError, settle_day

    day, settings = day_of(date_), get_settings()
    client = read_models("settle")
    try:
        result = settle_day(settings, client, day, read_registry)
    except (ClickHouseError, SettleError, MissingTopic, TimeoutError) as e:
        err.print(f"[red]settle:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    table = Table(
        "merchant", "currency", "net_minor", "carried_in_minor", "payout_minor", "paid", "fx_rate", "payout_id"
    )
    for s in result.run.settlements:
        paid = f"{s.paid_minor} {s.paid_currency}" if s.payout_id else (f"refused: {s.refused}" if s.refused else "")
        table.add_row(
            s.merchant_id,
            s.currency,
            str(s.net_minor),
            str(s.carried_in_minor),
            str(s.payout_minor),
            paid,
            s.fx_rate,
            s.payout_id or "",
        )
    Console().print(table)
    run = result.run
    err.print(
        f"settle {day}: {len(run.settlements)} settlement(s), {len(run.payouts)} payout(s), "
        f"{len(result.posted_entry_ids)} new entr(ies) posted"
    )
    if result.skipped_records:
        err.print(
            f"[yellow]settle:[/yellow] {result.skipped_records} undecodable record(s) left out (run `paystream audit`)"
        )
    refused = [s for s in run.settlements if s.refused]
    if refused:
        err.print(
            f"[red]settle {day}: {len(refused)} owed but not paid:[/red] "
            + ", ".join(f"{s.merchant_id} {s.currency} ({s.refused})" for s in refused[:MAX_SHOWN])
        )
        raise typer.Exit(1)
