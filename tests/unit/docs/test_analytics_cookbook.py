"""Every SQL block of docs/analytics.md runs against a populated chDB, and the
numbers it gives agree with the ledger."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streams.domain.ledger import apply, entry_from_record
from tests.unit.connectors.clickhouse.support import populate, traffic

DOC = Path(__file__).resolve().parents[3] / "docs" / "analytics.md"
BLOCKS = re.findall(r"```sql\n(.*?)```", DOC.read_text(), re.S)
T = traffic(payments=400, seed=17, days=2)


@pytest.fixture
def populated(ch):
    return populate(ch, T)


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
