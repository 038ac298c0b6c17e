"""The payments stage per message over plain dicts: dedup, reuse, the sweep, expiry."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.codec import Codec
from streams.domain.chain import ChainHead, Signer, awaits_signature, event_hash, link_problem, verify
from streams.domain.payments import Policy
from streams.stages.payments import (
    DEDUP,
    EVENTS,
    OUTCOMES,
    PAYMENTS,
    TIMERS,
    Effects,
    Tables,
    chain_key,
    dedup_key,
    handle,
    legacy_digest,
    sign_last_event,
    tick_command,
)
from streams.stages.subscriptions import tick_command as clock_tick
from tests.unit.streams.conftest import saga_of

VALIDATED = Codec("ValidatedCommand")
RETENTION = timedelta(hours=24)
POLICY = Policy()


class Stage:
    """Three dicts as the tables, applying each message's writes like the emitter."""

    def __init__(self, partition: int = 0, signer: Signer | None = None) -> None:
        self.partition = partition
        self.signer = signer
        self.tables: dict[str, dict[bytes, bytes]] = {PAYMENTS: {}, DEDUP: {}, TIMERS: {}}
        self.saga = saga_of()

    def send(self, cmd: dict[str, Any], raw: bytes | None = None) -> Effects:
        raw = raw if raw is not None else VALIDATED.encode(cmd)
        ts_ms = int(cmd["occurred_at"].timestamp() * 1000)
        t = self.tables
        effects = handle(
            cmd,
            raw,
            self.partition,
            ts_ms,
            Tables(t[PAYMENTS].get, t[DEDUP].get, t[TIMERS].get),
            self.saga,
            POLICY,
            RETENTION,
            signer=self.signer,
        )
        for table, key, value in effects.writes:
            if value is None:
                t[table].pop(key, None)
            else:
                t[table][key] = value
        return effects


def streams_of(e: Effects) -> list[str]:
    return [s for s, _ in e.records]


def test_a_redelivery_is_skipped_and_a_reused_command_id_is_flagged(cmds) -> None:
    stage = Stage()
    first = stage.send(cmds.create())
    assert streams_of(first) == [OUTCOMES, EVENTS, EVENTS]
    again = stage.send(cmds.create())
    assert again.skipped and not again.writes and not again.records
    other = cmds.create(amount=5)  # same command_id, other bytes
    reused = stage.send(other)
    assert reused.reused_command_id and not reused.skipped and not reused.records


# What the keys and risk stages attach to a create on its way here.
ENRICHED = {
    "merchant_features": {
        "cnt_1h": 1,
        "cnt_1d": 4,
        "cnt_7d": 9,
        "cnt_30d": 30,
        "labeled_7d": 2,
        "labeled_30d": 5,
        "fraud_7d": 0,
        "fraud_30d": 1,
    },
    "fraud_action": "approve",
    "fraud_score_ppm": 12_000,
    "fraud_reasons": ["score_low"],
    "fraud_model": "model-v1",
    "fraud_fallback": False,
}


def wire(cmd: dict[str, Any], codec: Codec = VALIDATED) -> tuple[dict[str, Any], bytes]:
    """A command as the stage gets it: its bytes (written by `codec`) and their decoding."""
    raw = codec.encode(cmd, check=True)
    return VALIDATED.decode(raw), raw


def test_a_redelivery_is_skipped_whatever_its_enrichment_schema_version_or_time(cmds) -> None:
    """The bytes of a genuine redelivery change with a replay through upgraded stages: a
    new model's score, the merchant's counts, an older writer schema's header (a rolling
    upgrade), the attempt's time (an API publish retried after a lost ack). The client
    asked nothing new: it is skipped, never dead-lettered."""
    stage = Stage()
    create = cmds.create() | ENRICHED
    first = stage.send(*wire(create))
    assert streams_of(first) == [OUTCOMES, EVENTS, EVENTS]
    redeliveries = {
        "rescored": create | {"fraud_score_ppm": 31_000, "fraud_model": "model-v2", "fraud_reasons": []},
        "recounted": create | {"merchant_features": ENRICHED["merchant_features"] | {"cnt_1h": 2}},
        "unscored": cmds.create(),
        "refused on the way": create | {"rejection_reason": "kyc_pending_limit_exceeded", "rejection_detail": "cap"},
        "retried later": create | {"occurred_at": cmds.t0 + timedelta(seconds=3)},
    }
    for name, again in redeliveries.items():
        cmd, raw = wire(again)
        assert raw != wire(create)[1], name
        effects = stage.send(cmd, raw)
        assert effects.skipped and not effects.reused_command_id, name
        assert not effects.writes and not effects.records, name
    # Written by the previous ValidatedCommand schema: another header, no merchant_initiated.
    cmd, raw = wire(create, Codec("history/ValidatedCommand.8"))
    assert raw[:10] != wire(create)[1][:10]
    assert stage.send(cmd, raw).skipped


