"""The payments stage for one message, as plain values: what to write and what to send.

`handle` is everything the payments agent does between decoding a message and
emitting its effects, over read-only views of the three tables, so it is tested
without Kafka. Per message, in order:
  1. dedup by command_id: the same request again is skipped (a redelivery, whatever
     its schema version or enrichment: `request_digest`); another request under a
     command_id already answered is dead-lettered, never dropped;
  2. decide (streams/domain/payments.py): the outcome, the payment, its events, the
     commands the stage sends itself, its timers, and the router's next state
     (breakers per provider, one per partition, kept in the timers table);
  3. advance the partition's event-time watermark and fire what is due: expiries
     of uncaptured authorizations, and the eviction of dedup records older than the
     idempotency retention (the bounded sweep);
  4. link the message's payment events, in order, onto the partition's hash chain
     (streams/domain/chain.py); the chain head is stage state like the timers, so it lands
     in the same transaction as the events it heads. The batch signs its block once,
     on its last event (`sign_block`), before anything is sent.
A `tick` (the clock's event time, forwarded from the clock topic into this log by the
worker) does only 3 and 4: no dedup record and no outcome, so an idle partition still
expires its holds (`paystream scheduler run` ticks every partition).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from connectors.providers.router import Routed, RoutingState
from schemas.state import ParsedOnce
from schemas.times import span_ms
from schemas.times import to_ms as event_ms
from streams.domain.chain import ChainHead, Signs, link, sign_block
from streams.domain.outcomes import rejection
from streams.domain.payments import (
    Decision,
    Payment,
    Policy,
    Saga,
    crypto_due,
    decide,
    expire_due,
    request_digest,
    request_of,
)
from streams.domain.timers import PAGE_MAX_BYTES, SWEEP_MAX, Timer, TimerStore

Get = Callable[[bytes], bytes | None]

# Table names as the worker maps them to the runtime's tables (streams/worker/topology.py).
PAYMENTS, DEDUP, TIMERS = "payments", "dedup", "timers"
# Output streams as the agent maps them to topics (LABELS: fraud-labels).
OUTCOMES, EVENTS, SELF, LABELS = "outcomes", "events", "self", "labels"


@dataclass(frozen=True)
class Tables:
    payments: Get
    dedup: Get
    timers: Get


@dataclass
class Effects:
    skipped: bool = False  # a redelivery: nothing to write or send
    reused_command_id: bool = False  # dead-letter the message instead
    writes: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)  # (table, key, value or None)
    records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (stream, record)
    fired: list[Timer] = field(default_factory=list)
    routed: Routed | None = None  # what the router did for a create: attempts, failovers, breaker changes

    def send(self, stream: str, records: tuple[dict[str, Any], ...] | list[dict[str, Any]]) -> None:
        self.records.extend((stream, r) for r in records)


def dedup_key(partition: int, command_id: str) -> bytes:
    return f"{partition}/{command_id}".encode()


def legacy_digest(raw: bytes) -> bytes:
    """The dedup value stored before `request_digest`: the message's bytes, schema header
    and enrichment included (docs/decisions.md, "Who answers what")."""
    return hashlib.sha256(raw).hexdigest()[:32].encode()


def same_message(seen: bytes, cmd: dict[str, Any], raw: bytes) -> bool:
    """The dedup value `seen` stored for this command_id is this message's request.
    A value stored by the code before `request_digest` is the digest of its bytes:
    those match only identical bytes. Needed while such values live, one idempotency
    retention after the upgrade (the forget timers drop them); then it can go."""
    return seen == request_digest(cmd) or seen == legacy_digest(raw)


def chain_key(partition: int) -> bytes:
    """The partition's event chain head (streams/domain/chain.py), beside its timers."""
    return f"{partition}/chain".encode()


# The head each partition's last message sealed, beside its bytes: the next message
# reads it back without parsing (one entry per partition this process handles).
_chain_heads: dict[int, tuple[bytes, ChainHead]] = {}


def chain_head(tables: Tables, partition: int) -> ChainHead:
    raw = tables.timers(chain_key(partition))
    if raw is None:
        return ChainHead.genesis(partition)
    kept = _chain_heads.get(partition)
    return kept[1] if kept is not None and kept[0] == raw else ChainHead.from_bytes(partition, raw)


