"""The saga's fraud hook reads the decision the risk stage attached: approve proceeds,
decline declines, review waits in requires_review for review_resolve, requires_action
waits for confirm (3DS) and its result decides; a paused payment never reaches a
provider before that, and the expiry timer declines it if nothing comes."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.times import to_ms
from streams.domain.authentication import AuthenticationValue, issue_cavv
from streams.domain.payments import Payment, Policy, decide, expire_due, three_ds_verdict
from tests.unit.streams.conftest import ScriptedProvider
from tests.unit.streams.conftest import saga_of as plain_saga

POLICY = Policy()
OUTCOMES = Codec("PaymentOutcome")
VALIDATED = Codec("ValidatedCommand")


@dataclass(frozen=True)
class Issuer:
    """The simulated issuer's ACS signing key (a fake key store: one Ed25519 key)."""

    key_id: str = "acs-signing-v1"
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def sign(self, message: bytes) -> bytes:
        return self.key.sign(message)

    @property
    def public(self) -> dict[str, bytes]:
        return {self.key_id: self.key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)}

    def cavv(self, p: Payment, status: str = "Y", at_ms: int | None = None, **changes: Any) -> str:
        av = AuthenticationValue(
            self.key_id,
            p.payment_id,
            p.merchant_id,
            p.amount_minor,
            p.currency,
            status,
            "05",
            "5c1d1ad4-0e8c-4a5e-9d0c-3a7c1f2b9e10",
            at_ms or p.created_at_ms,
        )
        return issue_cavv(replace(av, **changes), self)


ISSUER = Issuer()
FORGER = Issuer()  # another key under the issuer's key id


def saga_of(provider: ScriptedProvider | None = None, **kw: Any):
    return replace(plain_saga(provider, **kw), acs_keys=ISSUER.public)


def scored(cmd: dict[str, Any], action: str | None, *reasons: str) -> dict[str, Any]:
    return cmd | {
        "fraud_action": action,
        "fraud_score_ppm": None,
        "fraud_reasons": list(reasons),
        "fraud_model": None,
        "fraud_fallback": False,
    }


def resolve(cmds, pid: str, key: str, decision: str | None, **kw: Any) -> dict[str, Any]:
    return scored(cmds.follow_up("review_resolve", pid, key, **kw), decision)


def confirm(cmds, pid: str, key: str, status: str | None, cavv: str | None = None, **kw: Any) -> dict[str, Any]:
    """A confirm carrying the 3DS result `status` (None: no result) and its signed value."""
    three_ds = (
        None
        if status is None
        else {"trans_status": status, "eci": "05", "ds_trans_id": None, "authentication_value": cavv}
    )
    return scored(cmds.follow_up("confirm", pid, key, **kw), None) | {"three_ds": three_ds}


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
    assert (d.outcome["status"], d.outcome["reason_code"], d.payment.status) == (
        "rejected",
        "fraud_suspected",
        "declined",
    )
    assert provider.journal == {}


def test_review_waits_then_approval_authorizes(cmds) -> None:
    provider = ScriptedProvider()
    create = scored(cmds.create(metadata={"payment_method": "card"}), "review", "amount_over_review_limit")
    d = apply(None, create, provider)
    p = d.payment
    assert (d.outcome["status"], p.status, p.fraud_action) == ("succeeded", "requires_review", "review")
    assert [(e["type"], e["reason_code"], e["amount_minor"]) for e in d.events] == [
        ("authorization_pending", "fraud_review", 0)
    ]
    assert provider.journal == {} and p.payment_method == "card"
    # Everything but the resolution waits.
    for cmd in (
        cmds.capture(p.payment_id, "cap-1"),
        cmds.void(p.payment_id, "void-1"),
        confirm(cmds, p.payment_id, "conf-1", "Y"),
    ):
        r = apply(p, cmd, provider)
        assert (r.outcome["status"], r.outcome["reason_code"], r.changed) == (
            "rejected",
            "payment_requires_review",
            False,
        )
    r = apply(p, resolve(cmds, p.payment_id, "rev-1", "approve"), provider)
    assert r.outcome["status"] == "succeeded" and r.payment.status == "captured"
    assert [e["type"] for e in r.events] == ["authorized", "captured"] and r.payment.payment_method is None
    assert provider.calls("authorize") == 1
    # A second resolution finds nothing to resolve; the same one again is a replay.
    assert (
        apply(r.payment, resolve(cmds, p.payment_id, "rev-2", "decline"), provider).outcome["reason_code"]
        == "not_awaiting"
    )
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
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", "Y", ISSUER.cavv(p)), provider)
    assert r.payment.status == "authorized" and provider.calls("authorize") == 1
    assert [t.kind for t in r.timers] == ["expire"]
    assert [(e["type"], e["three_ds_status"], e["liability_shift"]) for e in r.events] == [("authorized", "Y", True)]
    # The shift stays with the payment: its later events carry it too.
    c = apply(r.payment, cmds.capture(p.payment_id, "cap-1"), provider)
    assert [(e["type"], e["liability_shift"]) for e in c.events] == [("captured", True)]


