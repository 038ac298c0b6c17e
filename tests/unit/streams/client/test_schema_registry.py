"""PAYSTREAM_SCHEMA_REGISTRY_URL switches the codecs; unset keeps single-object encoding."""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError

from schemas.codec import MAGIC, Codec, RegistryError, use_registry
from streams.client.schema_registry import configure_codecs, registry_client
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


class _Answer(BaseHTTPRequestHandler):
    """A registry stand-in that answers every GET with one HTTP status."""

    status = 503
    hits = 0

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        type(self).hits += 1
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(json.dumps({"error_code": self.status, "message": "no"}).encode())

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def http_answer() -> Iterator[Callable[[int], tuple[str, type[_Answer]]]]:
    servers: list[ThreadingHTTPServer] = []

    def serve(status: int) -> tuple[str, type[_Answer]]:
        handler = type("Handler", (_Answer,), {"status": status, "hits": 0})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}", handler

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


def test_a_refusing_registry_fails_at_once(
    env: pytest.MonkeyPatch, http_answer: Callable[[int], tuple[str, type[_Answer]]]
) -> None:
    url, handler = http_answer(401)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", url)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_WAIT_S", "30")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"the Schema Registry at {url} refused us"):
        configure_codecs(Settings())
    assert time.monotonic() - started < 5 and handler.hits == 1


def test_a_registry_not_ready_is_asked_again_until_the_deadline(
    env: pytest.MonkeyPatch, http_answer: Callable[[int], tuple[str, type[_Answer]]]
) -> None:
    url, handler = http_answer(503)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", url)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_WAIT_S", "1.5")
    started = time.monotonic()
    with pytest.raises(RegistryError, match=f"no Schema Registry answered at {url} within 1.5s"):
        configure_codecs(Settings())
    assert 1.5 <= time.monotonic() - started < 5 and handler.hits >= 3
