"""`paystream clock tick`: move the event-time clock by hand (the scheduler does it on its own)."""

from __future__ import annotations

import typer
from rich.console import Console

from streams.cli.common import time_of
from streams.client.publish import publish_tick
from streams.settings import get_settings

err = Console(stderr=True, soft_wrap=True)


app = typer.Typer(no_args_is_help=True, help="The event-time clock the subscriptions stage is driven by.")


@app.command("tick")
def tick(at: str = typer.Option(..., help="The event time the clock reached, ISO.")) -> None:
    """Publish a tick on every partition of clock: subscriptions due by then are charged."""
    when = time_of(at, "clock tick")
    try:
        publish_tick(get_settings(), when)
    except Exception as e:
        err.print(f"[red]clock tick:[/red] {e}")
        raise typer.Exit(1) from None
    typer.echo(f"tick {when.isoformat()}")
