"""A record sent to a partition this worker owns is handled at once, in its own transaction.

Each transactional hop costs a commit before the next stage can read its record
(read_committed). When the worker that sends a record into a stage's source topic also
owns that partition, it hands the record to the stage in the same transaction instead:
the record is still written (the log stays the event store, every other reader sees
it), marked `HANDLED_HEADER`, and the stage's state writes and outputs ride in the
transaction that wrote it. A reader of the partition sees the record only if that
transaction committed, and then its handling committed with it; so the worker's
consumer skips a marked record (committing its offset), whoever reads it, after any
crash or rebalance. A create then reaches its outcome in one commit, not three.

What the hand-off must not change is the order in which a stage sees one key's
records. Two rules keep it (docs/decisions.md, "Hand-off inside the worker"):
- **Caught up first.** After an assignment (or an abort) a partition takes hand-offs
  only once the worker has read it to the end it had then: a record committed
  earlier (by this worker before, or by the one that owned the sender's partition)
  is handled before any record handed off after it.
- **Behind our own records.** A record this worker sends to an owned partition the
  normal way (the partition was not caught up yet, or the sender is not an upstream
  stage of it) is marked `FROM_HEADER` with this incarnation's token, and its key
  counted; until the consumer has read it back, the key's next records go the normal
  way too, behind it.
Records of one key from different writers have no order to keep: they interleave at
the broker as they always did. Nor do different keys: a key sent the normal way can be
handled after another key's later hand-off (holding the whole partition instead would
keep a busy partition from ever draining back to hand-offs).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterable, Mapping

HANDLED_HEADER = "paystream-handled"  # handled in the transaction that wrote it: skip it
FROM_HEADER = "paystream-from"  # sent the normal way to a partition its sender owns: whose

TopicPartition = tuple[str, int]


class Handoff:
    """Which sends may be handed to their stage now, and what to skip on the way in."""

    def __init__(self, targets: Iterable[str]) -> None:
        self.targets = frozenset(targets)
        self._incarnation = uuid.uuid4().hex
        self._resets = 0
        # On our normal sends: this incarnation's and reset's, so a send counted before a
        # reset is never taken for one counted after it when it is read back.
        self.token = f"{self._incarnation}.0".encode()
        self._owned: frozenset[TopicPartition] = frozenset()
        self._ends: dict[TopicPartition, int] | None = None  # None: not asked yet
        self._read: dict[TopicPartition, int] = {}  # how far each owned partition is read since the reset
        self._ready: set[TopicPartition] = set()
        self._behind: dict[TopicPartition, Counter[bytes | None]] = {}  # our unread normal sends, per key
        self._handed = 0  # hand-offs so far: each one's id (`next_ref`) is unique in this incarnation

    def reset(self, owned: Iterable[TopicPartition]) -> None:
        """At a moment when none of our transactions is undecided (an assignment, an
        abort): the owned target partitions, none taking hand-offs until it is read to
        the end it has now (`set_ends`). Every normal send before is then committed
        below that end or aborted, so none is counted any more."""
        self._resets += 1
        self.token = f"{self._incarnation}.{self._resets}".encode()
        self._owned = frozenset(owned)
        self._ends = None
        self._read = {}
        self._ready = set()
        self._behind = {}

    @property
    def wants_ends(self) -> bool:
        return self._ends is None and bool(self._owned)

    def set_ends(self, ends: Mapping[TopicPartition, int]) -> None:
        """The owned partitions' ends, asked of the broker after the reset."""
        assert self._ends is None and set(ends) == self._owned, "the ends of the owned partitions, once per reset"
        self._ends = {}
        for tp, end in ends.items():
            if self._read.get(tp, 0) >= end:
                self._ready.add(tp)
            else:
                self._ends[tp] = end

    def read(self, topic: str, partition: int, next_offset: int) -> None:
        """An owned target partition is read up to `next_offset` (after its last record,
        or an end-of-partition event's offset)."""
        tp = (topic, partition)
        if tp not in self._owned or tp in self._ready:
            return
        if self._ends is None:
            self._read[tp] = max(next_offset, self._read.get(tp, 0))
        elif next_offset >= self._ends[tp]:
            del self._ends[tp]
            self._ready.add(tp)

    def read_back(self, topic: str, partition: int, key: bytes | None, token: bytes) -> None:
        """A normal send marked `token` read back by the consumer: ours since the last
        reset, it no longer holds its key back."""
        behind = self._behind.get((topic, partition))
        if token != self.token or behind is None or behind[key] <= 0:
            return  # sent before a reset (below the end read to since), or another incarnation's
        behind[key] -= 1
        if not behind[key]:
            del behind[key]

    def may_hand(self, topic: str, partition: int, key: bytes | None) -> bool:
        tp = (topic, partition)
        if tp not in self._ready:
            return False
        behind = self._behind.get(tp)
        return not behind or key not in behind

    def sent_normally(self, topic: str, partition: int, key: bytes | None) -> bool:
        """A send the normal way: whether it goes to an owned target partition (the
        caller marks it with `token`), counted then until it is read back."""
        tp = (topic, partition)
        if tp not in self._owned:
            return False
        self._behind.setdefault(tp, Counter())[key] += 1
        return True

    def next_ref(self) -> str:
        """A unique id for the next hand-off (a dead letter's, which has no offset)."""
        self._handed += 1
        return f"{self._incarnation}:{self._handed}"

    def waiting(self) -> dict[TopicPartition, int]:
        """The owned target partitions not taking hand-offs yet, with their ends (-1: not asked yet)."""
        if self._ends is None:
            return dict.fromkeys(sorted(self._owned), -1)
        return dict(sorted(self._ends.items()))


def marks(headers: list[tuple[str, bytes]] | None) -> tuple[bool, bytes | None]:
    """A consumed record's hand-off marks: (handled already, the normal sender's token)."""
    handled, token = False, None
    for key, value in headers or ():
        if key == HANDLED_HEADER:
            handled = True
        elif key == FROM_HEADER:
            token = value
    return handled, token
