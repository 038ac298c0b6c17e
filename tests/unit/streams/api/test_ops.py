"""The ops panel's arithmetic: lag per group and topic, breakers from /metrics text."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from streams.api.ops import Breaker, LagRow, breaker_states, lag_rows
from streams.metrics import BREAKER_HALF_OPEN, BREAKER_OPEN


def test_lag_is_end_minus_committed_summed_per_topic() -> None:
    committed = {("cmds", 0): 10, ("cmds", 1): 5, ("events", 0): 7}
    ends = {("cmds", 0): 12, ("cmds", 1): 5, ("cmds", 2): 4, ("events", 0): 6}
    # cmds-2 never committed: all 4 count; events-0 read its end before the commit: 0, never negative.
    assert lag_rows("g", committed, ends) == [LagRow("g", "cmds", 3, 6), LagRow("g", "events", 1, 0)]
    assert lag_rows("g", {("t", 0): -1001}, {("t", 0): 9}) == [LagRow("g", "t", 1, 9)]  # librdkafka's invalid offset


def test_breakers_are_read_from_the_workers_exposition() -> None:
    registry = CollectorRegistry()
    gauge = Gauge("paystream_breaker_state", "breakers", ["provider"], registry=registry)
    gauge.labels(provider="visa_rail").set(BREAKER_OPEN)
    gauge.labels(provider="acme_rail").set(BREAKER_HALF_OPEN)
    Gauge("other_metric", "noise", registry=registry).set(2)
    text = generate_latest(registry).decode()
    assert breaker_states("w0", text) == [Breaker("w0", "acme_rail", "half-open"), Breaker("w0", "visa_rail", "open")]
    assert breaker_states("w0", "") == []
