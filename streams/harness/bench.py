"""`paystream bench`: the pipeline measured against the broker's own ceiling, as JSON.

One process tree, one run, each pipeline run in its own namespace (docs/benchmarks.md):
- ceiling: raw confluent-kafka produce -> read_committed consume of N messages of a
  command's size, over the pipeline's partition count, idempotent acks=all producer:
  the physical limit of this box for our message shape;
- end_to_end: N demo commands through every stage (ingest, keys, risk, payments
  with its postings, ledger) on one worker, EOS on, counted when the outcome is committed; then,
  on the same worker, latency at fixed offered rates (open loop, below);
- sink: the ClickHouse sink (chDB) caught up over that run's topics;
- scaling: the same N commands on two workers, in a fresh namespace, right after;
- replay: `rebuild` of the end-to-end run's events and entries from offset 0;
- scoring: the fraud scorer one transaction at a time (models/bench.py);
- peers: one stateful exactly-once hop on Faust, quixstreams, our runtime and a bare
  confluent-kafka loop (streams/harness/bench_peers.py);
- stages: CPU per record of each stage's handler over the end-to-end run's records,
  Kafka out of the loop (streams/harness/bench_stages.py): where one command's time goes;
- http: `paystream api` in front of the end-to-end run's worker, open loop
  (streams/harness/bench_http.py);
- recovery: that worker killed (-9) at the end and started again: how long it takes
  to restore the run's tables from their changelogs, and its peak RSS before.
- routing: the rails' simulated card traffic through today's rule router and the
  learning router, approval rate and cost (streams/harness/routing_eval.py; no broker).

Latency is open loop: commands go out on a fixed schedule whatever the pipeline
answers, and each is timed from its *scheduled* send time, so a stalled pipeline
shows as queueing instead of slowing the sender (no coordinated omission). The end
is the outcome record's Kafka timestamp (the topics' type is reported: CreateTime,
stamped by the worker's producer inside its transaction, so it excludes the commit
wait), and also the moment a read_committed reader saw it (includes the commit).
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from threading import Thread
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupState, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.kafka import admin
from connectors.kafka.admin import TopicSpec
from connectors.kafka.clients import committed_reader, id_assigned, produce_waiting, readable_past
from models.bench import run_fraud_bench
from schemas.codec import Codec
from streams.client.books import book_records
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import (
    command_key,
    intake_sealer,
    publish_commands,
    seal_commands,
)
from streams.demo.run import generate
from streams.domain.audit import rebuild
from streams.harness import bench_http, bench_peers, bench_stages, routing_eval
from streams.harness.chaos import Fleet
from streams.harness.recovery import RESTORED, restore_window
from streams.harness.stats import percentiles, rate
from streams.jobs.sink import catch_up
from streams.settings import Settings, client_config
from streams.topics import client_ids, declared_topics, discard_namespace, topic_names

COMMAND_CODEC = Codec("PaymentCommand")
MAX_MESSAGES = 10_000_000
MAX_COMMANDS = 1_000_000
MAX_RATE_PER_S = 100_000
CONSUME_TIMEOUT_S = 600.0
WORKER_READY_TIMEOUT_S = 180.0
LATENCY_POLL_S = 0.02  # the read_committed reader's poll while timing: the "visible" figure's resolution
COMMANDS_PER_PAYMENT = 1.48  # what demo traffic averages (streams/demo/run.py)
TIMESTAMP_TYPES = {1: "CreateTime", 2: "LogAppendTime"}
# Offered rates (commands/s): the 1,000/s of the latency goal (p99 <= 200 ms), and on the
# full run toward what this box sustains end to end (docs/benchmarks.md).
RATES_PER_S = (1_000, 2_000, 4_000)
QUICK_RATES_PER_S = (1_000,)


def latencies_ms(scheduled_ms: dict[str, float], answered_ms: dict[str, float]) -> list[float]:
    """Per command, answer time minus scheduled send time; every scheduled command must be answered."""
    missing = scheduled_ms.keys() - answered_ms.keys()
    assert not missing, f"{len(missing)} commands without an answer"
    return [answered_ms[c] - t for c, t in scheduled_ms.items()]


def ceiling(settings: Settings, messages: int) -> dict[str, Any]:
    """Produce then consume `messages` records of a command's size, read_committed."""
    assert 0 < messages <= MAX_MESSAGES
    topic = f"bench-{uuid.uuid4().hex[:8]}.ceiling"
    try:
        admin.ensure_topics(
            client_config(settings),
            [TopicSpec(topic, settings.partitions, settings.replication_factor, retention_ms=3_600_000)],
        )
        sample = [c for c in generate(1, 1, "bench", datetime.now(UTC)).items if isinstance(c, dict)][0]
        value = COMMAND_CODEC.encode(intake_sealer(settings).seal_command(sample))  # what producers publish: no PAN
        producer = id_assigned(client_config(settings))  # a new one's first records may wait 0.5 s for its id
        started = time.monotonic()
        for i in range(messages):
            produce_waiting(producer, topic, key=f"k{i}".encode(), value=value)
            producer.poll(0)
        assert producer.flush(CONSUME_TIMEOUT_S) == 0, "the ceiling's producer did not deliver everything"
        produced_s = time.monotonic() - started
        consumer = Consumer(
            {
                **client_config(settings),
                "group.id": f"bench-{uuid.uuid4().hex}",
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        consumer.assign([TopicPartition(topic, p, 0) for p in range(settings.partitions)])
        seen, consume_started = 0, time.monotonic()
        deadline = consume_started + CONSUME_TIMEOUT_S
        while seen < messages and time.monotonic() < deadline:
            seen += sum(1 for m in consumer.consume(10_000, timeout=0.5) if m.error() is None)
        consumed_s = time.monotonic() - consume_started
        consumer.close()
    finally:
        # Deleted even when the ceiling failed mid-way (every partition holds broker file descriptors).
        admin.discard_topics(client_config(settings), [topic], timeout_s=bench_peers.CLEANUP_TIMEOUT_S)
    return {
        "messages": messages,
        "message_bytes": len(value),
        "consumed": seen,
        "produce_per_s": rate(messages, produced_s),
        "consume_per_s": rate(seen, consumed_s),
        "produce_then_consume_per_s": rate(seen, produced_s + consumed_s),
    }


def run_settings(base: Settings, label: str) -> Settings:
    """A fresh namespace with its own data, keys and providers dirs (what Fleet expects)."""
    namespace = f"bench-{label}-{uuid.uuid4().hex[:8]}"
    data_dir = base.data_dir / "bench" / namespace
    return base.model_copy(
        update={
            "namespace": namespace,
            "data_dir": data_dir,
            "keys_dir": data_dir / "keys",
            "providers_dir": data_dir / "providers",
        }
    )


def group_ready(settings: Settings, members: int) -> bool:
    """The pipeline's consumer group is stable with `members` members (a second
    worker's join would otherwise rebalance inside the clock)."""
    client = AdminClient(client_config(settings) | {"log_level": 0})
    try:
        worker_group = client_ids(settings).worker_group
        group = client.describe_consumer_groups([worker_group])[worker_group].result(timeout=10)
    except Exception:  # noqa: BLE001 - not there yet: the workers have not joined
        return False
    return bool(group.state == ConsumerGroupState.STABLE and len(group.members) == members)


def drained(settings: Settings) -> bool:
    """Every partition the worker group reads is caught up: nothing a read_committed
    reader would find lies past its committed offset. Past it there may be only commit
    markers: one per transaction that wrote the partition after its last record, so
    several when several workers' transactions write it (payments' inputs do)."""
    client = AdminClient(client_config(settings) | {"log_level": 0})
    group = client_ids(settings).worker_group
    try:
        listed = client.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)], request_timeout=10)
        committed = {(tp.topic, tp.partition): tp.offset for tp in listed[group].result(timeout=10).topic_partitions}
        latest = {TopicPartition(t, p): OffsetSpec.latest() for t, p in committed}
        ends = client.list_offsets(latest, request_timeout=10)
        behind = [
            TopicPartition(tp.topic, tp.partition, max(0, committed[(tp.topic, tp.partition)]))
            for tp, f in ends.items()
            if f.result(timeout=10).offset - committed[(tp.topic, tp.partition)] > 1
        ]
        return not behind or not readable(settings, behind)
    except Exception:  # noqa: BLE001 - asked again until the wait's deadline
        return False


