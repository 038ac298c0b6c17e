"""The engine against the real broker: after its assignment a task handles no record of
its other partitions before its feeding partition is read to the end it had then
(streams/runtime/catchup.py), however the fetches cut that partition up. A command
published after its key was registered always finds the registration, also when the
transaction that first handled both aborts and is redone."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from streams.runtime.engine import Engine, EngineConfig, Periodic, Stage
from streams.runtime.messages import Message, Record
from streams.runtime.state import StageTask
from tests.integration.streams.runtime.conftest import engine_config
from tests.integration.support import scratch_topics

REGISTRATIONS = 200
DEADLINE_S = 120.0


def registered_then_commanded(bootstrap: str, run: str) -> tuple[str, str, str]:
    """REGISTRATIONS keys registered, then a command for each: the registry, commands
    and changelog topics."""
    registry, commands, changelog = f"{run}-registry", f"{run}-commands", f"{run}-changelog"
    scratch_topics(bootstrap, prefixes=[f"{run}-"])
    admin = AdminClient({"bootstrap.servers": bootstrap})
    topics = [
        NewTopic(registry, 1, 1),
        NewTopic(commands, 1, 1),
        NewTopic(changelog, 1, 1, config={"cleanup.policy": "compact"}),
        NewTopic(f"{run}-out", 1, 1),
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
    return registry, commands, changelog


def register(batch: list[Message], task: StageTask) -> None:
    table = task.table("registry")
    for m in batch:
        table.put(m.key, m.value)


class Commands:
    """The commands stage: each command looks its key up in the registry."""

    def __init__(self) -> None:
        self.unknown: list[bytes] = []
        self.handled = 0

    def handle(self, batch: list[Message], task: StageTask) -> None:
        table = task.table("registry")
        for m in batch:
            if table.get(m.key) is None:
                self.unknown.append(m.key)
            self.handled += 1


def run_until_handled(config: EngineConfig, stages: list[Stage], changelog: str, commands: Commands) -> None:
    deadline = time.monotonic() + DEADLINE_S
    engine: Engine

    def stop_when_handled() -> None:
        if commands.handled >= REGISTRATIONS or time.monotonic() > deadline:
            engine.stopping = True

    engine = Engine(config, stages, {"registry": changelog}, periodic=[Periodic(0.05, stop_when_handled)])
    engine.run()


def test_commands_wait_until_the_registry_is_read_to_its_end(bootstrap: str, tmp_path: Path, own_signals: None) -> None:
    run = f"it-catchup-{uuid.uuid4().hex[:8]}"
    registry, commands, changelog = registered_then_commanded(bootstrap, run)
    stage = Commands()
    config = engine_config(bootstrap, run, tmp_path, fetch_partition_bytes=1)  # a record batch per partition per fetch
    stages = [
        Stage("registry", registry, register, ("registry",), feeds=True),
        Stage("commands", commands, stage.handle, ("registry",)),
    ]
    run_until_handled(config, stages, changelog, stage)
    assert stage.handled == REGISTRATIONS
    assert stage.unknown == []


def test_a_redone_transaction_reads_the_registry_again_before_the_commands(
    bootstrap: str, tmp_path: Path, own_signals: None
) -> None:
    run = f"it-redo-{uuid.uuid4().hex[:8]}"
    registry, commands, changelog = registered_then_commanded(bootstrap, run)
    stage = Commands()
    refused = [False]

    def handle(batch: list[Message], task: StageTask) -> None:
        if not refused[0]:
            # The first commands' transaction also holds every registration (one long
            # transaction, below). A record larger than the client takes is refused at
            # once: the transaction aborts at the end of this batch, and both partitions
            # are read again from where it began.
            refused[0] = True
            task.send(Record(f"{run}-out", b"k", bytes(config.request_bytes + 1)), 0)
            return
        stage.handle(batch, task)

    # A record batch per partition per fetch: the redo's registry takes REGISTRATIONS
    # fetches, its commands one. No commit before the first commands are handled.
    config = engine_config(
        bootstrap,
        run,
        tmp_path,
        fetch_partition_bytes=1,
        commit_interval_ms=5_000,
        commit_idle_ms=5_000,
        commit_records_max=10_000,
    )
    stages = [
        Stage("registry", registry, register, ("registry",), feeds=True),
        Stage("commands", commands, handle, ("registry",), (f"{run}-out",)),
    ]
    run_until_handled(config, stages, changelog, stage)
    assert refused[0] and stage.handled == REGISTRATIONS
    assert stage.unknown == []
