"""The origin header and the dead-letter marks: plain values the runtime carries."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.runtime.messages import ORIGIN_HEADER, dead_lettered_before, origin_of


def test_the_first_hop_starts_the_clock_at_its_own_timestamp() -> None:
    assert origin_of(None, 1_700_000_000_250) == 1_700_000_000_250
    assert origin_of([], 1_700_000_000_250) == 1_700_000_000_250


def test_a_later_hop_keeps_the_origin_in_either_header_shape() -> None:
    assert origin_of([("other", b"x"), (ORIGIN_HEADER, b"1700000000250")], 1_700_000_009_000) == 1_700_000_000_250
    assert origin_of({ORIGIN_HEADER: b"1700000000250"}, 1_700_000_009_000) == 1_700_000_000_250


def test_a_garbled_origin_restarts_the_clock_instead_of_failing() -> None:
    assert origin_of([(ORIGIN_HEADER, b"yesterday")], 1_700_000_009_000) == 1_700_000_009_000


@settings(max_examples=300)
@given(st.data())
def test_a_redelivered_bad_message_is_dead_lettered_once(data: st.DataObject) -> None:
    """One partition read in order: a first owner handles offsets [0, handled) and its
    transactions (letters and marks) commit, but the source offset commits only at
    `committed`; the next owner reads again from there with the marks restored."""
    n = data.draw(st.integers(1, 40))
    bad = data.draw(st.sets(st.integers(0, n - 1)))
    handled = data.draw(st.integers(0, n))
    committed = data.draw(st.integers(0, handled))
    letters: Counter[int] = Counter()
    mark: bytes | None = None
    for offsets in (range(handled), range(committed, n)):
        for offset in offsets:
            if offset in bad and not dead_lettered_before(mark, offset):
                letters[offset] += 1
                mark = str(offset).encode()
    assert letters == Counter(bad)
