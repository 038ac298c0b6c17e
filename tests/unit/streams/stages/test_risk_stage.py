"""The risk stage over dict tables: decisions attached, states stored, labels once,
redeliveries skipped, garbled input flagged; and the keys and risk stages' features
equal the offline feature path's for the same history, over any number of partitions."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.features import CardState, MerchantState, Txn, batch_features, to_ms
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from schemas.partitioning import partition_for
from streams.stages import idempotency as ks
from streams.stages import risk as rs
from streams.stages.ingest import command_key
from tests.unit.schemas.test_codec_compiled import record_of

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
RETENTION = timedelta(hours=24)


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.load(SHIPPED_ARTIFACT)


class Table(dict):
    def apply(self, writes) -> None:
        for k, v in writes:
            if v is None:
                self.pop(k, None)
            else:
                self[k] = v


def create(
    n: int,
    *,
    card: str = "tok_a",
    merchant: str = "m_1",
    amount: int = 2_500,
    at: datetime = T0,
    currency: str = "USD",
    metadata: dict[str, str] | None = None,
) -> dict[str, Any]:
    key = f"order-{n}"
    return {
        "command_id": f"cmd-{merchant}-{key}",
        "kind": "create",
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": derive_payment_id(merchant, key),
        "amount_minor": amount,
        "currency": currency,
        "capture_method": "automatic",
        "card": {"token": card, "bin": "424242", "last4": "4242", "brand": "visa", "exp_month": 12, "exp_year": 2030},
        "metadata": metadata or {},
        "dispute": None,
        "occurred_at": at,
        "rejection_reason": None,
        "rejection_detail": None,
        "three_ds": None,
        "merchant_features": None,
        "splits": None,
        "platform_fee_minor": None,
        "method": None,
        "wallet": None,
        "bank_account": None,
        "bnpl_provider": None,
        "return_code": None,
        "crypto": None,
        "merchant_initiated": False,
    }


def label(
    label_id: str, *, card: str = "tok_a", merchant: str = "m_1", fraud: bool = True, at: datetime = T0
) -> dict[str, Any]:
    return {
        "label_id": label_id,
        "payment_id": "pay_x",
        "card_token": card,
        "merchant_id": merchant,
        "fraud": fraud,
        "source": "chargeback",
        "tx_occurred_at": at - timedelta(days=7),
        "occurred_at": at,
        "amount_minor": None,
        "currency": None,
        "reason_code": None,
    }


def run(table: Table, cmd, scorer, partition: int = 0) -> rs.RiskEffects:
    effects = rs.handle(cmd, partition, to_ms(cmd["occurred_at"]), table.get, scorer, RETENTION)
    table.apply(effects.writes)
    return effects


def test_a_create_leaves_with_its_decision_attached_and_encodes(scorer):
    table = Table()
    effects = run(table, create(1), scorer)
    d = effects.decision
    out = effects.command
    assert out["fraud_action"] == d.action and out["fraud_model"] == scorer.model.version
    assert out["fraud_score_ppm"] == round(d.score * 1_000_000) and 0 <= out["fraud_score_ppm"] <= 1_000_000
    assert out["fraud_reasons"] == list(d.reasons) and out["fraud_fallback"] is False
    assert Codec("ValidatedCommand").decode(Codec("ValidatedCommand").encode(out, check=True)) == out
    # the card and merchant states are stored under the documented keys and read back
    assert CardState.from_bytes(table[rs.card_key(0, "tok_a")]).n == 1
    assert MerchantState.from_bytes(table[rs.merchant_key(0, "m_1")]).windows.counts[0] == 1
    assert table[rs.applied_key(0, out["command_id"])] == b"1"


def test_velocity_builds_up_across_messages_through_the_table(scorer):
    table = Table()
    decisions = [run(table, create(i, at=T0 + timedelta(seconds=5 * i)), scorer).decision for i in range(6)]
    assert decisions[0].features.card_cnt_1m == 0
    assert decisions[-1].features.card_cnt_1m == 5
    assert "velocity_card_1m" in decisions[-1].reasons
    assert decisions[-1].action in ("review", "decline")


def test_ip_and_device_from_metadata_get_their_own_state(scorer):
    table = Table()
    meta = {"ip": "203.0.113.9", "device": "dev-1"}
    run(table, create(1, metadata=meta), scorer)
    second = run(table, create(2, card="tok_b", metadata=meta, at=T0 + timedelta(minutes=1)), scorer)
    assert second.decision.features.ip_cnt_1h == 1 and second.decision.features.device_cnt_1h == 1
    assert rs.ip_key(0, "203.0.113.9") in table and rs.device_key(0, "dev-1") in table


def test_a_review_decision_yields_a_review_record(scorer):
    table = Table()
    # above the USD review limit of the v1 rules, below the decline limit
    effects = run(table, create(1, amount=600_000), scorer)
    assert effects.decision.action == "review", effects.decision
    review = effects.review
    assert review["payment_id"] == effects.command["payment_id"] and review["card_last4"] == "4242"
    assert "amount_over_review_limit" in review["reasons"]
    assert set(review["features"]) >= {"card_cnt_1h", "amount_major"}
    codec = Codec("FraudReview")
    decoded = codec.decode(codec.encode(review, check=True))
    assert decoded["review_id"] == review["review_id"] and decoded["score_ppm"] == review["score_ppm"]
    assert run(Table(), create(2), scorer).review is None


def test_a_redelivered_create_is_skipped_and_folds_nothing_twice(scorer):
    table = Table()
    run(table, create(1), scorer)
    before = dict(table)
    again = run(table, create(1), scorer)
    assert again.skipped and again.command is None and again.writes == []
    assert table == before


def test_dedup_records_are_forgotten_after_the_retention(scorer):
    table = Table()
    first = create(1)
    run(table, first, scorer)
    later = run(table, create(2, at=T0 + RETENTION + timedelta(seconds=1)), scorer)
    assert [t.ref for t in later.fired] == [rs.applied_key(0, first["command_id"]).decode()]
    assert rs.applied_key(0, first["command_id"]) not in table


@pytest.mark.parametrize(
    "cmd_change",
    [
        {"kind": "capture"},
        {"rejection_reason": "expired_card"},
        {"card": None},
    ],
)
def test_anything_but_an_accepted_create_passes_unchanged(scorer, cmd_change):
    cmd = create(1) | cmd_change
    effects = rs.handle(cmd, 0, 0, Table().get, scorer, RETENTION)
    assert effects.command == cmd and effects.writes == [] and effects.decision is None


@pytest.mark.parametrize("bad", [{"amount_minor": None}, {"currency": "???"}])
def test_garbled_create_falls_back_flagged_and_changes_no_state(scorer, bad):
    table = Table()
    effects = run(table, create(1) | bad, scorer)
    assert effects.fallback and effects.command["fraud_fallback"] is True
    assert effects.command["fraud_score_ppm"] is None and "fallback_rules_only" in effects.command["fraud_reasons"]
    assert rs.card_key(0, "tok_a") not in table


def test_a_garbled_stored_state_falls_back_and_starts_afresh(scorer):
    table = Table({rs.card_key(0, "tok_a"): b"\x01\x01garbage"})
    effects = run(table, create(1), scorer)
    assert effects.fallback and effects.state_unreadable
    assert CardState.from_bytes(table[rs.card_key(0, "tok_a")]).n == 1


def test_a_label_updates_known_states_once(scorer):
    table = Table()
    run(table, create(1), scorer)
    first = rs.handle_label(label("lab-1", at=T0 + timedelta(days=1)), 0, 0, table.get, RETENTION)
    table.apply(first.writes)
    assert first.applied
    assert MerchantState.from_bytes(table[rs.merchant_key(0, "m_1")]).labels.counts == [1, 1]
    again = rs.handle_label(label("lab-1", at=T0 + timedelta(days=1)), 0, 0, table.get, RETENTION)
    assert again.skipped and again.writes == []
    unknown = rs.handle_label(label("lab-2", card="tok_z", merchant="m_z"), 0, 0, table.get, RETENTION)
    assert not unknown.applied and rs.card_key(0, "tok_z") not in dict(unknown.writes)
    nxt = run(table, create(2, at=T0 + timedelta(days=2)), scorer)
    assert nxt.decision.features.card_fraud_labels_30d == 1 and nxt.decision.features.merch_risk_30d == 1.0


ATTACHED = {
    "cnt_1h": 7,
    "cnt_1d": 30,
    "cnt_7d": 100,
    "cnt_30d": 400,
    "labeled_7d": 4,
    "labeled_30d": 10,
    "fraud_7d": 1,
    "fraud_30d": 5,
}


def test_attached_merchant_features_are_scored_and_the_partition_merchant_state_is_left_alone(scorer):
    table = Table()
    effects = run(table, create(1) | {"merchant_features": ATTACHED}, scorer)
    fv = effects.decision.features
    assert (fv.merch_cnt_1h, fv.merch_cnt_30d, fv.merch_labeled_30d) == (7.0, 400.0, 10.0)
    assert (fv.merch_risk_7d, fv.merch_risk_30d) == (0.25, 0.5)
    assert not effects.merchant_fallback and rs.merchant_key(0, "m_1") not in table
    assert CardState.from_bytes(table[rs.card_key(0, "tok_a")]).n == 1


@pytest.mark.parametrize(
    "bad",
    [
        None,
        ATTACHED | {"cnt_1h": -1},
        ATTACHED | {"fraud_30d": 11},  # more fraud than labels
        {"cnt_1h": 1},
    ],
)
def test_without_usable_merchant_features_the_partition_state_is_the_flagged_fallback(scorer, bad):
    table = Table()
    effects = run(table, create(1) | {"merchant_features": bad}, scorer)
    assert effects.merchant_fallback and effects.decision.features.merch_cnt_1h == 0.0
    assert MerchantState.from_bytes(table[rs.merchant_key(0, "m_1")]).windows.counts[0] == 1


# --- one feature spec: the stage (online) and the offline path agree -------------------------


def same(a, b) -> bool:
    return all(x == y or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b, strict=True))


history_events = st.lists(
    st.tuples(
        st.sampled_from(["tx", "tx", "tx", "label"]),
        st.integers(0, 4),  # card
        st.integers(0, 2),  # merchant
        st.integers(0, 40 * 86_400),  # seconds after T0 (out of order on purpose)
        st.integers(0, 500_000),  # amount
        st.booleans(),  # fraud / foreign currency
    ),
    min_size=1,
    max_size=60,
)


def _replay(events, partitions: int, scorer):
    """The stage over `partitions` partitions (creates and labels routed by card token),
    and the offline batch path over each partition's sub-history, in the same order."""
    tables = [Table() for _ in range(partitions)]
    online: list = []
    offline_input: list[list] = [[] for _ in range(partitions)]
    for i, (kind, c, m, secs, amount, flag) in enumerate(events):
        card, merchant, at = f"tok_{c}", f"m_{m}", T0 + timedelta(seconds=secs)
        p = partition_for(card.encode(), partitions)
        if kind == "tx":
            cmd = create(i, card=card, merchant=merchant, amount=amount, at=at, currency="EUR" if flag else "USD")
            effects = run(tables[p], cmd, scorer, p)
            online.append(effects.decision.features)
            offline_input[p].append(
                (len(online) - 1, ("tx", Txn(to_ms(at), card, merchant, amount, "EUR" if flag else "USD")))
            )
        else:
            effects = rs.handle_label(
                label(f"lab-{i}", card=card, merchant=merchant, fraud=flag, at=at), p, 0, tables[p].get, RETENTION
            )
            tables[p].apply(effects.writes)
            offline_input[p].append((None, ("label", (card, merchant, to_ms(at), flag))))
    offline: list = [None] * len(online)
    for part in offline_input:
        slots = [i for i, _ in part if i is not None]
        for i, fv in zip(slots, batch_features(ev for _, ev in part), strict=True):
            offline[i] = fv
    return online, offline


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_events)
def test_online_stage_features_equal_offline_features_one_partition(events):
    scorer = Scorer.load(None)  # features do not depend on the model
    online, offline = _replay(events, 1, scorer)
    assert all(same(a, b) for a, b in zip(online, offline, strict=True))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_events)
