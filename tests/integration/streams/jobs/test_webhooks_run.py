"""`paystream webhooks run` against the broker and a real aiohttp receiver on
127.0.0.1 that fails sometimes: every payment event is delivered with a valid
signature, in order per payment, retries are on webhook-deliveries, and a runner
crashed mid-way (its task cancelled: nothing more committed) loses nothing."""

from __future__ import annotations

import asyncio
import json
import time
from collections import defaultdict
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from aiohttp import web

from connectors.kafka import admin
from connectors.kafka.clients import command_producer, read_to_end
from connectors.vault.keys import FileKeyStore
from connectors.webhooks import registry
from connectors.webhooks.signing import HEADER, SignatureError, verify
from schemas.codec import Codec
from schemas.ids import derive_event_id
from streams.topics import declared_topics, topic_names
from streams.jobs.webhooks import WebhookRunner, registry_path

from tests.integration.support import make_settings

pytestmark = pytest.mark.integration

EVENTS = Codec("PaymentEvent")
DELIVERIES = Codec("WebhookDelivery")
TYPES = ("authorized", "captured", "refunded", "refunded")
WAIT_S = 120


class Receiver:
    """A merchant's endpoint: verifies every signature against the real clock; one
    call in four is refused (nothing taken), one in three takes the body but answers
    500 (the runner must send it again)."""

    def __init__(self, secrets: dict[str, bytes]) -> None:
        self.secrets = secrets
        self.calls = 0
        self.bad_signatures = 0
        self.seen: dict[str, list[int]] = defaultdict(list)  # payment -> versions, as received
        self.ids: set[str] = set()

    async def handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        doc = json.loads(body)  # Stripe's Event (tests/integration/api/test_stripe_sdk.py checks it with the SDK)
        try:
            verify(request.headers[HEADER], body, self.secrets[request.match_info["merchant"]], int(time.time()))
        except (SignatureError, KeyError):
            self.bad_signatures += 1
            return web.Response(status=400)
        if self.calls % 4 == 1:
            return web.Response(status=503)
        self.seen[doc["paystream"]["payment_id"]].append(doc["paystream"]["version"])
        self.ids.add(request.headers["Paystream-Webhook-Id"])
        return web.Response(status=500 if self.calls % 3 == 0 else 200)


def publish(settings, payments: range, merchants: tuple[str, ...]) -> None:
    producer = command_producer(settings.bootstrap_servers)
    start = datetime.now(timezone.utc)
    for i in payments:
        merchant = merchants[i % len(merchants)]
        pid = f"pay_hook_{i}"
        for v, kind in enumerate(TYPES, 1):
            event = {"event_id": derive_event_id(f"cmd_{pid}_{v}", kind), "type": kind, "payment_id": pid,
                     "merchant_id": merchant, "command_id": f"cmd_{pid}_{v}", "currency": "USD", "amount_minor": 1000,
                     "payment_status": kind, "authorized_minor": 1000, "captured_minor": 1000 * (v > 1),
                     "refunded_minor": 0, "version": v, "card_token": "tok_never_sent", "card_bin": "424242",
                     "card_last4": "4242", "occurred_at": start + timedelta(milliseconds=10 * i + v)}
            producer.produce(topic_names(settings).events, key=pid.encode(), value=EVENTS.encode(event))
    assert producer.flush(30) == 0


async def until(predicate, timeout_s: float = WAIT_S) -> bool:  # type: ignore[no-untyped-def]
    """Poll a condition while the loop serves the runner and the receiver."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def test_every_event_delivered_signed_in_order_and_a_crash_loses_nothing(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "hooks").model_copy(
        update={"webhook_backoff_base_s": 1, "webhook_backoff_max_delay_s": 2})
    admin.ensure_topics(settings.kafka_bootstrap, declared_topics(settings))
    store = FileKeyStore(settings.keys_dir)
    store.init()
    merchants = ("m_hook_a", "m_hook_b", "m_hook_silent")  # the last has no endpoint: nothing to send
    receiver = Receiver({m: store.webhook_secret(m).digest for m in merchants})
    first, second = range(0, 30), range(30, 45)
    notified = {f"pay_hook_{i}" for i in (*first, *second) if merchants[i % 3] != "m_hook_silent"}

    async def main() -> tuple[int, int, WebhookRunner]:
        app = web.Application()
        app.router.add_post("/hooks/{merchant}", receiver.handle)
        http = web.AppRunner(app)
        await http.setup()
        site = web.TCPSite(http, "127.0.0.1", 0)
        await site.start()
        url = f"http://127.0.0.1:{http.addresses[0][1]}/hooks"
        reg = registry.Registry()
        for m in merchants[:2]:
            reg, _ = registry.add(reg, m, f"{url}/{m}")
        registry.save(reg, registry_path(settings))
        try:
            publish(settings, first, merchants)
            crashed = WebhookRunner(settings, store=store)
            task = asyncio.create_task(crashed.run(asyncio.Event()))
            assert await until(lambda: len(receiver.ids) >= 20), f"runner 1 delivered {len(receiver.ids)}"
            open_at_crash = crashed.offsets.outstanding
            task.cancel()  # a crash: whatever is open is not committed
            with pytest.raises(asyncio.CancelledError):
                await task
            calls_before = receiver.calls
            publish(settings, second, merchants)
            stop = asyncio.Event()
            runner = WebhookRunner(settings, store=store)
            task = asyncio.create_task(runner.run(stop))
            done = lambda: set(receiver.seen) == notified and all(len(set(receiver.seen[p])) == 4 for p in notified)  # noqa: E731
            assert await until(done), f"missing: {sorted(notified - set(receiver.seen))[:5]}"
            assert await until(lambda: runner.offsets.outstanding == 0)
            stop.set()
            await task
            return open_at_crash, calls_before, runner
        finally:
            await http.cleanup()

    open_at_crash, calls_before, runner = asyncio.run(main())
    assert open_at_crash > 0, "the crash came when nothing was open; the restart tested nothing"
    assert receiver.calls > calls_before and receiver.bad_signatures == 0
    for pid in notified:
        assert list(dict.fromkeys(receiver.seen[pid])) == [1, 2, 3, 4], f"{pid} out of order: {receiver.seen[pid]}"
    assert any(len(v) > 4 for v in receiver.seen.values()), "lost answers are sent again (at least once)"

    records = [DELIVERIES.decode(m.value()) for m in read_to_end(settings.bootstrap_servers, [topic_names(settings).webhooks], settings.partitions)]
    assert {r["merchant_id"] for r in records} == set(merchants[:2])
    delivered = {r["notification_id"] for r in records if r["status"] == "delivered"}
    assert delivered == receiver.ids, "every notification the receiver took has a delivered record, and no other"
    assert len(delivered) == 4 * len(notified)
    failed = [r for r in records if r["status"] == "failed"]
    assert failed and all(r["next_attempt_at"] is not None and r["error"] for r in failed)
    assert max(r["attempt"] for r in records) >= 2 and not [r for r in records if r["status"] == "gave_up"]
    assert runner.stats.commits > 0 and runner.stats.undecodable == 0
