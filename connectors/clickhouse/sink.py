"""Batched, idempotent inserts of read-model rows.

`Batcher` collects rows and says when a batch is due: by count (`max_rows`) or
by age (`max_wait_ms` since its first row). Time is passed in by the caller (the
agent's clock or the event stream), never read here, so the rule is testable.

`Sink.insert(batch)` writes a batch, one INSERT per table, each with an
`insert_deduplication_token` derived from the rows themselves. Idempotency has
two layers (docs/decisions.md, "Read models"):
- the token drops a retried identical INSERT at once (the tables keep a
  deduplication window of 1000 inserts);
- every table is a ReplacingMergeTree keyed by the record's id, so a row that
  comes back in a *different* batch (a replay, a re-delivery after a rebalance)
  collapses at merge time, and `FINAL` reads are exact before any merge.
On a ClickHouse error the batch is retried whole with bounded exponential
backoff; tables already written are skipped by their token, so nothing is doubled.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import ClickHouseError as _DriverError

from connectors.clickhouse.client import ClickHouseError
from connectors.clickhouse.rows import COLUMNS, MAX_LINES, Row

MAX_BATCH_ROWS = 1_000_000
MAX_WAIT_MS = 60_000
MAX_ATTEMPTS = 20
MAX_BACKOFF_MS = 30_000


@dataclass
class Batcher:
    """Rows waiting for their INSERT. A batch holds at most `max_rows` rows plus the
    rows of one record (a ledger entry's lines are never split across batches)."""

    max_rows: int = 10_000
    max_wait_ms: int = 1_000
    _rows: list[Row] = field(default_factory=list)
    _first_ms: int | None = None

    def __post_init__(self) -> None:
        assert 1 <= self.max_rows <= MAX_BATCH_ROWS, self.max_rows
        assert 0 <= self.max_wait_ms <= MAX_WAIT_MS, self.max_wait_ms

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, rows: Iterable[Row], now_ms: int) -> list[Row] | None:
        """Add one record's rows; returns the batch if it is now due."""
        rows = list(rows)
        assert len(rows) <= MAX_LINES + 3, "one record maps to a handful of rows"
        if rows and self._first_ms is None:
            self._first_ms = now_ms
        self._rows.extend(rows)
        return self.poll(now_ms)

    def poll(self, now_ms: int) -> list[Row] | None:
        """The batch if it is due by count or by age, else None."""
        if not self._rows:
            return None
        if len(self._rows) >= self.max_rows or now_ms - self._first_ms >= self.max_wait_ms:  # type: ignore[operator]
            return self.take()
        return None

    def take(self) -> list[Row] | None:
        """Whatever is waiting (at shutdown, or before committing offsets)."""
        if not self._rows:
            return None
        batch, self._rows, self._first_ms = self._rows, [], None
        return batch


def dedup_token(table: str, values: list[tuple]) -> str:
    """Same rows, same token: the values' reprs are deterministic (str, int, date, datetime, None)."""
    h = hashlib.sha256(table.encode())
    for v in values:
        h.update(b"\x1e" + repr(v).encode())
    return h.hexdigest()


def backoff_ms(attempt: int, base_ms: int = 100, cap_ms: int = MAX_BACKOFF_MS) -> int:
    """Delay before retry `attempt` (1-based): base * 2^(attempt-1), capped."""
    assert attempt >= 1
    return min(cap_ms, base_ms * 2 ** min(attempt - 1, 30))


@dataclass
class Sink:
    client: Client
    attempts: int = 8
    base_backoff_ms: int = 100
    sleep: Callable[[float], None] = time.sleep  # the agent passes its own (asyncio-friendly) wait

    def __post_init__(self) -> None:
        assert 1 <= self.attempts <= MAX_ATTEMPTS

    def insert(self, batch: list[Row]) -> dict[str, int]:
        """Write the batch; rows per table. Retries on ClickHouse errors, then raises
        ClickHouseError("unavailable") with the batch unwritten or partly written
        (safe to insert again later: nothing is doubled)."""
        by_table: dict[str, list[tuple]] = {}
        for row in batch:
            by_table.setdefault(row.table, []).append(row.values)
        for attempt in range(1, self.attempts + 1):
            try:
                for table, values in by_table.items():
                    self.client.insert(
                        table,
                        values,
                        column_names=COLUMNS[table],
                        settings={"insert_deduplication_token": dedup_token(table, values)},
                    )
                return {t: len(v) for t, v in by_table.items()}
            except _DriverError as e:
                last = e
                if attempt < self.attempts:
                    self.sleep(backoff_ms(attempt, self.base_backoff_ms) / 1000)
        detail = (str(last).strip().splitlines() or ["?"])[0][:300]
        raise ClickHouseError("unavailable", f"insert failed after {self.attempts} attempts: {detail}")