def test_without_merchant_features_the_fallback_is_per_partition(events):
    """Creates that reach the risk stage without merchant features (written before
    ValidatedCommand v4): each partition's features equal the offline features of that
    partition's share of the history."""
    scorer = Scorer.load(None)
    online, offline = _replay(events, 3, scorer)
    assert all(same(a, b) for a, b in zip(online, offline, strict=True))


ROUTE = timedelta(days=180)


def _pipeline(events, partitions: int, scorer, *, redeliver: bool = False):
    """The keys stage (by merchant) then the risk stage (by card) over `partitions`
    partitions, labels to the card's risk partition and their copy to the merchant's
    keys partition, as streams/app.py wires them; `redeliver`: every message twice."""
    keys_tables = [Table() for _ in range(partitions)]
    risk_tables = [Table() for _ in range(partitions)]
    online: list = []
    offline_events: list = []
    copies = 2 if redeliver else 1
    for i, (kind, c, m, secs, amount, flag) in enumerate(events):
        card, merchant, at = f"tok_{c}", f"m_{m}", T0 + timedelta(seconds=secs)
        at_ms = to_ms(at)
        if kind == "tx":
            cmd = create(i, card=card, merchant=merchant, amount=amount, at=at, currency="EUR" if flag else "USD")
            kp = partition_for(command_key(cmd), partitions)
            for _ in range(copies):
                keyed = ks.handle(cmd, kp, at_ms, keys_tables[kp].get, RETENTION, route_retention=ROUTE)
                keys_tables[kp].apply(keyed.writes)
                assert keyed.route == card.encode() and keyed.command["merchant_features"] is not None
                rp = partition_for(keyed.route, partitions)
                effects = rs.handle(keyed.command, rp, at_ms, risk_tables[rp].get, scorer, RETENTION)
                risk_tables[rp].apply(effects.writes)
                if not effects.skipped:
                    assert not effects.merchant_fallback
                    online.append(effects.decision.features)
            offline_events.append(("tx", Txn(at_ms, card, merchant, amount, "EUR" if flag else "USD")))
        else:
            lab = label(f"lab-{i}", card=card, merchant=merchant, fraud=flag, at=at)
            rp = partition_for(card.encode(), partitions)
            for _ in range(copies):
                risked = rs.handle_label(lab, rp, at_ms, risk_tables[rp].get, RETENTION)
                risk_tables[rp].apply(risked.writes)
                if risked.skipped:  # the risk agent forwards only what it applies
                    continue
                kp = partition_for(ks.label_routing_key(lab), partitions)
                for _ in range(copies):  # and the forwarded copy may itself be redelivered
                    keys_tables[kp].apply(ks.handle_label(lab, kp, at_ms, keys_tables[kp].get, RETENTION).writes)
            offline_events.append(("label", (card, merchant, at_ms, flag)))
    return online, list(batch_features(offline_events))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history_events, st.integers(2, 5), st.booleans())
