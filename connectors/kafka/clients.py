"""confluent-kafka clients configured the way the pipeline's contracts require."""

from __future__ import annotations

import atexit
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

# Bounds on what a producer may hold in memory before `produce` pushes back.
PRODUCER_QUEUE_MAX_MESSAGES = 100_000
# How often a command producer that reports its statistics does: `id_assigned`'s wait
# granularity (librdkafka's thread writes the JSON; once the id is in, the callback ignores it).
STATS_INTERVAL_MS = 100
POLL_TIMEOUT_S = 0.5
# The consumer groups of the readers below: a prefix and a random suffix each, so the
# ACLs grant the prefix (streams/topics.py ClientIds, deploy/kafka-security/acls.sh).
READER_GROUP_PREFIX = "paystream-reader-"
SNAPSHOT_GROUP_PREFIX = "paystream-snapshot-"

#: How a client reaches the cluster: a bootstrap string (plaintext: the embedded broker)
#: or librdkafka connection settings, `bootstrap.servers` plus security (the pipeline
#: passes streams.settings.client_config). The mapping may hold a password: never log it.
Connection = str | Mapping[str, Any]


def connection(conn: Connection) -> dict[str, Any]:
    """librdkafka settings of a Connection, for a client config to start from."""
    return {"bootstrap.servers": conn} if isinstance(conn, str) else dict(conn)


def bootstrap_of(conn: Connection) -> str:
    """The bootstrap servers alone: what a message may name (the rest may be secret)."""
    return str(connection(conn)["bootstrap.servers"])


