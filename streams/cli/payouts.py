"""`paystream payouts run --date D`: send the settled payouts to the (simulated) bank
and post its answers (streams/jobs/payouts.py); `paystream payouts list`: their status."""

from __future__ import annotations

from datetime import date

import typer
from rich.console import Console
from rich.table import Table

from connectors.clickhouse.client import ClickHouseError
from connectors.kafka.clients import MissingTopic
from connectors.providers.bank import BankRail
from streams.cli.clickhouse import read_models
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Payouts to merchants' bank accounts (simulated bank rail).")
err = Console(stderr=True, soft_wrap=True)
MAX_SHOWN = 20


def day_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: a date as YYYY-MM-DD") from None


@app.command("run")
def run(
    date_: str = typer.Option(
        ..., "--date", help="Post every send and bank answer due by the end of this day (event time, UTC)"
    ),
    seed: int = typer.Option(0, help="The simulated bank's seed (answers are deterministic by seed and payout)"),
    fail_per_mille: int = typer.Option(20, min=0, max=1000, help="Share of payouts the bank returns"),
    closed: list[str] = typer.Option(
        [], "--closed-account", help="A merchant whose bank account is closed (repeatable)"
    ),
) -> None:
    """Idempotent: a second run for the same day posts nothing. Exits 1 if posting failed."""
    from streams.jobs.payouts import payouts_day
    from streams.jobs.settle import SettleError

    day, settings = day_of(date_), get_settings()
    bank = BankRail(seed=seed, fail_per_mille=fail_per_mille, closed_accounts=frozenset(closed))
    client = read_models("payouts")
    try:
        result = payouts_day(settings, client, day, bank)
    except (ClickHouseError, SettleError, MissingTopic, TimeoutError) as e:
        err.print(f"[red]payouts:[/red] {e}")
        raise typer.Exit(1) from None
    finally:
        client.close()
    table = Table("payout_id", "merchant", "amount", "day", "status", "reason")
    for s in result.run.statuses[-MAX_SHOWN:]:
        table.add_row(
            s.payout_id, s.merchant_id, f"{s.amount_minor} {s.currency}", s.day.isoformat(), s.status, s.failure_reason
        )
    Console().print(table)
    r = result.run
    err.print(
        f"payouts as of {day}: {r.count('sent')} in transit, {r.count('paid')} paid, {r.count('failed')} failed "
        f"and reversed; {result.posted_entries} new entr(ies) posted"
    )
    if result.skipped_records:
        err.print(
            f"[yellow]payouts:[/yellow] {result.skipped_records} undecodable record(s) left out (run `paystream audit`)"
        )
