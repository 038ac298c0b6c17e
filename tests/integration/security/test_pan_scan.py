"""Invariant 5 end to end: the public test PANs go through a real worker, the API
gateway and the ClickHouse sink; then every topic of the namespace (read
uncommitted: aborted transactions are on disk too), every RocksDB store under the
data dir, every log line, every other file and every ClickHouse row is scanned
for them (raw, grouped, hex, base64, UTF-16, BCD, and unknown Luhn runs).

The only PANs allowed anywhere are on payment-commands, in the messages this test
published with a PAN in clear on purpose: the legacy raw `card` (producers before
PaymentCommand v5), a PAN in metadata and a PAN in undecodable bytes. Downstream
of ingest, none of them may survive."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient
from fastapi.testclient import TestClient

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PUBLIC_TEST_PANS, Finding, PanScanner, rocksdb_items
from connectors.vault.tokenizer import StoreTokenizer
from streams.api import auth
from streams.api.app import ApiConfig, create_app
from streams.api.bus import KafkaBus
from streams.client.observe import Observer
from streams.client.publish import intake_sealer, publish_commands
from streams.domain.subscriptions import MIT_METADATA_KEY
from streams.jobs.sink import serve
from streams.topics import topic_names
from tests.integration.support import WAIT_S, create, follow_up, make_settings, start_worker

pytestmark = pytest.mark.integration

SCANNER = PanScanner(PUBLIC_TEST_PANS)
LEGACY_PAN, METADATA_PAN, JUNK_PAN, API_PAN = (
    "378282246310005",
    "6011000990139424",
    "4111111111111111",
    "5555555555554444",
)
READ_TIMEOUT_S = 120


def card(pan: str) -> dict:
    return {"number": pan, "exp_month": 12, "exp_year": 2030, "cvc": "737"}


def every_message(bootstrap: str, topics: list[str]) -> Iterator[tuple[str, int, int, bytes]]:
    """(topic, partition, offset, key + value + headers) of every message up to the
    end offsets, read_uncommitted: a PAN in an aborted transaction is on disk too."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"pan-scan-{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_uncommitted",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    try:
        metadata = consumer.list_topics(timeout=30)
        pending: dict[tuple[str, int], int] = {}
        for topic in topics:
            for p in metadata.topics[topic].partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)
                if high > low:
                    pending[(topic, p)] = high
        consumer.assign([TopicPartition(t, p, 0) for t, p in pending])  # 0: from the earliest kept offset
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending:
            assert time.monotonic() < deadline, f"not at the end offsets: {sorted(pending)[:4]}"
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            tp, error = (msg.topic(), msg.partition()), msg.error()
            if error is not None:
                # A partition may end on a transaction marker, never delivered: its EOF counts as arrival.
                assert error.code() == KafkaError._PARTITION_EOF, error
                pending.pop(tp, None)
                continue
            headers = b"".join(k.encode() + (v or b"") for k, v in msg.headers() or [])
            yield (
                msg.topic(),
                msg.partition(),
                msg.offset(),
                (msg.key() or b"") + b"\0" + (msg.value() or b"") + b"\0" + headers,
            )
            if msg.offset() + 1 >= pending.get(tp, 0):
                pending.pop(tp, None)
    finally:
        consumer.close()


def rocksdb_dirs(root: Path) -> list[Path]:
    return sorted(
        p.parent for p in root.rglob("CURRENT") if (p.parent / "IDENTITY").exists() or any(p.parent.glob("MANIFEST-*"))
    )


