"""Publishing commands: the producer side of the wire contract."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from connectors.kafka.clients import command_producer
from schemas.cards import mask_pans
from schemas.codec import Codec, EncodeError
from schemas.jsonio import JsonCommandError, command_from_json
from streams.settings import Settings
from streams.topics import topic_names

COMMAND_CODEC = Codec("PaymentCommand")
FLUSH_TIMEOUT_S = 60
MAX_FILE_ERRORS = 100  # report at most this many bad lines


class CommandFileError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} bad line(s)")
        self.errors = errors


class PublishError(RuntimeError):
    pass


def load_command_file(path: Path) -> list[dict[str, Any]]:
    """Parse and schema-check every line; raise with `line N: reason` for each bad one."""
    records, errors = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = command_from_json(json.loads(line))
                COMMAND_CODEC.encode(record, check=True)
            except (json.JSONDecodeError, JsonCommandError, EncodeError) as e:
                if len(errors) < MAX_FILE_ERRORS:
                    errors.append(f"line {n}: {mask_pans(str(e))[0]}")
                continue
            records.append(record)
    if errors:
        raise CommandFileError(errors)
    return records


def command_key(record: dict[str, Any]) -> bytes:
    return record["payment_id"].encode()


RawMessage = tuple[bytes | None, bytes]


def publish_commands(settings: Settings, items: Iterable[dict[str, Any] | RawMessage]) -> int:
    """Publish command records, in order; a (key, bytes) tuple is sent as it is
    (bad input, for tests and the demo). Waits until every one is acknowledged."""
    topic = topic_names(settings).commands
    producer = command_producer(settings.kafka_bootstrap)
    failures: list[str] = []

    def on_delivery(error: Any, _msg: Any) -> None:
        if error is not None:
            failures.append(str(error))

    sent = 0
    for item in items:
        key, value = item if isinstance(item, tuple) else (command_key(item), COMMAND_CODEC.encode(item))
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.1)  # queue full: let deliveries drain, then retry
        producer.poll(0)
        sent += 1
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining or failures:
        raise PublishError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return sent
