"""The key format of a changelog several tables share: table name, 0x1F, table key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.runtime.changelog import ChangelogKeyError, changelog_key, split_changelog_key

TABLE_NAMES = st.text(min_size=1).filter(lambda s: "\x1f" not in s)


@given(TABLE_NAMES, st.binary())
def test_make_and_split_round_trip_for_any_table_name_and_key_bytes(table: str, key: bytes) -> None:
    assert split_changelog_key(changelog_key(table, key)) == (table, key)


@given(TABLE_NAMES, TABLE_NAMES, st.binary(), st.binary())
def test_keys_of_different_tables_never_collide(a: str, b: str, key_a: bytes, key_b: bytes) -> None:
    if (a, key_a) != (b, key_b):
        assert changelog_key(a, key_a) != changelog_key(b, key_b)


def test_the_format_is_the_name_the_separator_and_the_key() -> None:
    assert changelog_key("ledger-balances", b"m1\x1fEUR") == b"ledger-balances\x1fm1\x1fEUR"


def test_a_table_name_with_the_separator_is_refused() -> None:
    with pytest.raises(AssertionError, match="0x1F"):
        changelog_key("a\x1fb", b"k")


@pytest.mark.parametrize("record_key", [b"plain-key", b"\x1fk", b"\xff\xfe\x1fk"])
def test_a_key_without_a_table_name_is_a_clear_error(record_key: bytes) -> None:
    with pytest.raises(ChangelogKeyError):
        split_changelog_key(record_key)
