"""The scheduler against the real broker (issue 24): its ticks alone move an idle
partition's event time, so an expired hold is released with no other traffic; the
daily jobs run once per day, are recorded on job-runs, and a restart after two days
of event time runs both missed days, once each."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.kafka import admin
from connectors.kafka.clients import command_producer, committed_reader, end_offsets, read_to_end
from schemas.codec import Codec
from streams.client.observe import Observer
from streams.client.processes import SchedulerProcess
from streams.client.publish import publish_commands
from streams.jobs.scheduler import JOB_ORDER, RUN_CODEC, Scheduler
from streams.settings import Settings, client_config
from streams.topics import declared_topics, topic_names
from tests.integration.streams.worker.test_metrics_scrape import free_port, scrape
from tests.integration.support import WAIT_S, create, make_settings, start_worker
from tests.unit.connectors.clickhouse.support import DAY0, SHARDS, traffic
from tests.unit.deploy.alert_support import sample

pytestmark = pytest.mark.integration

EXPIRE_WAIT_S = 90


def types_of(seen: Observer, pid: str) -> list[str]:
    return [e["type"] for e in seen.events.get(pid, [])]


def test_an_idle_pipeline_releases_an_expired_hold_on_the_schedulers_ticks(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "clock").model_copy(
        update={"scheduler_tick_interval_s": 0.5, "scheduler_tick_lag_s": 60.0, "scheduler_jobs": ""}
    )
    now = datetime.now(UTC).replace(microsecond=0)
    m = f"m_{uuid.uuid4().hex[:6]}"
    # Manual capture, created 8 days ago: its 7-day window closed a day ago. The other one
    # must stay authorized (its window is open whatever the ticks say); it is dated before
    # the first one's expiry, so on a shared partition its create does not fire that expiry.
    old = create(m, "old", occurred_at=now - timedelta(days=8))
    fresh = create(m, "fresh", occurred_at=now - timedelta(days=1, hours=1))
    worker = start_worker(settings)
    # Its own metrics port: each process serves PAYSTREAM_METRICS_PORT, and the worker has none here.
    scheduler_settings = settings.model_copy(update={"metrics_port": free_port()})
    scheduler = SchedulerProcess(scheduler_settings, tmp_path / "scheduler.log")
    try:
        with Observer(settings) as seen:
            publish_commands(settings, [old, fresh])
            assert seen.wait_for({old["command_id"], fresh["command_id"]}, 0, WAIT_S, lambda *_: worker.supervise()), (
                worker.log_tail()
            )
            assert seen.wait_until(
                lambda: (
                    "authorized" in types_of(seen, old["payment_id"])
                    and "authorized" in types_of(seen, fresh["payment_id"])
                ),
                WAIT_S,
            )
            # The create's own transaction fired nothing: its event time is the partition's time.
            assert "expired" not in types_of(seen, old["payment_id"])
            assert seen.wait_until(seen.books_applied, WAIT_S), "the ledger did not apply the holds"

            # Nothing else is published from here on: only the scheduler's ticks move time.
            scheduler.start()
            assert seen.wait_until(
                lambda: "expired" in types_of(seen, old["payment_id"]) or not scheduler.alive(), EXPIRE_WAIT_S
            ), (scheduler.log_tail(), worker.log_tail())
            assert scheduler.alive(), scheduler.log_tail()
            (expired,) = [e for e in seen.events[old["payment_id"]] if e["type"] == "expired"]
            assert expired["amount_minor"] == old["amount_minor"]
            assert expired["occurred_at"] == old["occurred_at"] + timedelta(days=7)  # at the due time, not the tick's
            # The hold's release is posted and applied: the books balance with no capture.
            assert seen.wait_until(seen.books_applied, WAIT_S), "the release was not posted"
            assert "expired" not in types_of(seen, fresh["payment_id"])

        # The scheduler serves its metrics: ticks counted, event time the wall clock less the lag.
        s = scrape(scheduler_settings.metrics_port)
        assert s["paystream_scheduler_ticks_total"][0][1] >= 1
        ((_, at),) = s["paystream_scheduler_event_time_seconds"]
        behind = datetime.now(UTC).timestamp() - at
        assert settings.scheduler_tick_lag_s <= behind < settings.scheduler_tick_lag_s + 30
    finally:
        assert scheduler.proc is None or scheduler.stop() == 0, scheduler.log_tail()
        assert worker.stop() == 0, worker.log_tail()


class Wall:
    """The wall clock the scheduler reads, set by the test: days pass in a second."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def ends(settings: Settings, topic: str) -> dict[int, int]:
    consumer = committed_reader(client_config(settings), [])
    try:
        return end_offsets(consumer, topic, settings.partitions)
    finally:
        consumer.close()


