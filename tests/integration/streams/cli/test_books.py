"""The books from the log alone, on a real run: every event signed and chained, every
entry posted once in its merchant's shard, audit and replay --verify agree with the
live stores; a forged event appended to the log is caught where it is."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from connectors.vault.keys import ActiveSigner, FileKeyStore
from schemas.codec import Codec
from streams.cli import ledger as cli_ledger
from streams.cli import main as cli
from streams.client.books import book_records, live_balances, live_chain_heads, public_keys
from streams.client.processes import wait_until
from streams.domain.audit import audit, compare, rebuild
from streams.domain.chain import ChainHead, Signer, seal
from streams.domain.ledger import merchant_account
from streams.topics import topic_names
from tests.integration.support import Pipeline, create, follow_up, make_settings, run, start_worker

pytestmark = pytest.mark.integration
EVENTS = Codec("PaymentEvent")


def test_audit_and_replay_agree_with_the_live_books_and_a_forgery_is_caught(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings(tmp_path, "books")
    monkeypatch.setattr(cli_ledger, "get_settings", lambda: settings)  # the commands as ops run them
    names = topic_names(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    a, b, c = (
        create(m, "a", amount=10_000),
        create(m, "b", amount=5_000),
        create(m, "c", amount=2_500, capture_method="automatic"),
    )
    more = [
        create(m, f"more{i}", amount=100 + i, capture_method="automatic") for i in range(8)
    ]  # events in every partition
    steps = [
        a,
        b,
        c,
        *more,
        follow_up("capture", m, a["payment_id"], "a-cap", 6_000),
        follow_up("refund", m, a["payment_id"], "a-ref", 1_000),
        follow_up("void", m, b["payment_id"], "b-void"),
    ]
    worker = start_worker(settings)
    try:
        run(Pipeline(settings, worker), steps)
        keys = public_keys(settings)

        def books_closed() -> bool:  # the ledger agents run behind the outcomes
            report = audit(book_records(settings), keys, events_topic=names.events, entries_topic=names.ledger)
            return report.ok and report.events >= 7 + 2 * len(more)

        assert wait_until(books_closed, 60), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()

    report = audit(book_records(settings), keys, events_topic=names.events, entries_topic=names.ledger)
    assert (
        report.ok
        and report.events_authenticated == report.events
        and 0 < report.signatures_verified <= report.events
        and not report.totals
    )
    assert json.loads(CliRunner().invoke(cli.app, ["audit", "--json"]).stdout)["ok"]
    replayed = CliRunner().invoke(cli.app, ["replay", "--verify", "--json"])
    assert replayed.exit_code == 0 and json.loads(replayed.stdout)["differences"] == []
    rebuilt = rebuild(book_records(settings), events_topic=names.events, entries_topic=names.ledger)
    live = live_balances(settings)
    assert compare(live, live_chain_heads(settings), rebuilt) == []
    # Captured 6,000 + 2,500, refunded 1,000, fees on each capture: pending is what the merchant is owed.
    fees = sum(
        e["fee_minor"] for _, _, _, e in book_records(settings) if isinstance(e, dict) and e.get("type") == "captured"
    )
    assert fees > 0
    assert live[(merchant_account(m, "pending"), "USD")] == -(
        6_000 + 2_500 + sum(x["amount_minor"] for x in more) - 1_000 - fees
    )  # a credit: owed to the merchant
    # a's 4,000 not yet captured is still held (a partial capture leaves the rest capturable); b's hold was voided.
    assert live[(merchant_account(m, "holds"), "USD")] == -4_000

    # A forged event, chained after the real head of partition 0 but signed by a foreign key.
    head = live_chain_heads(settings).get(0, ChainHead.genesis(0))
    real = next(e for t, p, _, e in book_records(settings) if t == names.events and isinstance(e, dict))
    forged, _ = seal(
        real | {"event_id": "evt_forged", "amount_minor": 1}, head, Signer("signing-v1", Ed25519PrivateKey.generate())
    )
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
    producer.produce(names.events, EVENTS.encode(forged), key=b"forged", partition=0)
    producer.flush(10)
    failures = audit(book_records(settings), keys, events_topic=names.events, entries_topic=names.ledger).failures
    assert failures and (failures[0].topic, failures[0].partition, failures[0].reason) == (
        names.events,
        0,
        "bad_signature",
    )
    assert CliRunner().invoke(cli.app, ["audit"]).exit_code == 1

    # Two real events, signed with the live key, appended in swapped order: a reorder.
    per_partition: dict[int, int] = {}
    for t, p, _, _record in book_records(settings):
        if t == names.events:
            per_partition[p] = per_partition.get(p, 0) + 1
    cut, swap = sorted((p for p in per_partition if p != 0), key=lambda p: -per_partition[p])[:2]
    assert per_partition[cut] >= 2
    signer = ActiveSigner.of(FileKeyStore(settings.keys_dir))
    head = live_chain_heads(settings).get(swap, ChainHead.genesis(swap))
    first, after = seal(real | {"event_id": "evt_swap_1", "payment_id": "pay_swap", "version": 1}, head, signer)
    second, _ = seal(real | {"event_id": "evt_swap_2", "payment_id": "pay_swap", "version": 2}, after, signer)
    for sealed in (second, first):
        producer.produce(names.events, EVENTS.encode(sealed), key=b"pay_swap", partition=swap)
    producer.flush(10)
    # An event deleted from the log (the broker's DeleteRecords drops a partition's first record): a gap.
    admin = AdminClient({"bootstrap.servers": settings.kafka_bootstrap})
    for future in admin.delete_records([TopicPartition(names.events, cut, 1)]).values():
        future.result(30)
    failures = audit(book_records(settings), keys, events_topic=names.events, entries_topic=names.ledger).failures
    found = {(f.partition, f.reason) for f in failures if f.topic == names.events}
    assert {(0, "bad_signature"), (swap, "chain_reorder"), (cut, "log_truncated"), (cut, "chain_gap")} <= found, [
        (f.partition, f.offset, f.reason) for f in failures
    ]
    assert CliRunner().invoke(cli.app, ["replay"]).exit_code != 0  # nothing to rebuild the books from
