"""The key of a changelog record in a topic that several tables share.

A transaction's commit time grows with the partitions it writes (docs/performance.md,
"What a commit costs"), so tables may share one changelog topic: there each record's
key is the table's name, the separator 0x1F, then the table's key. A topic with one
table keeps the table's key as it is. These two functions are the format: the
runtime and every reader of a shared changelog go through them.
"""

from __future__ import annotations

SEPARATOR = b"\x1f"  # ASCII unit separator: never in a table name (asserted where tables are declared)


class ChangelogKeyError(ValueError):
    """A record key in a shared changelog with no table name in front."""


def check_table_name(table: str) -> None:
    assert table and SEPARATOR.decode() not in table, f"a table name without 0x1F: {table!r}"


def changelog_key(table: str, key: bytes) -> bytes:
    """`key` of `table` as a record key in a shared changelog."""
    check_table_name(table)
    return table.encode() + SEPARATOR + key


def split_changelog_key(record_key: bytes) -> tuple[str, bytes]:
    """(table, table key) of a shared changelog's record key."""
    table, sep, key = record_key.partition(SEPARATOR)
    if not sep or not table:
        raise ChangelogKeyError(f"no table name in a shared changelog key of {len(record_key)} bytes")
    try:
        return table.decode(), key
    except UnicodeDecodeError:
        raise ChangelogKeyError("a shared changelog key whose table name is not UTF-8") from None
