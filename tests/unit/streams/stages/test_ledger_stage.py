"""The ledger's two hops over plain dicts: post in the merchant's shard, apply once."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from streams.domain.ledger import (
    add_into,
    balance_key,
    decode_balance,
    entry_to_record,
    parse_balance_key,
    shard_for,
    totals_by_currency,
)
from streams.stages.ledger import APPLIED, BALANCES, applied_key, apply_entry, post_event
from tests.unit.streams.ledger_support import T0, event, histories

SHARDS = 8
RETENTION = timedelta(hours=24)
ENTRY = Codec("LedgerEntry")


class Shard:
    """One ledger partition's two tables, applying writes like the emitter."""

    def __init__(self, partition: int) -> None:
        self.partition = partition
        self.tables: dict[str, dict[bytes, bytes]] = {BALANCES: {}, APPLIED: {}}

    def apply(self, record: dict[str, Any]) -> Any:
        # The record goes through Avro as on the topic.
        record = ENTRY.decode(ENTRY.encode(record))
        ts_ms = int(record["occurred_at"].timestamp() * 1000)
        result = apply_entry(
            record, self.partition, ts_ms, self.tables[BALANCES].get, self.tables[APPLIED].get, RETENTION
        )
        for table, key, value in result.writes:
            if value is None:
                self.tables[table].pop(key, None)
            else:
                self.tables[table][key] = value
        return result

    def balances(self) -> dict[tuple[str, str], int]:
        return {parse_balance_key(k): decode_balance(v) for k, v in self.tables[BALANCES].items()}


def test_an_event_is_posted_in_its_merchants_shard() -> None:
    posting = post_event(event("authorized", amount=1000, merchant="m_globex"), SHARDS)
    assert posting.refused is None and posting.entry is not None
    assert posting.entry.shard == shard_for("m_globex", SHARDS)
    assert {line.account for line in posting.entry.lines} == {
        "merchant:m_globex:holds",
        f"house:holds:{posting.entry.shard}",
    }


def test_an_event_that_moves_no_money_posts_nothing_and_a_bad_one_is_refused() -> None:
    assert post_event(event("declined"), SHARDS) == post_event(event("authorization_pending"), SHARDS)
    assert post_event(event("declined"), SHARDS).entry is None and post_event(event("declined"), SHARDS).refused is None
    refused = post_event(event("settled", amount=100), SHARDS).refused  # settlement terms come from the settle batch
    assert refused is not None and refused.reason
    assert (
        post_event({k: v for k, v in event("captured", amount=5).items() if k != "merchant_id"}, SHARDS).refused
        is not None
    )
    assert post_event(event("captured", amount=5, merchant=""), SHARDS).refused.reason == "invalid_merchant"


def test_an_entry_is_applied_once_and_its_dedup_record_is_swept_after_the_retention() -> None:
    entry = post_event(event("authorized", amount=1000), SHARDS).entry
    shard = Shard(entry.shard)
    first = shard.apply(entry_to_record(entry))
    assert not first.skipped and shard.balances() == {
        ("merchant:m_acme:holds", "USD"): -1000,
        (f"house:holds:{entry.shard}", "USD"): 1000,
    }
    again = shard.apply(entry_to_record(entry))
    assert again.skipped and not again.writes
    # A later entry past the retention sweeps the first one's dedup record.
    late = post_event(event("captured", amount=400, version=2, at=T0 + RETENTION), SHARDS).entry
    shard.apply(entry_to_record(late))
    assert applied_key(entry.shard, entry.entry_id) not in shard.tables[APPLIED]


def test_an_entry_read_from_another_partition_is_refused_untouched() -> None:
    entry = post_event(event("authorized", amount=1000), SHARDS).entry
    other = Shard((entry.shard + 1) % SHARDS)
    result = other.apply(entry_to_record(entry))
    assert result.wrong_shard and not result.writes and other.balances() == {}


def test_an_unbalanced_entry_record_is_refused() -> None:
    record = entry_to_record(post_event(event("authorized", amount=1000), SHARDS).entry)
    record["lines"][0]["debit_minor"] += 1
    shard = Shard(record["shard"])
    result = shard.apply(record)
    assert result.refused is not None and not result.writes


@settings(max_examples=60, deadline=None)
@given(histories(), st.randoms(use_true_random=False))
def test_balances_equal_the_fold_of_unique_entries_and_sum_to_zero(history: list[dict[str, Any]], rnd: Any) -> None:
    shards = {p: Shard(p) for p in range(SHARDS)}
    expected: dict[tuple[str, str], int] = {}
    for e in history:
        posting = post_event(e, SHARDS)
        if e["type"] == "settled":
            assert posting.refused is not None
            continue
        assert posting.refused is None
        if posting.entry is None:
            continue
        add_into(expected, posting.entry)
        for _ in range(rnd.choice((1, 1, 2))):  # redeliveries apply nothing
            shards[posting.entry.shard].apply(entry_to_record(posting.entry))
    live: dict[tuple[str, str], int] = {}
    for shard in shards.values():
        for key, amount in shard.balances().items():
            assert key not in live, "an account lives in one shard"
            live[key] = amount
    assert live == expected
    assert all(total == 0 for total in totals_by_currency(live).values())
    # Each balance key round-trips through the table's encoding.
    assert all(parse_balance_key(balance_key(*k)) == k for k in live)
