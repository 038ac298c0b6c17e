"""What the command modules share: opening the read models, parsing a day, each failing
with a clear message and an exit code."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import typer
from rich.console import Console

from connectors.clickhouse.client import ClickHouseError, connect
from streams.settings import get_settings

err = Console(stderr=True, soft_wrap=True)


def day_of(value: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r}: a date as YYYY-MM-DD") from None


def read_models(job: str) -> Any:
    """The configured read-model database (it must exist: `paystream clickhouse
    migrate` creates it), or exit 1 saying why, prefixed with the job's name."""
    settings = get_settings()
    try:
        return connect(settings.clickhouse_url, settings.clickhouse_database, create=False)
    except ClickHouseError as e:
        err.print(f"[red]{job}:[/red] {e}")
        raise typer.Exit(1) from None


def time_of(value: str | None, what: str) -> datetime:
    """An ISO time (UTC if no offset); none: now (the operator's command is the event)."""
    if value is None:
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        err.print(f"[red]{what}:[/red] {value!r} is not an ISO 8601 time")
        raise typer.Exit(2) from None
    return at if at.tzinfo is not None else at.replace(tzinfo=UTC)


MAX_SHOWN = 50  # discrepancies listed on the terminal; the table holds them all
