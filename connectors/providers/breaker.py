"""A circuit breaker per provider, as a plain value and pure transitions over event time.

closed --(failure rate or timeout rate over the rolling window, with enough calls)--> open
open --(open_ms of event time passed, at the next call)--> half_open
half_open --(close_after_successes answers in a row)--> closed (a fresh window)
half_open --(one failure or timeout)--> open again

The window is a bounded ring of buckets (`bucket_ms` wide, at most window_ms /
bucket_ms + 1 of them). An *answer* is a success for the breaker, declines included
(the provider works; the card does not); a *failure* is a refusal or error, a
*timeout* is a lost answer. Every state change is a `Transition` value, for events
and metrics. Time only moves forward: an earlier event time counts as the latest seen.
"""

from __future__ import annotations

from dataclasses import dataclass

from schemas.state import evolved

STATES = ("closed", "open", "half_open")
OUTCOMES = ("success", "failure", "timeout")
MAX_BUCKETS = 1_000


@dataclass(frozen=True)
class BreakerConfig:
    window_ms: int = 60_000
    bucket_ms: int = 5_000
    min_calls: int = 10  # no verdict on fewer calls in the window
    failure_rate: float = 0.5  # open at or above this share of failures (timeouts included)
    timeout_rate: float = 0.2  # open at or above this share of timeouts alone
    open_ms: int = 10_000  # how long an open breaker refuses before probing
    close_after_successes: int = 3  # half-open probes that must answer in a row

    def __post_init__(self) -> None:
        # A config comes from a file: a bad one is a clear error, not an assertion.
        checks = {
            "need 1 <= bucket_ms <= window_ms <= 1 day": 1 <= self.bucket_ms <= self.window_ms <= 86_400_000,
            f"at most {MAX_BUCKETS} buckets per window": self.window_ms // self.bucket_ms + 1 <= MAX_BUCKETS,
            "min_calls must be 1..1000000": 1 <= self.min_calls <= 1_000_000,
            "failure_rate and timeout_rate must be in (0, 1]": 0 < self.failure_rate <= 1
            and 0 < self.timeout_rate <= 1,
            "open_ms must be 1 ms..1 day": 1 <= self.open_ms <= 86_400_000,
            "close_after_successes must be 1..1000": 1 <= self.close_after_successes <= 1_000,
        }
        bad = [message for message, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"breaker: {'; '.join(bad)}")


@dataclass(frozen=True)
class Bucket:
    start_ms: int
    calls: int = 0
    failures: int = 0  # refusals and timeouts
    timeouts: int = 0
    approvals: int = 0
    latency_ms: int = 0  # summed, over the calls


@dataclass(frozen=True)
class Breaker:
    provider: str
    state: str = "closed"
    since_ms: int = 0  # when it entered this state
    now_ms: int = 0  # the latest event time seen
    buckets: tuple[Bucket, ...] = ()  # oldest first
    probes_ok: int = 0  # half-open answers in a row

    def __post_init__(self) -> None:
        assert self.state in STATES, self.state
        assert len(self.buckets) <= MAX_BUCKETS
        assert self.probes_ok == 0 or self.state == "half_open", self

    def totals(self) -> Bucket:
        """The window's calls, failures, timeouts and latency, summed."""
        calls = failures = timeouts = approvals = latency_ms = 0
        for b in self.buckets:  # one pass, not a generator per sum: every route's score reads them
            calls += b.calls
            failures += b.failures
            timeouts += b.timeouts
            approvals += b.approvals
            latency_ms += b.latency_ms
        return Bucket(
            self.buckets[0].start_ms if self.buckets else self.now_ms, calls, failures, timeouts, approvals, latency_ms
        )


@dataclass(frozen=True)
class Transition:
    """A breaker state change: an event value (and a metric)."""

    provider: str
    from_state: str
    to_state: str
    at_ms: int
    reason: str  # "failure_rate" | "timeout_rate" | "probe_failed" | "cooled_down" | "probes_answered"
    calls: int  # in the window when it changed
    failures: int
    timeouts: int


