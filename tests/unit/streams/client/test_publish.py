"""`produce`: cards are sealed, or (--tokenize) go to the vault; no PAN goes to Kafka (no broker needed here)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from connectors.vault.intake import CardOpener, active_sealer, public_key_doc
from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PanScanner
from connectors.vault.tokenizer import StoreTokenizer
from connectors.vault.vault import CardSealer, open_record
from schemas.codec import Codec
from schemas.jsonio import command_from_json
from schemas.partitioning import partition_for
from streams.cli.main import app
from streams.stages.ingest import Forward, Limits, Source, ingest
from streams.client.publish import CommandFileError, command_key, intake_sealer, seal_commands, tokenize_commands, tokenize_in_vault
from streams.settings import Settings, get_settings

PAN, CVC = "4242424242424242", "737"
COMMANDS = Codec("PaymentCommand")


def line(**overrides: Any) -> dict[str, Any]:
    return {
        "command_id": "c1", "kind": "create", "merchant_id": "m_acme", "idempotency_key": "order-1",
        "amount_minor": 1999, "currency": "USD",
        "card": {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": CVC},
        "occurred_at": "2026-11-25T10:00:00Z",
    } | overrides


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", keys_dir=tmp_path / "keys")


def test_tokenized_commands_carry_no_pan_and_ingest_forwards_the_same_token(settings: Settings) -> None:
    records = [command_from_json(line()), command_from_json(line(command_id="c2", kind="capture", payment_id="pay_1", card=None, amount_minor=5))]
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    sealer = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    out = tokenize_commands(records, sealer)

    create, capture = out
    assert capture == records[1]  # follow-ups have no card: untouched
    assert create["card"] is None
    assert {k: create["card_token"][k] for k in ("bin", "last4", "brand", "exp_month", "exp_year")} == {
        "bin": "424242", "last4": "4242", "brand": "visa", "exp_month": 12, "exp_year": 2030}
    data = COMMANDS.encode(create, check=True)
    assert PanScanner([PAN]).scan(data) == [] and CVC.encode() not in data

    # The sealed card tokenize_in_vault publishes to card-vault before the command.
    assert open_record(keys, create["card_token"]["token"], sealer.sealed[create["card_token"]["token"]]).pan == PAN
    # Ingest (with the same keys) forwards it, with the token it would have computed from the PAN.
    key = command_key(create)
    source = Source("payment-commands", partition_for(key, 8), 0, 0, key)
    result = ingest(data, source, StoreTokenizer(keys), Limits(10**15, 255, 8))
    assert isinstance(result, Forward) and result.command["rejection_reason"] is None
    assert result.command["card"] == create["card_token"]
    assert result.command["card"]["token"] == StoreTokenizer(keys).token("m_acme", PAN)


class Refusing:
    def tokenize(self, merchant_id: str, pan: str) -> Any:
        raise AssertionError("must not be called")


def test_refused_cards_are_named_and_nothing_is_returned(settings: Settings) -> None:
    records = [
        command_from_json(line()),
        command_from_json(line(command_id="c2", card={"number": "4242424242424241", "exp_month": 1, "exp_year": 2030})),
        command_from_json(line(command_id=f"c3-{PAN}", card={"number": "9999999999999995", "exp_month": 1, "exp_year": 2030})),
    ]
    with pytest.raises(CommandFileError) as e:
        tokenize_in_vault(settings, records)
    assert e.value.errors[0] == "command 2 (c2): invalid_card_number: card number fails the Luhn check"
    assert e.value.errors[1].startswith("command 3 (c[PAN]): unknown_card_brand")  # masked with its separator
    assert PAN not in "".join(e.value.errors)


def test_a_follow_up_with_a_card_is_refused_before_the_vault() -> None:
    record = command_from_json(line(kind="refund", payment_id="pay_1"))
    with pytest.raises(CommandFileError) as e:
        tokenize_commands([record], Refusing())
    assert e.value.errors == ["command 1 (c1): unexpected_payment_method: refund must not carry a card"]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("PAYSTREAM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("PAYSTREAM_KEYS_DIR", str(tmp_path / "keys"))
    monkeypatch.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "localhost:1")  # never reached in these tests
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def flat(text: str) -> str:
    """Without whitespace: rich wraps long lines at a space or, for a long word, inside
    it, and the tmp path's length sets where."""
    return "".join(text.split())


def test_cli_refuses_a_bad_card_and_publishes_nothing(env: Path) -> None:
    path = env / "cmds.jsonl"
    path.write_text(json.dumps(line(card={"number": "4242424242424241", "exp_month": 1, "exp_year": 2030})) + "\n")
    result = CliRunner().invoke(app, ["produce", "--tokenize", str(path)])
    stderr = flat(result.stderr)
    assert result.exit_code == 2
    assert flat("command 1 (c1): invalid_card_number") in stderr and flat("nothing published") in stderr


# --- the default path: cards sealed to the card-intake key ---


def test_seal_commands_leaves_no_pan_or_cvc_and_ingest_opens_them(settings: Settings) -> None:
    records = [command_from_json(line()), command_from_json(line(command_id="c2", kind="capture", payment_id="pay_1", card=None, amount_minor=5)),
               (b"junk", b"not avro")]
    out = seal_commands(records, intake_sealer(settings))
    create, capture, junk = out
    assert capture == records[1] and junk == records[2]
    assert create["card"] is None and create["sealed_card"]["key_id"] == "card-intake-v1"
    data = COMMANDS.encode(create, check=True)
    assert PanScanner([PAN]).scan(data) == [] and CVC.encode() not in data
    keys = FileKeyStore(settings.keys_dir)
    key = command_key(create)
    source = Source("payment-commands", partition_for(key, 8), 0, 0, key)
    result = ingest(data, source, StoreTokenizer(keys), Limits(10**15, 255, 8), CardOpener(keys))
    assert isinstance(result, Forward) and result.command["rejection_reason"] is None
    assert result.command["card"]["token"] == StoreTokenizer(keys).token("m_acme", PAN)


def test_an_exported_public_key_file_is_what_producers_seal_to(settings: Settings, tmp_path: Path) -> None:
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    keys.rotate("card-intake")
    path = tmp_path / "intake.json"
    path.write_text(json.dumps(public_key_doc(active_sealer(FileKeyStore(settings.keys_dir)))))
    keys.rotate("card-intake")  # not yet exported: producers keep sealing to v2
    assert intake_sealer(settings).key_id == "card-intake-v3"
    assert intake_sealer(settings.model_copy(update={"intake_public_key_file": path})).key_id == "card-intake-v2"


def test_cli_refuses_a_card_the_sealer_refuses_and_publishes_nothing(env: Path) -> None:
    path = env / "cmds.jsonl"
    path.write_text(json.dumps(line()) + "\n" + json.dumps(line(command_id="c2", card={"number": PAN, "exp_month": 1, "exp_year": 2030, "cvc": "12"})) + "\n")
    result = CliRunner().invoke(app, ["produce", str(path)])
    stderr = flat(result.stderr)
    assert result.exit_code == 2  # the broker (localhost:1) was never needed
    assert flat("command 2 (c2): invalid_cvc") in stderr and flat("nothing published") in stderr
