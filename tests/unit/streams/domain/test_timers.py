"""Event-time timer queues: order, bounds, the watermark cap, and persistence."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.domain.timers import MAX_FUTURE_SKEW_MS, SWEEP_MAX, Timer, TimerStore, _parsed_pointers


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


# --- paged queues (the payments stage's): the same timers fire, in fewer keys ---

_ops = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.sampled_from(["forget", "expire"]), st.integers(0, 2_000)),
        st.tuples(st.just("pop"), st.sampled_from(["forget", "expire"]), st.integers(0, 2_500)),
        st.tuples(st.just("commit"), st.just(""), st.just(0)),
    ),
    max_size=80,
)


def _run(
    ops: list[tuple[str, str, int]], page_max_bytes: int, limit: int, parse_each_time: bool = False
) -> tuple[list[Timer], int]:
    """What fires over `ops` (a store per event, committed at each "commit"), and the
    keys written across the commits (each one a changelog record). `parse_each_time`:
    no pointer value is taken from the parsed ones kept."""
    store: dict[bytes, bytes] = {}
    t = TimerStore(store.get, 1, page_max_bytes)
    fired: list[Timer] = []
    written = 0
    for i, (op, kind, ms) in enumerate(ops + [("commit", "", 0)]):
        if parse_each_time:
            _parsed_pointers.clear()
        if op == "push":
            t.push(Timer(kind, ms, f"r{i}"))
        elif op == "pop":
            fired += t.pop_due(kind, ms, limit)
        else:
            written += len(t.pending)
            commit(store, t)
            t = TimerStore(store.get, 1, page_max_bytes)
    return fired, written


@given(_ops, st.sampled_from([1, 100, 300, 2_048]), st.integers(1, 4))
def test_a_paged_queue_fires_what_an_unpaged_one_does_in_no_more_keys(
    ops: list[tuple[str, str, int]], page_max_bytes: int, limit: int
) -> None:
    fired, written = _run(ops, 0, limit)
    paged_fired, paged_written = _run(ops, page_max_bytes, limit)
    assert paged_fired == fired
    assert paged_written <= written


@given(_ops, st.sampled_from([0, 300, 2_048]), st.integers(1, 4))
def test_a_kept_parsed_pointer_is_what_its_bytes_parse_to(
    ops: list[tuple[str, str, int]], page_max_bytes: int, limit: int
) -> None:
    assert _run(ops, page_max_bytes, limit) == _run(ops, page_max_bytes, limit, parse_each_time=True)


def test_pages_cut_the_keys_one_transaction_writes() -> None:
    store: dict[bytes, bytes] = {}
    t = TimerStore(store.get, 0, page_max_bytes=2_048)
    for i in range(100):  # a transaction's worth of commands, each pushing one forget
        t.push(Timer("forget", 1_000 + i, f"0/cmd-{i}"))
    assert len(t.pending) <= 100 // 20 + 1  # pages of ~25, and the pointer
    commit(store, t)
    t = TimerStore(store.get, 0, page_max_bytes=2_048)
    assert t.pop_due("forget", 999) == []  # nothing due: the pointer says so, no page is read
    assert t.pending == {}
    assert [x.ref for x in t.pop_due("forget", 1_009, 8)] == [f"0/cmd-{i}" for i in range(8)]
    assert [x.ref for x in t.pop_due("forget", 1_009, 8)] == ["0/cmd-8", "0/cmd-9"]


def test_a_paged_store_reads_a_queue_an_unpaged_store_wrote() -> None:
    """Restore compatibility: the payments stage's timers written before pages (one
    timer per slot, two-field pointers) fire in order, before the pages pushed after them."""
    store: dict[bytes, bytes] = {}
    old = TimerStore(store.get, 2)
    for due in (10, 20, 30):
        old.push(Timer("expire", due, f"old{due}"))
    commit(store, old)
    assert store[b"2/expire/ptr"] == b"0 3" and store[b"2/expire/0"] == b'{"due_ms":10,"ref":"old10"}'

    new = TimerStore(store.get, 2, page_max_bytes=2_048)
    assert new.pop_due("expire", 10) == [Timer("expire", 10, "old10")]
    new.push(Timer("expire", 40, "new40"))
    new.push(Timer("expire", 50, "new50"))
    commit(store, new)
    assert store[b"2/expire/3"] == b'[{"due_ms":40,"ref":"new40"},{"due_ms":50,"ref":"new50"}]'
    new = TimerStore(store.get, 2, page_max_bytes=2_048)
    assert [x.ref for x in new.pop_due("expire", 45)] == ["old20", "old30", "new40"]
    commit(store, new)
    assert store[b"2/expire/ptr"] == b"3 4 50"  # the head timer's due time rides on the pointer
    assert TimerStore(store.get, 2, page_max_bytes=2_048).pop_due("expire", 49) == []
