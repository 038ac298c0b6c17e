"""A transactional call that outlives its own timeout exits the worker for a restart.

The engine gives each blocking transactional call the seconds it may block, and
librdkafka's calls mostly return by then. send_offsets_to_transaction may not: its
second step, the offsets to the group coordinator, has no deadline of its own
(librdkafka #5456: the coordinator request's timeout is never checked), and after a
broker restart the coordinator it waits for can be a broker handle librdkafka dropped
while the broker was out of the metadata (#5511): that handle never comes up again,
and the call never returns. In the chaos run with a broker restart a worker sat in it
for 80 s and more; its consumer was not polled, so the group could not rebalance when
the other worker restarted, and both made no progress until the stall watch exited the
first one 60 s later (docs/reliability.md, finding 9).

The engine arms the watch around each call; the watch's thread exits the worker once
an armed call is `grace_s` past its timeout. Crash-only, as when a call's retries run
out: the broker aborts the open transaction and the restarted worker resumes from the
committed offsets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from streams.runtime.messages import exit_for_restart

# librdkafka answers a call that ran out of time within milliseconds of its timeout,
# but a request already on the wire may take up to socket.timeout.ms past it: slack
# for a busy box, far below the 60 s stall watch.
CALL_GRACE_S = 5.0
CALL_CHECK_S = 0.5  # how often the watch looks at the armed call


class CallWatch(threading.Thread):
    """The one transactional call under way (the engine makes one at a time) and when it
    is overdue. Daemon: the engine starts it with its other watchers."""

    def __init__(self, grace_s: float = CALL_GRACE_S, check_s: float = CALL_CHECK_S) -> None:
        super().__init__(name="txn-call-watch", daemon=True)
        assert grace_s >= 0 and check_s > 0
        self.grace_s, self.check_s = grace_s, check_s
        self._armed: tuple[str, float, float] | None = None  # name, called at, overdue at; swapped whole

    @contextmanager
    def watching(self, name: str, timeout_s: float) -> Iterator[None]:
        """Around a call given `timeout_s` to block."""
        called_s = time.monotonic()
        self._armed = (name, called_s, called_s + timeout_s + self.grace_s)
        try:
            yield
        finally:
            self._armed = None

    def overdue(self, now_s: float) -> str | None:
        """Why the worker must exit, if the armed call is past its timeout and the grace."""
        armed = self._armed
        if armed is None or now_s < armed[2]:
            return None
        name, called_s, _ = armed
        return f"{name} has not returned {now_s - called_s:.1f}s after it was called (a librdkafka hang)"

    def run(self) -> None:
        while True:
            time.sleep(self.check_s)
            why = self.overdue(time.monotonic())
            if why is not None:
                exit_for_restart(why)
