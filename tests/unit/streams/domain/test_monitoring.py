"""Transaction monitoring's rules over event-time windows, and the case queue's decisions:
examples of each rule, then properties over arbitrary activity (no case without its
rule's condition, measures that are what the window held, one case per window and
evidence in at most one case, bounded state)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.state import state_json
from streams.domain import monitoring as mon
from streams.domain.monitoring import (
    BUCKETS,
    CAPTURE,
    DAY_MS,
    HOUR_MS,
    REFUND,
    Activity,
    MonitoringCase,
    MonitoringError,
    SubjectState,
    Thresholds,
    observe,
)

T = Thresholds()
T0 = 1_780_000_000_000
AT = datetime(2026, 12, 6, 18, tzinfo=UTC)


def act(
    kind: str,
    subject: str,
    amount: int,
    at_ms: int,
    *,
    subject_kind: str = "card",
    pid: str | None = None,
    currency: str = "USD",
    merchant: str = "m_1",
    card: str | None = None,
) -> Activity:
    pid = pid or f"pay_{kind}_{amount}_{at_ms}"
    return Activity(
        f"{pid}/{kind}/{subject_kind}", subject_kind, subject, kind, pid, merchant, currency, amount, at_ms, card
    )


def feed(
    activities: list[Activity], t: Thresholds = T
) -> tuple[list[tuple[int, MonitoringCase]], dict[tuple[str, str], SubjectState]]:
    """Each activity through its subject's state, round-tripped through bytes as the stage keeps it."""
    states: dict[tuple[str, str], SubjectState] = {}
    cases: list[tuple[int, MonitoringCase]] = []
    for i, a in enumerate(activities):
        key = (a.subject_kind, a.subject_id)
        state, opened = observe(states.get(key), a, t)
        if state is None:
            states.pop(key, None)
        else:
            states[key] = SubjectState.from_bytes(state.to_bytes())
        cases += [(i, c) for c in opened]
    return cases, states


# --- the rules, by example ---


def test_three_captures_just_under_the_threshold_in_two_days_are_structuring() -> None:
    acts = [
        act(CAPTURE, "tok_a", 9_500_00, T0),
        act(CAPTURE, "tok_a", 9_900_00, T0 + HOUR_MS),
        act(CAPTURE, "tok_a", 5_000_00, T0 + 2 * HOUR_MS),  # not near the threshold: not counted
        act(CAPTURE, "tok_a", 9_000_00, T0 + 40 * HOUR_MS),
    ]
    cases, states = feed(acts)
    ((i, case),) = cases
    assert i == 3 and case.rule == "structuring" and (case.subject_kind, case.subject_id) == ("card", "tok_a")
    assert [e.amount_minor for e in case.evidence] == [9_500_00, 9_900_00, 9_000_00]
    assert case.measures == {"payments": 3, "total_minor": 28_400_00, "threshold_minor": 10_000_00}
    assert (case.window_start_ms, case.window_end_ms, case.opened_at_ms) == (T0 + 40 * HOUR_MS - 2 * DAY_MS + 1,) + (
        T0 + 40 * HOUR_MS,
    ) * 2
    assert case.currency == "USD" and case.merchant_id == "m_1" and "10000.00 USD" in case.summary
    assert (
        mon.STRUCTURING not in states[("card", "tok_a")].rules
        or states[("card", "tok_a")].rules[mon.STRUCTURING].items == []
    )


def test_structuring_needs_the_captures_inside_one_window_and_one_currency() -> None:
    spread = [
        act(CAPTURE, "tok_a", 9_500_00, T0),
        act(CAPTURE, "tok_a", 9_500_00, T0 + DAY_MS),
        act(CAPTURE, "tok_a", 9_500_00, T0 + 2 * DAY_MS),
    ]  # the first left the window as the third came
    assert feed(spread)[0] == []
    mixed = [
        act(CAPTURE, "tok_b", 9_500_00, T0, currency="USD"),
        act(CAPTURE, "tok_b", 9_500_00, T0 + 1, currency="EUR"),
        act(CAPTURE, "tok_b", 9_500_00, T0 + 2, currency="USD"),
    ]
    assert feed(mixed)[0] == []
    at_threshold = [act(CAPTURE, "tok_c", 10_000_00, T0 + i) for i in range(5)]  # reported anyway: not structuring
    assert feed(at_threshold)[0] == []
    no_threshold = [act(CAPTURE, "tok_d", 9_500_00, T0 + i, currency="JPY") for i in range(5)]
    assert feed(no_threshold)[0] == []