def test_another_request_under_an_answered_command_id_is_still_reused(cmds) -> None:
    stage = Stage()
    create = cmds.create() | ENRICHED
    stage.send(*wire(create))
    others = {
        "amount": create | {"amount_minor": 9_999},
        "key": create | {"idempotency_key": "order-2"},
        "metadata": create | {"metadata": {"order": "42"}},
        "card": create | {"card": cmds.card() | {"token": "tok_other"}},
        "capture": create | {"capture_method": "manual"},
        "merchant initiated": create | {"merchant_initiated": True},
    }
    for name, other in others.items():
        effects = stage.send(*wire(other))
        assert effects.reused_command_id and not effects.skipped, name
        assert not effects.writes and not effects.records, name


def test_a_dedup_value_stored_before_the_request_digest_still_matches_its_redelivery(cmds) -> None:
    """The code before stored the digest of the bytes: for one idempotency retention
    after the upgrade such values live on, and the same bytes again are a redelivery."""
    stage = Stage()
    cmd, raw = wire(cmds.create() | ENRICHED)
    stage.send(cmd, raw)
    key = dedup_key(0, cmd["command_id"])
    stage.tables[DEDUP][key] = legacy_digest(raw)  # as the previous code left it
    before = {name: dict(table) for name, table in stage.tables.items()}
    again = stage.send(cmd, raw)
    assert again.skipped and not again.writes and not again.records
    assert stage.send(*wire(cmd | {"amount_minor": 9_999})).reused_command_id
    # Bytes are all such a value knows: other enrichment cannot be told from another request.
    assert stage.send(*wire(cmd | {"fraud_score_ppm": 31_000})).reused_command_id
    assert stage.tables == before


def test_dedup_records_are_swept_after_the_retention(cmds) -> None:
    stage = Stage()
    stage.send(cmds.create("order-1"))
    key = dedup_key(0, cmds.create("order-1")["command_id"])
    assert key in stage.tables[DEDUP]
    stage.send(cmds.create("order-2", at=cmds.t0 + RETENTION - timedelta(milliseconds=1)))
    assert key in stage.tables[DEDUP]  # kept at least the retention
    late = stage.send(cmds.create("order-3", at=cmds.t0 + RETENTION))
    assert key not in stage.tables[DEDUP]
    assert [t.kind for t in late.fired] == ["forget"]
    # After the sweep a redelivery of the first create is answered from the payment's key record.
    replay = stage.send(cmds.create("order-1", at=cmds.t0 + RETENTION))
    assert replay.records[0][1]["status"] == "replayed"


def test_an_authorization_expires_when_the_partition_reaches_its_window(cmds) -> None:
    stage = Stage()
    stage.send(cmds.create("order-1", capture_method="manual"))
    pid = cmds.create("order-1")["payment_id"].encode()
    stage.send(cmds.create("order-2", at=cmds.t0 + POLICY.auth_window - timedelta(milliseconds=1)))
    assert b'"status":"authorized"' in stage.tables[PAYMENTS][pid]

    effects = stage.send(cmds.create("order-3", at=cmds.t0 + POLICY.auth_window))
    expired = [r for s, r in effects.records if s == EVENTS and r["type"] == "expired"]
    assert [(e["payment_id"], e["amount_minor"], e["command_id"]) for e in expired] == [(pid.decode(), 10_000, None)]
    assert b'"status":"expired"' in stage.tables[PAYMENTS][pid]
    # The merchant's own expire after that is refused, nothing twice.
    late = stage.send(cmds.expire(pid.decode(), "exp-1", at=cmds.t0 + POLICY.auth_window))
    assert late.records[0][1]["reason_code"] == "not_expirable"


