"""The codec against a real Schema Registry: PAYSTREAM_SCHEMA_REGISTRY_URL when set
(e.g. the registry of deploy/docker-compose.yml), else the embedded Apicurio Registry
(`paystream registry up`; the `schema_registry_url` fixture starts it). Needs no
broker. Registers the paystream.v1.* subjects there."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry import SchemaRegistryClient

from schemas.codec import Codec, DecodeError, RegistryError, use_registry
from streams.client.schema_registry import configure_codecs
from streams.settings import Settings
from tests.unit.schemas.registry_support import DEAD_LETTER, DEAD_LETTER_BODY


@pytest.fixture
def settings(schema_registry_url: str) -> Settings:
    return Settings(schema_registry_url=schema_registry_url)


@pytest.fixture
def wire(settings: Settings) -> Iterator[None]:
    assert configure_codecs(settings) is not None
    yield
    use_registry(None)


def test_round_trip_through_a_real_registry(wire: None) -> None:
    codec = Codec("DeadLetter")
    data = codec.encode(DEAD_LETTER)
    assert data[0] == 0 and data[5:] == DEAD_LETTER_BODY
    assert codec.decode(data) == DEAD_LETTER


def test_registering_again_is_idempotent(wire: None, settings: Settings) -> None:
    first = Codec("DeadLetter").encode(DEAD_LETTER)[:5]
    configure_codecs(settings)
    assert Codec("DeadLetter").encode(DEAD_LETTER)[:5] == first


def test_unknown_id_on_a_real_registry(wire: None) -> None:
    with pytest.raises(DecodeError) as err:
        Codec("DeadLetter").decode(b"\x00\x7f\xff\xff\xfe" + DEAD_LETTER_BODY)
    assert err.value.reason == "unknown_schema_id"


def test_the_registry_refuses_a_backward_incompatible_version(schema_registry_url: str) -> None:
    # BACKWARD, as deploy/ configures the registry: a new required field cannot read old data.
    client = SchemaRegistryClient({"url": schema_registry_url, "timeout": 10})
    subject = f"it.probe{uuid.uuid4().hex[:8]}.Probe"
    v1 = {"type": "record", "name": subject, "fields": [{"name": "a", "type": "string"}]}
    client.register_schema(subject, RegistrySchema(json.dumps(v1), "AVRO"))
    v2 = v1 | {"fields": [*v1["fields"], {"name": "b", "type": "string"}]}
    assert client.test_compatibility(subject, RegistrySchema(json.dumps(v2), "AVRO")) is False
    v3 = v1 | {"fields": [*v1["fields"], {"name": "b", "type": "string", "default": ""}]}
    assert client.test_compatibility(subject, RegistrySchema(json.dumps(v3), "AVRO")) is True


def test_a_registry_that_does_not_answer_fails_within_the_wait() -> None:
    dead = Settings(schema_registry_url="http://localhost:1/apis/ccompat/v7", schema_registry_wait_s=1)
    with pytest.raises(
        RegistryError, match="no Schema Registry answered at http://localhost:1/apis/ccompat/v7 within 1s"
    ):
        configure_codecs(dead)
