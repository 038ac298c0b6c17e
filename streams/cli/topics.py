"""`paystream topics ensure`: create the declared topics and align their configs;
`paystream topics migrate-changelogs`: the per-table changelogs of before into the one the tables share."""

from __future__ import annotations

import typer
from rich.console import Console

from connectors.kafka import admin
from streams.settings import client_config, get_settings

err = Console(stderr=True, soft_wrap=True)


app = typer.Typer(no_args_is_help=True, help="Topic administration.")


@app.command("ensure")
def topics_ensure() -> None:
    """Create every declared topic that is missing and set existing topics' configs to
    their specs where nothing is lost (never partitions, never cleanup.policy, never a
    shorter retention). Run as the admin: workers only create."""
    from streams.topics import declared_topics

    settings = get_settings()
    specs = declared_topics(settings)
    try:
        created = admin.ensure_topics(client_config(settings), specs)
        altered = admin.align_topic_configs(client_config(settings), specs)
    except admin.TopicError as e:
        err.print(f"[red]topics ensure:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"topics: created {len(created)}: {', '.join(created) or '-'}")
    err.print(f"topics: configs set {len(altered)}: {'; '.join(altered) or '-'}")


@app.command("migrate-changelogs")
def topics_migrate_changelogs() -> None:
    """Carry the tables' state from the per-table changelogs of earlier versions
    ("<app id>-<table>-changelog") into the one changelog every table now shares: the
    latest value of every key, partition for partition, one transaction per partition.
    Run with every worker stopped; running it again is harmless. docs/scaling.md."""
    from confluent_kafka import KafkaException
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from streams.worker.changelogs import MigrationError, PartitionCopied, migrate

    settings = get_settings()
    with Progress(
        TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn(), console=err
    ) as progress:
        bar = progress.add_task("changelog partitions", total=settings.partitions)

        def copied(done: PartitionCopied) -> None:
            keys = sum(done.records.values())
            progress.update(bar, advance=1, description=f"partition {done.partition}: {keys} keys")

        try:
            totals = migrate(settings, copied)
        except (MigrationError, admin.TopicError) as e:
            err.print(f"[red]topics migrate-changelogs:[/red] {e}")
            raise typer.Exit(1) from None
        except KafkaException as e:
            err.print(f"[red]topics migrate-changelogs:[/red] the broker refused: {e.args[0]}")
            raise typer.Exit(1) from None
    if not totals:
        err.print("no per-table changelogs found: nothing to migrate")
        return
    for table, n in sorted(totals.items()):
        err.print(f"{table}: {n} keys")
    err.print(f"migrated {sum(totals.values())} keys of {len(totals)} tables")
