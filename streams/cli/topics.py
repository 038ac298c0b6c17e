"""`paystream topics ensure`: create the declared topics and align their configs."""

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
