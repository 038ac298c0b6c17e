"""The engine's own rules, without a broker: how a batch is split into tasks, which
transaction errors are retried and which exit, and when the loop waits and commits."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from hypothesis import given
from hypothesis import strategies as st

from streams.runtime import engine as engine_module
from streams.runtime.engine import IDLE_POLL_S, Engine, EngineConfig, Stage, commit_due, poll_wait_s
from streams.runtime.state import Task


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
    assert e._txn(call) == "done" and len(calls) == 3 and exits == []
    assert all(0 < t <= engine_module.TXN_RETRY_S for t in calls)  # each call bounded by what is left


@pytest.mark.parametrize(
    "error",
    [
        KafkaError(KafkaError._FENCED, "fenced", fatal=True),
        KafkaError(KafkaError._STATE, "abort me", txn_requires_abort=True),
        KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "refused"),
    ],
)
def test_any_other_transaction_error_exits_for_a_restart(tmp_path: Path, exits: list[str], error: KafkaError) -> None:
    e = engine(tmp_path, [])
    call, calls = failing([error])
    with pytest.raises(Exited):
        e._txn(call)
    assert len(calls) == 1 and "transaction failed" in exits[0]


def test_a_retriable_error_past_the_deadline_exits(
    tmp_path: Path, exits: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    e = engine(tmp_path, [])
    monkeypatch.setattr(engine_module, "TXN_RETRY_S", 0.0)
    call, _ = failing([KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True)])
    with pytest.raises(Exited):
        e._txn(call)


def test_a_handler_gets_only_the_tables_and_topics_its_stage_declares(tmp_path: Path) -> None:
    from streams.runtime.messages import Record
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
# A create crosses four hops: such a wait is paid four times (docs/performance.md, Latency).
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
