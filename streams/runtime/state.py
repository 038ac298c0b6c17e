"""Tables: one RocksDB store per table and partition, written only after the
transaction that carries their changelog records has committed.

A task is one partition number across every source topic (all pipeline topics share
a partition count and the range assignor gives one worker partition p of each), so
its tables hold exactly the state of the records it handles. Reads see the open
transaction's pending writes first, then those of the transaction being committed
(sealed), then RocksDB.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from streams.runtime.changelog import changelog_key, check_table_name
from streams.runtime.messages import Record

# Pending keys of one task before the engine must commit (bounds a transaction's memory).
PENDING_KEYS_MAX = 200_000


def _options() -> Options:
    options = Options(raw_mode=True)
    options.create_if_missing(True)
    return options


def _write_options() -> WriteOptions:
    # No write-ahead log: a store never outlives its process (the next start discards it
    # and restores from the changelog), so the log only cost a file write per batch
    # (~40% of a commit's RocksDB CPU and 2-3x its wall time, measured).
    options = WriteOptions()
    options.disable_wal = True
    return options


class Store:
    """One table's RocksDB for one partition; bytes in, bytes out."""

    def __init__(self, path: Path) -> None:
        if path.exists():  # a leftover of an earlier run: the changelog is the truth
            shutil.rmtree(path)
        path.mkdir(parents=True)
        self.path = path
        self.db = Rdict(str(path), _options())
        self.db.set_write_options(_write_options())

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def items(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=prefix):
            if not key.startswith(prefix):
                return
            yield key, value

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in changes.items():
            if value is None:
                batch.delete(key)
            else:
                batch.put(key, value)
        self.db.write(batch)

    def close(self, remove: bool = True) -> None:
        self.db.close()
        if remove:
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass
class Table:
    """A task's view of one table: pending writes over sealed ones over the store."""

    name: str
    changelog: str
    store: Store
    shared: bool = False  # its changelog holds other tables too: keys carry the table's name
    pending: dict[bytes, bytes | None] = field(default_factory=dict)
    # The writes of the transaction being committed: read through until its commit is
    # decided, then stored (committed) or dropped (aborted, with the open one's).
    sealed: dict[bytes, bytes | None] = field(default_factory=dict)

    def get(self, key: bytes) -> bytes | None:
        if key in self.pending:
            return self.pending[key]
        if key in self.sealed:
            return self.sealed[key]
        return self.store.get(key)

    def put(self, key: bytes, value: bytes | None) -> None:
        """Write (None deletes: a changelog tombstone) inside the open transaction."""
        self.pending[key] = value

    def items(self, prefix: bytes = b"") -> list[tuple[bytes, bytes]]:
        """Every live (key, value) under `prefix`, pending writes included, by key."""
        merged = dict(self.store.items(prefix))
        for layer in (self.sealed, self.pending):
            for key, value in layer.items():
                if key.startswith(prefix):
                    if value is None:
                        merged.pop(key, None)
                    else:
                        merged[key] = value
        return sorted(merged.items())


def shared_changelogs(tables: Mapping[str, str]) -> frozenset[str]:
    """The changelog topics of `tables` (name -> topic) that hold more than one table."""
    for name in tables:
        check_table_name(name)
    topics = list(tables.values())
    return frozenset(t for t in topics if topics.count(t) > 1)


class Task:
    """Partition `partition` of every source topic: its tables and its sends."""

    def __init__(
        self, partition: int, tables: dict[str, str], state_dir: Path, send: Callable[[Record, int, int], None]
    ) -> None:
        self.partition = partition
        self._send = send
        shared = shared_changelogs(tables)
        self.tables = {
            name: Table(name, changelog, Store(state_dir / name / str(partition)), changelog in shared)
            for name, changelog in tables.items()
        }

    def table(self, name: str) -> Table:
        return self.tables[name]

    def scoped(self, stage: str, tables: tuple[str, ...], outputs: tuple[str, ...]) -> StageTask:
        return StageTask(self, stage, frozenset(tables), frozenset(outputs))

    def send(self, record: Record, origin_ms: int) -> None:
        """Into the open transaction; a record without a partition goes to this task's."""
        self._send(record, self.partition, origin_ms)

    def pending_keys(self) -> int:
        return sum(len(t.pending) for t in self.tables.values())

    def changelog_records(self) -> dict[str, list[tuple[bytes, bytes | None]]]:
        """The last pending value of each written key, as (key, value) per changelog
        topic, all for this task's partition: one record per key and transaction,
        however often the key was written in it."""
        out: dict[str, list[tuple[bytes, bytes | None]]] = {}
        for t in self.tables.values():
            if t.pending:
                records = out.setdefault(t.changelog, [])
                if t.shared:
                    records.extend((changelog_key(t.name, key), value) for key, value in t.pending.items())
                else:
                    records.extend(t.pending.items())
        return out

    def seal(self) -> None:
        """The open transaction goes to its commit: its writes become the sealed layer
        (the one before it is decided by now), and the next transaction writes over it."""
        for t in self.tables.values():
            assert not t.sealed, "a transaction sealed while the one before it is undecided"
            if t.pending:
                t.sealed, t.pending = t.pending, {}

    def apply(self) -> None:
        """After the commit: the sealed writes into RocksDB."""
        for t in self.tables.values():
            if t.sealed:
                t.store.write(t.sealed)
                t.sealed = {}

    def discard(self) -> None:
        """An abort: the sealed and the open transaction's writes go (the open one read the sealed)."""
        for t in self.tables.values():
            t.pending = {}
            t.sealed = {}

    def close(self, remove: bool = True) -> None:
        """`remove`: a partition given up; else a stop, the files left for inspection
        (the next start discards them: the changelogs are the truth)."""
        for t in self.tables.values():
            t.store.close(remove)


class StageTask:
    """A task as one stage's handler sees it: only the tables and output topics its
    Stage declares (streams/worker/topology.py's table). A wrong one is a bug in the
    wiring, refused at the first record, not a silent write to another stage's state."""

    __slots__ = ("_task", "stage", "tables", "outputs", "partition")

    def __init__(self, task: Task, stage: str, tables: frozenset[str], outputs: frozenset[str]) -> None:
        self._task, self.stage, self.tables, self.outputs = task, stage, tables, outputs
        self.partition = task.partition

    def table(self, name: str) -> Table:
        if name not in self.tables:
            raise UndeclaredError(f"stage {self.stage} reads table {name!r}, which it does not declare")
        return self._task.table(name)

    def send(self, record: Record, origin_ms: int) -> None:
        if record.topic not in self.outputs:
            raise UndeclaredError(f"stage {self.stage} writes to {record.topic!r}, which it does not declare")
        self._task.send(record, origin_ms)


class UndeclaredError(AssertionError):
    """A handler used a table or topic its Stage does not declare."""
