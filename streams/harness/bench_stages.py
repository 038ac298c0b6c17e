"""`paystream bench`'s stages part: CPU per record of each stage's handler, without Kafka
in the loop (issue 21: "the profile showing where the rest goes").

After the end-to-end run, each stage's source topic holds what that stage read. Here
one process builds the worker's handlers (streams/worker/topology.py, the same code), reads
each topic from offset 0 and feeds its records, a partition's batch at a time, to the
handler over fresh tables, in the topology's order (so a stage's state is built as in
the run). Sends are counted, not produced; each batch is a transaction whose changelog
records are counted, and its commit is the RocksDB writes only. The figure
is process CPU time per record: what one core would need, whatever else the box is
doing (the end-to-end figure is the one that shares the box).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from connectors.kafka.clients import read_to_end
from streams.runtime.messages import Message, origin_of
from streams.runtime.state import Task
from streams.settings import Settings, client_config
from streams.topics import topic_names
from streams.worker.topology import build_worker

BATCH = 500  # records per handler call: a partition's share of a busy consume
READ_TIMEOUT_S = 120.0
MAX_RECORDS = 1_000_000


def read_topic(settings: Settings, topic: str, limit: int) -> dict[int, list[Message]]:
    """Up to `limit` committed records of `topic`, per partition, in offset order."""
    out: dict[int, list[Message]] = {p: [] for p in range(settings.partitions)}
    for n, msg in enumerate(
        read_to_end(client_config(settings), [topic], settings.partitions, timeout_s=READ_TIMEOUT_S)
    ):
        if n >= limit:
            break
        ts = msg.timestamp()[1]
        out[msg.partition()].append(
            Message(
                msg.topic(), msg.partition(), msg.offset(), ts, msg.key(), msg.value(), origin_of(msg.headers(), ts)
            )
        )
    return out


def stage_cpu(settings: Settings, limit: int = 50_000) -> dict[str, Any]:
    """CPU microseconds per record of the ingest (keys included), risk, payments, ledger and monitoring handlers
    over the run's own records (at most `limit` per stage)."""

    assert 0 < limit <= MAX_RECORDS
    names = topic_names(settings)
    with tempfile.TemporaryDirectory(prefix="paystream-stages-") as tmp:
        local = settings.model_copy(update={"data_dir": Path(tmp), "providers_dir": Path(tmp) / "providers"})
        engine = build_worker(local)  # the same handlers and vault (the run's card-vault, read), its own provider books
        sends = [0]

        def count(*_: Any) -> None:
            sends[0] += 1

        tasks = {p: Task(p, engine.tables, Path(tmp) / "state", count) for p in range(settings.partitions)}
        out: dict[str, Any] = {}
        for stage, topic in (
            ("ingest", names.commands),  # with the keys stage, in one transaction
            ("risk", names.risk),
            ("payments", names.validated),
            ("ledger", names.ledger),
            ("monitoring", names.monitoring_activity),
        ):
            records = read_topic(settings, topic, limit)
            handle = engine.stages[topic].handle
            n, before, started = sum(map(len, records.values())), sends[0], time.process_time()
            changelog = 0
            for p, messages in records.items():
                for i in range(0, len(messages), BATCH):
                    handle(messages[i : i + BATCH], tasks[p])
                    changelog += tasks[p].pending_keys()
                    tasks[p].seal()
                    tasks[p].apply()
            cpu_s = time.process_time() - started
            out[stage] = {
                "records": n,
                "cpu_us_per_record": round(cpu_s / n * 1e6, 1) if n else None,
                "sends_per_record": round((sends[0] - before) / n, 2) if n else None,
                # Each a produce at the commit (one per key and transaction; a batch here is one).
                "changelog_records_per_record": round(changelog / n, 2) if n else None,
            }
        for task in tasks.values():
            task.close()
    return out
