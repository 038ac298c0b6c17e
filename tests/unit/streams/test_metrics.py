"""`metrics.serve`: the worker and the sink expose /metrics on PAYSTREAM_METRICS_PORT."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams import metrics


def test_serve_exposes_the_registry_and_none_serves_nothing() -> None:
    metrics.serve(None)  # nothing to assert but that it returns: no port, no server
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    metrics.serve(port)
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert "# TYPE paystream_ledger_imbalance_minor gauge" in text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=60))
def test_held_observations_flush_into_the_buckets_observe_would_pick(values: list[float]) -> None:
    registry = CollectorRegistry()
    direct = Histogram("direct_seconds", "", ["stage"], buckets=metrics.LATENCY_BUCKETS_S, registry=registry)
    batched = Histogram("batched_seconds", "", ["stage"], buckets=metrics.LATENCY_BUCKETS_S, registry=registry)
    h = metrics.Held(batched.labels("s"))
    for v in [*values, *metrics.LATENCY_BUCKETS_S]:  # each bound itself too: `le` is inclusive
        direct.labels("s").observe(v)
        h.observe(v)
    h.flush()
    h.flush()  # nothing held: adds nothing

    def samples(name: str) -> dict[str, float]:
        return {
            s.name.removeprefix(name) + s.labels.get("le", ""): s.value
            for m in registry.collect()
            if m.name == name
            for s in m.samples
            if not s.name.endswith("_created")
        }

    got, want = samples("batched_seconds"), samples("direct_seconds")
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k]), k


def test_held_flushes_itself_at_its_bound() -> None:
    registry = CollectorRegistry()
    h = metrics.Held(Histogram("bound_seconds", "", registry=registry))
    for _ in range(metrics.HELD_MAX):
        h.observe(0.001)
    assert h.values == []
    assert registry.get_sample_value("bound_seconds_bucket", {"le": "0.005"}) == metrics.HELD_MAX


def test_the_private_fields_observe_many_writes_are_the_ones_observe_writes() -> None:
    """observe_many writes a histogram child's private fields (prometheus_client has no
    public way to add counts): an upgrade that renames or reshapes them fails here."""
    child = Histogram("fields_seconds", "", buckets=(0.1, 1.0), registry=CollectorRegistry())
    child.observe(0.5)
    assert child._upper_bounds == [0.1, 1.0, float("inf")]  # +Inf last: every value has a bucket
    assert [b.get() for b in child._buckets] == [0, 1, 0]  # a count per bucket, not cumulative
    assert child._sum.get() == 0.5
