"""`paystream keys`: create, rotate and list the keys under PAYSTREAM_KEYS_DIR.

Nothing here prints key material: only ids, kinds, creation times, which key is
active, and public keys (signing and card intake, which are meant to be shared).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from connectors.vault.keys import KINDS, FileKeyStore, KeyInfo, KeyStoreError
from streams.settings import get_settings

app = typer.Typer(no_args_is_help=True, help="Key management: vault master, token HMAC, event signing, webhook secrets, card intake.")
err = Console(stderr=True, soft_wrap=True)  # paths and key ids stay on one line


def _store() -> FileKeyStore:
    try:
        return FileKeyStore(get_settings().keys_dir)
    except KeyStoreError as e:
        err.print(f"[red]keys:[/red] {e}")
        raise typer.Exit(1) from None


def _doc(info: KeyInfo) -> dict[str, object]:
    return {"key_id": info.key_id, "kind": info.kind, "created": info.created.isoformat(), "active": info.active}


@app.command("init")
def init() -> None:
    """Create a first key of every kind that has none (idempotent)."""
    store = _store()
    before = {i.key_id for i in store.keys()}
    created = [i.key_id for i in store.init() if i.key_id not in before]
    err.print(f"keys: created {', '.join(created)}" if created else "keys: every kind has an active key; nothing created")


@app.command("rotate")
def rotate(kind: str = typer.Option(..., "--kind", help=f"One of: {', '.join(KINDS)}")) -> None:
    """Add a new active key of KIND; older keys stay for decrypt/verify only.
    Running workers pick the new key up at their next start."""
    store = _store()
    try:
        info = store.rotate(kind)
    except KeyStoreError as e:
        err.print(f"[red]keys rotate:[/red] {e}")
        raise typer.Exit(2) from None
    err.print(f"keys: {info.key_id} is now the active {kind} key")


@app.command("list")
def list_keys(as_json: bool = typer.Option(False, "--json", help="One JSON object per line")) -> None:
    """Key ids, kinds, creation times and which one is active (never material)."""
    infos = _store().keys()
    if as_json:
        for info in infos:
            print(json.dumps(_doc(info)))
        return
    table = Table("key id", "kind", "created")
    table.add_column("active", no_wrap=True)  # the created time folds first on a narrow terminal
    for info in infos:
        table.add_row(info.key_id, info.kind, info.created.isoformat(timespec="seconds"), "yes" if info.active else "verify/decrypt only")
    Console().print(table)


@app.command("public")
def public() -> None:
    """Print the Ed25519 public keys of event signatures as JSON: {key_id: base64}."""
    keys = _store().public_keys()
    print(json.dumps({kid: base64.b64encode(raw).decode() for kid, raw in keys.items()}))


@app.command("intake-public")
def intake_public() -> None:
    """Print the active card-intake public key as JSON {key_id, public_key (base64)}:
    the file producers seal cards to (PAYSTREAM_INTAKE_PUBLIC_KEY_FILE)."""
    from connectors.vault.intake import active_sealer, public_key_doc

    try:
        sealer = active_sealer(_store())
    except KeyStoreError as e:
        err.print(f"[red]keys intake-public:[/red] {e}")
        raise typer.Exit(1) from None
    print(json.dumps(public_key_doc(sealer)))


@app.command("vault-import")
def vault_import(path: Path = typer.Argument(..., exists=True, file_okay=False,
                                            help="A local vault of an earlier version: <data_dir>/vault")) -> None:
    """Publish every card of a local vault file onto the card-vault topic, unchanged
    (the same envelopes), so any worker can reveal them (docs/security.md)."""
    from connectors.kafka import admin
    from connectors.vault.topic import import_local_vault
    from connectors.vault.vault import VaultError
    from streams.settings import client_config
    from streams.topics import declared_topics, topic_names

    settings = get_settings()
    conn, topic = client_config(settings), topic_names(settings).card_vault
    try:
        admin.ensure_topics(conn, [spec for spec in declared_topics(settings) if spec.name == topic])
        count = import_local_vault(path, conn, topic, settings.partitions)
    except VaultError as e:
        err.print(f"[red]keys vault-import:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"keys: {count} sealed card(s) published to {topic_names(settings).card_vault}")


@app.command("rewrap")
def rewrap() -> None:
    """Re-wrap every vault data key under the active vault-master key (after
    `keys rotate --kind vault-master` and a restart of the workers): the re-wrapped
    records are republished on the card-vault topic under the same tokens. Workers may
    keep running."""
    from connectors.kafka.clients import MissingTopic
    from connectors.vault.topic import rewrap_topic
    from connectors.vault.vault import VaultError
    from streams.settings import client_config
    from streams.topics import topic_names

    store = _store()
    settings = get_settings()
    try:
        report = rewrap_topic(client_config(settings), topic_names(settings).card_vault, settings.partitions, store)
    except (VaultError, KeyStoreError, MissingTopic, TimeoutError) as e:
        err.print(f"[red]keys rewrap:[/red] {e}")
        raise typer.Exit(1) from None
    err.print(f"keys: rewrapped {report.rewrapped} data key(s) under {report.active_key_id}; {report.current} already were")
    print(json.dumps({"master_key_records": report.in_use}))