def test_refunding_most_of_a_day_s_captured_volume_is_rapid_in_and_out() -> None:
    acts = [
        act(CAPTURE, "m_1", 600_00, T0, subject_kind="merchant", pid="p1"),
        act(CAPTURE, "m_1", 600_00, T0 + HOUR_MS, subject_kind="merchant", pid="p2"),
        act(REFUND, "m_1", 600_00, T0 + 2 * HOUR_MS, subject_kind="merchant", pid="p1"),
        act(REFUND, "m_1", 400_00, T0 + 3 * HOUR_MS, subject_kind="merchant", pid="p2"),
    ]
    cases, _ = feed(acts)
    ((i, case),) = cases
    assert i == 3 and case.rule == "rapid_in_out" and case.merchant_id == "m_1"
    assert case.measures == {"captured_minor": 1_200_00, "captures": 2, "refunded_minor": 1_000_00, "refunds": 2}
    assert [(e.payment_id, e.kind) for e in case.evidence] == [
        ("p1", "capture"),
        ("p2", "capture"),
        ("p1", "refund"),
        ("p2", "refund"),
    ]
    small = [
        act(CAPTURE, "m_2", 50_00, T0, subject_kind="merchant"),
        act(REFUND, "m_2", 50_00, T0 + 1, subject_kind="merchant"),
    ]
    assert feed(small)[0] == []  # under the minimum volume


def test_a_refund_ratio_over_half_with_five_refunds_is_refund_abuse_for_card_and_merchant() -> None:
    for kind, subject in (("card", "tok_r"), ("merchant", "m_r")):
        acts = [act(CAPTURE, subject, 10_00, T0 + i * HOUR_MS, subject_kind=kind, pid=f"p{i}") for i in range(8)]
        acts += [act(REFUND, subject, 10_00, T0 + (8 + i) * HOUR_MS, subject_kind=kind, pid=f"p{i}") for i in range(5)]
        cases, _ = feed(acts)
        assert [c.rule for _, c in cases] == ["refund_abuse"], kind
        assert cases[0][1].measures["refunds"] == 5 and cases[0][1].measures["captures"] == 8


def test_five_cards_from_one_device_in_a_day() -> None:
    acts = [
        act("attempt", "dev_1", 10_00, T0 + i * HOUR_MS, subject_kind="device", card=f"tok_{i % 4}") for i in range(8)
    ]
    assert feed(acts)[0] == []  # four cards, used again and again
    acts.append(act("attempt", "dev_1", 10_00, T0 + 9 * HOUR_MS, subject_kind="device", card="tok_new"))
    cases, _ = feed(acts)
    ((_, case),) = cases
    assert case.rule == "many_cards_per_device" and case.measures == {"cards": 5} and case.currency is None
    assert sorted(e.card_token for e in case.evidence) == ["tok_0", "tok_1", "tok_2", "tok_3", "tok_new"]


def test_a_case_consumes_its_window_and_late_activity_is_not_counted() -> None:
    acts = [act(CAPTURE, "tok_a", 9_500_00, T0 + i) for i in range(3)]
    acts.append(act(CAPTURE, "tok_a", 9_500_00, T0 + 1, pid="late_but_inside_the_case"))  # at or before the case's end
    acts += [act(CAPTURE, "tok_a", 9_500_00, T0 + 10 + i) for i in range(2)]
    cases, _ = feed(acts)
    assert len(cases) == 1  # the fourth and the two after it are not three new ones
    too_late = [act(CAPTURE, "tok_b", 9_500_00, T0 + 3 * DAY_MS)] + [
        act(CAPTURE, "tok_b", 9_500_00, T0 + i) for i in range(3)
    ]
    assert feed(too_late)[0] == []


def test_state_round_trips_and_an_idle_subject_expires() -> None:
    state, _ = observe(None, act(CAPTURE, "m_1", 10_00, T0, subject_kind="merchant"), T)
    assert state is not None and SubjectState.from_bytes(state.to_bytes()) == state
    assert not mon.expired(state, T0 + T.retention_ms - 1, T) and mon.expired(state, T0 + T.retention_ms, T)


