"""Payer screening in the keys stage (streams/domain/screening.py): a hit holds the create for
review with the match shown, a clear miss passes unchanged, the risk stage never lifts
a hold, and the payments stage parks a held create of any method before any provider call."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from streams.domain.payments import Policy, decide
from streams.domain.sanctions import load_list
from streams.domain.screening import is_held, keep_hold, screen_create
from streams.stages import idempotency as ks
from streams.stages import risk as rs
from tests.unit.streams.conftest import ScriptedProvider, saga_of
from tests.unit.streams.stages.test_risk_stage import Table, create

LIST = load_list()
REVIEW = Codec("FraudReview")
VALIDATED = Codec("ValidatedCommand")
RETENTION = timedelta(hours=24)
FRAUD_FIELDS = {
    "fraud_action": None,
    "fraud_score_ppm": None,
    "fraud_reasons": [],
    "fraud_model": None,
    "fraud_fallback": False,
}


def bank_create(n: int, **meta: str) -> dict[str, Any]:
    cmd = create(n, metadata=meta) | FRAUD_FIELDS
    return cmd | {
        "card": None,
        "method": "bank_transfer",
        "bank_account": {"scheme": "ach", "mandate_id": "md_1", "account_last4": "6789"},
    }


def keys_send(cmd: dict[str, Any], table: Table, route: timedelta | None = timedelta(days=180)) -> ks.KeyEffects:
    effects = ks.handle(
        cmd, 3, int(cmd["occurred_at"].timestamp() * 1000), table.get, RETENTION, route_retention=route, sanctions=LIST
    )
    table.apply(effects.writes)
    return effects


def test_a_payer_on_the_list_holds_the_create_with_the_match_shown() -> None:
    cmd = bank_create(1, payer_name="QUINONERO BASTIDAS, Jose Ramon")
    effects = keys_send(cmd, Table())
    out, review = effects.command, effects.review
    assert out["fraud_action"] == "review" and out["fraud_reasons"] == ["sanctions_hit:PS-0002:100"]
    assert is_held(out)
    VALIDATED.encode(out, check=True)
    assert review is not None and review["payment_id"] == cmd["payment_id"] and review["card_token"] == ""
    assert review["sanctions"] | {"programs": None} == {
        "uid": "PS-0002",
        "entry_name": "José Ramón Quiñonero Bastidas",
        "matched_name": "José Ramón Quiñonero Bastidas",
        "score": 100,
        "threshold": 88,
        "programs": None,
        "screened_field": "payer_name",
        "screened_name": "QUINONERO BASTIDAS, Jose Ramon",
        "list_version": LIST.version,
    }
    assert REVIEW.decode(REVIEW.encode(review, check=True)) == review


def test_a_clear_miss_and_an_unnamed_payer_pass_unchanged() -> None:
    for cmd in (bank_create(2, payer_name="Maria Garcia"), bank_create(3)):
        effects = keys_send(cmd, Table())
        # Unchanged but for the merchant's counts: a bank debit goes on to the risk stage too.
        assert effects.command == cmd | {"merchant_features": effects.command["merchant_features"]}
        assert effects.review is None and effects.route == b"mandate:m_1:md_1"


def test_a_held_bank_create_is_scored_by_the_risk_stage_which_keeps_the_hold() -> None:
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    keys = keys_send(bank_create(11, payer_name="Crimson Lattice"), Table())
    assert keys.route == b"mandate:m_1:md_1" and keys.review is not None
    held = keys.command
    effects = rs.handle(held, 3, int(held["occurred_at"].timestamp() * 1000), Table().get, scorer, RETENTION)
    assert effects.command["fraud_action"] == "review" and effects.review is None
    # scored by the methods model, not the card model
    assert effects.decision is not None and effects.decision.model_version == scorer.methods_model.version


def test_the_cardholder_name_is_screened_too() -> None:
    cmd = create(4, metadata={"cardholder_name": "IWAN DRAKONOW"}) | FRAUD_FIELDS
    effects = keys_send(cmd, Table())
    assert effects.review["sanctions"]["screened_field"] == "cardholder_name"
    assert effects.route == b"tok_a"  # still scored by the risk stage, which keeps the hold


def test_a_refused_or_conflicting_create_is_not_screened() -> None:
    table = Table()
    keys_send(bank_create(5), table)
    conflict = bank_create(6, payer_name="Ivan Drakonov") | {"idempotency_key": "order-5"}
    effects = keys_send(conflict, table)
    assert effects.command["rejection_reason"] == "idempotency_conflict" and effects.review is None
    refused = bank_create(7, payer_name="Ivan Drakonov") | {"rejection_reason": "invalid_amount"}
    assert keys_send(refused, Table()).review is None


def test_a_follow_up_is_not_screened() -> None:
    follow = bank_create(8, payer_name="Ivan Drakonov") | {"kind": "refund"}
    assert screen_create(follow, LIST) == (follow, None)


@pytest.mark.parametrize("action", ["approve", "decline", "review", "requires_action"])
def test_the_fraud_decision_never_lifts_a_hold(action: str) -> None:
    held = {"fraud_action": "review", "fraud_reasons": ["sanctions_hit:PS-0001:97"]}
    assert keep_hold(held, action, ["amount_high"]) == ("review", ["sanctions_hit:PS-0001:97", "amount_high"])
    assert keep_hold({"fraud_action": None, "fraud_reasons": []}, action, ["x"]) == (action, ["x"])


def test_the_risk_stage_keeps_the_hold_and_sends_no_second_review() -> None:
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    held = keys_send(create(9, metadata={"payer_name": "Nordhaven Shipping"}) | FRAUD_FIELDS, Table()).command
    effects = rs.handle(held, 3, int(held["occurred_at"].timestamp() * 1000), Table().get, scorer, RETENTION)
    assert effects.command["fraud_action"] == "review" and effects.review is None
    assert effects.command["fraud_reasons"][0] == "sanctions_hit:PS-0003:100"
    assert effects.decision is not None  # scored all the same: the states learn from it


def test_the_payments_stage_parks_a_held_bank_create_before_any_provider_call() -> None:
    held = keys_send(bank_create(10, payer_name="Crimson Lattice"), Table()).command
    provider = ScriptedProvider()
    d = decide(None, held, saga_of(provider), Policy())
    assert d.payment.status == "requires_review" and provider.calls("authorize") == 0