def readable(settings: Settings, positions: list[TopicPartition], wait_s: float = 1.0) -> bool:
    """Whether a read_committed reader from `positions` finds a record within `wait_s`."""
    reader = committed_reader(client_config(settings), [])
    try:
        return readable_past(reader, positions, wait_s)
    finally:
        reader.close()


def end_to_end(
    base: Settings,
    commands: int,
    seed: int,
    *,
    workers: int = 1,
    rates_per_s: Sequence[int] = (),
    rate_window_s: float = 0.0,
    profile: Path | None = None,
    then: Callable[[Settings], dict[str, Any]] | None = None,
    recover: bool = False,
    run: Settings | None = None,
) -> tuple[dict[str, Any], Settings]:
    """Demo traffic through `workers` workers; the clock runs from the first publish to
    the last committed outcome (the workers are warmed up first, outside the clock).
    Then, on the same workers, the open-loop latency at each offered rate. `profile`:
    py-spy samples the first worker during the throughput run. `then` runs last, while
    the workers are still up (the HTTP part), its result under "then"; `recover` kills
    the first worker after it and times its restore (under "recovery"). `run`: the run's
    own settings (run_settings of `base`), when the caller made them to delete its topics
    even if this fails; else a fresh namespace, its topics left for the caller to read."""
    assert 0 < commands <= MAX_COMMANDS and 1 <= workers
    settings = run or run_settings(base, f"{workers}w")
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    traffic = generate(max(1, round(commands / COMMANDS_PER_PAYMENT)), seed, settings.namespace, datetime.now(UTC))
    warmup = generate(8 * workers, seed + 1, settings.namespace + "-warm", datetime.now(UTC))
    fleet = Fleet(settings, workers)
    garbage = warmup.garbage
    latency: dict[str, Any] = {}
    with Observer(settings) as observer:
        fleet.start()
        try:
            assert observer.wait_until(lambda: group_ready(settings, workers), WORKER_READY_TIMEOUT_S), fleet.procs[
                0
            ].log_tail()
            # One producer for the run, holding its id before any clock starts: librdkafka may
            # ask a new producer's id only on a 500 ms timer (connectors/kafka/clients.id_assigned),
            # and each window timed from a fresh one carried it.
            producer = id_assigned(client_config(settings))
            publish_commands(settings, warmup.items, producer=producer)
            assert observer.wait_for(
                warmup.command_ids, garbage, WORKER_READY_TIMEOUT_S, lambda *_: fleet.supervise()
            ), fleet.procs[0].log_tail()
            worker_pid = fleet.procs[0].proc.pid if fleet.procs[0].proc is not None else 0
            profiler = start_profile(worker_pid, profile) if profile is not None else None
            # Sealed before the clock: the publisher's own costs (an X25519 per card) are not the pipeline's.
            sealed = seal_commands(traffic.items, intake_sealer(settings))
            started = time.monotonic()
            publish_commands(settings, sealed, producer=producer)
            published_s = time.monotonic() - started
            garbage += traffic.garbage
            answered = observer.wait_for(
                traffic.command_ids,
                garbage,
                CONSUME_TIMEOUT_S,
                lambda *_: fleet.supervise(),
                on_stall=fleet.restart_stalled,
            )
            elapsed_s = time.monotonic() - started
            if profiler is not None:
                stop_profile(profiler)
            books = observer.wait_until(observer.books_applied, CONSUME_TIMEOUT_S)
            for i, r in enumerate(rates_per_s):
                # Each window starts on an idle pipeline: the outcomes come before the posting,
                # ledger and monitoring stages, whose backlog would otherwise compete with the
                # window (its first second measured ~0.9 s at 100/s before this wait).
                idle = observer.wait_until(lambda: drained(settings), CONSUME_TIMEOUT_S)
                latency[str(r)] = open_loop(settings, fleet, observer, producer, r, rate_window_s, seed + 2 + i)
                latency[str(r)]["started_drained"] = idle
                books = books and observer.wait_until(observer.books_applied, CONSUME_TIMEOUT_S)
            after = then(settings) if then is not None else None
            recovery = kill_and_restore(fleet) if recover else None
        finally:
            fleet.stop()
    n = len(traffic.command_ids)
    out = {
        "namespace": settings.namespace,  # its workers' logs: <data dir>/bench/<namespace>/
        "commands": n,
        "workers": workers,
        "answered": answered,
        "books_closed": books,
        "restarts": fleet.worker_restarts,
        "profiled": profile is not None,
        "publish_per_s": rate(n, published_s),
        "commands_per_s": rate(n, elapsed_s),
        "elapsed_s": round(elapsed_s, 2),
        "worker_peak_rss_mb": round(fleet.peak_rss_bytes / 2**20, 1),
    }
    if recovery is not None:
        out["recovery"] = recovery
    if latency:
        out["latency"] = latency
    if after is not None:
        out["then"] = after
    return out, settings


