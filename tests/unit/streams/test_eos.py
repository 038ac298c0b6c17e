"""The origin header: when a command entered the pipeline, carried stage to stage."""

from __future__ import annotations

from types import SimpleNamespace

from streams.eos import ORIGIN_HEADER, origin_ms


def msg(timestamp_s: float, headers: object) -> SimpleNamespace:
    return SimpleNamespace(timestamp=timestamp_s, headers=headers)


def test_the_first_hop_starts_the_clock_at_its_own_timestamp() -> None:
    assert origin_ms(msg(1_700_000_000.25, None)) == 1_700_000_000_250
    assert origin_ms(msg(1_700_000_000.25, [])) == 1_700_000_000_250


def test_a_later_hop_keeps_the_origin_in_either_header_shape() -> None:
    assert origin_ms(msg(1_700_000_009.0, [("other", b"x"), (ORIGIN_HEADER, b"1700000000250")])) == 1_700_000_000_250
    assert origin_ms(msg(1_700_000_009.0, {ORIGIN_HEADER: b"1700000000250"})) == 1_700_000_000_250


def test_a_garbled_origin_restarts_the_clock_instead_of_failing() -> None:
    assert origin_ms(msg(1_700_000_009.0, [(ORIGIN_HEADER, b"yesterday")])) == 1_700_000_009_000
