"""The engine against the real broker: a record sent to a later stage's partition that
the worker owns is handled in the transaction that writes it (streams/runtime/handoff.py).
Every input is counted once and answered once, whether it was handed off or read back;
the handed-off records are in the log, marked, and skipped on the way in (their offsets
commit); a transaction that aborts takes its hand-offs with it and is redone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import TopicPartition

from connectors.kafka.clients import committed_reader, read_to_end
from streams.runtime.engine import Engine, Periodic, Stage
from streams.runtime.handoff import FROM_HEADER, HANDLED_HEADER
from streams.runtime.messages import Message, Record
from streams.runtime.state import StageTask
from tests.integration.streams.runtime.conftest import (
    REFUSED_BYTES,
    engine_config,
    one_partition_topics,
    publish_numbers,
    values,
)
from tests.integration.support import scratch_topics
from tests.unit.deploy.alert_support import sample

PHASE = 20  # records published at a time: three times
RECORDS = 3 * PHASE
DEADLINE_S = 120.0


def test_a_record_for_an_owned_partition_is_handled_once_in_its_senders_transaction(
    bootstrap: str, tmp_path: Path, own_signals: None
) -> None:
    """Three phases, each published once the one before is counted and the partition
    takes hand-offs: the first may go either way (the partition's end is asked after
    the assignment), the second's first hand-off fails its transaction (the abort takes
    it away and the worker reads the partition to its end again), the third is handed off."""
    run = f"it-handoff-{uuid.uuid4().hex[:8]}"
    source, mid, out, refusing = f"{run}-in", f"{run}-mid", f"{run}-out", f"{run}-small"
    changelog = f"{run}-t-changelog"
    scratch_topics(bootstrap, prefixes=[f"{run}-"])
    one_partition_topics(bootstrap, [source, mid, out], refusing, changelog)
    publish_numbers(bootstrap, source, PHASE, keys=3)

    refuse: dict[str, bool] = {}  # armed in the second phase, until one transaction has failed
    handed_in: list[int] = []  # the offsets the second stage saw: -1 for a hand-off

    def forward(batch: list[Message], task: StageTask) -> None:
        for m in batch:
            task.send(Record(mid, m.key, m.value), m.origin_ms)

    def count(batch: list[Message], task: StageTask) -> None:
        counts = task.table("t")
        for m in batch:
            handed_in.append(m.offset)
            counts.put(b"n", b"%d" % (int(counts.get(b"n") or 0) + 1))
            task.send(Record(out, m.key, m.value), m.origin_ms)
        if batch[0].offset < 0 and refuse.pop("armed", False):
            task.send(Record(refusing, b"k", b"x" * REFUSED_BYTES), batch[0].origin_ms)

    stages = [
        Stage("forward", source, forward, (), (mid,)),
        Stage("count", mid, count, ("t",), (out, refusing), takes_handoff=True),
    ]
    config = engine_config(bootstrap, run, tmp_path, batch_max=5)
    handoffs_before = sample("paystream_handoffs_total")
    aborted_before = sample("paystream_transactions_aborted_total")
    deadline = time.monotonic() + DEADLINE_S
    published = [PHASE]
    engine: Engine

    def drive() -> None:
        task = engine.tasks.get(0)
        counted = int(task.table("t").store.get(b"n") or 0) if task is not None else 0  # committed
        if time.monotonic() > deadline:
            engine.stopping = True
        elif counted < published[0] or engine.handoffs_waiting():
            return
        elif published[0] < RECORDS:
            refuse["armed"] = published[0] == PHASE
            publish_numbers(bootstrap, source, PHASE, keys=3, start=published[0])
            published[0] += PHASE
        else:
            # ... and read past the last record of `mid` (the commit marker after it is all that is left).
            tp = TopicPartition(mid, 0)
            [position] = engine.consumer.position([tp])
            engine.stopping = position.offset >= engine.consumer.get_watermark_offsets(tp, timeout=10)[1] - 1

    engine = Engine(config, stages, {"t": changelog}, periodic=[Periodic(0.05, drive)])
    engine.run()

    assert published == [RECORDS] and refuse == {}
    assert sample("paystream_transactions_aborted_total") - aborted_before == 1
    assert sorted(values(bootstrap, out), key=int) == [b"%d" % i for i in range(RECORDS)]  # each once
    changelogged = {m.key(): m.value() for m in read_to_end(bootstrap, [changelog], 1, timeout_s=30)}
    assert changelogged == {b"n": b"%d" % RECORDS}  # counted once each, hand-offs and read-backs alike
    in_log = list(read_to_end(bootstrap, [mid], 1, timeout_s=30))
    assert sorted((m.value() for m in in_log), key=int) == [b"%d" % i for i in range(RECORDS)]
    marks = [{k for k, _ in m.headers() or ()} for m in in_log]
    handed = sum(HANDLED_HEADER in h for h in marks)
    # The third phase at least is handed off; each handed-off record was seen once by the
    # stage, or twice if the aborted transaction had it; the rest were read back, once each.
    assert PHASE <= handed <= handed_in.count(-1)
    assert len([o for o in handed_in if o >= 0]) == RECORDS - handed
    # A record sent the normal way to the partition (its end not read yet) is marked as ours.
    assert all(HANDLED_HEADER in h or FROM_HEADER in h for h in marks)
    assert sample("paystream_handoffs_total") - handoffs_before >= handed
    group = committed_reader(bootstrap, [], group_id=f"{run}-group")
    try:
        committed = group.committed([TopicPartition(source, 0), TopicPartition(mid, 0)], timeout=10)
    finally:
        group.close()
    assert committed[0].offset == RECORDS
    assert committed[1].offset > in_log[-1].offset()  # the skipped records' offsets commit too