def kill_and_restore(fleet: Fleet) -> dict[str, Any]:
    """kill -9 the first worker and start it again: its log's restore of the run's
    tables ("Restoring state" to "Worker ready"), and from its start to ready (which
    includes the group noticing the dead member: up to a session timeout)."""
    worker = fleet.procs[0]
    fleet.sample_rss()
    seen = len(worker.log_file.read_text(errors="replace").splitlines())
    worker.kill()
    started = time.time()
    worker.start()
    window: tuple[float, float] | None = None
    lines: list[str] = []

    def restored() -> bool:
        nonlocal window, lines
        lines = worker.log_file.read_text(errors="replace").splitlines()[seen:]
        window = restore_window(lines)
        return window is not None or not worker.alive()

    # Polling a log file for a line: no event to wait on.
    wait_until(restored, WORKER_READY_TIMEOUT_S, 0.2)
    assert window is not None, worker.log_tail()
    found = [m for m in map(RESTORED.search, lines) if m is not None]
    records, partitions = (int(found[-1][1]), int(found[-1][2])) if found else (0, 0)
    return {
        "partitions": partitions,
        "changelog_records": records,
        "restore_s": round(window[1] - window[0], 2),
        "restore_s_per_partition": round((window[1] - window[0]) / max(partitions, 1), 3),
        "start_to_ready_s": round(window[1] - started, 1),
    }


