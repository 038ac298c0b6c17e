"""Restore a task's tables from their changelogs, read_committed, to the end.

"The end" is each changelog partition's high watermark when the restore starts. A
read_committed reader stops short of it while a transaction is open on the
partition (a worker that died holding it, until the broker aborts it after
`transaction.timeout.ms`): the restore waits for that transaction to be decided, so
it never starts processing on a state that a late commit would contradict. The
reader signals each arrival at its end (`enable.partition.eof`) with the offset it
reached, commit markers and aborted records skipped; a partition is restored when
that offset reaches the target.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from streams.runtime.messages import exit_for_restart
from streams.runtime.state import Store, Task

log = logging.getLogger("paystream.runtime")

RESTORE_BATCH_MAX = 10_000
WRITE_BATCH_MAX = 50_000
WATERMARK_TIMEOUT_S = 10.0


def restore(conf: Mapping[str, str], tasks: list[Task], deadline_s: float) -> int:
    """Fill the tasks' stores from their changelogs; returns the records read.
    Past `deadline_s` seconds the worker exits for a restart."""
    if not tasks:
        return 0
    consumer = Consumer({**conf, "group.id": f"paystream-restore-{uuid.uuid4().hex[:12]}", "enable.auto.commit": False,
                         "isolation.level": "read_committed", "enable.partition.eof": True,
                         "fetch.max.bytes": 52_428_800, "max.partition.fetch.bytes": 10_485_760, "log_level": 3})
    try:
        stores = {(t.changelog, task.partition): t.store for task in tasks for t in task.tables.values()}
        targets: dict[tuple[str, int], int] = {}
        for topic, partition in stores:
            _, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=WATERMARK_TIMEOUT_S)
            if high > 0:
                targets[(topic, partition)] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for topic, p in targets])
        pending: dict[tuple[str, int], dict[bytes, bytes | None]] = {tp: {} for tp in targets}
        read = 0
        end = time.monotonic() + deadline_s
        while targets:
            if time.monotonic() > end:
                exit_for_restart(f"changelogs not restored within {deadline_s:g}s: {sorted(targets)[:5]} ...")
            for msg in consumer.consume(RESTORE_BATCH_MAX, timeout=0.2):
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"restore of {tp}: {err}")
                    if tp in targets and msg.offset() >= targets[tp]:
                        _flush(stores[tp], pending.pop(tp))
                        del targets[tp]
                    continue
                key = msg.key()
                if key is None or tp not in pending:  # past its end: the target was met
                    continue
                changes = pending[tp]
                changes[key] = msg.value()
                read += 1
                if len(changes) >= WRITE_BATCH_MAX:
                    _flush(stores[tp], changes)
                    pending[tp] = {}
        return read
    finally:
        consumer.close()


def _flush(store: Store, changes: dict[bytes, bytes | None]) -> None:
    if changes:
        store.write(changes)
