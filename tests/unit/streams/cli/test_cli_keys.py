"""`paystream keys`: init is idempotent, rotate adds an active key, list never shows material."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.vault.keys import FileKeyStore
from streams.cli.main import app
from streams.settings import get_settings


@pytest.fixture
def keys_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PAYSTREAM_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path / "data"))
    get_settings.cache_clear()
    yield tmp_path / "keys"
    get_settings.cache_clear()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["keys", *args])
    return result.exit_code, result.stdout, result.stderr


def listed(keys_dir: Path) -> list[dict[str, object]]:
    code, out, _ = run("list", "--json")
    assert code == 0
    return [json.loads(line) for line in out.splitlines()]


def test_init_then_rotate_then_list(keys_dir: Path) -> None:
    code, _, err = run("init")
    assert code == 0 and "created vault-master-v1, token-hmac-v1, signing-v1, webhook-v1, card-intake-v1" in err
    code, _, err = run("init")
    assert code == 0 and "nothing created" in err

    code, _, err = run("rotate", "--kind", "vault-master")
    assert code == 0 and "vault-master-v2 is now the active vault-master key" in err
    docs = listed(keys_dir)
    assert [(d["key_id"], d["active"]) for d in docs] == [
        ("vault-master-v1", False), ("vault-master-v2", True), ("token-hmac-v1", True),
        ("signing-v1", True), ("webhook-v1", True), ("card-intake-v1", True), ("acs-signing-v1", True),
        ("wallet-signing-v1", True),
    ]
    assert all(set(d) == {"key_id", "kind", "created", "active"} for d in docs)

    store = FileKeyStore(keys_dir)
    _, table, _ = run("list")
    for key in store._keys.values():
        for form in (key.material.hex(), base64.b64encode(key.material).decode()):
            assert form not in table and form not in json.dumps(docs)
    assert "verify/decrypt only" in table


def test_rotate_an_unknown_kind_exits_2(keys_dir: Path) -> None:
    code, _, err = run("rotate", "--kind", "pgp")
    assert code == 2 and "unknown key kind 'pgp'" in err


def test_public_exports_every_signing_key(keys_dir: Path) -> None:
    run("init")
    run("rotate", "--kind", "signing")
    code, out, _ = run("public")
    assert code == 0
    exported = {kid: base64.b64decode(v) for kid, v in json.loads(out).items()}
    assert exported == FileKeyStore(keys_dir).public_keys()
    assert list(exported) == ["signing-v1", "signing-v2"]


def test_intake_public_exports_the_active_key_as_a_file_producers_load(keys_dir: Path, tmp_path: Path) -> None:
    from connectors.vault.intake import CardOpener, load_sealer

    code, _, err = run("intake-public")
    assert code == 1 and "no card-intake key" in err
    run("init")
    run("rotate", "--kind", "card-intake")
    code, out, _ = run("intake-public")
    assert code == 0
    path = tmp_path / "intake.json"
    path.write_text(out)
    sealer = load_sealer(path)
    store = FileKeyStore(keys_dir)
    assert sealer.key_id == "card-intake-v2" and sealer.public_key == store.intake_public_keys()["card-intake-v2"]
    sealed = sealer.seal({"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": None}, "m_a", "cmd_1")
    assert CardOpener(store).open(sealed, "m_a", "cmd_1").number == "4242424242424242"
    assert all(form not in out for k in store._keys.values() for form in (k.material.hex(), base64.b64encode(k.material).decode()))


def test_a_badly_protected_key_dir_is_a_clear_error(keys_dir: Path) -> None:
    run("init")
    (keys_dir / "webhook-v1.json").chmod(0o644)
    code, _, err = run("list")
    assert code == 1 and "webhook-v1.json is readable by others" in err
