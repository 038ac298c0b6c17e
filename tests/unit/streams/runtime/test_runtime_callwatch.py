"""The watch over a transactional call (streams/runtime/callwatch.py): a call past its
timeout and the grace exits the worker; one that returns, or fails, disarms it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.callwatch import CallWatch
from tests.unit.streams.runtime.runtime_support import WatchExits

seconds = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)


@given(timeout_s=seconds, grace_s=seconds, elapsed_s=seconds)
def test_an_armed_call_is_overdue_exactly_past_its_timeout_and_the_grace(
    timeout_s: float, grace_s: float, elapsed_s: float
) -> None:
    watch = CallWatch(grace_s=grace_s)
    with watch.watching("send_offsets_to_transaction", timeout_s):
        armed = watch._armed
        assert armed is not None
        _, called_s, overdue_at_s = armed
        why = watch.overdue(called_s + elapsed_s)
        assert (why is not None) == (called_s + elapsed_s >= overdue_at_s)
        assert overdue_at_s == called_s + timeout_s + grace_s
        assert why is None or why.startswith("send_offsets_to_transaction has not returned")
    assert watch.overdue(called_s + elapsed_s + timeout_s + grace_s) is None  # returned: disarmed


def test_a_call_that_raises_disarms_the_watch() -> None:
    watch = CallWatch(grace_s=0.0)
    with pytest.raises(RuntimeError), watch.watching("commit_transaction", 0.0):
        raise RuntimeError("the call failed")
    assert watch.overdue(float("inf")) is None


def test_nothing_armed_is_never_overdue() -> None:
    assert CallWatch().overdue(float("inf")) is None


def test_the_watch_thread_exits_the_worker_while_a_call_hangs(watch_exits: WatchExits) -> None:
    watch = CallWatch(grace_s=0.0, check_s=0.01)
    watch.start()
    with watch.watching("send_offsets_to_transaction", 0.05):
        # The hung call: it returns only once the watch has acted (or the bound says it never did).
        assert watch_exits.exited.wait(10.0)
    assert watch_exits.why[0].startswith("send_offsets_to_transaction has not returned")
