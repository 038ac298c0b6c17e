"""The engine's own rules, without a broker: how a batch is split into tasks, which
transaction errors are retried and which exit, and when the loop waits and commits."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from streams.runtime import engine as engine_module
from streams.runtime.callwatch import CallWatch
from streams.runtime.catchup import CatchUp
from streams.runtime.engine import IDLE_POLL_S, Engine, EngineConfig, Stage, commit_due, poll_wait_s
from streams.runtime.messages import Record
from streams.runtime.state import Task
from streams.runtime.txn import RetryLimits
from tests.unit.streams.runtime.runtime_support import WatchExits


class FakeMessage:
    def __init__(self, topic: str, partition: int, offset: int, error: KafkaError | None = None) -> None:
        self._t, self._p, self._o, self._e = topic, partition, offset, error

    def error(self) -> KafkaError | None:
        return self._e

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_700_000_000_000 + self._o)

    def key(self) -> bytes:
        return b"k"

    def value(self) -> bytes:
        return b"v%d" % self._o

    def headers(self) -> None:
        return None


def engine(tmp: Path, stages: list[Stage]) -> Engine:
    config = EngineConfig(
        client={"bootstrap.servers": "localhost:1"},
        group_id="g",
        transactional_id="t",
        state_dir=tmp,
        commit_interval_ms=50,
        commit_records_max=1_000,
        batch_max=100,
        session_timeout_ms=10_000,
        linger_ms=0,
        batch_bytes=1_000_000,
        fetch_partition_bytes=1_048_576,
        request_bytes=1_100_000,
    )
    return Engine(
        config, stages, {t: f"{t}-changelog" for s in stages for t in s.tables}
    )  # builds the clients; nothing connects


def test_a_batch_reaches_each_stage_by_partition_in_offset_order_and_its_offsets_are_kept(tmp_path: Path) -> None:
    seen: list[tuple[str, int, list[int]]] = []

    def handler(name: str):  # type: ignore[no-untyped-def]
        return lambda batch, task: seen.append((name, task.partition, [m.offset for m in batch]))

    e = engine(tmp_path, [Stage("a", "in-a", handler("a")), Stage("b", "in-b", handler("b"))])
    e._begin = lambda: None  # type: ignore[method-assign]  # no broker: the transaction is not ours to open here
    e.tasks = {p: Task(p, e.tables, tmp_path, e.send) for p in (0, 1)}
    batch = [
        FakeMessage("in-a", 0, 5),
        FakeMessage("in-b", 1, 7),
        FakeMessage("in-a", 1, 3),
        FakeMessage("in-a", 0, 6),
        FakeMessage("in-a", 0, -1, KafkaError(KafkaError._PARTITION_EOF)),
        FakeMessage("in-b", 1, 8),
    ]
    e._handle(batch)
    assert sorted(seen) == [("a", 0, [5, 6]), ("a", 1, [3]), ("b", 1, [7, 8])]
    assert e._offsets == {("in-a", 0): 7, ("in-b", 1): 9, ("in-a", 1): 4}  # the next offset to read, per partition
    assert e._txn_records == 5


def test_a_batch_runs_its_stages_in_their_declared_order_whatever_order_the_records_came_in(tmp_path: Path) -> None:
    # A table's feeder declared first (the merchant registry before the keys stage) sees
    # a batch's registrations before its commands read them.
    seen: list[str] = []

    def handler(name: str):  # type: ignore[no-untyped-def]
        return lambda batch, task: seen.append(name)

    e = engine(tmp_path, [Stage("feeds", "in-b", handler("feeds")), Stage("reads", "in-a", handler("reads"))])
    e._begin = lambda: None  # type: ignore[method-assign]
    e.tasks = {p: Task(p, e.tables, tmp_path, e.send) for p in (0, 1)}
    e._handle([FakeMessage("in-a", 0, 1), FakeMessage("in-a", 1, 1), FakeMessage("in-b", 0, 1)])
    assert seen == ["feeds", "reads", "reads"]


def test_a_message_of_a_partition_without_a_task_is_a_bug_not_a_silent_skip(tmp_path: Path) -> None:
    e = engine(tmp_path, [Stage("a", "in-a", lambda batch, task: None)])
    e._begin = lambda: None  # type: ignore[method-assign]
    with pytest.raises(AssertionError, match="no task"):
        e._handle([FakeMessage("in-a", 3, 0)])


class Exited(Exception):
    pass


@pytest.fixture
def exits(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    why: list[str] = []

    def exit_for_restart(reason: str) -> None:
        why.append(reason)
        raise Exited(reason)

    monkeypatch.setattr(engine_module, "exit_for_restart", exit_for_restart)
    monkeypatch.setattr(engine_module.time, "sleep", lambda s: None)
    return why


def failing(errors: list[KafkaError], result: Any = "done"):  # type: ignore[no-untyped-def]
    calls: list[float] = []

    def call(timeout_s: float) -> Any:
        calls.append(timeout_s)
        if errors:
            raise KafkaException(errors.pop(0))
        return result

    return call, calls


def test_retriable_transaction_errors_are_tried_again(tmp_path: Path, exits: list[str]) -> None:
    e = engine(tmp_path, [])
    busy = KafkaError(KafkaError.CONCURRENT_TRANSACTIONS, "busy", retriable=True)
    call, calls = failing([busy, busy])
    assert e._txn("commit_transaction", call, in_transaction=True) is True and len(calls) == 3 and exits == []
    assert all(0 < t <= e.config.transaction_retry_ms / 1000 for t in calls)  # each call bounded by what is left


def test_an_abortable_error_in_a_transaction_asks_for_the_abort(tmp_path: Path, exits: list[str]) -> None:
    e = engine(tmp_path, [])
    call, calls = failing([KafkaError(KafkaError._STATE, "abort me", txn_requires_abort=True)])
    assert e._txn("send_offsets_to_transaction", call, in_transaction=True) is False
    assert len(calls) == 1 and exits == []


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FENCED, "fenced", fatal=True),
        KafkaError(KafkaError._STATE, "abort me", txn_requires_abort=True),  # outside a transaction
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "refused"),
    ],
)
def test_any_other_transaction_error_exits_for_a_restart(tmp_path: Path, exits: list[str], error: KafkaError) -> None:
    e = engine(tmp_path, [])
    call, calls = failing([error])
    with pytest.raises(Exited):
        e._txn("begin_transaction", call)
    assert len(calls) == 1 and "begin_transaction failed" in exits[0]


def test_a_retriable_error_past_the_attempt_bound_exits(tmp_path: Path, exits: list[str]) -> None:
    e = engine(tmp_path, [])
    e._retry = RetryLimits(attempts_max=3, deadline_ms=60_000)
    call, calls = failing([KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)] * 5)
    with pytest.raises(Exited):
        e._txn("commit_transaction", call, in_transaction=True)
    assert len(calls) == 3


class HungInit:
    """A producer whose init_transactions returns only once the call watch has acted."""

    def __init__(self, exits: WatchExits) -> None:
        self.exits = exits

    def init_transactions(self, timeout_s: float) -> None:
        self.exits.exited.wait(10.0)
        raise Exited("the worker is gone by now: nothing past the call runs")


def test_init_transactions_is_watched_from_the_start(
    tmp_path: Path, watch_exits: WatchExits, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The watch runs before the first transactional call of a start: after a broker
    # restart, init_transactions can hang on the coordinator as the others can.
    e = engine(tmp_path, [])
    e.config = replace(e.config, transaction_retry_ms=50)
    e._call_watch = CallWatch(grace_s=0.0, check_s=0.01)
    e.producer = HungInit(watch_exits)  # type: ignore[assignment]
    monkeypatch.setattr(engine_module.signal, "signal", lambda *_: None)  # pytest keeps its ^C
    with pytest.raises(Exited):
        e.run()
    assert watch_exits.why and watch_exits.why[0].startswith("init_transactions has not returned")


def test_a_transactional_call_that_never_returns_exits_for_a_restart(tmp_path: Path, watch_exits: WatchExits) -> None:
    # librdkafka #5456, #5511: after a broker restart send_offsets_to_transaction can
    # block past its timeout for good; the worker's bound on the call holds all the same.
    e = engine(tmp_path, [])
    e.config = replace(e.config, transaction_retry_ms=50)
    e._call_watch = CallWatch(grace_s=0.0, check_s=0.01)
    e._call_watch.start()
    hung = lambda timeout_s: watch_exits.exited.wait(10.0)  # returns only once the watch has acted  # noqa: E731
    e._txn("send_offsets_to_transaction", hung, in_transaction=True)
    assert watch_exits.why and watch_exits.why[0].startswith("send_offsets_to_transaction has not returned")


class FakeProducer:
    """The transactional calls the engine makes, recorded; `fail` maps a call's name to
    the errors its next calls raise."""

    def __init__(self, fail: dict[str, list[KafkaError]] | None = None) -> None:
        self.fail = fail or {}
        self.calls: list[str] = []
        self.sent: list[tuple[str, bytes | None]] = []
        self.open: list[tuple[str, bytes | None]] = []
        self.batches: list[tuple[str, int, int]] = []  # (topic, partition, records) per produce_batch

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if self.fail.get(name):
            raise KafkaException(self.fail[name].pop(0))

    def begin_transaction(self) -> None:
        self._call("begin_transaction")

    def produce(self, topic: str, value: bytes | None = None, **_: Any) -> None:
        self._call("produce")
        self.open.append((topic, value))

    def produce_batch(self, topic: str, messages: list[dict[str, Any]], partition: int) -> int:
        self._call("produce_batch")
        self.open += [(topic, m["value"]) for m in messages]
        self.batches.append((topic, partition, len(messages)))
        return len(messages)

    def send_offsets_to_transaction(self, offsets: list[Any], metadata: Any, timeout: float) -> None:
        self._call("send_offsets_to_transaction")

    def commit_transaction(self, timeout: float) -> None:
        self._call("commit_transaction")
        self.sent += self.open
        self.open = []

    def abort_transaction(self, timeout: float) -> None:
        self._call("abort_transaction")
        self.open = []

    def poll(self, timeout: float) -> int:
        return 0


class FakeConsumer:
    def __init__(self) -> None:
        self.seeks: list[tuple[str, int, int]] = []

    def consumer_group_metadata(self) -> object:
        return object()

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))


def counting(tmp: Path, producer: FakeProducer) -> Engine:
    """One stage that counts its records in a table and sends one output per record."""

    def handle(batch: list[Any], task: Any) -> None:
        counts = task.table("t")
        for m in batch:
            counts.put(b"n", str(int(counts.get(b"n") or 0) + 1).encode())
            task.send(Record("out", m.key, m.value), 0)

    e = engine(tmp, [Stage("a", "in-a", handle, ("t",), ("out",))])
    e.producer, e.consumer = producer, FakeConsumer()  # type: ignore[assignment]
    e.tasks = {0: Task(0, e.tables, tmp, e.send)}
    return e


def test_an_abortable_commit_is_aborted_and_its_input_redone_from_where_it_began(
    tmp_path: Path, exits: list[str]
) -> None:
    timed_out = KafkaError(KafkaError._TIMED_OUT, "3 message(s) timed out", txn_requires_abort=True)
    producer = FakeProducer({"commit_transaction": [timed_out]})
    e = counting(tmp_path, producer)
    e._handle([FakeMessage("in-a", 0, 5), FakeMessage("in-a", 0, 6)])
    e._handle([FakeMessage("in-a", 0, 7)])
    e.commit()
    e._settle()
    assert producer.calls[-1] == "abort_transaction" and exits == []
    assert e.consumer.seeks == [("in-a", 0, 5)]  # type: ignore[attr-defined]  # the transaction's first offset
    assert e.tasks[0].table("t").get(b"n") is None  # nothing of it reached RocksDB
    assert not e._in_txn and not e._offsets and producer.sent == []
    # The redo: the same records again, over the committed state, commit once.
    e._handle([FakeMessage("in-a", 0, 5), FakeMessage("in-a", 0, 6), FakeMessage("in-a", 0, 7)])
    e.commit()
    e._settle()
    assert e.tasks[0].table("t").get(b"n") == b"3"
    assert [v for t, v in producer.sent if t == "out"] == [b"v5", b"v6", b"v7"]  # each output once


class GatedProducer(FakeProducer):
    """Its commit waits for `gate`: a transaction in flight while the loop goes on."""

    def __init__(self, fail: dict[str, list[KafkaError]] | None = None) -> None:
        super().__init__(fail)
        self.gate = threading.Event()

    def commit_transaction(self, timeout: float) -> None:
        assert self.gate.wait(10), "the test never opened the gate"
        super().commit_transaction(timeout)


def test_the_next_transaction_is_handled_while_one_commits_and_begins_at_the_producer_after_it(
    tmp_path: Path, exits: list[str]
) -> None:
    producer = GatedProducer()
    e = counting(tmp_path, producer)
    counts = e.tasks[0].table("t")
    e._handle([FakeMessage("in-a", 0, 5)])
    e.commit()  # in flight until the gate opens
    e._handle([FakeMessage("in-a", 0, 6)])
    assert counts.get(b"n") == b"2" and counts.store.get(b"n") is None  # read through the sealed write
    assert producer.calls.count("begin_transaction") == 1 and ("out", b"v6") not in producer.open  # its send waits
    producer.gate.set()
    e._settle()
    assert counts.store.get(b"n") == b"1"  # the first, stored once committed; the second still pending
    assert producer.calls[-2:] == ["begin_transaction", "produce"] and producer.open == [("out", b"v6")]
    e.commit()
    e._settle()
    assert [v for t, v in producer.sent if t == "out"] == [b"v5", b"v6"] and counts.store.get(b"n") == b"2"
    assert exits == []


def test_a_failed_commit_aborts_the_transaction_handled_over_it_and_both_are_redone(
    tmp_path: Path, exits: list[str]
) -> None:
    producer = GatedProducer({"commit_transaction": [KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)]})
    e = counting(tmp_path, producer)
    e.tasks[1] = Task(1, e.tables, tmp_path / "1", e.send)
    e._handle([FakeMessage("in-a", 0, 5)])
    e.commit()
    e._handle([FakeMessage("in-a", 0, 6), FakeMessage("in-a", 1, 2)])  # read the first's write
    producer.gate.set()
    e._settle()
    assert producer.calls[-1] == "abort_transaction" and producer.calls.count("begin_transaction") == 1
    assert sorted(e.consumer.seeks) == [("in-a", 0, 5), ("in-a", 1, 2)]  # type: ignore[attr-defined]
    assert all(e.tasks[p].table("t").get(b"n") is None for p in (0, 1)) and not e._in_txn
    e._handle([FakeMessage("in-a", 0, 5), FakeMessage("in-a", 0, 6), FakeMessage("in-a", 1, 2)])
    e.commit()
    e._settle()
    assert sorted(v for t, v in producer.sent if t == "out") == [b"v2", b"v5", b"v6"] and exits == []
    assert e.tasks[0].table("t").store.get(b"n") == b"2" and e.tasks[1].table("t").store.get(b"n") == b"1"


class PlannedProducer(FakeProducer):
    """Its n-th commit fails abortably if `plan[n]` says so."""

    def __init__(self, plan: list[bool]) -> None:
        super().__init__()
        self.plan = plan

    def commit_transaction(self, timeout: float) -> None:
        if self.plan and self.plan.pop(0):
            self.calls.append("commit_transaction")
            raise KafkaException(KafkaError(KafkaError._STATE, "x", txn_requires_abort=True))
        super().commit_transaction(timeout)


class SeekingConsumer(FakeConsumer):
    """One partition of `end` records, read from a position that a seek moves."""

    def __init__(self, end: int) -> None:
        super().__init__()
        self.position, self.end = 0, end

    def read(self, n: int) -> list[FakeMessage]:
        batch = [FakeMessage("in-a", 0, o) for o in range(self.position, min(self.end, self.position + n))]
        self.position += len(batch)
        return batch

    def seek(self, tp: TopicPartition) -> None:
        super().seek(tp)
        self.position = tp.offset


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    end=st.integers(1, 30),
    steps=st.lists(st.tuples(st.integers(1, 4), st.booleans()), min_size=1, max_size=40),
    plan=st.lists(st.booleans(), max_size=20),
)
def test_with_commits_in_flight_and_any_of_them_failing_each_record_takes_effect_once_in_order(
    tmp_path: Path, exits: list[str], end: int, steps: list[tuple[int, bool]], plan: list[bool]
) -> None:
    assume("True, True, True, True" not in str(plan))  # past TXN_ABORTS_IN_ROW_MAX in a row the worker exits
    producer = PlannedProducer(plan)
    e = counting(tmp_path / f"{len(list(tmp_path.iterdir()))}", producer)
    consumer = SeekingConsumer(end)
    e.consumer = consumer  # type: ignore[assignment]
    # The loop's order: settle what is decided, read, handle, maybe commit (the engine waits
    # only at the next commit: here each commit leaves its transaction in flight).
    for n, commit in steps + [(4, True)] * (2 * end + 2 * len(plan) + 2):
        batch = consumer.read(n)
        if batch:
            e._handle(batch)  # type: ignore[arg-type]
        if commit:
            e.commit()
        if consumer.position == end and not e._in_txn and e._flight is not None:
            e._settle()
        if consumer.position == end and not e._in_txn and e._flight is None:
            break
    assert [v for t, v in producer.sent if t == "out"] == [b"v%d" % o for o in range(end)]
    assert e.tasks[0].table("t").store.get(b"n") == str(end).encode() and exits == []


def test_a_tasks_changelog_records_go_in_one_batch_per_topic_to_its_partition_at_the_commit(
    tmp_path: Path, exits: list[str]
) -> None:
    producer = FakeProducer()
    e = counting(tmp_path, producer)
    e.tasks[3] = Task(3, e.tables, tmp_path / "3", e.send)
    e._handle([FakeMessage("in-a", 0, 5), FakeMessage("in-a", 0, 6), FakeMessage("in-a", 3, 9)])
    assert producer.batches == []  # table writes wait for the commit
    e.commit()
    e._settle()
    assert sorted(producer.batches) == [("t-changelog", 0, 1), ("t-changelog", 3, 1)]  # a key's last value, once
    assert sorted(v for t, v in producer.sent if t == "t-changelog") == [b"1", b"2"]
    assert producer.calls[-1] == "commit_transaction" and exits == []


def test_a_refused_changelog_batch_aborts_the_transaction(tmp_path: Path, exits: list[str]) -> None:
    producer = FakeProducer({"produce_batch": [KafkaError(KafkaError._STATE, "transaction failed")]})
    e = counting(tmp_path, producer)
    e._handle([FakeMessage("in-a", 0, 5)])
    e.commit()
    e._settle()
    assert producer.calls[-2:] == ["produce_batch", "abort_transaction"] and producer.sent == []
    assert e.consumer.seeks == [("in-a", 0, 5)] and e.tasks[0].table("t").get(b"n") is None  # type: ignore[attr-defined]


def test_a_refused_send_aborts_the_transaction_at_the_end_of_the_batch(tmp_path: Path, exits: list[str]) -> None:
    producer = FakeProducer({"produce": [KafkaError(KafkaError._STATE, "transaction failed")]})
    e = counting(tmp_path, producer)
    e._handle([FakeMessage("in-a", 0, 5), FakeMessage("in-a", 0, 6)])
    assert producer.calls == ["begin_transaction", "produce", "abort_transaction"]  # the second send is not tried
    assert e.consumer.seeks == [("in-a", 0, 5)] and not e._in_txn  # type: ignore[attr-defined]


def test_a_revocation_aborts_without_seeking(tmp_path: Path, exits: list[str]) -> None:
    abortable = KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)
    producer = FakeProducer({"send_offsets_to_transaction": [abortable]})
    e = counting(tmp_path, producer)
    e._handle([FakeMessage("in-a", 0, 5)])
    e._on_revoke(e.consumer, [])  # type: ignore[arg-type]
    assert producer.calls[-1] == "abort_transaction" and e.consumer.seeks == []  # type: ignore[attr-defined]


def test_a_zombie_exits_if_its_abort_is_fenced(tmp_path: Path, exits: list[str]) -> None:
    producer = FakeProducer(
        {
            "commit_transaction": [KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)],
            "abort_transaction": [KafkaError(KafkaError._FENCED, "fenced", fatal=True)],
        }
    )
    e = counting(tmp_path, producer)
    e._handle([FakeMessage("in-a", 0, 5)])
    with pytest.raises(Exited):
        e.commit()
        e._settle()
    assert "abort_transaction failed" in exits[0] and producer.sent == []


def test_aborts_in_a_row_end_in_a_restart(tmp_path: Path, exits: list[str]) -> None:
    abortable = KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)
    producer = FakeProducer({"commit_transaction": [abortable] * (engine_module.TXN_ABORTS_IN_ROW_MAX + 1)})
    e = counting(tmp_path, producer)
    for _ in range(engine_module.TXN_ABORTS_IN_ROW_MAX):
        e._handle([FakeMessage("in-a", 0, 5)])
        e.commit()
        e._settle()
    assert exits == []
    e._handle([FakeMessage("in-a", 0, 5)])
    with pytest.raises(Exited):
        e.commit()
        e._settle()
    assert "aborted in a row" in exits[0]


def test_a_handler_gets_only_the_tables_and_topics_its_stage_declares(tmp_path: Path) -> None:
    from streams.runtime.state import UndeclaredError

    def reads(table: str, topic: str):  # type: ignore[no-untyped-def]
        def handle(batch, task) -> None:  # type: ignore[no-untyped-def]
            task.table(table).put(b"k", b"v")
            task.send(Record(topic, b"k", b"v"), 0)

        return handle

    ok = Stage("a", "in-a", reads("t", "out"), ("t",), ("out",))
    for stage in (
        ok,
        Stage("b", "in-a", reads("u", "out"), ("t",), ("out",)),
        Stage("c", "in-a", reads("t", "elsewhere"), ("t",), ("out",)),
    ):
        e = engine(tmp_path, [stage])
        e._begin = lambda: None  # type: ignore[method-assign]
        e.send = lambda *a: None  # type: ignore[method-assign]
        e.tasks = {0: Task(0, e.tables, tmp_path / stage.name, e.send)}
        if stage is ok:
            e._handle([FakeMessage("in-a", 0, 1)])
            assert e.tasks[0].table("t").pending == {b"k": b"v"}
        else:
            with pytest.raises(UndeclaredError, match=f"stage {stage.name}"):
                e._handle([FakeMessage("in-a", 0, 1)])


def test_the_kept_tables_are_exactly_the_declared_ones(tmp_path: Path) -> None:
    config = engine(tmp_path, [Stage("a", "in-a", lambda b, t: None, ("t",))]).config
    with pytest.raises(AssertionError, match="declared by the stages"):
        Engine(
            config, [Stage("a", "in-a", lambda b, t: None, ("t",))], {"t": "t-changelog", "orphan": "orphan-changelog"}
        )


# Each hop's records are visible to the next stage only once its transaction commits, so a
# record must never sit in an open transaction waiting on the loop itself: a poll that
# outlasts the idle deadline, or an idle transaction left for the interval (or a timer).
# A create crosses three hops: such a wait is paid three times (docs/decisions.md, Hop budget).
@given(
    idle_ms=st.integers(0, 1_000),
    extra_ms=st.integers(0, 29_000),
    age_ms=st.integers(0, 60_000),
)
def test_an_open_transaction_is_never_kept_past_its_idle_deadline(idle_ms: int, extra_ms: int, age_ms: int) -> None:
    idle_s, interval_s, age_s = idle_ms / 1000, (idle_ms + extra_ms) / 1000, age_ms / 1000
    wait_s = poll_wait_s(age_s, idle_s)
    assert 0 <= wait_s and age_s + wait_s <= max(age_s, idle_s) + 1e-9  # the wait ends by the deadline (float sums)
    # Nothing came during the wait: an idle transaction commits once it is idle_s old.
    assert commit_due(age_s + wait_s, idle=True, interval_s=interval_s, idle_s=idle_s, over_bounds=False) == (
        age_s + wait_s >= idle_s
    )
    # Busy (records kept coming): it commits at the interval, so batches grow under load.
    assert commit_due(age_s, idle=False, interval_s=interval_s, idle_s=idle_s, over_bounds=False) == (
        age_s >= interval_s
    )
    assert commit_due(age_s, idle=False, interval_s=interval_s, idle_s=idle_s, over_bounds=True)


def test_without_a_transaction_the_loop_waits_a_short_poll() -> None:
    assert poll_wait_s(None, 0.005) == IDLE_POLL_S <= 0.1  # then periodic work and the stop flag


def test_watch_gc_freezes_what_exists_and_times_each_collection_once() -> None:
    import gc

    from streams import metrics
    from streams.runtime.engine import watch_gc

    def collections() -> float:
        return sum(s.value for m in metrics.GC_PAUSE.collect() for s in m.samples if s.name.endswith("_count"))

    try:
        watch_gc()
        watch_gc()  # a second run of the loop in one process: still one timer
        assert gc.get_freeze_count() > 0
        before = collections()
        gc.collect()
        assert collections() == before + 1
    finally:
        gc.unfreeze()


class PausingConsumer:
    def __init__(self) -> None:
        self.resumed: list[tuple[str, int]] = []

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]


EOF_EVENT = KafkaError(KafkaError._PARTITION_EOF)


def catching_up(tmp: Path, catch_up: CatchUp) -> tuple[Engine, PausingConsumer]:
    """An engine whose partitions 0 and 1 of in-r are held until in-f is read to its ends."""
    stages = [Stage("feeds", "in-f", lambda b, t: None, feeds=True), Stage("reads", "in-r", lambda b, t: None)]
    e = engine(tmp, stages)
    e._begin = lambda: None  # type: ignore[method-assign]
    e.tasks = {p: Task(p, e.tables, tmp, e.send) for p in (0, 1)}
    fake = PausingConsumer()
    e.consumer = fake  # type: ignore[assignment]
    e._catch_up = catch_up
    return e, fake


def test_held_partitions_resume_when_their_feeding_partition_is_read_to_its_end(tmp_path: Path) -> None:
    e, fake = catching_up(tmp_path, CatchUp({("in-f", 0): 11, ("in-f", 1): 3}, {0: [("in-r", 0)], 1: [("in-r", 1)]}))
    # A record short of the end releases nothing; an end-of-partition event at the end does.
    assert e._handle([FakeMessage("in-f", 0, 9)]) == 1
    assert fake.resumed == []
    assert e._handle([FakeMessage("in-f", 1, 3, EOF_EVENT), FakeMessage("in-f", 0, 10, EOF_EVENT)]) == 0
    assert fake.resumed == [("in-r", 1)]
    assert e._handle([FakeMessage("in-f", 0, 11, EOF_EVENT)]) == 0
    assert fake.resumed == [("in-r", 1), ("in-r", 0)]
    assert e._catch_up is None  # done: the loop stops watching


def test_a_catch_up_that_ends_mid_batch_takes_the_rest_of_the_batch_in_stride(tmp_path: Path) -> None:
    e, fake = catching_up(tmp_path, CatchUp({("in-f", 0): 2}, {0: [("in-r", 0)], 1: [("in-r", 1)]}))
    # The record ends the catch-up; the events after it in the same batch are no longer watched.
    batch = [FakeMessage("in-f", 0, 1), FakeMessage("in-f", 1, 5, EOF_EVENT), FakeMessage("in-r", 1, 0, EOF_EVENT)]
    assert e._handle(batch) == 1
    assert sorted(fake.resumed) == [("in-r", 0), ("in-r", 1)]
    assert e._catch_up is None


class HoldingConsumer(FakeConsumer):
    def __init__(self) -> None:
        super().__init__()
        self.paused: list[tuple[str, int]] = []
        self.resumed: list[tuple[str, int]] = []

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused += [(tp.topic, tp.partition) for tp in partitions]

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resumed += [(tp.topic, tp.partition) for tp in partitions]


def failing_commit(tmp: Path, partitions: tuple[int, ...]) -> tuple[Engine, HoldingConsumer]:
    """An engine whose first commit fails abortably; in-f feeds the table in-r reads."""
    abortable = KafkaError(KafkaError._STATE, "x", txn_requires_abort=True)
    stages = [Stage("feeds", "in-f", lambda b, t: None, feeds=True), Stage("reads", "in-r", lambda b, t: None)]
    e = engine(tmp, stages)
    fake = HoldingConsumer()
    e.producer, e.consumer = FakeProducer({"commit_transaction": [abortable]}), fake  # type: ignore[assignment]
    e.tasks = {p: Task(p, e.tables, tmp, e.send) for p in partitions}
    return e, fake


def test_a_redone_transaction_holds_its_tasks_until_the_feeding_records_are_read_again(
    tmp_path: Path, exits: list[str]
) -> None:
    e, fake = failing_commit(tmp_path, (0, 1))
    # A registration and a create in one transaction, which aborts: both are redone.
    e._handle([FakeMessage("in-f", 0, 4), FakeMessage("in-r", 0, 7), FakeMessage("in-r", 1, 3)])
    e.commit()
    e._settle()
    assert sorted(fake.seeks) == [("in-f", 0, 4), ("in-r", 0, 7), ("in-r", 1, 3)]
    assert fake.paused == [("in-r", 0)]  # partition 1's task read no feeding record: not held
    assert e._catch_up is not None and e._catch_up.waiting_for() == {("in-f", 0): 5}
    e._handle([FakeMessage("in-r", 1, 3)])
    assert fake.resumed == []
    e._handle([FakeMessage("in-f", 0, 4)])  # the registration again: the create may follow
    assert fake.resumed == [("in-r", 0)] and e._catch_up is None


def test_a_transaction_given_up_at_a_revocation_holds_nothing(tmp_path: Path, exits: list[str]) -> None:
    e, fake = failing_commit(tmp_path, (0,))
    e._handle([FakeMessage("in-f", 0, 4), FakeMessage("in-r", 0, 7)])
    e._on_revoke(fake, [])  # type: ignore[arg-type]
    assert fake.seeks == [] and fake.paused == [] and e._catch_up is None


def test_an_assignment_whose_partition_ends_the_broker_does_not_answer_exits_for_a_restart(
    tmp_path: Path, exits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stages = [Stage("feeds", "in-f", lambda b, t: None, feeds=True), Stage("reads", "in-r", lambda b, t: None)]
    e = engine(tmp_path, stages)

    def unanswered(*_: Any, **__: Any) -> dict[tuple[str, int], int]:
        raise KafkaException(KafkaError(KafkaError._TIMED_OUT))

    monkeypatch.setattr(engine_module, "high_watermarks", unanswered)
    with pytest.raises(Exited):
        e._on_assign(PausingConsumer(), [TopicPartition("in-f", 0), TopicPartition("in-r", 0)])  # type: ignore[arg-type]
    assert exits and "the partitions' ends" in exits[0] and not e.ready
