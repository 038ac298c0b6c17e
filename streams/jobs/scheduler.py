"""`paystream scheduler run`: the event-time clock every partition hears, and the daily
jobs on that clock (docs/decisions.md, Scheduler).

The one place the wall clock becomes event time. Every `scheduler_tick_interval_s` a
tick at (wall clock - `scheduler_tick_lag_s`), never earlier than the last one, goes to
every partition of clock; the worker forwards each to the same partition of the
subscriptions and payments stages, whose timers (authorization expiry, subscription
charges, dunning retries) then fire with no other traffic.

Every `scheduler_jobs_check_s` (in a thread of its own, so a long job never holds a tick
back) each enabled job runs for every day that is due (the clock is
`scheduler_jobs_delay_s` past the day's end) and has no succeeded run on job-runs:
the days after the job's last success, at most `scheduler_catch_up_days` back, in day
order, settle before payouts and providers_report before reconcile for the same day.
A failed run is recorded, counted and retried at the next check, at most
`scheduler_job_attempts` times per job and day in one process; the job's later days
wait for it (a settlement carries balances from the day before). The jobs are
idempotent themselves (a second settle or payouts run posts nothing; a report is
rewritten the same), so a run that finished but was not recorded (a crash between
the two) is safely run again. Run one scheduler per deployment.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from confluent_kafka import KafkaException

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.kafka.clients import MissingTopic, command_producer, read_to_end
from connectors.providers.bank import BankRail
from connectors.providers.chain import build_chains
from connectors.providers.rails import build_rails
from schemas.codec import Codec, DecodeError
from streams import metrics
from streams.client import kyc as kyc_ops
from streams.client.merchants import read_registry
from streams.client.publish import PublishError, publish_tick
from streams.domain.reconcile import export_reports
from streams.jobs.payouts import payouts_day
from streams.jobs.settle import settle_day
from streams.jobs.sink import provider_reports, reconcile_day
from streams.settings import Settings, client_config
from streams.topics import topic_names

log = logging.getLogger("paystream.scheduler")

# kyc_reverify before payouts: a merchant whose verification lapsed that day is held, not paid.
JOB_ORDER = ("settle", "kyc_reverify", "payouts", "providers_report", "reconcile")
# A job runs for a day only after the job it reads from succeeded for that day (when enabled).
NEEDS = {"payouts": "settle", "reconcile": "providers_report"}
RUN_CODEC = Codec("JobRun")
MAX_RUN_RECORDS = 1_000_000  # job-runs records read at start (compacted: five a day)
FLUSH_TIMEOUT_S = 30
DAY = timedelta(days=1)

Clock = Callable[[], datetime]
Job = Callable[[date], str]  # runs a day, returns what it did; raises on failure


class JobError(RuntimeError):
    """A job ran but did not do its day's work (e.g. money owed and not paid)."""


def wall_clock() -> datetime:
    return datetime.now(UTC)


def event_time(wall: datetime, lag_s: float, last: datetime | None = None) -> datetime:
    """The clock's event time: `lag_s` behind the wall clock, at millisecond precision
    (the Avro timestamp's), never before the last tick (a wall clock stepped back
    does not move event time back)."""
    at = wall.astimezone(UTC) - timedelta(seconds=lag_s)
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)
    return at if last is None or at > last else last


def latest_due_day(now: datetime, delay_s: int) -> date:
    """The last day whose jobs may run at event time `now`: its end is `delay_s` behind."""
    return (now - timedelta(seconds=delay_s)).date() - DAY


def due_days(runs: Mapping[date, str], latest: date, catch_up_days: int) -> tuple[list[date], int]:
    """(the days to run, in order; how many missed days are older than the catch-up
    window). `runs`: the job's latest status per day. A job never run starts with
    `latest`; after that every day since its first run is owed, `catch_up_days` at most."""
    first = min(runs, default=latest)
    start = max(first, latest - (catch_up_days - 1) * DAY)
    todo = [start + k * DAY for k in range((latest - start).days + 1) if runs.get(start + k * DAY) != "succeeded"]
    too_old = (start - first).days - sum(1 for d, s in runs.items() if first <= d < start and s == "succeeded")
    return todo, too_old


def day_seconds(day: date) -> float:
    return datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()


@contextmanager
def read_models(settings: Settings) -> Iterator[Any]:
    """The read models for one job run, migrated (idempotent, as the sink does), closed
    after: with chDB the directory is free again between runs (one process per directory)."""

    client = connect(settings.clickhouse_url, settings.clickhouse_database)
    try:
        migrate(client)
        yield client
    finally:
        client.close()


