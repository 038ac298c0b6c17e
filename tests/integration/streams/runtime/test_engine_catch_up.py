"""The engine against the real broker: after its assignment a task handles no record of
its other partitions before its feeding partition is read to the end it had then
(streams/runtime/catchup.py), however the fetches cut that partition up. A command
published after its key was registered always finds the registration."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.runtime.engine import Engine, Periodic, Stage
from streams.runtime.messages import Message
from streams.runtime.state import StageTask
from tests.integration.streams.runtime.conftest import engine_config

REGISTRATIONS = 200
DEADLINE_S = 120.0


def test_commands_wait_until_the_registry_is_read_to_its_end(bootstrap: str, tmp_path: Path, own_signals: None) -> None:
    run = f"it-catchup-{uuid.uuid4().hex[:8]}"
    registry, commands, changelog = f"{run}-registry", f"{run}-commands", f"{run}-changelog"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(registry, 1, 1),
        NewTopic(commands, 1, 1),
        NewTopic(changelog, 1, 1, config={"cleanup.policy": "compact"}),
    ]
    for future in admin.create_topics(topics).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "linger.ms": 0})
    # One record batch per registration: with one batch per fetch (below), the registry
    # takes REGISTRATIONS fetches, the commands one.
    for i in range(REGISTRATIONS):
        producer.produce(registry, key=b"m%d" % i, value=b"1", partition=0)
        assert producer.flush(30) == 0
    for i in range(REGISTRATIONS):
        producer.produce(commands, key=b"m%d" % i, value=b"create", partition=0)
    assert producer.flush(30) == 0

    unknown: list[bytes] = []
    handled = [0]

    def register(batch: list[Message], task: StageTask) -> None:
        table = task.table("registry")
        for m in batch:
            table.put(m.key, m.value)

    def handle(batch: list[Message], task: StageTask) -> None:
        table = task.table("registry")
        for m in batch:
            if table.get(m.key) is None:
                unknown.append(m.key)
            handled[0] += 1

    config = engine_config(bootstrap, run, tmp_path, fetch_partition_bytes=1)  # a record batch per partition per fetch
    stages = [
        Stage("registry", registry, register, ("registry",), feeds=True),
        Stage("commands", commands, handle, ("registry",)),
    ]
    deadline = time.monotonic() + DEADLINE_S
    engine: Engine

    def stop_when_handled() -> None:
        if handled[0] >= REGISTRATIONS or time.monotonic() > deadline:
            engine.stopping = True

    engine = Engine(config, stages, {"registry": changelog}, periodic=[Periodic(0.05, stop_when_handled)])
    engine.run()

    assert handled[0] == REGISTRATIONS
    assert unknown == []