# Two per partition (the state read and the one written) for a worker's partitions.
ROUTING_STATES_MAX = 256

# The router's states by their stored bytes: a state is read for every command of its
# partition and changes at every provider call, so the stage also keeps each state it
# writes beside its bytes (`remember`), and the next command reads it without parsing.
_routing_states = ParsedOnce(RoutingState.from_json, ROUTING_STATES_MAX)


def routing_state(raw: bytes) -> RoutingState:
    """The router's state from its stored bytes (parsed once per value)."""
    return _routing_states.get(raw)


# Payments by their stored bytes: a follow-up reads what its create (or the follow-up
# before it) wrote, often a batch or two earlier, so the stage keeps each payment it
# writes beside its bytes and that read parses nothing (a state is a function of its
# bytes: round trip property-tested). A payment is frozen and nobody mutates its
# idempotency records (`_remember` copies them). Full, ~11 MB (the run's payments:
# ~1.4 KB of bytes and ~4 KB parsed each).
PAYMENTS_PARSED_MAX = 2048
_payments = ParsedOnce(Payment.from_json, PAYMENTS_PARSED_MAX)


def routing_key(partition: int) -> bytes:
    """The partition's router state, beside its timers (both are per-partition stage state)."""
    return f"{partition}/routing".encode()


def apply_command(
    cmd: dict[str, Any],
    payment: Payment | None,
    saga: Saga,
    policy: Policy,
    routing: RoutingState | None = None,
    *,
    asked: dict[str, Any] | None = None,
) -> Decision:
    """The decision for one validated command, given its payment's state."""
    if cmd["rejection_reason"] is not None:
        outcome = rejection(cmd, cmd["rejection_reason"], cmd["rejection_detail"] or "", payment_id=cmd["payment_id"])
        return Decision(payment, outcome, changed=False, routing=routing)
    return decide(payment, cmd, saga, policy, routing, asked=asked)


def handle(
    cmd: dict[str, Any],
    raw: bytes,
    partition: int,
    record_ts_ms: int,
    tables: Tables,
    saga: Saga,
    policy: Policy,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
    *,
    signer: Signs | None = None,  # the worker always links (and signs per batch); None leaves events unchained
) -> Effects:
    effects = Effects()
    if cmd["kind"] == "tick":
        return _tick(cmd, partition, record_ts_ms, tables, saga, policy, sweep_max, effects, signer)
    key = dedup_key(partition, cmd["command_id"])
    seen = tables.dedup(key)
    if seen is not None:
        effects.skipped = same_message(seen, cmd, raw)
        effects.reused_command_id = not effects.skipped
        return effects

    payments: dict[bytes, Payment] = {}  # this message's payment changes, read back by timers
    load = _loader(tables, payments)
    pid = cmd["payment_id"].encode() if cmd["payment_id"] else None
    raw_routing = tables.timers(routing_key(partition))
    routing = routing_state(raw_routing) if raw_routing is not None else None
    asked = request_of(cmd)  # hashed twice: the fingerprint, and the dedup record's digest
    decision = apply_command(cmd, load(pid) if pid else None, saga, policy, routing, asked=asked)
    assert decision.outcome is not None
    if decision.routing is not None and decision.routing != routing:
        raw_routing = decision.routing.to_json()
        _routing_states.remember(raw_routing, decision.routing)
        effects.writes.append((TIMERS, routing_key(partition), raw_routing))
        effects.routed = decision.routed
    effects.send(OUTCOMES, [decision.outcome])
    if decision.changed:
        assert pid is not None and decision.payment is not None
        payments[pid] = decision.payment
    effects.send(EVENTS, decision.events)
    effects.send(SELF, decision.commands)
    effects.send(LABELS, decision.labels)

    timers = TimerStore(tables.timers, partition, PAGE_MAX_BYTES)
    at_ms = event_ms(cmd["occurred_at"])
    effects.writes.append((DEDUP, key, request_digest(cmd, asked)))
    timers.push(Timer("forget", at_ms + span_ms(retention), key.decode()))
    for timer in decision.timers:
        timers.push(timer)
    return _fire_and_seal(
        timers, timers.advance(at_ms, record_ts_ms), payments, tables, saga, policy, sweep_max, effects, signer
    )


