"""The monitoring stage over plain dicts: the payments stage's forward (one activity per
subject), then applying each activity once in its subject's partition, cases out, idle
state swept."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.partitioning import partition_for
from schemas.times import from_ms
from streams.domain.monitoring import HOUR_MS, Thresholds
from streams.stages import monitoring as monitoring_stage
from streams.stages.monitoring import Subjects, activities, case_record, handle, mark_key, state_key, subject_key

ACTIVITY, CASE = Codec("MonitoringActivity"), Codec("MonitoringCase")
AT = datetime(2026, 12, 6, 12, tzinfo=UTC)
T = Thresholds()
PARTITIONS = 4


def event(
    kind: str, amount: int, *, pid: str = "pay_1", card: str | None = "tok_a", at: datetime = AT, merchant: str = "m_1"
) -> dict[str, Any]:
    return {
        "event_id": f"evt_{pid}_{kind}_{amount}_{at.timestamp()}",
        "type": kind,
        "payment_id": pid,
        "merchant_id": merchant,
        "currency": "USD",
        "amount_minor": amount,
        "card_token": card,
        "occurred_at": at,
    }


def create(device: str | None, pid: str = "pay_1", amount: int = 5_00) -> dict[str, Any]:
    return {
        "kind": "create",
        "payment_id": pid,
        "amount_minor": amount,
        "metadata": {"device": device} if device else None,
    }


# --- the forward ---


def test_a_capture_and_a_refund_are_seen_by_their_merchant_and_card() -> None:
    out = activities({"kind": "capture", "payment_id": "pay_1"}, [event("captured", 9_500_00), event("refunded", 100)])
    assert [(k, a["kind"], a["amount_minor"]) for k, a in out] == [
        (b"merchant:m_1", "capture", 9_500_00),
        (b"card:tok_a", "capture", 9_500_00),
        (b"merchant:m_1", "refund", 100),
        (b"card:tok_a", "refund", 100),
    ]
    assert len({a["activity_id"] for _, a in out}) == 4
    for _, a in out:
        assert ACTIVITY.decode(ACTIVITY.encode(a, check=True)) == a


def test_a_card_create_from_a_device_is_one_attempt_whatever_its_outcome() -> None:
    ((key, attempt),) = activities(create("dev-9"), [event("declined", 0)])
    assert key == b"device:dev-9" and (attempt["kind"], attempt["amount_minor"], attempt["card_token"]) == (
        "attempt",
        5_00,
        "tok_a",
    )
    out = activities(create("dev-9"), [event("authorized", 5_00), event("captured", 5_00)])  # automatic capture
    assert [k for k, _ in out] == [b"device:dev-9", b"merchant:m_1", b"card:tok_a"]


def test_what_is_not_monitored() -> None:
    assert activities(create(None), [event("authorized", 5_00)]) == []  # no device
    assert activities(create("dev-9"), [event("authorized", 5_00, card=None)]) == []  # not a card
    assert activities(create("x" * 201), [event("authorized", 5_00)]) == []  # not a device id we keep
    assert (
        activities({"kind": "capture", "payment_id": "pay_1", "metadata": {"device": "d"}}, [event("expired", 5_00)])
        == []
    )
    assert (
        activities(create("dev-9"), [event("authorized", 5_00, pid="pay_other")]) == []
    )  # a timer's event of another payment
    out = activities({"kind": "refund", "payment_id": "pay_1"}, [event("refunded", 100, card=None)])
    assert [k for k, _ in out] == [b"merchant:m_1"]  # a bank transfer's refund: the merchant only


# --- applying ---


class Partitions:
    """The stage's table of every partition, applying writes as the worker does."""

    def __init__(self, t: Thresholds = T) -> None:
        self.table: dict[bytes, bytes] = {}
        self.t = t
        self.cases: list[dict[str, Any]] = []

    def write(self, writes: list[tuple[bytes, bytes | None]]) -> None:
        for k, v in writes:
            if v is None:
                self.table.pop(k, None)
            else:
                self.table[k] = v

    def send(self, key: bytes, activity: dict[str, Any], batch: Subjects | None = None) -> Any:
        """Into `batch` (its states written by the caller at its end), else a batch of its own."""
        record = ACTIVITY.decode(ACTIVITY.encode(activity))  # as on the topic
        ts_ms = int(record["occurred_at"].timestamp() * 1000)
        subjects = Subjects() if batch is None else batch
        effects = handle(record, partition_for(key, PARTITIONS), ts_ms, self.table.get, self.t, subjects)
        self.write(effects.writes)
        if batch is None:
            self.write(subjects.writes())
        self.cases += [CASE.decode(CASE.encode(case_record(c), check=True)) for c in effects.cases]
        return effects


