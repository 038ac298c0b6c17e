"""The origin header: when a command entered the pipeline, carried stage to stage."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.eos import ORIGIN_HEADER, origin_ms


def msg(timestamp_s: float, headers: object) -> SimpleNamespace:
    return SimpleNamespace(timestamp=timestamp_s, headers=headers)


def test_the_first_hop_starts_the_clock_at_its_own_timestamp() -> None:
    assert origin_ms(msg(1_700_000_000.25, None)) == 1_700_000_000_250
    assert origin_ms(msg(1_700_000_000.25, [])) == 1_700_000_000_250


def test_a_later_hop_keeps_the_origin_in_either_header_shape() -> None:
    assert origin_ms(msg(1_700_000_009.0, [("other", b"x"), (ORIGIN_HEADER, b"1700000000250")])) == 1_700_000_000_250
    assert origin_ms(msg(1_700_000_009.0, {ORIGIN_HEADER: b"1700000000250"})) == 1_700_000_000_250


def test_a_garbled_origin_restarts_the_clock_instead_of_failing() -> None:
    assert origin_ms(msg(1_700_000_009.0, [(ORIGIN_HEADER, b"yesterday")])) == 1_700_000_009_000


# --- the transaction lock ---


def test_a_free_lock_is_taken_without_yielding_to_the_loop() -> None:
    import asyncio

    from streams.eos import _acquire

    async def run() -> list[str]:
        seen: list[str] = []
        lock = asyncio.Lock()

        async def other() -> None:
            seen.append("other task ran")

        task = asyncio.ensure_future(other())
        await _acquire(lock, "t/0")
        seen.append("acquired")  # before `other` had a turn: _acquire never suspended
        assert lock.locked()
        lock.release()
        await task
        return seen

    assert asyncio.run(run()) == ["acquired", "other task ran"]


def test_a_held_lock_is_waited_for_and_then_taken() -> None:
    import asyncio

    from streams.eos import _acquire

    async def run() -> bool:
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.ensure_future(_acquire(lock, "t/0"))

        async def queued() -> None:  # until the waiter stands in the lock's queue
            while not lock._waiters:
                await asyncio.sleep(0)  # a turn of the loop, not a timed wait

        await asyncio.wait_for(queued(), timeout=5)
        assert not waiter.done()  # the holder (a commit) still has it
        lock.release()
        await asyncio.wait_for(waiter, timeout=5)
        return lock.locked()

    assert asyncio.run(run())


# --- no commit over an undelivered record ---


def test_a_commit_over_an_undelivered_record_exits_the_worker_instead(monkeypatch) -> None:
    import asyncio

    import pytest
    from aiokafka.errors import MessageSizeTooLargeError
    from aiokafka.producer.transaction_manager import TransactionResult

    from streams import eos

    committed: list = []

    class Accumulator:
        async def flush_for_commit(self) -> None:
            pass

    class Sender:  # aiokafka's Sender, as far as the guard touches it
        _message_accumulator = Accumulator()
        _txn_manager = SimpleNamespace(transactional_id="app-group-3")

        async def _do_txn_commit(self, commit_result):  # type: ignore[no-untyped-def]
            committed.append(commit_result)

    eos.guard_commits(Sender)
    eos.guard_commits(Sender)  # once per process: a second install changes nothing
    monkeypatch.setattr(eos.os, "_exit", lambda code: (_ for _ in ()).throw(SystemExit(code)))
    monkeypatch.setattr(eos.logging, "shutdown", lambda: None)
    sender, manager = Sender(), Sender._txn_manager

    async def commit(result, *outcomes) -> None:  # type: ignore[no-untyped-def]
        futures = []
        for outcome in outcomes:
            f = asyncio.get_running_loop().create_future()
            f.set_exception(outcome) if isinstance(outcome, BaseException) else f.set_result(outcome)
            futures.append(f)
        setattr(manager, eos._DELIVERIES, futures)
        await sender._do_txn_commit(result)

    asyncio.run(commit(TransactionResult.COMMIT, "ok", "ok"))
    assert committed == [TransactionResult.COMMIT] and getattr(manager, eos._DELIVERIES) == []
    with pytest.raises(SystemExit) as exited:
        asyncio.run(commit(TransactionResult.COMMIT, "ok", MessageSizeTooLargeError()))
    assert exited.value.code == eos.EXIT_STALLED and committed == [TransactionResult.COMMIT]  # not committed
    asyncio.run(commit(TransactionResult.ABORT, MessageSizeTooLargeError()))  # an abort loses nothing: it goes ahead
    assert committed == [TransactionResult.COMMIT, TransactionResult.ABORT]


# --- an event a rebalance overtook is dropped and never acked ---


def test_a_dropped_event_is_never_acked_so_its_offset_is_never_committed() -> None:
    from faust.types.tuples import TP, ConsumerMessage

    from streams.eos import still_current

    class Consumer:
        def __init__(self) -> None:
            self.acked: list[int] = []

        def ack(self, message) -> bool:  # type: ignore[no-untyped-def]
            self.acked.append(message.offset)
            return True

    def event(offset: int, generation: int) -> SimpleNamespace:
        message = ConsumerMessage("t", 0, offset, 0.0, 0, None, b"k", b"v", None, tp=TP("t", 0), generation_id=generation)
        return SimpleNamespace(message=message)

    consumer = Consumer()
    batch = [event(10, 4), event(11, 4), event(12, 5)]
    kept = [e for e in batch if still_current(e, 5, True)]
    assert [e.message.offset for e in kept] == [12]
    assert not still_current(event(13, 5), 5, False)  # flow control suspended: a rebalance under way
    for e in batch:  # what take_events does with the whole batch once it is handled
        e.message.ack(consumer)
    assert consumer.acked == [12]  # 10 and 11 were dropped: never marked safe to commit


@settings(max_examples=300)
@given(st.data())
def test_a_redelivered_bad_message_is_dead_lettered_once(data: st.DataObject) -> None:
    """One partition read in order: a first owner handles offsets [0, handled) and its
    transactions (letters and marks) commit, but the source offset commits only at
    `committed`; the next owner reads again from there with the marks restored."""
    from streams.eos import dead_lettered_before

    n = data.draw(st.integers(1, 40))
    bad = data.draw(st.sets(st.integers(0, n - 1)))
    handled = data.draw(st.integers(0, n))
    committed = data.draw(st.integers(0, handled))
    letters: Counter[int] = Counter()
    mark: bytes | None = None
    for offsets in (range(handled), range(committed, n)):
        for offset in offsets:
            if offset in bad and not dead_lettered_before(mark, offset):
                letters[offset] += 1
                mark = str(offset).encode()
    assert letters == Counter(bad)