def paused(cmds, provider: ScriptedProvider, **kw: Any) -> Payment:
    return apply(None, scored(cmds.create(**kw), "requires_action", "score_requires_action"), provider).payment


@pytest.mark.parametrize(
    "status,signed,shift",
    [("Y", True, True), ("A", True, True), ("Y", False, False), ("A", False, False), ("U", False, False)],
)
def test_authenticated_attempted_and_by_default_unavailable_authorize(
    cmds, status: str, signed: bool, shift: bool
) -> None:
    """Y and A shift liability with the ACS's verified value; reported without one
    (merchants before version 7) they authorize all the same, without a shift."""
    provider = ScriptedProvider()
    p = paused(cmds, provider)
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", status, ISSUER.cavv(p, status) if signed else None), provider)
    assert (r.outcome["status"], r.outcome["reason_code"], r.payment.status) == ("succeeded", None, "captured")
    assert (r.payment.three_ds_status, r.payment.liability_shift) == (status, shift)
    assert [(e["type"], e["three_ds_status"], e["liability_shift"]) for e in r.events] == [
        ("authorized", status, shift),
        ("captured", status, shift),
    ]
    assert provider.calls("authorize") == 1


@pytest.mark.parametrize("status", ["N", "R"])
def test_a_failed_authentication_declines_without_reaching_the_provider(cmds, status: str) -> None:
    provider = ScriptedProvider()
    p = paused(cmds, provider)
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", status), provider)
    assert (r.outcome["status"], r.outcome["reason_code"], r.outcome["payment_status"]) == (
        "rejected",
        "authentication_failed",
        "declined",
    )
    assert r.changed and [(e["type"], e["reason_code"], e["amount_minor"], e["liability_shift"]) for e in r.events] == [
        ("declined", "authentication_failed", 0, False)
    ]
    assert provider.journal == {}
    # The failure is the key's outcome: the same confirm again is a replay, another result a conflict.
    again = apply(r.payment, confirm(cmds, p.payment_id, "conf-1", status, command_id="retry"), provider)
    assert (again.outcome["status"], again.outcome["reason_code"]) == ("replayed", "authentication_failed")
    assert (
        apply(r.payment, confirm(cmds, p.payment_id, "conf-1", "Y"), provider).outcome["reason_code"]
        == "idempotency_conflict"
    )
    # A new confirm finds nothing to confirm.
    late = apply(r.payment, confirm(cmds, p.payment_id, "conf-2", "Y"), provider)
    assert (late.outcome["reason_code"], late.changed, provider.journal) == ("not_awaiting", False, {})


def test_unavailable_declines_when_the_policy_says_so(cmds) -> None:
    provider = ScriptedProvider()
    strict = Policy(three_ds_unavailable="decline")
    p = paused(cmds, provider)
    d = decide(p, confirm(cmds, p.payment_id, "conf-1", "U"), saga_of(provider), strict)
    assert (d.outcome["reason_code"], d.payment.status, d.payment.liability_shift) == (
        "authentication_unavailable",
        "declined",
        False,
    )
    assert provider.journal == {}
    with pytest.raises(AssertionError):
        Policy(three_ds_unavailable="review")


