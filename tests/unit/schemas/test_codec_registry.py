"""The Confluent wire format behind PAYSTREAM_SCHEMA_REGISTRY_URL: bytes checked
against the spec by hand, both formats decoded, registry failures as clear errors.

No registry runs here: `FakeRegistry` is an in-process object with the methods of
confluent-kafka's SchemaRegistryClient that the codec uses, answering errors the
way the registry's REST API does (SchemaRegistryError with an HTTP status). The
same codec against a real registry: tests/integration/schemas/test_codec_registry_server.py,
which runs when PAYSTREAM_SCHEMA_REGISTRY_URL is set.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import UTC, datetime

import fastavro
import pytest
from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry.error import SchemaRegistryError
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import codec as codec_module
from schemas.codec import (
    MAGIC,
    Codec,
    DecodeError,
    EncodeError,
    RegistryError,
    load_schema,
    schema_names,
    schema_text,
    use_registry,
)
from tests.unit.schemas.registry_support import DEAD, DEAD_LETTER, DEAD_LETTER_BODY, FIRST_ID, FakeRegistry


@pytest.fixture
def registry() -> Iterator[FakeRegistry]:
    fake = FakeRegistry()
    use_registry(fake)
    yield fake
    use_registry(None)


def test_default_path_is_single_object_encoding_byte_for_byte() -> None:
    expected = MAGIC + load_schema("DeadLetter").fingerprint + DEAD_LETTER_BODY
    assert DEAD.encode(DEAD_LETTER) == expected


def test_wire_format_is_magic_zero_big_endian_id_and_body(registry: FakeRegistry) -> None:
    schema_id = registry.id_of("DeadLetter")
    assert schema_id == FIRST_ID  # DeadLetter registers first (sorted names)
    assert DEAD.encode(DEAD_LETTER) == b"\x00" + b"\x01\x02\x03\x04" + DEAD_LETTER_BODY


def test_switching_back_restores_single_object_bytes(registry: FakeRegistry) -> None:
    confluent = DEAD.encode(DEAD_LETTER)
    use_registry(None)
    assert DEAD.encode(DEAD_LETTER) == MAGIC + load_schema("DeadLetter").fingerprint + DEAD_LETTER_BODY
    assert confluent[5:] == DEAD_LETTER_BODY


def test_every_schema_registered_under_its_full_name_with_defaults(registry: FakeRegistry) -> None:
    assert sorted(registry.subjects) == sorted(load_schema(n).parsed["name"] for n in schema_names())
    assert len(set(registry.ids.values())) == len(schema_names())
    # The shipped text, defaults and all: the registry's compatibility rules need them.
    assert any('"default"' in text for text in registry.ids)
    assert all(json.loads(text) == json.loads(schema_text(n)) for n, text in zip(schema_names(), registry.ids))


def test_decodes_both_formats(registry: FakeRegistry) -> None:
    confluent = DEAD.encode(DEAD_LETTER)
    single_object = MAGIC + load_schema("DeadLetter").fingerprint + DEAD_LETTER_BODY
    assert DEAD.decode(confluent) == DEAD.decode(single_object) == DEAD_LETTER


def test_confluent_bytes_without_a_registry_name_the_setting() -> None:
    with pytest.raises(DecodeError) as err:
        DEAD.decode(b"\x00\x01\x02\x03\x04" + DEAD_LETTER_BODY)
    assert err.value.reason == "not_single_object_encoding"  # as before the switch existed
    assert "PAYSTREAM_SCHEMA_REGISTRY_URL" in err.value.detail


def _reason(data: bytes, codec: Codec = DEAD) -> str:
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    return err.value.reason


def test_unknown_schema_id(registry: FakeRegistry) -> None:
    assert _reason(b"\x00\x7f\x00\x00\x01" + DEAD_LETTER_BODY) == "unknown_schema_id"


@pytest.mark.parametrize("first", [b"\x01", b"\xc3\x02", b"{", b"\xff"])
def test_wrong_magic_byte(registry: FakeRegistry, first: bytes) -> None:
    assert _reason(first + b"\x01\x02\x03\x04" + DEAD_LETTER_BODY) == "unknown_magic_byte"


def test_short_confluent_header(registry: FakeRegistry) -> None:
    assert _reason(b"\x00\x01\x02") == "malformed_header"


def test_schema_id_of_another_record_type_is_wrong_schema(registry: FakeRegistry) -> None:
    header = b"\x00" + registry.id_of("PaymentOutcome").to_bytes(4, "big")
    assert _reason(header + DEAD_LETTER_BODY) == "wrong_schema"


def test_body_written_by_an_older_version_is_resolved(registry: FakeRegistry) -> None:
    """Another producer registered the v1 PaymentCommand; we read it with v2."""
    old_name = "history/PaymentCommand.1"
    record = _command()
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(old_name).parsed, record)
    body = buf.getvalue()
    old_id = registry.register_schema("paystream.v1.PaymentCommand", RegistrySchema(schema_text(old_name), "AVRO"))
    decoded = Codec("PaymentCommand").decode(b"\x00" + old_id.to_bytes(4, "big") + body)
    assert decoded["card_token"] is None
    assert decoded["command_id"] == record["command_id"]


def test_writer_schema_only_the_registry_knows(registry: FakeRegistry) -> None:
    """A newer DeadLetter (one more field, with a default) registered by someone else."""
    newer = json.loads(schema_text("DeadLetter"))
    newer["fields"].append({"name": "retries", "type": "int", "default": 0})
    new_id = registry.register_schema("paystream.v1.DeadLetter", RegistrySchema(json.dumps(newer), "AVRO"))
    body = DEAD_LETTER_BODY + b"\x0a"  # retries = 5
    assert DEAD.decode(b"\x00" + new_id.to_bytes(4, "big") + body) == DEAD_LETTER


def test_non_avro_schema_under_an_id_is_a_decode_error(registry: FakeRegistry) -> None:
    bad_id = registry.register_schema("other", RegistrySchema('{"type": "nonsense"}', "AVRO"))
    assert _reason(b"\x00" + bad_id.to_bytes(4, "big") + DEAD_LETTER_BODY) == "unreadable_writer_schema"


def test_unreachable_registry_is_not_a_decode_error(registry: FakeRegistry) -> None:
    """An outage must stop the stage, not dead-letter good messages."""
    registry.down = True
    with pytest.raises(RegistryError, match="connection refused"):
        DEAD.decode(b"\x00\x00\x00\x00\x09" + DEAD_LETTER_BODY)


def test_unknown_ids_are_looked_up_once_and_the_cache_is_bounded(
    registry: FakeRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(codec_module, "MAX_CACHED_SCHEMA_IDS", 4)
    unknown = b"\x00\x00\x00\x00\x09" + DEAD_LETTER_BODY
    for _ in range(3):
        _reason(unknown)
    assert registry.get_calls == [9]
    for schema_id in range(10, 20):
        _reason(b"\x00" + schema_id.to_bytes(4, "big") + DEAD_LETTER_BODY)
    assert len(codec_module._wire._fetched) == 4
    _reason(unknown)  # evicted long ago: asked again
    assert registry.get_calls.count(9) == 2
    # Our own schemas are never evicted: still decoded without a lookup.
    assert DEAD.decode(DEAD.encode(DEAD_LETTER)) == DEAD_LETTER
    assert registry.get_calls.count(registry.id_of("DeadLetter")) == 0


def test_incompatible_schema_fails_at_startup() -> None:
    fake = FakeRegistry(compatible=False)
    fake.subjects["paystream.v1.DeadLetter"] = [1]  # an existing subject the new text breaks
    with pytest.raises(RegistryError, match="DeadLetter is not compatible"):
        use_registry(fake)
    assert codec_module._wire is None  # the previous format stays in force
    assert "paystream.v1.DeadLetter" in fake.subjects and not fake.ids


def test_registration_failure_is_a_registry_error() -> None:
    class Refusing(FakeRegistry):
        def register_schema(self, subject_name: str, schema: RegistrySchema) -> int:
            raise SchemaRegistryError(401, 40101, "Unauthorized")

    with pytest.raises(RegistryError, match="registering paystream.v1.DeadLetter failed"):
        use_registry(Refusing())


def test_history_schema_cannot_be_written(registry: FakeRegistry) -> None:
    with pytest.raises(EncodeError, match="not registered"):
        Codec("history/PaymentCommand.1").encode({})


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    fake = FakeRegistry()
    use_registry(fake)
    try:
        DEAD.decode(data)
    except DecodeError:
        pass
    finally:
        use_registry(None)


def test_interoperates_with_confluent_kafka_avro_serde() -> None:
    """Our bytes are what confluent-kafka's own AvroSerializer writes, and its
    deserializer reads ours (its in-process mock registry, no network)."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import MockSchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
    from confluent_kafka.schema_registry.common.serde import record_subject_name_strategy
    from confluent_kafka.serialization import MessageField, SerializationContext

    class Mock(MockSchemaRegistryClient):
        def test_compatibility(self, subject_name: str, schema: RegistrySchema, *args: object, **kw: object) -> bool:
            return True  # the mock has no compatibility endpoint

    client = Mock({"url": "mock://paystream"})
    use_registry(client)
    try:
        ctx = SerializationContext("payment-dlq", MessageField.VALUE)
        theirs = AvroSerializer(
            client, schema_text("DeadLetter"),
            conf={"auto.register.schemas": False, "use.latest.version": True,
                  "subject.name.strategy": record_subject_name_strategy},
        )(DEAD_LETTER, ctx)  # fmt: skip
        ours = DEAD.encode(DEAD_LETTER)
        assert theirs == ours
        assert AvroDeserializer(client)(ours, ctx) == DEAD_LETTER
    finally:
        use_registry(None)


def _command() -> dict:
    return {
        "command_id": "cmd_01",
        "kind": "capture",
        "merchant_id": "m_acme",
        "idempotency_key": "cap-1",
        "payment_id": "pay_6b1f0c2d9e8a4b7c8d9e0f1a2b3c4d5e",
        "amount_minor": 500,
        "currency": "EUR",
        "capture_method": None,
        "card": None,
        "metadata": {},
        "occurred_at": datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    }


def test_current_is_the_wire_format_in_use(registry: FakeRegistry) -> None:
    single_object = MAGIC + load_schema("DeadLetter").fingerprint + DEAD_LETTER_BODY
    assert DEAD.current(DEAD.encode(DEAD_LETTER))
    assert not DEAD.current(single_object)  # re-encoded under the registry, it gains its id
    use_registry(None)
    assert DEAD.current(single_object)
