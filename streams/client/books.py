"""The books and the event store read back from Kafka alone (payment-events, ledger-entries
and the tables' changelogs, never a worker's RocksDB): what `paystream audit|replay|balance`,
the chaos run and the bench read."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from connectors.kafka.clients import (
    end_offsets,
    read_to_end,
    require_topics,
    start_offsets,
)
from connectors.vault.keys import FileKeyStore
from schemas.codec import Codec, DecodeError
from streams.domain.audit import LogStart
from streams.domain.chain import ChainHead
from streams.domain.ledger import decode_balance, parse_balance_key
from streams.settings import Settings, client_config
from streams.stages.payments import chain_key
from streams.topics import client_ids, topic_names
from streams.worker.changelogs import read_table

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

    c = Consumer({**client_config(settings), "group.id": client_ids(settings).sizer_group, "log_level": 3})
    try:
        require_topics(c, topics)
        return {(t, p): o for t in topics for p, o in offsets(c, t, settings.partitions).items()}
    finally:
        c.close()


def book_records(
    settings: Settings, on_record: Any = None, ends: dict[tuple[str, int], int] | None = None
) -> Iterator[tuple[str, int, int, Any]]:
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
    for partition, key, value in read_table(settings, "ledger-balances"):
        latest[(partition, key)] = value
    total: dict[tuple[str, str], int] = {}
    for (_, key), value in latest.items():
        if value is not None:
            account = parse_balance_key(key)
            total[account] = total.get(account, 0) + decode_balance(value)
    return {k: v for k, v in total.items() if v}


def live_chain_heads(settings: Settings) -> dict[int, ChainHead]:
    heads: dict[int, ChainHead] = {}
    keys = {chain_key(p): p for p in range(settings.partitions)}
    for _, key, value in read_table(settings, "payments-timers"):
        p = keys.get(key)
        if p is not None and value is not None:
            heads[p] = ChainHead.from_bytes(p, value)
    return heads


def public_keys(settings: Settings) -> dict[str, Ed25519PublicKey]:
    """Every signing key's public half, by key id: what the audit verifies against."""
    return {
        key_id: Ed25519PublicKey.from_public_bytes(b)
        for key_id, b in FileKeyStore(settings.keys_dir).public_keys().items()
    }
