"""The risk stage for one message, as plain values: score a create, attach the decision.

Creates of every method reach this stage on `payment-commands-risk` keyed by their
instrument (`streams.domain.methods.risk_key`: a card's token, `wallet:...`, `bank:...`,
`mandate:...`, `bnpl:...`, `crypto:...`; the keys stage routes them, and their
payment's follow-ups behind them: streams/stages/idempotency.py), so one instrument's
transactions and a card's labels (`fraud-labels`, keyed by card token) meet in one
partition, in order. A non-card instrument's velocity state is kept under its key as a
card's is (`c/`); the model scores cards only, the method's own rules the rest
(docs/fraud.md, "Every method"). Per create:
  1. dedup by command_id (a redelivery folds nothing in twice and sends nothing);
  2. load the card, merchant, IP and device states, score (models/scoring.py: features,
     rules, blocklist, model) and fold the transaction into the states;
  3. forward the create with the decision attached (`fraud_*` fields of
     ValidatedCommand) to `payment-commands-validated` by payment_id, and, for a
     review, a `FraudReview` record for `fraud-review`;
  4. advance the partition's event-time watermark and sweep old dedup records.
Follow-ups pass through unchanged, in their payment's order.

Merchant features are exact: the keys stage, which holds each merchant whole, attaches
the merchant's counts to the create (`merchant_features`, streams/stages/idempotency.py) and the
stage scores with them. A create without them (written before ValidatedCommand v4,
or its merchant state was unreadable there) falls back to this partition's own
merchant state (`merchant_fallback`, counted): the share of the merchant's traffic
whose cards hash here. IP and device states are per partition in the same way (see
docs/fraud.md, "The risk stage"). Card features are exact.

Storage, all in one table (keys carry the partition, see streams/domain/timers.py):
  b"<p>/c/<card_token>"  -> CardState.to_bytes()  (or another method's instrument key: risk_key)
  b"<p>/m/<merchant_id>" -> MerchantState.to_bytes()  (the fallback only)
  b"<p>/i/<ip>"          -> EntityState.to_bytes()
  b"<p>/v/<device>"      -> EntityState.to_bytes()
  b"<p>/d/<command_id>"  -> b"1"  (applied creates, forgotten after `retention`)
  b"<p>/l/<label_id>"    -> b"1"  (applied labels, forgotten after `retention`)
  b"<p>/wm", b"<p>/forget/..." : the partition's watermark and forget timers
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

from models.decision import FraudDecision
from models.features import (
    CardState,
    EntityState,
    FeatureInputError,
    FeatureVector,
    MerchantCounts,
    MerchantState,
    StateError,
    Txn,
    TxStates,
    make_txn,
    method_features,
)
from models.scoring import MAX_BATCH_ROWS, Scorer
from schemas.avro_compiled import CompiledSchema, compile_schema
from schemas.codec import Codec
from schemas.ids import derive_command_id
from schemas.times import span_ms, to_ms
from streams.domain.methods import risk_fields
from streams.domain.screening import is_held, keep_hold
from streams.domain.subscriptions import is_merchant_initiated
from streams.domain.timers import PAGE_MAX_BYTES, SWEEP_MAX, Get, Timer, TimerStore

#: Metadata keys of a create that the risk stage reads (all optional). The email is
#: only ever compared as its digest (models/blocklist.py).
RISK_METADATA = ("ip", "device", "email", "country")
PPM = 1_000_000
#: The ValidatedCommand fields `attach` sets, consecutive in the schema.
FRAUD_FIELDS = ("fraud_action", "fraud_score_ppm", "fraud_reasons", "fraud_model", "fraud_fallback")
Write = tuple[bytes, "bytes | None"]


def wanted_fields(cmd: Mapping[str, Any]) -> dict[str, str] | None:
    """What is scored here, by its `risk_fields`: creates the keys stage did not refuse,
    of every method (each carries its instrument); None for the rest. The payment's
    follow-ups come the same way (streams/stages/idempotency.py) and pass through, in order."""
    return risk_fields(cmd) if cmd["kind"] == "create" and cmd["rejection_reason"] is None else None


def _key(partition: int, kind: str, ref: str) -> bytes:
    return f"{partition}/{kind}/{ref}".encode()


def card_key(partition: int, token: str) -> bytes:
    return _key(partition, "c", token)


def merchant_key(partition: int, merchant_id: str) -> bytes:
    return _key(partition, "m", merchant_id)


def ip_key(partition: int, ip: str) -> bytes:
    return _key(partition, "i", ip)


def device_key(partition: int, device: str) -> bytes:
    return _key(partition, "v", device)


def applied_key(partition: int, command_id: str) -> bytes:
    return _key(partition, "d", command_id)


def label_key(partition: int, label_id: str) -> bytes:
    return _key(partition, "l", label_id)


def score_ppm(score: float | None) -> int | None:
    """A score in [0, 1] as an exact integer on the wire (parts per million)."""
    if score is None:
        return None
    assert 0.0 <= score <= 1.0, score
    return round(score * PPM)


def tx_of(cmd: Mapping[str, Any], fields: dict[str, str] | None = None) -> dict[str, Any]:
    """The scorer's transaction dict (models/scoring.py) from a create: its instrument's
    key and blocklist fields (`risk_fields`; `fields` when the caller has them), then the payment's own."""
    if fields is None:
        fields = risk_fields(cmd)
    assert fields is not None, "a create wanted_fields scores"
    meta = cmd.get("metadata") or {}
    tx = fields | {
        "merchant_id": cmd["merchant_id"],
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "occurred_at": cmd["occurred_at"],
    }
    tx.update({k: meta[k] for k in RISK_METADATA if isinstance(meta.get(k), str) and meta[k]})
    return tx


