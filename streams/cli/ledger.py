"""`paystream balance`, `audit` and `replay`: the books and the event store, read
from Kafka alone (topics and table changelogs), never from a worker's RocksDB.

- balance: the balances table's changelog (compacted: the latest value per key is
  the balance), one account or every account under a prefix.
- audit: payment-events and ledger-entries from offset 0 through streams/domain/audit.py
  (signatures, chain links, invariants 1-3, every entry against its event).
- replay: the same topics folded into fresh balances and chain heads;
  `--verify` compares them with the live stores' changelogs.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Iterator
from typing import Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from connectors.kafka.clients import MissingTopic, end_offsets, read_to_end, require_topics, start_offsets
from connectors.vault.keys import FileKeyStore, KeyStoreError
from schemas.codec import Codec, DecodeError
from schemas.money import format_minor
from streams.domain.audit import LogStart, ReplayError, audit, compare, rebuild
from streams.domain.chain import ChainHead
from streams.domain.ledger import decode_balance, parse_balance_key
from streams.stages.payments import chain_key
from streams.settings import Settings, client_config, get_settings
from streams.topics import changelog_topic, topic_names

out = Console()
err = Console(stderr=True, soft_wrap=True)
CODECS = {"events": Codec("PaymentEvent"), "ledger": Codec("LedgerEntry")}


def _decoded(codec: Codec, value: bytes | None) -> Any:
    try:
        return codec.decode(value or b"")
    except DecodeError as e:
        return e  # the audit reports it where it is


def book_ends(settings: Settings) -> dict[tuple[str, int], int]:
    """The end offsets of payment-events and ledger-entries now: what a snapshot reads up to."""
    names = topic_names(settings)
    return _per_partition(settings, [names.events, names.ledger], end_offsets)


def _per_partition(settings: Settings, topics: list[str], offsets: Any) -> dict[tuple[str, int], int]:
    """`offsets(consumer, topic, partitions)` (end_offsets, start_offsets) of every
    partition of `topics`, by (topic, partition)."""
    from confluent_kafka import Consumer

    c = Consumer({**client_config(settings), "group.id": "paystream-sizer", "log_level": 3})
    try:
        require_topics(c, topics)
        return {(t, p): o for t in topics for p, o in offsets(c, t, settings.partitions).items()}
    finally:
        c.close()


def book_records(settings: Settings, on_record: Any = None,
                 ends: dict[tuple[str, int], int] | None = None) -> Iterator[tuple[str, int, int, Any]]:
    """(topic, partition, offset, record or DecodeError) of payment-events and ledger-entries,
    up to `ends` (default: the end offsets when reading starts); first a LogStart for
    each partition whose log no longer starts at offset 0 (they are kept forever)."""
    names = topic_names(settings)
    codec_of = {names.events: CODECS["events"], names.ledger: CODECS["ledger"]}
    for (topic, partition), start in sorted(_per_partition(settings, list(codec_of), start_offsets).items()):
        if start > 0:
            yield topic, partition, start, LogStart()
    for msg in read_to_end(client_config(settings), list(codec_of), settings.partitions, ends=ends):
        if on_record is not None:
            on_record()
        yield msg.topic(), msg.partition(), msg.offset(), _decoded(codec_of[msg.topic()], msg.value())


def live_balances(settings: Settings) -> dict[tuple[str, str], int]:
    """The balances table as its changelog holds it: the last value per key and partition (a
    tombstone is zero), summed over the partitions: an account can live in several shards
    (a split payment credits its sellers in the platform's shard, a hot merchant's sub-ledgers)."""
    latest: dict[tuple[int, bytes], bytes | None] = {}
    for msg in read_to_end(client_config(settings), [changelog_topic(settings.app_id, "ledger-balances")], settings.partitions):
        latest[(msg.partition(), msg.key())] = msg.value()
    total: dict[tuple[str, str], int] = {}
    for (_, key), value in latest.items():
        if value is not None:
            account = parse_balance_key(key)
            total[account] = total.get(account, 0) + decode_balance(value)
    return {k: v for k, v in total.items() if v}


def live_chain_heads(settings: Settings) -> dict[int, ChainHead]:
    heads: dict[int, ChainHead] = {}
    keys = {chain_key(p): p for p in range(settings.partitions)}
    for msg in read_to_end(client_config(settings), [changelog_topic(settings.app_id, "payments-timers")], settings.partitions):
        p = keys.get(msg.key())
        if p is not None and msg.value() is not None:
            heads[p] = ChainHead.from_bytes(p, msg.value())
    return heads


def public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every signing key's public half, by key id: what the audit verifies against."""
    return {key_id: Ed25519PublicKey.from_public_bytes(b) for key_id, b in FileKeyStore(settings.keys_dir).public_keys().items()}


def _public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    try:
        return public_keys(settings)
    except KeyStoreError as e:
        err.print(f"[red]keys:[/red] {e}")
        raise typer.Exit(2) from None


