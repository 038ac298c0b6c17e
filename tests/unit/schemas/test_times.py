"""Event time in integer milliseconds: durations floor like instants."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given
from hypothesis import strategies as st

from schemas.times import EPOCH, span_ms, to_ms

_SPANS = st.timedeltas(min_value=timedelta(days=-3650), max_value=timedelta(days=3650))


@given(_SPANS)
def test_a_span_is_the_milliseconds_it_moves_an_instant_by(span: timedelta) -> None:
    assert span_ms(span) == to_ms(EPOCH + span) == span // timedelta(milliseconds=1)
