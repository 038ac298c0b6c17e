"""The saga through the router: failover within a create, the router state threaded
through `decide`, and the double-charge properties checked against the rails' own
records (the provider side) and the payment events (what the ledger posts)."""

from __future__ import annotations

from collections import Counter
from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.providers.rails import Rail, Window, build_rails, load_rail_configs
from connectors.providers.router import RoutingState, build_router
from schemas.times import to_ms
from streams.domain.payments import Payment, Policy, Saga, decide
from tests.unit.streams.conftest import T0, Commands

POLICY = Policy()
T0_MS = to_ms(T0)
ROUTER = build_router(load_rail_configs())
CMDS = Commands()


def saga_over(rails: dict[str, Rail]) -> Saga:
    return Saga(dict(rails), ROUTER)


def with_card(cmd: dict[str, Any], card_bin: str, last4: str) -> dict[str, Any]:
    return cmd | {"card": cmd["card"] | {"bin": card_bin, "last4": last4}}


def run(rails: dict[str, Rail], creates: list[dict[str, Any]]):
    """Each create through decide, the routing state threaded, each resolve the stage
    would send itself applied right after: payments, events, routed decisions."""
    saga, state = saga_over(rails), RoutingState()
    payments: dict[str, Payment] = {}
    events: list[dict[str, Any]] = []
    routed = []
    queue = list(creates)
    while queue:
        cmd = queue.pop(0)
        d = decide(payments.get(cmd["payment_id"]), cmd, saga, POLICY, state)
        state = d.routing
        if d.payment is not None:
            payments[cmd["payment_id"]] = d.payment
        events += d.events
        if d.routed is not None:
            routed.append(d.routed)
        queue[:0] = list(d.commands)
    return payments, events, routed, state


def approved_auths(rails: dict[str, Rail]) -> Counter[str]:
    """Payments with an approved authorization, counted over every rail."""
    return Counter(pid for rail in rails.values() for pid in rail.authorized())


def check_no_double_charge(rails, payments, events, routed) -> None:
    records = [r for rail in rails.values() for r in rail.records.values() if r.operation == "authorize"]
    processed = Counter(r.payment_id for r in records)
    soft = Counter(r.payment_id for r in records if r.result.reason in ROUTER.config.soft_retry.codes)
    # a second provider processes an authorization only after a soft decline at the first
    assert all(n == 1 or (n == 2 and soft[pid] >= 1) for pid, n in processed.items()), (
        "an authorization reached two providers"
    )
    auths = approved_auths(rails)
    assert max(auths.values(), default=0) <= 1, "authorized twice"
    authorized_events = Counter(e["payment_id"] for e in events if e["type"] == "authorized")
    assert max(authorized_events.values(), default=0) <= 1
    for pid, p in payments.items():
        if p.status == "pending":
            assert authorized_events[pid] == 0
            continue
        # the ledger shows an authorization exactly when the provider holds one, there
        assert authorized_events[pid] == auths[pid], (pid, p.status)
        if auths[pid]:
            assert pid in rails[p.provider].authorized()
    for r in routed:
        unknown = [i for i, a in enumerate(r.attempts) if a.status == "unknown"]
        assert unknown in ([], [len(r.attempts) - 1]), "a timed-out call was failed over"
        if unknown:
            assert r.provider == r.attempts[-1].provider


def test_primary_outage_mid_run_approvals_recover_through_failover_and_nothing_is_charged_twice():
    outage = (Window(T0_MS + 20_000, T0_MS + 60_000, "outage"),)
    rails = build_rails(11, schedules={"acq_north": outage})
    creates = [CMDS.create(f"order-{i}", at=T0 + timedelta(milliseconds=250 * i)) for i in range(400)]
    payments, events, routed, state = run(rails, creates)
    check_no_double_charge(rails, payments, events, routed)

    def approval(lo_ms: int, hi_ms: int) -> float:
        inside = [p for p in payments.values() if lo_ms <= p.created_at_ms < hi_ms]
        return sum(p.status == "captured" for p in inside) / len(inside)

    before, during = approval(T0_MS, T0_MS + 20_000), approval(T0_MS + 20_000, T0_MS + 60_000)
    assert during >= before - 0.05 and during > 0.9
    by_provider = Counter(p.provider for p in payments.values())
    assert by_provider["acq_south"] >= 100 and by_provider["acq_north"] >= 150  # back on the primary after
    trips = [t for r in routed for t in r.transitions if t.to_state == "open"]
    assert trips and {t.provider for t in trips} == {"acq_north"}
    assert sum(r.failovers for r in routed) >= 1
    # captures happen where the authorization is, once each
    captures = Counter(
        r.payment_id for rail in rails.values() for r in rail.records.values() if r.operation == "capture"
    )
    assert set(captures.values()) == {1}
    for pid in captures:
        assert "capture" in {r.operation for r in rails[payments[pid].provider].records.values() if r.payment_id == pid}


