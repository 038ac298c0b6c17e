"""The lifecycles of wallet, bank-transfer and BNPL payments in `decide` (streams/domain/methods.py)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.providers.router import _method
from connectors.providers.simulated import ProviderResult
from schemas.codec import Codec
from streams.domain.payments import FraudVerdict, Payment, Policy, _as_create, decide
from tests.unit.streams.conftest import Commands, ScriptedProvider, saga_of
from tests.unit.streams.domain.test_payments import ok, refused

EVENTS = Codec("PaymentEvent")
MANDATE = {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"}
DAY = timedelta(days=1)
_FEE = ProviderResult("approved", fee_minor=105)  # what the bank rail charges per submission


def create(cmds: Commands, method: str, key: str = "order-1", **kw: Any) -> dict[str, Any]:
    """A create of `method` as ingest forwards it (no card for the non-card methods)."""
    instrument = {
        "wallet": {"wallet": {"provider": "apple_pay", "token": "wtok_0a1b2c3d4e5f6a7b"}},
        "bank_transfer": {"bank_account": MANDATE},
        "bnpl": {"bnpl_provider": "later"},
    }[method]
    return cmds.create(key, **kw) | {"card": None, "method": method} | instrument


def bank_notice(
    cmds: Commands, kind: str, pid: str, key: str, *, at_days: int, code: str | None = None
) -> dict[str, Any]:
    return cmds.follow_up(kind, pid, key, at=cmds.t0 + at_days * DAY) | {"return_code": code}


def events_of(payment: Payment | None, cmd: dict[str, Any], **kw: Any) -> tuple[Payment, list[dict[str, Any]]]:
    d = decide(payment, cmd, kw.pop("saga", None) or saga_of(ScriptedProvider(capture_result=_FEE)), Policy())
    assert d.outcome["status"] == "succeeded", d.outcome
    for e in d.events:
        EVENTS.encode(e, check=True)
    return d.payment, list(d.events)


def submitted(cmds: Commands) -> tuple[Payment, list[dict[str, Any]]]:
    return events_of(None, create(cmds, "bank_transfer"))


def test_a_bank_transfer_is_submitted_at_once_without_a_hold(cmds: Commands) -> None:
    p, events = submitted(cmds)
    assert [e["type"] for e in events] == ["bank_submitted"]
    assert (p.status, p.authorized_minor, p.captured_minor, p.method) == ("submitted", 10_000, 10_000, "bank_transfer")
    assert events[0]["fee_minor"] == 105 and events[0]["method"] == "bank_transfer"
    assert p.instrument == "ach:MD-1:****6789" and p.card_token is None


def test_a_bank_transfer_settles_then_refunds(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    refused(p, cmds.refund(p.payment_id, "r1"), "not_settled")
    refused(p, cmds.void(p.payment_id, "v1"), "already_submitted")
    p, events = events_of(p, bank_notice(cmds, "bank_settle", p.payment_id, "n1", at_days=2))
    assert [(e["type"], e["amount_minor"], e["fee_minor"]) for e in events] == [("bank_settled", 10_000, 0)]
    assert p.status == "settled"
    refused(p, bank_notice(cmds, "bank_settle", p.payment_id, "n2", at_days=3), "already_settled")
    p = ok(p, cmds.refund(p.payment_id, "r2", amount=4_000))
    assert (p.status, p.refunded_minor) == ("partially_refunded", 4_000)


def test_a_return_before_settlement_unwinds_the_submission(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    p, events = events_of(p, bank_notice(cmds, "bank_return", p.payment_id, "n1", at_days=1, code="R01"))
    assert [(e["type"], e["amount_minor"], e["reason_code"]) for e in events] == [("bank_returned", 10_000, "R01")]
    assert (p.status, p.returned_minor, p.return_code) == ("returned", 10_000, "R01")
    refused(p, bank_notice(cmds, "bank_settle", p.payment_id, "n2", at_days=2), "already_returned")
    refused(p, cmds.refund(p.payment_id, "r1"), "already_returned")


def test_a_return_after_settlement_takes_back_what_was_not_refunded(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    p, _ = events_of(p, bank_notice(cmds, "bank_settle", p.payment_id, "n1", at_days=2))
    p = ok(p, cmds.refund(p.payment_id, "r1", amount=3_000))
    p, events = events_of(p, bank_notice(cmds, "bank_return", p.payment_id, "n2", at_days=4, code="R10"))
    assert [(e["type"], e["amount_minor"]) for e in events] == [("bank_reversed", 7_000)]
    assert (p.status, p.returned_minor, p.disputable_minor) == ("returned", 7_000, 0)
    refused(p, bank_notice(cmds, "bank_return", p.payment_id, "n3", at_days=5, code="R10"), "already_returned")


def test_a_fully_refunded_transfer_has_nothing_to_return(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    p, _ = events_of(p, bank_notice(cmds, "bank_settle", p.payment_id, "n1", at_days=2))
    p = ok(p, cmds.refund(p.payment_id, "r1"))
    refused(p, bank_notice(cmds, "bank_return", p.payment_id, "n2", at_days=4, code="R01"), "not_returnable")


def test_bank_transfers_are_not_disputed_and_cards_get_no_bank_notices(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    p, _ = events_of(p, bank_notice(cmds, "bank_settle", p.payment_id, "n1", at_days=2))
    refused(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="fraudulent"), "not_disputable")
    card = ok(None, cmds.create("order-2"))
    refused(card, bank_notice(cmds, "bank_settle", card.payment_id, "n1", at_days=2), "not_bank_transfer")
    refused(card, bank_notice(cmds, "bank_return", card.payment_id, "n2", at_days=2, code="R01"), "not_bank_transfer")


def test_a_bank_notice_is_idempotent_by_its_key(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    notice = bank_notice(cmds, "bank_return", p.payment_id, "n1", at_days=1, code="R01")
    p, _ = events_of(p, notice)
    d = decide(p, notice, saga_of(), Policy())
    assert (d.outcome["status"], d.changed, d.events) == ("replayed", False, ())


def test_a_declined_mandate_submits_nothing(cmds: Commands) -> None:
    provider = ScriptedProvider(authorize_result=ProviderResult("declined", "invalid_mandate"))
    d = decide(None, create(cmds, "bank_transfer"), saga_of(provider), Policy())
    assert d.payment.status == "declined" and provider.calls("capture") == 0


@pytest.mark.parametrize("method", ["wallet", "bank_transfer", "bnpl"])
def test_no_3ds_step_up_outside_cards(cmds: Commands, method: str) -> None:
    step_up = saga_of(fraud=lambda cmd: FraudVerdict("requires_action", ("score_requires_action",)))
    p = ok(None, create(cmds, method), saga=step_up)
    assert p.status == ("submitted" if method == "bank_transfer" else "captured")
    card = ok(None, cmds.create("order-2"), saga=step_up)
    assert card.status == "requires_action"


def test_a_wallet_payment_is_a_card_payment_without_a_card(cmds: Commands) -> None:
    p = ok(None, create(cmds, "wallet", capture_method="manual"))
    assert (p.status, p.card_bin, p.instrument) == ("authorized", None, "apple_pay")
    p = ok(p, cmds.capture(p.payment_id, "c1", amount=6_000))
    p = ok(p, cmds.refund(p.payment_id, "r1", amount=1_000))
    p = ok(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="fraudulent"))
    assert p.dispute_minor == 5_000


def test_bnpl_pays_upfront_and_refunds_through_the_provider_without_disputes(cmds: Commands) -> None:
    provider = ScriptedProvider(capture_result=ProviderResult("approved", fee_minor=629))
    p, events = events_of(None, create(cmds, "bnpl"), saga=saga_of(provider))
    assert [(e["type"], e["fee_minor"], e["method"]) for e in events] == [
        ("authorized", 0, "bnpl"),
        ("captured", 629, "bnpl"),
    ]
    p = ok(p, cmds.refund(p.payment_id, "r1"), saga=saga_of(provider))
    assert p.status == "refunded" and provider.calls("refund") == 1
    refused(p, cmds.dispute("dispute_open", p.payment_id, "d1", reason="fraudulent"), "not_disputable")


def test_a_payment_round_trips_with_its_method(cmds: Commands) -> None:
    p, _ = submitted(cmds)
    p, _ = events_of(p, bank_notice(cmds, "bank_return", p.payment_id, "n1", at_days=1, code="R01"))
    assert Payment.from_json(p.to_json()) == p


def test_a_paused_payment_resumes_with_its_method(cmds: Commands) -> None:
    review = saga_of(fraud=lambda cmd: FraudVerdict("review"))
    p = ok(None, create(cmds, "bnpl"), saga=review)
    assert p.status == "requires_review"
    assert _method(_as_create(p)) == "bnpl"
    # One paused before payments had a method (stored without it) routes by its metadata, as it would have.
    old = replace(p, method="card", instrument=None, payment_method="wallet")
    assert _method(_as_create(old)) == "wallet"
    resolved = ok(p, cmds.follow_up("review_resolve", p.payment_id, "rv1") | {"fraud_action": "approve"})
    assert resolved.status == "captured" and resolved.method == "bnpl"


# --- a wallet's verified cryptogram shifts the liability, as a verified 3DS CAVV does ---


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    verified=st.booleans(),
    manual=st.booleans(),
    fraud=st.sampled_from(["approve", "requires_action", "review"]),
    follow_ups=st.lists(st.sampled_from(["capture", "refund", "void"]), max_size=4),
)
def test_a_verified_wallet_cryptogram_shifts_liability_on_every_event(
    cmds: Commands, verified: bool, manual: bool, fraud: str, follow_ups: list[str]
) -> None:
    """Whatever the fraud decision (a wallet takes no 3DS step-up) and whatever follows,
    every event of a wallet payment says liability_shift True if ingest verified its
    cryptogram and null (no claim) if not; the shift never comes with a 3DS result."""
    cmd = create(cmds, "wallet", capture_method="manual" if manual else "automatic")
    cmd["wallet"] = cmd["wallet"] | {"cryptogram_verified": verified}
    saga = saga_of(fraud=lambda _c: FraudVerdict(fraud))
    d = decide(None, cmd, saga, Policy())
    p, events = d.payment, list(d.events)
    for i, kind in enumerate(follow_ups):
        assert p is not None
        d = decide(p, cmds.follow_up(kind, p.payment_id, f"f{i}", amount=None), saga, Policy())
        p, events = d.payment, events + list(d.events)
    assert p is not None and events
    want = True if verified else None
    assert p.liability_shift is want and p.three_ds_status is None
    assert {e["liability_shift"] for e in events} == {want} and {e["three_ds_status"] for e in events} == {None}
    for e in events:
        EVENTS.encode(e, check=True)


def test_a_card_claims_no_shift_from_a_wallet_flag(cmds: Commands) -> None:
    """Only a wallet's cryptogram shifts liability outside 3DS: a card create carrying a
    stray wallet record is a card as before (ingest never forwards one)."""
    d = decide(
        None,
        cmds.create("order-9") | {"wallet": {"provider": "apple_pay", "token": "t" * 16, "cryptogram_verified": True}},
        saga_of(),
        Policy(),
    )
    assert d.payment.method == "card" and d.payment.liability_shift is None
