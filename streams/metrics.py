"""Prometheus metrics of the worker and the scheduler. Labels are low-cardinality codes only.

The rules in deploy/prometheus/ and the dashboards in deploy/grafana/ use these
names; tests/unit/deploy/test_observability.py keeps them in step.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter as Tally
from functools import cache
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

OUTCOMES = Counter("paystream_outcomes_total", "Outcomes produced", ["kind", "status"])
DEAD_LETTERS = Counter("paystream_dead_letters_total", "Records sent to the DLQ", ["stage", "reason"])
DUPLICATES_SKIPPED = Counter("paystream_duplicates_skipped_total", "Redelivered commands skipped by dedup", ["stage"])
HANDOFFS = Counter("paystream_handoffs_total", "Records handed to a later stage in the transaction that writes them")
PAYMENT_EVENTS = Counter("paystream_payment_events_total", "Payment events emitted", ["type"])
TIMERS_FIRED = Counter("paystream_timers_fired_total", "Event-time timers fired", ["kind"])
TIMER_QUEUE_DEPTH = Gauge("paystream_timer_queue_depth", "Timers waiting, by kind and partition", ["kind", "partition"])
VAULT_REVEALS = Counter(
    "paystream_vault_reveals_total", "PANs revealed from the vault for a provider call", ["purpose"]
)
VAULT_CARDS = Gauge(
    "paystream_vault_cards", "Sealed cards this worker holds in memory (at most PAYSTREAM_VAULT_CACHE_MAX_CARDS)"
)
COMMAND_ID_REUSED = Counter("paystream_command_id_reused_total", "An answered command_id sent with another request")

# Seconds from the input record's Kafka timestamp to the stage's output. Operational
# time, so the wall clock is right here (business logic never reads it). stage is
# ingest | keys | risk | payments (provider calls included) | post | ledger, each from
# its input record's timestamp; or `pipeline` for the whole way from payment-commands
# to the outcome's send (the origin header, streams/runtime/messages.py; the p99 SLO): read_committed
# readers see it up to one commit interval later. Buckets straddle the 200 ms SLO.
LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.5, 5.0, 10.0)
STAGE_LATENCY = Histogram(
    "paystream_stage_latency_seconds", "Record timestamp to stage output", ["stage"], buckets=LATENCY_BUCKETS_S
)
# One transaction's commit: changelog records, offsets, EndTxn (streams/runtime/engine.py).
COMMIT_LATENCY = Histogram("paystream_commit_seconds", "Transaction commit time", buckets=LATENCY_BUCKETS_S)
# The runtime's transactional error handling (streams/runtime/txn.py): a call tried
# again on a retriable error, a transaction aborted and its input redone.
TRANSACTION_RETRIES = Counter("paystream_transaction_retries_total", "Transactional calls tried again", ["call"])
TRANSACTIONS_ABORTED = Counter("paystream_transactions_aborted_total", "Transactions aborted and redone")
# The interpreter's cyclic collector stops the loop while it runs (runtime/engine.py freezes the start's objects).
GC_PAUSE = Histogram(
    "paystream_gc_pause_seconds", "Cyclic garbage collections", ["generation"], buckets=LATENCY_BUCKETS_S
)
# Log end offset minus the group's committed offset, per source partition this worker
# owns, every streams.worker.probes.PROBE_INTERVAL_S (a partition that moves is dropped here).
CONSUMER_LAG = Gauge(
    "paystream_consumer_lag_messages", "Messages not yet committed by the group", ["topic", "partition"]
)
# Debits minus credits per currency over this worker's ledger partitions (the balances
# table, summed every PROBE_INTERVAL_S); anything but 0 breaks invariant 1 and pages.
LEDGER_IMBALANCE = Gauge("paystream_ledger_imbalance_minor", "Ledger debits minus credits, minor units", ["currency"])
LEDGER_ENTRIES = Counter("paystream_ledger_entries_applied_total", "Journal entries applied to the balances")
# Circuit breaker per provider rail: 0 closed, 1 half-open, 2 open; the worst of the
# rail's breakers over this worker's partitions (one per partition), closed from start.
BREAKER_STATE = Gauge(
    "paystream_breaker_state", "Provider circuit breaker (0 closed, 1 half-open, 2 open)", ["provider"]
)
BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN = 0, 1, 2
# kind: the reconciliation status (streams/domain/reconcile.py STATUSES other than matched).
# Counted where reconciliation runs: the scheduler's reconcile job (served on its metrics
# port) or a manual `paystream reconcile`; the worker registers the kinds at 0.
SETTLEMENT_DISCREPANCIES = Counter(
    "paystream_settlement_discrepancies_total", "Settlement lines that do not match the ledger", ["kind"]
)
# action: approve | requires_action | review | decline (models/decision.py); fallback
# is "true" when the model was unavailable and rules alone decided; merchant is "exact"
# (the keys stage's merchant features) or "partition" (none attached: the risk
# partition's share of the merchant, streams/stages/risk.py).
# Transaction monitoring's cases opened, by rule (streams/domain/monitoring.py).
MONITORING_CASES = Counter("paystream_monitoring_cases_total", "Monitoring cases opened", ["rule"])
FRAUD_DECISIONS = Counter("paystream_fraud_decisions_total", "Fraud decisions", ["action", "fallback", "merchant"])
# Rows the ClickHouse sink inserted, per read-model table (streams/jobs/sink.py).
SINK_ROWS = Counter("paystream_sink_rows_total", "Rows inserted into the ClickHouse read models", ["table"])

# The scheduler (streams/jobs/scheduler.py): ticks published on every partition of clock, the
# event time it last published (seconds since the epoch), and each daily job's runs.
SCHEDULER_TICKS = Counter("paystream_scheduler_ticks_total", "Ticks published on every partition of the clock topic")
SCHEDULER_TICK_FAILURES = Counter("paystream_scheduler_tick_failures_total", "Ticks the broker did not acknowledge")
SCHEDULER_EVENT_TIME = Gauge("paystream_scheduler_event_time_seconds", "Event time of the last tick published")
# job: settle | payouts | providers_report | reconcile; status: succeeded | failed.
JOB_RUNS = Counter("paystream_job_runs_total", "Daily job runs by the scheduler", ["job", "status"])
# The start of the last day (seconds since the epoch) each job succeeded for.
JOB_LAST_SUCCESS_DAY = Gauge("paystream_job_last_success_day_seconds", "Last day each daily job succeeded for", ["job"])


def serve(port: int | None) -> None:
    """Expose /metrics on `port` (PAYSTREAM_METRICS_PORT) from a daemon thread; None: not served."""
    if port is not None:
        start_http_server(port)


@cache
def child(metric: Any, *values: str) -> Any:
    """`metric.labels(*values)`, looked up once per label set: the stages count and time
    every record, and prometheus_client's own lookup is a few microseconds each time."""
    return metric.labels(*values)


