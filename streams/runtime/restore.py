"""Restore a task's tables from their changelogs, read_committed, to the end.

"The end" is each changelog partition's high watermark when the restore starts, and
the reading is `read_to_end`'s (connectors/kafka/clients.py): a partition counts as
restored when the reader's end-of-partition offset reaches it. A read_committed
reader stops short of it while a transaction is open on the partition (a worker that
died holding one, until the broker aborts it after `transaction.timeout.ms`): the
restore waits for that transaction to be decided, so it never starts processing on a
state that a late commit would contradict.
"""

from __future__ import annotations

from collections.abc import Mapping

from confluent_kafka import TopicPartition

from connectors.kafka.clients import committed_reader, read_to_end
from streams.runtime.messages import exit_for_restart
from streams.runtime.state import Store, Task

WRITE_BATCH_MAX = 50_000
WATERMARK_TIMEOUT_S = 10.0


def restore(conf: Mapping[str, str], tasks: list[Task], deadline_s: float) -> int:
    """Fill the tasks' stores from their changelogs; returns the records read.
    Past `deadline_s` seconds the worker exits for a restart."""
    stores = {(t.changelog, task.partition): t.store for task in tasks for t in task.tables.values()}
    if not stores:
        return 0
    probe = committed_reader(conf, [])
    try:
        ends = {
            (topic, p): probe.get_watermark_offsets(TopicPartition(topic, p), timeout=WATERMARK_TIMEOUT_S)[1]
            for topic, p in stores
        }
    finally:
        probe.close()
    pending: dict[tuple[str, int], dict[bytes, bytes | None]] = {tp: {} for tp in stores}
    read = 0
    try:
        for msg in read_to_end(conf, sorted({topic for topic, _ in stores}), 0, timeout_s=deadline_s, ends=ends):
            key = msg.key()
            if key is None:
                continue
            tp = (msg.topic(), msg.partition())
            changes = pending[tp]
            changes[key] = msg.value()
            read += 1
            if len(changes) >= WRITE_BATCH_MAX:
                _flush(stores[tp], changes)
                pending[tp] = {}
    except TimeoutError as e:
        exit_for_restart(f"changelogs not restored: {e}")
    for tp, changes in pending.items():
        _flush(stores[tp], changes)
    return read


def _flush(store: Store, changes: dict[bytes, bytes | None]) -> None:
    if changes:
        store.write(changes)
