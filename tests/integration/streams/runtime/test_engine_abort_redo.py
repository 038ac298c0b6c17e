"""The engine against the real broker: a transaction that fails abortably is aborted
and its input redone in the same process (streams/runtime/txn.py), exactly once:
every input's output appears once, the table counts each input once, the offsets
commit, the aborted records stay invisible, and the worker never exits."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import TopicPartition

from connectors.kafka.clients import committed_reader, read_to_end
from streams.runtime import engine as engine_module
from streams.runtime.engine import Engine, Periodic, Stage
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

RECORDS = 40
DEADLINE_S = 120.0


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    why: list[str] = []

    def exit_for_restart(reason: str) -> None:
        why.append(reason)
        raise Exited(reason)

    monkeypatch.setattr(engine_module, "exit_for_restart", exit_for_restart)
    return why


def test_an_abortable_transaction_is_redone_once_without_a_restart(
    bootstrap: str, tmp_path: Path, exits: list[str], own_signals: None
) -> None:
    run = f"it-abort-{uuid.uuid4().hex[:8]}"
    source, out, refusing, changelog = f"{run}-in", f"{run}-out", f"{run}-small", f"{run}-t-changelog"
    scratch_topics(bootstrap, prefixes=[f"{run}-"])
    one_partition_topics(bootstrap, [source, out], refusing, changelog)
    publish_numbers(bootstrap, source, RECORDS)

    attempts = {"first": True}

    def handle(batch: list[Message], task: StageTask) -> None:
        counts = task.table("t")
        for m in batch:
            counts.put(b"n", b"%d" % (int(counts.get(b"n") or 0) + 1))
            counts.put(b"last", m.value)
            counts.put(b"last", None)  # a delete: the changelog's record of the key is a tombstone
            task.send(Record(out, m.key, m.value), m.origin_ms)
        if attempts.pop("first", False):  # the first transaction only: its redo goes through
            task.send(Record(refusing, b"k", b"x" * REFUSED_BYTES), batch[0].origin_ms)

    config = engine_config(
        bootstrap, run, tmp_path, batch_max=10
    )  # several transactions: the abort redoes only the failed one
    stage = Stage("count", source, handle, ("t",), (out, refusing))
    aborted_before = sample("paystream_transactions_aborted_total")
    deadline = time.monotonic() + DEADLINE_S
    engine: Engine

    def stop_when_counted() -> None:
        task = engine.tasks.get(0)
        counted = task is not None and task.table("t").store.get(b"n") == b"%d" % RECORDS  # committed and applied
        if counted or time.monotonic() > deadline:
            engine.stopping = True

    engine = Engine(config, [stage], {"t": changelog}, periodic=[Periodic(0.05, stop_when_counted)])
    engine.run()

    assert exits == []
    assert sample("paystream_transactions_aborted_total") - aborted_before == 1
    assert engine.tasks == {}  # closed at the stop
    outputs = values(bootstrap, out)
    assert sorted(outputs, key=int) == [b"%d" % i for i in range(RECORDS)]  # each once, none lost
    assert values(bootstrap, refusing) == []
    changelogged = {m.key(): m.value() for m in read_to_end(bootstrap, [changelog], 1, timeout_s=30)}
    assert changelogged == {b"n": b"%d" % RECORDS, b"last": None}  # the count of each input once; the delete
    group = committed_reader(bootstrap, [], group_id=f"{run}-group")
    try:
        [tp] = group.committed([TopicPartition(source, 0)], timeout=10)
    finally:
        group.close()
    assert tp.offset == RECORDS