def command_producer(
    conn: Connection, *, linger_ms: int = 5, on_stats: Callable[[str], None] | None = None
) -> Producer:
    """Idempotent, acks=all, and keyed with Java's murmur2 so a payment's commands
    share one partition whichever client published them. `on_stats`: librdkafka's
    statistics JSON, every STATS_INTERVAL_MS (what `id_assigned` watches)."""
    stats = {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": on_stats} if on_stats is not None else {}
    return Producer(
        {
            **connection(conn),
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": PRODUCER_QUEUE_MAX_MESSAGES,
            "log_level": 3,
            **stats,
        }
    )


def id_assigned(conn: Connection, *, linger_ms: int = 5, timeout_s: float = 10.0) -> Producer:
    """A command producer that holds its producer id, for a caller whose first record
    must not wait. A new idempotent producer's records wait for its id, and librdkafka
    (2.16) may ask for it only on a 500 ms timer: it retires its bootstrap connection
    once metadata names the broker, and if no broker is up at that instant the id is
    asked at the timer's next tick (`debug=eos`: metadata at 2 ms, broker up at 53 ms,
    the id at 503 ms). A metadata round trip does not prove it; the client's own
    statistics do (`eos.idemp_state`). Raises KafkaException when no broker answers,
    TimeoutError when no id comes within `timeout_s`."""
    assigned = threading.Event()

    def on_stats(stats_json: str) -> None:
        if not assigned.is_set() and idemp_state(stats_json) == "Assigned":
            assigned.set()

    producer = command_producer(conn, linger_ms=linger_ms, on_stats=on_stats)
    producer.list_topics(timeout=timeout_s)  # raises at once, and plainly, when no broker answers
    deadline = time.monotonic() + timeout_s
    while not assigned.is_set():  # the statistics arrive through poll
        if time.monotonic() > deadline:
            raise TimeoutError(f"no producer id from {bootstrap_of(conn)} within {timeout_s}s")
        producer.poll(STATS_INTERVAL_MS / 1000)
    return producer


def idemp_state(stats_json: str) -> str | None:
    """The idempotent producer's state in librdkafka's statistics (`eos.idemp_state`:
    Init, RequestPID, WaitTransport, WaitPID, Assigned, ...), None without one."""
    state = json.loads(stats_json).get("eos", {}).get("idemp_state")
    return state if isinstance(state, str) else None


def consume_available(consumer: Consumer, max_messages: int, timeout_s: float) -> list[Message]:
    """Up to `max_messages`: waits at most `timeout_s` for the first, then takes only
    what the client has fetched already. `consume(n, timeout)` instead waits until it
    has n or the timeout has passed (confluent-kafka-python #407; since 2.13 in 200 ms
    slices), so at a low rate every message waited for it: a merchant's outcome up to
    that long after it was committed."""
    assert max_messages >= 1
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [first, *consumer.consume(max_messages - 1, timeout=0)] if max_messages > 1 else [first]


def produce_waiting(producer: Producer, topic: str, *, wait_s: float = 0.05, **record: Any) -> None:
    """`producer.produce(topic, **record)`, waiting for room while librdkafka's queue is
    full (BufferError): how a bulk sender is held back, never a record dropped."""
    while True:
        try:
            producer.produce(topic, **record)
            return
        except BufferError:
            producer.poll(wait_s)


def produce_batch_waiting(
    producer: Producer,
    topic: str,
    partition: int,
    records: list[tuple[bytes, bytes | None]],
    *,
    wait_s: float = 0.05,
) -> None:
    """(key, value) records into one partition of `topic` in one `produce_batch` call,
    where `produce` would enqueue (and may wake librdkafka's broker thread) once each;
    no headers. Those a full queue refused are tried again after a wait for room, after
    the rest: only each key's own order is kept, so give each key once (a changelog's
    records of one transaction). Any other refusal raises KafkaException, as `produce`."""
    messages: list[dict[str, Any]] = [{"key": key, "value": value} for key, value in records]
    while messages:
        producer.produce_batch(topic, messages, partition=partition)
        refused = [m for m in messages if "_error" in m]
        for m in refused:
            if m["_error"].code() != KafkaError._QUEUE_FULL:
                raise KafkaException(m["_error"])
        if refused:
            producer.poll(wait_s)
        messages = [{"key": m["key"], "value": m["value"]} for m in refused]


def committed_reader(
    conn: Connection, topics: list[str], *, group_id: str | None = None, from_beginning: bool = True
) -> Consumer:
    """A read_committed consumer: sees only what the pipeline's transactions committed.

    Without a group id it reads as an anonymous observer and commits nothing.
    With no topics it is left unsubscribed, for the caller to `assign`.
    """
    consumer = Consumer(
        {
            **connection(conn),
            "group.id": group_id or f"{READER_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest" if from_beginning else "latest",
            "enable.auto.commit": group_id is not None,
            "log_level": 3,
        }
    )
    if topics:
        consumer.subscribe(topics)
    return consumer


def poll_until(consumer: Consumer, deadline_monotonic: float) -> Iterator[Message]:
    """Yield data messages until the deadline; broker errors other than
    end-of-partition are raised, never swallowed."""
    while time.monotonic() < deadline_monotonic:
        msg = consumer.poll(min(POLL_TIMEOUT_S, max(0.0, deadline_monotonic - time.monotonic())))
        if msg is None:
            continue
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                continue
            raise RuntimeError(f"consumer error: {err}")
        yield msg


def readable_past(consumer: Consumer, positions: list[TopicPartition], wait_s: float) -> bool:
    """Whether `consumer` (read_committed) finds a record at or past `positions` within
    `wait_s`: False when all that lies there is aborted records and transaction markers,
    which it skips. Assigns the positions for the look and unassigns them after."""
    consumer.assign(positions)
    try:
        return next(poll_until(consumer, time.monotonic() + wait_s), None) is not None
    finally:
        consumer.unassign()


# Errors a partition shows while its leadership is still settling (a new topic, a
# broker restart), or a request the busy broker did not answer in time; librdkafka
# does not flag all of them retriable. Retried until the caller's deadline.
_SETTLING = frozenset(
    {
        KafkaError._TIMED_OUT,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def _transient(error: KafkaError) -> bool:
    return error.retriable() or error.code() in _SETTLING


def end_offsets(consumer: Consumer, topic: str, partitions: int, timeout_s: float = 30) -> dict[int, int]:
    """High watermark per partition. Retriable errors (a new topic whose leader is
    still loading) are retried until the deadline, then raised."""
    return {p: high for p, (_, high) in _watermarks(consumer, topic, partitions, timeout_s).items()}


def start_offsets(consumer: Consumer, topic: str, partitions: int, timeout_s: float = 30) -> dict[int, int]:
    """Low watermark per partition: the first offset still in the log."""
    return {p: low for p, (low, _) in _watermarks(consumer, topic, partitions, timeout_s).items()}


def _watermarks(consumer: Consumer, topic: str, partitions: int, timeout_s: float) -> dict[int, tuple[int, int]]:
    deadline = time.monotonic() + timeout_s
    out = {}
    for p in range(partitions):
        while True:
            try:
                out[p] = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=POLL_TIMEOUT_S * 4)
                break
            except KafkaException as e:
                if not _transient(e.args[0]) or time.monotonic() > deadline:
                    raise
                consumer.poll(POLL_TIMEOUT_S)  # back off while serving callbacks
    return out


READ_TO_END_TIMEOUT_S = 600.0
READ_BATCH_MAX = 10_000


class MissingTopic(LookupError):
    """A topic the caller needs does not exist (a wrong namespace, or no worker ran yet)."""


def require_topics(consumer: Consumer, topics: list[str], timeout_s: float = 10) -> None:
    known = consumer.list_topics(timeout=timeout_s).topics
    missing = [t for t in topics if t not in known]
    if missing:
        raise MissingTopic(f"no such topic: {', '.join(missing)} (check PAYSTREAM_NAMESPACE; a worker creates them)")


def read_to_end(
    conn: Connection,
    topics: list[str],
    partitions: int,
    *,
    timeout_s: float = READ_TO_END_TIMEOUT_S,
    ends: dict[tuple[str, int], int] | None = None,
    starts: dict[tuple[str, int], int] | None = None,
) -> Iterator[Message]:
    """Every committed message of `topics` from offset 0 (or `starts`) up to the end offsets seen at
    the start (or `ends`), in offset order per partition; a snapshot for audit and
    replay. read_committed: a partition's last offset may be a transaction marker,
    never delivered, so its end-of-partition signal counts as arrival. A partition
    still short of its end after `timeout_s` (a hanging transaction) raises."""
    consumer = Consumer(
        {
            **connection(conn),
            "group.id": f"{SNAPSHOT_GROUP_PREFIX}{uuid.uuid4().hex[:12]}",
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            # Large fetches: a worker's restore reads whole changelogs through here (a
            # million records in 4.7 s, against 7 s at librdkafka's 1 MB per partition).
            "max.partition.fetch.bytes": 10_485_760,
            # Offset 0 of a partition whose head was deleted is out of range: start at the
            # log start, never at the end (the default), which would skip the partition.
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    try:
        require_topics(consumer, topics)
        if ends is None:
            ends = {(t, p): end for t in topics for p, end in end_offsets(consumer, t, partitions).items()}
        starts = starts or {}
        pending = {tp for tp, end in ends.items() if end > starts.get(tp, 0)}
        consumer.assign([TopicPartition(t, p, starts.get((t, p), 0)) for t, p in sorted(pending)])
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"not at the end offsets after {timeout_s:.0f}s: {sorted(pending)[:4]}")
            # In batches: a worker's restore reads whole changelogs through here.
            for msg in consumer.consume(READ_BATCH_MAX, POLL_TIMEOUT_S):
                tp = (msg.topic(), msg.partition())
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        raise RuntimeError(f"consumer error: {err}")
                    if msg.offset() >= ends[tp]:
                        pending.discard(tp)
                    continue
                if msg.offset() < ends[tp]:
                    yield msg
                if msg.offset() + 1 >= ends[tp]:
                    pending.discard(tp)
    finally:
        consumer.close()


class TopicFollower:
    """Every partition of one topic, outside any group: read whole on first use (to the
    end offsets taken then), then followed from there. How every worker keeps a list
    it needs whole (the fraud blocklist, the sanctions list); it connects on first use,
    so building a worker needs no broker."""

    def __init__(self, conn: Connection, topic: str, partitions: int, batch_max: int) -> None:
        assert batch_max > 0
        self.conn, self.topic, self.partitions, self.batch_max = conn, topic, partitions, batch_max
        self._consumer: Consumer | None = None
        self._followed_from: dict[int, int] = {}

    def start(self, apply: Callable[[Message], None]) -> bool:
        """Every message up to the topic's end into `apply`, once; True when it happened now."""
        if self._consumer is not None:
            return False
        consumer = committed_reader(self.conn, [])
        atexit.register(consumer.close)
        ends = {(self.topic, p): end for p, end in end_offsets(consumer, self.topic, self.partitions).items()}
        for msg in read_to_end(self.conn, [self.topic], self.partitions, ends=ends):
            apply(msg)
        consumer.assign([TopicPartition(self.topic, p, end) for (_, p), end in ends.items()])
        self._consumer = consumer
        self._followed_from = {p: end for (_, p), end in ends.items()}
        return True

    def position(self, partition: int) -> int:
        """The offset of the next message this follower will apply from `partition`
        (everything before it has been applied); call after `start`."""
        assert self._consumer is not None
        (tp,) = self._consumer.position([TopicPartition(self.topic, partition)])
        return tp.offset if tp.offset >= 0 else self._followed_from[partition]

    def poll(self, apply: Callable[[Message], None]) -> int:
        """What arrived since, at most `batch_max` messages, into `apply`; how many came."""
        self.start(apply)
        assert self._consumer is not None
        msgs = self._consumer.consume(self.batch_max, timeout=0)
        for msg in msgs:
            if msg.error() is None:
                apply(msg)
        return len(msgs)
