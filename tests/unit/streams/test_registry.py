"""PAYSTREAM_SCHEMA_REGISTRY_URL switches the codecs; unset keeps single-object encoding."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from pydantic import ValidationError

from schemas.codec import MAGIC, Codec, RegistryError, use_registry
from streams.registry import configure_codecs, registry_client
from streams.settings import Settings
from tests.unit.schemas.registry_support import DEAD_LETTER, FakeRegistry


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    yield monkeypatch
    use_registry(None)


def test_unset_url_keeps_single_object_encoding() -> None:
    fake = FakeRegistry()
    assert configure_codecs(Settings(), fake) is None
    assert Codec("DeadLetter").encode(DEAD_LETTER)[:2] == MAGIC
    assert not fake.ids  # nothing registered


def test_url_switches_every_codec_to_the_wire_format(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", "http://registry:8081")
    fake = FakeRegistry()
    assert configure_codecs(Settings(), fake) is not None
    data = Codec("DeadLetter").encode(DEAD_LETTER)
    assert data[:5] == b"\x00" + fake.id_of("DeadLetter").to_bytes(4, "big")


@pytest.mark.parametrize("url", ["registry:8081", "ftp://registry", "http://"])
def test_url_must_be_http(env: pytest.MonkeyPatch, url: str) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", url)
    with pytest.raises(ValidationError, match="schema_registry_url"):
        Settings()


def test_client_takes_basic_auth_from_a_file_and_never_shows_it(tmp_path, env: pytest.MonkeyPatch) -> None:
    auth = tmp_path / "sr-auth"
    auth.write_text("svc-paystream:s3cret-pw\n")
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", "https://registry.example:8081")
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE", str(auth))
    settings = Settings()
    assert "s3cret" not in repr(settings)
    client = registry_client(settings)  # builds without contacting the registry
    assert type(client).__name__ == "SchemaRegistryClient"


def test_unreadable_or_malformed_auth_file_is_a_clear_error(tmp_path, env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", "https://registry.example:8081")
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE", str(tmp_path / "missing"))
    with pytest.raises(RegistryError, match="cannot read PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE"):
        registry_client(Settings())
    (tmp_path / "bad").write_text("s3cret-without-user")
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_AUTH_FILE", str(tmp_path / "bad"))
    with pytest.raises(RegistryError, match="user:password") as err:
        registry_client(Settings())
    assert "s3cret" not in str(err.value)
