"""The HTTP side of webhooks (aiohttp): POST each due notification, signed, and feed
the result back into the pure schedule. A payment's notifications go one at a time
(only its queue head is due); different payments go concurrently, bounded."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import aiohttp

from connectors.vault.keys import KeyStore
from connectors.webhooks.delivery import Backoff, Outbox, Pending, due, settle
from connectors.webhooks.signing import HEADER, STRIPE_HEADER, signature_header

MAX_CONCURRENT = 32
MAX_RESPONSE_BYTES = 4_096  # a receiver's answer is read this far, never more


@dataclass(frozen=True)
class Result:
    ok: bool
    http_status: int | None
    error: str | None
    key_id: str


async def post(
    session: aiohttp.ClientSession, store: KeyStore, pending: Pending, signed_at_s: int, timeout_s: float = 10.0
) -> Result:
    """One attempt, signed at `signed_at_s`: 2xx is delivered; anything else (status,
    refused, timeout) failed."""
    n = pending.notification
    key_id = store.webhook_secret(n.endpoint.merchant_id).key_id
    headers = {
        "Content-Type": "application/json",
        HEADER: signature_header(store, n.endpoint.merchant_id, signed_at_s, n.body),
        STRIPE_HEADER: signature_header(store, n.endpoint.merchant_id, signed_at_s, n.body, stripe=True),
        "Paystream-Webhook-Id": n.notification_id,
    }
    try:
        async with session.post(
            n.endpoint.url,
            data=n.body,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout_s),
            allow_redirects=False,
        ) as resp:
            await resp.content.read(MAX_RESPONSE_BYTES)
            ok = 200 <= resp.status < 300
            return Result(ok, resp.status, None if ok else f"http {resp.status}", key_id)
    except (TimeoutError, aiohttp.ClientError, OSError) as e:
        return Result(False, None, type(e).__name__, key_id)


async def deliver_due(
    session: aiohttp.ClientSession,
    store: KeyStore,
    outbox: Outbox,
    now_ms: int,
    backoff: Backoff = Backoff(),
    limit: int = 1_000,
    *,
    signed_at_s: int | None = None,
    timeout_s: float = 10.0,
) -> tuple[Outbox, list[dict[str, Any]]]:
    """Send every notification due at `now_ms` (event time; the runner passes its
    clock); return the next outbox and one WebhookDelivery record per attempt. The
    signature's timestamp is `signed_at_s` (the real time of sending, which receivers
    check against their clock), `now_ms` when not given."""
    batch = due(outbox, now_ms, limit)
    gate = asyncio.Semaphore(MAX_CONCURRENT)

    async def one(p: Pending) -> Result:
        async with gate:
            return await post(session, store, p, now_ms // 1000 if signed_at_s is None else signed_at_s, timeout_s)

    results = await asyncio.gather(*(one(p) for p in batch))
    records = []
    for pending, r in zip(batch, results):
        outbox, record = settle(outbox, pending, now_ms, r.ok, backoff, r.http_status, r.error, r.key_id)
        records.append(record)
    return outbox, records
