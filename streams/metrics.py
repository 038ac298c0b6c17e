"""Prometheus metrics of the worker. Labels are low-cardinality codes only."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

OUTCOMES = Counter("paystream_outcomes_total", "Outcomes produced", ["kind", "status"])
DEAD_LETTERS = Counter("paystream_dead_letters_total", "Records sent to the DLQ", ["stage", "reason"])
DUPLICATES_SKIPPED = Counter("paystream_duplicates_skipped_total", "Redelivered commands skipped by dedup", ["stage"])
PAYMENT_EVENTS = Counter("paystream_payment_events_total", "Payment events emitted", ["type"])
TIMERS_FIRED = Counter("paystream_timers_fired_total", "Event-time timers fired", ["kind"])
TIMER_QUEUE_DEPTH = Gauge("paystream_timer_queue_depth", "Timers waiting, by kind and partition", ["kind", "partition"])
COMMAND_ID_REUSED = Counter("paystream_command_id_reused_total", "Commands whose command_id was seen with other bytes")