def test_a_tick_alone_expires_an_idle_partitions_authorization(cmds) -> None:
    """No command after the create: the clock's tick moves the partition's time and the
    hold is released, sealed on the chain; a tick has no outcome and no dedup record of
    its own (it sweeps the dedup records past their retention, as any event does)."""
    stage = Stage(signer=Signer("signing-v1", KEY))
    stage.send(cmds.create("order-1", capture_method="manual"))
    pid = cmds.create("order-1")["payment_id"].encode()

    early = stage.send(tick_command(clock_tick(cmds.t0 + POLICY.auth_window - timedelta(milliseconds=1), 0)))
    assert not early.records and [t.kind for t in early.fired] == ["forget"]
    assert b'"status":"authorized"' in stage.tables[PAYMENTS][pid]

    tick = tick_command(clock_tick(cmds.t0 + POLICY.auth_window, 0))
    VALIDATED.encode(tick, check=True)  # the wire form the clock stage forwards
    effects = stage.send(tick)
    assert [(s, r["type"], r["payment_id"]) for s, r in effects.records] == [(EVENTS, "expired", pid.decode())]
    assert effects.records[0][1]["chain_seq"] == 2  # the next link after the create's authorized
    assert b'"status":"expired"' in stage.tables[PAYMENTS][pid]
    assert not any(b"tick" in k for k in stage.tables[DEDUP])
    # The same tick again (or an older one) moves nothing.
    assert not stage.send(tick).records and not stage.send(tick_command(clock_tick(cmds.t0, 0))).records


def test_a_resolve_is_sent_to_the_stage_itself(cmds) -> None:
    from connectors.providers.simulated import ProviderResult
    from streams.stages.payments import SELF
    from tests.unit.streams.conftest import ScriptedProvider

    stage = Stage()
    stage.saga = saga_of(ScriptedProvider(authorize_result=ProviderResult("unknown", "provider_timeout")))
    effects = stage.send(cmds.create())
    (resolve,) = [r for s, r in effects.records if s == SELF]
    VALIDATED.encode(resolve, check=True)
    resolved = stage.send(resolve)
    assert [r["type"] for s, r in resolved.records if s == EVENTS] == ["authorized", "captured"]


def test_the_sweep_fires_at_most_sweep_max_timers_per_event(cmds) -> None:
    t: dict[str, dict[bytes, bytes]] = {PAYMENTS: {}, DEDUP: {}, TIMERS: {}}

    def send(cmd: dict[str, Any]) -> Effects:
        effects = handle(
            cmd,
            VALIDATED.encode(cmd),
            0,
            int(cmd["occurred_at"].timestamp() * 1000),
            Tables(t[PAYMENTS].get, t[DEDUP].get, t[TIMERS].get),
            saga_of(),
            POLICY,
            RETENTION,
            1,
        )
        for table, key, value in effects.writes:
            t[table].pop(key, None) if value is None else t[table].__setitem__(key, value)
        return effects

    for i in range(3):
        send(cmds.create(f"order-{i}"))
    assert [len(send(cmds.create(f"late-{i}", at=cmds.t0 + RETENTION)).fired) for i in range(3)] == [1, 1, 1]


KEY = Ed25519PrivateKey.generate()


def test_events_are_sealed_in_order_onto_the_partitions_chain(cmds) -> None:
    stage = Stage(partition=3, signer=Signer("signing-v1", KEY))
    first = stage.send(cmds.create("order-1", capture_method="manual"))
    pid = first.records[0][1]["payment_id"]
    second = stage.send(cmds.follow_up("capture", pid, "cap-1"))
    block = [(s, r) for e in (first, second) for s, r in e.records]
    sign_last_event(block, Signer("signing-v1", KEY))  # what the worker does at the end of a batch
    events = [r for s, r in block if s == EVENTS]
    assert [e["chain_seq"] for e in events] == list(range(1, len(events) + 1))
    assert [e["signature"] is not None for e in events] == [False] * (len(events) - 1) + [True]
    head = ChainHead.genesis(3)
    for event in events[:-1]:  # each is the next link, awaiting the block's signature
        assert awaits_signature(event) and link_problem(event, head) is None
        head = ChainHead(3, event["chain_seq"], event_hash(event))
    head = verify(events[-1], head, {"signing-v1": KEY.public_key()})  # which covers them all
    assert ChainHead.from_bytes(3, stage.tables[TIMERS][chain_key(3)]) == head
    # A redelivery seals nothing and leaves the head alone.
    assert stage.send(cmds.create("order-1", capture_method="manual")).skipped
    assert ChainHead.from_bytes(3, stage.tables[TIMERS][chain_key(3)]) == head


def test_a_message_without_events_leaves_the_chain_head_unwritten(cmds) -> None:
    stage = Stage(signer=Signer("signing-v1", KEY))
    effects = stage.send(cmds.follow_up("capture", "pay_" + "0" * 32, "cap-1"))
    assert streams_of(effects) == [OUTCOMES]
    assert chain_key(0) not in stage.tables[TIMERS]