def open_loop(
    settings: Settings,
    fleet: Fleet,
    observer: Observer,
    producer: Producer,
    rate_per_s: int,
    window_s: float,
    seed: int,
) -> dict[str, Any]:
    """Offer `rate_per_s` commands/s for `window_s` on a fixed schedule (a sender
    thread that never waits for answers), then wait for every answer. `producer` holds
    its id already (`id_assigned`): a new one's first records may wait 0.5 s for it."""
    assert 0 < rate_per_s <= MAX_RATE_PER_S and 0 < window_s
    count = max(1, round(rate_per_s * window_s))
    traffic = generate(
        max(1, round(count / COMMANDS_PER_PAYMENT)) + 1, seed, f"{settings.namespace}-r{rate_per_s}", datetime.now(UTC)
    )
    # Sealed and encoded before the clock: the sender's own cost must not shift the schedule.
    sealed = [c for c in seal_commands(traffic.items, intake_sealer(settings)) if isinstance(c, dict)][:count]
    messages = [(c["command_id"], command_key(c), COMMAND_CODEC.encode(c)) for c in sealed]
    topic = topic_names(settings).commands
    scheduled_ms: dict[str, float] = {}
    behind_s: list[float] = []

    def send() -> None:
        t0, wall0_ms = time.monotonic(), time.time() * 1000
        for i, (command_id, key, value) in enumerate(messages):
            delay = t0 + i / rate_per_s - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing the schedule, not a sync
            behind_s.append(max(0.0, -delay))
            scheduled_ms.setdefault(command_id, wall0_ms + i * 1000 / rate_per_s)  # a retry keeps its first send
            produce_waiting(producer, topic, key=key, value=value, wait_s=0.01)
            producer.poll(0)
        assert producer.flush(CONSUME_TIMEOUT_S) == 0, "the open-loop sender did not deliver everything"

    sender = Thread(target=send, daemon=True)
    sender.start()
    ids = {c for c, _, _ in messages}
    deadline = time.monotonic() + window_s + CONSUME_TIMEOUT_S
    while (sender.is_alive() or not ids <= observer.first_outcome_at.keys()) and time.monotonic() < deadline:
        observer.poll(LATENCY_POLL_S)
        fleet.supervise()
    sender.join(timeout=1)
    seen = {c: observer.first_outcome_at[c] for c in ids if c in observer.first_outcome_at}
    types = Counter(TIMESTAMP_TYPES.get(t, str(t)) for t, _, _ in seen.values())
    return {
        "offered_per_s": rate_per_s,
        "window_s": window_s,
        "commands": len(ids),
        "answered": len(seen),
        "sender_max_behind_ms": round(max(behind_s, default=0.0) * 1000, 1),
        "outcome_timestamp": "/".join(sorted(types)),
        "committed_ms": percentiles(latencies_ms(scheduled_ms, {c: ts for c, (_, ts, _) in seen.items()})),
        "visible_ms": percentiles(latencies_ms(scheduled_ms, {c: at for c, (_, _, at) in seen.items()})),
    }


