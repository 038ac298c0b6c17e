"""The console's topic side (streams/api/console_sources.py) against the real broker:
a payment's events, chained and signed with the key store's signing key among other
payments' events of its partition, read back and judged (verified / unsigned); a
review read from fraud-review and resolved onto the validated topic as the CLI does;
a given-up webhook retried by hand to a real HTTP receiver, signed, and recorded."""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest

from connectors.kafka import admin
from connectors.kafka.clients import command_producer, read_to_end
from connectors.vault.keys import ActiveSigner, FileKeyStore
from connectors.webhooks import registry
from connectors.webhooks.signing import HEADER, verify
from schemas.codec import Codec
from schemas.ids import derive_notification_id
from schemas.partitioning import partition_for
from streams.api.console import notifications
from streams.api.console_sources import KafkaSources
from streams.client.fraud import resolve_command
from streams.client.processes import wait_until
from streams.domain.chain import UNSIGNED, VERIFIED, ChainHead, link, sign_block, verdicts
from streams.jobs.webhooks import registry_path
from streams.topics import declared_topics, topic_names
from tests.integration.support import make_settings
from tests.unit.streams.ledger_support import event

pytestmark = pytest.mark.integration

EVENTS, REVIEWS, DELIVERIES, VALIDATED = (
    Codec("PaymentEvent"),
    Codec("FraudReview"),
    Codec("WebhookDelivery"),
    Codec("ValidatedCommand"),
)
MERCHANT = "m_console"
T0 = datetime.now(UTC).replace(microsecond=0)


def same_partition(target: str, n: int, partitions: int) -> list[str]:
    p = partition_for(target.encode(), partitions)
    return [pid for pid in (f"pay_fill_{i}" for i in range(10_000)) if partition_for(pid.encode(), partitions) == p][:n]


