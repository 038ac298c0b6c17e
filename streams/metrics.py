"""Prometheus metrics of the worker. Labels are low-cardinality codes only."""

from __future__ import annotations

from prometheus_client import Counter

OUTCOMES = Counter("paystream_outcomes_total", "Outcomes produced", ["kind", "status"])
DEAD_LETTERS = Counter("paystream_dead_letters_total", "Records sent to the DLQ", ["stage", "reason"])
DUPLICATES_SKIPPED = Counter("paystream_duplicates_skipped_total", "Redelivered commands skipped by dedup", ["stage"])
