"""The router: eligibility, scoring, retries with jitter, failover in the command,
timeouts kept with their provider, breaker-driven recovery."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.providers.breaker import Breaker, Bucket
from connectors.providers.learning import Arm
from connectors.providers.rails import Window, build_rails, load_rail_configs
from connectors.providers.router import (
    RoutingConfigError,
    RoutingState,
    build_router,
    load_router_config,
)
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000
ROUTER = build_router(load_rail_configs())
CFG = ROUTER.config


def cmd(
    i: int = 0,
    *,
    amount: int = 10_000,
    currency: str = "USD",
    method: str | None = None,
    card: tuple[str, str] = ("424242", "4242"),
) -> dict[str, Any]:
    return {
        "payment_id": f"pay_{i}",
        "currency": currency,
        "amount_minor": amount,
        "card": {"bin": card[0], "last4": card[1]},
        "metadata": {"payment_method": method} if method else {},
    }


def route(state, rails, i, at_ms, **kw):
    c = cmd(i, **kw)
    return ROUTER.authorize(state, rails, c, f"key_{i}", Call(c["payment_id"], c["currency"], at_ms))


def test_cheapest_fast_acquirer_first_and_eligibility_by_currency_method_amount():
    assert [p for p, _ in ROUTER.rank(RoutingState(), cmd(), T0_MS)] == ["acq_north", "acq_south"]
    assert [p for p, _ in ROUTER.rank(RoutingState(), cmd(currency="BRL"), T0_MS)] == ["acq_south"]
    assert [p for p, _ in ROUTER.rank(RoutingState(), cmd(method="wallet"), T0_MS)] == ["wallet_pay"]
    assert [p for p, _ in ROUTER.rank(RoutingState(), cmd(method="bank_transfer"), T0_MS)] == ["bank_ach"]
    assert ROUTER(cmd()) == "acq_north"
    routed = route(RoutingState(), build_rails(1), 0, T0_MS, currency="CHF")
    assert routed.provider is None and routed.result.reason == "no_route" and routed.attempts == ()


def test_scores_follow_the_weights():
    w = CFG.weights
    north, south = (r for r in ROUTER.routes if r.provider in ("acq_north", "acq_south"))
    s = RoutingState()
    expected = w.success * CFG.prior_success - w.cost * 275 / 10_000 - w.latency * 0.120
    assert ROUTER.score(north, s.breaker("acq_north"), 10_000) == pytest.approx(expected)
    # a cheaper route loses once its approval rate falls far enough
    cheap = replace(CFG, weights=replace(w, cost=0.0))
    assert build_router(load_rail_configs(), cheap).score(south, s.breaker("acq_south"), 10_000) > ROUTER.score(
        south, s.breaker("acq_south"), 10_000
    )


def test_outage_retries_the_primary_then_fails_over_in_the_same_command():
    rails = build_rails(3, schedules={"acq_north": (Window(T0_MS, T0_MS + 60_000, "outage"),)})
    routed = route(RoutingState(), rails, 1, T0_MS)
    assert [(a.provider, a.attempt, a.retryable) for a in routed.attempts] == [
        ("acq_north", 1, True),
        ("acq_north", 2, True),
        ("acq_south", 1, False),
    ]
    assert routed.provider == "acq_south" and routed.result.status == "approved" and routed.failovers == 1
    backoff = routed.attempts[1].backoff_ms
    assert CFG.retry.base_backoff_ms // 2 <= backoff <= CFG.retry.base_backoff_ms
    assert routed.attempts[2].backoff_ms == 0  # failover does not wait
    assert not rails["acq_north"].records  # the primary processed nothing
    assert routed.state.breaker("acq_north").totals().failures == 2


def test_breaker_opens_and_later_commands_go_straight_to_the_secondary():
    rails = build_rails(3, schedules={"acq_north": (Window(T0_MS, T0_MS + 20_000, "outage"),)})
    state, opened, routes = RoutingState(), [], []
    for i in range(100):  # 50 s of event time: the outage, the cool-downs, the recovery
        routed = route(state, rails, i, T0_MS + i * 500)
        state = routed.state
        opened += [t for t in routed.transitions if t.to_state == "open"]
        routes.append(routed)
    first = opened[0]
    assert first.provider == "acq_north" and first.reason == "failure_rate"
    # the failover target is decided at once after the trip (< 100 ms of simulated time)
    tripping = next(r for r in routes if first in r.transitions)
    after = [a for a in tripping.attempts if a.at_ms >= first.at_ms and a.provider != "acq_north"]
    assert after and after[0].at_ms - first.at_ms < 100
    while_open = [
        r
        for r in routes
        if r.attempts and r.attempts[0].at_ms < first.at_ms + CFG.breaker.open_ms and r.attempts[0].at_ms > first.at_ms
    ]
    assert while_open and all([a.provider for a in r.attempts] == ["acq_south"] for r in while_open)
    assert all(r.result.status != "declined" or not r.result.retryable for r in routes)  # none lost to the outage
    # after the outage and the cool-down, probes close the breaker and the primary is back
    assert [r.provider for r in routes[-5:]] == ["acq_north"] * 5
    assert any(t.to_state == "closed" and t.reason == "probes_answered" for r in routes for t in r.transitions)


def test_a_timeout_is_never_failed_over():
    rails = build_rails(3, schedules={"acq_north": (Window(T0_MS, T0_MS + 60_000, "partition"),)})
    routed = route(RoutingState(), rails, 1, T0_MS)
    assert routed.provider == "acq_north" and routed.result.status == "unknown"
    assert len(routed.attempts) == 1 and not rails["acq_south"].records
    # the partitioned rail did process it: the status query under the same key tells
    assert rails["acq_north"].status(
        "key_1", "424242", "4242", 10_000, Call("pay_1", "USD", T0_MS + 60_000)
    ).status in ("approved", "declined")


def test_all_routes_open_is_a_retryable_decline_without_calls():
    outage = (Window(T0_MS, T0_MS + 10**9, "outage"),)
    rails = build_rails(3, schedules={"acq_north": outage, "acq_south": outage})
    state = RoutingState()
    for i in range(30):
        state = route(state, rails, i, T0_MS + i).state
    calls = rails["acq_north"].calls + rails["acq_south"].calls
    routed = route(state, rails, 99, T0_MS + 100)
    assert routed.result.reason == "no_healthy_route" and routed.result.retryable and routed.attempts == ()
    assert rails["acq_north"].calls + rails["acq_south"].calls == calls


def test_retry_budget_and_attempt_bounds():
    outage = (Window(T0_MS, T0_MS + 10**9, "outage"),)
    rails = build_rails(3, schedules={n: outage for n in ("acq_north", "acq_south")})
    tight = replace(CFG, retry=replace(CFG.retry, budget_ms=30))
    routed = build_router(load_rail_configs(), tight).authorize(
        RoutingState(), rails, cmd(), "k", Call("p", "USD", T0_MS)
    )
    assert routed.elapsed_ms < 30 + 5 and len(routed.attempts) <= 2
    routed = ROUTER.authorize(RoutingState(), rails, cmd(), "k", Call("p", "USD", T0_MS))
    assert len(routed.attempts) == CFG.retry.max_attempts * 2 and routed.result.reason == "provider_unavailable"


def test_backoff_is_deterministic_jittered_and_capped():
    r = CFG.retry
    draws = [ROUTER.backoff_ms(f"k{i}", "acq_north", 1) for i in range(200)]
    assert draws == [ROUTER.backoff_ms(f"k{i}", "acq_north", 1) for i in range(200)]
    assert len(set(draws)) > 5 and all(r.base_backoff_ms // 2 <= d <= r.base_backoff_ms for d in draws)
    assert all(ROUTER.backoff_ms("k", "acq_north", n) <= r.max_backoff_ms for n in range(1, 30))


def test_state_round_trips_through_json():
    rails = build_rails(3, schedules={"acq_north": (Window(T0_MS, T0_MS + 20_000, "outage"),)})
    state = RoutingState()
    for i in range(20):
        state = route(state, rails, i, T0_MS + i * 100).state
    assert state.breaker("acq_north").state == "open"
    assert RoutingState.from_json(state.to_json()) == state


_buckets = st.builds(Bucket, st.integers(0, 10**12), *(st.integers(0, 10**6) for _ in range(5)))
_breakers = st.builds(
    Breaker,
    st.sampled_from(["acq_north", "acq_south", "wallet_x"]),
    st.sampled_from(["closed", "open"]),
    st.integers(0, 10**12),
    st.integers(0, 10**12),
    st.lists(_buckets, max_size=13).map(tuple),
)
_arms = st.builds(Arm, st.text(max_size=12), st.text(max_size=12), *(st.integers(0, 10**9) for _ in range(3)))


@given(st.lists(_breakers, max_size=4).map(tuple), st.lists(_arms, max_size=5).map(tuple))
def test_any_state_reads_back_equal_from_its_json(breakers: tuple[Breaker, ...], arms: tuple[Arm, ...]) -> None:
    """What the payments stage relies on when it keeps a state it writes beside its
    bytes instead of parsing them again (streams/stages/payments.py, `ParsedOnce`)."""
    state = RoutingState(breakers, arms)
    assert RoutingState.from_json(state.to_json()) == state


@pytest.mark.parametrize(
    "text, message",
    [
        ("version = 'x'", "missing"),
        ("nope = [", "not TOML"),
    ],
)
def test_bad_routing_file(tmp_path, text, message):
    path = tmp_path / "r.toml"
    path.write_text(text)
    with pytest.raises(RoutingConfigError, match=message):
        load_router_config(path)


def test_bad_values_in_the_routing_file(tmp_path):
    from connectors.providers.router import DEFAULT_ROUTING

    text = DEFAULT_ROUTING.read_text()
    for old, new, message in [
        ("max_attempts = 2", "max_attempts = 0", "max_attempts"),
        ("window_ms = 10000", "window_ms = 10", "bucket_ms"),
        ("cost = 10.0", "cost = -1.0", "weights"),
    ]:
        path = tmp_path / "r.toml"
        path.write_text(text.replace(old, new))
        with pytest.raises(RoutingConfigError, match=message):
            load_router_config(path)
