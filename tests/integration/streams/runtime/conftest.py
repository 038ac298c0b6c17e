"""Shared by the engine's tests against the real broker."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from connectors.kafka.clients import read_to_end
from streams.runtime.engine import EngineConfig

# A record the refusing topic refuses (its max.message.bytes is below it, the producer's
# limit above): the broker fails its delivery and librdkafka makes the transaction abortable.
TOPIC_MAX_BYTES = 1_024
REFUSED_BYTES = 8_192


@pytest.fixture
def own_signals() -> Iterator[None]:
    """Engine.run takes SIGTERM and SIGINT; pytest gets them back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def one_partition_topics(bootstrap: str, plain: list[str], refusing: str, changelog: str) -> None:
    """The engine tests' topics, one partition each: `refusing` takes no record of
    REFUSED_BYTES, `changelog` is compacted."""
    topics = [
        *(NewTopic(name, 1, 1) for name in plain),
        NewTopic(refusing, 1, 1, config={"max.message.bytes": str(TOPIC_MAX_BYTES)}),
        NewTopic(changelog, 1, 1, config={"cleanup.policy": "compact"}),
    ]
    admin = AdminClient({"bootstrap.servers": bootstrap})  # kept: its futures die with it
    for future in admin.create_topics(topics).values():
        future.result(30)


def publish_numbers(bootstrap: str, topic: str, count: int, keys: int = 1, start: int = 0) -> None:
    """b"<start>" .. b"<start + count - 1>" into partition 0 of `topic`, keyed k0 .. k<keys - 1> in turn."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for i in range(start, start + count):
        producer.produce(topic, value=b"%d" % i, key=b"k%d" % (i % keys), partition=0)
    assert producer.flush(30) == 0


def values(bootstrap: str, topic: str) -> list[Any]:
    """Every committed value of a one-partition topic, read_committed, in order."""
    return [m.value() for m in read_to_end(bootstrap, [topic], 1, timeout_s=30)]


def engine_config(bootstrap: str, run: str, state_dir: Path, **overrides: Any) -> EngineConfig:
    """A test engine's settings: its own group and transactional id, short intervals."""
    return EngineConfig(
        **{
            "client": {"bootstrap.servers": bootstrap},
            "group_id": f"{run}-group",
            "transactional_id": f"{run}-tx",
            "state_dir": state_dir,
            "commit_interval_ms": 50,
            "commit_idle_ms": 5,
            "commit_records_max": 1_000,
            "batch_max": 100,
            "session_timeout_ms": 10_000,
            "linger_ms": 0,
            "batch_bytes": 1_000_000,
            "fetch_partition_bytes": 1_048_576,
            "request_bytes": 1_100_000,
        }
        | overrides
    )
