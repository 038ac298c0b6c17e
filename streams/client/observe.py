"""Reading the pipeline's answers back: outcomes, dead letters, payment events and
journal entries, read_committed.

An `Observer` snapshots the end offsets when it is made, so it sees exactly what
the pipeline commits afterwards: what a test or the demo caused.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka.clients import POLL_TIMEOUT_S, committed_reader, consume_available, end_offsets
from schemas.codec import Codec, DecodeError
from streams.settings import Settings, client_config
from streams.stages.ledger import post_event
from streams.topics import client_ids, topic_names

OUTCOME_CODEC = Codec("PaymentOutcome")
DLQ_CODEC = Codec("DeadLetter")
EVENT_CODEC = Codec("PaymentEvent")
ENTRY_CODEC = Codec("LedgerEntry")
MAX_BATCH = 1000
# No new answer for this long while some are missing counts as a stalled worker: a
# backstop. A worker notices its own stall (probes.StallWatch, PAYSTREAM_WORKER_STALL_S)
# and exits for a restart; restarting it from here while it rebuilds its tables would
# start the rebuild again (docs/reliability.md), so this waits longer than a rebuild.
STALL_S = 180.0


class Observer:
    def __init__(self, settings: Settings, *, from_beginning: bool = False) -> None:
        names = topic_names(settings)
        self.outcomes_topic, self.dlq_topic, self.events_topic, self.ledger_topic = (
            names.outcomes,
            names.dlq,
            names.events,
            names.ledger,
        )
        self.partitions = settings.partitions
        self.consumer: Consumer = committed_reader(client_config(settings), [])
        assignment = []
        for topic in (names.outcomes, names.dlq, names.events, names.ledger):
            for p, high in end_offsets(self.consumer, topic, settings.partitions).items():
                assignment.append(TopicPartition(topic, p, 0 if from_beginning else high))
        self.consumer.assign(assignment)
        self.outcomes: dict[str, list[dict[str, Any]]] = defaultdict(list)
        # command_id -> (timestamp type, Kafka timestamp ms, wall ms when read) of its first outcome (bench latency)
        self.first_outcome_at: dict[str, tuple[int, int, int]] = {}
        self.dead_letters: list[dict[str, Any]] = []  # one per (stage, dlq_id)
        self.dlq_ids: set[tuple[str, str]] = set()
        self.dead_letter_copies = 0  # the same dead letter written again
        self.events: dict[str, list[dict[str, Any]]] = defaultdict(list)  # by payment_id, in log order
        self.entry_ids: set[str] = set()  # journal entries posted (a redelivery counts once)
        self.expected_entry_ids: set[str] = set()  # what the events seen so far must post
        self.last_entry_offset: dict[int, int] = {}  # per ledger partition, the last entry seen
        self.undecodable = 0
        self.client, self.worker_group = client_config(settings), client_ids(settings).worker_group
        self.group: Consumer | None = None  # made by ledger_caught_up, the only reader of the group's offsets

    def poll(self, timeout_s: float = POLL_TIMEOUT_S) -> int:
        """Read what is there (up to a batch); returns how many records were read."""
        msgs = consume_available(self.consumer, MAX_BATCH, timeout_s)
        for msg in msgs:
            if msg.error() is not None:
                continue  # partition EOF and transient errors; the consumer recovers itself
            try:
                if msg.topic() == self.outcomes_topic:
                    o = OUTCOME_CODEC.decode(msg.value())
                    self.outcomes[o["command_id"]].append(o)
                    if o["command_id"] not in self.first_outcome_at:
                        self.first_outcome_at[o["command_id"]] = (*msg.timestamp(), time.time_ns() // 1_000_000)
                elif msg.topic() == self.events_topic:
                    e = EVENT_CODEC.decode(msg.value())
                    self.events[e["payment_id"]].append(e)
                    posting = post_event(e, self.partitions)  # once per event, not per check
                    if posting.entry is not None:
                        self.expected_entry_ids.add(posting.entry.entry_id)
                elif msg.topic() == self.ledger_topic:
                    self.entry_ids.add(ENTRY_CODEC.decode(msg.value())["entry_id"])
                    self.last_entry_offset[msg.partition()] = max(
                        msg.offset(), self.last_entry_offset.get(msg.partition(), -1)
                    )
                else:
                    # A dead letter's id derives from its source position, so a second copy from the
                    # same stage (one the dead-letter marks let through: counted, a chaos run fails
                    # on it) is one letter. Two stages refusing one message are two letters.
                    letter = DLQ_CODEC.decode(msg.value())
                    key = (letter["stage"], letter["dlq_id"])
                    if key in self.dlq_ids:
                        self.dead_letter_copies += 1
                    else:
                        self.dlq_ids.add(key)
                        self.dead_letters.append(letter)
            except DecodeError:
                self.undecodable += 1
        return len(msgs)

    def wait_for(
        self,
        command_ids: set[str],
        dead_letters: int,
        timeout_s: float,
        on_progress=None,
        *,
        on_stall=None,
        stall_s: float = STALL_S,
    ) -> bool:  # type: ignore[no-untyped-def]
        """Poll until every command id has an outcome and `dead_letters` DLQ records
        arrived, or the deadline; True if all arrived. `on_progress(done, dlq)` is
        called after each poll; `on_stall()` when nothing new arrived for `stall_s`
        while something is still missing (a supervisor restarts the worker there)."""
        deadline = time.monotonic() + timeout_s
        last_change, last_seen = time.monotonic(), (-1, -1)
        while time.monotonic() < deadline:
            self.poll()
            done = sum(1 for c in command_ids if c in self.outcomes)
            seen = (done, len(self.dead_letters))
            if on_progress is not None:
                on_progress(*seen)
            if done == len(command_ids) and len(self.dead_letters) >= dead_letters:
                return True
            if seen != last_seen:
                last_change, last_seen = time.monotonic(), seen
            elif on_stall is not None and time.monotonic() - last_change > stall_s:
                on_stall()
                last_change = time.monotonic()
        return False

    def wait_until(self, done, timeout_s: float) -> bool:  # type: ignore[no-untyped-def]
        """Poll until `done()` holds or the deadline passes; True if it held."""
        deadline = time.monotonic() + timeout_s
        while not done():
            if time.monotonic() >= deadline:
                return False
            self.poll()
        return True

    def books_closed(self) -> bool:
        """Every payment event seen so far that moves money has its journal entry."""
        return self.expected_entry_ids <= self.entry_ids

    def books_applied(self) -> bool:
        """Every money-moving event posted, and every posted entry applied to the balances."""
        return self.books_closed() and self.ledger_caught_up()

    def ledger_caught_up(self) -> bool:
        """The ledger agent has applied every entry seen so far: its group's committed
        offset is past the last one in each partition."""
        if self.group is None:  # reads the pipeline's committed offsets; never joins the group, never commits
            self.group = Consumer(
                {**self.client, "group.id": self.worker_group, "enable.auto.commit": False, "log_level": 3}
            )
        tps = [TopicPartition(self.ledger_topic, p) for p in self.last_entry_offset]
        committed = {tp.partition: tp.offset for tp in self.group.committed(tps, timeout=10)} if tps else {}
        return all(committed.get(p, -1) > last for p, last in self.last_entry_offset.items())

    def close(self) -> None:
        self.consumer.close()
        if self.group is not None:
            self.group.close()

    def __enter__(self) -> Observer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
