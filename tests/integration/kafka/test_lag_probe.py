"""The stall probe against the broker: a partition whose lag is only an aborted
transaction (records a read_committed reader skips, and markers) has nothing to
process; one with a committed record past the group's offset has, also when the log
no longer starts at 0."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streams.worker.probes import LagProbe
from tests.integration.support import scratch_topics


def one_partition_topic(bootstrap: str) -> tuple[str, AdminClient]:
    """A fresh one-partition topic, deleted when the module ends; with the admin client
    that made it (kept: its futures die with it)."""
    topic = f"it-lagprobe-{uuid.uuid4().hex[:8]}"
    scratch_topics(bootstrap, [topic])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
    return topic, admin


def test_an_aborted_tail_is_idle_and_a_committed_record_is_work(bootstrap: str) -> None:
    topic, _ = one_partition_topic(bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": f"{topic}-tx"})
    producer.init_transactions(30)
    producer.begin_transaction()
    producer.produce(topic, b"committed", partition=0)
    producer.commit_transaction(30)
    producer.begin_transaction()
    for _ in range(3):
        producer.produce(topic, b"aborted", partition=0)
    assert producer.flush(30) == 0  # in the log before the abort (an abort purges what is still queued)
    producer.abort_transaction(30)

    probe = LagProbe({"bootstrap.servers": bootstrap}, f"{topic}-group")  # a group that never committed
    try:
        tp = (topic, 0)
        lag = probe.lags([tp])[tp].lag
        assert lag == 6  # 1 record + its marker + 3 aborted records + the abort marker: all "lag"
        assert probe.readable_after(tp, 0)  # the committed record is work
        assert not probe.readable_after(tp, 2)  # past it: only the aborted tail, nothing to process
    finally:
        probe.close()


def test_a_truncated_log_is_read_from_its_start_not_its_end(bootstrap: str) -> None:
    topic, admin = one_partition_topic(bootstrap)
    producer = Producer({"bootstrap.servers": bootstrap})
    for i in range(4):
        producer.produce(topic, b"%d" % i, partition=0)
    assert producer.flush(30) == 0
    # DeleteRecords moves the log start to 2: offsets 0 and 1 are out of range now.
    for future in admin.delete_records([TopicPartition(topic, 0, 2)]).values():
        assert future.result(30).low_watermark == 2

    probe = LagProbe({"bootstrap.servers": bootstrap}, f"{topic}-group")  # a group that never committed
    try:
        tp = (topic, 0)
        progress = probe.lags([tp])[tp]
        assert progress.committed < 0 and progress.lag == 2
        # The worker's consumer would read offsets 2 and 3 (it resets to the earliest), so
        # that lag is work, whether nothing is committed or an offset the log dropped.
        assert probe.readable_after(tp, progress.committed)
        assert probe.readable_after(tp, 1)
        assert not probe.readable_after(tp, 4)  # at the end: nothing
    finally:
        probe.close()