def test_timeout_then_late_success_is_one_charge_at_the_provider_that_timed_out():
    partition = (Window(T0_MS, T0_MS + 1_000, "partition"),)
    rails = build_rails(5, schedules={"acq_north": partition})
    create = CMDS.create("order-late", at=T0)
    payments, events, routed, _ = run(rails, [create])
    (p,) = payments.values()
    # the resolve the stage sent itself is dated like the create, inside the partition:
    # status queries get no answer either, and the payment waits for ops
    assert p.status == "pending" and p.provider == "acq_north"
    assert [e["type"] for e in events] == ["authorization_pending"]
    # the same query once the partition has healed finds the delayed success
    resolve = {
        **create,
        "kind": "resolve",
        "command_id": "resolve-late",
        "idempotency_key": "resolve-late",
        "amount_minor": None,
        "currency": None,
        "capture_method": None,
        "card": None,
        "occurred_at": T0 + timedelta(seconds=5),
    }
    p = p.__class__(**{**p.__dict__, "resolve_attempts": 0})  # ops reset the counter
    d = decide(p, resolve, saga_over(rails), POLICY, RoutingState())
    assert d.payment.status == "captured" and [e["type"] for e in d.events] == ["authorized", "captured"]
    assert d.routed is None and d.routing == RoutingState()  # a resolve does not route
    assert approved_auths(rails) == Counter({p.payment_id: 1}) and not rails["acq_south"].records
    check_no_double_charge(rails, {p.payment_id: d.payment}, events + list(d.events), routed)


def test_decide_passes_the_routing_state_through_commands_that_do_not_route():
    rails = build_rails(1)
    create = CMDS.create("order-1", capture_method="manual")
    d = decide(None, create, saga_over(rails), POLICY, RoutingState())
    assert d.routed is not None and d.routing.breaker("acq_north").totals().calls == 1
    void = CMDS.void(create["payment_id"], "void-1")
    d2 = decide(d.payment, void, saga_over(rails), POLICY, d.routing)
    assert d2.routing is d.routing and d2.payment.status == "voided"
    assert ("void", d2.events[0]["provider_ref"]) in rails["acq_north"].records
    replay = decide(d.payment, create, saga_over(rails), POLICY, d.routing)
    assert replay.routed is None and rails["acq_north"].calls == 2  # a replayed create calls no provider


WINDOW = st.tuples(st.sampled_from(("outage", "degraded", "partition")), st.integers(0, 60_000), st.integers(1, 40_000))
CARDS = st.sampled_from(
    [("424242", "4242")] * 6 + [("555555", "4444"), ("400000", "0002"), ("400000", "0119"), ("400000", "0341")]
)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    north=st.lists(WINDOW, max_size=3),
    south=st.lists(WINDOW, max_size=3),
    payments=st.lists(
        st.tuples(CARDS, st.sampled_from((100, 9_999, 700_000)), st.integers(0, 900)), min_size=1, max_size=60
    ),
)
def test_no_payment_is_authorized_at_two_providers_and_no_timeout_is_failed_over(seed, north, south, payments):
    def windows(spec):
        return tuple(
            Window(T0_MS + s, T0_MS + s + d, mode, error_per_mille=500, latency_factor=20)
            for mode, s, d in sorted(spec, key=lambda w: w[1])
        )

    rails = build_rails(seed, schedules={"acq_north": windows(north), "acq_south": windows(south)})
    at, creates = T0, []
    for i, (card, amount, gap_ms) in enumerate(payments):
        at += timedelta(milliseconds=gap_ms)
        creates.append(with_card(CMDS.create(f"order-{i}", amount=amount, at=at), *card))
    result_payments, events, routed, _ = run(rails, creates)
    assert len(result_payments) == len(creates)
    check_no_double_charge(rails, result_payments, events, routed)


def test_a_soft_decline_is_retried_at_another_acquirer_and_the_events_show_the_attempts():
    from connectors.providers.simulated import Call
    from streams.domain.payments import authorization_keys

    finder = build_rails(4)
    for i in range(2_000):  # a payment whose authorization acq_north answers do_not_honor
        create = CMDS.create(f"order-soft-{i}", at=T0)
        key, soft_key = authorization_keys(create["payment_id"])
        if (
            finder["acq_north"]
            .authorize(key, "424242", "4242", create["amount_minor"], "USD", Call(create["payment_id"], "USD", T0_MS))
            .reason
            == "do_not_honor"
        ):
            break
    rails = build_rails(4)
    payments, events, routed, _ = run(rails, [create])
    (p,) = payments.values()
    assert p.provider == "acq_south" and p.provider_ref == soft_key and p.status == "captured"
    authorized = next(e for e in events if e["type"] == "authorized")
    assert authorized["attempts"] == [
        {"provider": "acq_north", "status": "declined", "reason_code": "do_not_honor", "retryable": False},
        {"provider": "acq_south", "status": "approved", "reason_code": None, "retryable": False},
    ]
    assert "attempts" not in next(e for e in events if e["type"] == "captured")  # only the deciding event
    # the capture went where the authorization is, under the soft retry's payment
    assert any(r.operation == "capture" for r in rails["acq_south"].records.values())
    check_no_double_charge(rails, payments, events, routed)
    # a redelivered create (same command, fresh state as restored) calls under the same keys: nothing new
    n = {name: len(r.records) for name, r in rails.items()}
    d = decide(None, create, saga_over(rails), POLICY, RoutingState())
    assert d.payment.provider == "acq_south" and {name: len(r.records) for name, r in rails.items()} == n


def test_one_call_events_stay_as_they_were():
    _, events, _, _ = run(build_rails(1), [CMDS.create("order-plain", at=T0)])
    assert all("attempts" not in e for e in events)
