"""The keys stage: idempotency keys scoped per merchant, across all its payments.

Commands reach this stage keyed by merchant (so one merchant's keys live in one
partition, and each payment's commands keep their order: they all pass through
their merchant's partition), and leave it keyed by payment_id for the payments stage.

Routes. A create the risk stage scores goes on to `payment-commands-risk` keyed by its
card token; its payment's follow-ups must not overtake it, so the stage remembers
payment -> card token and sends them the same way (the risk stage passes them
through): one payment's commands pass one keys partition, then one risk partition,
then one payments partition, in order. The route is kept `route_retention` (the
refund and dispute window) by event time; a follow-up after it goes straight on
(its create is long done).

A key is claimed by the first payment it is used for. The same key on another
payment of the merchant is refused as `idempotency_conflict`; on the same payment
it passes, and the payment, which keeps each key's fingerprint and first outcome,
answers with a replay or a conflict. A refused command (a validation error) claims
nothing. Claims are kept `retention` by event time, then swept (streams/timers.py).

Storage, in the keys table (keys carry the partition, see streams/timers.py):
  b"<p>/k/<merchant>\\x1f<key>" -> JSON {"payment_id", "first_ms"}
  b"<p>/r/<payment_id>"          -> the card token its commands travel by
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Mapping

from streams.merchants import admit
from streams.payments import event_ms
from streams.timers import SWEEP_MAX, Get, Timer, TimerStore

_SEP = "\x1f"


@dataclass
class KeyEffects:
    command: dict[str, Any]  # the ValidatedCommand to forward, possibly now refused
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)
    route: bytes | None = None  # the card token to send it by, through the risk stage; None: straight on


def route_key(partition: int, payment_id: str) -> bytes:
    return f"{partition}/r/{payment_id}".encode()


def routing_key(cmd: dict[str, Any]) -> bytes:
    """The key a command travels to this stage under: its merchant (or, for a command
    refused for want of a usable merchant, its command_id)."""
    return (cmd["merchant_id"] or cmd["command_id"]).encode()


def claim_key(partition: int, merchant_id: str, idempotency_key: str) -> bytes:
    return f"{partition}/k/{merchant_id}{_SEP}{idempotency_key}".encode()


def handle(cmd: dict[str, Any], partition: int, record_ts_ms: int, get: Get, retention: timedelta,
           sweep_max: int = SWEEP_MAX, route_retention: timedelta | None = None, *,
           merchant: Mapping[str, Any] | None = None, require_registration: bool = False) -> KeyEffects:
    """`route_retention` None: no risk stage, every command goes straight on. `merchant`:
    the registry's record of the command's merchant (streams/merchants.py), if any; a
    create it does not admit is refused here and claims nothing."""
    refusal = admit(cmd, merchant, require_registration=require_registration)
    if refusal is not None and cmd["rejection_reason"] is None:
        cmd = cmd | {"rejection_reason": refusal.reason, "rejection_detail": refusal.detail}
    effects = KeyEffects(cmd)
    timers = TimerStore(get, partition)
    at_ms = event_ms(cmd["occurred_at"])
    if cmd["rejection_reason"] is None:
        key = claim_key(partition, cmd["merchant_id"], cmd["idempotency_key"])
        raw = get(key)
        claim = json.loads(raw) if raw is not None else None
        if claim is None:
            effects.writes.append((key, json.dumps({"payment_id": cmd["payment_id"], "first_ms": at_ms}).encode()))
            timers.push(Timer("forget", at_ms + retention // timedelta(milliseconds=1), key.decode()))
        elif claim["payment_id"] != cmd["payment_id"]:
            effects.command = cmd | {
                "rejection_reason": "idempotency_conflict",
                "rejection_detail": "idempotency_key already used for another payment of this merchant",
            }
    out = effects.command
    if route_retention is not None and out["rejection_reason"] is None and out["payment_id"]:
        rkey = route_key(partition, out["payment_id"])
        if out["kind"] == "create" and out.get("card") is not None:
            effects.route = out["card"]["token"].encode()
            if get(rkey) is None:
                effects.writes.append((rkey, effects.route))
                timers.push(Timer("unroute", at_ms + route_retention // timedelta(milliseconds=1), rkey.decode()))
        else:
            effects.route = get(rkey)
    watermark_ms = timers.advance(at_ms, record_ts_ms)
    for kind in ("forget", "unroute"):
        for timer in timers.pop_due(kind, watermark_ms, sweep_max):
            effects.fired.append(timer)
            effects.writes.append((timer.ref.encode(), None))
    effects.writes.extend(timers.pending.items())
    return effects