def test_a_volume_past_what_the_state_can_store_is_refused_with_its_activity() -> None:
    big = mon.STORED_SUM_MAX // 2 + 1  # each storable, two past 64 bits
    state, _ = observe(None, act(CAPTURE, "m_1", big, T0, subject_kind="merchant"), T)
    assert state is not None and SubjectState.from_bytes(state.to_bytes()) == state
    with pytest.raises(MonitoringError, match="invalid_amount"):
        observe(state, act(CAPTURE, "m_1", big, T0 + 1, subject_kind="merchant"), T)


def test_unusable_activities_and_thresholds_are_refused() -> None:
    with pytest.raises(MonitoringError, match="invalid_kind"):
        act("attempt", "tok_a", 1, T0)
    with pytest.raises(MonitoringError, match="invalid_kind"):
        act("attempt", "dev", 1, T0, subject_kind="device")  # no card
    with pytest.raises(MonitoringError, match="invalid_amount"):
        act(CAPTURE, "tok_a", -1, T0)
    with pytest.raises(MonitoringError, match="invalid_subject"):
        act(CAPTURE, "", 1, T0)
    with pytest.raises(MonitoringError, match="invalid_threshold"):
        Thresholds(structuring_payments=1)
    with pytest.raises(MonitoringError, match="invalid_threshold"):
        Thresholds(reporting_threshold_minor={"XXX": 1})


# --- decisions ---


def test_decisions_move_a_case_and_closed_cases_take_none() -> None:
    assert mon.decided("open", "escalate") == "escalated"
    assert mon.decided("escalated", "report") == "reported"
    assert mon.decided("open", "dismiss") == "dismissed"
    with pytest.raises(MonitoringError, match="case_closed"):
        mon.decided("reported", "dismiss")
    with pytest.raises(MonitoringError, match="invalid_transition"):
        mon.decided("escalated", "escalate")
    with pytest.raises(MonitoringError, match="invalid_decision"):
        mon.decided("open", "approve")


def test_a_decision_record_names_who_what_why_and_when() -> None:
    d = mon.decision_record("case_1", "open", "escalate", " alice ", " structuring pattern, needs a senior ", AT)
    assert d == {
        "decision_id": mon.decision_id("case_1", "escalate", "alice", AT),
        "case_id": "case_1",
        "decision": "escalate",
        "operator": "alice",
        "reason": "structuring pattern, needs a senior",
        "decided_at": AT,
    }
    assert mon.decision_id("case_1", "escalate", "alice", AT + timedelta(milliseconds=1)) != d["decision_id"]
    with pytest.raises(MonitoringError, match="invalid_reason"):
        mon.decision_record("case_1", "open", "dismiss", "alice", "  ", AT)
    with pytest.raises(MonitoringError, match="invalid_operator"):
        mon.decision_record("case_1", "open", "dismiss", "x" * 65, "fine", AT)
    with pytest.raises(MonitoringError, match="case_closed"):
        mon.decision_record("case_1", "dismissed", "report", "alice", "fine", AT)


def test_the_fold_applies_decisions_in_time_order_and_skips_a_raced_one() -> None:
    esc = mon.decision_record("c", "open", "escalate", "alice", "why", AT)
    rep = mon.decision_record("c", "escalated", "report", "bob", "filed", AT + timedelta(seconds=5))
    late = mon.decision_record("c", "escalated", "dismiss", "carol", "raced", AT + timedelta(seconds=9))
    status, trail = mon.fold_decisions([late, rep, esc])
    assert status == "reported" and trail == [esc, rep]
    assert mon.fold_decisions([]) == ("open", [])


# --- properties ---

SUBJECTS = [("card", "tok_a"), ("card", "tok_b"), ("merchant", "m_1"), ("device", "dev_1")]
SMALL = Thresholds(
    structuring_payments=3,
    structuring_window_ms=10 * HOUR_MS,
    rapid_window_ms=6 * HOUR_MS,
    rapid_min_captured_minor=1_000,
    refund_window_ms=12 * HOUR_MS,
    refund_min_refunds=2,
    device_window_ms=6 * HOUR_MS,
    device_cards=3,
    evidence_max=4,
    currencies_max=2,
    reporting_threshold_minor={"USD": 10_000, "EUR": 10_000},
)
# Room for every currency drawn: a currency pushed out (currencies_max) is forgotten, not measured.
ROOMY = replace(SMALL, currencies_max=3)


