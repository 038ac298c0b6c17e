"""`paystream bench`: the pipeline measured against the broker's own ceiling, as JSON.

First slice (issue 10), one process tree, one run, each part in its own namespace:
- ceiling: raw confluent-kafka produce -> read_committed consume of N messages of a
  command's size, over the pipeline's partition count, idempotent acks=all producer:
  the physical limit of this box for our message shape;
- end_to_end: N demo commands through every stage (ingest, keys, risk, payments,
  post, ledger) on one worker, EOS on, counted when the outcome is committed;
- replay: `rebuild` of the end-to-end run's events and entries from offset 0;
- scoring: the fraud scorer one transaction at a time (models/bench.py).
Latency at fixed offered rates, the sink and one-vs-two workers come next.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
import uuid
from datetime import datetime, timezone
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from connectors.kafka import admin
from connectors.kafka.admin import TopicSpec
from connectors.kafka.clients import command_producer
from schemas.codec import Codec
from streams.audit import rebuild
from streams.cli_ledger import book_records
from streams.demo import generate
from streams.observe import Observer
from streams.publish import intake_sealer, publish_commands
from streams.runner import WorkerProcess
from streams.settings import Settings, client_config
from streams.topics import declared_topics, topic_names

COMMAND_CODEC = Codec("PaymentCommand")
MAX_MESSAGES = 10_000_000
CONSUME_TIMEOUT_S = 600.0
WORKER_READY_TIMEOUT_S = 180.0


def rate(count: int, seconds: float) -> float:
    return round(count / seconds, 1) if seconds > 0 else 0.0


def ceiling(settings: Settings, messages: int) -> dict[str, Any]:
    """Produce then consume `messages` records of a command's size, read_committed."""
    assert 0 < messages <= MAX_MESSAGES
    topic = f"bench-{uuid.uuid4().hex[:8]}.ceiling"
    admin.ensure_topics(client_config(settings), [TopicSpec(topic, settings.partitions, settings.replication_factor,
                                                             retention_ms=3_600_000)])
    sample = [c for c in generate(1, 1, "bench", datetime.now(timezone.utc)).items if isinstance(c, dict)][0]
    value = COMMAND_CODEC.encode(intake_sealer(settings).seal_command(sample))  # what producers publish: no PAN
    producer = command_producer(client_config(settings))
    started = time.monotonic()
    for i in range(messages):
        while True:
            try:
                producer.produce(topic, key=f"k{i}".encode(), value=value)
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    assert producer.flush(CONSUME_TIMEOUT_S) == 0, "the ceiling's producer did not deliver everything"
    produced_s = time.monotonic() - started
    consumer = Consumer({**client_config(settings), "group.id": f"bench-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False, "log_level": 3})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    seen, consume_started = 0, time.monotonic()
    deadline = consume_started + CONSUME_TIMEOUT_S
    while seen < messages and time.monotonic() < deadline:
        seen += sum(1 for m in consumer.consume(10_000, timeout=0.5) if m.error() is None)
    consumed_s = time.monotonic() - consume_started
    consumer.close()
    return {"messages": messages, "message_bytes": len(value), "consumed": seen,
            "produce_per_s": rate(messages, produced_s), "consume_per_s": rate(seen, consumed_s),
            "produce_then_consume_per_s": rate(seen, produced_s + consumed_s)}


def end_to_end(settings: Settings, commands: int, seed: int) -> tuple[dict[str, Any], Settings]:
    """Demo traffic through one worker; the clock runs from the first publish to the
    last committed outcome (the worker is warmed up first, outside the clock)."""
    settings = settings.model_copy(update={"namespace": f"bench-{uuid.uuid4().hex[:8]}",
                                           "data_dir": settings.data_dir / "bench"})
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    traffic = generate(max(1, round(commands / 1.48)), seed, settings.namespace, datetime.now(timezone.utc))
    warmup = generate(1, seed + 1, settings.namespace + "-warm", datetime.now(timezone.utc))
    with WorkerProcess(settings, settings.data_dir / "bench-worker.log") as worker, Observer(settings) as observer:
        publish_commands(settings, warmup.items)
        assert observer.wait_for(warmup.command_ids, warmup.garbage, WORKER_READY_TIMEOUT_S,
                                 lambda *_: worker.supervise()), worker.log_tail()
        started = time.monotonic()
        publish_commands(settings, traffic.items)
        published_s = time.monotonic() - started
        answered = observer.wait_for(traffic.command_ids, traffic.garbage + warmup.garbage, CONSUME_TIMEOUT_S,
                                     lambda *_: worker.supervise(), on_stall=worker.restart)
        elapsed_s = time.monotonic() - started
        books = observer.wait_until(observer.books_applied, CONSUME_TIMEOUT_S)
    n = len(traffic.command_ids)
    return ({"commands": n, "answered": answered, "books_closed": books, "restarts": worker.restarts,
             "publish_per_s": rate(n, published_s), "commands_per_s": rate(n, elapsed_s), "elapsed_s": round(elapsed_s, 2)},
            settings)


def replay(settings: Settings) -> dict[str, Any]:
    names = topic_names(settings)
    started = time.monotonic()
    rebuilt = rebuild(book_records(settings), events_topic=names.events, entries_topic=names.ledger)
    elapsed_s = time.monotonic() - started
    records = rebuilt.events + rebuilt.entries
    return {"events": rebuilt.events, "entries": rebuilt.entries, "records_per_s": rate(records, elapsed_s)}


def scoring(rows: int, seed: int) -> dict[str, Any]:
    from models.bench import run_fraud_bench

    result = run_fraud_bench(rows, seed)
    return {"rows": result["rows"], "online_scorer_tx_per_s": result["online_scorer_tx_per_s"],
            "replay": result["replay"]}


def run_bench(settings: Settings, *, quick: bool, seed: int = 7, repeats: int = 1) -> dict[str, Any]:
    """Every part once (or `repeats` times for the ceiling, median kept): a dict for JSON."""
    messages, commands, rows = (20_000, 2_000, 10_000) if quick else (200_000, 20_000, 200_000)
    ceilings = [ceiling(settings, messages) for _ in range(max(1, repeats))]
    ceiling_median = sorted(ceilings, key=lambda c: c["produce_then_consume_per_s"])[len(ceilings) // 2]
    e2e, run_settings = end_to_end(settings, commands, seed)
    out = {
        "bench": "paystream", "quick": quick, "seed": seed,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "partitions": settings.partitions},
        "ceiling": ceiling_median,
        "end_to_end": e2e,
        "replay": replay(run_settings),
        "scoring": scoring(rows, seed),
    }
    ceiling_rate = ceiling_median["produce_then_consume_per_s"]
    out["end_to_end_vs_ceiling"] = round(e2e["commands_per_s"] / ceiling_rate, 4) if ceiling_rate else None
    out["ceiling_runs_per_s"] = [c["produce_then_consume_per_s"] for c in ceilings]
    out["ceiling_spread"] = round(statistics.pstdev(out["ceiling_runs_per_s"]), 1)
    return out