def test_keys_and_risk_stages_features_equal_offline_features_over_partitions(events, partitions, redeliver):
    """The one feature spec across the stream: merchant features from the keys stage
    (the merchant whole), card features from the risk stage, labels to both; every
    feature equals the offline path's over the whole history, whatever the partition
    count, and redelivered commands and labels change nothing."""
    scorer = Scorer.load(None)
    online, offline = _pipeline(events, partitions, scorer, redeliver=redeliver)
    assert len(online) == len(offline)
    assert all(same(a, b) for a, b in zip(online, offline, strict=True))


def test_the_pipeline_differs_from_the_per_partition_fallback_when_a_merchant_spans_partitions():
    """The test above can fail: with a merchant's cards on two partitions the fallback's
    merchant count is a share, the keys stage's is whole."""
    scorer = Scorer.load(None)
    cards = [c for c in range(40) if partition_for(f"tok_{c}".encode(), 2) == 0][:1] + [
        c for c in range(40) if partition_for(f"tok_{c}".encode(), 2) == 1
    ][:1]
    events = [("tx", c, 0, 60 * i, 1_000, False) for i, c in enumerate(cards * 2)]
    exact, offline = _pipeline(events, 2, scorer)
    share, _ = _replay(events, 2, scorer)
    assert [fv.merch_cnt_1h for fv in exact] == [fv.merch_cnt_1h for fv in offline] == [0, 1, 2, 3]
    assert [fv.merch_cnt_1h for fv in share] == [0, 0, 1, 1]


