"""Record -> row mapping: shapes match the migrated tables, keys come from the
record, bad records are RowErrors with a reason, never crashes."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.clickhouse.rows import COLUMNS, KINDS, RowError, rows_for
from tests.unit.connectors.clickhouse.support import traffic

T = traffic(payments=60, seed=3)


def _event(etype: str) -> dict:
    return copy.deepcopy(next(e for e in T.events if e["type"] == etype))


def test_columns_match_the_migrated_tables(ch) -> None:
    for table, columns in COLUMNS.items():
        got = ch.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = {t:String} "
            "ORDER BY position",
            parameters={"t": table},
        ).result_rows
        assert tuple(r[0] for r in got) == columns, table


def test_payment_event_rows() -> None:
    e = _event("captured")
    rows = rows_for("payment_event", e)
    assert [r.table for r in rows] == ["payment_events", "payments"]
    ev = dict(zip(COLUMNS["payment_events"], rows[0].values))
    assert ev["event_id"] == e["event_id"] and ev["amount_minor"] == e["amount_minor"] and ev["fee_minor"] > 0
    pay = dict(zip(COLUMNS["payments"], rows[1].values))
    assert (
        pay["version"] == e["version"] and pay["status"] == e["payment_status"] and pay["last_event_type"] == "captured"
    )
    assert rows_for("payment_event", e) == rows  # same record, same rows: re-delivery lands on the same keys


@pytest.mark.parametrize(
    "etype, reason, action",
    [
        ("authorized", None, "approve"),
        ("declined", "fraud_suspected", "decline"),
        ("declined", "card_declined", "approve"),
    ],
)
def test_first_event_records_the_fraud_decision(etype: str, reason: str | None, action: str) -> None:
    e = _event(etype) | {"reason_code": reason, "version": 1}
    fraud = [r for r in rows_for("payment_event", e) if r.table == "fraud_decisions"]
    assert len(fraud) == 1 and dict(zip(COLUMNS["fraud_decisions"], fraud[0].values))["action"] == action
    later = e | {"version": 2}
    assert not [r for r in rows_for("payment_event", later) if r.table == "fraud_decisions"]


def test_dispute_events_feed_disputes() -> None:
    e = _event("dispute_opened")
    (d,) = [r for r in rows_for("payment_event", e) if r.table == "disputes"]
    assert dict(zip(COLUMNS["disputes"], d.values))["stage"] == "opened"


def test_ledger_entry_is_one_row_per_line_and_balances() -> None:
    entry = next(x for x in T.entries if x["event_type"] == "captured")
    rows = rows_for("ledger_entry", entry)
    assert len(rows) == len(entry["lines"]) and {r.table for r in rows} == {"ledger_entries"}
    cols = COLUMNS["ledger_entries"]
    net = sum(dict(zip(cols, r.values))["debit_minor"] - dict(zip(cols, r.values))["credit_minor"] for r in rows)
    assert net == 0
    assert [dict(zip(cols, r.values))["line_no"] for r in rows] == list(range(len(rows)))


def test_outcome_rows() -> None:
    out = {
        "outcome_id": "out_1",
        "command_id": "c1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "k1",
        "payment_id": None,
        "status": "rejected",
        "reason_code": "invalid_currency",
        "reason_detail": "x" * 5000,
        "payment_status": None,
        "amount_minor": 5,
        "currency": None,
        "authorized_minor": 0,
        "captured_minor": 0,
        "refunded_minor": 0,
        "card_bin": None,
        "card_last4": None,
        "occurred_at": 1_700_000_000_000,
    }
    (row,) = rows_for("payment_outcome", out)
    got = dict(zip(COLUMNS["payment_outcomes"], row.values))
    assert len(got["reason_detail"]) == 1024 and isinstance(got["occurred_at"], datetime)
    assert got["dispute_evidence"] is None  # an outcome before PaymentOutcome v2 has none
    evidence = out | {"kind": "dispute_evidence", "status": "succeeded", "dispute_evidence": "receipt: " + "r" * 3990}
    (row,) = rows_for("payment_outcome", evidence)
    assert dict(zip(COLUMNS["payment_outcomes"], row.values))["dispute_evidence"] == evidence["dispute_evidence"]
    with pytest.raises(RowError) as e:
        rows_for("payment_outcome", evidence | {"dispute_evidence": "x" * 4001})
    assert e.value.reason == "invalid_field"


BAD = [
    ("payment_event", lambda e: e.pop("event_id"), "missing_field"),
    ("payment_event", lambda e: e.update(currency="XYZ"), "invalid_currency"),
    ("payment_event", lambda e: e.update(amount_minor=1.5), "invalid_amount"),
    ("payment_event", lambda e: e.update(amount_minor=-1), "invalid_amount"),
    ("payment_event", lambda e: e.update(occurred_at=datetime(2026, 1, 1)), "invalid_time"),
    ("payment_event", lambda e: e.update(card_bin="4242424242424242"), "invalid_card"),
    ("payment_event", lambda e: e.update(reason_code="card 4242 4242 4242 4242"), "pan_in_record"),
    ("payment_event", lambda e: e.update(merchant_id=""), "invalid_field"),
]


@pytest.mark.parametrize("kind, spoil, reason", BAD)
def test_bad_records_are_row_errors(kind: str, spoil, reason: str) -> None:
    e = _event("captured")
    spoil(e)
    with pytest.raises(RowError) as err:
        rows_for(kind, e)
    assert err.value.reason == reason


def test_bad_entries() -> None:
    entry = copy.deepcopy(next(x for x in T.entries if x["event_type"] == "captured"))
    entry["lines"][0]["debit_minor"] += 1
    with pytest.raises(RowError, match="unbalanced"):
        rows_for("ledger_entry", entry)
    entry["lines"] = []
    with pytest.raises(RowError, match="invalid_entry"):
        rows_for("ledger_entry", entry)
    with pytest.raises(RowError, match="unknown_kind"):
        rows_for("nope", entry)


_values = st.one_of(
    st.none(),
    st.integers(),
    st.text(max_size=20),
    st.floats(),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


@settings(max_examples=200, deadline=None)
@given(kind=st.sampled_from(KINDS), field=st.text(max_size=15), value=_values, pick=st.integers(0, 10**6))
def test_any_spoiled_record_is_rows_or_a_row_error(kind: str, field: str, value, pick: int) -> None:
    record = copy.deepcopy(
        T.entries[pick % len(T.entries)] if kind == "ledger_entry" else T.events[pick % len(T.events)]
    )
    keys = sorted(record)
    record[keys[pick % len(keys)] if pick % 3 else field] = value
    try:
        rows_for(kind, record)
    except RowError:
        pass


def test_payout_rows_keep_the_answer_over_the_send(ch) -> None:
    from datetime import date, datetime

    from connectors.clickhouse.sink import Sink

    sent = {
        "payout_id": "po_1",
        "settlement_id": "stl_1",
        "merchant_id": "m_a",
        "currency": "USD",
        "amount_minor": 700,
        "day": date(2026, 11, 25),
        "status": "sent",
        "sent_at": datetime(2026, 11, 26, tzinfo=UTC),
        "answered_at": None,
        "failure_reason": "",
    }
    failed = sent | {
        "status": "failed",
        "answered_at": datetime(2026, 11, 29, tzinfo=UTC),
        "failure_reason": "account_closed",
    }
    Sink(ch).insert(rows_for("payout", sent) + rows_for("payout", failed) + rows_for("payout", sent))
    assert ch.query("SELECT status, failure_reason FROM payouts FINAL").result_rows == [("failed", "account_closed")]
    with pytest.raises(RowError, match="status"):
        rows_for("payout", sent | {"status": "lost"})
