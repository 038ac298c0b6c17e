"""Restore routing: each changelog record to its table's store, by topic (one table)
or by the key's table name (a topic several tables share); a dropped table's records
are counted and skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from streams.runtime.changelog import changelog_key
from streams.runtime.restore import Router
from streams.runtime.state import Task

TABLES = {"payments": "app-tables-changelog", "marks": "app-tables-changelog", "solo": "app-solo-changelog"}


def tasks(tmp: Path) -> list[Task]:
    return [Task(p, TABLES, tmp, lambda r, p, o: None) for p in (0, 1)]


def test_a_shared_topics_records_go_to_the_table_their_key_names(tmp_path: Path) -> None:
    t0, t1 = tasks(tmp_path)
    router = Router.of([t0, t1])
    topics = ("app-solo-changelog", "app-tables-changelog")
    assert router.partitions() == [(topic, p) for topic in topics for p in (0, 1)]
    assert router.route("app-tables-changelog", 0, changelog_key("payments", b"p1"), b"v1")
    assert router.route("app-tables-changelog", 0, changelog_key("marks", b"p1"), b"m1")
    assert router.route("app-tables-changelog", 1, changelog_key("payments", b"p2"), b"v2")
    assert router.route("app-solo-changelog", 1, b"plain\x1fkey", b"s")  # one table: the key as it is
    router.flush()
    assert dict(t0.table("payments").store.items()) == {b"p1": b"v1"}
    assert dict(t0.table("marks").store.items()) == {b"p1": b"m1"}
    assert dict(t1.table("payments").store.items()) == {b"p2": b"v2"}
    assert dict(t1.table("solo").store.items()) == {b"plain\x1fkey": b"s"}
    assert dict(t0.table("solo").store.items()) == {}


def test_the_latest_record_of_a_key_wins_and_a_tombstone_deletes(tmp_path: Path) -> None:
    (t0, _) = tasks(tmp_path)
    router = Router.of([t0])
    for value in (b"a", b"b", None, b"c"):
        router.route("app-tables-changelog", 0, changelog_key("payments", b"k"), value)
    router.route("app-tables-changelog", 0, changelog_key("payments", b"gone"), b"x")
    router.route("app-tables-changelog", 0, changelog_key("payments", b"gone"), None)
    router.flush()
    assert dict(t0.table("payments").store.items()) == {b"k": b"c"}


def test_a_dropped_tables_records_are_counted_logged_once_and_skipped(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (t0, _) = tasks(tmp_path)
    router = Router.of([t0])
    with caplog.at_level(logging.WARNING, logger="paystream.runtime"):
        for i in range(3):
            assert not router.route("app-tables-changelog", 0, changelog_key("old-table", b"%d" % i), b"v")
        assert not router.route("app-tables-changelog", 0, b"no-separator", b"v")
    router.flush()
    assert router.skipped == {"old-table": 3, "<no table name>": 1}
    assert sum("old-table" in r.getMessage() for r in caplog.records) == 1
    assert all(dict(t.store.items()) == {} for t in t0.tables.values())


def test_a_write_batch_is_flushed_at_its_bound(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("streams.runtime.restore.WRITE_BATCH_MAX", 2)
    (t0, _) = tasks(tmp_path)
    router = Router.of([t0])
    router.route("app-tables-changelog", 0, changelog_key("payments", b"a"), b"1")
    router.route("app-tables-changelog", 0, changelog_key("payments", b"b"), b"2")
    assert dict(t0.table("payments").store.items()) == {b"a": b"1", b"b": b"2"}  # written before the end
    assert router.pending == {}
