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
    runner._take(0, 5, event("p1", "m_a", 1))
    runner._take(0, 6, event("p2", "m_quiet", 1))  # no endpoints: nothing to wait for
    runner._take(0, 7, event("p1", "m_a", 1))  # the same event again: not queued twice
    runner._take(0, 8, b"\x00garbage")
    assert runner.outbox.pending() == 2 and runner.stats.notifications == 2 and runner.stats.undecodable == 1
    assert runner.offsets.committable() == {0: 5}, "held at the event whose notifications are open"
    assert runner.clock.base_ms == int(AT.timestamp() * 1000)


def test_inconsistent_backoff_settings_are_a_clear_error():
    assert backoff_of(Settings()).give_up_after_s == 3 * 86_400
    with pytest.raises(ValueError, match="base_s <= max_delay_s"):
        backoff_of(Settings(webhook_backoff_base_s=600, webhook_backoff_max_delay_s=60))
