from __future__ import annotations

from datetime import UTC, datetime

from connectors.clickhouse.rows import COLUMNS
from streams.api.readmodel import ClickHousePayments, fresher


def _row(version: int, status: str, captured: int) -> dict:
    return {
        "payment_id": "pay_1",
        "merchant_id": "m_acme",
        "currency": "USD",
        "status": status,
        "authorized_minor": 1999,
        "captured_minor": captured,
        "refunded_minor": 0,
        "version": version,
        "last_event_id": f"evt_{version}",
        "last_event_type": status,
        "reason_code": None,
        "provider": "p",
        "card_token": "tok",
        "card_bin": "424242",
        "card_last4": "4242",
        "updated_at": datetime(2026, 11, 25, tzinfo=UTC),
    }


def test_the_latest_version_of_a_payment_and_none_for_an_unknown_one(ch) -> None:  # type: ignore[no-untyped-def]
    rows = [_row(1, "authorized", 0), _row(2, "captured", 1999)]
    ch.insert("payments", [list(r.values()) for r in rows], column_names=list(rows[0]))
    reader = ClickHousePayments(ch)
    assert reader.get("pay_1") == {
        "payment_id": "pay_1",
        "merchant_id": "m_acme",
        "payment_status": "captured",
        "currency": "USD",
        "authorized_minor": 1999,
        "captured_minor": 1999,
        "refunded_minor": 0,
        "card_bin": "424242",
        "card_last4": "4242",
    }
    assert reader.get("pay_2") is None


def test_the_list_is_one_merchants_payments_by_id_after_the_cursor(ch) -> None:  # type: ignore[no-untyped-def]
    rows = [
        _row(1, "authorized", 0) | {"payment_id": f"pay_{i}", "merchant_id": m}
        for i, m in enumerate(["m_acme", "m_other", "m_acme", "m_acme", "m_other"])
    ]
    rows.append(rows[2] | {"version": 2, "status": "captured", "captured_minor": 1999})  # a later version of pay_2
    ch.insert("payments", [list(r.values()) for r in rows], column_names=list(rows[0]))
    reader = ClickHousePayments(ch)
    assert [r["payment_id"] for r in reader.list("m_acme", 10)] == ["pay_0", "pay_2", "pay_3"]
    page = reader.list("m_acme", 2, starting_after="pay_0")
    assert [(r["payment_id"], r["payment_status"]) for r in page] == [("pay_2", "captured"), ("pay_3", "authorized")]
    assert reader.list("m_nobody", 10) == []
    # Stripe's ending_before: the page just before the cursor, nearest first.
    assert [r["payment_id"] for r in reader.list("m_acme", 1, ending_before="pay_3")] == ["pay_2"]
    assert [r["payment_id"] for r in reader.list("m_acme", 5, ending_before="pay_3")] == ["pay_2", "pay_0"]


def test_the_fresher_view_of_a_payment() -> None:
    def v(status: str, captured: int = 0, refunded: int = 0) -> dict:
        return {"payment_status": status, "captured_minor": captured, "refunded_minor": refunded}

    assert fresher(None, None) is None
    assert fresher(v("authorized"), None) == v("authorized") and fresher(None, v("voided")) == v("voided")
    assert fresher(v("authorized"), v("partially_captured", 400)) == v("partially_captured", 400)
    assert fresher(v("captured", 1000), v("partially_captured", 400)) == v("captured", 1000)  # another writer's capture
    assert fresher(v("authorized"), v("voided")) == v("voided")
    assert fresher(v("partially_refunded", 1000, 300), v("captured", 1000)) == v("partially_refunded", 1000, 300)
    assert fresher(v("captured", 1000), v("captured", 1000)) is not None


def test_a_merchants_balances_are_its_liability_accounts_credits_less_debits(ch) -> None:  # type: ignore[no-untyped-def]
    at = datetime(2026, 11, 25, tzinfo=UTC)

    def line(entry: str, n: int, account: str, currency: str, debit: int, credit: int) -> list:
        return [
            entry,
            n,
            f"evt_{entry}",
            "captured",
            "pay_1",
            "m_acme",
            0,
            account,
            currency,
            debit,
            credit,
            None,
            None,
            at,
        ]

    rows = [
        line("je_1", 0, "house:clearing:0", "USD", 1000, 0),
        line("je_1", 1, "merchant:m_acme:pending", "USD", 0, 1000),
        line("je_1", 1, "merchant:m_acme:pending", "USD", 0, 1000),  # a redelivered line: FINAL keeps one
        line("je_2", 0, "merchant:m_acme:pending", "USD", 30, 0),
        line("je_2", 1, "house:fees:0", "USD", 0, 30),
        line("je_3", 0, "merchant:m_acme:pending", "EUR", 500, 0),
        line("je_3", 1, "merchant:m_acme:available", "EUR", 0, 500),
        line("je_4", 0, "house:holds:0", "USD", 0, 70),
        line("je_4", 1, "merchant:m_acme:holds", "USD", 70, 0),
        line("je_5", 0, "house:clearing:0", "USD", 9, 0),
        line("je_5", 1, "merchant:m_other:pending", "USD", 0, 9),
    ]
    ch.insert("ledger_entries", rows, column_names=COLUMNS["ledger_entries"])
    got = ClickHousePayments(ch).balance("m_acme")
    assert [(r["account"], r["currency"], r["amount"]) for r in got] == [
        ("merchant:m_acme:available", "EUR", 500),
        ("merchant:m_acme:pending", "EUR", -500),
        ("merchant:m_acme:pending", "USD", 970),
    ]
    assert ClickHousePayments(ch).balance("m_nobody") == []