def attach(cmd: dict[str, Any], decision: FraudDecision) -> dict[str, Any]:
    """The create with the decision in its `fraud_*` fields."""
    return cmd | {
        "fraud_action": decision.action,
        "fraud_score_ppm": score_ppm(decision.score),
        "fraud_reasons": list(decision.reasons),
        "fraud_model": decision.model_version,
        "fraud_fallback": decision.fallback,
    }


@dataclass(frozen=True)
class DecisionSplice:
    """A decided create's encoding made from the record it came as. Avro's binary record
    is its fields' encodings in order and the decision changes only the consecutive
    `FRAUD_FIELDS`, so the output is the input with those fields' bytes replaced: found
    from the end, behind the encoding of the fields after them. The input is the keys
    stage's own encoding of the create (`Codec.current`: Avro's binary encoding of a
    value is unique), so the result is byte for byte what encoding the whole decided
    create writes, at a fraction of the cost (the encode was ~9% of the stage)."""

    fraud: CompiledSchema  # the fraud fields alone, as a record
    tail: CompiledSchema  # the fields after them
    undecided: bytes  # the fraud fields of a create not decided yet (what the keys stage sends)

    @classmethod
    def of(cls, codec: Codec) -> DecisionSplice | None:
        """The splice of `codec`'s schema; None when the fraud fields are not consecutive
        or a part cannot be compiled (then every decided create is encoded whole)."""
        parsed = codec.schema.parsed
        names = [f["name"] for f in parsed["fields"]]
        if FRAUD_FIELDS[0] not in names:
            return None
        start = names.index(FRAUD_FIELDS[0])
        end = start + len(FRAUD_FIELDS)
        if tuple(names[start:end]) != FRAUD_FIELDS or end == len(names):
            return None

        def part(name: str, fields: list[Any]) -> CompiledSchema | None:
            named = parsed.get("__named_schemas", {})
            return compile_schema({"type": "record", "name": name, "fields": fields, "__named_schemas": named})

        fraud = part(f"{parsed['name']}.Fraud", parsed["fields"][start:end])
        tail = part(f"{parsed['name']}.Tail", parsed["fields"][end:])
        if fraud is None or tail is None:
            return None
        undecided = fraud.encode(b"", dict.fromkeys(FRAUD_FIELDS) | {"fraud_reasons": [], "fraud_fallback": False})
        return cls(fraud, tail, undecided)

    def spliced(self, raw: bytes, came: Mapping[str, Any], decided: Mapping[str, Any]) -> bytes | None:
        """`decided`'s encoding, `raw` being `came`'s and `decided` differing from it only
        in the fraud fields; None when `raw` does not end as `came` encodes (encode whole)."""
        try:
            tail = self.tail.encode(b"", came)
            if (
                came.get("fraud_action") is None
                and came.get("fraud_score_ppm") is None
                and came.get("fraud_reasons") == []
                and came.get("fraud_model") is None
                and came.get("fraud_fallback") is False
            ):
                old = self.undecided
            else:  # a sanctions hold, decided by the keys stage
                old = self.fraud.encode(b"", came)
            cut = len(raw) - len(tail)
            start = cut - len(old)
            if start <= 0 or raw[start:cut] != old or not raw.endswith(tail):
                return None
            return self.fraud.encode(raw[:start], decided) + tail
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError):
            return None  # a value the encoder refuses: the whole encode says which


