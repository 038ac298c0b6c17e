"""The token bucket and the per-key limits, with the clock passed in."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.api.auth import RateLimits, TokenBucket, retry_after_header


def test_burst_then_queue_then_refusal_with_the_wait() -> None:
    b = TokenBucket(rate_per_s=2, burst=2, queue_max=1)
    assert b.acquire(0) == (True, 0.0) and b.acquire(0) == (True, 0.0)
    assert b.acquire(0) == (True, 0.5)  # queued: one token ahead, 0.5 s at 2/s
    assert b.acquire(0) == (False, 0.5)  # the queue is full until the next token
    assert b.acquire(0.5) == (True, 0.5)  # a token came back: queue again
    assert retry_after_header(0.01) == "1" and retry_after_header(2.2) == "3"


@given(st.lists(st.floats(min_value=0, max_value=5), max_size=200), st.integers(1, 10), st.integers(0, 5))
def test_never_more_than_burst_plus_queue_plus_the_rate(gaps: list[float], burst: int, queue: int) -> None:
    rate = 3.0
    b, now, admitted = TokenBucket(rate, burst, queue), 0.0, 0
    for gap in gaps:
        now += gap
        ok, wait = b.acquire(now)
        assert wait >= 0
        if ok:
            admitted += 1
            assert wait <= queue / rate + 1e-9  # a queued request waits for at most the queue ahead of it
        else:
            assert wait > 0
    assert admitted <= burst + queue + now * rate + 1e-6


def test_buckets_are_per_key_and_bounded() -> None:
    limits = RateLimits(rate_per_s=1, burst=1, queue_max=0, max_keys=2)
    assert limits.acquire("a", 0)[0] and not limits.acquire("a", 0)[0]
    assert limits.acquire("b", 0)[0]
    limits.acquire("c", 0)  # evicts a, the least recently used
    assert limits.acquire("a", 0)[0]
