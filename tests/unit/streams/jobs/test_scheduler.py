"""The scheduler's clock and plan, without a broker: event time from the wall clock
(lagged, monotonic, millisecond), which days are due, catch-up bounds, and the order
and retry rules of the daily jobs (the Kafka side is tests/integration/streams/jobs/test_scheduler_run.py)."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from streams.client import kyc as kyc_ops
from streams.domain import kyc
from streams.domain.sanctions import load_list
from streams.jobs.scheduler import JOB_ORDER, Scheduler, default_jobs, due_days, event_time, latest_due_day
from streams.settings import Settings

T = datetime(2026, 12, 6, 10, 30, 15, 123456, tzinfo=UTC)
D = date(2026, 12, 6)


def test_event_time_is_the_wall_clock_less_the_lag_in_milliseconds_and_never_goes_back() -> None:
    assert event_time(T, 120) == datetime(2026, 12, 6, 10, 28, 15, 123000, tzinfo=UTC)
    last = T
    assert event_time(T - timedelta(hours=1), 0, last) == last  # a wall clock stepped back holds time still
    assert event_time(T + timedelta(seconds=1), 0, last) > last


def test_a_day_is_due_once_the_clock_is_the_delay_past_its_end() -> None:
    end = datetime(2026, 12, 7, tzinfo=UTC)
    assert latest_due_day(end + timedelta(hours=1) - timedelta(milliseconds=1), 3600) == D - timedelta(days=1)
    assert latest_due_day(end + timedelta(hours=1), 3600) == D


def test_due_days_start_at_the_latest_then_owe_every_day_since_the_first_run_within_the_window() -> None:
    day = lambda k: D + timedelta(days=k)  # noqa: E731
    assert due_days({}, D, 7) == ([D], 0)  # never run: no backfill of the history
    assert due_days({day(-2): "succeeded"}, D, 7) == ([day(-1), D], 0)
    assert due_days({day(-2): "succeeded", day(-1): "failed"}, D, 7) == ([day(-1), D], 0)
    assert due_days({D: "succeeded"}, D, 7) == ([], 0)
    # Down for 10 days with a window of 3: the last 3 run, 7 older ones are reported.
    assert due_days({day(-11): "succeeded"}, D, 3) == ([day(-2), day(-1), D], 8)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


class Offline(Scheduler):
    """The plan and its bookkeeping; the run records are not written (no broker)."""

    def __init__(self, settings: Settings, jobs, clock, producer=None) -> None:  # type: ignore[no-untyped-def]
        super().__init__(settings, jobs, clock)
        self.producer = producer or _NoProducer()

    def load_runs(self) -> int:
        return 0


class _NoProducer:
    """Takes everything; `unacked` > 0 plays a broker that acknowledges nothing."""

    def __init__(self, unacked: int = 0) -> None:
        self.unacked = unacked

    def produce(self, *_a, **_k) -> None:  # type: ignore[no-untyped-def]
        pass

    def flush(self, _timeout: float) -> int:
        return self.unacked


def test_a_failed_day_holds_back_its_job_and_the_job_that_reads_it_and_is_retried_within_a_bound() -> None:
    settings = Settings(scheduler_jobs_delay_s=0, scheduler_tick_lag_s=0, scheduler_job_attempts=2)
    calls: list[tuple[str, date]] = []
    failing = {("settle", D - timedelta(days=2))}

    def job(name: str):  # type: ignore[no-untyped-def]
        def run(day: date) -> str:
            calls.append((name, day))
            if (name, day) in failing:
                raise RuntimeError("no FX rate")
            return "ok"

        return run

    clock = Clock(datetime(2026, 12, 6, 0, 0, 1, tzinfo=UTC))  # D-1 is the latest due day
    s = Offline(settings, {name: job(name) for name in JOB_ORDER}, clock)
    for name in JOB_ORDER:
        s.runs[name][D - timedelta(days=3)] = "succeeded"
    first = s.run_due()
    d2, d1 = D - timedelta(days=2), D - timedelta(days=1)
    # settle D-2 failed: settle D-1 and payouts (both days) wait; re-verification, the report and reconcile go on.
    assert first == [
        ("settle", d2, "failed"),
        ("kyc_reverify", d2, "succeeded"),
        ("providers_report", d2, "succeeded"),
        ("reconcile", d2, "succeeded"),
        ("kyc_reverify", d1, "succeeded"),
        ("providers_report", d1, "succeeded"),
        ("reconcile", d1, "succeeded"),
    ]
    failing.clear()
    assert s.run_due() == [
        ("settle", d2, "succeeded"),
        ("payouts", d2, "succeeded"),
        ("settle", d1, "succeeded"),
        ("payouts", d1, "succeeded"),
    ]
    assert s.run_due() == []
    # Attempts are bounded per job and day: a day that keeps failing stops being tried.
    failing.add(("settle", D))
    clock.at += timedelta(days=1)
    assert [r[2] for r in s.run_due() if r[0] == "settle"] == ["failed"]
    assert [r[2] for r in s.run_due() if r[0] == "settle"] == ["failed"]
    assert [r for r in s.run_due() if r[0] == "settle"] == []
    assert calls.count(("settle", D)) == 2


class FakeDesk:
    """KycDesk on a dict: the registry read whole, each write folded in (as the compacted topic)."""

    def __init__(self, registry: dict) -> None:
        self.reg, self.written = registry, []  # type: ignore[var-annotated]

    def registry(self) -> dict:
        return dict(self.reg)

    def sanctions(self):  # type: ignore[no-untyped-def]
        return load_list()

    def write(self, record: dict) -> None:
        self.written.append(record)
        self.reg[record["merchant_id"]] = record


def _verified(merchant_id: str, at: datetime) -> dict:
    docs = {"registration_certificate": "docs:rc/1", "owner_id": "docs:id/1", "proof_of_address": "docs:poa/1"}
    app = kyc.application("Acme Trading Ltd", "GB", "GB-12345", ("Ada Example",), docs)
    record = kyc_ops.submit(None, merchant_id, app, at, load_list())
    assert record["kyc_status"] == "verified"
    return record


def test_kyc_reverify_checks_again_the_verifications_expired_by_the_days_end_once() -> None:
    # m_old's year ends during D (at 18:00); m_new's the day after: only m_old is due for D.
    old_at = datetime(2026, 12, 6, 18, tzinfo=UTC) - kyc.REVERIFY_AFTER
    desk = FakeDesk({"m_old": _verified("m_old", old_at), "m_new": _verified("m_new", old_at + timedelta(days=1))})
    job = default_jobs(Settings(), kyc_desk=desk)["kyc_reverify"]
    assert job(D - timedelta(days=1)) == "0 merchant(s) checked again"
    assert job(D) == "1 merchant(s) checked again, verified 1"
    assert [r["merchant_id"] for r in desk.written] == ["m_old"]
    # Checked at the day's end (event time), verified for another year from then.
    assert desk.reg["m_old"]["kyc"]["verified_until"] == kyc_ops.day_end(D) + kyc.REVERIFY_AFTER
    assert job(D) == "0 merchant(s) checked again"  # a rerun of the day (crash before its run record) writes nothing


def test_kyc_reverify_runs_daily_before_payouts_by_default() -> None:
    enabled = Offline(Settings(), {}, Clock(T)).enabled
    assert "kyc_reverify" in enabled and enabled.index("kyc_reverify") < enabled.index("payouts")