_splices: dict[bytes, DecisionSplice | None] = {}


def forward_bytes(codec: Codec, raw: bytes | None, came: Mapping[str, Any], effects: RiskEffects) -> bytes | None:
    """The encoding of `effects.command` made from the record's own bytes `raw` when they
    are `codec`'s current encoding: a pass-through as it came, a decided create spliced
    (`DecisionSplice`); None: encode it whole."""
    if raw is None or not codec.current(raw):
        return None
    if effects.decision is None:
        return raw
    fingerprint = codec.schema.fingerprint
    if fingerprint not in _splices:
        _splices[fingerprint] = DecisionSplice.of(codec)
    splice = _splices[fingerprint]
    return None if splice is None or effects.command is None else splice.spliced(raw, came, effects.command)


def review_record(cmd: Mapping[str, Any], tx: Mapping[str, Any], decision: FraudDecision) -> dict[str, Any]:
    """The FraudReview record of a create sent to review. A non-card create's: its
    instrument's key as `card_token`, no BIN, the bank account's last four if any, and
    the method's own feature names."""
    card = cmd.get("card") or {"bin": "", "last4": (cmd.get("bank_account") or {}).get("account_last4", "")}
    fv = decision.features
    return {
        "review_id": derive_command_id(cmd["payment_id"], "review", cmd["command_id"]),
        "payment_id": cmd["payment_id"],
        "merchant_id": cmd["merchant_id"],
        "command_id": cmd["command_id"],
        "card_token": tx["card_token"],
        "card_bin": card["bin"],
        "card_last4": card["last4"],
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "score_ppm": score_ppm(decision.score),
        "reasons": list(decision.reasons),
        "model_version": decision.model_version,
        "rules_version": decision.rules_version,
        "fallback": decision.fallback,
        "features": {}
        if fv is None
        else {k: float(v) for k, v in method_features(tx.get("method") or "card", fv).items()},
        "occurred_at": cmd["occurred_at"],
    }


@dataclass
class RiskEffects:
    command: dict[str, Any] | None  # the create to forward (decision attached); None when skipped
    decision: FraudDecision | None = None
    review: dict[str, Any] | None = None  # a FraudReview record for fraud-review
    writes: list[Write] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)
    skipped: bool = False  # a redelivery: nothing to write or send
    fallback: bool = False  # rules-only decision: count it (metric)
    merchant_fallback: bool = False  # no merchant features attached: this partition's share was used (metric)
    state_unreadable: bool = False  # a stored state failed to parse and was started afresh: log it


class _States:
    """Reads the stored states of one transaction; a garbled one starts afresh, flagged."""

    def __init__(self, get: Get) -> None:
        self.get = get
        self.unreadable = False

    def load(self, key: bytes, cls: Callable[[bytes], Any], fresh: Callable[[], Any]) -> Any:
        raw = self.get(key)
        if raw is None:
            return fresh()
        try:
            return cls(raw)
        except StateError:
            self.unreadable = True
            return fresh()


def _tx_keys(partition: int, tx: Mapping[str, Any]) -> tuple[bytes, bytes, bytes | None, bytes | None]:
    ip, device = tx.get("ip"), tx.get("device")
    return (
        card_key(partition, tx["card_token"]),
        merchant_key(partition, tx["merchant_id"]),
        ip_key(partition, ip) if ip else None,
        device_key(partition, device) if device else None,
    )