def test_no_pan_in_any_topic_store_log_or_table(bootstrap: str, tmp_path: Path) -> None:
    started = time.monotonic()
    # The fraud stage on: its tables and topics (risk, labels, reviews) are scanned too.
    settings = make_settings(tmp_path / "data", "panscan").model_copy(update={"fraud_scoring": True})
    names = topic_names(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    worker = start_worker(settings)
    try:
        # Every public test card, sealed by the default producer path, with follow-ups.
        creates = [create(m, f"pan-{i}", amount=1_000 + i, card=card(pan)) for i, pan in enumerate(PUBLIC_TEST_PANS)]
        captures = [follow_up("capture", m, c["payment_id"], f"cap-{i}") for i, c in enumerate(creates[:5])]
        refunds = [follow_up("refund", m, c["payment_id"], f"ref-{i}", 100) for i, c in enumerate(creates[:3])]
        # A PAN in metadata: refused, and the metadata is not forwarded.
        meta = create(m, "meta", card=card("4242424242424242"), metadata={"note": f"card {METADATA_PAN}"})
        # A sealed card copied into another command: a dead letter, never opened.
        stolen = intake_sealer(settings).seal_command(create(m, "victim", card=card("4000056655665556")))
        replayed = create(m, "replayed", card=None) | {"sealed_card": stolen["sealed_card"]}
        junk = (b"junk-pan", b"\xc3\x01" + bytes(8) + f"card {JUNK_PAN} exp 12/30".encode())
        # The legacy path: a raw card, as producers before PaymentCommand v5 publish it.
        legacy = create(m, "legacy", card=card(LEGACY_PAN))
        with Observer(settings) as seen:
            publish_commands(settings, [*creates, meta, replayed, junk])
            publish_commands(settings, [legacy], seal=False)
            publish_commands(settings, captures + refunds)
            ids = {c["command_id"] for c in [*creates, meta, legacy, *captures, *refunds]}
            assert seen.wait_for(ids, 2, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            # A merchant-initiated charge on a saved card: the one call that reveals a PAN (audited on vault-reveals).
            saved = "5555555555554444"
            token = StoreTokenizer(FileKeyStore(settings.keys_dir)).token(m, saved)
            mit = create(
                m,
                "mit",
                amount=700,
                capture_method="automatic",
                card=None,
                metadata={MIT_METADATA_KEY: "sub_scan"},
                card_token={
                    "token": token,
                    "bin": saved[:6],
                    "last4": saved[-4:],
                    "brand": "mastercard",
                    "exp_month": 12,
                    "exp_year": 2030,
                },
            )
            publish_commands(settings, [mit])
            ids.add(mit["command_id"])
            assert seen.wait_for(ids, 2, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            assert seen.outcomes[mit["command_id"]][0]["payment_status"] == "captured", seen.outcomes[mit["command_id"]]
            outcome = {c["command_id"]: seen.outcomes[c["command_id"]][0] for c in [meta, legacy]}
            # Commands travel under their merchant's key: a dead letter is told by its value.
            (dead_replayed,) = [d for d in seen.dead_letters if replayed["command_id"].encode() in d["raw_value"]]
            dead = {d["raw_key"]: d for d in seen.dead_letters}
        assert (outcome[meta["command_id"]]["status"], outcome[meta["command_id"]]["reason_code"]) == (
            "rejected",
            "pan_in_metadata",
        )
        # Ingest accepts the raw card by default (PAYSTREAM_INGEST_ACCEPT_RAW_CARD) and tokenizes it.
        assert outcome[legacy["command_id"]]["reason_code"] not in ("raw_card_refused", "invalid_card_number")
        assert dead_replayed["reason"] == "sealed_card_tampered"
        assert dead[b"junk-pan"]["pans_masked"] >= 1

        # The API gateway seals what it receives.
        secret, record = auth.new_key(m, "2026-11-25T12:00:00Z")
        auth.save({record.key_id: record}, tmp_path / "api_keys.json")
        bus = KafkaBus(settings, max_slots=10)
        try:
            api = TestClient(
                create_app(
                    bus,
                    auth.ApiKeys(tmp_path / "api_keys.json"),
                    sealer=intake_sealer(settings),
                    config=ApiConfig(outcome_timeout_s=60),
                )
            )
            r = api.post(
                "/v1/payments",
                json={"amount_minor": 990, "currency": "USD", "card": card(API_PAN)},
                headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "api-1"},
            )
        finally:
            bus.close()
        assert r.status_code == 200, r.text

        # The read models: the sink consumes events and outcomes into chDB.
        client = connect(f"chdb://{(tmp_path / 'ch').resolve()}", "it_panscan")
        try:  # chDB is one engine per process: left open, it breaks every later test
            migrate(client)
            stop = threading.Event()
            sink = threading.Thread(target=lambda: serve(settings, client, stop.is_set, max_wait_ms=200))
            sink.start()
            outcomes_total = len(ids) + 1
            deadline = time.monotonic() + WAIT_S
            while (
                time.monotonic() < deadline
                and client.query("SELECT count() FROM payment_outcomes FINAL").result_rows[0][0] < outcomes_total
            ):
                stop.wait(0.5)
            stop.set()
            sink.join(60)
            assert not sink.is_alive()
            tables = [row[0] for row in client.query("SHOW TABLES").result_rows]
            rows = {t: client.query(f"SELECT * FROM {t}").result_rows for t in tables}
        finally:
            client.close()
    finally:
        code = worker.stop()
    assert code == 0, worker.log_tail()

    findings: list[Finding] = []
    # 1. Every topic of this namespace: pipeline topics, DLQ, changelogs, the vault's sealed cards and its reveal audit.
    admin = AdminClient({"bootstrap.servers": settings.bootstrap_servers})
    topics = sorted(t for t in admin.list_topics(timeout=30).topics if settings.namespace in t)
    assert {
        names.commands,
        names.validated,
        names.outcomes,
        names.events,
        names.dlq,
        names.card_vault,
        names.vault_reveals,
    } <= set(topics)
    assert any(t.endswith("-changelog") for t in topics)
    # Told by command_id (in the Avro value as is), the junk by its key.
    allowed_on_commands = {legacy["command_id"].encode(), meta["command_id"].encode(), b"junk-pan"}
    on_commands: dict[bytes, list[Finding]] = {}
    messages = 0
    per_topic: dict[str, int] = {}
    for topic, partition, offset, blob in every_message(settings.bootstrap_servers, topics):
        messages += 1
        per_topic[topic] = per_topic.get(topic, 0) + 1
        found = SCANNER.scan(blob, f"{topic}[{partition}]@{offset}")
        if topic == names.commands and found:
            owner = next((c["command_id"].encode() for c in (legacy, meta) if c["command_id"].encode() in blob), None)
            on_commands.setdefault(owner or blob.split(b"\0", 1)[0], []).extend(found)
        else:
            findings += found
    # The legacy path leaves its PAN on payment-commands (so do a producer's PAN in
    # metadata and in junk); the sealed cards and the API's card are not readable there.
    assert set(on_commands) == allowed_on_commands, {k: [str(f) for f in v] for k, v in on_commands.items()}
    assert {f.pan for f in on_commands[legacy["command_id"].encode()]} == {LEGACY_PAN[:6] + "*****" + LEGACY_PAN[-4:]}

    assert per_topic.get(names.card_vault, 0) >= len(PUBLIC_TEST_PANS) and per_topic.get(names.vault_reveals, 0) >= 1, (
        per_topic
    )

    # 2. Every RocksDB store (the tables) through RocksDB: SST blocks are compressed.
    stores = rocksdb_dirs(settings.data_dir)
    assert len(stores) > 1, stores
    store_items = 0
    for store in stores:
        for key, value in rocksdb_items(store):
            store_items += 1
            findings += SCANNER.scan(key + b"\0" + value, f"{store.relative_to(settings.data_dir)}:{key[:40]!r}")

    # 3. Every log line and every other file the worker, the producers and the API wrote.
    in_stores = lambda p: any(s == p or s in p.parents for s in stores)  # noqa: E731
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not in_stores(p) and (tmp_path / "ch") not in p.parents]
    assert any(p.name == "worker.log" and p.stat().st_size > 0 for p in files)
    for path in files:
        findings += SCANNER.scan(path.read_bytes(), str(path.relative_to(tmp_path)))

    # 4. Every row of every ClickHouse table.
    for table, table_rows in rows.items():
        for n, row in enumerate(table_rows):
            blob = b"\0".join(v if isinstance(v, bytes) else str(v).encode() for v in row)
            findings += SCANNER.scan(blob, f"clickhouse {table} row {n}")

    assert not findings, "\n".join(map(str, findings[:20]))
    assert len(rows["payment_outcomes"]) >= outcomes_total  # the sink landed every outcome: the tables were not empty
    print(
        f"pan scan: {len(topics)} topics, {messages} messages, {len(stores)} RocksDB stores ({store_items} items), "
        f"{len(files)} files, {sum(map(len, rows.values()))} ClickHouse rows in {len(rows)} tables; "
        f"{time.monotonic() - started:.0f}s"
    )
