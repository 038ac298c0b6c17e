"""`paystream fx`: the FX rates `paystream settle` converts payouts with, on the
compacted fx-rates topic keyed by pair ('EUR/USD'): the latest quote per pair
survives compaction, and every entry that used a rate stores it."""

from __future__ import annotations

from datetime import UTC, datetime

import typer
from rich.console import Console
from rich.table import Table

from schemas.times import from_ms
from streams.domain.fx import FxError, FxRate, parse_rate, rate_to_record
from streams.settings import client_config, get_settings
from streams.topics import topic_names

app = typer.Typer(no_args_is_help=True, help="FX rates for settlement in another currency.")
err = Console(stderr=True, soft_wrap=True)


@app.command("set")
def set_(
    base: str,
    quote: str,
    rate: str,
    as_of: str = typer.Option("", help="When the rate was quoted, ISO 8601 (default: now)"),
    source: str = typer.Option("treasury", help="Who quoted it"),
) -> None:
    """Publish RATE (QUOTE major units per BASE major unit, a plain decimal) for BASE/QUOTE."""
    from connectors.kafka.clients import command_producer
    from streams.jobs.settle import RATE_CODEC

    try:
        at = datetime.fromisoformat(as_of) if as_of else datetime.now(UTC)  # the operator's command is the event
        if at.tzinfo is None:
            raise ValueError("as_of needs a timezone (e.g. +00:00)")
        fx = FxRate(base.upper(), quote.upper(), parse_rate(rate), from_ms(int(at.timestamp() * 1000)), source)
    except (FxError, ValueError, AssertionError) as e:
        err.print(f"[red]fx set:[/red] {e or 'an ISO 4217 pair of two different currencies'}")
        raise typer.Exit(2) from None
    s = get_settings()
    producer = command_producer(client_config(s))
    producer.produce(
        topic_names(s).fx_rates, key=fx.key.encode(), value=RATE_CODEC.encode(rate_to_record(fx), check=True)
    )
    if producer.flush(30) != 0:
        err.print("[red]fx set:[/red] the broker did not acknowledge the rate in 30 s")
        raise typer.Exit(1)
    err.print(f"fx: {fx.key} = {fx.rate_text} as of {fx.as_of.isoformat()}")


@app.command("list")
def list_() -> None:
    """The rates on the topic, latest per pair last."""
    from streams.jobs.settle import read_rates

    book, skipped = read_rates(get_settings())
    table = Table("pair", "rate", "as_of", "source")
    for r in book.all():
        table.add_row(r.key, r.rate_text, r.as_of.isoformat(), r.source)
    Console().print(table)
    if skipped:
        err.print(f"[yellow]fx:[/yellow] {skipped} unusable record(s) skipped")
