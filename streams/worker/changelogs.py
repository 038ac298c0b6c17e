"""The worker's tables as their one changelog holds them, and the way over from the
per-table changelogs they had before (docs/scaling.md, "Changelog migration").

Every table in streams.topics.TABLES writes to "<app id>-tables-changelog", each key
prefixed with its table's name (streams/runtime/changelog.py). `read_table` is how a
job or the CLI reads one table back; `migrate` copies the per-table changelogs'
latest values into the shared one; `require_migrated` keeps a worker from starting
on empty tables while the old changelogs still hold its state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer

from connectors.kafka import admin
from connectors.kafka.clients import end_offsets, produce_waiting, read_to_end, start_offsets
from streams.runtime.changelog import changelog_key, split_changelog_key
from streams.settings import Settings, client_config
from streams.topics import TABLES, client_ids, declared_topics, per_table_changelog_topic, tables_changelog_topic

log = logging.getLogger("paystream.worker")

MIGRATE_COMMAND = "paystream topics migrate-changelogs"
# The live keys of one partition of all the old changelogs, held in memory while it is
# copied (latest value per key: a tombstone must drop what came before it).
MIGRATE_KEYS_PER_PARTITION_MAX = 5_000_000
# One partition's copy is one transaction: the broker's default cap (transaction.max.timeout.ms).
MIGRATE_TRANSACTION_TIMEOUT_MS = 900_000
METADATA_TIMEOUT_S = 10.0


class MigrationError(RuntimeError):
    """The per-table changelogs cannot be migrated now (workers running, a bad shape)."""


def read_table(settings: Settings, table: str) -> Iterator[tuple[int, bytes, bytes | None]]:
    """(partition, key, value or None) of `table`'s changelog records, in offset order per
    partition, to the end offsets at the start (read_committed). The latest per key wins."""
    assert table in TABLES, table
    for msg in read_to_end(client_config(settings), [tables_changelog_topic(settings.app_id)], settings.partitions):
        name, key = split_changelog_key(msg.key())
        if name == table:
            yield msg.partition(), key, msg.value()


def _probe(settings: Settings) -> Consumer:
    return Consumer({**client_config(settings), "group.id": client_ids(settings).sizer_group, "log_level": 3})


def unmigrated(settings: Settings) -> dict[str, int]:
    """Old per-table changelogs that still hold records (topic -> records between the
    watermarks) while the shared changelog has never been written to; else {}. Cheap:
    the shared topic's end offsets first, the old topics' only when those are all 0."""
    probe = _probe(settings)
    try:
        existing = probe.list_topics(timeout=METADATA_TIMEOUT_S).topics
        shared = tables_changelog_topic(settings.app_id)
        if shared in existing and any(end_offsets(probe, shared, settings.partitions).values()):
            return {}
        held = {}
        for table in TABLES:
            topic = per_table_changelog_topic(settings.app_id, table)
            if topic in existing:
                n = len(existing[topic].partitions)
                records = sum(end_offsets(probe, topic, n).values()) - sum(start_offsets(probe, topic, n).values())
                if records:
                    held[topic] = records
        return held
    finally:
        probe.close()


def require_migrated(settings: Settings) -> None:
    """Exit (status 1, saying what to run) rather than start on empty tables while the
    per-table changelogs of an earlier version still hold the state."""
    held = unmigrated(settings)
    if held:
        message = (
            f"the tables' changelog {tables_changelog_topic(settings.app_id)} is empty but the per-table changelogs "
            f"still hold records ({', '.join(f'{t}: {n}' for t, n in sorted(held.items()))}): stop every worker and "
            f"run `{MIGRATE_COMMAND}` first; a worker started now would run on empty tables"
        )
        log.error(message)
        raise SystemExit(message)


@dataclass(frozen=True)
class PartitionCopied:
    partition: int
    records: dict[str, int]  # live keys written, by table


def migrate(settings: Settings, on_partition: Callable[[PartitionCopied], None] = lambda _: None) -> dict[str, int]:
    """Copy the latest value of every live key of each per-table changelog (read_committed,
    to its end now) into the shared changelog under the prefixed key, the same partition,
    one transaction per partition; returns the keys written by table. Run again, it
    writes the same values again (harmless on a compacted topic). Refuses while the
    worker group has members: a running worker would write between the reads."""
    conn = client_config(settings)
    ids = client_ids(settings)
    members = admin.group_members(conn, ids.worker_group)
    if members:
        raise MigrationError(f"the worker group {ids.worker_group} has {members} member(s): stop every worker first")
    admin.ensure_topics(conn, declared_topics(settings))
    shared = tables_changelog_topic(settings.app_id)
    probe = _probe(settings)
    try:
        existing = probe.list_topics(timeout=METADATA_TIMEOUT_S).topics
        old = {t: per_table_changelog_topic(settings.app_id, t) for t in TABLES}
        old = {t: topic for t, topic in old.items() if topic in existing}
        wrong = {topic: len(existing[topic].partitions) for topic in old.values()}
        wrong = {topic: n for topic, n in wrong.items() if n != settings.partitions}
        if wrong:
            raise MigrationError(f"old changelogs whose partitions are not {settings.partitions}: {wrong}")
        ends = {(t, p): end for t in old.values() for p, end in end_offsets(probe, t, settings.partitions).items()}
    finally:
        probe.close()
    table_of = {topic: t for t, topic in old.items()}
    producer = Producer(
        {
            **conn,
            "transactional.id": ids.migrate_transaction,
            "transaction.timeout.ms": MIGRATE_TRANSACTION_TIMEOUT_MS,
            "linger.ms": 20,
            "log_level": 3,
        }
    )
    producer.init_transactions(METADATA_TIMEOUT_S * 3)
    totals = dict.fromkeys(old, 0)
    for partition in range(settings.partitions):
        latest: dict[tuple[str, bytes], bytes | None] = {}
        mine = {tp: end for tp, end in ends.items() if tp[1] == partition}
        for msg in read_to_end(conn, sorted(old.values()), settings.partitions, ends=mine):
            if msg.key() is not None:
                latest[(table_of[msg.topic()], msg.key())] = msg.value()
                if len(latest) > MIGRATE_KEYS_PER_PARTITION_MAX:
                    raise MigrationError(
                        f"partition {partition} holds over {MIGRATE_KEYS_PER_PARTITION_MAX} keys: "
                        "compact the old changelogs first"
                    )
        copied = dict.fromkeys(old, 0)
        producer.begin_transaction()
        for (table, key), value in latest.items():
            if value is not None:  # a tombstone: nothing to carry over
                produce_waiting(producer, shared, key=changelog_key(table, key), value=value, partition=partition)
                copied[table] += 1
        producer.commit_transaction(MIGRATE_TRANSACTION_TIMEOUT_MS / 1000)
        for table, n in copied.items():
            totals[table] += n
        on_partition(PartitionCopied(partition, copied))
    return totals
