"""Publishing commands: the producer side of the wire contract."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from connectors.kafka import admin
from connectors.kafka.clients import command_producer, produce_waiting
from connectors.vault.intake import Sealer, active_sealer, load_sealer
from connectors.vault.keys import FileKeyStore
from connectors.vault.tokenizer import StoreTokenizer
from connectors.vault.topic import publish_sealed
from connectors.vault.vault import CardSealer
from schemas.cards import CardError, mask_pans
from schemas.codec import Codec, EncodeError
from schemas.jsonio import JsonCommandError, command_from_json
from streams.settings import Settings, client_config
from streams.stages.ingest import command_key
from streams.stages.subscriptions import tick_command
from streams.topics import declared_topics, topic_names

COMMAND_CODEC = Codec("PaymentCommand")
TICK_CODEC = Codec("SubscriptionCommand")
FLUSH_TIMEOUT_S = 60
MAX_FILE_ERRORS = 100  # report at most this many bad lines


class CommandFileError(ValueError):
    def __init__(self, errors: list[str]) -> None:
        super().__init__(f"{len(errors)} bad line(s)")
        self.errors = errors


class PublishError(RuntimeError):
    pass


def load_command_file(path: Path) -> list[dict[str, Any]]:
    """Parse and schema-check every line; raise with `line N: reason` for each bad one."""
    records, errors = [], []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                record = command_from_json(json.loads(line))
                COMMAND_CODEC.encode(record, check=True)
            except (json.JSONDecodeError, JsonCommandError, EncodeError) as e:
                if len(errors) < MAX_FILE_ERRORS:
                    errors.append(f"line {n}: {mask_pans(str(e))[0]}")
                continue
            records.append(record)
    if errors:
        raise CommandFileError(errors)
    return records


class VaultT(Protocol):
    def tokenize(self, merchant_id: str, pan: str) -> Any: ...  # -> connectors.vault.vault.VaultCard (CardSealer)


def tokenize_commands(records: list[dict[str, Any]], vault: VaultT) -> list[dict[str, Any]]:
    """Replace each create's card by a card_token (the vault keeps the PAN; the CVC
    is dropped), so no PAN is published. Raises CommandFileError, naming each
    refused command, if any card is refused: then nothing is published."""
    out, errors = [], []
    for n, record in enumerate(records, start=1):
        card = record["card"]
        if card is None:
            out.append(record)
            continue
        try:
            if record["kind"] != "create":
                raise CardError("unexpected_payment_method", f"{record['kind']} must not carry a card")
            ref = vault.tokenize(record["merchant_id"], card["number"])
        except CardError as e:
            if len(errors) < MAX_FILE_ERRORS:
                errors.append(f"command {n} ({mask_pans(record['command_id'])[0]}): {e}")
            continue
        token = {
            "token": ref.token,
            "bin": ref.bin,
            "last4": ref.last4,
            "brand": ref.brand,
            "exp_month": card["exp_month"],
            "exp_year": card["exp_year"],
        }
        out.append(record | {"card": None, "card_token": token})
    if errors:
        raise CommandFileError(errors)
    return out


def tokenize_in_vault(settings: Settings, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """`tokenize_commands` with the keys of these settings (the same token key as
    ingest's, so a card gets the same token whichever side tokenizes); the sealed cards
    are on the card-vault topic, acknowledged, before this returns the tokens. Raises
    VaultError if the broker does not take them."""
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    sealer = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    out = tokenize_commands(records, sealer)
    publish_sealed_cards(settings, sealer.sealed)
    return out


def publish_sealed_cards(settings: Settings, sealed: dict[str, bytes]) -> None:
    """Sealed cards (token -> record) onto these settings' card-vault topic (created if
    missing), acknowledged before this returns."""
    conn, topic = client_config(settings), topic_names(settings).card_vault
    admin.ensure_topics(conn, [spec for spec in declared_topics(settings) if spec.name == topic])
    publish_sealed(conn, topic, sealed, settings.partitions)


RawMessage = tuple[bytes | None, bytes]


def seal_commands(items: list[dict[str, Any] | RawMessage], sealer: Sealer) -> list[dict[str, Any] | RawMessage]:
    """Replace each command's raw card by a sealed_card (the CVC is dropped, only its
    presence is sealed). Raises CommandFileError naming each refused command."""
    out: list[dict[str, Any] | RawMessage] = []
    errors = []
    for n, item in enumerate(items, start=1):
        try:
            out.append(sealer.seal_command(item) if isinstance(item, dict) else item)
        except CardError as e:
            if len(errors) < MAX_FILE_ERRORS:
                errors.append(f"command {n} ({mask_pans(str(item['command_id']))[0]}): {e}")
    if errors:
        raise CommandFileError(errors)
    return out


def intake_sealer(settings: Settings) -> Sealer:
    """The sealer of these settings' producers: the exported card-intake public key
    file if one is configured (producers outside the PCI zone), else the active key
    of the key store (one machine; creates the keys on first use, as the worker does)."""

    if settings.intake_public_key_file is not None:
        return load_sealer(settings.intake_public_key_file)
    store = FileKeyStore(settings.keys_dir)
    store.init()
    return active_sealer(store)


def publish_commands(
    settings: Settings, items: Iterable[dict[str, Any] | RawMessage], *, seal: bool = True, producer: Any = None
) -> int:
    """Publish command records, in order; a (key, bytes) tuple is sent as it is
    (bad input, for tests and the demo). Waits until every one is acknowledged.
    `producer`: one holding its id already (`id_assigned`), for a caller that times the publish.

    Every raw `card` is sealed to the card-intake key first (`intake_sealer`), so no
    PAN is published; `seal=False` publishes it raw, as producers before
    PaymentCommand v5 did (tests of that legacy path only). Raises CommandFileError,
    before anything is sent, if the sealer refuses any card."""
    topic = topic_names(settings).commands
    if seal:
        items = list(items)
        if any(isinstance(i, dict) and i.get("card") is not None for i in items):
            items = seal_commands(items, intake_sealer(settings))
    producer = producer or command_producer(client_config(settings))
    failures: list[str] = []

    def on_delivery(error: Any, _msg: Any) -> None:
        if error is not None:
            failures.append(str(error))

    sent = 0
    for item in items:
        key, value = item if isinstance(item, tuple) else (command_key(item), COMMAND_CODEC.encode(item))
        produce_waiting(producer, topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
        sent += 1
    remaining = producer.flush(FLUSH_TIMEOUT_S)
    if remaining or failures:
        raise PublishError(f"{remaining} undelivered, {len(failures)} failed: {failures[:3]}")
    return sent


def publish_tick(settings: Settings, at: Any, producer: Any = None) -> None:
    """One tick at event time `at` on every partition of clock, acknowledged before
    returning: the worker forwards each to that partition's subscriptions and payments
    stages (docs/subscriptions.md; `paystream scheduler run` ticks on an interval).
    `producer`: a long-lived one to reuse (the scheduler's), else one for this tick."""

    producer = producer or command_producer(client_config(settings))
    topic = topic_names(settings).clock
    for p in range(settings.partitions):
        producer.produce(topic, key=b"clock", value=TICK_CODEC.encode(tick_command(at, p), check=True), partition=p)
    if producer.flush(FLUSH_TIMEOUT_S) != 0:
        raise PublishError(f"the broker did not acknowledge the tick in {FLUSH_TIMEOUT_S} s")
