"""The catch-up after an assignment (streams/runtime/catchup.py): a task's held
partitions are released once, and only when every feeding partition of that task has
reached the end it had at the assignment."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.catchup import CatchUp

HELD = {0: [("cmd", 0), ("pay", 0)], 1: [("cmd", 1), ("pay", 1)]}


def test_a_task_is_released_when_all_its_feeding_partitions_reach_their_ends() -> None:
    c = CatchUp({("merchants", 0): 5, ("labels", 0): 3, ("merchants", 1): 2, ("labels", 1): 0}, HELD)
    assert c.released() == []
    assert c.reached("merchants", 0, 5) == []  # labels 0 is still short
    assert c.reached("labels", 0, 2) == []  # short of its end
    assert c.reached("labels", 0, 3) == [("cmd", 0), ("pay", 0)]
    assert c.reached("merchants", 1, 7) == [("cmd", 1), ("pay", 1)]  # past the end counts (the records since)
    assert c.done and c.held() == [] and c.waiting_for() == {}


def test_empty_feeding_partitions_hold_nothing_and_other_partitions_are_ignored() -> None:
    c = CatchUp({("merchants", 0): 0, ("merchants", 1): 4}, HELD)
    assert c.released() == [("cmd", 0), ("pay", 0)]
    assert c.released() == []  # once
    assert c.reached("cmd", 1, 100) == []  # not a feeding partition
    assert c.waiting_for() == {("merchants", 1): 4}
    assert c.held() == [("cmd", 1), ("pay", 1)]
    assert not c.done


ends = st.dictionaries(
    st.tuples(st.sampled_from(["merchants", "labels"]), st.integers(0, 3)), st.integers(0, 20), min_size=1
)


@given(ends, st.lists(st.tuples(st.sampled_from(["merchants", "labels"]), st.integers(0, 3), st.integers(0, 25))))
def test_each_held_partition_is_released_once_and_never_before_its_task_is_fed(
    ends: dict[tuple[str, int], int], reads: list[tuple[str, int, int]]
) -> None:
    held = {p: [(f"cmd-{p}", p)] for p in range(4)}
    c = CatchUp(ends, held)
    released = c.released()
    at = dict.fromkeys(ends, 0)
    for topic, partition, offset in reads:
        if (topic, partition) in at:
            at[(topic, partition)] = max(at[(topic, partition)], offset)
        released += c.reached(topic, partition, offset)
    assert len(released) == len(set(released))
    for p in range(4):
        fed = all(at[tp] >= end for tp, end in ends.items() if tp[1] == p and end > 0)
        assert ((f"cmd-{p}", p) in released) == fed


def test_a_redo_holds_its_tasks_again_until_the_later_end_is_reached() -> None:
    c = CatchUp({("merchants", 0): 5}, HELD)
    assert c.released() == [("cmd", 1), ("pay", 1)]
    assert c.reached("merchants", 0, 5) == [("cmd", 0), ("pay", 0)]  # released, then the transaction aborts
    assert c.hold({("merchants", 0): 9}, {0: [("cmd", 0), ("pay", 0)]}) == [("cmd", 0), ("pay", 0)]
    assert c.hold({("merchants", 0): 7, ("merchants", 1): 2}, {0: [("cmd", 0)], 1: [("cmd", 1)]}) == [("cmd", 1)]
    assert c.waiting_for() == {("merchants", 0): 9, ("merchants", 1): 2}  # the later of two ends
    assert c.reached("merchants", 0, 7) == []
    assert c.reached("merchants", 0, 9) == [("cmd", 0), ("pay", 0)]
    assert c.reached("merchants", 1, 2) == [("cmd", 1)]
    assert c.done


@given(ends, ends, st.lists(st.tuples(st.sampled_from(["merchants", "labels"]), st.integers(0, 3), st.integers(0, 25))))
def test_after_a_hold_no_task_is_released_before_it_reaches_both_ends(
    first: dict[tuple[str, int], int], again: dict[tuple[str, int], int], reads: list[tuple[str, int, int]]
) -> None:
    c = CatchUp(first, {p: [(f"cmd-{p}", p)] for p in range(4)})
    c.released()
    c.hold(again, {p: [(f"cmd-{p}", p)] for _, p in again})
    released = c.released()
    at: dict[tuple[str, int], int] = {}
    for topic, partition, offset in reads:
        at[(topic, partition)] = max(at.get((topic, partition), 0), offset)
        released += c.reached(topic, partition, offset)
    assert len(released) == len(set(released))
    for p in range(4):
        needed = [(tp, end) for e in (first, again) for tp, end in e.items() if tp[1] == p and end > 0]
        if (f"cmd-{p}", p) in released:
            assert all(at.get(tp, 0) >= end for tp, end in needed)