def _loader(tables: Tables, payments: dict[bytes, Payment]) -> Callable[[bytes], Payment | None]:
    """Reads a payment: this message's change first, else the table."""

    def load(pid: bytes) -> Payment | None:
        if pid in payments:
            return payments[pid]
        raw_payment = tables.payments(pid)
        return _payments.get(raw_payment) if raw_payment is not None else None

    return load


def _fire_and_seal(
    timers: TimerStore,
    watermark_ms: int,
    payments: dict[bytes, Payment],
    tables: Tables,
    saga: Saga,
    policy: Policy,
    sweep_max: int,
    effects: Effects,
    signer: Signs | None,
) -> Effects:
    """Fire the timers due by `watermark_ms` (at most `sweep_max` per kind: forget dedup
    records, expire uncaptured authorizations, look at crypto deposits), write the
    payments and timers, link the events."""
    load = _loader(tables, payments)
    for timer in timers.pop_due("forget", watermark_ms, sweep_max):
        effects.fired.append(timer)
        effects.writes.append((DEDUP, timer.ref.encode(), None))
    again: list[Timer] = []  # pushed after the sweep: a queue is not pushed while it is popped
    for kind, due in (("expire", expire_due), ("crypto", crypto_due)):
        for timer in timers.pop_due(kind, watermark_ms, sweep_max):
            effects.fired.append(timer)
            payment = load(timer.ref.encode())
            decision = due(payment, timer, saga, policy) if payment is not None else None
            if decision is not None:
                assert decision.payment is not None
                payments[timer.ref.encode()] = decision.payment
                effects.send(EVENTS, decision.events)
                again.extend(decision.timers)  # a crypto look watches again; an expiry sets none
    for timer in again:
        timers.push(timer)
    for k, p in payments.items():
        raw = p.to_json()
        _payments.remember(raw, p)
        effects.writes.append((PAYMENTS, k, raw))
    effects.writes.extend((TIMERS, k, v) for k, v in timers.pending.items())
    if signer is not None:
        _seal_events(effects, tables, timers.partition, signer)
    return effects


def _tick(
    cmd: dict[str, Any],
    partition: int,
    record_ts_ms: int,
    tables: Tables,
    saga: Saga,
    policy: Policy,
    sweep_max: int,
    effects: Effects,
    signer: Signs | None,
) -> Effects:
    """The clock reached `occurred_at`: fire what is due. A tick is no command (no dedup
    record, no outcome); a repeated or older one moves nothing (the watermark only grows)."""
    timers = TimerStore(tables.timers, partition, PAGE_MAX_BYTES)
    return _fire_and_seal(
        timers,
        timers.advance(event_ms(cmd["occurred_at"]), record_ts_ms),
        {},
        tables,
        saga,
        policy,
        sweep_max,
        effects,
        signer,
    )


def tick_command(tick: dict[str, Any]) -> dict[str, Any]:
    """The clock topic's tick (a SubscriptionCommand) as this stage's ValidatedCommand tick."""
    assert tick["kind"] == "tick", tick["kind"]
    return {
        "command_id": tick["command_id"],
        "kind": "tick",
        "merchant_id": "",
        "idempotency_key": "",
        "occurred_at": tick["occurred_at"],
    }


def _seal_events(effects: Effects, tables: Tables, partition: int, signer: Signs) -> None:
    head = start = chain_head(tables, partition)
    for i, (stream, record) in enumerate(effects.records):
        if stream == EVENTS:
            linked, head = link(record, head, signer.key_id)
            effects.records[i] = (EVENTS, linked)
    if head != start:
        raw = head.to_bytes()
        _chain_heads[partition] = (raw, head)
        effects.writes.append((TIMERS, chain_key(partition), raw))


def sign_last_event(records: list[tuple[str, dict[str, Any]]], signer: Signs) -> None:
    """Sign the block of one partition's batch: its last payment event, in place."""
    for i in range(len(records) - 1, -1, -1):
        stream, record = records[i]
        if stream == EVENTS:
            records[i] = (EVENTS, sign_block(record, signer))
            return