def default_jobs(settings: Settings, kyc_desk: Any = None) -> dict[str, Job]:
    """The daily jobs, as their CLI commands run them (streams/jobs/settle.py,
    payouts_job.py, reconcile.py, readmodels.py, kyc_ops.py; `kyc_desk`: tests pass a fake)."""

    def settle(day: date) -> str:

        with read_models(settings) as client:
            result = settle_day(settings, client, day, read_registry)
        run = result.run
        refused = [s for s in run.settlements if s.refused]
        if refused:  # retried: e.g. the FX rate may arrive
            raise JobError(
                f"{len(refused)} owed but not paid: "
                + ", ".join(f"{s.merchant_id} {s.currency} ({s.refused})" for s in refused[:10])
            )
        return (
            f"{len(run.settlements)} settlement(s), {len(run.payouts)} payout(s), "
            f"{len(result.posted_entry_ids)} new entr(ies) posted, {result.skipped_records} undecodable skipped"
        )

    def payouts(day: date) -> str:

        with read_models(settings) as client:
            result = payouts_day(settings, client, day, BankRail(seed=settings.provider_seed))
        r = result.run
        return (
            f"{r.count('sent')} in transit, {r.count('paid')} paid, {r.count('failed')} failed; "
            f"{result.posted_entries} new entr(ies) posted"
        )

    def providers_report(day: date) -> str:

        # No journals yet is a day nothing was processed: every rail reports nothing.
        rails = build_rails(seed=settings.provider_seed, journal_dir=settings.providers_dir)
        export = export_reports(rails, day, settings.reports_dir / day.isoformat())
        return f"{sum(export.rows.values())} row(s) from {len(export.files)} rail(s)"

    def reconcile(day: date) -> str:

        rows, lag = provider_reports(settings, day)
        with read_models(settings) as client:
            # counts SETTLEMENT_DISCREPANCIES here, served by us; custody against the worker's chains
            result = reconcile_day(client, day, rows, lag, build_chains(settings.provider_seed))
        return ", ".join(f"{status} {n}" for status, n in result.counts.items())

    def kyc_reverify(day: date) -> str:

        # As `paystream merchants kyc-reverify --as-of <the day's end>`.
        records = kyc_ops.reverify_run(kyc_desk or kyc_ops.KycDesk(settings), kyc_ops.day_end(day))
        states: dict[str, int] = {}
        for r in records:
            states[r["kyc"]["state"]] = states.get(r["kyc"]["state"], 0) + 1
        return f"{len(records)} merchant(s) checked again" + "".join(f", {s} {n}" for s, n in sorted(states.items()))

    return {
        "settle": settle,
        "kyc_reverify": kyc_reverify,
        "payouts": payouts,
        "providers_report": providers_report,
        "reconcile": reconcile,
    }


