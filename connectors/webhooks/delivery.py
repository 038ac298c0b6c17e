"""What to deliver and when, as pure values over event time.

A payment event becomes one `Notification` per endpoint of its merchant, all with
the same body: the event as Stripe's `Event` (its `id` the event's, which a
receiver dedups by; built by the runner, streams/jobs/webhooks.py). The
notification id (event and endpoint) names the deliveries. Delivery is at least once and in order per
(endpoint, payment): only the oldest undelivered notification of a payment is sent;
the next waits until it is delivered or given up. A failed attempt is retried after
an exponential backoff (`base_s` doubling to `max_delay_s`, with jitter drawn from the
notification id) until `give_up_after_s` (3 days) of event time from its creation;
then it is given up (recorded, for ops) and the next one goes. Each attempt is a
`WebhookDelivery` record for the `webhook-deliveries` topic.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from connectors.webhooks.registry import Endpoint
from schemas.ids import derive_delivery_id, derive_notification_id
from schemas.times import from_ms

MAX_QUEUED_PER_PAYMENT = 1_000
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Backoff:
    base_s: int = 30
    max_delay_s: int = 6 * 3600
    give_up_after_s: int = 3 * 86_400

    def __post_init__(self) -> None:
        assert 1 <= self.base_s <= self.max_delay_s <= self.give_up_after_s <= 30 * 86_400, self

    def delay_ms(self, notification_id: str, attempt: int) -> int:
        """Wait after failed attempt `attempt` (1..): base * 2^(attempt-1), capped, the
        upper quarter jittered (deterministic per notification)."""
        step_ms = min(self.max_delay_s, self.base_s * 2 ** min(attempt - 1, 30)) * 1000
        u = int.from_bytes(hashlib.sha256(f"{notification_id}\x1f{attempt}".encode()).digest()[:8], "big") / 2**64
        return step_ms - int(step_ms * 0.25 * u)


@dataclass(frozen=True)
class Notification:
    notification_id: str
    endpoint: Endpoint
    payment_id: str
    event_type: str
    created_ms: int
    body: bytes


@dataclass(frozen=True)
class Pending:
    notification: Notification
    attempts: int = 0
    next_ms: int = 0


@dataclass(frozen=True)
class Outbox:
    """Undelivered notifications, per (endpoint id, payment id), oldest first."""

    queues: Mapping[tuple[str, str], tuple[Pending, ...]] = field(default_factory=lambda: MappingProxyType({}))

    def pending(self) -> int:
        return sum(len(q) for q in self.queues.values())


def notifications(event: dict[str, Any], endpoints: tuple[Endpoint, ...], created_ms: int,
                  body: bytes) -> list[Notification]:
    """One notification of a payment event per endpoint of its merchant, each with
    `body` (the event as the merchant sees it: no card token, BIN and last four only)."""
    if len(body) > MAX_BODY_BYTES:
        raise ValueError(f"a webhook body of {len(body)} bytes is over {MAX_BODY_BYTES}")
    out = []
    for ep in endpoints:
        assert ep.merchant_id == event["merchant_id"]
        nid = derive_notification_id(event["event_id"], ep.endpoint_id)
        out.append(Notification(nid, ep, event["payment_id"], event["type"], created_ms, body))
    return out


def enqueue(outbox: Outbox, items: list[Notification]) -> Outbox:
    """Queue notifications; one already queued (a redelivered event) is not queued twice."""
    queues = dict(outbox.queues)
    for n in items:
        key = (n.endpoint.endpoint_id, n.payment_id)
        q = queues.get(key, ())
        if any(p.notification.notification_id == n.notification_id for p in q):
            continue
        if len(q) >= MAX_QUEUED_PER_PAYMENT:
            raise OverflowError(f"over {MAX_QUEUED_PER_PAYMENT} undelivered notifications for one payment")
        queues[key] = q + (Pending(n, 0, n.created_ms),)
    return Outbox(MappingProxyType(queues))


def due(outbox: Outbox, now_ms: int, limit: int = 1_000) -> list[Pending]:
    """The heads of their queues whose time has come (at most `limit`), oldest first."""
    heads = [q[0] for q in outbox.queues.values() if q and q[0].next_ms <= now_ms]
    return sorted(heads, key=lambda p: (p.next_ms, p.notification.notification_id))[:limit]


def settle(outbox: Outbox, pending: Pending, now_ms: int, ok: bool, backoff: Backoff,
           http_status: int | None = None, error: str | None = None, key_id: str | None = None) -> tuple[Outbox, dict[str, Any]]:
    """Apply one attempt's result: delivered (dequeue), failed (retry later) or, past
    the give-up horizon, given up (dequeue). Returns the WebhookDelivery record."""
    n = pending.notification
    key = (n.endpoint.endpoint_id, n.payment_id)
    q = outbox.queues[key]
    assert q[0] == pending, "only the head of a payment's queue is ever sent"
    attempt = pending.attempts + 1
    next_ms = now_ms + backoff.delay_ms(n.notification_id, attempt)
    if ok:
        status, rest = "delivered", q[1:]
    elif next_ms > n.created_ms + backoff.give_up_after_s * 1000:
        status, rest = "gave_up", q[1:]
    else:
        status, rest = "failed", (replace(pending, attempts=attempt, next_ms=next_ms),) + q[1:]
    queues = {k: v for k, v in outbox.queues.items() if k != key} | ({key: rest} if rest else {})
    delivery = {
        "delivery_id": derive_delivery_id(n.notification_id, attempt),
        "notification_id": n.notification_id,
        "merchant_id": n.endpoint.merchant_id,
        "endpoint_id": n.endpoint.endpoint_id,
        "url": n.endpoint.url,
        "payment_id": n.payment_id,
        "event_type": n.event_type,
        "attempt": attempt,
        "attempted_at": from_ms(now_ms),
        "status": status,
        "http_status": http_status,
        "error": error[:500] if error else None,
        "next_attempt_at": from_ms(next_ms) if status == "failed" else None,
        "key_id": key_id,
    }
    return Outbox(MappingProxyType(queues)), delivery