def handle(
    cmd: dict[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    scorer: Scorer,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> RiskEffects:
    """Score one create. Never raises on a garbled command or state: the scorer's
    rules-only fallback, flagged."""
    out = prepare(cmd, partition, record_ts_ms, get, scorer, retention, sweep_max)
    if isinstance(out, Scored):
        decide_scored([out], scorer)
        return out.effects
    return out


@dataclass
class Scored:
    """A create with its features read and its states folded; the decision (and with
    it the command to forward) comes from `decide_scored`, with its batch's."""

    effects: RiskEffects
    cmd: dict[str, Any]
    tx: dict[str, Any]
    features: FeatureVector | None


def prepare(
    cmd: dict[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    scorer: Scorer,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> RiskEffects | Scored:
    """Everything of `handle` but the decision: a pass-through or a skip as effects,
    a create to score as `Scored`. Its writes are final (they do not depend on the
    decision), so the next create of the batch reads them through its `get`."""
    fields = wanted_fields(cmd)
    if fields is None:
        return RiskEffects(dict(cmd))
    done = applied_key(partition, cmd["command_id"])
    if get(done) is not None:
        return RiskEffects(None, skipped=True)

    tx = tx_of(cmd, fields)
    ck, mk, ik, dk = _tx_keys(partition, tx)
    merchant = attached_merchant(cmd)
    loader = _States(get)
    states = TxStates(
        loader.load(ck, CardState.from_bytes, CardState),
        # No merchant state with the counts attached: the keys stage keeps the exact one.
        None if merchant is not None else loader.load(mk, MerchantState.from_bytes, MerchantState),
        loader.load(ik, EntityState.from_bytes, EntityState) if ik else None,
        loader.load(dk, EntityState.from_bytes, EntityState) if dk else None,
    )
    try:  # validated once for features and update (garbled: each says so, rules only)
        txn: Txn | dict[str, Any] = make_txn(tx)
    except FeatureInputError:
        txn = tx
    features = scorer.features(txn, states, usable=not loader.unreadable, merchant=merchant)
    effects = RiskEffects(None, merchant_fallback=merchant is None, state_unreadable=loader.unreadable)
    if scorer.update_states(states, txn):
        effects.writes.append((ck, states.card.to_bytes()))
        if states.merchant is not None:  # the fallback's own
            effects.writes.append((mk, states.merchant.to_bytes()))
        if ik and states.ip is not None:
            effects.writes.append((ik, states.ip.to_bytes()))
        if dk and states.device is not None:
            effects.writes.append((dk, states.device.to_bytes()))
    at_ms = txn.ts_ms if isinstance(txn, Txn) else to_ms(cmd["occurred_at"])
    _remember(effects, done, partition, at_ms, record_ts_ms, get, retention, sweep_max)
    return Scored(effects, cmd, tx, features)


def handle_batch(
    cmds: Sequence[tuple[dict[str, Any], int, int]],
    get: Get,
    scorer: Scorer,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> list[RiskEffects]:
    """`handle` for a batch of (command, partition, record time), in order, with one
    model call per MAX_BATCH_ROWS creates: each is prepared reading the writes of the
    ones before it (they do not depend on a decision: `prepare`), then all are decided
    together. The same effects as handling them one by one; the caller applies each
    one's writes in order."""
    overlay: dict[bytes, bytes | None] = {}

    def seen(key: bytes) -> bytes | None:
        return overlay[key] if key in overlay else get(key)

    out: list[RiskEffects] = []
    scored: list[Scored] = []
    for cmd, partition, record_ts_ms in cmds:
        prepared = prepare(cmd, partition, record_ts_ms, seen, scorer, retention, sweep_max)
        if isinstance(prepared, Scored):
            overlay.update(prepared.effects.writes)
            scored.append(prepared)
            out.append(prepared.effects)
        else:
            out.append(prepared)
    for start in range(0, len(scored), MAX_BATCH_ROWS):
        decide_scored(scored[start : start + MAX_BATCH_ROWS], scorer)
    return out


def decide_scored(batch: Sequence[Scored], scorer: Scorer) -> None:
    """Decide a batch of prepared creates (one model call) into their effects."""
    for scored, decision in zip(batch, scorer.decide_many([(s.tx, s.features) for s in batch]), strict=True):
        decision = mit_exemption(scored.cmd, decision)
        effects = scored.effects
        effects.command, effects.decision, effects.fallback = attach(scored.cmd, decision), decision, decision.fallback
        if is_held(scored.cmd):  # a sanctions hold stays one; the keys stage sent its review record
            action, reasons = keep_hold(scored.cmd, decision.action, list(decision.reasons))
            effects.command |= {"fraud_action": action, "fraud_reasons": reasons}
        elif decision.action == "review":
            effects.review = review_record(scored.cmd, scored.tx, decision)


def mit_exemption(cmd: Mapping[str, Any], decision: FraudDecision) -> FraudDecision:
    """A merchant-initiated charge (a subscription's, an API off-session one) has no
    cardholder present to authenticate: it is exempt from a 3DS step-up, as the card
    networks exempt MITs, and authorizes without a liability shift. Review and decline
    still apply. The flag is the merchant's claim, as it is on the networks."""
    if decision.action != "requires_action" or not is_merchant_initiated(cmd):
        return decision
    return replace(decision, action="approve", reasons=(*decision.reasons, "mit_exemption"))


def attached_merchant(cmd: Mapping[str, Any]) -> MerchantCounts | None:
    """The merchant counts the keys stage attached, or None (absent or unusable: the
    per-partition fallback)."""
    record = cmd.get("merchant_features")
    if record is None:
        return None
    try:
        return MerchantCounts.from_record(record)
    except FeatureInputError:
        return None


@dataclass
class LabelEffects:
    writes: list[Write] = field(default_factory=list)
    fired: list[Timer] = field(default_factory=list)
    skipped: bool = False  # a redelivered label: already applied
    applied: bool = False  # False: neither the card nor the merchant is known here


def handle_label(
    label: Mapping[str, Any],
    partition: int,
    record_ts_ms: int,
    get: Get,
    retention: timedelta,
    sweep_max: int = SWEEP_MAX,
) -> LabelEffects:
    """Fold one FraudLabel record (keyed by card token, so it lands in its card's
    partition) into the card's and the merchant's states (the merchant's here is the
    fallback's: the exact one is the keys stage's, which gets a copy of the label),
    at its reveal time (`occurred_at`), once. States never seen here are not created: a label only
    updates what the transactions built (as the offline StateStore does)."""
    done = label_key(partition, label["label_id"])
    if get(done) is not None:
        return LabelEffects(skipped=True)
    effects = LabelEffects()
    ck, mk = card_key(partition, label["card_token"]), merchant_key(partition, label["merchant_id"])
    loader = _States(get)
    card = loader.load(ck, CardState.from_bytes, lambda: None)
    merchant = loader.load(mk, MerchantState.from_bytes, lambda: None)
    revealed_ms = to_ms(label["occurred_at"])
    # A garbled state stays as it is: the next transaction scores by rules and rebuilds it.
    if card is not None:
        Scorer.apply_label(card, None, label)
        effects.writes.append((ck, card.to_bytes()))
    if merchant is not None:
        Scorer.apply_label(None, merchant, label)
        effects.writes.append((mk, merchant.to_bytes()))
    effects.applied = card is not None or merchant is not None
    _remember(effects, done, partition, revealed_ms, record_ts_ms, get, retention, sweep_max)
    return effects


def _remember(
    effects: RiskEffects | LabelEffects,
    done: bytes,
    partition: int,
    at_ms: int,
    record_ts_ms: int,
    get: Get,
    retention: timedelta,
    sweep_max: int,
) -> None:
    """Record `done` as applied, push its forget timer, sweep what is due."""
    effects.writes.append((done, b"1"))
    timers = TimerStore(get, partition, PAGE_MAX_BYTES)
    timers.push(Timer("forget", at_ms + span_ms(retention), done.decode()))
    for timer in timers.pop_due("forget", timers.advance(at_ms, record_ts_ms), sweep_max):
        effects.fired.append(timer)
        effects.writes.append((timer.ref.encode(), None))
    effects.writes.extend(timers.pending.items())
