"""The vault as Kafka-native state, on real workers: worker A seals a card (in the
ingest transaction, onto card-vault) and is stopped; worker B, with a fresh data dir,
reveals it for a merchant-initiated charge on the saved card, and the reveal is
audited on vault-reveals; another merchant naming the token gets nothing. Then the
vault-master key is rotated and the topic re-wrapped (`paystream keys rotate`,
`keys rewrap`), the old master key taken away, and worker C still reveals it. No
PAN in clear on any of it."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connectors.kafka.clients import read_to_end
from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PanScanner
from connectors.vault.tokenizer import StoreTokenizer
from connectors.vault.vault import master_key_id
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from streams.cli.main import app
from streams.client.observe import Observer
from streams.client.publish import publish_commands
from streams.domain.payments import REVEAL_MIT
from streams.domain.subscriptions import MIT_METADATA_KEY
from streams.settings import Settings, client_config, get_settings
from streams.topics import topic_names
from tests.integration.support import T0, WAIT_S, create, make_settings, start_worker

pytestmark = pytest.mark.integration
REVEALS = Codec("VaultReveal")
PAN = "4242424242424242"


def saved_card_charge(merchant: str, token: str) -> dict:
    """A merchant-initiated charge on the saved card (a subscription's, as the subscriptions stage emits it)."""
    key = f"mit-{uuid.uuid4().hex[:8]}"
    return create(merchant, key, amount=2500, card=None, capture_method="automatic",
                  card_token={"token": token, "bin": PAN[:6], "last4": PAN[-4:], "brand": "visa", "exp_month": 12,
                              "exp_year": 2030},
                  metadata={MIT_METADATA_KEY: "sub_vault"}) | {"payment_id": derive_payment_id(merchant, key)}


def outcome_of(settings: Settings, cmd: dict) -> dict:
    observer = Observer(settings, from_beginning=True)
    try:
        assert observer.wait_for({cmd["command_id"]}, 0, WAIT_S)
        (outcome,) = observer.outcomes[cmd["command_id"]]
        return outcome
    finally:
        observer.close()


def records(settings: Settings, topic: str) -> list[tuple[bytes, bytes | None]]:
    return [(m.key(), m.value()) for m in read_to_end(client_config(settings), [topic], settings.partitions)]


def keys_cli(monkeypatch: pytest.MonkeyPatch, settings: Settings, *args: str) -> tuple[int, str, str]:
    env = {"NAMESPACE": settings.namespace, "PARTITIONS": str(settings.partitions), "KEYS_DIR": str(settings.keys_dir),
           "DATA_DIR": str(settings.data_dir), "KAFKA_BOOTSTRAP": settings.kafka_bootstrap}
    for k, v in env.items():
        monkeypatch.setenv(f"PAYSTREAM_{k}", v)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(app, ["keys", *args])
    finally:
        get_settings.cache_clear()
    return r.exit_code, r.stdout, r.stderr


def test_a_card_sealed_by_one_worker_is_revealed_by_another_audited_and_survives_a_rewrap(
        bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = make_settings(tmp_path / "a", "vault").model_copy(update={"worker_name": "wa"})
    names = topic_names(a)
    # B and C: the same namespace and key store, each a data dir of its own (a new pod, a lost disk).
    b = a.model_copy(update={"data_dir": tmp_path / "b", "worker_name": "wb"})
    c = a.model_copy(update={"data_dir": tmp_path / "c", "worker_name": "wc"})
    merchant = "m_vault"

    # 1. Worker A takes a card (sealed to the card-intake key by the producer) and seals it in the vault.
    worker = start_worker(a)
    try:
        first = create(merchant, "first", capture_method="automatic")
        publish_commands(a, [first])
        assert outcome_of(a, first)["status"] == "succeeded", worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    token = StoreTokenizer(FileKeyStore(a.keys_dir)).token(merchant, PAN)
    sealed = [(k, v) for k, v in records(a, names.card_vault)]
    assert [k for k, _ in sealed] == [token.encode()]  # one record, by token, committed with the forwarded token
    assert master_key_id(token, sealed[0][1]) == "vault-master-v1"

    # 2. Worker B (fresh data dir) reveals it for a saved-card charge; another merchant naming the token gets nothing.
    worker = start_worker(b)
    try:
        charge = saved_card_charge(merchant, token)
        stolen = saved_card_charge("m_other", token)
        publish_commands(b, [charge, stolen])
        outcome = outcome_of(b, charge)
        assert (outcome["status"], outcome["payment_status"]) == ("succeeded", "captured"), worker.log_tail()
        refused = outcome_of(b, stolen)
        assert (refused["status"], refused["reason_code"]) == ("rejected", "card_unavailable"), refused
    finally:
        assert worker.stop() == 0, worker.log_tail()
    (audit,) = [REVEALS.decode(v) for _, v in records(b, names.vault_reveals)]
    assert {k: audit[k] for k in ("token", "merchant_id", "payment_id", "purpose", "master_key_id", "worker")} == {
        "token": token, "merchant_id": merchant, "payment_id": charge["payment_id"], "purpose": REVEAL_MIT,
        "master_key_id": "vault-master-v1", "worker": "wb"}
    assert audit["event_time"] == T0  # the command's event time, not the wall clock

    # 3. Rotate the master key, re-wrap the topic, retire the old key: worker C still reveals the card.
    code, out, err = keys_cli(monkeypatch, a, "rotate", "--kind", "vault-master")
    assert code == 0, err
    code, out, err = keys_cli(monkeypatch, a, "rewrap")
    assert code == 0 and "rewrapped 1 data key(s) under vault-master-v2; 0 already were" in err, err
    assert json.loads(out) == {"master_key_records": {"vault-master-v2": 1}}
    code, out, err = keys_cli(monkeypatch, a, "rewrap")
    assert code == 0 and "rewrapped 0 data key(s) under vault-master-v2; 1 already were" in err, err
    (a.keys_dir / "vault-master-v1.json").rename(tmp_path / "escrowed-vault-master-v1.json")
    worker = start_worker(c)
    try:
        again = saved_card_charge(merchant, token)
        publish_commands(c, [again])
        outcome = outcome_of(c, again)
        assert (outcome["status"], outcome["payment_status"]) == ("succeeded", "captured"), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    audits = [REVEALS.decode(v) for _, v in records(c, names.vault_reveals)]
    assert [(x["payment_id"], x["master_key_id"], x["worker"]) for x in audits if x["payment_id"] == again["payment_id"]] \
        == [(again["payment_id"], "vault-master-v2", "wc")]

    # 4. No PAN in clear in the vault's topics, the commands or the workers' logs.
    scanner = PanScanner([PAN])
    for topic in (names.card_vault, names.vault_reveals, names.validated, names.events):
        for n, (key, value) in enumerate(records(a, topic)):
            assert scanner.scan((key or b"") + b"\0" + (value or b""), f"{topic}@{n}") == []
    for settings in (a, b, c):
        assert scanner.scan((settings.data_dir / "worker.log").read_bytes(), str(settings.data_dir)) == []


def test_a_card_not_held_is_read_through_from_its_partition(bootstrap: str, tmp_path: Path) -> None:
    """The map holds one card: the other is read through from the topic; so is a card
    sealed after the map was loaded; an unknown token is a clear VaultError."""
    from connectors.kafka import admin
    from connectors.vault.topic import TopicVault, publish_sealed
    from connectors.vault.vault import CardSealer, VaultError
    from streams.topics import declared_topics

    settings = make_settings(tmp_path, "vault-rt")
    conn, topic = client_config(settings), topic_names(settings).card_vault
    admin.ensure_topics(conn, [s for s in declared_topics(settings) if s.name == topic])
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    sealer = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    first, second = sealer.token("m_rt", PAN), sealer.token("m_rt", "5555555555554444")
    publish_sealed(conn, topic, sealer.sealed, settings.partitions)

    vault = TopicVault(conn, topic, settings.partitions, keys, max_cards=1, read_through_s=10)
    vault.ensure_loaded()
    assert len(vault.cards) == 1 and vault.cards.evicted == 1  # bounded: the first card was pushed out
    assert vault.reveal(first).pan == PAN  # read through, then held
    assert first in vault.cards and second not in vault.cards
    assert vault.reveal(second).pan == "5555555555554444"

    roomy = TopicVault(conn, topic, settings.partitions, keys, max_cards=10, read_through_s=10)
    roomy.ensure_loaded()
    assert len(roomy.cards) == 2 and roomy.cards.evicted == 0
    late = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    third = late.token("m_rt", "378282246310005")
    publish_sealed(conn, topic, late.sealed, settings.partitions)
    for v in (vault, roomy):  # the whole partition (cards were pushed out), or only its tail past the follower
        assert v.reveal(third).pan == "378282246310005"  # sealed after the load, not yet followed
        with pytest.raises(VaultError, match="no such token"):
            v.reveal("tok_" + "a" * 32)


def test_a_local_vault_of_an_earlier_version_is_imported_onto_the_topic(
        bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The RocksDB vault file of earlier versions holds the same envelopes: `keys vault-import`
    publishes them unchanged, and the topic's vault reveals them."""
    from rocksdict import Options, Rdict

    from connectors.vault.topic import TopicVault
    from connectors.vault.vault import seal

    settings = make_settings(tmp_path, "vault-import")
    keys = FileKeyStore(settings.keys_dir)
    keys.init()
    card, blob = seal(keys, StoreTokenizer(keys), "m_old", PAN)
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    db = Rdict(str(tmp_path / "old" / "vault"), options)  # as Vault wrote it: token -> record
    db.put(card.token.encode(), blob)
    db.close()

    code, _, err = keys_cli(monkeypatch, settings, "vault-import", str(tmp_path / "old" / "vault"))
    assert code == 0 and "1 sealed card(s) published" in err, err
    names = topic_names(settings)
    assert records(settings, names.card_vault) == [(card.token.encode(), blob)]
    vault = TopicVault(client_config(settings), names.card_vault, settings.partitions, keys, max_cards=10, read_through_s=10)
    assert vault.reveal(card.token).pan == PAN
    code, _, err = keys_cli(monkeypatch, settings, "vault-import", str(tmp_path))
    assert code == 1 and "not a RocksDB vault" in err
