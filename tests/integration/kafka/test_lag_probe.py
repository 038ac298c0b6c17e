"""The stall probe against the broker: a partition whose lag is only an aborted
transaction (records a read_committed reader skips, and markers) has nothing to
process; one with a committed record past the group's offset has."""

from __future__ import annotations

import uuid

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.worker.probes import LagProbe
from tests.integration.support import scratch_topics


def test_an_aborted_tail_is_idle_and_a_committed_record_is_work(bootstrap: str) -> None:
    topic = f"it-lagprobe-{uuid.uuid4().hex[:8]}"
    scratch_topics(bootstrap, [topic])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, 1, 1)]).values():
        future.result(30)
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
