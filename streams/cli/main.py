"""`paystream`: one CLI for every job, its commands grouped by what a person is doing.

Each command module imports its work when it runs, not at start: loading every room
(Kafka, ClickHouse, FastAPI, the fraud model) takes ~3x as long as `paystream --help`
needs (2.4 s against 0.7 s on the reference box), so the lazy imports in streams/cli/
are deliberate; everywhere else imports sit at the top of the module."""

from __future__ import annotations

import sys
from collections.abc import Callable

import click
import typer
from rich.console import Console
from typer.core import TyperGroup

from streams.cli import (
    api,
    bench,
    cases,
    chaos,
    clickhouse,
    clock,
    demo,
    fraud,
    fx,
    kafka,
    keys,
    ledger,
    merchants,
    payments,
    payouts,
    providers,
    readmodels,
    reconcile,
    registry,
    reliability,
    sanctions,
    scheduler,
    settle,
    sink,
    subscriptions,
    topics,
    webhooks,
    worker,
)
from streams.settings import get_settings


class _Group(TyperGroup):
    """Keeps the sub-command's own arguments for `configure`: click has consumed them
    by the time the group callback runs, and `<command> --help` needs no registry."""

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name, cmd, rest = super().resolve_command(ctx, args)
        ctx.meta["paystream.command_args"] = rest
        return name, cmd, rest


app = typer.Typer(
    cls=_Group,
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="markdown",
    help="paystream: a Kafka-native payment pipeline. Every command says more under `--help`.",
)

# The commands, by what a person is doing: (panel, name, a group's Typer or a command's function).
PIPELINE, PAYMENTS, BOOKS, READ_MODELS, FRAUD, OPERATIONS, MEASURE = (
    "Run the pipeline",
    "Payments and merchants",
    "Ledger and audit",
    "Read models",
    "Fraud and compliance",
    "Operations",
    "Measure and break",
)
COMMANDS: tuple[tuple[str, str, typer.Typer | Callable[..., None]], ...] = (
    (PIPELINE, "kafka", kafka.app),
    (PIPELINE, "registry", registry.app),
    (PIPELINE, "topics", topics.app),
    (PIPELINE, "worker", worker.worker),
    (PIPELINE, "sink", sink.sink),
    (PIPELINE, "api", api.serve),
    (PIPELINE, "webhooks", webhooks.app),
    (PIPELINE, "scheduler", scheduler.app),
    (PIPELINE, "demo", demo.demo),
    (PAYMENTS, "produce", payments.produce),
    (PAYMENTS, "outcomes", payments.outcomes),
    (PAYMENTS, "merchants", merchants.app),
    (PAYMENTS, "subscriptions", subscriptions.app),
    (PAYMENTS, "clock", clock.app),
    (PAYMENTS, "api-keys", api.app),
    (BOOKS, "balance", ledger.balance),
    (BOOKS, "audit", ledger.audit_cmd),
    (BOOKS, "replay", ledger.replay),
    (BOOKS, "settle", settle.settle),
    (BOOKS, "payouts", payouts.app),
    (BOOKS, "fx", fx.app),
    (BOOKS, "reconcile", reconcile.reconcile),
    (BOOKS, "providers", providers.app),
    (READ_MODELS, "sql", clickhouse.sql),
    (READ_MODELS, "clickhouse", clickhouse.app),
    (READ_MODELS, "readmodels", readmodels.app),
    (FRAUD, "fraud", fraud.app),
    (FRAUD, "sanctions", sanctions.app),
    (FRAUD, "cases", cases.app),
    (OPERATIONS, "keys", keys.app),
    (OPERATIONS, "reliability", reliability.app),
    (MEASURE, "bench", bench.bench),
    (MEASURE, "chaos", chaos.chaos),
)
for panel, name, target in COMMANDS:
    if isinstance(target, typer.Typer):
        app.add_typer(target, name=name, rich_help_panel=panel)
    else:
        app.command(name, rich_help_panel=panel)(target)

err = Console(stderr=True)

# Commands that encode and decode no record: they run without the Schema Registry
# (`registry up` starts it). Every other command is a process that may write or read
# a topic, and switches its codecs at start (a new command does by default).
NO_CODEC_COMMANDS = frozenset({"kafka", "registry", "topics", "keys", "clickhouse", "sql", "api-keys"})


@app.callback()
def configure(ctx: typer.Context) -> None:
    """paystream: a Kafka-native payment pipeline. Every command says more under `--help`."""
    if (
        ctx.resilient_parsing
        or ctx.invoked_subcommand in NO_CODEC_COMMANDS
        or "--help" in ctx.meta.get("paystream.command_args", ())
    ):
        return
    from schemas.codec import RegistryError
    from streams.client.schema_registry import configure_codecs

    settings = get_settings()
    if settings.schema_registry_url is None:
        return
    try:
        configure_codecs(settings)
    except RegistryError as e:
        err.print(f"[red]Schema Registry:[/red] {e}")
        raise typer.Exit(1) from None


def main() -> None:  # `python -m streams.cli.main`
    app()


if __name__ == "__main__":
    sys.exit(main())
