"""Event-time timers of one partition, kept in a table so they survive restarts.

A stage pushes a timer (due at an event time) while handling an event; on every
later event of the same partition it pops, at most `SWEEP_MAX` per queue, the
timers whose due time the partition's watermark has reached. One FIFO queue per
kind: a kind's delay is constant, so a queue is ordered by due time as far as its
partition's event times are; a timer behind a later one fires late, never early.

The watermark is the largest event time seen, but never more than
`MAX_FUTURE_SKEW_MS` past the Kafka record's own timestamp, so one command dated
far in the future cannot fire every timer of its partition at once.

Storage (keys carry the partition, so a scan of one partition's timers is a prefix):
  b"<p>/wm"               -> watermark, decimal ms
  b"<p>/<kind>/ptr"       -> b"<head> <tail>": queue slots head..tail-1 are live
  b"<p>/<kind>/<slot>"    -> JSON {"due_ms", "ref"}
`TimerStore` reads through pending writes, so a push and a pop of one event agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.state import state_json, state_loads

KINDS = ("expire", "forget", "unroute", "crypto")  # crypto: look at a deposit address again
# Per event and queue: at most this many timers fire, so no event does unbounded work;
# a queue drains as long as events push fewer timers than this on average.
SWEEP_MAX = 8
MAX_FUTURE_SKEW_MS = 30 * 24 * 3600 * 1000

Get = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class Timer:
    """Act on `ref` once the partition's event time reaches `due_ms`."""

    kind: str  # one of KINDS
    due_ms: int
    ref: str


class TimerStore:
    def __init__(self, get: Get, partition: int) -> None:
        self._get_stored = get
        self.partition = partition
        self.pending: dict[bytes, bytes | None] = {}
        self._wm_key = f"{partition}/wm".encode()

    def _key(self, kind: str, part: str | int) -> bytes:
        # An f-string: keys are built several times per event (a str.join over map was ~2 µs).
        return f"{self.partition}/{kind}/{part}".encode()

    def _get(self, key: bytes) -> bytes | None:
        return self.pending[key] if key in self.pending else self._get_stored(key)

    def watermark_ms(self) -> int:
        raw = self._get(self._wm_key)
        return int(raw) if raw is not None else 0

    def advance(self, event_ms: int, record_ts_ms: int) -> int:
        """Move the watermark for an event; returns the watermark."""
        wm = max(self.watermark_ms(), min(event_ms, record_ts_ms + MAX_FUTURE_SKEW_MS))
        self.pending[self._wm_key] = str(wm).encode()
        return wm

    def _pointers(self, kind: str) -> tuple[int, int]:
        raw = self._get(self._key(kind, "ptr"))
        if raw is None:
            return 0, 0
        head, tail = map(int, raw.split())
        assert 0 <= head <= tail, (kind, head, tail)
        return head, tail

    def push(self, timer: Timer) -> None:
        assert timer.kind in KINDS, timer.kind
        head, tail = self._pointers(timer.kind)
        self.pending[self._key(timer.kind, tail)] = state_json({"due_ms": timer.due_ms, "ref": timer.ref})
        self.pending[self._key(timer.kind, "ptr")] = f"{head} {tail + 1}".encode()

    def pop_due(self, kind: str, watermark_ms: int, limit: int = SWEEP_MAX) -> list[Timer]:
        head, tail = self._pointers(kind)
        fired: list[Timer] = []
        while head < tail and len(fired) < limit:
            raw = self._get(self._key(kind, head))
            assert raw is not None, f"timer slot {kind}/{head} of partition {self.partition} is missing"
            slot = state_loads(raw)
            if slot["due_ms"] > watermark_ms:
                break
            fired.append(Timer(kind, slot["due_ms"], slot["ref"]))
            self.pending[self._key(kind, head)] = None
            head += 1
        if fired:
            self.pending[self._key(kind, "ptr")] = f"{head} {tail}".encode()
        return fired

    def depth(self, kind: str) -> int:
        head, tail = self._pointers(kind)
        return tail - head
