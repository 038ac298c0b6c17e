"""`paystream api-keys add|list|revoke`: a key is shown once, stored hashed, and works."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from streams.api.auth import ApiKeys
from streams.cli.main import app
from streams.settings import get_settings


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def run(*args: str):  # type: ignore[no-untyped-def]
    r = CliRunner().invoke(app, ["api-keys", *args])
    return r.exit_code, r.stdout


def test_add_shows_the_key_once_and_stores_only_its_hash(data_dir: Path) -> None:
    code, out = run("add", "m_acme")
    assert code == 0
    shown = json.loads(out)
    assert shown["merchant_id"] == "m_acme" and shown["secret_key"].startswith(f"sk_{shown['key_id']}_")
    stored = (data_dir / "api_keys.json").read_text()
    assert shown["secret_key"] not in stored and shown["secret_key"].rsplit("_", 1)[1] not in stored
    assert (data_dir / "api_keys.json").stat().st_mode & 0o077 == 0
    keys = ApiKeys(data_dir / "api_keys.json")
    assert keys.authenticate(shown["secret_key"]) == (shown["key_id"], "m_acme")
    code, out = run("list")
    assert json.loads(out) | {"created_at": None} == {
        "key_id": shown["key_id"],
        "merchant_id": "m_acme",
        "created_at": None,
        "revoked": False,
    }
    assert "sk_" not in out
    assert run("revoke", shown["key_id"])[0] == 0
    assert keys.authenticate(shown["secret_key"]) is None
    assert json.loads(run("list")[1])["revoked"] is True


def test_bad_input_exits_2(data_dir: Path) -> None:
    assert run("revoke", "0123456789abcdef")[0] == 2
    assert run("add", "m acme")[0] == 2  # a space: not a merchant id ingest accepts


def test_the_dashboard_ops_token_is_read_from_its_file_and_must_be_long(tmp_path: Path) -> None:
    import typer

    from streams.cli.api import OPS_TOKEN_MIN_CHARS, ops_token
    from streams.settings import Settings

    good = tmp_path / "ops_token"
    good.write_text("x" * OPS_TOKEN_MIN_CHARS + "\n")
    assert ops_token(good) == b"x" * OPS_TOKEN_MIN_CHARS and ops_token(None) is None
    short = tmp_path / "short"
    short.write_text("secret")
    for bad in (short, tmp_path / "missing"):
        with pytest.raises(typer.Exit):
            ops_token(bad)
    assert Settings(dashboard_metrics_urls="http://w0:9108/metrics,http://w1:9108/metrics").dashboard_metrics_urls
    with pytest.raises(ValueError):
        Settings(dashboard_metrics_urls="file:///etc/passwd")
