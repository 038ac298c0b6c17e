"""`paystream bench`'s peers: one stateful exactly-once hop on each runtime, one run,
one broker (issue 21's table, measured again each time).

The hop: read a record, add one to a RocksDB counter under its key, write the record
to another topic, exactly-once. Peers: Faust (faust-streaming), quixstreams, our
runtime (streams/runtime), and the ceiling: a confluent-kafka consume -> produce loop
under transactions, `consume(1000)` batches, offsets sent with the group metadata every
50 ms, no state. Each runs as a process of its own over a topic filled beforehand; its
rate is taken from the output records' own timestamps (first to last, read_committed),
so start-up and the reader's pace are outside the figure. The broker stamps them as it
appends them (LogAppendTime): a runtime that forwards its input's timestamp (quixstreams
does) cannot make its rate the producer's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from connectors.kafka import admin
from connectors.kafka.admin import TopicSpec
from connectors.kafka.clients import connection, produce_waiting
from streams.runtime.engine import Engine, EngineConfig, Stage
from streams.runtime.messages import Message, Record
from streams.runtime.state import Task
from streams.settings import Settings, client_config

VALUE_BYTES = 300
KEYS = 10_000
COMMIT_INTERVAL_S = 0.05
RUN_TIMEOUT_S = 900.0
CLEANUP_TIMEOUT_S = 120.0  # a loaded broker takes its time to drop a run's topics (the bench's ~45 too)
PEER_PACKAGES = {
    "faust": ["faust-streaming==0.15.3", "aiokafka==0.14.0", "rocksdict==0.3.29"],
    "quixstreams": ["quixstreams==3.28.1"],
}
PEER_SCRIPTS = {"faust": "faust_hop.py", "quixstreams": "quix_hop.py"}
PEERS = ("ceiling", "ours", "quixstreams", "faust")


def peer_python(root: Path, peer: str) -> Path:
    """The python of the peer's own venv under `root`, made (and installed) on first use."""
    venv = root / peer
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if not stamp.exists() or stamp.read_text() != repr(PEER_PACKAGES[peer]):  # made again when the pins change
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", *PEER_PACKAGES[peer]], check=True)
        stamp.write_text(repr(PEER_PACKAGES[peer]))
    return python


def fill(settings: Settings, topic: str, records: int) -> None:
    producer = Producer({**client_config(settings), "enable.idempotence": True, "linger.ms": 20, "log_level": 3})
    value = os.urandom(VALUE_BYTES)
    for i in range(records):
        produce_waiting(producer, topic, value=value, key=f"key-{i % KEYS}".encode())
    assert producer.flush(120) == 0, "the peers' input was not all delivered"


