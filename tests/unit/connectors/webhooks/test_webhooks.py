"""Webhooks end to end against a real aiohttp receiver on 127.0.0.1 that fails
sometimes: signatures verify, failures are retried, nothing is lost, order per payment
holds; plus the pure schedule (backoff, give-up after 3 days) and key rotation."""

from __future__ import annotations

import asyncio
import json
import socket
from collections import defaultdict

import aiohttp
import pytest
from aiohttp import web

from connectors.vault.keys import FileKeyStore
from connectors.webhooks import registry
from connectors.webhooks.delivery import Backoff, Outbox, due, enqueue, notifications, settle
from connectors.webhooks.sender import deliver_due
from connectors.webhooks.signing import (HEADER, STRIPE_HEADER, SignatureError, signature_header, stripe_secret,
                                         verify)
from schemas.codec import Codec

T0_MS = 1_795_000_000_000
DELIVERIES = Codec("WebhookDelivery")


@pytest.fixture
def store(tmp_path):
    s = FileKeyStore(tmp_path / "keys")
    s.init()
    return s


def event(i: int, payment: str, type_: str = "captured", merchant: str = "m_acme") -> dict:
    return {"event_id": f"evt_{payment}_{i}", "payment_id": payment, "merchant_id": merchant, "type": type_,
            "payment_status": type_, "currency": "USD", "amount_minor": 100 + i, "fee_minor": 3,
            "authorized_minor": 100, "captured_minor": 100, "refunded_minor": 0, "reason_code": None,
            "card_bin": "424242", "card_last4": "4242", "card_token": "tok_secret", "provider": "acq_north", "version": i}


def body(e: dict) -> bytes:
    """A body as the runner passes it (its Stripe Event is tested in tests/unit/streams/jobs)."""
    return json.dumps({"id": e["event_id"], "object": "event", "type": "payment_intent.succeeded",
                       "data": {"object": {"id": "pi_" + e["payment_id"]}}}).encode()


def notes(e: dict, endpoints: tuple, created_ms: int = T0_MS) -> list:
    return notifications(e, endpoints, created_ms, body(e))


class Receiver:
    """A merchant's endpoint: checks every signature, fails by a fixed pattern; one
    failure in three after it has taken the body (its answer lost: at least once)."""

    def __init__(self, secret: bytes) -> None:
        self.secret = secret
        self.now_s = 0
        self.calls = 0
        self.seen: dict[str, list[str]] = defaultdict(list)  # payment -> notification ids, as received
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        try:
            verify(request.headers[HEADER], body, self.secret, self.now_s)
            verify(request.headers[STRIPE_HEADER], body, stripe_secret(self.secret).encode(), self.now_s)
        except SignatureError:
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.calls % 4 == 1:
            return web.Response(status=503)  # down: nothing taken
        self.seen[json.loads(body)["data"]["object"]["id"][3:]].append(request.headers["Paystream-Webhook-Id"])
        return web.Response(status=500 if self.calls % 3 == 0 else 200)


