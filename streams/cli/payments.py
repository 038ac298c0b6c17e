"""`paystream produce` and `paystream outcomes`: payment commands in from a file, their outcomes out."""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console

from streams.settings import client_config, get_settings

err = Console(stderr=True, soft_wrap=True)


def produce(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Commands as JSON lines"),
    tokenize: bool = typer.Option(
        False, "--tokenize", help="Store cards in the vault and publish tokens: no PAN enters Kafka"
    ),
) -> None:
    """Publish commands from a JSON-lines file.

    Every line is checked against the
    Avro schema first; if any line is bad nothing is published. Cards are sealed to
    the card-intake key (or, with --tokenize, tokenized): no PAN enters Kafka."""
    from connectors.vault.keys import KeyStoreError
    from connectors.vault.vault import VaultError
    from streams.client.publish import (
        CommandFileError,
        load_command_file,
        publish_commands,
        tokenize_in_vault,
    )

    settings = get_settings()
    try:
        records = load_command_file(file)
        if tokenize:
            records = tokenize_in_vault(settings, records)
        sent = publish_commands(settings, records)
    except (VaultError, KeyStoreError) as e:
        err.print(f"[red]produce:[/red] {e}; nothing published")
        raise typer.Exit(1) from None
    except CommandFileError as e:
        for line in e.errors:
            err.print(f"[red]{file}:{line}[/red]")
        err.print(f"produce: {len(e.errors)} bad line(s); nothing published")
        raise typer.Exit(2) from None
    err.print(f"produce: published {sent} command(s)")


def outcomes(
    count: int = typer.Option(10, min=1, help="Stop after this many outcomes"),
    timeout: float = typer.Option(30.0, min=0.1, help="Stop after this many seconds"),
    from_beginning: bool = typer.Option(True, help="Start at the earliest offset"),
) -> None:
    """Print committed outcomes (read_committed) as JSON lines."""
    from connectors.kafka.clients import committed_reader, poll_until
    from schemas.codec import Codec, DecodeError
    from schemas.jsonio import record_to_json
    from streams.topics import topic_names

    settings = get_settings()
    codec = Codec("PaymentOutcome")
    consumer = committed_reader(
        client_config(settings), [topic_names(settings).outcomes], from_beginning=from_beginning
    )
    seen = 0
    try:
        for msg in poll_until(consumer, time.monotonic() + timeout):
            try:
                print(record_to_json(codec.decode(msg.value())), flush=True)
            except DecodeError as e:
                err.print(f"skipping undecodable outcome at {msg.partition()}@{msg.offset()}: {e.reason}")
                continue
            seen += 1
            if seen >= count:
                break
    finally:
        consumer.close()
    if seen < count:
        err.print(f"outcomes: {seen} of {count} before the {timeout:g}s timeout")
        raise typer.Exit(1)