def test_a_confirm_without_a_result_is_refused_and_changes_nothing(cmds) -> None:
    provider = ScriptedProvider()
    p = paused(cmds, provider)
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", None), provider)
    assert (r.outcome["status"], r.outcome["reason_code"], r.changed, r.payment) == (
        "rejected",
        "missing_three_ds",
        False,
        p,
    )
    assert r.outcome["payment_status"] == "requires_action" and provider.journal == {}
    # Not stored under the key: the same key with a result goes through.
    assert apply(p, confirm(cmds, p.payment_id, "conf-1", "Y"), provider).payment.status == "captured"


@pytest.mark.parametrize(
    "cavv, reason",
    [
        (lambda p: FORGER.cavv(p), "cavv_invalid"),
        (lambda p: ISSUER.cavv(p).replace(".", ".x", 1), "cavv_malformed"),
        (lambda p: ISSUER.cavv(p, payment_id="pay_" + "0" * 32), "cavv_replayed"),
        (lambda p: ISSUER.cavv(p, amount_minor=p.amount_minor + 1), "cavv_amount_mismatch"),
        (lambda p: ISSUER.cavv(p, merchant_id="another"), "cavv_merchant_mismatch"),
        (lambda p: ISSUER.cavv(p, at_ms=p.created_at_ms - 2 * 3600_000), "cavv_expired"),
        (lambda p: ISSUER.cavv(p, "A"), "cavv_mismatch"),  # the confirm says Y
        (lambda p: Issuer("acs-signing-v9").cavv(p), "cavv_unknown_key"),
    ],
)
def test_a_bad_authentication_value_refuses_the_confirm_and_the_payment_still_awaits_one(cmds, cavv, reason) -> None:
    provider = ScriptedProvider()
    p = paused(cmds, provider)
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", "Y", cavv(p)), provider)
    assert (r.outcome["status"], r.outcome["reason_code"], r.changed, r.payment) == ("rejected", reason, False, p)
    assert r.outcome["payment_status"] == "requires_action" and provider.journal == {}
    # Not stored under the key: the cardholder authenticates again and the same key confirms.
    ok = apply(p, confirm(cmds, p.payment_id, "conf-1", "Y", ISSUER.cavv(p)), provider)
    assert (ok.payment.status, ok.payment.liability_shift) == ("captured", True)


def test_a_cavv_confirms_one_payment_only(cmds) -> None:
    """Replayed on a second payment of the same merchant, amount and card: refused."""
    provider = ScriptedProvider()
    first, second = paused(cmds, provider), paused(cmds, provider, key="order-2")
    cavv = ISSUER.cavv(first)
    assert apply(first, confirm(cmds, first.payment_id, "c-1", "Y", cavv), provider).payment.liability_shift is True
    r = apply(second, confirm(cmds, second.payment_id, "c-1", "Y", cavv), provider)
    assert (r.outcome["reason_code"], r.payment.status) == ("cavv_replayed", "requires_action")


def test_a_confirm_of_a_payment_not_awaiting_3ds_is_refused(cmds) -> None:
    provider = ScriptedProvider()
    p = apply(None, scored(cmds.create(), "approve"), provider).payment
    r = apply(p, confirm(cmds, p.payment_id, "conf-1", "Y"), provider)
    assert (r.outcome["reason_code"], r.changed, r.payment) == ("not_awaiting", False, p)
    assert "requires_action only" in r.outcome["reason_detail"]
    assert provider.calls("authorize") == 1  # the create's, nothing more


def test_three_ds_verdict() -> None:
    assert [three_ds_verdict(s, POLICY) for s in "YANRU"] == [
        None,
        None,
        "authentication_failed",
        "authentication_failed",
        None,
    ]
    assert three_ds_verdict("U", Policy(three_ds_unavailable="decline")) == "authentication_unavailable"
    with pytest.raises(AssertionError):
        three_ds_verdict("C", POLICY)


def test_a_payment_without_a_step_up_carries_no_3ds_fields(cmds) -> None:
    d = apply(None, scored(cmds.create(), "approve"), ScriptedProvider())
    assert all(e["three_ds_status"] is None and e["liability_shift"] is None for e in d.events)


