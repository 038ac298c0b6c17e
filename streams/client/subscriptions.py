"""Subscription commands written to subscription-commands (keyed by subscription id: the
partition its ticks visit) and the subscriptions table read back from its changelog
(the stage's committed state). docs/subscriptions.md."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from connectors.kafka.clients import MissingTopic, command_producer
from schemas.codec import Codec
from schemas.ids import derive_subscription_id
from streams.domain.subscriptions import Subscription
from streams.settings import Settings, client_config
from streams.stages.subscriptions import blank_command
from streams.topics import topic_names
from streams.worker.changelogs import read_table

CODEC = Codec("SubscriptionCommand")


FLUSH_TIMEOUT_S = 30


def _blank(kind: str, at: datetime) -> dict[str, Any]:
    return blank_command(f"subcmd_{uuid.uuid4().hex}", kind, at)


def publish(settings: Settings, commands: list[dict[str, Any]]) -> None:
    """Subscription commands, keyed by subscription id, acknowledged before returning."""

    producer = command_producer(client_config(settings))
    topic = topic_names(settings).subscription_commands
    for cmd in commands:
        producer.produce(topic, key=cmd["subscription_id"].encode(), value=CODEC.encode(cmd, check=True))
        producer.poll(0)
    if producer.flush(FLUSH_TIMEOUT_S) != 0:
        raise RuntimeError(f"the broker did not acknowledge the subscription commands in {FLUSH_TIMEOUT_S} s")


def read_subscriptions(settings: Settings) -> list[Subscription]:
    """The stage's committed state: the latest record per key of its table's changelog."""

    latest: dict[bytes, bytes | None] = {}
    try:
        for _, key, value in read_table(settings, "subscriptions"):
            latest[key] = value
    except MissingTopic:
        return []
    return sorted(
        (Subscription.from_json(v) for v in latest.values() if v is not None), key=lambda s: s.subscription_id
    )


def create_command(
    merchant: str,
    key: str,
    card_token: dict[str, Any],
    amount_minor: int,
    currency: str,
    interval: str,
    every: int,
    trial_days: int,
    anchor: datetime | None,
    at: datetime,
) -> dict[str, Any]:
    return _blank("create", at) | {
        "subscription_id": derive_subscription_id(merchant, key),
        "merchant_id": merchant,
        "card_token": card_token,
        "plan": {"amount_minor": amount_minor, "currency": currency, "interval": interval, "interval_count": every},
        "anchor_at": anchor,
        "trial_days": trial_days,
    }


def cancel_command(merchant: str, subscription_id: str, at_period_end: bool, at: datetime) -> dict[str, Any]:
    return _blank("cancel", at) | {
        "subscription_id": subscription_id,
        "merchant_id": merchant,
        "at_period_end": at_period_end,
    }


def change_plan_command(sub: Subscription, amount_minor: int, at: datetime) -> dict[str, Any]:
    return _blank("change_plan", at) | {
        "subscription_id": sub.subscription_id,
        "merchant_id": sub.merchant_id,
        "plan": {
            "amount_minor": amount_minor,
            "currency": sub.currency,
            "interval": sub.interval,
            "interval_count": sub.interval_count,
        },
    }
