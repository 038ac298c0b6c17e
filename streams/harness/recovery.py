"""Recovery time: how long a restarted worker takes to process again when its tables
come back from the changelogs (issue 11).

A worker discards its local RocksDB at every start (streams/runtime/state.py: the changelog is the truth), so a
restart after a crash reads every table's changelog before it processes: the time
grows with the records the changelogs hold. Compaction bounds that to about one
record per live key (settings.changelog_segment_ms); this measures the restore at a
given number of live keys. In a fresh namespace it writes `keys` records (`versions`
each, the newest last) of the payments-dedup table, the largest key set (one key
per command kept for the idempotency retention), starts one worker and reads from
its log when the restore began and when the worker was ready.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from connectors.kafka import admin
from connectors.kafka.clients import command_producer, produce_waiting
from connectors.vault.keys import FileKeyStore
from streams.client.processes import WorkerProcess, wait_until
from streams.harness.bench_peers import CLEANUP_TIMEOUT_S
from streams.harness.stats import peak_rss_bytes
from streams.runtime.changelog import changelog_key
from streams.settings import Settings, client_config
from streams.topics import declared_topics, discard_namespace, tables_changelog_topic

MAX_RECORDS = 20_000_000
VALUE_BYTES = 64  # about a dedup record's size
READY_TIMEOUT_S = 3_600.0
POLL_S = 0.5
TABLE = "payments-dedup"
# The runtime's log lines that bound and count the restore (streams/runtime/engine.py), in the
# worker's JSON log lines (streams/logs.py: "ts" in local time, to the millisecond).
RESTORE_STARTS = "Restoring state from changelog topics"
READY = "Worker ready"
RESTORED = re.compile(r"restored (\d+) changelog records of (\d+) partitions in ([\d.]+)s")


class RecoveryError(RuntimeError):
    """The worker did not become ready, or its log did not say when."""


@dataclass(frozen=True)
class RecoveryFigures:
    keys: int
    versions: int
    changelog_records: int
    restore_s: float  # the runtime's "Restoring state" to "Worker ready"
    start_to_ready_s: float  # process start to "Worker ready": what a restart costs
    records_per_s: float
    worker_peak_rss_mb: float


def log_time(line: str) -> float | None:
    """The epoch seconds of a worker's JSON log line, or None for any other line."""
    try:
        doc = json.loads(line)
        return datetime.strptime(doc["ts"], "%Y-%m-%dT%H:%M:%S.%f").timestamp()
    except (ValueError, KeyError, TypeError):
        return None


def restore_window(lines: list[str]) -> tuple[float, float] | None:
    """(restore start, ready) epoch seconds from a worker log: the last restore that ended."""
    start = ready = None
    for line in lines:
        if RESTORE_STARTS in line:
            start = log_time(line)
        elif READY in line and start is not None:
            ready = log_time(line)
    return (start, ready) if start is not None and ready is not None else None


def fill_changelog(settings: Settings, keys: int, versions: int) -> int:
    """Write `keys` x `versions` records round-robin over the partitions; returns the count."""
    assert 1 <= keys * versions <= MAX_RECORDS, (keys, versions)
    topic = tables_changelog_topic(settings.app_id)
    producer = command_producer(client_config(settings), linger_ms=20)
    sent = 0
    for version in range(versions):
        for k in range(keys):
            value = os.urandom(VALUE_BYTES - 1) + bytes([version])
            produce_waiting(
                producer,
                topic,
                key=changelog_key(TABLE, f"cmd-{k:09d}".encode()),
                value=value,
                partition=k % settings.partitions,
            )
            sent += 1
        producer.poll(0)
    if producer.flush(120) != 0:
        raise RecoveryError("the changelog records were not all acknowledged")
    return sent


def measure(base: Settings, *, keys: int, versions: int = 1) -> RecoveryFigures:
    namespace = f"recovery-{uuid.uuid4().hex[:8]}"
    root = base.data_dir / namespace
    settings = base.model_copy(
        update={
            "namespace": namespace,
            "data_dir": root / "w0",
            "keys_dir": root / "keys",
            "providers_dir": root / "providers",
            "worker_name": "w0",
        }
    )
    FileKeyStore(settings.keys_dir).init()
    try:
        admin.ensure_topics(client_config(settings), declared_topics(settings))
        records = fill_changelog(settings, keys, versions)
        log_file = root / "worker.log"
        worker = WorkerProcess(settings, log_file)
        started = time.time()
        worker.start()
        try:
            window = _wait_ready(worker, log_file)
            assert worker.proc is not None
            rss = peak_rss_bytes(worker.proc.pid)
        finally:
            worker.stop()
    finally:
        # Measured, pass or fail, the namespace goes (every partition holds broker file
        # descriptors); the worker's log stays on disk.
        discard_namespace(settings, CLEANUP_TIMEOUT_S)
    restore_s = window[1] - window[0]
    return RecoveryFigures(
        keys=keys,
        versions=versions,
        changelog_records=records,
        restore_s=round(restore_s, 1),
        start_to_ready_s=round(window[1] - started, 1),
        records_per_s=round(records / max(restore_s, 1e-3)),
        worker_peak_rss_mb=round(rss / 2**20, 1),
    )


def _wait_ready(worker: WorkerProcess, log_file: Path) -> tuple[float, float]:
    window: tuple[float, float] | None = None

    def ready() -> bool:
        nonlocal window
        if not worker.alive():
            raise RecoveryError(f"the worker exited before it was ready:\n{worker.log_tail()}")
        try:
            window = restore_window(log_file.read_text(errors="replace").splitlines())
        except FileNotFoundError:
            window = None
        return window is not None

    # Polling a log file for a line: no event to wait on.
    if not wait_until(ready, READY_TIMEOUT_S, POLL_S) or window is None:
        raise RecoveryError(f"not ready within {READY_TIMEOUT_S:g}s:\n{worker.log_tail()}")
    return window


def to_json(figures: RecoveryFigures) -> dict[str, Any]:
    return asdict(figures)
