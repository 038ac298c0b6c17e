"""The webhook runner's commit rule and clock, without Kafka."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.webhooks.progress import EventClock, Offsets


def test_offset_moves_only_past_events_whose_notifications_are_all_done():
    o = Offsets()
    assert o.read(0, 10, ["a", "b"]) == ["a", "b"]
    o.read(0, 11, [])  # a merchant without endpoints: nothing to wait for
    o.read(0, 12, ["c"])
    assert o.committable() == {0: 10}
    o.done("a")
    assert o.committable() == {0: 10}, "b is still open"
    o.done("b")
    assert o.committable() == {0: 12}
    o.done("c")
    assert o.committable() == {0: 13} and o.outstanding == 0


def test_an_event_read_twice_is_notified_once_while_open_and_unknown_ids_change_nothing():
    o = Offsets()
    o.read(1, 0, ["a"])
    assert o.read(1, 1, ["a", "b"]) == ["b"]
    o.done("zz")
    o.done("a")
    o.done("a")
    assert o.committable() == {1: 1} and o.outstanding == 1


def test_revoked_partitions_are_forgotten():
    o = Offsets()
    o.read(0, 0, ["a"])
    o.read(1, 0, ["b"])
    o.revoke([0])
    o.done("a")
    assert o.committable() == {1: 0} and o.outstanding == 1


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 2), st.integers(0, 3)), min_size=1, max_size=40),
    st.randoms(use_true_random=False),
)
def test_committed_offset_never_passes_an_open_notification(reads, rnd):
    """Whatever order notifications finish in, a restart from the committable offset
    re-reads every message with an open notification (nothing is lost)."""
    o = Offsets()
    offset = {0: 0, 1: 0, 2: 0}
    where = {}
    for i, (p, n) in enumerate(reads):
        ids = [f"n{i}.{k}" for k in range(n)]
        o.read(p, offset[p], ids)
        where.update((x, (p, offset[p])) for x in ids)
        offset[p] += 1
    open_ids = list(where)
    rnd.shuffle(open_ids)
    for k, done in enumerate(open_ids):
        o.done(done)
        still = open_ids[k + 1 :]
        for p, committed in o.committable().items():
            assert all(where[x][1] >= committed for x in still if where[x][0] == p)
    assert o.committable() == {p: n for p, n in offset.items() if n}


def test_clock_is_event_time_and_runs_on_while_quiet_never_backwards():
    c = EventClock()
    assert c.now_ms(5.0) == 0, "nothing read: nothing is due"
    c.observe(1_000_000, 10.0)
    assert c.now_ms(10.0) == 1_000_000 and c.now_ms(12.5) == 1_002_500
    c.observe(999_000, 13.0)  # an older event (another partition) does not turn it back
    assert c.now_ms(13.0) == 1_003_000
    c.observe(5_000_000, 13.0)  # a replay's later event jumps it forward
    assert c.now_ms(13.0) == 5_000_000