async def serve(receiver: Receiver):
    app = web.Application()
    app.router.add_post("/hooks", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    return runner, f"http://127.0.0.1:{port}/hooks"


async def drain(store, outbox: Outbox, receiver: Receiver | None, max_rounds: int = 500):
    """Run the sender on event time: jump the clock to the next due attempt each round."""
    records = []
    now_ms = T0_MS
    async with aiohttp.ClientSession() as session:
        for _ in range(max_rounds):
            if not outbox.queues:
                break
            now_ms = max(now_ms, min(q[0].next_ms for q in outbox.queues.values()))
            if receiver:
                receiver.now_s = now_ms // 1000
            outbox, batch = await deliver_due(session, store, outbox, now_ms)
            records += batch
    return outbox, records


def test_signed_retried_in_order_and_none_lost(store):
    async def main():
        receiver = Receiver(store.webhook_secret("m_acme").digest)
        runner, url = await serve(receiver)
        try:
            reg, _ = registry.add(registry.Registry(), "m_acme", url)
            outbox, sent = Outbox(), defaultdict(list)
            for p in range(6):
                for i in range(5):
                    for n in notes(event(i, f"pay_{p}"), reg.of("m_acme"), T0_MS + i):
                        sent[n.payment_id].append(n.notification_id)
                        outbox = enqueue(outbox, [n])
            outbox = enqueue(outbox, [n])  # a redelivered event is not queued twice
            outbox, records = await drain(store, outbox, receiver)
            return receiver, sent, outbox, records
        finally:
            await runner.cleanup()

    receiver, sent, outbox, records = asyncio.run(main())
    assert not outbox.queues and receiver.bad_signatures == 0
    for pid, ids in sent.items():
        first_seen = list(dict.fromkeys(receiver.seen[pid]))
        assert first_seen == ids, "every notification, in order per payment"
    assert any(len(v) > len(set(v)) for v in receiver.seen.values()), "lost answers give duplicates (at least once)"
    assert {r["status"] for r in records} == {"delivered", "failed"} and max(r["attempt"] for r in records) >= 2
    delivered = [r["notification_id"] for r in records if r["status"] == "delivered"]
    assert sorted(delivered) == sorted(i for ids in sent.values() for i in ids)
    for r in records:
        DELIVERIES.encode(r, check=True)
        assert r["key_id"] == "webhook-v1"


def test_every_endpoint_gets_the_same_body_under_its_own_notification_id(store):
    reg, a = registry.add(registry.Registry(), "m_acme", "https://example.com/a")
    reg, b = registry.add(reg, "m_acme", "https://example.com/b")
    na, nb = notes(event(1, "pay_1"), reg.of("m_acme"))
    assert na.body == nb.body == body(event(1, "pay_1")) and na.notification_id != nb.notification_id
    assert (na.created_ms, na.event_type, na.payment_id) == (T0_MS, "captured", "pay_1")
    with pytest.raises(ValueError, match="over"):
        notifications(event(1, "pay_1"), (a,), T0_MS, b"x" * (64 * 1024 + 1))


def test_unreachable_endpoint_is_given_up_after_three_days_then_the_next_goes(store):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    reg, _ = registry.add(registry.Registry(), "m_acme", f"http://127.0.0.1:{port}/h")
    outbox = enqueue(Outbox(), notes(event(1, "pay_1"), reg.of("m_acme"))
                     + notes(event(2, "pay_1"), reg.of("m_acme"), T0_MS + 1))
    outbox, records = asyncio.run(drain(store, outbox, None))
    first = [r for r in records if r["notification_id"] == records[0]["notification_id"]]
    assert first[-1]["status"] == "gave_up" and all(r["status"] == "failed" for r in first[:-1])
    span_ms = first[-1]["attempted_at"].timestamp() * 1000 - T0_MS
    assert 2.5 * 86_400_000 < span_ms <= 3 * 86_400_000
    assert 10 <= len(first) <= 30  # exponential, capped at 6 h
    assert records[len(first)]["notification_id"] != first[0]["notification_id"]  # the next one then went
    assert not outbox.queues


def test_backoff_doubles_with_jitter_and_caps():
    b = Backoff()
    delays = [b.delay_ms("n1", a) for a in range(1, 16)]
    assert 22_500 <= delays[0] <= 30_000 and 45_000 <= delays[1] <= 60_000
    assert max(delays) <= 6 * 3_600_000 and delays == [b.delay_ms("n1", a) for a in range(1, 16)]


def test_only_the_head_of_a_payments_queue_is_due(store):
    ep = registry.add(registry.Registry(), "m_acme", "https://example.com/h")[1]
    items = notes(event(1, "pay_1"), (ep,)) + notes(event(2, "pay_1"), (ep,))
    outbox = enqueue(Outbox(), items)
    (head,) = due(outbox, T0_MS)
    assert head.notification == items[0]
    outbox, rec = settle(outbox, head, T0_MS, False, Backoff(), 500, "http 500")
    assert rec["status"] == "failed" and due(outbox, T0_MS) == []  # the second waits behind the first
    (head,) = due(outbox, T0_MS + 30_000)
    assert head.attempts == 1 and head.notification == items[0]


def test_rotation_signs_with_both_secrets_while_it_settles(store):
    body, t = b'{"id":"x"}', 1_000
    old = store.webhook_secret("m_acme").digest
    store.rotate("webhook")
    header = signature_header(store, "m_acme", t, body, key_ids=(None, "webhook-v1"))
    assert header.count("v1=") == 2
    assert verify(header, body, old, t) == t
    assert verify(header, body, store.webhook_secret("m_acme").digest, t) == t
    with pytest.raises(SignatureError, match="no signature"):
        verify(header, body + b" ", old, t)
    with pytest.raises(SignatureError, match="from now"):
        verify(header, body, old, t + 301)
    with pytest.raises(SignatureError, match="t="):
        verify("v1=abc", body, old, t)
    assert store.webhook_secret("m_acme").digest != store.webhook_secret("m_other").digest


def test_registry_add_remove_file_and_topic_record(tmp_path):
    reg, ep = registry.add(registry.Registry(), "m_acme", "https://example.com/h")
    assert registry.add(reg, "m_acme", "https://example.com/h") == (reg, ep)
    path = tmp_path / "webhooks.json"
    registry.save(reg, path)
    assert registry.load(path) == reg
    assert registry.record(reg, "m_acme") == (b"m_acme", b'["https://example.com/h"]')
    empty = registry.remove(reg, "m_acme", ep.endpoint_id)
    assert empty.of("m_acme") == () and registry.record(empty, "m_acme") == (b"m_acme", None)
    for bad in ("ftp://x/h", "https:///nohost", "https://user:pw@example.com/h"):
        with pytest.raises(registry.RegistryError):
            registry.add(reg, "m_acme", bad)
    path.write_text("{")
    with pytest.raises(registry.RegistryError, match="not a webhook registry"):
        registry.load(path)


def test_the_stripe_signature_verifies_with_the_official_sdk(store):
    import time

    import stripe

    ep = registry.add(registry.Registry(), "m_acme", "https://example.com/h")[1]
    (n,) = notes(event(1, "pay_1"), (ep,))
    now = int(time.time())  # the SDK checks the timestamp against the wall clock (300 s)
    old = stripe_secret(store.webhook_secret("m_acme").digest)
    header = signature_header(store, "m_acme", now, n.body, stripe=True)
    assert old.startswith("whsec_") and header != signature_header(store, "m_acme", now, n.body)
    got = stripe.Webhook.construct_event(n.body.decode(), header, old)
    assert got.id == "evt_pay_1_1" and got.type == "payment_intent.succeeded"
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(n.body.decode() + " ", header, old)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(n.body.decode(), header, stripe_secret(store.webhook_secret("m_other").digest))
    store.rotate("webhook")  # while a rotation settles, both secrets verify
    both = signature_header(store, "m_acme", now, n.body, key_ids=(None, "webhook-v1"), stripe=True)
    for secret in (old, stripe_secret(store.webhook_secret("m_acme").digest)):
        assert stripe.Webhook.construct_event(n.body.decode(), both, secret).id == "evt_pay_1_1"
