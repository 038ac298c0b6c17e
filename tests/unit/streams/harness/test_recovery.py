"""The recovery-time measure's log reading (the measure itself needs a broker)."""

from __future__ import annotations

from datetime import datetime

from streams.harness.recovery import log_time, restore_window

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
