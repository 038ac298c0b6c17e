"""Event-time timer queues: order, bounds, the watermark cap, and persistence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.timers import MAX_FUTURE_SKEW_MS, SWEEP_MAX, Timer, TimerStore


def commit(store: dict[bytes, bytes], timers: TimerStore) -> None:
    """What the emitter does with the pending writes: None deletes."""
    for k, v in timers.pending.items():
        if v is None:
            store.pop(k, None)
        else:
            store[k] = v


def test_timers_fire_in_order_once_the_watermark_reaches_them() -> None:
    store: dict[bytes, bytes] = {}
    t = TimerStore(store.get, 3)
    for due in (10, 20, 30):
        t.push(Timer("forget", due, f"r{due}"))
    assert t.pop_due("forget", 19) == [Timer("forget", 10, "r10")]
    commit(store, t)

    t = TimerStore(store.get, 3)  # a later event reads the stored queue
    assert t.depth("forget") == 2
    assert t.pop_due("forget", 9_999) == [Timer("forget", 20, "r20"), Timer("forget", 30, "r30")]
    commit(store, t)
    assert set(store) == {b"3/forget/ptr"}  # fired slots are deleted
    assert TimerStore(store.get, 3).pop_due("forget", 10**12) == []


def test_a_sweep_is_bounded() -> None:
    t = TimerStore({}.get, 0)
    for i in range(SWEEP_MAX * 2 + 1):
        t.push(Timer("expire", i, str(i)))
    assert len(t.pop_due("expire", 10**9)) == SWEEP_MAX
    assert t.depth("expire") == SWEEP_MAX + 1


def test_partitions_and_kinds_do_not_share_keys() -> None:
    store: dict[bytes, bytes] = {}
    a, b = TimerStore(store.get, 1), TimerStore(store.get, 2)
    a.push(Timer("forget", 1, "a"))
    b.push(Timer("expire", 1, "b"))
    commit(store, a)
    commit(store, b)
    assert TimerStore(store.get, 2).pop_due("forget", 5) == []
    assert TimerStore(store.get, 1).pop_due("forget", 5) == [Timer("forget", 1, "a")]


def test_the_watermark_only_moves_forward_and_is_capped_by_the_log_time() -> None:
    store: dict[bytes, bytes] = {}
    t = TimerStore(store.get, 0)
    assert t.advance(1_000, 0) == 1_000
    assert t.advance(500, 0) == 1_000  # a late event does not move it back
    far = 10**13
    assert t.advance(far, 2_000) == 2_000 + MAX_FUTURE_SKEW_MS  # a command dated far ahead
    commit(store, t)
    assert TimerStore(store.get, 0).watermark_ms() == 2_000 + MAX_FUTURE_SKEW_MS


@given(st.lists(st.tuples(st.integers(0, 1_000), st.integers(0, 1_200)), max_size=60))
def test_nothing_fires_early_and_everything_due_fires_eventually(steps: list[tuple[int, int]]) -> None:
    """Push with due = event time + 100, sweep after each event: a timer never fires
    before the watermark reaches it, and once events stop, repeated sweeps drain
    everything due."""
    store: dict[bytes, bytes] = {}
    pushed, fired = [], []
    for i, (event_ms, _) in enumerate(steps):
        t = TimerStore(store.get, 0)
        timer = Timer("forget", event_ms + 100, str(i))
        t.push(timer)
        pushed.append(timer)
        wm = t.advance(event_ms, 10**9)
        out = t.pop_due("forget", wm)
        assert all(x.due_ms <= wm for x in out)
        fired += out
        commit(store, t)
    wm = TimerStore(store.get, 0).watermark_ms()
    for _ in range(len(steps)):
        t = TimerStore(store.get, 0)
        fired += t.pop_due("forget", wm + 100)
        commit(store, t)
    assert sorted(fired, key=lambda x: x.ref) == sorted(pushed, key=lambda x: x.ref)
    assert len({x.ref for x in fired}) == len(fired)  # each once
