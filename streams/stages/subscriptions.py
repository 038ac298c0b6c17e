"""The subscriptions stage for one message, as plain values (the agents stay thin).

Three hops, each writing inside its source partition's transaction (streams/runtime/engine.py):
  clock (a tick on every partition) -> `tick_forward`: the same tick to the same
    partition number of subscription-commands;
  payment-outcomes -> `outcome_forward`: a charge's outcome, as a charge_outcome
    command, to its subscription's partition (the charge's idempotency key names it);
  subscription-commands -> `handle`: the subscriptions of this partition, and the
    charges due, to payment-commands (keyed by merchant_id, murmur2).
Everything a subscription reacts to passes through subscription-commands, so one log
fixes the order of commands, ticks and outcomes: the stage is a pure function of that
log, and a replay from offset 0 emits the same charges (`replay_charges`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from schemas.ids import derive_payment_id
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.domain.subscriptions import (
    CHARGE_KEY_PREFIX,
    Subscription,
    SubscriptionError,
    on_command,
    on_outcome,
    on_tick,
    parse_charge_key,
)

Get = Callable[[bytes], bytes | None]
# A prefilter on an outcome's raw bytes: Avro writes the idempotency key as plain UTF-8,
# so an outcome without these bytes is no charge's (most outcomes skip decoding).
CHARGE_KEY_BYTES = CHARGE_KEY_PREFIX.encode()


def table_key(partition: int, subscription_id: str) -> bytes:
    """Keys carry the partition, so a tick lists its partition's subscriptions by prefix."""
    return f"{partition}/{subscription_id}".encode()


def partition_prefix(partition: int) -> bytes:
    return f"{partition}/".encode()


@dataclass
class Effects:
    writes: list[tuple[bytes, bytes]] = field(default_factory=list)
    charges: list[dict[str, Any]] = field(default_factory=list)  # PaymentCommand creates, in order
    refused: SubscriptionError | None = None  # dead-letter the message with this reason


def handle(
    cmd: dict[str, Any],
    partition: int,
    partitions: int,
    get: Get,
    partition_items: Callable[[], Iterable[tuple[bytes, bytes]]],
) -> Effects:
    """One SubscriptionCommand read from `partition` (of `partitions`).
    `partition_items()` yields this partition's stored subscriptions (a tick visits
    each, in subscription id order)."""
    effects = Effects()
    if cmd["kind"] == "tick":
        now_ms = to_ms(cmd["occurred_at"])
        for key, raw in sorted(partition_items()):
            ticked = Subscription.from_json(raw)
            new, charges = on_tick(ticked, now_ms)
            if new != ticked:
                effects.writes.append((key, new.to_json()))
            effects.charges.extend(charges)
        return effects
    sid = cmd["subscription_id"]
    if not sid:
        effects.refused = SubscriptionError("missing_subscription_id", f"{cmd['kind']} needs subscription_id")
        return effects
    expected = partition_for(sid.encode(), partitions)
    if partition != expected:  # a subscription's messages must share one partition, the one its ticks visit
        effects.refused = SubscriptionError(
            "wrong_partition", f"{sid} hashes to partition {expected} (murmur2), message is on {partition}"
        )
        return effects
    key = table_key(partition, sid)
    stored = get(key)
    sub: Subscription | None = Subscription.from_json(stored) if stored is not None else None
    try:
        if cmd["kind"] == "charge_outcome":
            if sub is None:
                raise SubscriptionError("subscription_not_found", f"no subscription {sid} for this outcome")
            outcome = cmd["outcome"]
            new, charges = on_outcome(sub, outcome) if _is_charge_of(outcome, sub) else (sub, ())
        else:
            new, charges = on_command(sub, cmd)
    except SubscriptionError as e:
        effects.refused = e
        return effects
    if new != sub:
        effects.writes.append((key, new.to_json()))
    effects.charges.extend(charges)
    return effects


def _is_charge_of(outcome: dict[str, Any], sub: Subscription) -> bool:
    """The outcome is of this subscription's charge: its payment is the one the
    subscription's merchant made under the charge's key (no other merchant's payment
    can pay a period, whatever key it chose)."""
    key = outcome["idempotency_key"]
    parsed = parse_charge_key(key)
    return (
        parsed is not None
        and parsed[0] == sub.subscription_id
        and outcome["payment_id"] == derive_payment_id(sub.merchant_id, key)
    )


def outcome_forward(outcome: dict[str, Any]) -> dict[str, Any] | None:
    """The charge_outcome command of a charge's PaymentOutcome, None for other outcomes."""
    parsed = parse_charge_key(outcome["idempotency_key"])
    if parsed is None:
        return None
    return blank_command(outcome["outcome_id"], "charge_outcome", outcome["occurred_at"]) | {
        "subscription_id": parsed[0],
        "merchant_id": outcome["merchant_id"],
        "outcome": {
            "command_id": outcome["command_id"],
            "payment_id": outcome["payment_id"],
            "status": outcome["status"],
            "payment_status": outcome["payment_status"],
            "reason_code": outcome["reason_code"],
            "idempotency_key": outcome["idempotency_key"],
        },
    }


def blank_command(command_id: str, kind: str, at: Any) -> dict[str, Any]:
    """A SubscriptionCommand of `kind` with every other field at its default."""
    return {
        "command_id": command_id,
        "kind": kind,
        "subscription_id": None,
        "merchant_id": None,
        "occurred_at": at,
        "plan": None,
        "card_token": None,
        "anchor_at": None,
        "trial_days": 0,
        "at_period_end": False,
        "outcome": None,
    }


def tick_command(at: Any, partition: int) -> dict[str, Any]:
    """The tick published on one partition of clock (and forwarded as it is)."""
    return blank_command(f"tick/{partition}/{to_ms(at)}", "tick", at)


def replay_charges(commands: Iterable[tuple[int, dict[str, Any]]], partitions: int) -> list[dict[str, Any]]:
    """The charges the stage emits for a log of (partition, SubscriptionCommand), in
    order, from empty state: what a replay from offset 0 must reproduce."""
    state: dict[bytes, bytes] = {}
    out: list[dict[str, Any]] = []
    for partition, cmd in commands:
        prefix = partition_prefix(partition)
        effects = handle(
            cmd, partition, partitions, state.get, lambda: [(k, v) for k, v in state.items() if k.startswith(prefix)]
        )
        state.update(effects.writes)
        out.extend(effects.charges)
    return out
