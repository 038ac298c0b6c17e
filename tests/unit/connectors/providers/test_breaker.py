"""The circuit breaker under scripted failure patterns, over event time."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.providers.breaker import Breaker, BreakerConfig, _advance, allow, record

CFG = BreakerConfig(
    window_ms=10_000,
    bucket_ms=1_000,
    min_calls=4,
    failure_rate=0.5,
    timeout_rate=0.25,
    open_ms=5_000,
    close_after_successes=2,
)


def run(b: Breaker, pattern: str, start_ms: int = 0, step_ms: int = 100):
    """Feed `pattern` (s = success, f = failure, t = timeout), one call per step; return
    the breaker, every transition, and the calls the breaker refused."""
    transitions, refused = [], 0
    for i, c in enumerate(pattern):
        at = start_ms + i * step_ms
        ok, b, ts = allow(b, CFG, at)
        transitions += ts
        if not ok:
            refused += 1
            continue
        b, ts = record(b, CFG, at, {"s": "success", "f": "failure", "t": "timeout"}[c], 50, approved=c == "s")
        transitions += ts
    return b, transitions, refused


def test_stays_closed_below_min_calls_and_below_the_rates():
    b, ts, _ = run(Breaker("a"), "fff")  # three failures: not enough calls for a verdict
    assert b.state == "closed" and ts == []
    b, ts, _ = run(Breaker("a"), "ssfsfsssss")  # failures under half, no timeouts
    assert b.state == "closed" and ts == []


def test_opens_on_failure_rate_with_the_window_counts_on_the_event():
    b, ts, refused = run(Breaker("a"), "sfffssss")
    assert [(t.from_state, t.to_state, t.reason) for t in ts] == [("closed", "open", "failure_rate")]
    assert (ts[0].calls, ts[0].failures, ts[0].at_ms) == (4, 3, 300)  # the window with the call that tripped it
    assert b.state == "open" and refused == 4  # the rest are refused


def test_opens_on_timeout_rate_before_the_failure_rate():
    b, ts, _ = run(Breaker("a"), "ssts")
    assert b.state == "open" and ts[0].reason == "timeout_rate"


def test_open_then_half_open_probes_then_closed_with_a_fresh_window():
    b, _, _ = run(Breaker("a"), "ffff")
    assert b.state == "open" and b.since_ms == 300
    ok, b2, ts = allow(b, CFG, 300 + 4_999)
    assert not ok and ts == ()
    b, ts, refused = run(b, "ss", start_ms=300 + 5_000)
    assert refused == 0
    assert [(t.from_state, t.to_state, t.reason) for t in ts] == [
        ("open", "half_open", "cooled_down"),
        ("half_open", "closed", "probes_answered"),
    ]
    assert b.state == "closed" and b.totals().calls == 0


def test_a_failed_probe_opens_again():
    b, _, _ = run(Breaker("a"), "ffff")
    b, ts, _ = run(b, "st", start_ms=10_000)
    assert [t.to_state for t in ts] == ["half_open", "open"] and ts[-1].reason == "probe_failed"
    assert b.since_ms == 10_100 and not allow(b, CFG, 10_200)[0]


def test_old_failures_leave_the_rolling_window():
    b, _, _ = run(Breaker("a"), "fff", step_ms=1_000)
    b, ts, _ = run(b, "ssss", start_ms=20_000)  # the failures are 18 s old
    assert b.state == "closed" and ts == [] and b.totals().failures == 0


def test_buckets_stay_bounded_and_time_never_goes_back():
    b = Breaker("a")
    for i in range(5_000):
        b, _ = record(b, CFG, i * 37, "success", 1)
    assert len(b.buckets) <= CFG.window_ms // CFG.bucket_ms + 1
    late, _ = record(b, CFG, 0, "success", 1)  # an out-of-order event counts as now
    assert late.now_ms == b.now_ms and late.totals().calls == b.totals().calls + 1


@given(
    st.lists(st.tuples(st.integers(-2_000, 6_000), st.sampled_from(["success", "failure", "timeout"])), max_size=60),
    st.integers(0, 30_000),
)
def test_the_window_keeps_exactly_the_buckets_it_overlaps(calls: list[tuple[int, str]], later_ms: int) -> None:
    """Buckets start in increasing order whatever the event times, so the window's edge
    drops a prefix: what `_advance` keeps is what a look at every bucket keeps."""
    b, at = Breaker("a"), 0
    for step, outcome in calls:
        at = max(0, at + step)  # a step back is an out-of-order event
        ok, b, _ = allow(b, CFG, at)
        if ok:
            b, _ = record(b, CFG, at, outcome, 1)
        starts = [x.start_ms for x in b.buckets]
        assert starts == sorted(set(starts))
    now_ms = max(b.now_ms, b.now_ms + later_ms)
    expected = tuple(x for x in b.buckets if x.start_ms + CFG.bucket_ms > now_ms - CFG.window_ms)
    advanced = _advance(b, CFG, now_ms)
    assert advanced.buckets == expected and advanced.now_ms == now_ms
    assert advanced is b or later_ms > 0


def test_bad_config_is_a_clear_error():
    with pytest.raises(ValueError, match="bucket_ms"):
        BreakerConfig(window_ms=1_000, bucket_ms=2_000)
    with pytest.raises(ValueError, match="failure_rate"):
        BreakerConfig(failure_rate=0)


@given(st.lists(st.tuples(*[st.integers(0, 10**6)] * 5), max_size=8), st.integers(0, 10**9))
def test_totals_are_the_buckets_sums(counts: list[tuple[int, int, int, int, int]], now_ms: int) -> None:
    from connectors.providers.breaker import Bucket

    buckets = tuple(Bucket(i * 1_000, *c) for i, c in enumerate(counts))
    t = Breaker("p", now_ms=now_ms, buckets=buckets).totals()
    assert t == Bucket(
        buckets[0].start_ms if buckets else now_ms,
        *(sum(getattr(b, f) for b in buckets) for f in ("calls", "failures", "timeouts", "approvals", "latency_ms")),
    )
