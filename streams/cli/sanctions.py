"""`paystream sanctions publish|list|screen`: the sanctions list on the compacted
`sanctions-list` topic (key: entry uid, SanctionsEntry Avro; a tombstone delists).
`publish` moves the topic to a list file's content (the shipped one by default): it
writes only what changed and a tombstone per uid the file no longer lists, so
publishing the same file twice writes nothing. Workers pick the changes up within
seconds (streams/worker/feeds.py)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from streams.domain.sanctions import SHIPPED_LIST, THRESHOLD, SanctionsError, load_list

app = typer.Typer(no_args_is_help=True, help="The sanctions list: publish updates, list entries, screen a name.")
err = Console(stderr=True, soft_wrap=True)


@app.command()
def publish(
    file: Path = typer.Option(SHIPPED_LIST, help="A list file (format 1, docs/compliance.md)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print what would be written, write nothing."),
) -> None:
    """Publish FILE's entries: new and changed ones, and a tombstone per uid it no longer lists."""
    from connectors.kafka.clients import command_producer
    from streams.domain.sanctions import list_updates
    from streams.settings import client_config, get_settings
    from streams.topics import topic_names
    from streams.worker.feeds import ENTRY_CODEC, read_list

    try:
        target = load_list(file)
    except (OSError, SanctionsError) as e:
        err.print(f"[red]sanctions publish:[/red] {e}")
        raise typer.Exit(2) from None
    settings = get_settings()
    current, _ = read_list(settings)
    updates = list_updates({e.uid: e for e in current.entries()}, target)
    for uid, entry in updates:
        print(json.dumps({"uid": uid, "action": "delist" if entry is None else "list"}))
    if dry_run or not updates:
        err.print(f"{len(updates)} update(s){' (dry run)' if dry_run else ''}")
        return
    producer = command_producer(client_config(settings))
    topic = topic_names(settings).sanctions
    for uid, entry in updates:
        producer.produce(
            topic,
            key=uid.encode(),
            value=None if entry is None else ENTRY_CODEC.encode(entry.to_record(target.version), check=True),
        )
    if producer.flush(30) != 0:
        err.print("[red]sanctions publish:[/red] the broker did not acknowledge every record in 30 s")
        raise typer.Exit(1)
    err.print(f"{len(updates)} update(s) published, list version {target.version}")


@app.command("list")
def list_() -> None:
    """The list in force: the shipped list with the topic's updates applied."""
    from streams.settings import get_settings
    from streams.worker.feeds import read_list

    current, bad = read_list(get_settings())
    for e in current.entries():
        print(
            json.dumps(
                {
                    "uid": e.uid,
                    "kind": e.kind,
                    "name": e.name,
                    "aliases": list(e.aliases),
                    "programs": list(e.programs),
                    "country": e.country,
                },
                ensure_ascii=False,
            )
        )
    if bad:
        err.print(f"[yellow]{bad} record(s) could not be applied[/yellow]")


@app.command()
def screen(
    name: str,
    threshold: int = typer.Option(THRESHOLD, min=0, max=100, help="The hit threshold (0..100)."),
    offline: bool = typer.Option(False, "--offline", help="Against the shipped list only (no broker)."),
) -> None:
    """Screen NAME as the pipeline does: the best hit and its score, or a clear miss (exit 0 either way)."""
    if offline:
        current = load_list()
    else:
        from streams.settings import get_settings
        from streams.worker.feeds import read_list

        current, _ = read_list(get_settings())
    hit = current.screen(name, threshold=threshold)
    print(
        json.dumps(
            {"hit": False, "threshold": threshold}
            if hit is None
            else {
                "hit": True,
                "uid": hit.uid,
                "entry_name": hit.entry_name,
                "matched_name": hit.matched_name,
                "score": hit.score,
                "threshold": threshold,
                "programs": list(hit.programs),
            },
            ensure_ascii=False,
        )
    )
