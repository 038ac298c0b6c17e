"""The read models' retention (migration 8, docs/compliance.md "Retention"): a fraud
decision, which names the card token and a sanctions hit, is deleted five years after
its event time; the TTL is read back from the table and applied by a merge."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.clickhouse.rows import COLUMNS


def test_fraud_decisions_expire_five_years_after_their_event(ch) -> None:
    [(ddl,)] = ch.query(
        "SELECT engine_full FROM system.tables WHERE database = currentDatabase() AND name = 'fraud_decisions'"
    ).result_rows
    assert "TTL toDateTime(occurred_at) + toIntervalYear(5)" in ddl
    now = datetime.now(UTC)
    rows = [
        (pid, "m_1", "USD", "approve", reason, f"evt_{pid}", "authorized", "tok_1", "424242", at)
        for pid, reason, at in (
            ("pay_old", "sanctions_hit:PS-0001:97", now - timedelta(days=5 * 366 + 1)),
            ("pay_recent", None, now - timedelta(days=5 * 365 - 30)),
        )
    ]
    ch.insert("fraud_decisions", rows, column_names=COLUMNS["fraud_decisions"])
    ch.command("OPTIMIZE TABLE fraud_decisions FINAL")
    assert [r[0] for r in ch.query("SELECT payment_id FROM fraud_decisions").result_rows] == ["pay_recent"]
