"""Restore a task's tables from their changelogs, read_committed, to the end.

"The end" is each changelog partition's high watermark when the restore starts, and
the reading is `read_to_end`'s (connectors/kafka/clients.py): a partition counts as
restored when the reader's end-of-partition offset reaches it. A read_committed
reader stops short of it while a transaction is open on the partition (a worker that
died holding one, until the broker aborts it after `transaction.timeout.ms`): the
restore waits for that transaction to be decided, so it never starts processing on a
state that a late commit would contradict.

Each changelog partition is read once: in a topic several tables share, a record goes
to the store its key's table name names (streams/runtime/changelog.py); a record of a
table no stage declares any more (a dropped table) is counted, logged once and skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import TopicPartition

from connectors.kafka.clients import committed_reader, read_to_end
from streams.runtime.changelog import ChangelogKeyError, split_changelog_key
from streams.runtime.messages import exit_for_restart
from streams.runtime.state import Store, Task

log = logging.getLogger("paystream.runtime")

WRITE_BATCH_MAX = 50_000
WATERMARK_TIMEOUT_S = 10.0


@dataclass
class Router:
    """Where each changelog record of the tasks' partitions goes: plain topics to their
    one store, shared topics to the store of the table their key names."""

    plain: dict[tuple[str, int], Store] = field(default_factory=dict)
    shared: dict[tuple[str, int], dict[str, Store]] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # by table name (or key error)
    pending: dict[Store, dict[bytes, bytes | None]] = field(default_factory=dict)  # the next write batch per store

    @classmethod
    def of(cls, tasks: Iterable[Task]) -> Router:
        router = cls()
        for task in tasks:
            for t in task.tables.values():
                tp = (t.changelog, task.partition)
                if t.shared:
                    router.shared.setdefault(tp, {})[t.name] = t.store
                else:
                    router.plain[tp] = t.store
        return router

    def partitions(self) -> list[tuple[str, int]]:
        return sorted({*self.plain, *self.shared})

    def route(self, topic: str, partition: int, key: bytes, value: bytes | None) -> bool:
        """Into its store's next write batch; False when skipped."""
        tp = (topic, partition)
        store = self.plain.get(tp)
        if store is None:
            try:
                table, key = split_changelog_key(key)
            except ChangelogKeyError as e:
                return self._skip("<no table name>", str(e))
            store = self.shared[tp].get(table)
            if store is None:
                return self._skip(table, f"a record of table {table!r} in {topic}, a table no stage declares")
        changes = self.pending.setdefault(store, {})
        changes[key] = value
        if len(changes) >= WRITE_BATCH_MAX:
            self._write(store)
        return True

    def _skip(self, table: str, why: str) -> bool:
        if table not in self.skipped:
            log.warning("restore: skipping %s (logged once per table)", why)
        self.skipped[table] = self.skipped.get(table, 0) + 1
        return False

    def _write(self, store: Store) -> None:
        store.write(self.pending.pop(store))

    def flush(self) -> None:
        for store in list(self.pending):
            self._write(store)


def high_watermarks(
    conf: Mapping[str, str], partitions: Iterable[tuple[str, int]], timeout_s: float = WATERMARK_TIMEOUT_S
) -> dict[tuple[str, int], int]:
    """Each partition's high watermark now, asked of the broker (`timeout_s` each)."""
    probe = committed_reader(conf, [])
    try:
        return {
            (topic, p): probe.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)[1]
            for topic, p in partitions
        }
    finally:
        probe.close()


def restore(conf: Mapping[str, str], tasks: list[Task], deadline_s: float) -> int:
    """Fill the tasks' stores from their changelogs; returns the records restored.
    Past `deadline_s` seconds the worker exits for a restart."""
    router = Router.of(tasks)
    partitions = router.partitions()
    if not partitions:
        return 0
    ends = high_watermarks(conf, partitions)
    read = 0
    try:
        for msg in read_to_end(conf, sorted({topic for topic, _ in partitions}), 0, timeout_s=deadline_s, ends=ends):
            key = msg.key()
            if key is not None and router.route(msg.topic(), msg.partition(), key, msg.value()):
                read += 1
    except TimeoutError as e:
        exit_for_restart(f"changelogs not restored: {e}")
    router.flush()
    if router.skipped:
        log.warning("restore: skipped changelog records of undeclared tables: %s", router.skipped)
    return read
