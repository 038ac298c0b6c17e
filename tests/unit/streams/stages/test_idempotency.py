"""Idempotency keys per merchant across payments: claims, conflicts, the sweep."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from models.features import MerchantCounts, MerchantState
from streams.stages.idempotency import (
    KeyEffects,
    LabelEffects,
    _merchant_states,
    attached_key,
    claim_key,
    handle,
    handle_label,
    label_key,
    label_routing_key,
    merchant_state_key,
    route_key,
)
from streams.stages.ingest import command_key
from tests.unit.streams.conftest import Commands

RETENTION = timedelta(hours=24)


class KeyStage:
    def __init__(self, partition: int = 5, route_retention: timedelta | None = None) -> None:
        self.partition = partition
        self.table: dict[bytes, bytes] = {}
        self.route_retention = route_retention

    def send(self, cmd: dict[str, Any]) -> KeyEffects:
        effects = handle(
            cmd,
            self.partition,
            int(cmd["occurred_at"].timestamp() * 1000),
            self.table.get,
            RETENTION,
            route_retention=self.route_retention,
        )
        for k, v in effects.writes:
            if v is None:
                self.table.pop(k, None)
            else:
                self.table[k] = v
        return effects


def test_a_key_is_claimed_by_its_first_payment(cmds) -> None:
    stage = KeyStage()
    a = cmds.create("order-1")
    assert stage.send(a).command is a
    assert claim_key(5, "m_acme", "order-1") in stage.table
    # The same payment again (a retry, or the same key on a follow-up of it) passes:
    # the payment itself answers with a replay or a conflict.
    assert stage.send(cmds.create("order-1", amount=1)).command["rejection_reason"] is None
    assert stage.send(cmds.capture(a["payment_id"], "order-1")).command["rejection_reason"] is None


def test_the_same_key_on_another_payment_of_the_merchant_is_a_conflict(cmds) -> None:
    stage = KeyStage()
    a, b = cmds.create("order-1"), cmds.create("order-2")
    stage.send(a)
    stage.send(b)
    out = stage.send(cmds.capture(b["payment_id"], "order-1")).command
    assert (out["rejection_reason"], out["payment_id"]) == ("idempotency_conflict", b["payment_id"])
    cap = cmds.capture(a["payment_id"], "cap-1")
    stage.send(cap)
    assert stage.send(cmds.refund(b["payment_id"], "cap-1")).command["rejection_reason"] == "idempotency_conflict"
    # Another merchant's keys are its own.
    assert stage.send(cmds.create("order-1", merchant="m_globex")).command["rejection_reason"] is None


def test_a_refused_command_claims_nothing(cmds) -> None:
    stage = KeyStage()
    bad = cmds.create("order-1") | {"rejection_reason": "invalid_amount", "rejection_detail": "amount <= 0"}
    assert stage.send(bad).command is bad
    assert claim_key(5, "m_acme", "order-1") not in stage.table
    assert stage.send(cmds.create("order-1")).command["rejection_reason"] is None


def test_claims_are_swept_after_the_retention_then_the_key_is_free(cmds) -> None:
    stage = KeyStage()
    a, b = cmds.create("order-1"), cmds.create("order-2")
    stage.send(a)
    later = cmds.t0 + RETENTION
    stage.send(cmds.create("order-3", at=later - timedelta(milliseconds=1)))
    assert claim_key(5, "m_acme", "order-1") in stage.table
    swept = stage.send(cmds.create("order-4", at=later))
    assert [t.ref for t in swept.fired] == [claim_key(5, "m_acme", "order-1").decode()]
    assert stage.send(cmds.capture(b["payment_id"], "order-1", at=later)).command["rejection_reason"] is None


def test_commands_travel_by_merchant(cmds) -> None:
    assert command_key(cmds.create()) == b"m_acme"
    assert command_key(cmds.create(merchant="") | {"command_id": "c1"}) == b"c1"


def test_the_sweep_fires_at_most_sweep_max_claims_per_event(cmds) -> None:
    table: dict[bytes, bytes] = {}

    def send(cmd: dict[str, Any], sweep_max: int) -> KeyEffects:
        effects = handle(cmd, 5, int(cmd["occurred_at"].timestamp() * 1000), table.get, RETENTION, sweep_max)
        for k, v in effects.writes:
            table.pop(k, None) if v is None else table.__setitem__(k, v)
        return effects

    for i in range(3):
        send(cmds.create(f"order-{i}"), 8)
    late = cmds.t0 + RETENTION
    assert len(send(cmds.create("order-a", at=late), 2).fired) == 2
    assert len(send(cmds.create("order-b", at=late), 2).fired) == 1  # the rest, one event later


ROUTE = timedelta(days=180)


def test_a_payments_follow_ups_travel_its_creates_card_path(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    create = cmds.create("order-1", capture_method="manual")
    token = create["card"]["token"].encode()
    assert stage.send(create).route == token
    assert stage.table[route_key(5, create["payment_id"])] == token
    assert stage.send(cmds.capture(create["payment_id"], "cap-1")).route == token
    assert stage.send(cmds.create("order-1", capture_method="manual")).route == token  # a retry, same path
    # A follow-up of a payment this stage never routed, and a refused command, go straight on.
    assert stage.send(cmds.capture("pay_" + "0" * 32, "cap-x")).route is None
    assert stage.send(cmds.create("order-2") | {"rejection_reason": "invalid_amount"}).route is None


def test_the_route_is_forgotten_after_the_follow_up_window(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    create = cmds.create("order-1", capture_method="manual")
    stage.send(create)
    stage.send(cmds.create("order-2", at=cmds.t0 + ROUTE - timedelta(milliseconds=1)))
    assert route_key(5, create["payment_id"]) in stage.table
    late = stage.send(cmds.create("order-3", at=cmds.t0 + ROUTE))
    assert route_key(5, create["payment_id"]) not in stage.table and "unroute" in {t.kind for t in late.fired}
    assert stage.send(cmds.refund(create["payment_id"], "ref-1", at=cmds.t0 + ROUTE)).route is None


def test_without_the_risk_stage_nothing_is_routed(cmds) -> None:
    stage = KeyStage()
    assert stage.send(cmds.create("order-1")).route is None
    assert not any(k.startswith(b"5/r/") for k in stage.table)


def test_a_create_the_registry_does_not_admit_is_refused_and_claims_nothing(cmds) -> None:
    from streams.domain.merchants import merchant_record

    pending = merchant_record("m_acme", kyc_status="pending", updated_at=cmds.t0)
    create = cmds.create("order-1")
    effects = handle(create, 5, int(create["occurred_at"].timestamp() * 1000), {}.get, RETENTION, merchant=pending)
    assert effects.command["rejection_reason"] == "merchant_not_verified"
    assert claim_key(5, "m_acme", "order-1") not in dict(effects.writes)
    verified = merchant_record("m_acme", kyc_status="verified", updated_at=cmds.t0)
    assert handle(create, 5, 0, {}.get, RETENTION, merchant=verified).command["rejection_reason"] is None
    unknown = handle(create, 5, 0, {}.get, RETENTION, require_registration=True).command
    assert unknown["rejection_reason"] == "merchant_unknown"


# --- merchant features: the merchant whole, counts before the create, labels once -------------


def test_a_routed_create_carries_the_merchants_counts_before_it(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    first = stage.send(cmds.create("order-1")).command["merchant_features"]
    assert first == dict.fromkeys(MerchantCounts._fields, 0)
    second = stage.send(cmds.create("order-2", at=cmds.t0 + timedelta(minutes=1))).command["merchant_features"]
    assert (second["cnt_1h"], second["cnt_30d"], second["labeled_30d"]) == (1, 1, 0)
    state = MerchantState.from_bytes(stage.table[merchant_state_key(5, "m_acme")])
    assert state.counts(int((cmds.t0 + timedelta(minutes=2)).timestamp() * 1000)).cnt_1h == 2
    # A follow-up carries none and folds nothing; another merchant starts from zero.
    assert "merchant_features" not in stage.send(cmds.capture(cmds.create("order-1")["payment_id"], "cap-1")).command
    assert stage.send(cmds.create("order-1", merchant="m_globex")).command["merchant_features"]["cnt_1h"] == 0


def test_a_redelivered_create_gets_the_same_counts_and_folds_nothing_twice(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    stage.send(cmds.create("order-1"))
    create = cmds.create("order-2")
    first = stage.send(create).command["merchant_features"]
    state = stage.table[merchant_state_key(5, "m_acme")]
    again = stage.send(create)
    assert again.command["merchant_features"] == first and stage.table[merchant_state_key(5, "m_acme")] == state
    assert attached_key(5, create["command_id"]) in stage.table
    # The dedup record goes with the retention; the merchant's state stays.
    stage.send(cmds.create("order-3", at=cmds.t0 + RETENTION))
    assert attached_key(5, create["command_id"]) not in stage.table and merchant_state_key(5, "m_acme") in stage.table


def test_no_merchant_features_without_the_risk_stage_or_for_a_refused_create(cmds) -> None:
    assert "merchant_features" not in KeyStage().send(cmds.create("order-1")).command
    stage = KeyStage(route_retention=ROUTE)
    refused = stage.send(cmds.create("order-1") | {"rejection_reason": "invalid_amount"})
    assert "merchant_features" not in refused.command and merchant_state_key(5, "m_acme") not in stage.table


def test_an_unreadable_merchant_state_attaches_none_and_starts_afresh(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    stage.table[merchant_state_key(5, "m_acme")] = b"\x01\x02garbage"
    effects = stage.send(cmds.create("order-1"))
    assert effects.merchant_state_unreadable and effects.command["merchant_features"] is None
    assert MerchantState.from_bytes(stage.table[merchant_state_key(5, "m_acme")]).windows.counts[0] == 1


# One step of a merchant's history: a create, a label, a garbled stored state, or a
# create whose writes are lost (its transaction aborted), at minutes past T0.
_STEPS = st.lists(
    st.tuples(st.sampled_from(["create", "label", "garble", "lost"]), st.integers(0, 45 * 24 * 60), st.booleans()),
    max_size=25,
)


@given(_STEPS)
@settings(max_examples=60, deadline=None)
def test_a_kept_merchant_state_is_the_one_its_bytes_parse_to(steps: list[tuple[str, int, bool]]) -> None:
    """The same history with every state kept beside its bytes, and with each state
    parsed from the table afresh: the same commands and the same writes."""
    cmds = Commands()

    def run(forget_kept: bool) -> list[Any]:
        stage = KeyStage(route_retention=ROUTE)
        out: list[Any] = []
        for i, (kind, minutes, flag) in enumerate(steps):
            if forget_kept:
                _merchant_states.clear()
            at = cmds.t0 + timedelta(minutes=minutes)
            if kind == "garble":
                stage.table[merchant_state_key(5, "m_acme")] = b"\x01\x02garbage"
            elif kind == "label":
                effects = handle_label(merchant_label(f"lab-{i}", at, fraud=flag), 5, 0, stage.table.get, RETENTION)
                out.append(effects.writes)
                stage.table.update((k, v) for k, v in effects.writes if v is not None)
            else:
                create = cmds.create(f"order-{i}", at=at)
                effects = handle(create, 5, 0, stage.table.get, RETENTION, route_retention=ROUTE)
                out.append((effects.command, effects.writes))
                if kind == "create":
                    stage.table.update((k, v) for k, v in effects.writes if v is not None)
        return out

    assert run(forget_kept=False) == run(forget_kept=True)


def merchant_label(label_id: str, at: datetime, *, merchant: str = "m_acme", fraud: bool = True) -> dict[str, Any]:
    return {
        "label_id": label_id,
        "payment_id": "pay_x",
        "card_token": "tok_x",
        "merchant_id": merchant,
        "fraud": fraud,
        "source": "chargeback",
        "tx_occurred_at": at - timedelta(days=3),
        "occurred_at": at,
        "amount_minor": None,
        "currency": None,
        "reason_code": None,
    }


def test_a_label_counts_from_its_reveal_time_once(cmds) -> None:
    stage = KeyStage(route_retention=ROUTE)
    stage.send(cmds.create("order-1"))
    revealed = cmds.t0 + timedelta(days=2)

    def apply(label: dict[str, Any]) -> LabelEffects:
        effects = handle_label(label, 5, int(label["occurred_at"].timestamp() * 1000), stage.table.get, RETENTION)
        for k, v in effects.writes:
            stage.table.pop(k, None) if v is None else stage.table.__setitem__(k, v)
        return effects

    assert apply(merchant_label("lab-1", revealed)).applied
    assert apply(merchant_label("lab-2", revealed, fraud=False)).applied
    again = apply(merchant_label("lab-1", revealed))
    assert again.skipped and again.writes == []
    counts = stage.send(cmds.create("order-2", at=revealed + timedelta(hours=1))).command["merchant_features"]
    assert (counts["labeled_7d"], counts["fraud_7d"], counts["labeled_30d"], counts["fraud_30d"]) == (2, 1, 2, 1)
    # A merchant with no transaction here gets no state from a label (as offline).
    unknown = apply(merchant_label("lab-3", revealed, merchant="m_new"))
    assert not unknown.applied and merchant_state_key(5, "m_new") not in stage.table
    # Label dedup records are swept by the retention, like the claims.
    later = apply(merchant_label("lab-4", revealed + RETENTION))
    assert label_key(5, "lab-1").decode() in {t.ref for t in later.fired} and label_key(5, "lab-1") not in stage.table


def test_labels_travel_by_merchant() -> None:
    at = datetime(2026, 11, 25, tzinfo=UTC)
    assert label_routing_key(merchant_label("lab-1", at)) == b"m_acme"
    assert label_routing_key(merchant_label("lab-1", at, merchant="")) is None
