"""The fraud operator records and folds: blocklist entries through the wire and back,
labels once per verdict, the review queue and its resolution reaching the saga."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from models.blocklist import BlocklistError, email_digest
from schemas.codec import Codec
from streams.client import fraud as ops
from streams.domain.payments import Policy, decide
from streams.settings import Settings
from tests.unit.streams.conftest import ScriptedProvider, saga_of

T0 = datetime(2026, 11, 25, 10, tzinfo=UTC)
BLOCK = Codec("FraudBlockEntry")


def wire(record):
    return BLOCK.decode(BLOCK.encode(record, check=True))


def test_block_unblock_fold_latest_by_event_time_wins() -> None:
    key, rec = ops.block_record("card", "tok_a", "block", "stolen", T0, actor="ops-1")
    assert key == b"card:tok_a"
    _, lift = ops.block_record("card", "tok_a", "unblock", "cleared", T0 + timedelta(hours=1))
    _, ip = ops.block_record("ip", " 2001:db8::0:1 ", "block", "botnet", T0)
    _, email = ops.block_record("email", "Fraud@Example.com ", "block", "reports", T0)
    assert email["value"] == email_digest("fraud@example.com") and ip["value"] == "2001:db8::1"
    # the unblock arrives first (offset order is not event order): the older block must not win
    blocklist, bad = ops.fold_blocklist([wire(lift), wire(rec), wire(ip), None, wire(email)])
    assert bad == 0
    assert [e.key for e in blocklist.entries()] == [f"email:{email['value']}", "ip:2001:db8::1"]
    assert blocklist.hits({"email": "fraud@example.com", "card_token": "tok_a"}, T0 + timedelta(hours=2)) == (
        "blocklist_email",
    )


def test_refused_and_garbled_entries() -> None:
    with pytest.raises(BlocklistError, match="card number"):
        ops.block_record("card", "4242424242424242", "block", "x", T0)
    with pytest.raises(BlocklistError, match="BIN"):
        ops.block_record("bin", "12", "block", "x", T0)
    _, ok = ops.block_record("bin", "400000", "block", "prepaid", T0)
    blocklist, bad = ops.fold_blocklist([ok | {"kind": "shoe"}, {"kind": "card"}, ok])
    assert bad == 2 and len(blocklist) == 1


def test_label_record_is_one_label_per_verdict_and_encodes() -> None:
    key, rec = ops.label_record(
        "pay_1",
        "tok_a",
        "m_1",
        fraud=True,
        source="chargeback",
        tx_occurred_at=T0,
        at=T0 + timedelta(days=30),
        reason_code="10.4",
    )
    _, same = ops.label_record(
        "pay_1", "tok_a", "m_1", fraud=True, source="chargeback", tx_occurred_at=T0, at=T0 + timedelta(days=31)
    )
    _, genuine = ops.label_record(
        "pay_1", "tok_a", "m_1", fraud=False, source="matured", tx_occurred_at=T0, at=T0 + timedelta(days=31)
    )
    assert key == b"tok_a" and rec["label_id"] == same["label_id"] != genuine["label_id"]
    codec = Codec("FraudLabel")
    assert codec.decode(codec.encode(rec, check=True)) == rec
    with pytest.raises(ValueError, match="before its transaction"):
        ops.label_record(
            "pay_1", "tok_a", "m_1", fraud=True, source="chargeback", tx_occurred_at=T0, at=T0 - timedelta(seconds=1)
        )
    with pytest.raises(ValueError, match="source"):
        ops.label_record("pay_1", "tok_a", "m_1", fraud=True, source="gut", tx_occurred_at=T0, at=T0)


def review(pid: str, at: datetime, rid: str = "r") -> dict:
    return {"payment_id": pid, "review_id": f"{rid}-{pid}", "merchant_id": "m_acme", "occurred_at": at}


def test_open_reviews_latest_per_payment_minus_resolved() -> None:
    reviews = [
        review("p2", T0 + timedelta(minutes=1)),
        review("p1", T0),
        review("p2", T0 + timedelta(minutes=2), "s"),
        review("p3", T0),
    ]
    assert [(r["payment_id"], r["review_id"]) for r in ops.open_reviews(reviews, ["p3"])] == [
        ("p1", "r-p1"),
        ("p2", "s-p2"),
    ]


def test_the_resolve_command_continues_the_paused_payment(cmds) -> None:
    provider = ScriptedProvider()
    create = cmds.create() | {"fraud_action": "review", "fraud_reasons": ["score_review"]}
    paused = decide(None, create, saga_of(provider), Policy()).payment
    key, approve = ops.resolve_command(review(paused.payment_id, T0), "approve", T0 + timedelta(hours=1), "ops-1")
    assert key == paused.payment_id.encode()
    codec = Codec("ValidatedCommand")
    approve = codec.decode(codec.encode(approve, check=True))
    d = decide(paused, approve, saga_of(provider), Policy())
    assert d.payment.status == "captured" and provider.calls("authorize") == 1
    # resolving the same review the other way is a conflict, not a second decision
    _, decline = ops.resolve_command(review(paused.payment_id, T0), "decline", T0 + timedelta(hours=2), "ops-2")
    again = decide(d.payment, decline, saga_of(provider), Policy())
    assert again.outcome["reason_code"] == "idempotency_conflict" and not again.changed
    with pytest.raises(ValueError, match="approve or decline"):
        ops.resolve_command(review("p", T0), "maybe", T0, "ops")


def test_fraud_topics_follow_the_namespace() -> None:
    assert ops.fraud_topic(Settings(namespace=""), ops.REVIEW) == "fraud-review"
    assert ops.fraud_topic(Settings(namespace="t1"), ops.BLOCKLIST) == "t1.fraud-blocklist"
