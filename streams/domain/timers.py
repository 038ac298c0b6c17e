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

Paged queues (`page_max_bytes` > 0; every stage's, `PAGE_MAX_BYTES`): a new slot is a page, a
JSON array of timers, oldest first, and a push appends to the tail page until it
holds `page_max_bytes`, so the events of one transaction that each push a timer
write one page key, not a slot and a pointer apiece (each key written is a changelog
record at the commit). The pointer may carry the head timer's due time,
b"<head> <tail> <due_ms>", so a sweep with nothing due reads no slot. A paged store
reads what an unpaged one wrote (single-timer slots, two-field pointers) as it is:
a queue switches to pages at its tail, with no migration. Code from before pages
cannot read them: no downgrade past this change once a page is written.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from schemas.state import ParsedOnce, state_json, state_loads

KINDS = ("expire", "forget", "unroute", "crypto")  # crypto: look at a deposit address again
# Per event and queue: at most this many timers fire, so no event does unbounded work;
# a queue drains as long as events push fewer timers than this on average.
SWEEP_MAX = 8
MAX_FUTURE_SKEW_MS = 30 * 24 * 3600 * 1000
# The largest page a store may be given: a push appends to a page without a parse,
# but a sweep that reaches one parses it whole (a timer is ~80 bytes).
PAGE_MAX_BYTES_LIMIT = 16_384
# What the stages page their queues by: every command of the keys, payments and ledger
# stages pushes a forget timer, and in pages of ~25 the commands of one transaction
# write a page key per ~25, not a slot apiece.
PAGE_MAX_BYTES = 2_048

Get = Callable[[bytes], bytes | None]


@dataclass(frozen=True)
class Timer:
    """Act on `ref` once the partition's event time reaches `due_ms`."""

    kind: str  # one of KINDS
    due_ms: int
    ref: str


# A queue's pointer changes once a page (or a pop) and is read by every event of its
# partition: each value parsed once. Several per queue, partition and kind, for a worker's partitions.
PARSED_POINTERS_MAX = 1024


def _parse_pointer(raw: bytes) -> tuple[int, int, int | None]:
    head, tail, *due = map(int, raw.split())
    assert 0 <= head <= tail and len(due) <= 1 and (not due or head < tail), raw
    return head, tail, due[0] if due else None


_parsed_pointers = ParsedOnce(_parse_pointer, PARSED_POINTERS_MAX)


class TimerStore:
    def __init__(self, get: Get, partition: int, page_max_bytes: int = 0) -> None:
        assert 0 <= page_max_bytes <= PAGE_MAX_BYTES_LIMIT, page_max_bytes
        self._get_stored = get
        self.partition = partition
        self.page_max_bytes = page_max_bytes  # 0: one timer per slot
        self.pending: dict[bytes, bytes | None] = {}
        self._wm_key = f"{partition}/wm".encode()
        self._kept_pointers: dict[str, tuple[int, int, int | None]] = {}  # as written to `pending`

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

    def _pointers(self, kind: str) -> tuple[int, int, int | None]:
        """(head, tail, the head timer's due time when the pointer carries it)."""
        kept = self._kept_pointers.get(kind)  # an event pushes and pops a queue: read it once
        if kept is not None:
            return kept
        raw = self._get(self._key(kind, "ptr"))
        if raw is None:
            return 0, 0, None
        kept = _parsed_pointers.get(raw)
        self._kept_pointers[kind] = kept
        return kept

    def _set_pointers(self, kind: str, head: int, tail: int, head_due_ms: int | None) -> None:
        if not (self.page_max_bytes and head < tail):
            head_due_ms = None
        hint = "" if head_due_ms is None else f" {head_due_ms}"
        self.pending[self._key(kind, "ptr")] = f"{head} {tail}{hint}".encode()
        self._kept_pointers[kind] = (head, tail, head_due_ms)

    def push(self, timer: Timer) -> None:
        assert timer.kind in KINDS, timer.kind
        head, tail, head_due_ms = self._pointers(timer.kind)
        entry = state_json({"due_ms": timer.due_ms, "ref": timer.ref})
        if self.page_max_bytes:
            if head < tail:
                last = self._key(timer.kind, tail - 1)
                page = self._get(last)
                if page is not None and page[:1] == b"[" and len(page) < self.page_max_bytes:
                    self.pending[last] = page[:-1] + b"," + entry + b"]"  # appended without a parse
                    return
            entry = b"[" + entry + b"]"
        self.pending[self._key(timer.kind, tail)] = entry
        self._set_pointers(timer.kind, head, tail + 1, head_due_ms if head < tail else timer.due_ms)

    def pop_due(self, kind: str, watermark_ms: int, limit: int = SWEEP_MAX) -> list[Timer]:
        head, tail, head_due_ms = self._pointers(kind)
        if head_due_ms is not None and head_due_ms > watermark_ms:
            return []
        fired: list[Timer] = []
        next_due_ms: int | None = None  # the new head timer's, when read
        while head < tail and len(fired) < limit:
            key = self._key(kind, head)
            raw = self._get(key)
            assert raw is not None, f"timer slot {kind}/{head} of partition {self.partition} is missing"
            slot = state_loads(raw)
            if isinstance(slot, dict):  # one timer
                if slot["due_ms"] > watermark_ms:
                    next_due_ms = slot["due_ms"]
                    break
                fired.append(Timer(kind, slot["due_ms"], slot["ref"]))
                self.pending[key] = None
                head += 1
                continue
            taken = 0  # a page: its due timers, in order, up to the limit
            while taken < len(slot) and len(fired) < limit and slot[taken]["due_ms"] <= watermark_ms:
                fired.append(Timer(kind, slot[taken]["due_ms"], slot[taken]["ref"]))
                taken += 1
            if taken == len(slot):
                self.pending[key] = None
                head += 1
                continue
            if taken:
                self.pending[key] = state_json(slot[taken:])
            next_due_ms = slot[taken]["due_ms"]
            break
        if fired:
            if self.page_max_bytes and next_due_ms is None and head < tail:  # stopped by the limit
                next_due_ms = self._first_due(kind, head)
            self._set_pointers(kind, head, tail, next_due_ms)
        return fired

    def _first_due(self, kind: str, slot: int) -> int:
        raw = self._get(self._key(kind, slot))
        assert raw is not None, f"timer slot {kind}/{slot} of partition {self.partition} is missing"
        timers = state_loads(raw)
        first: int = (timers if isinstance(timers, dict) else timers[0])["due_ms"]
        return first

    def depth(self, kind: str) -> int:
        """Live slots (in a paged queue, pages)."""
        head, tail, _ = self._pointers(kind)
        return tail - head
