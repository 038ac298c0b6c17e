"""`paystream balance`, `audit` and `replay`: the books and the event store, read
from Kafka alone (topics and table changelogs), never from a worker's RocksDB.

- balance: the balances table's records in the tables' changelog (compacted: the
  latest value per key is the balance), one account or every account under a prefix.
- audit: payment-events and ledger-entries from offset 0 through streams/domain/audit.py
  (signatures, chain links, invariants 1-3, every entry against its event).
- replay: the same topics folded into fresh balances and chain heads;
  `--verify` compares them with the live stores' changelogs.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from connectors.kafka.clients import MissingTopic
from connectors.vault.keys import KeyStoreError
from schemas.money import format_minor
from streams.client.books import (
    book_ends,
    book_records,
    live_balances,
    live_chain_heads,
    public_keys,
)
from streams.domain.audit import ReplayError, audit, compare, rebuild
from streams.settings import Settings, get_settings
from streams.topics import topic_names

out = Console()
err = Console(stderr=True, soft_wrap=True)


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
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
    )


@_readable
def balance(
    account: str = typer.Argument(
        ..., help="An account (merchant:m_acme:pending) or a prefix (house:clearing, merchant:m_acme)"
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line"),
) -> None:
    """Balances of an account, or of every account under a prefix, per currency (signed: debit positive)."""
    settings = get_settings()
    rows = sorted(
        (k, v) for k, v in live_balances(settings).items() if k[0] == account or k[0].startswith(account + ":")
    )
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
        report = audit(
            book_records(settings, lambda: bar.advance(task), ends),
            keys,
            events_topic=names.events,
            entries_topic=names.ledger,
        )
    doc = {
        "ok": report.ok,
        "records": report.records,
        "events": report.events,
        "entries": report.entries,
        "signatures_verified": report.signatures_verified,
        "events_authenticated": report.events_authenticated,
        "partitions": report.partitions,
        "payments": report.payments,
        "duplicate_entries": report.duplicate_entries,
        "accounts": report.accounts,
        "totals": dict(report.totals),
        "failures_total": report.failures_total,
        "failures": [str(f) for f in report.failures],
    }
    if as_json:
        out.print(json.dumps(doc), soft_wrap=True)
    else:
        verdict = (
            "[green]audit ok[/green]" if report.ok else f"[red]audit FAILED[/red] ({report.failures_total} failures)"
        )
        out.print(
            f"{verdict}: {report.events} events ({report.events_authenticated} authenticated by "
            f"{report.signatures_verified} block signatures) in {report.partitions} partitions, "
            f"{report.entries} entries, {report.payments} payments, {report.accounts} non-zero balances"
        )
        for failure in report.failures[:20]:
            out.print(f"  {failure}", soft_wrap=True)
    if not report.ok:
        raise typer.Exit(1)


@_readable
def replay(
    verify: bool = typer.Option(
        False, "--verify", help="Compare with the live balances and chain heads; exit 1 on a difference"
    ),
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
            rebuilt = rebuild(
                book_records(settings, lambda: bar.advance(task), ends),
                events_topic=names.events,
                entries_topic=names.ledger,
            )
    except ReplayError as e:
        err.print(f"[red]replay stopped:[/red] {e} (run paystream audit)")
        raise typer.Exit(1) from None
    elapsed_s = max(time.monotonic() - started, 1e-9)
    differences = compare(live_balances(settings), live_chain_heads(settings), rebuilt) if verify else []
    doc = {
        "events": rebuilt.events,
        "entries": rebuilt.entries,
        "duplicate_entries": rebuilt.duplicate_entries,
        "accounts": len(rebuilt.balances),
        "partitions": len(rebuilt.chain_heads),
        "elapsed_s": round(elapsed_s, 3),
        "records_per_s": round((rebuilt.events + rebuilt.entries) / elapsed_s),
        "verified": verify,
        "differences": [str(d) for d in differences],
    }
    if as_json:
        out.print(json.dumps(doc), soft_wrap=True)
    else:
        out.print(
            f"replayed {rebuilt.events} events and {rebuilt.entries} entries in {elapsed_s:.1f}s "
            f"({doc['records_per_s']} records/s): {len(rebuilt.balances)} balances, {len(rebuilt.chain_heads)} "
            "chain heads"
        )
        if verify:
            out.print(
                "[green]matches the live stores[/green]"
                if not differences
                else f"[red]{len(differences)} differences[/red]"
            )
            for d in differences[:20]:
                out.print(f"  {d}", soft_wrap=True)
    if differences:
        raise typer.Exit(1)
