"""`live_balances`: the ledger-balances table read back from the tables' changelog, an
account summed over the partitions it lives in (a split payment credits sellers in the
platform's shard); the other tables' records in that changelog are not balances."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from streams.client import books
from streams.domain.ledger import balance_key, encode_balance
from streams.runtime.changelog import changelog_key
from streams.settings import Settings
from streams.worker import changelogs


@dataclass
class Msg:
    p: int
    k: bytes
    v: bytes | None

    def partition(self) -> int:
        return self.p

    def key(self) -> bytes:
        return self.k

    def value(self) -> bytes | None:
        return self.v


def test_an_account_in_two_shards_is_the_sum_of_their_last_values(monkeypatch: pytest.MonkeyPatch) -> None:
    seller, platform = balance_key("merchant:m_s:pending", "USD"), balance_key("merchant:m_p:pending", "USD")
    log = [
        Msg(1, changelog_key("ledger-balances", seller), encode_balance(-900)),
        Msg(3, changelog_key("ledger-balances", seller), encode_balance(500)),
        Msg(1, changelog_key("ledger-balances", seller), encode_balance(-1_000)),
        Msg(1, changelog_key("ledger-applied", seller), b"not a balance"),
        Msg(1, changelog_key("ledger-balances", platform), encode_balance(-50)),
        Msg(1, changelog_key("ledger-balances", platform), None),
    ]  # a tombstone: zero
    monkeypatch.setattr(changelogs, "read_to_end", lambda *_a, **_k: iter(log))
    assert books.live_balances(Settings(namespace="t")) == {("merchant:m_s:pending", "USD"): -500}