@st.composite
def activities(draw: st.DrawFn, ordered: bool) -> list[Activity]:
    n = draw(st.integers(1, 60))
    out, clock = [], T0
    for i in range(n):
        kind, subject = draw(st.sampled_from(SUBJECTS))
        clock += draw(st.integers(0, 3 * HOUR_MS))
        at = clock if ordered else clock - draw(st.integers(0, 20 * HOUR_MS))
        currency = draw(st.sampled_from(["USD", "EUR", "GBP"]))
        amount = draw(st.one_of(st.integers(9_000, 9_999), st.integers(0, 20_000)))
        if kind == "device":
            out.append(
                act(
                    "attempt",
                    subject,
                    amount,
                    at,
                    subject_kind=kind,
                    pid=f"p{i}",
                    currency=currency,
                    card=draw(st.sampled_from(["tok_1", "tok_2", "tok_3", "tok_4"])),
                )
            )
        else:
            out.append(
                act(
                    draw(st.sampled_from([CAPTURE, REFUND])),
                    subject,
                    amount,
                    at,
                    subject_kind=kind,
                    pid=f"p{i}",
                    currency=currency,
                )
            )
    return out


def holds(case: MonitoringCase, t: Thresholds) -> bool:
    m = case.measures
    if case.rule == mon.STRUCTURING:
        return m["payments"] >= t.structuring_payments and all(
            t.near_threshold(e.currency, e.amount_minor) is not None and e.kind == CAPTURE for e in case.evidence
        )
    if case.rule == mon.RAPID_IN_OUT:
        return (
            m["captured_minor"] >= t.rapid_min_captured_minor
            and m["refunded_minor"] * 10_000 >= m["captured_minor"] * t.rapid_refunded_bps
        )
    if case.rule == mon.REFUND_ABUSE:
        return m["refunds"] >= t.refund_min_refunds and m["refunds"] * 10_000 >= m["captures"] * t.refund_ratio_bps
    return m["cards"] >= t.device_cards and len({e.card_token for e in case.evidence}) == m["cards"]


def check_common(acts: list[Activity], cases: list[tuple[int, MonitoringCase]], states: dict, t: Thresholds) -> None:
    ids = [c.case_id for _, c in cases]
    assert len(ids) == len(set(ids))
    used: dict[tuple[str, str, str], set] = defaultdict(set)
    for i, case in cases:
        assert holds(case, t), case
        assert case.rule in mon.SUBJECT_RULES[case.subject_kind]
        assert case.window_start_ms <= case.window_end_ms == case.opened_at_ms
        assert case.window_end_ms - case.window_start_ms < t.window_ms(case.rule) * (BUCKETS + 1) // BUCKETS
        inputs = {
            (a.payment_id, a.kind, a.at_ms, a.amount_minor)
            for a in acts[: i + 1]
            if (a.subject_kind, a.subject_id) == (case.subject_kind, case.subject_id)
        }
        for e in case.evidence:
            assert (e.payment_id, e.kind, e.at_ms, e.amount_minor) in inputs
            assert case.window_start_ms <= e.at_ms <= case.window_end_ms
            assert case.currency is None or e.currency == case.currency
            key = (case.rule, case.subject_kind, case.subject_id)
            assert (e.payment_id, e.kind) not in used[key], "evidence in two cases of one rule"
            used[key].add((e.payment_id, e.kind))
    for state in states.values():
        for rule, rs in state.rules.items():
            assert len(rs.buckets) <= t.currencies_max
            assert all(len(bs) <= BUCKETS + 1 for bs in rs.buckets.values())
            bound = {
                mon.STRUCTURING: (t.structuring_payments - 1) * t.currencies_max,
                mon.MANY_CARDS: t.device_cards - 1,
            }
            assert len(rs.items) <= bound.get(rule, t.evidence_max * t.currencies_max)


@settings(max_examples=150, deadline=None)
@given(activities(ordered=False))
def test_no_case_without_its_condition_and_state_stays_bounded(acts: list[Activity]) -> None:
    cases, states = feed(acts, SMALL)
    check_common(acts, cases, states, SMALL)