def _event(
    event_id: str,
    type_: str,
    payment: str,
    version: int,
    merchant: str = "m_acme",
    amount: int = 500,
    reason: str | None = "fraudulent",
) -> list:
    at = datetime(2026, 11, 25, 10, version, tzinfo=UTC)
    return [
        event_id,
        type_,
        payment,
        merchant,
        f"cmd_{event_id}",
        "USD",
        amount,
        0,
        "captured",
        1000,
        1000,
        0,
        version,
        None,
        None,
        reason,
        None,
        "424242",
        "4242",
        version,
        at,
    ]


# The columns `_event` fills, in order: those up to occurred_at (later ones keep their defaults).
EVENT_COLUMNS = COLUMNS["payment_events"][: COLUMNS["payment_events"].index("occurred_at") + 1]


def test_disputes_pair_each_opening_with_the_close_after_it(ch) -> None:  # type: ignore[no-untyped-def]
    rows = [
        _event("evt_1", "captured", "pay_a", 1),
        _event("evt_2", "dispute_opened", "pay_a", 2),
        _event("evt_3", "dispute_lost", "pay_a", 3),
        _event("evt_4", "dispute_opened", "pay_a", 4, amount=200),
        _event("evt_5", "dispute_opened", "pay_b", 2, reason="duplicate"),
        _event("evt_6", "dispute_won", "pay_c", 3),
        _event("evt_0", "dispute_opened", "pay_c", 2),
        _event("evt_9", "dispute_opened", "pay_x", 2, merchant="m_other"),
    ]
    ch.insert("payment_events", rows, column_names=EVENT_COLUMNS)
    reader = ClickHousePayments(ch)
    got = reader.disputes("m_acme", 10)
    assert [(d["event_id"], d["payment_id"], d["amount_minor"], d["closed_as"]) for d in got] == [
        ("evt_0", "pay_c", 500, "dispute_won"),
        ("evt_2", "pay_a", 500, "dispute_lost"),
        ("evt_4", "pay_a", 200, ""),
        ("evt_5", "pay_b", 500, ""),
    ]
    assert [d["event_id"] for d in reader.disputes("m_acme", 2, starting_after="evt_0")] == ["evt_2", "evt_4"]
    assert [d["event_id"] for d in reader.disputes("m_acme", 2, ending_before="evt_4")] == ["evt_2", "evt_0"]
    one = reader.dispute("m_acme", "evt_2")
    assert one is not None and one["reason_code"] == "fraudulent" and one["closed_as"] == "dispute_lost"
    assert reader.dispute("m_acme", "evt_9") is None and reader.dispute("m_acme", "evt_3") is None

    # Evidence the pipeline accepted counts for the dispute open at its time (pay_a's second
    # opening, at version 4's minute), not for the closed one before; a refused one not at all.
    def evidence(oid: str, minute: int, status: str = "succeeded") -> list:
        at = datetime(2026, 11, 25, 10, minute, 30, tzinfo=UTC)
        return [oid, oid, "dispute_evidence", "m_acme", oid, "pay_a", status, at, "receipt: r1"]

    ch.insert(
        "payment_outcomes",
        [evidence("o1", 4), evidence("o2", 5), evidence("o3", 5, "rejected")],
        column_names=[
            "outcome_id",
            "command_id",
            "kind",
            "merchant_id",
            "idempotency_key",
            "payment_id",
            "status",
            "occurred_at",
            "dispute_evidence",
        ],
    )
    assert {d["event_id"]: d["submissions"] for d in reader.disputes("m_acme", 10)} == {
        "evt_0": 0,
        "evt_2": 0,
        "evt_4": 2,
        "evt_5": 0,
    }
    assert reader.dispute("m_acme", "evt_4")["submissions"] == 2


