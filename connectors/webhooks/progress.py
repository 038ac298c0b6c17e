"""What the webhook runner may commit, and its clock: plain values, no Kafka, no HTTP.

`Offsets`: a payment event read at offset o of partition p is *done* once every
notification made from it is delivered or given up, and that attempt is recorded on
`webhook-deliveries`. The committable offset of p is the first offset not done (or
the next to read): a restart re-reads from there, so an undelivered notification is
never lost; a delivered one after it may be sent again (at least once: receivers
dedup by `id`).

`EventClock`: the schedule runs on event time. Its now is the latest event time read;
while the stream is quiet it runs on at real speed from there, so a retry falls due
without new traffic, and a replay of old events keeps their spacing instead of
giving every notification up at its first failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_OUTSTANDING = 1_000_000


@dataclass
class Offsets:
    """Per partition: offsets read whose notifications are not all done yet (with how
    many are open), and the next offset to read. Mutated in place by the runner; the
    counts are checked on every change."""

    open: dict[int, dict[int, int]] = field(default_factory=dict)  # partition -> offset -> open notifications
    next: dict[int, int] = field(default_factory=dict)  # partition -> next offset to read
    origin: dict[str, tuple[int, int]] = field(default_factory=dict)  # notification id -> (partition, offset)

    @property
    def outstanding(self) -> int:
        return len(self.origin)

    def read(self, partition: int, offset: int, notification_ids: list[str]) -> list[str]:
        """Track a message's notifications; returns those not already open (an event
        read twice is notified once while the first is still open)."""
        assert offset >= 0, offset
        fresh = [n for n in dict.fromkeys(notification_ids) if n not in self.origin]
        assert self.outstanding + len(fresh) <= MAX_OUTSTANDING
        self.next[partition] = max(self.next.get(partition, 0), offset + 1)
        if fresh:
            self.open.setdefault(partition, {})[offset] = len(fresh)
            self.origin.update((n, (partition, offset)) for n in fresh)
        return fresh

    def done(self, notification_id: str) -> None:
        """A notification is delivered or given up, and recorded. Unknown ids (a
        partition revoked meanwhile, or done already) change nothing."""
        where = self.origin.pop(notification_id, None)
        if where is None:
            return
        partition, offset = where
        left = self.open[partition][offset] - 1
        assert left >= 0
        if left:
            self.open[partition][offset] = left
        else:
            del self.open[partition][offset]

    def committable(self) -> dict[int, int]:
        """Partition -> the offset a consumer may commit (the next one to read after a restart)."""
        return {p: min(self.open.get(p) or {nxt: 0}) for p, nxt in self.next.items()}

    def revoke(self, partitions: list[int]) -> None:
        """Forget partitions another runner now owns; their open notifications are its job."""
        for p in partitions:
            self.next.pop(p, None)
            self.open.pop(p, None)
        self.origin = {n: w for n, w in self.origin.items() if w[0] in self.next}


@dataclass
class EventClock:
    base_ms: int = 0  # the latest event time read (0: none yet)
    base_mono_s: float = 0.0  # the real (monotonic) time it was read

    def observe(self, event_ms: int, mono_s: float) -> None:
        if event_ms > self.now_ms(mono_s):
            self.base_ms, self.base_mono_s = event_ms, mono_s

    def now_ms(self, mono_s: float) -> int:
        if not self.base_ms:
            return 0
        return self.base_ms + max(0, int((mono_s - self.base_mono_s) * 1000))
