"""The keys stage: idempotency keys scoped per merchant, across all its payments.

Commands reach this stage keyed by merchant (so one merchant's keys live in one
partition, and each payment's commands keep their order: they all pass through
their merchant's partition), and leave it keyed by payment_id for the payments stage.

Routes. A create the risk stage scores goes on to `payment-commands-risk` keyed by its
instrument (`streams.domain.methods.risk_key`: a card's token, a wallet account, a
bank account or mandate, a BNPL customer, a crypto payer address); its payment's
follow-ups must not overtake it, so the stage remembers payment -> that key and sends them the same way (the risk
stage passes them
through): one payment's commands pass one keys partition, then one risk partition,
then one payments partition, in order. The route is kept `route_retention` (the
refund and dispute window) by event time; a follow-up after it goes straight on
(its create is long done).

A key is claimed by the first payment it is used for. The same key on another
payment of the merchant is refused as `idempotency_conflict`; on the same payment
it passes, and the payment, which keeps each key's fingerprint and first outcome,
answers with a replay or a conflict. A refused command (a validation error) claims
nothing. Claims are kept `retention` by event time, then swept (streams/domain/timers.py).

Merchant features. The stage sees every create of a merchant, so it holds the
merchant's `MerchantState` whole (the risk stage, keyed by card, only ever sees a
share). For each create it routes to risk it reads the merchant's counts as the create
sees them (before it), folds the create in, and attaches the counts to the command
(`merchant_features`, integers), exactly as models/features.py does offline. Labels
reach it too: the risk stage forwards each `fraud-labels` record, keyed by merchant,
to `fraud-labels-merchant` (`handle_label`, applied at its reveal time, once per
label_id). A merchant's state is kept as long as the stage runs (one small record
per merchant, bounded by models.features.MAX_STATE_BYTES): dropping an idle one would
lose labels revealed while it is idle, which the offline path counts.

Storage, in the keys table (keys carry the partition, see streams/domain/timers.py):
  b"<p>/k/<merchant>\\x1f<key>" -> JSON {"payment_id", "first_ms"}
  b"<p>/r/<payment_id>"          -> the instrument key its commands travel by
  b"<p>/ms/<merchant>"           -> MerchantState.to_bytes()
  b"<p>/mf/<command_id>"         -> JSON of the counts attached to that create (a
                                    redelivery gets the same, folds nothing twice)
  b"<p>/ml/<label_id>"           -> b"1" (labels applied; both forgotten after `retention`)
  b"<p>/kc/<merchant>\\x1f<currency>\\x1f<day>" -> JSON int: a pending merchant's creates that
                                    day (streams/domain/kyc_limits.py), forgotten `retention` after the day
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from models.features import FeatureInputError, MerchantState, StateError, make_txn
from schemas.state import state_json, state_loads
from schemas.times import span_ms, to_ms
from schemas.times import to_ms as event_ms
from streams.domain import kyc_limits
from streams.domain.merchants import admit
from streams.domain.methods import risk_fields
from streams.domain.sanctions import SanctionsList
from streams.domain.screening import screen_create
from streams.domain.timers import PAGE_MAX_BYTES, SWEEP_MAX, Get, Timer, TimerStore
from streams.stages.risk import tx_of

_SEP = "\x1f"


@dataclass
class KeyEffects:
    command: dict[str, Any]  # the ValidatedCommand to forward, possibly now refused
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)
    route: bytes | None = None  # the instrument key to send it by, through the risk stage; None: straight on
    review: dict[str, Any] | None = None  # a FraudReview of a sanctions hit, for fraud-review
    merchant_state_unreadable: bool = False  # a stored merchant state failed to parse, started afresh: log it


def route_key(partition: int, payment_id: str) -> bytes:
    return f"{partition}/r/{payment_id}".encode()


def claim_key(partition: int, merchant_id: str, idempotency_key: str) -> bytes:
    return f"{partition}/k/{merchant_id}{_SEP}{idempotency_key}".encode()


def merchant_state_key(partition: int, merchant_id: str) -> bytes:
    return f"{partition}/ms/{merchant_id}".encode()


def attached_key(partition: int, command_id: str) -> bytes:
    return f"{partition}/mf/{command_id}".encode()


def label_key(partition: int, label_id: str) -> bytes:
    return f"{partition}/ml/{label_id}".encode()


def label_routing_key(label: Mapping[str, Any]) -> bytes | None:
    """The key a FraudLabel travels to this stage under (its merchant), None without one."""
    return label["merchant_id"].encode() if label.get("merchant_id") else None


def handle(
    cmd: dict[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
    route_retention: timedelta | None = None,
    *,
    merchant: Mapping[str, Any] | None = None,
    require_registration: bool = False,
    sanctions: SanctionsList | None = None,
    pending_caps: Mapping[str, int] | None = None,
) -> KeyEffects:
    """`route_retention` None: no risk stage, every command goes straight on. `merchant`:
    the registry's record of the command's merchant (streams/domain/merchants.py), if any; a
    create it does not admit is refused here and claims nothing. `sanctions`: the list
    a create's payer is screened against (streams/domain/screening.py); a hit holds it for review.
    `pending_caps`: currency -> daily cap in minor units a pending merchant may take (streams/domain/kyc_limits.py)."""
    cap = kyc_limits.pending_cap(cmd, merchant, pending_caps or {})
    refusal = admit(cmd, merchant, require_registration=require_registration, pending_allowed=cap is not None)
    if refusal is not None and cmd["rejection_reason"] is None:
        cmd = cmd | {"rejection_reason": refusal.reason, "rejection_detail": refusal.detail}
    effects = KeyEffects(cmd)
    timers = TimerStore(get, partition, PAGE_MAX_BYTES)
    at_ms = event_ms(cmd["occurred_at"])
    retention_ms = span_ms(retention)
    if cmd["rejection_reason"] is None:
        key = claim_key(partition, cmd["merchant_id"], cmd["idempotency_key"])
        raw = get(key)
        claim = state_loads(raw) if raw is not None else None
        if claim is None:
            # Counted with the claim: a redelivery or retry of the same payment finds it and counts nothing.
            if cap is None or _count_pending(effects, partition, get, timers, retention_ms, at_ms, cap):
                effects.writes.append((key, state_json({"payment_id": cmd["payment_id"], "first_ms": at_ms})))
                timers.push(Timer("forget", at_ms + retention_ms, key.decode()))
        elif claim["payment_id"] != cmd["payment_id"]:
            effects.command = cmd | {
                "rejection_reason": "idempotency_conflict",
                "rejection_detail": "idempotency_key already used for another payment of this merchant",
            }
    if sanctions is not None:  # after the claim: a refused create is not screened
        effects.command, effects.review = screen_create(effects.command, sanctions)
    out = effects.command
    if route_retention is not None and out["rejection_reason"] is None and out["payment_id"]:
        rkey = route_key(partition, out["payment_id"])
        # What it is scored by (`risk_key`), read once for its route and its features.
        fields = risk_fields(out) if out["kind"] == "create" else None
        if fields is not None:
            effects.route = fields["card_token"].encode()
            if get(rkey) is None:
                effects.writes.append((rkey, effects.route))
                timers.push(Timer("unroute", at_ms + span_ms(route_retention), rkey.decode()))
            _attach_merchant_features(effects, fields, partition, get, timers, retention_ms)
        else:
            effects.route = get(rkey)
    _sweep(timers, at_ms, record_ts_ms, sweep_max, effects.writes, effects.fired)
    return effects


def _count_pending(
    effects: KeyEffects, partition: int, get: Get, timers: TimerStore, retention_ms: int, at_ms: int, cap: int
) -> bool:
    """Count a pending merchant's create into its event day's total; False (and the
    create refused) if it would pass the cap."""
    cmd = effects.command
    day = kyc_limits.event_day(at_ms)
    key = kyc_limits.tally_key(partition, cmd["merchant_id"], cmd["currency"], day)
    raw = get(key)
    total = state_loads(raw) if raw is not None else 0
    new = kyc_limits.take(total, cmd["amount_minor"], cap)
    if new is None:
        effects.command = cmd | {
            "rejection_reason": kyc_limits.REASON,
            "rejection_detail": kyc_limits.refusal_detail(cmd["currency"], day, total, cmd["amount_minor"], cap),
        }
        return False
    effects.writes.append((key, state_json(new)))
    if raw is None:  # late creates of the day still find it for `retention`
        timers.push(Timer("forget", kyc_limits.day_end_ms(day) + retention_ms, key.decode()))
    return True


def _attach_merchant_features(
    effects: KeyEffects, fields: dict[str, str], partition: int, get: Get, timers: TimerStore, retention_ms: int
) -> None:
    """Counts before the create, then the create folded in (models/features.py's order)."""
    cmd = effects.command
    done = attached_key(partition, cmd["command_id"])
    raw = get(done)
    if raw is not None:  # a redelivery: the same counts again, nothing folded twice
        effects.command = cmd | {"merchant_features": state_loads(raw)}
        return
    try:
        tx = make_txn(tx_of(cmd, fields))
    except FeatureInputError:
        return  # the risk stage cannot score it either (rules only) and folds nothing
    key = merchant_state_key(partition, tx.merchant)
    stored = get(key)
    try:
        state = merchant_state(key, stored) if stored is not None else MerchantState()
    except StateError:
        state, effects.merchant_state_unreadable = MerchantState(), True
    counts = None if effects.merchant_state_unreadable else state.counts(tx.ts_ms)._asdict()
    state.update(tx)
    effects.writes.append((key, _kept(key, state)))
    effects.writes.append((done, state_json(counts)))
    timers.push(Timer("forget", tx.ts_ms + retention_ms, done.decode()))
    # None (unreadable state): the risk stage falls back to its per-partition state, flagged.
    effects.command = cmd | {"merchant_features": counts}


# Two a merchant's create reads and writes; a worker's merchants each in one partition.
MERCHANT_STATES_MAX = 512

# Each merchant state this process last wrote, beside its bytes: the merchant's next
# create finds those bytes in the table and takes the state back without parsing it
# (a state is a function of its bytes). Taken out while in use, so a handler that
# fails after folding into it leaves nothing behind; the least recently written go first.
_merchant_states: dict[bytes, tuple[bytes, MerchantState]] = {}


def merchant_state(key: bytes, stored: bytes) -> MerchantState:
    """The merchant state stored under `key` as `stored`; StateError if unreadable."""
    kept = _merchant_states.pop(key, None)
    if kept is not None and kept[0] == stored:
        return kept[1]
    return MerchantState.from_bytes(stored)


def _kept(key: bytes, state: MerchantState) -> bytes:
    """`state`'s bytes, to be written under `key`, with the state kept beside them."""
    raw = state.to_bytes()
    if len(_merchant_states) >= MERCHANT_STATES_MAX:
        del _merchant_states[next(iter(_merchant_states))]
    _merchant_states[key] = (raw, state)
    return raw


def _sweep(
    timers: TimerStore,
    at_ms: int,
    record_ts_ms: int,
    sweep_max: int,
    writes: list[tuple[bytes, bytes | None]],
    fired: list[Timer],
) -> None:
    watermark_ms = timers.advance(at_ms, record_ts_ms)
    for kind in ("forget", "unroute"):
        for timer in timers.pop_due(kind, watermark_ms, sweep_max):
            fired.append(timer)
            writes.append((timer.ref.encode(), None))
    writes.extend(timers.pending.items())


@dataclass
class LabelEffects:
    writes: list[tuple[bytes, bytes | None]] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)
    skipped: bool = False  # a redelivered label: already applied
    applied: bool = False  # False: the merchant has no state here (no transaction yet), as offline


def handle_label(
    label: Mapping[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> LabelEffects:
    """Fold one FraudLabel (from `fraud-labels-merchant`, keyed by merchant) into its
    merchant's state at its reveal time (`occurred_at`), once per label_id. A merchant
    never seen is not created (models.features.StateStore.label does the same); a
    garbled state stays as it is (the next create starts it afresh, flagged)."""
    done = label_key(partition, label["label_id"])
    if get(done) is not None:
        return LabelEffects(skipped=True)
    effects = LabelEffects()
    revealed_ms = to_ms(label["occurred_at"])
    key = merchant_state_key(partition, label["merchant_id"])
    stored = get(key)
    if stored is not None:
        try:
            state = merchant_state(key, stored)
        except StateError:
            state = None
        if state is not None:
            state.apply_label(revealed_ms, bool(label["fraud"]))
            effects.writes.append((key, _kept(key, state)))
            effects.applied = True
    effects.writes.append((done, b"1"))
    timers = TimerStore(get, partition, PAGE_MAX_BYTES)
    timers.push(Timer("forget", revealed_ms + span_ms(retention), done.decode()))
    _sweep(timers, revealed_ms, record_ts_ms, sweep_max, effects.writes, effects.fired)
    return effects
