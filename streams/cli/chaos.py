"""`paystream chaos`: break the pipeline on purpose and prove nothing was lost or doubled."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from streams.client.broker import ensure_broker
from streams.settings import get_settings

err = Console(stderr=True)


def chaos(
    commands: int = typer.Option(5_000, min=10, max=10_000_000, help="Commands to stream (demo traffic, bad input mixed in)"),
    kills: int = typer.Option(2, min=0, max=1_000, help="kill -9 a random worker this many times (restarted after 1 s)"),
    broker_restarts: int = typer.Option(0, min=0, max=100, help="Restart the embedded broker this many times"),
    broker_kills: int = typer.Option(0, min=0, max=100, help="kill -9 a random node of the embedded cluster this many times"
                                     " (PAYSTREAM_KAFKA_BROKERS=3); it comes back once the other two served a while"),
    workers: int = typer.Option(1, min=1, max=8, help="Worker processes"),
    seed: int = typer.Option(7, help="Seed of the traffic and of the fault points"),
    json_file: Path | None = typer.Option(None, "--json", help="Write the figures here as JSON"),
) -> None:
    """Break the pipeline on purpose and prove nothing was lost or doubled.

    Kill -9 workers, restart the broker or kill -9 cluster nodes, then prove from the topics that nothing was lost or
    doubled and the books balance. Exit 1 if anything is off."""

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from streams.harness.chaos import run_chaos, to_json
    from streams.logs import setup_logging

    setup_logging("warning", fmt="text")
    settings = get_settings()
    if broker_kills and not (settings.kafka_embedded and settings.kafka_brokers >= 3):
        err.print("[red]--broker-kills needs the embedded cluster:[/red] set PAYSTREAM_KAFKA_BROKERS=3 (`paystream kafka up --brokers 3`)")
        raise typer.Exit(2)
    if broker_restarts and settings.kafka_brokers > 1:
        err.print("[red]--broker-restarts restarts the single embedded broker:[/red] on a cluster use --broker-kills")
        raise typer.Exit(2)
    ensure_broker(settings)
    with Progress(TextColumn("[bold]chaos"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err) as bar:
        task = bar.add_task("answered", total=None)
        figures = run_chaos(settings, commands=commands, kills=kills, broker_restarts=broker_restarts, workers=workers,
                            seed=seed, broker_kills=broker_kills, on_progress=lambda done, total: bar.update(task, completed=done, total=total))
    doc = to_json(figures)
    text = json.dumps(doc, indent=2)
    if json_file is not None:
        json_file.write_text(text + "\n")
    print(text)
    if not figures.ok:
        raise typer.Exit(1)
