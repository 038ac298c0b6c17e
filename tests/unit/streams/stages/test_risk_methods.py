"""Every method through the keys and risk stages (dict tables): a wallet, bank debit,
BNPL and crypto create is routed by its own instrument key, its follow-ups behind it,
scored by its method's velocity rules and blocklists (not by the card model), and a
review of one names its instrument and its method's features."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from models.blocklist import BlockEntry
from models.features import CardState, to_ms
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from streams.stages import idempotency as ks
from streams.stages import risk as rs
from tests.unit.streams.stages.test_risk_stage import Table

T0 = datetime(2026, 11, 2, 9, tzinfo=UTC)
RETENTION = timedelta(hours=24)
ADDRESS = "0xabcdef0000000000000000000000000000000001"
DIGEST = "cd" * 32
INSTRUMENTS = {
    "wallet": (
        {"wallet": {"provider": "google_pay", "token": "wtok_0a1b2c3d4e5f6a7b", "cryptogram_verified": False}},
        {},
        "wallet:google_pay:wtok_0a1b2c3d4e5f6a7b",
        ("wallet", "wtok_0a1b2c3d4e5f6a7b"),
    ),
    "bank_transfer": (
        {"bank_account": {"scheme": "ach", "mandate_id": "MD-7", "account_last4": "6789"}},
        {"bank_account_digest": DIGEST},
        f"bank:{DIGEST}",
        ("bank_account", DIGEST),
    ),
    "bnpl": (
        {"bnpl_provider": "later"},
        {"bnpl_customer": "cust_9"},
        "bnpl:later:cust_9",
        ("bnpl_customer", "later:cust_9"),
    ),
    "crypto": (
        {"crypto": {"asset": "USDC", "refund_address": ADDRESS}},
        {},
        f"crypto:{ADDRESS}",
        ("crypto_address", ADDRESS),
    ),
}
# (prior creates in the window that trip it, how far apart, the rule): each method's first review rule.
VELOCITY = {
    "wallet": (4, timedelta(seconds=5), "velocity_wallet_1m"),
    "bank_transfer": (4, timedelta(minutes=5), "velocity_account_1h"),
    "bnpl": (4, timedelta(hours=1), "velocity_customer_1d"),
    "crypto": (4, timedelta(minutes=5), "velocity_address_1h"),
}


@pytest.fixture(scope="module")
def scorer() -> Scorer:
    return Scorer.load(SHIPPED_ARTIFACT)


def create(method: str, n: int, *, at: datetime = T0, amount: int = 2_500, merchant: str = "m_1") -> dict[str, Any]:
    fields, metadata, _, _ = INSTRUMENTS[method]
    key = f"order-{method}-{n}"
    return {
        "command_id": f"cmd-{merchant}-{key}",
        "kind": "create",
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": derive_payment_id(merchant, key),
        "amount_minor": amount,
        "currency": "USD",
        "capture_method": "automatic",
        "card": None,
        "metadata": dict(metadata),
        "dispute": None,
        "occurred_at": at,
        "rejection_reason": None,
        "rejection_detail": None,
        "three_ds": None,
        "merchant_features": None,
        "splits": None,
        "platform_fee_minor": None,
        "method": method,
        "wallet": None,
        "bank_account": None,
        "bnpl_provider": None,
        "return_code": None,
        "crypto": None,
        "merchant_initiated": False,
    } | fields


def score(table: Table, cmd: dict[str, Any], scorer: Scorer) -> rs.RiskEffects:
    effects = rs.handle(cmd, 0, to_ms(cmd["occurred_at"]), table.get, scorer, RETENTION)
    table.apply(effects.writes)
    return effects


@pytest.mark.parametrize("method", sorted(INSTRUMENTS))
def test_the_keys_stage_routes_each_method_by_its_instrument_and_its_follow_ups_behind(method) -> None:
    table = Table()

    def send(cmd):
        effects = ks.handle(
            cmd, 3, to_ms(cmd["occurred_at"]), table.get, RETENTION, route_retention=timedelta(days=180)
        )
        table.apply(effects.writes)
        return effects

    first = send(create(method, 1))
    key = INSTRUMENTS[method][2].encode()
    assert first.route == key and first.command["merchant_features"] is not None
    refund = create(method, 1) | {"kind": "refund", "command_id": "cmd-refund", "idempotency_key": "ref-1"}
    assert send(refund).route == key


@pytest.mark.parametrize("method", sorted(INSTRUMENTS))
def test_each_method_is_scored_by_the_methods_model_not_the_card_model(method, scorer) -> None:
    table = Table()
    effects = score(table, create(method, 1), scorer)
    out = effects.command
    assert out["fraud_action"] == "approve" and out["fraud_score_ppm"] is not None
    assert out["fraud_model"] == scorer.methods_model.version != scorer.model.version
    assert out["fraud_fallback"] is False and not effects.fallback
    assert Codec("ValidatedCommand").decode(Codec("ValidatedCommand").encode(out, check=True)) == out
    # The instrument's velocity state lives under its own key.
    assert CardState.from_bytes(table[rs.card_key(0, INSTRUMENTS[method][2])]).n == 1


@pytest.mark.parametrize("method", sorted(INSTRUMENTS))
def test_velocity_on_the_instrument_sends_it_to_review(method, scorer) -> None:
    table = Table()
    prior, gap, rule = VELOCITY[method]
    for i in range(prior):
        assert score(table, create(method, i, at=T0 + gap * i), scorer).decision.action == "approve"
    effects = score(table, create(method, prior, at=T0 + gap * prior), scorer)
    assert effects.decision.action == "review" and effects.decision.reasons == (rule,)
    review = effects.review
    assert review is not None and review["card_token"] == INSTRUMENTS[method][2] and review["card_bin"] == ""
    assert review["card_last4"] == ("6789" if method == "bank_transfer" else "")
    # The review shows the method's own features, by their names.
    assert not any(name.startswith("card_") for name in review["features"]) and "amount_major" in review["features"]
    codec = Codec("FraudReview")
    assert codec.decode(codec.encode(review, check=True))["reasons"] == [rule]


@pytest.mark.parametrize("method", sorted(INSTRUMENTS))
def test_a_blocked_instrument_is_declined(method, scorer) -> None:
    kind, value = INSTRUMENTS[method][3]
    s = Scorer(scorer.model, scorer.policy)
    s.blocklist.apply(BlockEntry.make(kind, value, "block", "ato", T0 - timedelta(days=1)))
    effects = score(Table(), create(method, 1), s)
    assert effects.decision.action == "decline" and effects.decision.reasons == (f"blocklist_{kind}",)
    assert effects.command["fraud_action"] == "decline"


def test_a_mandate_is_blocked_per_merchant_and_without_a_digest_keys_the_debit(scorer) -> None:
    s = Scorer(scorer.model, scorer.policy)
    s.blocklist.apply(BlockEntry.make("mandate", "m_1:MD-7", "block", "disputed mandate", T0 - timedelta(days=1)))
    plain = create("bank_transfer", 1) | {"metadata": {}}
    assert rs.tx_of(plain)["card_token"] == "mandate:m_1:MD-7"
    assert score(Table(), plain, s).decision.reasons == ("blocklist_mandate",)
    other = create("bank_transfer", 2, merchant="m_2") | {"metadata": {}}
    assert score(Table(), other, s).decision.action == "approve"


def test_the_shipped_sanctioned_address_declines_a_crypto_payment(scorer) -> None:
    from models.blocklist import shipped_entries

    listed = shipped_entries()[0].value
    cmd = create("crypto", 1) | {"crypto": {"asset": "USDC", "refund_address": listed.upper().replace("0X", "0x")}}
    assert score(Table(), cmd, scorer).decision.reasons == ("blocklist_crypto_address",)


def test_a_card_and_a_wallet_keep_separate_histories(scorer) -> None:
    table = Table()
    for i in range(4):
        score(table, create("wallet", i, at=T0 + timedelta(seconds=i)), scorer)
    assert rs.card_key(0, INSTRUMENTS["wallet"][2]) in table
    assert not any(k.startswith(b"0/c/tok_") for k in table)
