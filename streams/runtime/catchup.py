"""After an assignment, a task's table-feeding partitions are read to their end first.

A stage that feeds a table other stages of its task read (the merchant registry, the
label counts) is declared `feeds`. Restoring the changelogs gives a task its tables as
last committed; records of a feeding topic that arrived since are not in them yet. Until
the task has read each feeding partition up to the end it had at the assignment, its
other source partitions stay paused: a merchant registered before its first payment was
published is then known when that payment is handled, whatever batches a fetch is cut
into (Kafka Streams' `max.task.idle.ms` problem, in its simplest form).

The ends are the high watermarks at the assignment. A read_committed consumer stops
short of one while a transaction is open on the partition, so the wait lasts until that
transaction is decided, as the restore's does (streams/runtime/restore.py).

An aborted transaction that is redone rewinds its feeding partitions too: the records it
had read (and released partitions on) are read again. Until they are, the same tasks
are held again, with the offsets that transaction had read to as the ends (`hold`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TopicPartition = tuple[str, int]


class CatchUp:
    """The feeding partitions still short of their end, and the partitions each task
    holds back until its own feeding partitions have reached theirs."""

    def __init__(self, ends: Mapping[TopicPartition, int], held: Mapping[int, Iterable[TopicPartition]]) -> None:
        # An empty partition (end 0) is at its end already.
        self._short = {tp: end for tp, end in ends.items() if end > 0}
        self._held = {partition: sorted(tps) for partition, tps in held.items()}

    def released(self) -> list[TopicPartition]:
        """The held partitions of every task with nothing left to wait for (each once)."""
        waiting = {partition for _, partition in self._short}
        out: list[TopicPartition] = []
        for partition in [p for p in self._held if p not in waiting]:
            out.extend(self._held.pop(partition))
        return out

    def reached(self, topic: str, partition: int, next_offset: int) -> list[TopicPartition]:
        """A partition is read up to `next_offset` (the offset after the last record
        handled, or an end-of-partition event's): the partitions this releases."""
        end = self._short.get((topic, partition))
        if end is None or next_offset < end:
            return []
        del self._short[(topic, partition)]
        return self.released()

    def hold(
        self, ends: Mapping[TopicPartition, int], held: Mapping[int, Iterable[TopicPartition]]
    ) -> list[TopicPartition]:
        """Wait for `ends` too (the later of two ends of a partition) and hold `held`
        until then: the partitions this holds that were not held already."""
        for tp, end in ends.items():
            if end > 0:
                self._short[tp] = max(end, self._short.get(tp, 0))
        added: list[TopicPartition] = []
        for partition, tps in held.items():
            before = set(self._held.get(partition, ()))
            added += sorted(set(tps) - before)
            self._held[partition] = sorted(before | set(tps))
        return added

    def held(self) -> list[TopicPartition]:
        return sorted(tp for tps in self._held.values() for tp in tps)

    def waiting_for(self) -> dict[TopicPartition, int]:
        """The feeding partitions still short of their end, with that end."""
        return dict(sorted(self._short.items()))

    @property
    def done(self) -> bool:
        return not self._held