def recorded(settings: Settings) -> list[tuple[str, str, str]]:
    out = []
    for msg in read_to_end(client_config(settings), [topic_names(settings).job_runs], settings.partitions):
        run = RUN_CODEC.decode(msg.value())
        out.append((run["job"], run["day"].isoformat(), run["status"]))
    return sorted(out)


def test_daily_jobs_run_once_per_day_and_a_missed_day_is_caught_up(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "jobs").model_copy(
        update={
            "partitions": SHARDS,
            "providers": "rails",
            "scheduler_jobs_delay_s": 3600,
            "scheduler_tick_lag_s": 60.0,
        }
    )
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    names = topic_names(settings)
    # A day of captures and refunds on the books (the ledger's own entries, as the worker posts them).
    producer = command_producer(client_config(settings))
    for record in traffic(payments=120, seed=24, start=DAY0).entries:
        producer.produce(
            names.ledger,
            key=record["merchant_id"].encode(),
            value=Codec("LedgerEntry").encode(record),
            partition=record["shard"],
        )
    assert producer.flush(30) == 0
    d0, d1, d2 = DAY0.date(), DAY0.date() + timedelta(days=1), DAY0.date() + timedelta(days=2)
    # Event time = wall - lag; a day is due once event time is the delay past its end.
    after = timedelta(seconds=settings.scheduler_jobs_delay_s + settings.scheduler_tick_lag_s, minutes=1)
    wall = Wall(DAY0 + timedelta(days=1) + after)

    first = Scheduler(settings, clock=wall)
    assert first.load_runs() == 0
    assert first.run_due() == [(job, d0, "succeeded") for job in JOB_ORDER]
    assert recorded(settings) == sorted((job, d0.isoformat(), "succeeded") for job in JOB_ORDER)
    books = ends(settings, names.ledger), ends(settings, names.payouts)
    assert sum(books[1].values()) > 0, "settle paid nothing out: the test would prove nothing"

    # Twice for the same day changes nothing: the scheduler skips it, and the jobs
    # themselves, run again by hand, post nothing new.
    assert first.run_due() == []
    for job in ("settle", "payouts"):
        first.jobs[job](d0)
    assert (ends(settings, names.ledger), ends(settings, names.payouts)) == books

    # Down for two days of event time: a new scheduler reads job-runs and runs both days, once each, in order.
    wall.at += timedelta(days=2)
    restarted = Scheduler(settings, clock=wall)
    assert restarted.load_runs() == len(JOB_ORDER)
    assert restarted.run_due() == [(job, d, "succeeded") for d in (d1, d2) for job in JOB_ORDER]
    assert restarted.run_due() == []
    again = Scheduler(settings, clock=wall)
    again.load_runs()
    assert again.run_due() == []
    assert recorded(settings) == sorted((job, d.isoformat(), "succeeded") for d in (d0, d1, d2) for job in JOB_ORDER)
    # Counted for Prometheus (this process's registry: the scheduler's own metrics port serves it).
    assert all(sample("paystream_job_runs_total", job=job, status="succeeded") >= 3 for job in JOB_ORDER)
    last = sample("paystream_job_last_success_day_seconds", job="settle")
    assert last == datetime(d2.year, d2.month, d2.day, tzinfo=UTC).timestamp()