# --- merchant-initiated charges (subscriptions) ---


class _StepUpScorer:
    """The shipped scorer, but every score asks for a 3DS step-up."""

    def __init__(self, real: Scorer) -> None:
        self.real = real

    def decide_many(self, items):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return [replace(d, action="requires_action") for d in self.real.decide_many(items)]

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.real, name)


def test_a_subscription_charge_is_exempt_from_the_step_up_but_a_customer_payment_is_not(scorer):
    from streams.domain.subscriptions import MIT_METADATA_KEY

    step_up = _StepUpScorer(scorer)
    customer = run(Table(), create(1), step_up)
    assert customer.command["fraud_action"] == "requires_action"
    mit = run(Table(), create(2, metadata={MIT_METADATA_KEY: "sub_1", "period": "3"}), step_up)
    assert mit.command["fraud_action"] == "approve"
    assert mit.command["fraud_reasons"][-1] == "mit_exemption"


def test_the_exemption_never_softens_a_review_or_a_decline(scorer):
    from dataclasses import replace

    from streams.domain.subscriptions import MIT_METADATA_KEY

    cmd = create(3, metadata={MIT_METADATA_KEY: "sub_1"})
    decision = run(Table(), create(4), scorer).decision
    for action in ("review", "decline", "approve"):
        d = replace(decision, action=action)
        assert rs.mit_exemption(cmd, d) is d


