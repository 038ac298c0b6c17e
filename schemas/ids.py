"""Deterministic ids. A retried create must land on the same partition and a
redelivered command must produce the same outcome id, so ids are derived, not drawn."""

from __future__ import annotations

import hashlib
import uuid

_NS = uuid.UUID("6f1c1c9e-6d55-4a4f-9a57-0d3f5b0b7a11")
_NS_BYTES = _NS.bytes  # a property that builds the bytes at each use
_SEP = "\x1f"  # unit separator: cannot appear in a valid merchant id, so no ambiguity


def _derive(prefix: str, *parts: str) -> str:
    """prefix + uuid5(_NS, name).hex, written out: uuid.uuid5 builds two UUID objects
    per id (~5 µs), and a command derives several ids."""
    digest = bytearray(hashlib.sha1(_NS_BYTES + (prefix + _SEP + _SEP.join(parts)).encode()).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50  # version 5
    digest[8] = (digest[8] & 0x3F) | 0x80  # RFC 4122 variant
    return prefix + digest.hex()


def derive_payment_id(merchant_id: str, idempotency_key: str) -> str:
    return _derive("pay_", merchant_id, idempotency_key)


def derive_outcome_id(command_id: str) -> str:
    return _derive("out_", command_id)


def derive_dlq_id(topic: str, partition: int, offset: int | str) -> str:
    """A dead letter's id: where its message was read (or, handed on inside a worker and
    not read yet, the hand-off's ref in place of the offset)."""
    return _derive("dlq_", topic, str(partition), str(offset))


def derive_event_id(source_id: str, event_type: str) -> str:
    """A payment event's id: its source (a command_id or a timer) plus its type."""
    return _derive("evt_", source_id, event_type)


def derive_label_id(source_id: str) -> str:
    """A fraud label's id: the event (or report) it was derived from."""
    return _derive("lbl_", source_id)


def derive_provider_key(payment_id: str, operation: str, *parts: str) -> str:
    """The provider-side idempotency key of one call: a retried call (after a crash,
    a redelivery or a timeout) reuses it, so the provider applies it once."""
    return _derive("prv_", payment_id, operation, *parts)


def derive_reveal_id(payment_id: str, purpose: str) -> str:
    """The id of a vault reveal's audit record: a reveal retried after an aborted
    transaction (the same payment, the same purpose) carries the same id."""
    return _derive("rvl_", payment_id, purpose)


def derive_command_id(payment_id: str, kind: str, *parts: str) -> str:
    """The command_id of a command the pipeline addresses to itself (e.g. resolve)."""
    return _derive("cmd_", payment_id, kind, *parts)


def derive_api_command_id(merchant_id: str, idempotency_key: str, route: str, instance: str) -> str:
    """The command_id an API instance gives one HTTP write: a retry of the same key on
    the same route (e.g. "capture:pay_...") reuses it and is never published twice."""
    return _derive("cmd_", "api", instance, merchant_id, idempotency_key, route)


def derive_entry_id(event_id: str) -> str:
    """The journal entry of a payment event: a redelivered event yields the same id."""
    return _derive("je_", event_id)


def derive_reversal_id(entry_id: str, correction_id: str) -> str:
    """The entry reversing `entry_id` for one correction (several corrections, several ids)."""
    return _derive("jr_", entry_id, correction_id)


def derive_settlement_id(merchant_id: str, currency: str, day: str) -> str:
    """One merchant's settlement of one currency for one day (ISO date): a re-run gets the same id."""
    return _derive("stl_", merchant_id, currency, day)


def derive_payout_id(settlement_id: str) -> str:
    return _derive("po_", settlement_id)


def derive_endpoint_id(merchant_id: str, url: str) -> str:
    """A merchant's webhook endpoint: the same URL registered twice is one endpoint."""
    return _derive("we_", merchant_id, url)


def derive_notification_id(event_id: str, endpoint_id: str) -> str:
    """The webhook notification of one payment event to one endpoint: the `id` a
    receiver deduplicates by (delivery is at least once)."""
    return _derive("whk_", event_id, endpoint_id)


def derive_delivery_id(notification_id: str, attempt: int) -> str:
    return _derive("wda_", notification_id, str(attempt))


def derive_subscription_id(merchant_id: str, idempotency_key: str) -> str:
    """A subscription created under a merchant's key: a retried create names the same one."""
    return _derive("sub_", merchant_id, idempotency_key)


def derive_charge_command_id(subscription_id: str, period: int, attempt: int) -> str:
    """The command_id of a subscription's charge: one per (period, attempt), so a replay
    from offset 0 emits the same id and the payments stage dedups a re-emission."""
    return _derive("cmd_", "subscription", subscription_id, str(period), str(attempt))