def structuring(card: str = "tok_s", n: int = 3) -> list[tuple[bytes, dict[str, Any]]]:
    out = []
    for i in range(n):
        out += activities(
            {"kind": "capture", "payment_id": f"pay_{i}"},
            [event("captured", 9_600_00 + i, pid=f"pay_{i}", card=card, at=AT + timedelta(hours=i))],
        )
    return out


def test_a_structuring_pattern_opens_one_case_and_a_redelivery_changes_nothing() -> None:
    p = Partitions()
    for key, a in structuring():
        p.send(key, a)
    (case,) = p.cases
    assert (case["rule"], case["subject_kind"], case["subject_id"], case["merchant_id"]) == (
        "structuring",
        "card",
        "tok_s",
        "m_1",
    )
    assert [e["payment_id"] for e in case["evidence"]] == ["pay_0", "pay_1", "pay_2"]
    assert case["opened_at"] == AT + timedelta(hours=2) and case["measures"]["payments"] == 3
    before = dict(p.table)
    for key, a in structuring():
        assert p.send(key, a).skipped
    assert p.table == before and len(p.cases) == 1


def test_an_unusable_activity_is_refused_with_its_reason() -> None:
    ((key, a),) = activities(create("dev-9"), [event("authorized", 5_00)])
    effects = Partitions().send(key, a | {"kind": "capture"})
    assert effects.refused is not None and effects.refused.reason == "invalid_kind" and effects.writes == []


def test_idle_subjects_and_marks_are_swept_by_event_time() -> None:
    p = Partitions()
    for key, a in structuring(n=2):
        p.send(key, a)
    p_card = partition_for(b"card:tok_s", PARTITIONS)
    assert state_key(p_card, subject_key("card", "tok_s")) in p.table
    assert any(k.startswith(f"{p_card}/a/evt_pay_0".encode()) for k in p.table)
    # Much later, other activity in the same partition moves its event time past the retention.
    later = AT + timedelta(milliseconds=T.retention_ms) + timedelta(hours=3)
    others = [f"tok_{i}" for i in range(400) if partition_for(f"card:tok_{i}".encode(), PARTITIONS) == p_card][:6]
    for i, card in enumerate(others):
        for key, a in activities(
            {"kind": "capture", "payment_id": f"late_{i}"},
            [event("captured", 10_00, pid=f"late_{i}", card=card, at=later + timedelta(seconds=i))],
        ):
            p.send(key, a)
    assert state_key(p_card, subject_key("card", "tok_s")) not in p.table
    assert not any(k.startswith(f"{p_card}/a/evt_pay_0".encode()) for k in p.table)
    late_mark = activities(
        {"kind": "capture", "payment_id": "late_0"}, [event("captured", 10_00, pid="late_0", card=others[0], at=later)]
    )[1][1]["activity_id"]
    assert mark_key(p_card, late_mark) in p.table  # the recent ones stay