def start_profile(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy on a worker until stop_profile: `.svg` a flame graph, else collapsed stacks
    (`raw`, what top_frames reads). --nonblocking: the worker is never paused; --idle:
    waiting counts too, so shares are of wall time; --function: lines folded per function."""
    exe = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if exe is None:
        raise RuntimeError("py-spy is not installed (pip install py-spy)")
    assert pid > 0
    out.parent.mkdir(parents=True, exist_ok=True)
    fmt = "flamegraph" if out.suffix == ".svg" else "raw"
    return subprocess.Popen(
        [
            exe,
            "record",
            "--pid",
            str(pid),
            "--nonblocking",
            "--rate",
            "100",
            "--idle",
            "--threads",
            "--function",
            "--format",
            fmt,
            "-o",
            str(out),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def stop_profile(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGINT)  # py-spy writes its file on ^C
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def top_frames(collapsed: str, n: int = 20) -> dict[str, list[tuple[str, float]]]:
    """From py-spy's collapsed stacks ("f1;f2;f3 count" per line): the `n` frames with
    the largest share of samples (percent) on top of the stack (self) and anywhere in it (total)."""
    assert n > 0
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        k = int(count)
        frames = stack.split(";")
        samples += k
        own[frames[-1]] += k
        for frame in set(frames):
            total[frame] += k
    if not samples:
        return {"self": [], "total": []}
    return {
        kind: [(f, round(100 * c / samples, 1)) for f, c in counter.most_common(n)]
        for kind, counter in (("self", own), ("total", total))
    }


def sink(settings: Settings) -> dict[str, Any]:
    """The ClickHouse sink (its group, committing) caught up over a run's topics into
    chDB under the run's data dir; the tables are made first, outside the clock."""

    client = connect(
        f"chdb://{(settings.data_dir / 'clickhouse').resolve()}", "bench_" + settings.namespace.replace("-", "_")
    )
    try:
        migrate(client)
        started = time.monotonic()
        stats = catch_up(settings, client)
        elapsed_s = time.monotonic() - started
    finally:
        client.close()
    return {
        "records": stats.records,
        "rows": stats.rows_total,
        "dead_letters": stats.dead_letters,
        "batches": stats.batches,
        "records_per_s": rate(stats.records, elapsed_s),
        "rows_per_s": rate(stats.rows_total, elapsed_s),
        "elapsed_s": round(elapsed_s, 2),
    }


def replay(settings: Settings) -> dict[str, Any]:
    names = topic_names(settings)
    started = time.monotonic()
    rebuilt = rebuild(book_records(settings), events_topic=names.events, entries_topic=names.ledger)
    elapsed_s = time.monotonic() - started
    records = rebuilt.events + rebuilt.entries
    return {"events": rebuilt.events, "entries": rebuilt.entries, "records_per_s": rate(records, elapsed_s)}


def scoring(rows: int, seed: int) -> dict[str, Any]:

    result = run_fraud_bench(rows, seed)
    return {
        "rows": result["rows"],
        "online_scorer_tx_per_s": result["online_scorer_tx_per_s"],
        "replay": result["replay"],
    }


def machine(settings: Settings) -> dict[str, Any]:
    """What the figures were measured on: the box, its load when the run began, the versions."""
    import confluent_kafka  # librdkafka's version is the C library's, not a package's

    def v(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    meminfo = Path("/proc/meminfo")
    mem_kb = (
        next((int(line.split()[1]) for line in meminfo.read_text().splitlines() if line.startswith("MemTotal:")), None)
        if meminfo.exists()
        else None
    )
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mem_gb": round(mem_kb / 1024**2, 1) if mem_kb else None,
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
        "partitions": settings.partitions,
        "fraud_scoring": settings.fraud_scoring,
        "providers": settings.providers,
        "commit_interval_ms": settings.commit_interval_ms,
        "versions": {
            "paystream": v("paystream"),
            "confluent_kafka": v("confluent-kafka"),
            "librdkafka": confluent_kafka.libversion()[0],
            "faust_streaming": v("faust-streaming"),
            "quixstreams": v("quixstreams"),
            "chdb": v("chdb"),
            "clickhouse_connect": v("clickhouse-connect"),
            "scikit_learn": v("scikit-learn"),
        },
    }


def run_bench(
    settings: Settings,
    *,
    quick: bool,
    seed: int = 7,
    repeats: int = 1,
    rates_per_s: Sequence[int] = (),
    profile: Path | None = None,
    peer_names: Sequence[str] = bench_peers.PEERS,
) -> dict[str, Any]:
    """Every part once (or `repeats` times for the ceiling, median kept): a dict for JSON.
    The two-worker run follows the one-worker run at once: their ratio is this run's."""
    messages, commands, rows, window_s = (20_000, 2_000, 10_000, 5.0) if quick else (200_000, 20_000, 200_000, 20.0)
    peers = bench_peers.peers(
        settings, messages * 2 if quick else messages, settings.data_dir / "bench" / "peers", tuple(peer_names)
    )
    rates_per_s = tuple(rates_per_s) or (QUICK_RATES_PER_S if quick else RATES_PER_S)
    at, info = datetime.now(UTC).isoformat(timespec="seconds"), machine(settings)
    ceilings = [ceiling(settings, messages) for _ in range(max(1, repeats))]
    ceiling_median = sorted(ceilings, key=lambda c: c["produce_then_consume_per_s"])[len(ceilings) // 2]

    http_rates, http_s, replay_rate = (
        (bench_http.HTTP_QUICK_RATES_PER_S, bench_http.HTTP_QUICK_DURATION_S, bench_http.HTTP_QUICK_REPLAY_RATE_PER_S)
        if quick
        else (bench_http.HTTP_RATES_PER_S, bench_http.HTTP_DURATION_S, bench_http.HTTP_REPLAY_RATE_PER_S)
    )
    e2e_settings, two_settings = run_settings(settings, "1w"), run_settings(settings, "2w")
    try:
        e2e, _ = end_to_end(
            settings,
            commands,
            seed,
            rates_per_s=rates_per_s,
            rate_window_s=window_s,
            profile=profile,
            then=lambda s: bench_http.http(s, http_rates, http_s, replay_rate),
            recover=True,
            run=e2e_settings,
        )
        two, _ = end_to_end(settings, commands, seed, workers=2, run=two_settings)
        latency, http_result, recovery = e2e.pop("latency"), e2e.pop("then"), e2e.pop("recovery")
        one_per_s, two_per_s = e2e["commands_per_s"], two["commands_per_s"]
        out = {
            "bench": "paystream",
            "quick": quick,
            "seed": seed,
            "at": at,
            "machine": info,
            "ceiling_commands_per_s": ceiling_median["produce_then_consume_per_s"],
            "e2e_commands_per_s": one_per_s,
            "latency_ms": {
                r: {q: f["committed_ms"][q] for q in ("p50", "p95", "p99", "max")} for r, f in latency.items()
            },
            "sink_rows_per_s": None,
            "ceiling": ceiling_median,
            "peers": peers,
            "end_to_end": e2e,
            "latency": latency,
            "sink": sink(e2e_settings),
            "stages": bench_stages.stage_cpu(e2e_settings, commands * 2),
            "scaling": {
                "commands": commands,
                "one_worker_commands_per_s": one_per_s,
                "two_workers_commands_per_s": two_per_s,
                "two_vs_one": round(two_per_s / one_per_s, 2) if one_per_s else None,
                "two_workers": two,
            },
            "replay": replay(e2e_settings),
            "scoring": scoring(rows, seed),
            "http": http_result,
            "recovery": recovery,
            # pure simulation, no broker: today's router against the learning one (docs/routing.md)
            "routing": routing_eval.evaluate(2_000 if quick else 10_000, seed),
        }
        out["sink_rows_per_s"] = out["sink"]["rows_per_s"]
        ceiling_rate = ceiling_median["produce_then_consume_per_s"]
        out["end_to_end_vs_ceiling"] = round(one_per_s / ceiling_rate, 4) if ceiling_rate else None
        out["ceiling_runs_per_s"] = [c["produce_then_consume_per_s"] for c in ceilings]
        out["ceiling_spread"] = round(statistics.pstdev(out["ceiling_runs_per_s"]), 1)
        return out
    finally:
        # Read by the sink, stages and replay parts until here; deleted even when the bench
        # failed (every partition holds broker file descriptors).
        for run in (e2e_settings, two_settings):
            discard_namespace(run, bench_peers.CLEANUP_TIMEOUT_S)


def plot(result: dict[str, Any], out: Path) -> None:
    """Throughput bars (log scale: the ceiling is ~400x the pipeline) and latency against
    offered rate (p50/p95/p99 to the outcome's timestamp, and to read_committed visibility)."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only, no display
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("--plot needs matplotlib (pip install 'matplotlib>=3.11.2')") from None
    bars = {
        "ceiling\nmsgs/s": result["ceiling_commands_per_s"],
        "e2e 1 worker\ncmd/s": result["e2e_commands_per_s"],
        "e2e 2 workers\ncmd/s": result["scaling"]["two_workers_commands_per_s"],
        "sink\nrows/s": result["sink_rows_per_s"],
        "replay\nrecords/s": result["replay"]["records_per_s"],
    }
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    left.bar(list(bars), list(bars.values()), color="tab:blue")
    left.set_yscale("log")
    left.set_title("throughput (log scale)")
    for i, value in enumerate(bars.values()):
        left.annotate(f"{value:,.0f}", (i, value), ha="center", va="bottom", fontsize=8)
    offered = sorted(result["latency"], key=int)
    xs = [int(r) for r in offered]
    for key, style in (("committed_ms", "-"), ("visible_ms", ":")):
        for q, colour in (("p50", "tab:green"), ("p95", "tab:orange"), ("p99", "tab:red")):
            right.plot(
                xs,
                [result["latency"][r][key][q] for r in offered],
                style,
                marker="o",
                color=colour,
                label=f"{q} {key.removesuffix('_ms')}",
            )
    right.axvline(result["e2e_commands_per_s"], color="grey", linestyle="--", label="e2e throughput")
    right.set_yscale("log")
    right.set_xlabel("offered commands/s (open loop)")
    right.set_ylabel("command sent -> outcome, ms")
    right.set_title("latency vs offered rate")
    right.legend(fontsize=7)
    fig.suptitle(f"paystream bench {result['at']} ({result['machine']['cpus']} cpus, quick={result['quick']})")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