@pytest.mark.parametrize(
    "action,status,reason",
    [
        ("review", "requires_review", "fraud_review_timeout"),
        ("requires_action", "requires_action", "requires_action_timeout"),
    ],
)
def test_a_paused_payment_nobody_continues_is_declined_at_expiry(cmds, action, status, reason) -> None:
    provider = ScriptedProvider()
    d = apply(None, scored(cmds.create(), action), provider)
    (timer,) = d.timers
    assert timer.due_ms == to_ms(cmds.t0) + POLICY.auth_window_ms and d.payment.status == status
    e = expire_due(d.payment, timer, saga_of(provider), POLICY)
    assert e.payment.status == "declined" and [ev["reason_code"] for ev in e.events] == [reason]
    assert provider.journal == {}


# --- property: whatever arrives, a paused payment is authorized at most once, and only after its resolution ---

follow_ups = st.lists(
    st.tuples(
        st.sampled_from(["review_resolve", "confirm", "confirm", "capture", "void", "refund"]),
        st.sampled_from([None, "approve", "decline"]),
        st.integers(0, 3),  # idempotency key: repeats happen
        st.sampled_from([None, "Y", "A", "N", "U", "R"]),  # a confirm's 3DS result
        st.sampled_from([None, "good", "forged", "other_amount"]),
    ),  # its signed value
    max_size=12,
)


@settings(max_examples=200, deadline=None)
@given(
    action=st.sampled_from(["approve", "review", "requires_action", "requires_action", "decline", None]),
    steps=follow_ups,
    unavailable=st.sampled_from(["authorize", "decline"]),
)
def test_paused_payments_reach_the_provider_only_after_their_resolution(cmds, action, steps, unavailable) -> None:
    provider = ScriptedProvider()
    policy = Policy(three_ds_unavailable=unavailable)
    d = apply(None, scored(cmds.create(), action), provider)
    p = d.payment
    resolved = p.status not in ("requires_review", "requires_action")
    for i, (kind, decision, key, status, signed) in enumerate(steps):
        cmd = scored(cmds.follow_up(kind, p.payment_id, f"{kind}-{key}", at=cmds.t0 + timedelta(seconds=i)), decision)
        if status not in ("Y", "A"):
            signed = None  # ingest refuses a value with any other result
        cavv = {
            None: None,
            "good": lambda: ISSUER.cavv(p, status),
            "forged": lambda: FORGER.cavv(p, status),
            "other_amount": lambda: ISSUER.cavv(p, status, amount_minor=p.amount_minor * 2),
        }[signed]
        if kind == "confirm":
            cmd = confirm(
                cmds, p.payment_id, f"{kind}-{key}", status, cavv and cavv(), at=cmds.t0 + timedelta(seconds=i)
            )
        before, authorized_before = p, provider.calls("authorize")
        VALIDATED.encode(cmd, check=True)
        r = decide(p, cmd, saga_of(provider), policy)
        OUTCOMES.encode(r.outcome, check=True)
        if not r.changed:
            assert r.payment is before
            if before.status == "requires_action" and kind == "confirm" and signed in ("forged", "other_amount"):
                # A bad value never authorizes, whatever else holds.
                assert (
                    r.outcome["status"] in ("rejected", "replayed") and provider.calls("authorize") == authorized_before
                )
            continue
        p = r.payment
        if before.status in ("requires_review", "requires_action"):
            expected = "review_resolve" if before.status == "requires_review" else "confirm"
            assert kind == expected
            resolved = True
        if before.status == "requires_action":
            # The 3DS result decides, and only it: a failed step-up never reaches a provider.
            assert status is not None and p.three_ds_status == status
            authorizes = status in ("Y", "A") or (status == "U" and unavailable == "authorize")
            assert provider.calls("authorize") == authorized_before + authorizes
            # Liability shifts exactly when a Y or A came with the issuer's good value.
            assert signed in (None, "good") and p.liability_shift == (signed == "good")
            if not authorizes:
                assert p.status == "declined" and r.outcome["status"] == "rejected"
        if provider.calls("authorize"):
            assert resolved, "a paused payment reached the provider"
    assert provider.calls("authorize") <= 1
    if action != "requires_action":
        assert p.three_ds_status is None and p.liability_shift is None
    if action in ("review", "requires_action") and not resolved:
        assert provider.journal == {} and p.status in ("requires_review", "requires_action")
    if action == "decline":
        assert provider.journal == {} and p.status == "declined"