def test_the_learning_routers_evidence_is_partition_state_and_a_redelivery_routes_the_same(cmds) -> None:
    from collections import Counter

    from connectors.providers.rails import build_rails
    from connectors.providers.router import RoutingState, build_router
    from streams.domain.payments import Saga
    from streams.stages.payments import routing_key

    rails = build_rails(2)
    stage = Stage()
    stage.saga = Saga(dict(rails), build_router({n: r.config for n, r in rails.items()}, learn=True))
    creates = [cmds.create(f"order-{i}", at=cmds.t0 + timedelta(milliseconds=300 * i)) for i in range(160)]
    for cmd in creates[:-1]:
        stage.send(cmd)
    state = RoutingState.from_json(stage.tables[TIMERS][routing_key(0)])
    assert (
        state.arms and sum(a.approved_milli + a.declined_milli for a in state.arms) > 0
    )  # in the table, not the process
    # the last create, then its redelivery after a crash before the commit: the tables as
    # restored from the changelogs (as they were), a new process (a new stage object)
    before = {name: dict(table) for name, table in stage.tables.items()}
    first = stage.send(creates[-1])
    restored = Stage()
    restored.tables, restored.saga = before, stage.saga
    again = restored.send(creates[-1])
    assert again.records == first.records and again.writes == first.writes
    assert first.routed is not None and first.routed.learned is not None  # the learner chose, from the state
    assert again.routed is not None and again.routed.attempts == first.routed.attempts
    approvals = Counter(pid for rail in rails.values() for pid in rail.authorized())
    assert max(approvals.values()) == 1


def test_routing_states_keep_what_is_written_and_parse_anything_else(cmds) -> None:
    from connectors.providers.learning import Arm
    from connectors.providers.rails import build_rails
    from connectors.providers.router import RoutingState, build_router
    from schemas.state import ParsedOnce
    from streams.domain.payments import Saga
    from streams.stages.payments import routing_key, routing_state

    rails = build_rails(2)
    stage = Stage()
    stage.saga = Saga(dict(rails), build_router({n: r.config for n, r in rails.items()}))
    for i in range(5):
        stage.send(cmds.create(f"order-{i}", at=cmds.t0 + timedelta(milliseconds=300 * i)))
    raw = stage.tables[TIMERS][routing_key(0)]
    # The state the stage wrote is kept beside its bytes: read back without parsing, equal to a parse.
    assert routing_state(raw) is routing_state(raw) and routing_state(raw) == RoutingState.from_json(raw)

    states = ParsedOnce(RoutingState.from_json, max_entries=2)
    a, b = RoutingState(), RoutingState.from_json(raw)
    states.remember(a.to_json(), a)
    assert states.get(raw) == b and states.get(a.to_json()) is a  # other bytes, their own state
    c = RoutingState(b.breakers, (Arm("card:US:1", "acq_north", 1_000, 0, 0),))
    states.remember(c.to_json(), c)  # bounded: the oldest (a) goes, and is parsed again when read
    assert states.get(c.to_json()) is c and states.get(a.to_json()) is not a
    assert states.get(a.to_json()) == a


def test_a_payment_written_is_read_back_unparsed_and_equal_to_a_parse(cmds, monkeypatch) -> None:
    from streams.domain.payments import Payment
    from streams.stages import payments as stage_module

    parsed: list[bytes] = []
    kept = stage_module.ParsedOnce(lambda raw: parsed.append(raw) or Payment.from_json(raw), 8)
    monkeypatch.setattr(stage_module, "_payments", kept)
    stage = Stage()
    create = stage.send(cmds.create(capture_method="manual"))
    pid = create.records[0][1]["payment_id"].encode()
    written = stage.tables[PAYMENTS][pid]
    capture = stage.send(cmds.capture(pid.decode(), "cap-1"))
    assert not parsed  # the capture read the create's payment beside its bytes
    assert [r["type"] for s, r in capture.records if s == EVENTS] == ["captured"]
    assert kept.get(written) == Payment.from_json(written)
    stage.tables[PAYMENTS][pid] = Payment.from_json(stage.tables[PAYMENTS][pid]).evolve(version=9).to_json()
    stage.send(cmds.refund(pid.decode(), "ref-1", amount=1))  # bytes it did not write: parsed
    assert len(parsed) == 1
