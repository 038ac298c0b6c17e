"""The ledger's two steps for one message, as plain values. Pure: tested without Kafka.

DESIGN.md keys the ledger by merchant (house accounts sharded per ledger partition),
while payment events are keyed by payment. So posting takes two hops, each one
Kafka transaction:
  1. `post_event`: a payment event (partition of its payment) becomes one journal
     entry (streams/domain/ledger.py), sent to `ledger-entries` in the merchant's shard.
     Stateless: a redelivered event yields the same entry id.
  2. `apply_entry`: in its shard, an entry is applied once (dedup by entry id, kept
     `retention` by event time, then swept like the payments stage's) to the
     balances table, key by key, in the same transaction as the dedup record.
An entry is one record in one partition, so it is posted atomically; the balances
it moves live in that partition too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from schemas.times import span_ms
from streams.domain.ledger import (
    JournalEntry,
    PostingError,
    balance_key,
    decode_balance,
    deltas,
    encode_balance,
    entry_from_record,
    post,
    shard_for,
)
from streams.domain.timers import PAGE_MAX_BYTES, SWEEP_MAX, Timer, TimerStore

Get = Callable[[bytes], bytes | None]
APPLIED_MARK = b"1"


@dataclass(frozen=True)
class Posting:
    """Where an event's entry goes, or why it does not (None, None: it moves no money)."""

    entry: JournalEntry | None
    refused: PostingError | None = None


def post_event(event: Mapping[str, Any], shards: int) -> Posting:
    """The journal entry of a payment event, posted in its merchant's shard."""
    try:
        merchant = event["merchant_id"]
        if not isinstance(merchant, str) or not merchant:
            raise PostingError("invalid_merchant", "the event has no merchant id")
        return Posting(post(event, shard=shard_for(merchant, shards)))
    except PostingError as e:
        return Posting(None, e)
    except KeyError as e:
        return Posting(None, PostingError("malformed_event", f"missing field {e}"))


def applied_key(partition: int, entry_id: str) -> bytes:
    return f"{partition}/{entry_id}".encode()


@dataclass
class Applied:
    skipped: bool = False  # this entry was applied before (a redelivery)
    refused: PostingError | None = None  # the entry record is not a valid entry: dead-letter it
    wrong_shard: bool = False  # posted in another partition than its shard: dead-letter it
    # (table, key, value or None): "balances" or "applied"
    writes: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    deltas: dict[tuple[str, str], int] = field(default_factory=dict)
    fired: list[Timer] = field(default_factory=list)


BALANCES, APPLIED = "balances", "applied"


def apply_entry(
    record: Mapping[str, Any],
    partition: int,
    record_ts_ms: int,
    balances: Get,
    applied: Get,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> Applied:
    out = Applied()
    try:
        entry = entry_from_record(record)
    except PostingError as e:
        out.refused = e
        return out
    if entry.shard != partition:
        out.wrong_shard = True
        return out
    key = applied_key(partition, entry.entry_id)
    if applied(key) is not None:
        out.skipped = True
        return out

    out.deltas = deltas(entry)
    for (account, currency), delta in sorted(out.deltas.items()):
        bkey = balance_key(account, currency)
        old = balances(bkey)
        total = (decode_balance(old) if old is not None else 0) + delta
        out.writes.append((BALANCES, bkey, encode_balance(total) if total else None))
    for currency in {c for _, c in out.deltas}:
        assert sum(d for (_, c), d in out.deltas.items() if c == currency) == 0, (
            f"entry {entry.entry_id} unbalanced in {currency}"
        )

    timers = TimerStore(applied, partition, PAGE_MAX_BYTES)
    out.writes.append((APPLIED, key, APPLIED_MARK))
    timers.push(Timer("forget", entry.occurred_at_ms + span_ms(retention), key.decode()))
    for timer in timers.pop_due("forget", timers.advance(entry.occurred_at_ms, record_ts_ms), sweep_max):
        out.fired.append(timer)
        out.writes.append((APPLIED, timer.ref.encode(), None))
    out.writes.extend((APPLIED, k, v) for k, v in timers.pending.items())
    return out