class Scheduler:
    def __init__(self, settings: Settings, jobs: Mapping[str, Job] | None = None, clock: Clock = wall_clock) -> None:
        self.settings = settings
        wanted = set(filter(None, settings.scheduler_jobs.split(",")))
        self.enabled = tuple(j for j in JOB_ORDER if j in wanted)
        self.jobs = dict(jobs) if jobs is not None else default_jobs(settings)
        self.clock = clock
        self.topic = topic_names(settings).job_runs
        self.producer = command_producer(client_config(settings))
        self.last_tick: datetime | None = None
        self.runs: dict[str, dict[date, str]] = {j: {} for j in JOB_ORDER}  # latest status per job and day
        self.attempts: dict[tuple[str, date], int] = {}
        self._lock = threading.Lock()  # the tick thread and the jobs thread share last_tick

    # --- the clock ---

    def now(self) -> datetime:
        with self._lock:
            return event_time(self.clock(), self.settings.scheduler_tick_lag_s, self.last_tick)

    def tick(self) -> datetime:
        """One tick on every partition of clock; returns its event time."""
        at = self.now()
        publish_tick(self.settings, at, self.producer)
        with self._lock:
            self.last_tick = at
        metrics.SCHEDULER_TICKS.inc()
        metrics.SCHEDULER_EVENT_TIME.set(at.timestamp())
        return at

    # --- the daily jobs ---

    def load_runs(self) -> int:
        """The latest run per job and day from job-runs; returns the records read. A
        record we cannot read is skipped, logged and counted (its day then counts as not
        run, and the idempotent job runs it again)."""
        n = 0
        try:
            for msg in read_to_end(client_config(self.settings), [self.topic], self.settings.partitions):
                n += 1
                if n > MAX_RUN_RECORDS:
                    raise RuntimeError(f"more than {MAX_RUN_RECORDS} records on {self.topic}: is it compacted?")
                try:
                    run = RUN_CODEC.decode(msg.value())
                except DecodeError as e:
                    metrics.DEAD_LETTERS.labels(stage="scheduler", reason=e.reason).inc()
                    log.warning(
                        "job-runs: skipped an undecodable record at %d@%d: %s", msg.partition(), msg.offset(), e.reason
                    )
                    continue
                self._remember(run["job"], run["day"], run["status"])
        except MissingTopic:
            log.warning("job-runs: no topic %s yet; every job starts with the latest due day", self.topic)
        return n

    def _remember(self, job: str, day: date, status: str) -> None:
        self.runs[job][day] = status
        if status == "succeeded":
            latest = max(d for d, s in self.runs[job].items() if s == "succeeded")
            metrics.JOB_LAST_SUCCESS_DAY.labels(job=job).set(day_seconds(latest))

    def run_due(self) -> list[tuple[str, date, str]]:
        """Run every job for every day due now; returns (job, day, status) of each run."""
        now = self.now()
        latest = latest_due_day(now, self.settings.scheduler_jobs_delay_s)
        todo: dict[str, list[date]] = {}
        for job in self.enabled:
            todo[job], too_old = due_days(self.runs[job], latest, self.settings.scheduler_catch_up_days)
            if too_old:
                log.error(
                    "%s: %d missed day(s) older than %d days are not caught up: run them by hand",
                    job,
                    too_old,
                    self.settings.scheduler_catch_up_days,
                )
        done: list[tuple[str, date, str]] = []
        waiting: set[str] = set()  # jobs whose earlier day failed or is not allowed yet
        for day in sorted({d for days in todo.values() for d in days}):
            for job in self.enabled:
                if day not in todo[job] or job in waiting:
                    continue
                need = NEEDS.get(job)
                if need in self.enabled and self.runs[need].get(day) != "succeeded":
                    waiting.add(job)
                    continue
                if self.attempts.get((job, day), 0) >= self.settings.scheduler_job_attempts:
                    waiting.add(job)
                    continue
                status = self._run(job, day, now)
                done.append((job, day, status))
                if status != "succeeded":
                    waiting.add(job)
        return done

    def _run(self, job: str, day: date, now: datetime) -> str:
        attempt = self.attempts.get((job, day), 0) + 1
        self.attempts[(job, day)] = attempt
        started = wall_clock()
        log.info("%s %s: attempt %d", job, day, attempt)
        try:
            detail, status = self.jobs[job](day), "succeeded"
        except Exception as e:  # any failure is recorded and retried, never the end of the scheduler
            detail, status = f"{type(e).__name__}: {e}"[:1_000], "failed"
            log.exception("%s %s failed (attempt %d of %d)", job, day, attempt, self.settings.scheduler_job_attempts)
        self._remember(job, day, status)
        metrics.JOB_RUNS.labels(job=job, status=status).inc()
        log.info("%s %s %s: %s", job, day, status, detail)
        record = {
            "run_id": f"run_{uuid.uuid4().hex}",
            "job": job,
            "day": day,
            "status": status,
            "attempt": attempt,
            "event_time": now,
            "started_at": started,
            "finished_at": wall_clock(),
            "detail": detail,
        }
        try:
            self.producer.produce(
                self.topic, key=f"{job}/{day.isoformat()}".encode(), value=RUN_CODEC.encode(record, check=True)
            )
            if self.producer.flush(FLUSH_TIMEOUT_S) != 0:
                raise PublishError(f"the broker did not acknowledge the run record in {FLUSH_TIMEOUT_S} s")
        except (PublishError, KafkaException, BufferError) as e:
            # Not on the topic: a restart runs the day again, which the jobs' idempotence makes harmless.
            log.error("%s %s: the run record was not written: %s", job, day, e)
        return status

    # --- the process ---

    def serve(self, stop: threading.Event) -> None:
        """Tick and run the jobs until `stop` is set."""
        runs = self.load_runs()
        log.info(
            "scheduler: a tick every %ss at the wall clock less %ss on %d partitions of %s; jobs %s (%d run records)",
            self.settings.scheduler_tick_interval_s,
            self.settings.scheduler_tick_lag_s,
            self.settings.partitions,
            topic_names(self.settings).clock,
            ",".join(self.enabled) or "none",
            runs,
        )
        jobs = threading.Thread(target=self._jobs_loop, args=(stop,), name="daily-jobs", daemon=True)
        if self.enabled:
            jobs.start()
        interval = self.settings.scheduler_tick_interval_s
        while not stop.is_set():
            try:
                self.tick()
            except (PublishError, KafkaException, BufferError) as e:  # the broker is away: tick again next interval
                metrics.SCHEDULER_TICK_FAILURES.inc()
                log.warning("tick not published: %s", e)
            stop.wait(interval)  # the interval itself, not a wait for a condition
        if jobs.is_alive():
            jobs.join(timeout=FLUSH_TIMEOUT_S)
        self.producer.flush(FLUSH_TIMEOUT_S)

    def _jobs_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.run_due()
            except Exception:  # reading the clock or the plan failed: try again next check
                log.exception("the daily jobs were not checked")
            stop.wait(self.settings.scheduler_jobs_check_s)