class Receiver(BaseHTTPRequestHandler):
    got: list[tuple[dict[str, str], bytes]] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Receiver.got.append((dict(self.headers), body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: Any) -> None:
        pass


@pytest.fixture
def world(bootstrap: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path, "console")
    admin.ensure_topics(settings.kafka_bootstrap, declared_topics(settings))
    store = FileKeyStore(settings.keys_dir)
    store.init()
    sources = KafkaSources(settings)
    yield settings, store, sources
    sources.close()


def produce_chain(settings, store, plan: list[list[tuple[str, int]]], at: datetime) -> int:  # type: ignore[no-untyped-def]
    """The planned blocks of (payment, version) linked on the target's partition as the
    payments stage writes them, each block signed on its last event but the final
    block (not signed yet); the partition."""
    signer = ActiveSigner.of(store)
    partition = partition_for(plan[-1][-1][0].encode(), settings.partitions)  # every payment of the plan shares it
    head, producer, n = ChainHead.genesis(partition), command_producer(settings.bootstrap_servers), 0
    for b, block in enumerate(plan):
        linked = []
        for pid, version in block:
            e, head = link(
                event(
                    "authorized",
                    amount=100,
                    payment_id=pid,
                    merchant=MERCHANT,
                    version=version,
                    at=at + timedelta(seconds=n),
                ),
                head,
                signer.key_id,
            )
            linked.append(e)
            n += 1
        if b < len(plan) - 1:
            linked[-1] = sign_block(linked[-1], signer)
        for e in linked:
            producer.produce(
                topic_names(settings).events,
                key=e["payment_id"].encode(),
                value=EVENTS.encode(e, check=True),
                partition=partition,
            )
    assert producer.flush(30) == 0
    return partition


def test_a_payments_events_are_judged_from_the_topic(world) -> None:  # type: ignore[no-untyped-def]
    settings, store, sources = world
    target = "pay_console_target"
    fill = same_partition(target, 3, settings.partitions)
    # [f0 f1] [target v1, f2, target v2] [target v3: its block not signed yet]
    plan = [[(fill[0], 1), (fill[1], 1)], [(target, 1), (fill[2], 1), (target, 2)], [(target, 3)]]
    partition = produce_chain(settings, store, plan, T0)
    ids = [f"evt-{target}-{v}-authorized" for v in (1, 2, 3)]
    got_partition, window = sources.chain_window(target, T0 + timedelta(seconds=2), set(ids))
    assert got_partition == partition and {e["event_id"] for e in window} >= set(ids)
    judged = verdicts(partition, window, set(ids), sources.public_keys())
    assert [judged[i].verdict for i in ids] == [VERIFIED, VERIFIED, UNSIGNED]


def test_event_times_ahead_of_the_broker_clock_still_find_the_events(world) -> None:  # type: ignore[no-untyped-def]
    settings, store, sources = world
    target = "pay_console_future"
    fill = same_partition(target, 1, settings.partitions)
    # The payment's events dated a month ahead, then 300 more records: the first guess starts past them.
    plan = [[(target, 1), (target, 2)], [(fill[0], v) for v in range(1, 301)], [(fill[0], 301)]]
    produce_chain(settings, store, plan, T0 + timedelta(days=30))
    ids = {f"evt-{target}-{v}-authorized" for v in (1, 2)}
    partition, window = sources.chain_window(target, T0 + timedelta(days=30), ids)
    judged = verdicts(partition, window, ids, sources.public_keys())
    assert {i: v.verdict for i, v in judged.items()} == {i: VERIFIED for i in ids}


def test_a_review_is_read_and_resolved_onto_the_validated_topic(world) -> None:  # type: ignore[no-untyped-def]
    settings, _, sources = world
    review = {
        "review_id": "rev_1",
        "payment_id": "pay_console_rev",
        "merchant_id": MERCHANT,
        "command_id": "cmd_rev",
        "card_token": "tok_x",
        "card_bin": "424242",
        "card_last4": "4242",
        "amount_minor": 900,
        "currency": "EUR",
        "score_ppm": 700_000,
        "reasons": ["velocity"],
        "occurred_at": T0,
    }
    producer = command_producer(settings.bootstrap_servers)
    producer.produce(topic_names(settings).review, key=b"pay_console_rev", value=REVIEWS.encode(review, check=True))
    assert producer.flush(30) == 0
    assert wait_until(lambda: any(r["payment_id"] == "pay_console_rev" for r in sources.reviews()), 60), (
        "the review never arrived"
    )
    [seen] = [r for r in sources.reviews() if r["payment_id"] == "pay_console_rev"]
    key, command = resolve_command(seen, "decline", T0, "dashboard:ops")
    sources.resolve(key, command)
    written = [
        (m.key(), VALIDATED.decode(m.value()))
        for m in read_to_end(settings.bootstrap_servers, [topic_names(settings).validated], settings.partitions)
    ]
    assert written == [(key, VALIDATED.decode(VALIDATED.encode(command)))]


def test_a_given_up_webhook_is_retried_by_hand_signed_and_recorded(world) -> None:  # type: ignore[no-untyped-def]
    settings, store, sources = world
    server = HTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/hook"
        reg, endpoint = registry.add(registry.Registry(), MERCHANT, url)
        registry.save(reg, registry_path(settings))
        pid = "pay_console_hook"
        e = event(
            "captured", amount=500, captured=500, authorized=500, payment_id=pid, merchant=MERCHANT, version=2, at=T0
        )
        nid = derive_notification_id(e["event_id"], endpoint.endpoint_id)
        producer = command_producer(settings.bootstrap_servers)
        producer.produce(topic_names(settings).events, key=pid.encode(), value=EVENTS.encode(e, check=True))
        for attempt, status in ((1, "failed"), (2, "gave_up")):
            producer.produce(
                topic_names(settings).webhooks,
                key=pid.encode(),
                value=DELIVERIES.encode(
                    {
                        "delivery_id": f"wda_{attempt}",
                        "notification_id": nid,
                        "merchant_id": MERCHANT,
                        "endpoint_id": endpoint.endpoint_id,
                        "url": url,
                        "payment_id": pid,
                        "event_type": "captured",
                        "attempt": attempt,
                        "attempted_at": T0 + timedelta(days=3, minutes=attempt),
                        "status": status,
                        "http_status": 500,
                        "error": "http 500",
                        "next_attempt_at": None,
                        "key_id": None,
                    },
                    check=True,
                ),
            )
        assert producer.flush(30) == 0

        def attempts() -> int:
            found = notifications(sources.deliveries(), MERCHANT)
            return found[0].last["attempt"] if found else 0

        assert wait_until(lambda: attempts() >= 2, 60), "the attempts never arrived"
        [n] = notifications(sources.deliveries(), MERCHANT)
        assert n.retryable
        record = sources.retry(n, datetime.now(UTC))
        assert (record["status"], record["attempt"], record["http_status"]) == ("delivered", 3, 200)
        [(headers, body)] = Receiver.got
        doc = json.loads(body)  # the runner's body: a Stripe Event of the payment's event
        assert (
            doc["object"] == "event"
            and doc["paystream"]["payment_id"] == pid
            and doc["type"].startswith("payment_intent.")
        )
        verify(headers[HEADER], body, store.webhook_secret(MERCHANT).digest, int(time.time()))  # raises if forged
        assert wait_until(lambda: attempts() == 3, 60), "the retry was not recorded"
    finally:
        server.shutdown()