def allow(b: Breaker, cfg: BreakerConfig, at_ms: int) -> tuple[bool, Breaker, tuple[Transition, ...]]:
    """May a call go to this provider at `at_ms`? An open breaker whose cool-down has
    passed becomes half-open here (the call is its probe)."""
    b = _advance(b, cfg, at_ms)
    if b.state == "closed" or b.state == "half_open":
        return True, b, ()
    if b.now_ms - b.since_ms >= cfg.open_ms:
        half = evolved(b, state="half_open", since_ms=b.now_ms, buckets=(), probes_ok=0)
        return True, half, (_transition(b, half, "cooled_down"),)
    return False, b, ()


def record(
    b: Breaker, cfg: BreakerConfig, at_ms: int, outcome: str, latency_ms: int, approved: bool = False
) -> tuple[Breaker, tuple[Transition, ...]]:
    """Count one call's outcome and apply the transition it causes. `approved` counts
    the approval rate the router scores by (a success that was not a decline)."""
    assert outcome in OUTCOMES, outcome
    assert not approved or outcome == "success"
    assert latency_ms >= 0
    b = _advance(b, cfg, at_ms)
    last = b.buckets[-1] if b.buckets and b.buckets[-1].start_ms == _bucket_start(b.now_ms, cfg) else None
    bucket = last or Bucket(_bucket_start(b.now_ms, cfg))
    bucket = evolved(
        bucket,
        calls=bucket.calls + 1,
        failures=bucket.failures + (outcome != "success"),
        timeouts=bucket.timeouts + (outcome == "timeout"),
        approvals=bucket.approvals + approved,
        latency_ms=bucket.latency_ms + latency_ms,
    )
    b = evolved(b, buckets=(b.buckets[:-1] if last else b.buckets) + (bucket,))
    if b.state == "half_open":
        if outcome != "success":
            opened = evolved(b, state="open", since_ms=b.now_ms, probes_ok=0)
            return opened, (_transition(b, opened, "probe_failed"),)
        if b.probes_ok + 1 >= cfg.close_after_successes:
            closed = evolved(b, state="closed", since_ms=b.now_ms, buckets=(), probes_ok=0)
            return closed, (_transition(b, closed, "probes_answered"),)
        return evolved(b, probes_ok=b.probes_ok + 1), ()
    if b.state == "closed":
        t = b.totals()
        if t.calls >= cfg.min_calls:
            reason = (
                "timeout_rate"
                if t.timeouts >= cfg.timeout_rate * t.calls
                else "failure_rate"
                if t.failures >= cfg.failure_rate * t.calls
                else None
            )
            if reason:
                opened = evolved(b, state="open", since_ms=b.now_ms)
                return opened, (_transition(b, opened, reason),)
    return b, ()  # an open breaker still counts a call that was already under way


def _advance(b: Breaker, cfg: BreakerConfig, at_ms: int) -> Breaker:
    now_ms = max(b.now_ms, at_ms)
    oldest = now_ms - cfg.window_ms
    # Buckets start in increasing order (a new one opens at the latest time seen), so the
    # ones out of the window are a prefix: found without a look at every bucket per call.
    buckets, first = b.buckets, 0
    while first < len(buckets) and buckets[first].start_ms + cfg.bucket_ms <= oldest:
        first += 1
    if now_ms == b.now_ms and first == 0:
        return b
    return evolved(b, now_ms=now_ms, buckets=buckets[first:])


def _bucket_start(at_ms: int, cfg: BreakerConfig) -> int:
    return at_ms - at_ms % cfg.bucket_ms


def _transition(before: Breaker, after: Breaker, reason: str) -> Transition:
    t = before.totals()
    return Transition(before.provider, before.state, after.state, after.now_ms, reason, t.calls, t.failures, t.timeouts)
