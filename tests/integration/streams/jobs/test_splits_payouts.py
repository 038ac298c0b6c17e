"""A marketplace day end to end against the real broker: split payments captured
(one partially) and refunded, each seller's pending balance credited its pro rata
share in one entry; `paystream settle` pays every account; `paystream payouts run`
sends the payouts, the bank pays two and fails the closed account's, which is
reversed onto its available balance exactly; a re-run posts nothing; the audit passes."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest

from connectors.clickhouse.client import connect
from connectors.kafka import admin
from connectors.kafka.clients import command_producer
from schemas.codec import Codec
from schemas.ids import derive_entry_id, derive_event_id, derive_payout_id, derive_reversal_id, derive_settlement_id
from streams.client.books import book_records, live_balances, public_keys
from streams.client.observe import Observer
from streams.domain.audit import audit
from streams.domain.merchants import connect as connect_account
from streams.domain.merchants import merchant_record
from streams.settings import client_config
from streams.topics import declared_topics, topic_names
from tests.integration.streams.jobs.test_settle_reconcile import cli
from tests.integration.support import T0, WAIT_S, Pipeline, create, follow_up, make_settings, run, start_worker

pytestmark = pytest.mark.integration

DAY = T0.date()
SUFFIX = uuid.uuid4().hex[:6]
MARKET, SELLER_A, SELLER_B = f"m_mkt_{SUFFIX}", f"m_sa_{SUFFIX}", f"m_sb_{SUFFIX}"


@pytest.fixture(scope="module")
def market(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    tmp = tmp_path_factory.mktemp("splits")
    settings = make_settings(tmp, "splits").model_copy(update={"clickhouse_database": "it_splits"})
    admin.ensure_topics(settings.kafka_bootstrap, declared_topics(settings))
    # Registered before the worker starts: the keys stage knows the platform's sellers from the first create.
    at = T0 - timedelta(days=1)
    platform = merchant_record(MARKET, kyc_status="verified", updated_at=at)
    producer, codec = command_producer(client_config(settings)), Codec("MerchantRecord")
    for seller in (SELLER_A, SELLER_B):
        platform, account = connect_account(platform, merchant_record(seller, kyc_status="verified", updated_at=at), at)
        producer.produce(topic_names(settings).merchants, key=seller.encode(), value=codec.encode(account, check=True))
    producer.produce(topic_names(settings).merchants, key=MARKET.encode(), value=codec.encode(platform, check=True))
    assert producer.flush(30) == 0
    worker = start_worker(settings)
    yield Pipeline(settings, worker)
    assert worker.stop() == 0, worker.log_tail()


def split_create(key: str, parts: list[tuple[str, int]], fee: int) -> dict:
    splits = [{"merchant_id": m, "amount_minor": a} for m, a in parts]
    return create(MARKET, key, amount=sum(a for _, a in parts) + fee, splits=splits, platform_fee_minor=fee)


def applied(s, entry_ids: set[str]) -> None:  # type: ignore[no-untyped-def]
    """Wait until these entries are on the ledger and the ledger agent applied everything
    (a fresh observer's books_applied holds before its first poll: wait for the ids too)."""
    with Observer(s, from_beginning=True) as books:
        assert books.wait_until(lambda: entry_ids <= books.entry_ids and books.books_applied(), WAIT_S)


def owed(balances: dict, merchant: str, kind: str = "pending") -> int:
    return -balances.get((f"merchant:{merchant}:{kind}", "USD"), 0)


def test_split_payments_settle_per_account_and_a_failed_payout_is_reversed(
    market: Pipeline, monkeypatch: pytest.MonkeyPatch
) -> None:
    s = market.settings
    p1 = split_create("p1", [(SELLER_A, 6_000), (SELLER_B, 3_000)], 1_000)
    p2 = split_create("p2", [(SELLER_A, 500), (SELLER_B, 400)], 99)
    p3 = split_create("p3", [(SELLER_A, 1_000)], 0)
    stranger = split_create("p4", [(f"m_stranger_{SUFFIX}", 1_000)], 0)
    seen = run(market, [p1, p2, p3, stranger])
    assert [seen.outcomes[c["command_id"]][0]["status"] for c in (p1, p2, p3)] == ["succeeded"] * 3
    assert seen.outcomes[stranger["command_id"]][0]["reason_code"] == "split_account_not_connected"
    follow_ups = [
        follow_up("capture", MARKET, p1["payment_id"], "c1"),
        follow_up("capture", MARKET, p2["payment_id"], "c2", 500),
        follow_up("capture", MARKET, p3["payment_id"], "c3"),
    ]
    refund = follow_up("refund", MARKET, p1["payment_id"], "r1", 2_500)
    for cmds in (follow_ups, [refund]):
        seen = run(
            market,
            cmds,
            settled=lambda o: (
                any(e["type"] == "refunded" for e in o.events.get(p1["payment_id"], ())) if cmds == [refund] else True
            ),
        )
        assert [seen.outcomes[c["command_id"]][0]["status"] for c in cmds] == ["succeeded"] * len(cmds), [
            seen.outcomes[c["command_id"]][0]["reason_code"] for c in cmds
        ]
    refunded = next(e for e in seen.events[p1["payment_id"]] if e["type"] == "refunded")
    applied(s, {derive_entry_id(refunded["event_id"])})

    balances = live_balances(s)
    # p1 6000/3000/1000; p2's 500 of 500/400/99 is 250/200/50 (the unit left to the largest remainder,
    # the platform's .55); p3 1000 to A; p1's refund of 2500 takes 1500/750/250.
    assert (owed(balances, SELLER_A), owed(balances, SELLER_B)) == (6_000 + 250 + 1_000 - 1_500, 3_000 + 200 - 750)
    platform_owed = owed(balances, MARKET)

    code, out = cli(monkeypatch, s, "clickhouse", "migrate")
    assert code == 0, out
    code, out = cli(monkeypatch, s, "settle", "--date", DAY.isoformat())
    assert code == 0 and "3 new entr(ies) posted" in out, out
    answers_by = (DAY + timedelta(days=4)).isoformat()  # sent the next day; the bank answers within 3 days
    args = ("payouts", "run", "--date", answers_by, "--fail-per-mille", "0", "--closed-account", SELLER_B)
    code, out = cli(monkeypatch, s, *args)
    assert code == 0 and "0 in transit, 2 paid, 1 failed and reversed; 6 new entr(ies) posted" in out, out
    code, out = cli(monkeypatch, s, *args)
    assert code == 0 and "0 new entr(ies) posted" in out, out

    payout = {
        m: derive_payout_id(derive_settlement_id(m, "USD", DAY.isoformat())) for m in (MARKET, SELLER_A, SELLER_B)
    }
    applied(
        s,
        {derive_entry_id(derive_event_id(payout[m], "payout_paid")) for m in (MARKET, SELLER_A)}
        | {derive_reversal_id(derive_entry_id(derive_event_id(payout[SELLER_B], "payout_sent")), "bank_failed")},
    )
    balances = live_balances(s)
    assert owed(balances, SELLER_A, "available") == 0  # paid out
    assert owed(balances, SELLER_B, "available") == 3_000 + 200 - 750  # the bank returned it: back, exactly
    assert owed(balances, MARKET, "available") == 0 and platform_owed > 0
    in_transit = sum(v for (a, _), v in balances.items() if a.startswith("house:payouts_in_transit:"))
    bank = sum(v for (a, _), v in balances.items() if a.startswith("house:bank:"))
    assert (in_transit, -bank) == (0, 6_000 + 250 + 1_000 - 1_500 + platform_owed)
    report = audit(
        book_records(s), public_keys(s), events_topic=topic_names(s).events, entries_topic=topic_names(s).ledger
    )
    assert report.ok, report.first_failure

    client = connect(s.clickhouse_url, s.clickhouse_database)
    try:  # chDB is one engine per process: left open, it breaks every later test
        rows = client.query(
            "SELECT merchant_id, status, failure_reason FROM payouts FINAL ORDER BY merchant_id"
        ).result_rows
    finally:
        client.close()
    assert sorted(rows) == sorted(
        [(MARKET, "paid", ""), (SELLER_A, "paid", ""), (SELLER_B, "failed", "account_closed")]
    )