# Observations one histogram child holds before it adds them itself, whoever forgot to flush.
HELD_MAX = 10_000


class Held:
    """A histogram child's observations held until `flush_held`, which adds them as one
    count per bucket and one sum: prometheus_client's `observe` takes two locks and walks
    the buckets per value (0.85 us against 0.23 held and flushed, and the stages time ~7
    records a command). The loop's thread only; the scrape sees them at most one batch late."""

    __slots__ = ("child", "values")

    def __init__(self, child: Any) -> None:
        self.child = child
        self.values: list[float] = []

    def observe(self, amount: float) -> None:
        self.values.append(amount)
        if len(self.values) >= HELD_MAX:
            self.flush()

    def flush(self) -> None:
        values, self.values = self.values, []
        if values:
            observe_many(self.child, values)


def observe_many(child: Any, values: list[float]) -> None:
    """`child.observe(v)` for each value, as one count per bucket and one sum.
    prometheus_client (0.26) has no public way to add counts, so this writes the fields
    its own `observe` writes: _upper_bounds, _buckets and _sum are private, and
    tests/unit/streams/test_metrics.py fails if an upgrade renames or reshapes them."""
    # The bucket `observe` would pick: the first upper bound >= the value (the last is +Inf).
    bounds = child._upper_bounds
    for i, n in Tally(bisect_left(bounds, v) for v in values).items():
        child._buckets[i].inc(n)
    child._sum.inc(sum(values))


_held: list[Held] = []


@cache
def held(metric: Histogram, *values: str) -> Held:
    """`child(metric, *values)` for observations added at the next `flush_held`."""
    h = Held(child(metric, *values))
    _held.append(h)
    return h


def flush_held() -> None:
    """Every held observation into its histogram (the engine calls it after each batch)."""
    for h in _held:
        h.flush()
