"""The embedded Schema Registry (`paystream registry up`): idempotent, and its
schema ids survive a restart (messages already in a topic name them)."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient

from connectors.schema_registry import launcher
from streams.client.schema_registry import registry_config
from streams.settings import Settings


@pytest.fixture
def cfg(schema_registry_url: str) -> launcher.RegistryConfig:
    cfg = registry_config(Settings())
    if schema_registry_url != cfg.url:
        pytest.fail(
            "these tests run the embedded registry; PAYSTREAM_SCHEMA_REGISTRY_URL names another "
            f"({schema_registry_url})"
        )
    return cfg


def test_up_is_idempotent_and_quick(cfg: launcher.RegistryConfig) -> None:
    before = launcher.status(cfg)
    assert before.running and before.answering, f"log: {before.log_file}"
    started = time.monotonic()
    st = launcher.up(cfg)
    assert time.monotonic() - started < 5
    assert st.already_running and st.pid == before.pid


def test_schema_ids_survive_a_restart(cfg: launcher.RegistryConfig) -> None:
    client = SchemaRegistryClient({"url": cfg.url, "timeout": 10})
    subject = f"it.restart{uuid.uuid4().hex[:8]}.Probe"
    schema = {"type": "record", "name": subject, "fields": [{"name": "a", "type": "long"}]}
    schema_id = client.register_schema(subject, RegistrySchema(json.dumps(schema), "AVRO"))

    assert launcher.down(cfg)
    assert not launcher.status(cfg).answering
    assert not launcher.up(cfg).already_running

    fresh = SchemaRegistryClient({"url": cfg.url, "timeout": 10})  # no cache of the ids
    assert json.loads(fresh.get_schema(schema_id).schema_str)["name"] == subject
    assert fresh.get_latest_version(subject).schema_id == schema_id
