"""The saga's fraud hook reads the decision the risk stage attached: approve proceeds,
decline declines, review waits in requires_review for review_resolve, requires_action
waits for confirm (3DS); a paused payment never reaches a provider before that, and
the expiry timer declines it if nothing comes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.times import to_ms
from streams.payments import Payment, Policy, decide, expire_due
from tests.unit.streams.conftest import ScriptedProvider, saga_of

POLICY = Policy()
OUTCOMES = Codec("PaymentOutcome")
VALIDATED = Codec("ValidatedCommand")


def scored(cmd: dict[str, Any], action: str | None, *reasons: str) -> dict[str, Any]:
    return cmd | {"fraud_action": action, "fraud_score_ppm": None, "fraud_reasons": list(reasons),
                  "fraud_model": None, "fraud_fallback": False}


def resolve(cmds, pid: str, key: str, decision: str | None, **kw: Any) -> dict[str, Any]:
    return scored(cmds.follow_up("review_resolve", pid, key, **kw), decision)


def apply(payment: Payment | None, cmd: dict[str, Any], provider: ScriptedProvider):
    VALIDATED.encode(cmd, check=True)  # every command here is a valid wire record
    d = decide(payment, cmd, saga_of(provider), POLICY)
    OUTCOMES.encode(d.outcome, check=True)
    return d


def test_an_unscored_create_is_approved_as_before(cmds) -> None:
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(), None), provider)
    assert d.payment.status == "captured" and provider.calls("authorize") == 1


def test_approve_proceeds_and_decline_never_reaches_the_provider(cmds) -> None:
    provider = ScriptedProvider()
    assert apply(None, scored(cmds.create(), "approve"), provider).payment.status == "captured"
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(), "decline", "blocklist_card"), provider)
    assert (d.outcome["status"], d.outcome["reason_code"], d.payment.status) == ("rejected", "fraud_suspected", "declined")
    assert provider.journal == {}


def test_review_waits_then_approval_authorizes(cmds) -> None:
    provider = ScriptedProvider()
    create = scored(cmds.create(metadata={"payment_method": "card"}), "review", "amount_over_review_limit")
    d = apply(None, create, provider)
    p = d.payment
    assert (d.outcome["status"], p.status, p.fraud_action) == ("succeeded", "requires_review", "review")
    assert [(e["type"], e["reason_code"], e["amount_minor"]) for e in d.events] == [("authorization_pending", "fraud_review", 0)]
    assert provider.journal == {} and p.payment_method == "card"
    # Everything but the resolution waits.
    for cmd in (cmds.capture(p.payment_id, "cap-1"), cmds.void(p.payment_id, "void-1"),
                scored(cmds.follow_up("confirm", p.payment_id, "conf-1"), None)):
        r = apply(p, cmd, provider)
        assert (r.outcome["status"], r.outcome["reason_code"], r.changed) == ("rejected", "payment_requires_review", False)
    r = apply(p, resolve(cmds, p.payment_id, "rev-1", "approve"), provider)
    assert r.outcome["status"] == "succeeded" and r.payment.status == "captured"
    assert [e["type"] for e in r.events] == ["authorized", "captured"] and r.payment.payment_method is None
    assert provider.calls("authorize") == 1
    # A second resolution finds nothing to resolve; the same one again is a replay.
    assert apply(r.payment, resolve(cmds, p.payment_id, "rev-2", "decline"), provider).outcome["reason_code"] == "not_awaiting"
    assert apply(r.payment, resolve(cmds, p.payment_id, "rev-1", "approve"), provider).outcome["status"] == "replayed"
    conflict = apply(r.payment, resolve(cmds, p.payment_id, "rev-1", "decline"), provider)
    assert conflict.outcome["reason_code"] == "idempotency_conflict"


def test_review_declined_by_the_reviewer(cmds) -> None:
    provider = ScriptedProvider()
    p = apply(None, scored(cmds.create(), "review"), provider).payment
    bad = apply(p, resolve(cmds, p.payment_id, "rev-1", None), provider)
    assert (bad.outcome["reason_code"], bad.changed) == ("invalid_review_decision", False)
    r = apply(p, resolve(cmds, p.payment_id, "rev-1", "decline"), provider)
    assert r.payment.status == "declined" and [e["reason_code"] for e in r.events] == ["fraud_review_declined"]
    assert provider.journal == {}


def test_requires_action_is_completed_by_confirm(cmds) -> None:
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(capture_method="manual"), "requires_action", "score_requires_action"), provider)
    p = d.payment
    assert p.status == "requires_action" and d.events[0]["reason_code"] == "requires_action"
    wrong = apply(p, resolve(cmds, p.payment_id, "rev-1", "approve"), provider)
    assert wrong.outcome["reason_code"] == "payment_requires_action"
    r = apply(p, scored(cmds.follow_up("confirm", p.payment_id, "conf-1"), None), provider)
    assert r.payment.status == "authorized" and provider.calls("authorize") == 1
    assert [t.kind for t in r.timers] == ["expire"]


@pytest.mark.parametrize("action,status,reason", [("review", "requires_review", "fraud_review_timeout"),
                                                  ("requires_action", "requires_action", "requires_action_timeout")])
def test_a_paused_payment_nobody_continues_is_declined_at_expiry(cmds, action, status, reason) -> None:
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(), action), provider)
    (timer,) = d.timers
    assert timer.due_ms == to_ms(cmds.t0) + POLICY.auth_window_ms and d.payment.status == status
    e = expire_due(d.payment, timer, saga_of(provider), POLICY)
    assert e.payment.status == "declined" and [ev["reason_code"] for ev in e.events] == [reason]
    assert provider.journal == {}


# --- property: whatever arrives, a paused payment is authorized at most once, and only after its resolution ---

follow_ups = st.lists(st.tuples(st.sampled_from(["review_resolve", "confirm", "capture", "void", "refund"]),
                                st.sampled_from([None, "approve", "decline"]),
                                st.integers(0, 3)),  # idempotency key: repeats happen
                      max_size=12)


@settings(max_examples=200, deadline=None)
@given(action=st.sampled_from(["approve", "review", "requires_action", "decline", None]), steps=follow_ups)
def test_paused_payments_reach_the_provider_only_after_their_resolution(cmds, action, steps) -> None:
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(), action), provider)
    p = d.payment
    resolved = p.status not in ("requires_review", "requires_action")
    for i, (kind, decision, key) in enumerate(steps):
        cmd = scored(cmds.follow_up(kind, p.payment_id, f"{kind}-{key}", at=cmds.t0 + timedelta(seconds=i)), decision)
        before = p
        r = apply(p, cmd, provider)
        if not r.changed:
            assert r.payment is before
            continue
        p = r.payment
        if before.status in ("requires_review", "requires_action"):
            expected = "review_resolve" if before.status == "requires_review" else "confirm"
            assert kind == expected
            resolved = True
        if provider.calls("authorize"):
            assert resolved, "a paused payment reached the provider"
    assert provider.calls("authorize") <= 1
    if action in ("review", "requires_action") and not resolved:
        assert provider.journal == {} and p.status in ("requires_review", "requires_action")
    if action == "decline":
        assert provider.journal == {} and p.status == "declined"