SMALL = Thresholds(
    device_cards=3,
    device_window_ms=6 * HOUR_MS,
    structuring_window_ms=6 * HOUR_MS,
    reporting_threshold_minor={"USD": 10_000},
    refund_min_refunds=2,
    rapid_min_captured_minor=1_000,
)


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["dev-1", "dev-2"]),
            st.sampled_from(["tok_1", "tok_2", "tok_3", "tok_4"]),
            st.sampled_from(["captured", "refunded"]),
            st.integers(8_000, 10_000),
            st.integers(0, 2 * HOUR_MS),
            st.booleans(),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_redeliveries_open_no_case_twice(steps: list[tuple[str, str, str, int, int, bool]]) -> None:
    """Whatever is delivered again, the cases are those of one delivery of each activity."""
    once, twice = Partitions(SMALL), Partitions(SMALL)
    clock = AT
    for i, (device, card, kind, amount, gap_ms, again) in enumerate(steps):
        clock += timedelta(milliseconds=gap_ms)
        pid = f"pay_{i}"
        for key, a in activities(
            create(device, pid, amount),
            [
                event("authorized", amount, pid=pid, card=card, at=clock),
                event(kind, amount, pid=pid, card=card, at=clock),
            ],
        ):
            once.send(key, a)
            twice.send(key, a)
            if again:
                assert twice.send(key, a).skipped
    assert [c["case_id"] for c in twice.cases] == [c["case_id"] for c in once.cases]
    assert len({c["case_id"] for c in once.cases}) == len(once.cases)
    assert twice.table == once.table
    assert all(c["opened_at"] <= from_ms(int(clock.timestamp() * 1000)) for c in once.cases)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tok_1", "tok_2"]),
            st.sampled_from(["captured", "refunded"]),
            st.integers(8_000, 10_000),
            st.integers(0, 30 * 24 * HOUR_MS),  # past the retention now and then: swept states too
        ),
        min_size=1,
        max_size=30,
    )
)
def test_a_kept_state_gives_what_parsing_its_bytes_gives(steps: list[tuple[str, str, int, int]]) -> None:
    """The states kept beside their bytes: the same writes and cases as parsing each read."""
    kept, parsed = Partitions(SMALL), Partitions(SMALL)
    clock = AT
    for i, (card, kind, amount, gap_ms) in enumerate(steps):
        clock += timedelta(milliseconds=gap_ms)
        pid = f"pay_{i}"
        for key, a in activities(
            {"kind": "capture", "payment_id": pid}, [event(kind, amount, pid=pid, card=card, at=clock)]
        ):
            kept.send(key, a)
            monitoring_stage._subject_states.clear()
            parsed.send(key, a)
    assert parsed.table == kept.table and parsed.cases == kept.cases


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["tok_1", "tok_2", "tok_3"]),
            st.sampled_from(["m_1", "m_2"]),
            st.sampled_from(["captured", "refunded"]),
            st.integers(8_000, 10_000),
            st.integers(0, 30 * 24 * HOUR_MS),  # past the retention now and then: swept states too
            st.booleans(),  # the batch ends after this payment
        ),
        min_size=1,
        max_size=40,
    )
)
def test_states_written_at_the_batch_end_give_what_writing_each_gives(
    steps: list[tuple[str, str, str, int, int, bool]],
) -> None:
    """A batch's states written once at its end: the same table and cases as a batch a record."""
    each, batched = Partitions(SMALL), Partitions(SMALL)
    batch = Subjects()
    clock = AT
    for i, (card, merchant, kind, amount, gap_ms, ends) in enumerate(steps):
        clock += timedelta(milliseconds=gap_ms)
        pid = f"pay_{i}"
        for key, a in activities(
            {"kind": "capture", "payment_id": pid},
            [event(kind, amount, pid=pid, card=card, at=clock, merchant=merchant)],
        ):
            each.send(key, a)
            batched.send(key, a, batch)
        if ends:
            batched.write(batch.writes())
    batched.write(batch.writes())
    assert batched.table == each.table and batched.cases == each.cases
