"""A command producer's id, read from its own statistics (connectors/kafka/clients.py)."""

import threading
import time
import uuid
from pathlib import Path

import pytest

from connectors.kafka.admin import TopicSpec, delete_topics, ensure_topics
from connectors.kafka.clients import command_producer, id_assigned, idemp_state
from connectors.kafka.launcher import BrokerConfig

pytestmark = pytest.mark.integration

CFG = BrokerConfig(home=Path("var/kafka"))
DEADLINE_S = 20.0


def test_the_statistics_name_the_state_id_assigned_waits_for() -> None:
    states: list[str | None] = []
    seen = threading.Event()

    def on_stats(stats_json: str) -> None:
        states.append(idemp_state(stats_json))
        if states[-1] == "Assigned":
            seen.set()

    producer = command_producer(CFG.bootstrap, on_stats=on_stats)
    deadline = time.monotonic() + DEADLINE_S
    while not seen.is_set() and time.monotonic() < deadline:
        producer.poll(0.1)
    assert seen.is_set(), f"librdkafka's statistics never said Assigned: {states[-5:]}"


def test_a_producer_with_its_id_delivers_its_first_record() -> None:
    topic = f"it-producer-id-{uuid.uuid4().hex[:12]}"
    ensure_topics(CFG.bootstrap, [TopicSpec(topic, partitions=8, retention_ms=60_000)])
    try:
        producer = id_assigned(CFG.bootstrap, timeout_s=DEADLINE_S)
        errors: list[object] = []
        producer.produce(topic, key=b"k", value=b"v", on_delivery=lambda e, _m: errors.append(e))
        assert producer.flush(DEADLINE_S) == 0 and errors == [None]
    finally:
        delete_topics(CFG.bootstrap, [topic], timeout_s=DEADLINE_S)
