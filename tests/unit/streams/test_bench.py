"""The bench's arithmetic (the runs themselves need the broker: tests/integration)."""

from streams.bench import rate


def test_rate_is_per_second_and_never_divides_by_zero() -> None:
    assert rate(1_000, 2.0) == 500.0
    assert rate(10, 0.0) == 0.0
    assert rate(1, 3.0) == 0.3
