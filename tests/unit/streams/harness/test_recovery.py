"""The recovery-time measure's log reading and its clean-up (the measure itself needs a broker)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from connectors.kafka import admin
from streams.harness import recovery
from streams.harness.recovery import RecoveryError, log_time, measure, restore_window
from streams.settings import Settings

LOG = """\
{"ts": "2026-11-25T20:03:25.573", "level": "info", "logger": "paystream.runtime", "msg": "Restoring state from changelog topics: partitions [0, 1]"}
Traceback (most recent call last): not a log line
{"ts": "2026-11-25T20:03:52.105", "level": "info", "logger": "paystream.runtime", "msg": "restored 12 changelog records"}
{"ts": "2026-11-25T20:04:01.500", "level": "info", "logger": "paystream.runtime", "msg": "Worker ready: partitions [0, 1]"}
{"ts": "2026-11-25T20:05:00.000", "level": "info", "logger": "paystream.runtime", "msg": "Restoring state from changelog topics: partitions [0]"}
{"ts": "2026-11-25T20:05:07.250", "level": "info", "logger": "paystream.runtime", "msg": "Worker ready: partitions [0]"}
""".splitlines()


def test_log_time_reads_the_json_stamps_and_skips_the_rest() -> None:
    assert log_time(LOG[0]) == datetime(2026, 11, 25, 20, 3, 25, 573000).timestamp()
    assert log_time(LOG[1]) is None


def test_the_last_finished_restore_is_measured() -> None:
    start, ready = restore_window(LOG)
    assert round(ready - start, 3) == 7.25  # a rebalance restores again: the last one counts


def test_no_window_until_the_worker_is_ready() -> None:
    assert restore_window(LOG[:3]) is None
    assert restore_window([LOG[3]]) is None  # ready without a restore seen: not a measure


def test_a_measure_deletes_its_namespace_after_stopping_its_worker_even_when_it_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    created: list[list[str]] = []
    steps: list[str] = []
    discarded: list[tuple[list[str], list[str]]] = []

    class Worker:
        def __init__(self, *_: object) -> None:
            pass

        def start(self) -> None:
            steps.append("started")

        def stop(self) -> None:
            steps.append("stopped")

    def never_ready(*_: object) -> None:
        raise RecoveryError("not ready")

    def discard(_conn: object, names: list[str], prefixes: list[str], timeout_s: float) -> None:
        steps.append("discarded")
        discarded.append((names, prefixes))

    monkeypatch.setattr(admin, "ensure_topics", lambda _conn, specs: created.append([s.name for s in specs]))
    monkeypatch.setattr(admin, "discard_topics", discard)
    monkeypatch.setattr(recovery, "fill_changelog", lambda *_: 1)
    monkeypatch.setattr(recovery, "WorkerProcess", Worker)
    monkeypatch.setattr(recovery, "_wait_ready", never_ready)
    with pytest.raises(RecoveryError, match="not ready"):
        measure(Settings(data_dir=tmp_path), keys=1)
    assert steps == ["started", "stopped", "discarded"]
    ((topics,),) = [created]
    ((names, prefixes),) = discarded
    assert prefixes[0].startswith("recovery-")
    assert all(t in names or t.startswith(tuple(prefixes)) for t in topics)


def test_a_measure_that_fails_before_its_worker_deletes_its_namespace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    discarded: list[list[str]] = []

    def unacknowledged(*_: object) -> int:
        raise RecoveryError("the changelog records were not all acknowledged")

    monkeypatch.setattr(admin, "ensure_topics", lambda *_: None)
    monkeypatch.setattr(admin, "discard_topics", lambda _conn, _names, prefixes, timeout_s: discarded.append(prefixes))
    monkeypatch.setattr(recovery, "fill_changelog", unacknowledged)
    with pytest.raises(RecoveryError, match="acknowledged"):
        measure(Settings(data_dir=tmp_path), keys=1)
    assert len(discarded) == 1 and discarded[0][0].startswith("recovery-")
