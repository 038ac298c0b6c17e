"""The demo's marketplace: its registry records, the share of creates it splits (each
one ingest forwards and the registry admits), and the counts of its summary line."""

from __future__ import annotations

from datetime import UTC, datetime

from connectors.vault.tokenizer import Tokenizer
from schemas.codec import Codec
from schemas.partitioning import partition_for
from streams.demo.market import MARKET, SELLERS, SPLIT_SHARE, market_records, market_split, split_counts
from streams.demo.run import generate
from streams.domain.merchants import admit
from streams.stages.ingest import Forward, Limits, Source, command_key, ingest

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
COMMANDS = Codec("PaymentCommand")
LIMITS = Limits(max_amount_minor=10**15, idempotency_key_max_len=255, partitions=8)


def test_the_platform_lists_its_three_verified_sellers() -> None:
    records = {r["merchant_id"]: r for r in market_records(START)}
    assert records[MARKET]["connected"] == sorted(SELLERS)
    assert all(records[s]["platform_id"] == MARKET and records[s]["kyc_status"] == "verified" for s in SELLERS)
    for r in records.values():
        Codec("MerchantRecord").encode(r, check=True)


def test_split_creates_add_up_pass_ingest_and_the_registry() -> None:
    platform = next(r for r in market_records(START) if r["merchant_id"] == MARKET)
    creates = [
        c
        for c in generate(1_000, 7, "run1", START).items
        if isinstance(c, dict) and c["kind"] == "create" and c.get("splits")
    ]
    assert 0.5 * SPLIT_SHARE * 1_000 < len(creates) < 1.5 * SPLIT_SHARE * 1_000
    for create in creates:
        assert create["merchant_id"] == MARKET
        assert sum(s["amount_minor"] for s in create["splits"]) + create["platform_fee_minor"] == create["amount_minor"]
        key = command_key(create)
        source = Source("payment-commands", partition_for(key, LIMITS.partitions), 0, 0, key)
        result = ingest(COMMANDS.encode(create, check=True), source, Tokenizer(b"k" * 32, "t1"), LIMITS)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result
        assert result.command["splits"] == create["splits"]
        assert admit(result.command, platform) is None


def test_market_split_is_seeded_per_payment() -> None:
    splits = [market_split(7, i, 10_001) for i in range(200)]
    assert splits == [market_split(7, i, 10_001) for i in range(200)]
    assert all(s is None or s["platform_fee_minor"] >= 1_000 for s in splits)


def test_split_counts_count_payments_with_a_split_capture_and_the_accounts_credited() -> None:
    events = {
        "p1": [
            {"type": "authorized"},
            {
                "type": "captured",
                "merchant_id": MARKET,
                "platform_fee_minor": 10,
                "splits": [{"merchant_id": "m_seller_a", "amount_minor": 90}],
            },
        ],
        "p2": [{"type": "captured", "merchant_id": "m_acme"}],
    }
    assert split_counts(events) == (1, 2)