def output_rate(settings: Settings, topic: str, records: int, alive: Any) -> tuple[int, float]:
    """(records seen, records/s from the first to the last output timestamp), read_committed."""
    consumer = Consumer(
        {
            **client_config(settings),
            "group.id": f"peers-{uuid.uuid4().hex}",
            "log_level": 3,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
    seen, first, last = 0, None, None
    deadline = time.monotonic() + RUN_TIMEOUT_S
    try:
        while seen < records and time.monotonic() < deadline and alive():
            for msg in consumer.consume(10_000, timeout=0.5):
                if msg.error() is not None:
                    continue
                ts = msg.timestamp()[1]
                first = ts if first is None else min(first, ts)
                last = ts if last is None else max(last, ts)
                seen += 1
    finally:
        consumer.close()
    span_s = ((last or 0) - (first or 0)) / 1000
    return seen, round(seen / span_s, 1) if span_s > 0 else 0.0


def run_peer(settings: Settings, peer: str, records: int, root: Path) -> dict[str, Any]:
    run = f"peers-{peer}-{uuid.uuid4().hex[:8]}"
    source, sink = f"{run}.in", f"{run}.out"
    admin.ensure_topics(
        client_config(settings),
        [
            TopicSpec(source, settings.partitions, settings.replication_factor, retention_ms=3_600_000),
            TopicSpec(
                sink,
                settings.partitions,
                settings.replication_factor,
                retention_ms=3_600_000,
                extra_config={"message.timestamp.type": "LogAppendTime"},
            ),
        ],
    )
    fill(settings, source, records)
    data_dir = root / "runs" / run
    data_dir.mkdir(parents=True)
    args = [settings.bootstrap_servers, source, sink, run, str(data_dir), str(settings.partitions)]
    if peer in PEER_SCRIPTS:
        command = [
            str(peer_python(root / "venvs", peer)),
            str(Path(__file__).parent / "peers" / PEER_SCRIPTS[peer]),
            *args,
        ]
    else:
        command = [sys.executable, "-m", "streams.harness.bench_peers", peer, *args]
    log = (data_dir / "peer.log").open("wb")
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        seen, per_s = output_rate(settings, sink, records, lambda: proc.poll() is None)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        # its source, sink and changelog start with `run`; quixstreams names its own
        # "changelog__<group>--..." and "repartition__<group>--..." (its group is `run`)
        internal = [f"{kind}__{run}--" for kind in ("changelog", "repartition")]
        admin.delete_topics(client_config(settings), prefixes=[run, *internal], timeout_s=CLEANUP_TIMEOUT_S)
    return {"records": records, "seen": seen, "records_per_s": per_s}


def peers(settings: Settings, records: int, root: Path, which: tuple[str, ...] = PEERS) -> dict[str, Any]:
    """Each peer's hop over `records` records; each rate also as a share of the ceiling."""
    out = {peer: run_peer(settings, peer, records, root) for peer in which}
    ceiling = out.get("ceiling", {}).get("records_per_s")
    for figures in out.values():
        figures["vs_ceiling"] = round(figures["records_per_s"] / ceiling, 3) if ceiling else None
    return out


# -- the two hops that run in our venv (python -m streams.harness.bench_peers PEER ...) ----------


def ceiling_hop(bootstrap: str, source: str, sink: str, run: str) -> None:
    """confluent-kafka's consume -> produce under transactions, no state: the broker's ceiling."""
    conf = connection(bootstrap)
    consumer = Consumer(
        {
            **conf,
            "group.id": run,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "log_level": 3,
        }
    )
    producer = Producer({**conf, "transactional.id": run, "linger.ms": 5, "retry.backoff.ms": 10, "log_level": 3})
    producer.init_transactions()
    consumer.subscribe([source])
    producer.begin_transaction()
    last_commit = time.monotonic()
    while True:
        for msg in consumer.consume(1_000, timeout=0.05):
            if msg.error() is None:
                producer.produce(sink, msg.value(), msg.key(), partition=msg.partition())
            elif msg.error().code() != KafkaError._PARTITION_EOF:
                raise RuntimeError(str(msg.error()))
        if time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
            positions = [tp for tp in consumer.position(consumer.assignment()) if tp.offset >= 0]
            if positions:
                producer.send_offsets_to_transaction(positions, consumer.consumer_group_metadata())
            producer.commit_transaction()
            producer.begin_transaction()
            last_commit = time.monotonic()


def ours_hop(bootstrap: str, source: str, sink: str, run: str, data_dir: str) -> None:
    """The same hop on our runtime: a table `counts`, its changelog, one record out."""

    changelog = f"{run}-counts-changelog"
    admin.ensure_topics(bootstrap, [TopicSpec(changelog, int(sys.argv[7]), 1, compacted=True)])

    def hop(batch: list[Message], task: Task) -> None:
        counts = task.table("counts")
        for m in batch:
            assert m.key is not None
            old = counts.get(m.key)
            counts.put(m.key, str(int(old) + 1 if old else 1).encode())
            task.send(Record(sink, m.key, m.value), m.origin_ms)

    config = EngineConfig(
        client=connection(bootstrap),
        group_id=run,
        transactional_id=run,
        state_dir=Path(data_dir),
        commit_interval_ms=int(COMMIT_INTERVAL_S * 1000),
        commit_records_max=100_000,
        batch_max=2_000,
        session_timeout_ms=10_000,
        linger_ms=5,
        batch_bytes=1_000_000,
        fetch_partition_bytes=1_048_576,
        request_bytes=1_100_000,
    )
    Engine(config, [Stage("hop", source, hop, ("counts",), (sink,))], {"counts": changelog}).run()


if __name__ == "__main__":
    peer, bootstrap, source, sink, run, data_dir = sys.argv[1:7]
    if peer == "ceiling":
        ceiling_hop(bootstrap, source, sink, run)
    elif peer == "ours":
        ours_hop(bootstrap, source, sink, run, data_dir)
    else:
        raise SystemExit(f"unknown peer {peer!r}")