@settings(max_examples=150, deadline=None)
@given(activities(ordered=True))
def test_in_event_time_order_a_case_measures_exactly_its_window(acts: list[Activity]) -> None:
    cases, states = feed(acts, ROOMY)
    check_common(acts, cases, states, ROOMY)
    for i, case in cases:
        inside = [
            a
            for a in acts[: i + 1]
            if (a.subject_kind, a.subject_id) == (case.subject_kind, case.subject_id)
            and case.window_start_ms <= a.at_ms <= case.window_end_ms
            and (case.currency is None or a.currency == case.currency)
        ]
        m = case.measures
        if case.rule == mon.STRUCTURING:
            near = [a for a in inside if a.kind == CAPTURE and SMALL.near_threshold(a.currency, a.amount_minor)]
            assert m["payments"] == len(near) and m["total_minor"] == sum(a.amount_minor for a in near)
        elif case.rule == mon.MANY_CARDS:
            assert m["cards"] == len({a.card_token for a in inside})
        else:
            caps, refs = [a for a in inside if a.kind == CAPTURE], [a for a in inside if a.kind == REFUND]
            assert (m["captured_minor"], m["captures"], m["refunded_minor"], m["refunds"]) == (
                sum(a.amount_minor for a in caps),
                len(caps),
                sum(a.amount_minor for a in refs),
                len(refs),
            )


def test_a_merchant_s_rules_store_their_shared_evidence_once() -> None:
    acts = [act(CAPTURE, "m_1", 50_00, T0 + i, subject_kind="merchant", pid=f"p{i}") for i in range(4)]
    _, states = feed(acts)
    state = states[("merchant", "m_1")]
    assert state.rules[mon.RAPID_IN_OUT].items == state.rules[mon.REFUND_ABUSE].items
    assert len(state.to_bytes()) < len(state_json(state)) / 2  # the old format: each rule's items as objects
    assert SubjectState.from_bytes(state_json(state)) == state
    assert SubjectState.from_bytes(state_json(state)).to_bytes() == state.to_bytes()  # rewritten as small


@settings(max_examples=150, deadline=None)
@given(activities(ordered=False), st.lists(st.booleans(), min_size=60, max_size=60))
def test_states_written_before_the_shared_rows_read_the_same(acts: list[Activity], old_at: list[bool]) -> None:
    """A state in a changelog from before the shared evidence rows (each rule's items as
    objects: what `state_json` of the state wrote) reads as the state it was, and every
    later case is the one kept in memory alone would open, whichever steps wrote the old bytes."""
    by_bytes: dict[tuple[str, str], SubjectState] = {}
    in_memory: dict[tuple[str, str], SubjectState] = {}
    for i, a in enumerate(acts):
        key = (a.subject_kind, a.subject_id)
        read, opened = observe(by_bytes.get(key), a, SMALL)
        kept, expected = observe(in_memory.get(key), a, SMALL)
        assert opened == expected and read == kept
        if kept is None:
            by_bytes.pop(key, None)
            in_memory.pop(key, None)
            continue
        assert read is not None
        by_bytes[key] = SubjectState.from_bytes(state_json(read) if old_at[i] else read.to_bytes())
        assert by_bytes[key] == kept
        in_memory[key] = kept


@settings(max_examples=60, deadline=None)
@given(activities(ordered=True))
def test_in_order_every_structuring_pattern_opens_a_case(acts: list[Activity]) -> None:
    """Completeness for structuring: whenever a card's window holds enough near-threshold
    captures of one currency counted after its last case, a case opened then."""
    cases, _ = feed(acts, SMALL)
    opened = {i for i, c in cases if c.rule == mon.STRUCTURING}
    cut: dict[str, int] = {}
    for i, a in enumerate(acts):
        if a.subject_kind != "card":
            continue
        start = max(a.at_ms - SMALL.structuring_window_ms + 1, cut.get(a.subject_id, -1) + 1)
        near = [
            b
            for b in acts[: i + 1]
            if (b.subject_kind, b.subject_id) == ("card", a.subject_id)
            and b.kind == CAPTURE
            and b.currency == a.currency
            and start <= b.at_ms
            and SMALL.near_threshold(b.currency, b.amount_minor)
        ]
        counted = (
            a.kind == CAPTURE
            and SMALL.near_threshold(a.currency, a.amount_minor)
            and a.at_ms > cut.get(a.subject_id, -1)
        )
        if counted and len(near) >= SMALL.structuring_payments:
            assert i in opened
            cut[a.subject_id] = a.at_ms
        else:
            assert i not in opened
