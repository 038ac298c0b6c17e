"""Every SQL block of docs/analytics.md runs against a populated chDB, and the
numbers it gives agree with the ledger."""

from __future__ import annotations

import re
from dataclasses import asdict
from pathlib import Path

import pytest

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from streams.ledger import apply, entry_from_record
from streams.reconcile import ledger_side, reconcile
from streams.settlement import settle
from tests.unit.connectors.clickhouse.support import DAY0, SHARDS, traffic

DOC = Path(__file__).resolve().parents[3] / "docs" / "analytics.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
T = traffic(payments=400, seed=17, days=2)


@pytest.fixture
def populated(ch):
    rows = [r for e in T.events for r in rows_for("payment_event", e)]
    rows += [r for e in T.entries for r in rows_for("ledger_entry", e)]
    rows += rows_for("payment_outcome", {
        "outcome_id": "out_1", "command_id": "c1", "kind": "create", "merchant_id": "m_acme", "idempotency_key": "k",
        "payment_id": None, "status": "rejected", "reason_code": "invalid_currency", "reason_detail": None,
        "payment_status": None, "amount_minor": 100, "currency": None, "occurred_at": DAY0})
    run = settle(DAY0.date(), [entry_from_record(r) for r in T.entries], shards=SHARDS)
    rows += [r for s in run.settlements for r in rows_for("settlement", asdict(s))]
    books = ledger_side(T.events)
    rows += [r for i in reconcile(DAY0.date(), books[1:], books).items for r in rows_for("reconciliation", asdict(i))]
    Sink(ch).insert(rows)
    return ch


def test_the_doc_has_the_queries_analysts_ask_for() -> None:
    assert len(BLOCKS) >= 9


@pytest.mark.parametrize("n", range(len(BLOCKS)))
def test_every_cookbook_query_runs(populated, n: int) -> None:
    result = populated.query(BLOCKS[n])
    is_books_check = "HAVING off_minor != 0" in BLOCKS[n]
    assert (len(result.result_rows) == 0) if is_books_check else result.result_rows, BLOCKS[n]


def test_cookbook_balances_equal_the_ledger(populated) -> None:
    bal: dict = {}
    for r in T.entries:
        bal = apply(bal, entry_from_record(r))
    expected = {(a.split(":")[1], a.split(":")[2], c): -v for (a, c), v in bal.items() if a.startswith("merchant:")}
    block = next(b for b in BLOCKS if "owed_minor" in b)
    got = {(m, k, c): v for m, k, c, v in populated.query(block).result_rows if v}
    assert got == expected
