"""The webhook runner's glue without Kafka: what a read event turns into, and its settings."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from connectors.webhooks import registry
from schemas.codec import Codec
from streams.settings import Settings
from streams.jobs.webhooks import WebhookRunner, backoff_of, registry_path

EVENTS = Codec("PaymentEvent")
AT = datetime(2026, 11, 25, 12, 0, tzinfo=timezone.utc)


def event(pid: str, merchant: str, version: int) -> bytes:
    return EVENTS.encode({"event_id": f"evt_{pid}_{version}", "type": "authorized", "payment_id": pid,
                          "merchant_id": merchant, "currency": "USD", "amount_minor": 100, "payment_status": "authorized",
                          "authorized_minor": 100, "captured_minor": 0, "refunded_minor": 0, "version": version,
                          "occurred_at": AT})


def test_events_become_notifications_for_registered_merchants_only(tmp_path):
    settings = Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys")
    reg, _ = registry.add(registry.Registry(), "m_a", "https://a.example/hooks")
    reg, _ = registry.add(reg, "m_a", "https://b.example/hooks")
    registry.save(reg, registry_path(settings))
    runner = WebhookRunner(settings)
    runner._reload_registry(0.0)
    runner._take(0, 5, event("pay_p1", "m_a", 1))
    runner._take(0, 6, event("pay_p2", "m_quiet", 1))  # no endpoints: nothing to wait for
    runner._take(0, 7, event("pay_p1", "m_a", 1))  # the same event again: not queued twice
    runner._take(0, 8, b"\x00garbage")
    assert runner.outbox.pending() == 2 and runner.stats.notifications == 2 and runner.stats.undecodable == 1
    assert runner.offsets.committable() == {0: 5}, "held at the event whose notifications are open"
    assert runner.clock.base_ms == int(AT.timestamp() * 1000)


def test_inconsistent_backoff_settings_are_a_clear_error():
    assert backoff_of(Settings()).give_up_after_s == 3 * 86_400
    with pytest.raises(ValueError, match="base_s <= max_delay_s"):
        backoff_of(Settings(webhook_backoff_base_s=600, webhook_backoff_max_delay_s=60))


def test_a_webhook_body_is_the_event_the_api_answers_and_the_sdk_reads(tmp_path):
    """The body is Stripe's Event built by the API's builder from the PaymentEvent
    itself; a dispute's close names the dispute its opening made."""
    import json
    import time

    import stripe

    from connectors.webhooks.signing import signature_header, stripe_secret
    from connectors.vault.keys import FileKeyStore
    from streams.domain.stripe_shapes import event_object

    settings = Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys")
    store = FileKeyStore(settings.keys_dir)
    store.init()
    reg, _ = registry.add(registry.Registry(), "m_a", "https://a.example/hooks")
    registry.save(reg, registry_path(settings))
    runner = WebhookRunner(settings, store=store)
    runner._reload_registry(0.0)
    pid = "pay_" + "a" * 32
    base = {"payment_id": pid, "merchant_id": "m_a", "currency": "USD", "amount_minor": 900, "fee_minor": 30,
            "payment_status": "captured", "authorized_minor": 900, "captured_minor": 900, "refunded_minor": 0,
            "card_bin": "424242", "card_last4": "4242", "card_token": "tok_secret", "occurred_at": AT}
    records = [base | {"event_id": "evt_" + "1" * 32, "type": "captured", "version": 2},
               base | {"event_id": "evt_" + "2" * 32, "type": "dispute_opened", "version": 3, "reason_code": "fraudulent"},
               base | {"event_id": "evt_" + "3" * 32, "type": "dispute_lost", "version": 4}]
    for offset, record in enumerate(records):
        runner._take(0, offset, EVENTS.encode(record))
    bodies = [q.notification.body for queue in runner.outbox.queues.values() for q in queue]
    assert len(bodies) == 3 and all(b"tok_secret" not in b for b in bodies)
    docs = [json.loads(b) for b in bodies]
    # What GET /v1/events/{id} answers for the same rows (the read model's, the close with its opening).
    read_rows = [{k: v for k, v in r.items() if k != "card_token"} for r in records]
    read_rows[2] |= {"opened_event_id": "evt_" + "2" * 32}
    assert docs == [event_object(r) for r in read_rows]
    assert [d["type"] for d in docs] == ["payment_intent.succeeded", "charge.dispute.created", "charge.dispute.closed"]
    assert docs[2]["data"]["object"]["id"] == docs[1]["data"]["object"]["id"] == "dp_" + "2" * 32

    # A runner started after the opening (a restart): the close names its opening itself (PaymentEvent v5).
    fresh = WebhookRunner(settings, store=store)
    fresh._reload_registry(0.0)
    fresh._take(0, 2, EVENTS.encode(records[2] | {"dispute_event_id": "evt_" + "2" * 32}))
    [[late]] = [q for q in fresh.outbox.queues.values()]
    assert json.loads(late.notification.body) == docs[2]

    now = int(time.time())  # the SDK checks the timestamp against the wall clock
    header = signature_header(store, "m_a", now, bodies[0], stripe=True)
    got = stripe.Webhook.construct_event(bodies[0].decode(), header, stripe_secret(store.webhook_secret("m_a").digest))
    assert isinstance(got, stripe.Event) and isinstance(got.data.object, stripe.PaymentIntent)
    assert (got.id, got.type, got.data.object.id, got.data.object.amount_received) == (
        "evt_" + "1" * 32, "payment_intent.succeeded", "pi_" + "a" * 32, 900)
