"""The learning router: segments, Thompson sampling seeded by the payment, cost-aware
choice, the rule router as fallback, bounded decayed evidence, and soft declines
retried once at another acquirer."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.providers.breaker import Breaker
from connectors.providers.learning import MILLI, Arm, amount_band, choose, observe, segment_of, segments_of
from connectors.providers.rails import Window, build_rails, load_rail_configs
from connectors.providers.router import RoutingState, build_router
from connectors.providers.simulated import Call

T0_MS = 1_795_000_000_000
RAILS = load_rail_configs()
RULE = build_router(RAILS)
LEARN = build_router(RAILS, learn=True)
CFG = LEARN.learn
assert CFG is not None
CARD_ROUTES = ("acq_north", "acq_south")
# 5555: the weak issuer's cards, which acq_north declines more (rails.toml)
CARDS = (("424242", "4242"), ("555555", "4444"), ("400005", "5556"), ("378282", "0005"))


def cmd(
    i: int,
    *,
    amount: int = 10_000,
    currency: str = "USD",
    method: str = "card",
    card: tuple[str, str] = ("424242", "4242"),
) -> dict[str, Any]:
    return {
        "payment_id": f"pay_{i}",
        "currency": currency,
        "amount_minor": amount,
        "method": method,
        "card": {"bin": card[0], "last4": card[1]} if method == "card" else None,
        "metadata": {},
    }


def seg(c: dict[str, Any]) -> str:
    return segment_of(c["method"], (c["card"] or {}).get("bin", ""), c["currency"], c["amount_minor"], CFG)


def arms_for(segment: str, evidence: dict[str, tuple[int, int]]) -> tuple[Arm, ...]:
    """The same evidence in the segment and its coarse level, as `observe` counts it."""
    return tuple(
        Arm(level, p, a * MILLI, d * MILLI, T0_MS)
        for level in segments_of(segment)
        for p, (a, d) in sorted(evidence.items())
    )


arm_counts = st.tuples(st.integers(0, 400), st.integers(0, 400))
commands = st.builds(
    cmd,
    st.integers(0, 10**6),
    amount=st.integers(100, 20_000_000),
    currency=st.sampled_from(("USD", "EUR", "BRL", "JPY", "KWD", "CHF")),
    method=st.sampled_from(("card", "card", "wallet", "bnpl")),
    card=st.sampled_from(CARDS),
)
breaker_states = st.sampled_from(("closed", "open", "half_open"))


def state_with(c: dict[str, Any], evidence: dict[str, tuple[int, int]], breakers: dict[str, str]) -> RoutingState:
    # an open breaker opened just now (still cooling down); half-open as after a cool-down
    bs = tuple(Breaker(p, state=s, since_ms=T0_MS, now_ms=T0_MS) for p, s in sorted(breakers.items()))
    return RoutingState(bs, arms_for(seg(c), evidence))


@settings(max_examples=300, deadline=None)
@given(
    commands,
    st.dictionaries(st.sampled_from(CARD_ROUTES + ("wallet_pay",)), arm_counts),
    st.dictionaries(st.sampled_from(CARD_ROUTES), breaker_states),
)
def test_never_an_ineligible_provider_and_the_same_input_gives_the_same_choice(c, evidence, breakers):
    state = state_with(c, evidence, breakers)
    ranked = LEARN._ranked(state, c, T0_MS)
    eligible = {name for _, name, _ in ranked}
    segment, learned = LEARN.choice(state, c, c["payment_id"], ranked)
    assert segment == seg(c)
    assert learned is None or learned in eligible
    seen = sum(sum(evidence[p]) for p in eligible if p in evidence)
    if ranked and all(closed for closed, _, _ in ranked) and seen >= CFG.min_observations:
        assert learned is not None  # evidence enough: the learner decides
    if seen < CFG.min_observations:
        assert learned is None  # too little: the rule decides
    if learned is not None:  # eligible means: takes the method, the currency, the amount; breaker lets it through
        route = next(r for r in LEARN.routes if r.provider == learned)
        assert c["currency"] in route.currencies and route.kind in LEARN.config.methods[c["method"]]
        assert breakers.get(learned, "closed") == "closed"
    # a pure function of (state, payment): again, and from the state's stored bytes
    restored = RoutingState.from_json(state.to_json())
    assert restored == state
    assert LEARN.choice(restored, c, c["payment_id"], LEARN._ranked(restored, c, T0_MS)) == (segment, learned)


@settings(max_examples=200, deadline=None)
@given(commands, st.dictionaries(st.sampled_from(CARD_ROUTES), st.tuples(st.integers(0, 7), st.integers(0, 7))))
def test_below_the_data_threshold_the_rule_router_decides(c, evidence):
    state = state_with(c, evidence, {})
    assert sum(a + d for a, d in evidence.values()) < CFG.min_observations
    _, learned = LEARN.choice(state, c, c["payment_id"], LEARN._ranked(state, c, T0_MS))
    assert learned is None


def test_the_fine_segment_is_read_once_every_candidate_has_enough_there():
    c = cmd(0, amount=2_000_000)
    fine, coarse = segments_of(seg(c))
    fees = [("acq_north", 50_025), ("acq_south", 58_030)]
    # the issuers' country says north; this amount band says south
    country = tuple(
        Arm(coarse, p, a * MILLI, d * MILLI, T0_MS)
        for p, (a, d) in (("acq_north", (970, 30)), ("acq_south", (960, 40)))
    )
    young = country + tuple(
        Arm(fine, p, a * MILLI, d * MILLI, T0_MS) for p, (a, d) in (("acq_north", (60, 15)), ("acq_south", (70, 1)))
    )
    grown = country + tuple(
        Arm(fine, p, a * MILLI, d * MILLI, T0_MS) for p, (a, d) in (("acq_north", (800, 200)), ("acq_south", (990, 10)))
    )
    picks = lambda arms: [choose(arms, CFG, fine, fees, 2_000_000, f"pay_{i}") for i in range(200)]  # noqa: E731
    assert picks(young).count("acq_north") > 150  # one candidate below fine_observations: the coarse level
    assert picks(grown).count("acq_south") > 190


def test_a_half_open_route_keeps_its_probes_first():
    c = cmd(1)
    state = state_with(c, {"acq_north": (0, 300), "acq_south": (300, 0)}, {"acq_north": "half_open"})
    _, learned = LEARN.choice(state, c, "pay_1", LEARN._ranked(state, c, T0_MS))
    assert learned is None and LEARN.rank(state, c, T0_MS)[0][0] == "acq_north"


def test_the_choice_follows_the_evidence_and_explores_a_little():
    c = cmd(0)
    arms = arms_for(seg(c), {"acq_north": (150, 50), "acq_south": (190, 10)})
    picks = [
        choose(arms, CFG, seg(c), [("acq_north", 275), ("acq_south", 320)], 10_000, f"pay_{i}") for i in range(400)
    ]
    assert picks.count("acq_south") > 360  # 95 % against 75 %: south, though dearer
    # equal odds: the cheaper route wins most draws, the other still gets some (exploration)
    arms = arms_for(seg(c), {"acq_north": (40, 10), "acq_south": (40, 10)})
    picks = [
        choose(arms, CFG, seg(c), [("acq_north", 275), ("acq_south", 320)], 10_000, f"pay_{i}") for i in range(400)
    ]
    assert 200 < picks.count("acq_north") < 400 and picks.count("acq_south") > 20


def test_cost_matters_when_the_odds_are_close():
    c = cmd(0, amount=100_000)
    arms = arms_for(seg(c), {"acq_north": (4_000, 200), "acq_south": (4_000, 180)})  # 95.2 % vs 95.7 %
    fees = [
        ("acq_north", RULE.routes[0].pricing.fee_minor(100_000)),
        ("acq_south", RULE.routes[1].pricing.fee_minor(100_000)),
    ]
    assert [r.provider for r in RULE.routes[:2]] == ["acq_north", "acq_south"]
    picks = [choose(arms, CFG, seg(c), fees, 100_000, f"pay_{i}") for i in range(200)]
    # 0.5 points of approval on 20 % margin (100 minor) is less than 40 bps + 5 (405): north
    assert picks.count("acq_north") > 180


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.sampled_from(CARD_ROUTES), st.booleans()), max_size=300))
def test_evidence_is_bounded_decayed_and_sorted(answers):
    small = replace(CFG, max_arms=16)
    arms: tuple[Arm, ...] = ()
    for i, (s, provider, approved) in enumerate(answers):
        arms = observe(arms, small, f"card|US|USD|{s}", provider, approved, T0_MS + i)
        assert len(arms) <= 16
        assert arms == tuple(sorted(arms, key=lambda a: (a.segment, a.provider)))
    for a in arms:  # decayed: never more than the geometric series' limit
        assert 0 <= a.approved_milli + a.declined_milli <= MILLI * 1000 // (1000 - small.decay_per_mille) + MILLI


def test_segments_by_method_country_currency_and_amount_band():
    assert seg(cmd(0, card=("555555", "4444"))) == "card|BR|USD|2"
    assert seg(cmd(0, card=("424242", "4242"), currency="EUR", amount=2_000_000)) == "card|US|EUR|4"
    assert seg(cmd(0, method="wallet")) == "wallet|ZZ|USD|2"
    assert [amount_band(a, (1000, 10_000)) for a in (1, 999, 1000, 10_000, 10**9)] == [0, 0, 1, 2, 2]


def test_the_learning_router_moves_a_weak_issuers_cards_to_the_acquirer_that_approves_them():
    rails = build_rails(5)
    state = RoutingState()
    firsts = []
    for i in range(600):
        c = cmd(i, card=("555555", "4444"))
        routed = LEARN.authorize(state, rails, c, f"k{i}", Call(c["payment_id"], "USD", T0_MS + i * 200))
        state = routed.state
        firsts.append(routed.attempts[0].provider)
    # rails.toml: north declines 8 % of 5555 cards, south 3.5 %; at 20 % margin that is worth south's fee
    assert firsts[:30].count("acq_north") == 30  # the rule router's choice while it learns
    assert firsts[-200:].count("acq_south") > 120  # mostly south; north still explored (close odds)
    assert RoutingState.from_json(state.to_json()) == state


# --- soft declines ---


def key_declined_by(rails, provider: str, reason: str, card=("424242", "4242")) -> str:
    """A provider key the rail answers with `reason` (its draws are a hash of the key)."""
    for i in range(10_000):
        key = f"probe_{i}"
        r = rails[provider].authorize(key, *card, 10_000, "USD", Call(key, "USD", T0_MS))
        if r.reason == reason:
            return key
    raise AssertionError("no such key")


def test_a_soft_decline_is_retried_once_at_another_acquirer_under_its_own_key():
    finder = build_rails(8)
    key = key_declined_by(finder, "acq_north", "do_not_honor")
    rails = build_rails(8)
    c = cmd(1)
    routed = RULE.authorize(RoutingState(), rails, c, key, Call("pay_1", "USD", T0_MS), soft_key="soft_1")
    assert [(a.provider, a.status, a.reason) for a in routed.attempts][0] == ("acq_north", "declined", "do_not_honor")
    assert routed.attempts[1].provider == "acq_south" and routed.soft_retries == 1 and len(routed.attempts) == 2
    assert routed.provider == "acq_south" and routed.key == "soft_1"
    assert ("authorize", "soft_1") in rails["acq_south"].records and ("authorize", key) not in rails[
        "acq_south"
    ].records
    # a redelivery repeats the same calls under the same keys: the same answers, nothing new processed
    n = {name: len(r.records) for name, r in rails.items()}
    again = RULE.authorize(RoutingState(), rails, c, key, Call("pay_1", "USD", T0_MS), soft_key="soft_1")
    assert again.result == routed.result and {name: len(r.records) for name, r in rails.items()} == n
    # without a second key there is no retry
    single = RULE.authorize(RoutingState(), build_rails(8), c, key, Call("pay_1", "USD", T0_MS))
    assert single.result.reason == "do_not_honor" and len(single.attempts) == 1 and single.key == key


def test_a_hard_decline_is_never_retried():
    rails = build_rails(8)
    c = cmd(1, card=("400000", "0002"))  # the test card declined card_declined everywhere
    routed = RULE.authorize(RoutingState(), rails, c, "k", Call("pay_1", "USD", T0_MS), soft_key="soft")
    assert routed.result.reason == "card_declined" and len(routed.attempts) == 1 and not rails["acq_south"].records
    finder = build_rails(8)
    key = key_declined_by(finder, "acq_north", "insufficient_funds")
    routed = RULE.authorize(RoutingState(), build_rails(8), cmd(2), key, Call("pay_2", "USD", T0_MS), soft_key="soft")
    assert routed.result.reason == "insufficient_funds" and len(routed.attempts) == 1


def test_a_soft_decline_stands_when_no_other_route_answers():
    finder = build_rails(8)
    key = key_declined_by(finder, "acq_north", "do_not_honor")
    rails = build_rails(8, schedules={"acq_south": (Window(T0_MS, T0_MS + 60_000, "outage"),)})
    routed = RULE.authorize(RoutingState(), rails, cmd(1), key, Call("pay_1", "USD", T0_MS), soft_key="soft_1")
    assert routed.provider == "acq_north" and routed.key == key and routed.result.reason == "do_not_honor"
    assert [a.provider for a in routed.attempts] == ["acq_north", "acq_south", "acq_south"]
    # BRL: acq_south alone takes it; nowhere else to go
    finder = build_rails(8)
    key = key_declined_by(finder, "acq_south", "do_not_honor")
    routed = RULE.authorize(
        RoutingState(), build_rails(8), cmd(3, currency="BRL"), key, Call("pay_3", "BRL", T0_MS), soft_key="soft_3"
    )
    assert routed.result.reason == "do_not_honor" and len(routed.attempts) == 1
