"""confluent-kafka clients configured the way the pipeline's contracts require."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

# Bounds on what a producer may hold in memory before `produce` pushes back.
PRODUCER_QUEUE_MAX_MESSAGES = 100_000
POLL_TIMEOUT_S = 0.5


def command_producer(bootstrap: str, *, linger_ms: int = 5) -> Producer:
    """Idempotent, acks=all, and keyed with Java's murmur2 so a payment's commands
    share one partition whichever client published them."""
    return Producer(
        {
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": "murmur2_random",
            "linger.ms": linger_ms,
            "queue.buffering.max.messages": PRODUCER_QUEUE_MAX_MESSAGES,
            "log_level": 3,
        }
    )


def committed_reader(bootstrap: str, topics: list[str], *, group_id: str | None = None, from_beginning: bool = True) -> Consumer:
    """A read_committed consumer: sees only what the pipeline's transactions committed.

    Without a group id it reads as an anonymous observer and commits nothing.
    With no topics it is left unsubscribed, for the caller to `assign`.
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": group_id or f"paystream-reader-{uuid.uuid4().hex[:12]}",
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


def end_offsets(consumer: Consumer, topic: str, partitions: int, timeout_s: float = 10) -> dict[int, int]:
    """High watermarks (for read_committed: the last stable offset) per partition."""
    out = {}
    for p in range(partitions):
        _, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
        out[p] = high
    return out
