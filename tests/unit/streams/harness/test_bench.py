"""The bench's arithmetic, profile reading and plot (the runs themselves need the broker: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connectors.kafka import admin
from streams.harness import bench
from streams.harness.bench import latencies_ms, plot, run_settings, top_frames
from streams.harness.stats import percentiles, rate
from streams.settings import Settings


def test_rate_is_per_second_and_never_divides_by_zero() -> None:
    assert rate(1_000, 2.0) == 500.0
    assert rate(10, 0.0) == 0.0
    assert rate(1, 3.0) == 0.3


def test_percentiles_are_nearest_rank_samples() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentiles(values) == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0, "count": 100}
    assert percentiles([7.0]) == {"p50": 7.0, "p95": 7.0, "p99": 7.0, "max": 7.0, "count": 1}
    # one slow command in ten: p50 does not see it, p95 does
    assert percentiles([1.0] * 9 + [500.0])["p50"] == 1.0
    assert percentiles([1.0] * 9 + [500.0])["p95"] == 500.0


@given(st.lists(st.floats(min_value=0, max_value=1e7, allow_nan=False), min_size=1, max_size=300))
def test_percentiles_are_ordered_samples(values: list[float]) -> None:
    q = percentiles(values)
    assert q["p50"] <= q["p95"] <= q["p99"] <= q["max"] == round(max(values), 1)
    rounded = {round(v, 1) for v in values}
    assert {q["p50"], q["p95"], q["p99"]} <= rounded


def test_percentiles_refuse_no_samples() -> None:
    with pytest.raises(AssertionError):
        percentiles([])


def test_latency_runs_from_the_scheduled_send() -> None:
    scheduled = {"a": 1_000.0, "b": 1_010.0}
    assert sorted(latencies_ms(scheduled, {"a": 1_050.0, "b": 1_500.0, "other": 0.0})) == [50.0, 490.0]
    with pytest.raises(AssertionError, match="1 commands without an answer"):
        latencies_ms(scheduled, {"a": 1_050.0})


def test_top_frames_share_self_and_total() -> None:
    collapsed = "\n".join(
        [
            "main (app.py:1);loop (app.py:5);encode (codec.py:9) 60",
            "main (app.py:1);loop (app.py:5) 30",
            "main (app.py:1);idle (app.py:7) 10",
            "garbage line",
        ]
    )
    frames = top_frames(collapsed, 2)
    assert frames["self"] == [("encode (codec.py:9)", 60.0), ("loop (app.py:5)", 30.0)]
    assert frames["total"] == [("main (app.py:1)", 100.0), ("loop (app.py:5)", 90.0)]
    # a recursive frame counts once per sample
    assert top_frames("f;f;f 4", 1)["total"] == [("f", 100.0)]
    assert top_frames("") == {"self": [], "total": []}


def test_each_run_has_its_own_namespace_and_dirs(tmp_path: Path) -> None:
    base = Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys")
    one, two = run_settings(base, "1w"), run_settings(base, "1w")
    assert one.namespace != two.namespace and one.namespace.startswith("bench-1w-")
    assert one.data_dir == tmp_path / "bench" / one.namespace
    assert one.keys_dir == one.data_dir / "keys" and one.providers_dir == one.data_dir / "providers"


def test_a_failed_bench_still_deletes_both_runs_topics(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ran: list[Settings] = []
    discarded: list[list[str]] = []

    def end_to_end(base: Settings, *_: object, workers: int = 1, run: Settings, **__: object) -> object:
        ran.append(run)
        if workers == 2:
            raise RuntimeError("the two-worker run timed out")
        return {"latency": {}, "then": {}, "recovery": {}, "commands_per_s": 1.0}, run

    monkeypatch.setattr(bench.bench_peers, "peers", lambda *_: {})
    monkeypatch.setattr(bench, "ceiling", lambda *_: {"produce_then_consume_per_s": 1.0})
    monkeypatch.setattr(bench, "machine", lambda _: {})
    monkeypatch.setattr(bench, "end_to_end", end_to_end)
    monkeypatch.setattr(admin, "discard_topics", lambda _conn, _names, prefixes, timeout_s: discarded.append(prefixes))
    with pytest.raises(RuntimeError, match="timed out"):
        bench.run_bench(Settings(data_dir=tmp_path), quick=True)
    assert [r.namespace for r in ran] == [p[0].removesuffix(".") for p in discarded]
    assert len({r.namespace for r in ran}) == 2


def test_plot_draws_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    latency = {
        r: {
            k: {"p50": 10.0 * i, "p95": 20.0 * i, "p99": 30.0 * i, "max": 40.0 * i, "count": 5}
            for k in ("committed_ms", "visible_ms")
        }
        for i, r in enumerate(("50", "100"), start=1)
    }
    result = {
        "at": "2026-11-25T00:00:00+00:00",
        "quick": True,
        "machine": {"cpus": 2},
        "ceiling_commands_per_s": 100_000.0,
        "e2e_commands_per_s": 250.0,
        "sink_rows_per_s": 30_000.0,
        "scaling": {"two_workers_commands_per_s": 260.0},
        "replay": {"records_per_s": 36_000.0},
        "latency": latency,
    }
    out = tmp_path / "plots" / "bench.png"
    plot(result, out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_ceiling_that_fails_mid_way_still_deletes_its_topic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[str] = []
    discarded: list[list[str]] = []

    class Undelivered:
        def poll(self, _timeout: float) -> int:
            return 0

        def flush(self, _timeout: float) -> int:
            return 1  # one record still queued: the broker went away

    monkeypatch.setattr(admin, "ensure_topics", lambda _conn, specs: created.extend(s.name for s in specs))
    monkeypatch.setattr(admin, "discard_topics", lambda _conn, names, timeout_s: discarded.append(names))
    monkeypatch.setattr(bench, "id_assigned", lambda _conf: Undelivered())
    monkeypatch.setattr(bench, "produce_waiting", lambda *_, **__: None)
    with pytest.raises(AssertionError, match="did not deliver"):
        bench.ceiling(Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys"), 3)
    assert discarded == [created] and created[0].endswith(".ceiling")