def test_payouts_latest_status_by_id(ch) -> None:  # type: ignore[no-untyped-def]
    from datetime import date

    sent = datetime(2026, 11, 26, 1, tzinfo=UTC)

    def payout(pid: str, merchant: str, status: str, version: int) -> list:
        answered = None if status == "sent" else datetime(2026, 11, 27, tzinfo=UTC)
        return [
            pid,
            f"st_{pid}",
            merchant,
            "USD",
            900,
            date(2026, 11, 25),
            status,
            sent,
            answered,
            "account_closed" if status == "failed" else "",
            version,
        ]

    rows = [
        payout("po_1", "m_acme", "sent", 1),
        payout("po_1", "m_acme", "paid", 2),
        payout("po_2", "m_acme", "sent", 1),
        payout("po_3", "m_acme", "failed", 2),
        payout("po_0", "m_other", "sent", 1),
    ]
    ch.insert(
        "payouts",
        rows,
        column_names=COLUMNS["payouts"],
    )
    reader = ClickHousePayments(ch)
    assert [(p["payout_id"], p["status"]) for p in reader.payouts("m_acme", 10)] == [
        ("po_1", "paid"),
        ("po_2", "sent"),
        ("po_3", "failed"),
    ]
    assert [p["payout_id"] for p in reader.payouts("m_acme", 1, starting_after="po_1")] == ["po_2"]
    assert [p["payout_id"] for p in reader.payouts("m_acme", 5, ending_before="po_3")] == ["po_2", "po_1"]
    one = reader.payout("m_acme", "po_3")
    assert one is not None and one["failure_reason"] == "account_closed"
    assert reader.payout("m_acme", "po_0") is None


def test_a_platforms_transfers_and_application_fees_are_its_split_captures_lines(ch) -> None:  # type: ignore[no-untyped-def]
    """The ledger's own posting of split captures (streams/domain/ledger.py), read back:
    one transfer per connected account's credit, one fee per capture, the platform's only."""
    from streams.domain.ledger import post

    at = datetime(2026, 11, 25, tzinfo=UTC)

    def captured(pid: str, merchant: str, amount: int, splits: list | None, fee: int | None, n: int) -> dict:
        return {
            "event_id": "evt_" + f"{n:x}" * 32,
            "type": "captured",
            "payment_id": pid,
            "merchant_id": merchant,
            "currency": "USD",
            "amount_minor": amount,
            "fee_minor": 30,
            "payment_status": "captured",
            "authorized_minor": amount,
            "captured_minor": amount,
            "refunded_minor": 0,
            "version": 2,
            "occurred_at": at,
            "splits": splits,
            "platform_fee_minor": fee,
        }

    events = [
        captured("pay_a", "m_market", 1000, [{"merchant_id": "acct_1", "amount_minor": 900}], 100, 1),
        captured(
            "pay_b",
            "m_market",
            500,
            [{"merchant_id": "acct_1", "amount_minor": 200}, {"merchant_id": "acct_2", "amount_minor": 250}],
            50,
            2,
        ),
        captured("pay_c", "m_market", 700, None, None, 3),  # not split: no transfer, no fee
        captured("pay_d", "m_other", 400, [{"merchant_id": "acct_9", "amount_minor": 400}], 0, 4),
    ]
    rows = []
    for e in events:
        entry = post(e | {"occurred_at_ms": int(at.timestamp() * 1000)}, shard=0)
        assert entry is not None
        rows += [
            [
                entry.entry_id,
                no,
                e["event_id"],
                "captured",
                e["payment_id"],
                e["merchant_id"],
                0,
                line.account,
                line.currency,
                line.debit_minor,
                line.credit_minor,
                None,
                None,
                at,
            ]
            for no, line in enumerate(entry.lines)
        ]
    ch.insert(
        "ledger_entries",
        rows,
        column_names=COLUMNS["ledger_entries"],
    )
    reader = ClickHousePayments(ch)
    transfers = reader.transfers("m_market", 10)
    assert sorted((t["payment_id"], t["account"], t["amount_minor"]) for t in transfers) == [
        ("pay_a", "merchant:acct_1:pending", 900),
        ("pay_b", "merchant:acct_1:pending", 200),
        ("pay_b", "merchant:acct_2:pending", 250),
    ]
    assert [t["id"] for t in transfers] == sorted(t["id"] for t in transfers)
    assert all(t["id"].startswith("tr_") and len(t["id"]) == 3 + 32 + 2 for t in transfers)
    assert [t["id"] for t in reader.transfers("m_market", 1, starting_after=transfers[0]["id"])] == [transfers[1]["id"]]
    assert [t["id"] for t in reader.transfers("m_market", 5, ending_before=transfers[2]["id"])] == [
        transfers[1]["id"],
        transfers[0]["id"],
    ]
    assert reader.transfers("m_market", 1, transfer_id=transfers[1]["id"]) == [transfers[1]]
    assert reader.transfers("m_other", 1, transfer_id=transfers[1]["id"]) == []  # another platform's is none
    fees = reader.application_fees("m_market", 10)
    assert sorted((f["payment_id"], f["destination"], f["amount_minor"]) for f in fees) == [
        ("pay_a", "merchant:acct_1:pending", 100),
        ("pay_b", "merchant:acct_1:pending", 50),
    ]
    assert reader.application_fees("m_other", 10) == []  # a zero fee is no fee
    assert reader.application_fees("m_market", 1, fee_id=fees[0]["id"]) == [fees[0]]
    assert reader.application_fees("m_other", 1, fee_id=fees[0]["id"]) == []