# --- a batch in one model call ---


class _Counting:
    """The real model, counting its calls and rows."""

    def __init__(self, real) -> None:
        self.real, self.manifest, self.calls, self.rows = real, real.manifest, 0, 0

    @property
    def version(self) -> str:
        return self.real.version

    def score(self, X):
        self.calls, self.rows = self.calls + 1, self.rows + len(X)
        return self.real.score(X)


def test_a_batch_is_handled_as_one_by_one_with_one_model_call(scorer):
    cmds = [create(i, card=f"tok_{i % 3}", at=T0 + timedelta(seconds=40 * i), amount=900 + 131 * i) for i in range(9)]
    cmds.append(cmds[4])  # a redelivery inside the batch: skipped, as it would be alone
    reference = Table()
    expected = [run(reference, c, scorer) for c in cmds]

    counting = _Counting(scorer.model)
    batched = Scorer(counting, scorer.policy)
    table = Table()
    got = rs.handle_batch([(c, 0, to_ms(c["occurred_at"])) for c in cmds], table.get, batched, RETENTION)
    assert counting.calls == 1
    assert [e.command for e in got] == [e.command for e in expected]
    assert [e.skipped for e in got] == [False] * 9 + [True]
    for e in got:
        table.apply(e.writes)
    assert table == reference


VALIDATED = Codec("ValidatedCommand")
DECISIONS = st.fixed_dictionaries(
    {
        "fraud_action": st.sampled_from([None, "approve", "review", "decline", "requires_action"]),
        "fraud_score_ppm": st.none() | st.integers(0, rs.PPM),
        "fraud_reasons": st.lists(st.text(max_size=30), max_size=3),
        "fraud_model": st.none() | st.text(max_size=30),
        "fraud_fallback": st.booleans(),
    }
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record_of("ValidatedCommand"), DECISIONS)
def test_a_decided_create_spliced_into_its_bytes_is_its_whole_encoding(record, decision):
    raw = VALIDATED.encode(record)
    came = VALIDATED.decode(raw)
    decided = came | decision
    effects = rs.RiskEffects(decided, decision=object())  # decided: spliced, not passed on
    assert rs.forward_bytes(VALIDATED, raw, came, effects) == VALIDATED.encode(decided)


def test_a_decided_create_from_the_stage_is_spliced_and_a_follow_up_passes_as_it_came(scorer):
    came = create(1, metadata={"ip": "10.0.0.1"}) | {"merchant_features": None}
    raw = VALIDATED.encode(came)
    came = VALIDATED.decode(raw)
    effects = rs.handle(came, 0, to_ms(came["occurred_at"]), Table().get, scorer, RETENTION)
    splice = rs.DecisionSplice.of(VALIDATED)
    assert splice is not None and splice.spliced(raw, came, effects.command) == VALIDATED.encode(effects.command)
    follow_up = VALIDATED.decode(VALIDATED.encode(came | {"kind": "capture"}))
    passed = rs.handle(follow_up, 0, 0, Table().get, scorer, RETENTION)
    assert rs.forward_bytes(VALIDATED, VALIDATED.encode(follow_up), follow_up, passed) == VALIDATED.encode(follow_up)


def test_bytes_that_are_not_the_creates_encoding_are_encoded_whole(scorer):
    came = VALIDATED.decode(VALIDATED.encode(create(1)))
    effects = rs.handle(came, 0, to_ms(came["occurred_at"]), Table().get, scorer, RETENTION)
    raw = VALIDATED.encode(came)
    assert rs.forward_bytes(VALIDATED, None, came, effects) is None
    assert rs.forward_bytes(VALIDATED, b"\x00" + raw[1:], came, effects) is None  # another header
    assert rs.forward_bytes(VALIDATED, VALIDATED.encode(came | {"merchant_initiated": True}), came, effects) is None
    splice = rs.DecisionSplice.of(VALIDATED)
    assert splice is not None
    assert splice.spliced(raw, came, effects.command | {"fraud_score_ppm": 2**40}) is None  # the encode refuses it
