"""Tables: pending writes over RocksDB, visible at once, stored only at apply."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams.runtime.messages import Record
from streams.runtime.state import Store, Task

TABLES = {"payments": "app-payments-changelog", "marks": "app-marks-changelog"}


def task(tmp: Path, partition: int = 3) -> tuple[Task, list[tuple[Record, int, int]]]:
    sent: list[tuple[Record, int, int]] = []
    return Task(partition, TABLES, tmp, lambda r, p, o: sent.append((r, p, o))), sent


def test_a_pending_write_is_read_back_but_reaches_rocksdb_only_when_applied(tmp_path: Path) -> None:
    t, _ = task(tmp_path)
    table = t.table("payments")
    table.put(b"k", b"v1")
    assert table.get(b"k") == b"v1" and table.store.get(b"k") is None
    t.seal()
    t.apply()
    assert table.store.get(b"k") == b"v1" and table.pending == {}
    table.put(b"k", None)  # a delete hides the stored value until applied
    assert table.get(b"k") is None and table.store.get(b"k") == b"v1"
    t.discard()  # an aborted transaction: the store is as committed
    assert table.get(b"k") == b"v1"


def test_the_next_transaction_reads_through_the_sealed_writes_until_they_are_applied_or_dropped(
    tmp_path: Path,
) -> None:
    t, _ = task(tmp_path)
    table = t.table("payments")
    for k in (b"1/a", b"1/b"):
        table.put(k, b"stored")
    t.seal()
    t.apply()
    table.put(b"1/a", b"sealed")
    table.put(b"1/b", None)
    t.seal()  # the transaction in flight
    assert table.pending == {} and t.changelog_records() == {}  # the next one's changelog starts empty
    table.put(b"1/c", b"open")
    assert table.get(b"1/a") == b"sealed" and table.get(b"1/b") is None and table.get(b"1/c") == b"open"
    assert table.items(b"1/") == [(b"1/a", b"sealed"), (b"1/c", b"open")]
    with pytest.raises(AssertionError, match="undecided"):
        t.seal()  # one transaction in flight at most
    t.discard()  # it aborted: the open one, which read it, goes too
    assert table.items(b"1/") == [(b"1/a", b"stored"), (b"1/b", b"stored")]
    table.put(b"1/a", b"again")
    t.seal()
    t.apply()
    assert table.store.get(b"1/a") == b"again" and table.sealed == {}


def test_the_changelog_gets_the_last_value_of_each_key_on_the_tasks_partition(tmp_path: Path) -> None:
    t, _ = task(tmp_path, partition=5)
    t.table("payments").put(b"a", b"1")
    t.table("payments").put(b"a", b"2")
    t.table("marks").put(b"m", None)
    assert t.changelog_records() == {"app-payments-changelog": [(b"a", b"2")], "app-marks-changelog": [(b"m", None)]}


def test_items_merge_pending_writes_by_prefix_in_key_order(tmp_path: Path) -> None:
    t, _ = task(tmp_path)
    table = t.table("payments")
    for k in (b"1/a", b"1/c", b"2/a"):
        table.put(k, b"old")
    t.seal()
    t.apply()
    table.put(b"1/b", b"new")
    table.put(b"1/c", None)
    assert table.items(b"1/") == [(b"1/a", b"old"), (b"1/b", b"new")]


def test_a_send_without_a_partition_goes_to_the_tasks_partition(tmp_path: Path) -> None:
    t, sent = task(tmp_path, partition=2)
    t.send(Record("out", b"k", b"v"), origin_ms=123)
    assert sent == [(Record("out", b"k", b"v"), 2, 123)]


def test_a_new_task_starts_empty_even_over_a_leftover_store(tmp_path: Path) -> None:
    t, _ = task(tmp_path)
    t.table("payments").put(b"k", b"v")
    t.seal()
    t.apply()
    for table in t.tables.values():
        table.store.db.close()  # a crash: the files stay behind
    again, _ = task(tmp_path)
    assert again.table("payments").get(b"k") is None  # the changelog, not the leftover, is the truth


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.lists(
            st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.one_of(st.none(), st.binary(max_size=4))), max_size=6
        ),
        max_size=5,
    )
)
def test_applied_transactions_equal_a_dict_replayed_from_the_changelog(tmp_path: Path, txns) -> None:  # type: ignore[no-untyped-def]
    """What RocksDB holds after each commit is what a restore from the changelog records builds."""
    t, _ = task(tmp_path / str(len(list(tmp_path.iterdir()))))
    table = t.table("payments")
    replayed: dict[bytes, bytes] = {}
    for writes in txns:
        for k, v in writes:
            table.put(k, v)
        for key, value in t.changelog_records().get("app-payments-changelog", []):
            if value is None:
                replayed.pop(key, None)
            else:
                replayed[key] = value
        t.seal()
        t.apply()
        assert dict(table.store.items()) == replayed
    t.close()


def test_tables_sharing_a_changelog_prefix_their_keys_and_a_lone_table_does_not(tmp_path: Path) -> None:
    shared = {"payments": "app-tables-changelog", "marks": "app-tables-changelog", "solo": "app-solo-changelog"}
    t = Task(4, shared, tmp_path, lambda r, p, o: None)
    t.table("payments").put(b"a", b"1")
    t.table("marks").put(b"a", None)
    t.table("solo").put(b"a", b"2")
    assert {topic: sorted(records) for topic, records in t.changelog_records().items()} == {
        "app-solo-changelog": [(b"a", b"2")],
        "app-tables-changelog": [(b"marks\x1fa", None), (b"payments\x1fa", b"1")],
    }
    assert t.table("payments").get(b"a") == b"1"  # the table itself sees its own keys


def test_a_table_name_that_could_not_prefix_a_shared_key_is_refused(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="0x1F"):
        Task(0, {"a\x1fb": "t", "c": "t"}, tmp_path, lambda r, p, o: None)


def test_a_store_writes_no_write_ahead_log(tmp_path: Path) -> None:
    # It never outlives its process (the changelog is the truth): the log would be a file write per batch.
    store = Store(tmp_path / "s")
    store.write({b"k%d" % i: b"v" * 100 for i in range(100)})
    store.write({b"k1": None})
    assert store.get(b"k2") == b"v" * 100 and store.get(b"k1") is None
    logs = list((tmp_path / "s").glob("*.log"))
    assert logs and all(log.stat().st_size == 0 for log in logs)
    store.close()
