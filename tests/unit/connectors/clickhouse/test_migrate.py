"""Versioned migrations: applied once, in order, recorded, refused when edited."""

from __future__ import annotations

import pytest

from connectors.clickhouse.migrate import Migration, MigrationError, applied, available, migrate

TABLES = {
    "payments",
    "payment_events",
    "ledger_entries",
    "balances",
    "fraud_decisions",
    "disputes",
    "payment_outcomes",
    "settlements",
    "reconciliation",
    "schema_migrations",
}


def test_shipped_migrations_are_numbered_from_one() -> None:
    versions = [m.version for m in available()]
    assert versions == list(range(1, len(versions) + 1))


def test_migrate_is_idempotent(ch) -> None:  # `ch` ran migrate once already
    assert migrate(ch) == []
    assert set(applied(ch)) == {m.version for m in available()}
    tables = {r[0] for r in ch.query("SHOW TABLES").result_rows}
    assert TABLES <= tables


def test_no_pan_column_anywhere(ch) -> None:
    cols = ch.query("SELECT table, name FROM system.columns WHERE database = currentDatabase()").result_rows
    assert cols
    for table, name in cols:
        assert not any(w in name for w in ("pan", "card_number", "cvc")), (table, name)


def test_new_migration_applies_once_and_edits_are_refused(ch) -> None:
    base = available()
    extra = Migration(
        len(base) + 1,
        "extra",
        "-- a comment; with a semicolon\nCREATE TABLE IF NOT EXISTS extra (a Int8) ENGINE = MergeTree ORDER BY a;\n",
    )
    assert extra.statements() == ["CREATE TABLE IF NOT EXISTS extra (a Int8) ENGINE = MergeTree ORDER BY a"]
    assert migrate(ch, base + [extra]) == [extra.version]
    assert migrate(ch, base + [extra]) == []
    edited = Migration(extra.version, "extra", extra.sql + "SELECT 1;\n")
    with pytest.raises(MigrationError, match="changed"):
        migrate(ch, base + [edited])
    with pytest.raises(MigrationError, match="does not know"):
        migrate(ch, base)
