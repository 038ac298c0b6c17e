"""The codec against a real Schema Registry. Runs when PAYSTREAM_SCHEMA_REGISTRY_URL
is set (e.g. the registry of deploy/docker-compose.yml: http://localhost:8081);
skipped otherwise. Needs no broker. Registers the paystream.v1.* subjects there."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from schemas.codec import Codec, DecodeError, use_registry
from streams.registry import configure_codecs
from streams.settings import Settings
from tests.unit.schemas.registry_support import DEAD_LETTER, DEAD_LETTER_BODY

pytestmark = pytest.mark.skipif(
    not os.environ.get("PAYSTREAM_SCHEMA_REGISTRY_URL"), reason="PAYSTREAM_SCHEMA_REGISTRY_URL is not set"
)


@pytest.fixture
def wire() -> Iterator[None]:
    assert configure_codecs(Settings()) is not None
    yield
    use_registry(None)


def test_round_trip_through_a_real_registry(wire: None) -> None:
    codec = Codec("DeadLetter")
    data = codec.encode(DEAD_LETTER)
    assert data[0] == 0 and data[5:] == DEAD_LETTER_BODY
    assert codec.decode(data) == DEAD_LETTER


def test_registering_again_is_idempotent(wire: None) -> None:
    first = Codec("DeadLetter").encode(DEAD_LETTER)[:5]
    configure_codecs(Settings())
    assert Codec("DeadLetter").encode(DEAD_LETTER)[:5] == first


def test_unknown_id_on_a_real_registry(wire: None) -> None:
    with pytest.raises(DecodeError) as err:
        Codec("DeadLetter").decode(b"\x00\x7f\xff\xff\xfe" + DEAD_LETTER_BODY)
    assert err.value.reason == "unknown_schema_id"
