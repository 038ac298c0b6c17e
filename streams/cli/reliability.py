"""`paystream reliability`: issue 11's measures beside the chaos run (docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Reliability measures: table recovery time.")
err = Console(stderr=True, soft_wrap=True)


@app.command()
def recovery(
    keys: int = typer.Option(100_000, min=1, max=10_000_000, help="Live payments-dedup keys in the tables' changelog"),
    versions: int = typer.Option(1, min=1, max=20, help="Records per key (1: a compacted changelog)"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the figures here as JSON"),
) -> None:
    """Time a worker's start to ready when its tables come back from the changelogs, at KEYS live keys."""
    from streams.client.broker import ensure_broker
    from streams.harness.recovery import MAX_RECORDS, RecoveryError, measure, to_json
    from streams.logs import setup_logging

    if keys * versions > MAX_RECORDS:
        raise typer.BadParameter(f"keys x versions must be at most {MAX_RECORDS:,}", param_hint="--versions")
    setup_logging("warning", fmt="text")
    settings = get_settings()
    ensure_broker(settings)
    try:
        figures = measure(settings, keys=keys, versions=versions)
    except RecoveryError as e:
        err.print(f"[red]recovery measure failed:[/red] {e}")
        raise typer.Exit(1) from None
    text = json.dumps(to_json(figures), indent=2)
    if json_file is not None:
        json_file.write_text(text + "\n")
    print(text)