def _readable(command: Any) -> Any:
    """A missing topic is a clear error and exit code 2, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MissingTopic as e:
            err.print(f"[red]{e}[/red]")
            raise typer.Exit(2) from None

    return wrapper


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=err, transient=True)


@_readable
def balance(
    account: str = typer.Argument(..., help="An account (merchant:m_acme:pending) or a prefix (house:clearing, merchant:m_acme)"),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Balances of an account, or of every account under a prefix, per currency (signed: debit positive)."""
    settings = get_settings()
    rows = sorted((k, v) for k, v in live_balances(settings).items() if k[0] == account or k[0].startswith(account + ":"))
    totals: dict[str, int] = {}
    for (_, currency), amount in rows:
        totals[currency] = totals.get(currency, 0) + amount
    if as_json:
        for (acct, currency), amount in rows:
            out.print(json.dumps({"account": acct, "currency": currency, "balance_minor": amount}), soft_wrap=True)
        return
    table = Table("account", "currency", "balance_minor", "balance")
    for (acct, currency), amount in rows:
        table.add_row(acct, currency, str(amount), format_minor(amount, currency))
    if len(rows) > 1:
        for currency, amount in sorted(totals.items()):
            table.add_row(f"[bold]total {account}[/bold]", currency, str(amount), format_minor(amount, currency))
    out.print(table if rows else f"no balance under {account!r}")


@_readable
def audit_cmd(as_json: bool = typer.Option(False, "--json", help="The report as JSON")) -> None:
    """Verify the event store and the books from the topics alone; exit 1 naming the first broken record."""
    settings = get_settings()
    names = topic_names(settings)
    keys = _public_keys(settings)
    ends = book_ends(settings)
    with _progress() as bar:
        task = bar.add_task("audit", total=sum(ends.values()))
        report = audit(book_records(settings, lambda: bar.advance(task), ends), keys,
                       events_topic=names.events, entries_topic=names.ledger)
    doc = {
        "ok": report.ok, "records": report.records, "events": report.events, "entries": report.entries,
        "signatures_verified": report.signatures_verified, "events_authenticated": report.events_authenticated,
        "partitions": report.partitions, "payments": report.payments,
        "duplicate_entries": report.duplicate_entries, "accounts": report.accounts, "totals": dict(report.totals),
        "failures_total": report.failures_total, "failures": [str(f) for f in report.failures],
    }
    if as_json:
        out.print(json.dumps(doc), soft_wrap=True)
    else:
        verdict = "[green]audit ok[/green]" if report.ok else f"[red]audit FAILED[/red] ({report.failures_total} failures)"
        out.print(f"{verdict}: {report.events} events ({report.events_authenticated} authenticated by {report.signatures_verified} block signatures) in {report.partitions} partitions, "
                  f"{report.entries} entries, {report.payments} payments, {report.accounts} non-zero balances")
        for failure in report.failures[:20]:
            out.print(f"  {failure}", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@_readable
def replay(
    verify: bool = typer.Option(False, "--verify", help="Compare with the live balances and chain heads; exit 1 on a difference"),
    as_json: bool = typer.Option(False, "--json", help="The result as JSON"),
) -> None:
    """Rebuild balances and chain heads from offset 0 into fresh stores; report events/s."""
    settings = get_settings()
    started = time.monotonic()
    try:
        with _progress() as bar:
            ends = book_ends(settings)
            task = bar.add_task("replay", total=sum(ends.values()))
            names = topic_names(settings)
            rebuilt = rebuild(book_records(settings, lambda: bar.advance(task), ends),
                              events_topic=names.events, entries_topic=names.ledger)
    except ReplayError as e:
        err.print(f"[red]replay stopped:[/red] {e} (run paystream audit)")
        raise typer.Exit(1) from None
    elapsed_s = max(time.monotonic() - started, 1e-9)
    differences = compare(live_balances(settings), live_chain_heads(settings), rebuilt) if verify else []
    doc = {"events": rebuilt.events, "entries": rebuilt.entries, "duplicate_entries": rebuilt.duplicate_entries,
           "accounts": len(rebuilt.balances), "partitions": len(rebuilt.chain_heads), "elapsed_s": round(elapsed_s, 3),
           "records_per_s": round((rebuilt.events + rebuilt.entries) / elapsed_s), "verified": verify,
           "differences": [str(d) for d in differences]}
    if as_json:
        out.print(json.dumps(doc), soft_wrap=True)
    else:
        out.print(f"replayed {rebuilt.events} events and {rebuilt.entries} entries in {elapsed_s:.1f}s "
                  f"({doc['records_per_s']} records/s): {len(rebuilt.balances)} balances, {len(rebuilt.chain_heads)} chain heads")
        if verify:
            out.print("[green]matches the live stores[/green]" if not differences else f"[red]{len(differences)} differences[/red]")
            for d in differences[:20]:
                out.print(f"  {d}", soft_wrap=True)
    if differences:
        raise typer.Exit(1)
