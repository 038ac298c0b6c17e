"""`paystream webhooks add|list|remove|secret` over a file under the data dir."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.vault.keys import FileKeyStore
from streams.cli.main import app
from streams.settings import get_settings


@pytest.fixture
def dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PAYSTREAM_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str):
    r = CliRunner().invoke(app, ["webhooks", *args])
    return r.exit_code, r.stdout, r.stderr


def test_add_list_remove(dirs: Path) -> None:
    code, out, _ = run("add", "m_acme", "https://example.com/hooks")
    assert code == 0
    endpoint = json.loads(out)
    assert run("add", "m_acme", "https://example.com/hooks")[1] == out  # idempotent
    code, out, _ = run("list")
    assert [json.loads(line) for line in out.splitlines()] == [endpoint]
    assert json.loads((dirs / "data" / "webhooks.json").read_text()) == {
        "endpoints": {"m_acme": ["https://example.com/hooks"]}
    }
    assert run("remove", "m_acme", endpoint["endpoint_id"])[0] == 0
    assert run("list")[1] == ""


def test_bad_url_and_unknown_endpoint_are_clear_errors(dirs: Path) -> None:
    code, _, err = run("add", "m_acme", "ftp://example.com")
    assert code == 2 and "http(s)" in err
    code, _, err = run("remove", "m_acme", "we_nope")
    assert code == 2 and "no endpoint" in err


def test_secret_shows_key_id_and_reveals_only_when_asked(dirs: Path) -> None:
    FileKeyStore(dirs / "keys").init()
    code, out, _ = run("secret", "m_acme")
    assert code == 0 and json.loads(out) == {"merchant_id": "m_acme", "key_id": "webhook-v1"}
    doc = json.loads(run("secret", "m_acme", "--reveal")[1])
    assert bytes.fromhex(doc["secret"]) == FileKeyStore(dirs / "keys").webhook_secret("m_acme").digest
    assert doc["stripe_secret"] == "whsec_" + doc["secret"]
