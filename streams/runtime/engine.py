"""The worker's loop: one consumer, one transactional producer, tasks per partition.

streams/runtime/__init__.py writes the commit order down; this module carries it out.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connectors.kafka.clients import produce_waiting
from streams import metrics
from streams.runtime.messages import ORIGIN_HEADER, Message, Record, exit_for_restart, origin_of
from streams.runtime.restore import restore
from streams.runtime.state import PENDING_KEYS_MAX, Task

log = logging.getLogger("paystream.runtime")
# librdkafka's own log lines, as structured (and masked) records like every other.
CLIENT_LOG = logging.getLogger("paystream.librdkafka")

Handler = Callable[[list[Message], Task], None]
# A transactional call's retriable errors (CONCURRENT_TRANSACTIONS right after a commit,
# a coordinator moving, a timeout while the broker restarts) are tried again until this
# long after the first attempt, then the worker exits for a restart: past the broker's
# transaction.timeout.ms the transaction is aborted anyway, so waiting longer only
# stalls its partitions (the 100,000-command chaos run's broker restart: a commit
# retried with 30 s timeouts until the stall watch gave up).
TXN_RETRY_S = 15.0
RESTORE_DEADLINE_S = 600.0


IDLE_POLL_S = 0.1  # with no transaction open, the loop's wait for a record between periodic work


def poll_wait_s(txn_age_s: float | None, idle_s: float) -> float:
    """How long the loop may wait for a record: with a transaction open (`txn_age_s`
    old), only until that transaction may commit idle, so what it holds is never kept
    from the next hop by the wait itself."""
    return IDLE_POLL_S if txn_age_s is None else max(0.0, idle_s - txn_age_s)


def commit_due(age_s: float, *, idle: bool, interval_s: float, idle_s: float, over_bounds: bool) -> bool:
    """Whether the open transaction, `age_s` old, commits now. Busy: at the interval (or
    a bound on records or pending keys); idle (nothing more to read now): once it is
    idle_s old, so a record waits for a full interval only while others keep its worker busy."""
    return age_s >= interval_s or (idle and age_s >= idle_s) or over_bounds


@dataclass(frozen=True)
class Stage:
    """A stage, declared: the topic it reads, the tables it keeps, the topics it writes,
    and the handler of a batch of one of its partitions. The engine holds the handler
    to the declaration: it restores exactly the declared tables, and the handler's task
    refuses a table or an output topic the stage did not declare."""

    name: str
    source: str
    handle: Handler
    tables: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Periodic:
    """Work the loop does every `interval_s` between batches (never inside one)."""

    interval_s: float
    run: Callable[[], None]


@dataclass(frozen=True)
class EngineConfig:
    client: Mapping[str, str]  # librdkafka connection settings (may hold a password: never logged)
    group_id: str
    transactional_id: str
    state_dir: Path
    commit_interval_ms: int  # a busy worker commits this often
    commit_records_max: int
    batch_max: int
    session_timeout_ms: int
    linger_ms: int
    batch_bytes: int
    fetch_partition_bytes: int
    request_bytes: int
    commit_idle_ms: int = 0  # an idle worker commits its open transaction once it is this old (<= the interval)
    # A worker that died holding a transaction blocks its partitions' restore on the
    # worker that takes them over until the broker aborts it, after this long.
    transaction_timeout_ms: int = 10_000


class Engine:
    def __init__(
        self,
        config: EngineConfig,
        stages: Sequence[Stage],
        tables: Mapping[str, str],
        periodic: Sequence[Periodic] = (),
        watchers: Sequence[threading.Thread] = (),
    ) -> None:
        assert len({s.source for s in stages}) == len(stages), "one stage per source topic"
        declared = {name for s in stages for name in s.tables}
        assert declared == set(tables), f"tables declared by the stages {sorted(declared)} != kept {sorted(tables)}"
        assert 0 <= config.commit_idle_ms <= config.commit_interval_ms, "an idle commit comes no later than a busy one"
        self.config = config
        self.stages = {s.source: s for s in stages}
        self.tables = dict(tables)
        self.periodic = list(periodic)
        self.watchers = list(watchers)  # daemon threads started with the loop (lag and stall watch)
        self._next_run = [0.0] * len(self.periodic)
        self.tasks: dict[int, Task] = {}
        self.ready = False  # tables restored and partitions assigned
        self._owned: frozenset[tuple[str, int]] = frozenset()  # swapped whole: the probe thread reads it
        self.stopping = False
        self._offsets: dict[tuple[str, int], int] = {}
        self._in_txn = False
        self._txn_started = 0.0
        self._txn_records = 0
        c = config
        self.consumer = Consumer(
            {
                **c.client,
                "group.id": c.group_id,
                "isolation.level": "read_committed",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "earliest",
                # Range co-partitions: partition p of every source topic goes to one worker (one task).
                "partition.assignment.strategy": "range",
                "session.timeout.ms": c.session_timeout_ms,
                "heartbeat.interval.ms": max(1_000, c.session_timeout_ms // 5),
                "max.poll.interval.ms": 600_000,
                "fetch.wait.max.ms": 100,
                "max.partition.fetch.bytes": c.fetch_partition_bytes,
                "queued.max.messages.kbytes": 65_536,
                "log_level": 3,
                "logger": CLIENT_LOG,
            }
        )
        self.producer = Producer(
            {
                **c.client,
                "transactional.id": c.transactional_id,
                "transaction.timeout.ms": c.transaction_timeout_ms,
                "linger.ms": c.linger_ms,
                "batch.size": c.batch_bytes,
                "message.max.bytes": c.request_bytes,
                "batch.num.messages": 10_000,
                "queue.buffering.max.messages": 500_000,
                # confluent-kafka-python #967: send_offsets_to_transaction waited on the default 100 ms backoff.
                "retry.backoff.ms": 10,
                "log_level": 3,
                "logger": CLIENT_LOG,
            }
        )

    # -- lifecycle -------------------------------------------------------------------

    def run(self) -> None:
        """Until SIGTERM or SIGINT; then commit, leave the group and return."""
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self._txn(self.producer.init_transactions)  # fences an earlier incarnation, aborts its transaction
        for watcher in self.watchers:
            watcher.start()
        self.consumer.subscribe(
            list(self.stages), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        interval_s, idle_s = self.config.commit_interval_ms / 1000, self.config.commit_idle_ms / 1000
        while not self.stopping:
            txn_age_s = time.monotonic() - self._txn_started if self._in_txn else None
            first = self.consumer.poll(poll_wait_s(txn_age_s, idle_s))
            if first is not None:
                batch = [first, *self.consumer.consume(self.config.batch_max - 1, timeout=0)]
                self._handle(batch)
            if self._in_txn and commit_due(
                time.monotonic() - self._txn_started,
                idle=first is None,
                interval_s=interval_s,
                idle_s=idle_s,
                over_bounds=self._txn_records >= self.config.commit_records_max
                or sum(t.pending_keys() for t in self.tasks.values()) >= PENDING_KEYS_MAX,
            ):
                self.commit()
            self.producer.poll(0)  # serves the producer's log lines
            self._run_periodic()
        log.info("stopping: committing and leaving the group")
        self.commit()
        self.consumer.close()  # revokes (nothing left to commit) and leaves the group at once
        for task in self.tasks.values():
            task.close(remove=False)
        self.tasks.clear()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _run_periodic(self) -> None:
        now = time.monotonic()
        for i, job in enumerate(self.periodic):
            if now >= self._next_run[i]:
                self._next_run[i] = now + job.interval_s
                job.run()

    # -- handling ------------------------------------------------------------------

    def _handle(self, batch: list[Any]) -> None:
        groups: dict[tuple[str, int], list[Message]] = {}
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    exit_for_restart(f"consumer error: {err}")
                if err.code() != KafkaError._PARTITION_EOF:
                    log.warning("consumer: %s", err)
                continue
            topic, partition = msg.topic(), msg.partition()
            ts_ms = msg.timestamp()[1]
            groups.setdefault((topic, partition), []).append(
                Message(topic, partition, msg.offset(), ts_ms, msg.key(), msg.value(), origin_of(msg.headers(), ts_ms))
            )
        for (topic, partition), messages in groups.items():
            task = self.tasks.get(partition)
            assert task is not None, f"a record of {topic}[{partition}], a partition with no task"
            self._begin()
            stage = self.stages[topic]
            stage.handle(messages, task.scoped(stage.name, stage.tables, stage.outputs))
            self._offsets[(topic, partition)] = messages[-1].offset + 1
            self._txn_records += len(messages)

    def _begin(self) -> None:
        if not self._in_txn:
            self._txn(lambda _: self.producer.begin_transaction())
            self._in_txn = True
            self._txn_started = time.monotonic()
            self._txn_records = 0

    def send(self, record: Record, source_partition: int, origin_ms: int) -> None:
        """An output record into the open transaction, with the origin header."""
        self._produce(record, source_partition, [(ORIGIN_HEADER, str(origin_ms).encode())])

    def _produce(self, record: Record, source_partition: int, headers: list[tuple[str, bytes]] | None) -> None:
        assert self._in_txn, "a send outside a transaction"
        partition = source_partition if record.partition is None else record.partition
        produce_waiting(
            self.producer, record.topic, value=record.value, key=record.key, partition=partition, headers=headers
        )

    # -- committing ----------------------------------------------------------------

    def commit(self) -> None:
        """Changelogs, offsets and outputs in one transaction; then RocksDB."""
        if not self._in_txn:
            return
        started = time.monotonic()
        for task in self.tasks.values():
            for record in task.changelog_records():
                self._produce(record, task.partition, None)
        if self._offsets:
            offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
            metadata = self.consumer.consumer_group_metadata()
            self._txn(lambda timeout_s: self.producer.send_offsets_to_transaction(offsets, metadata, timeout_s))
        self._txn(lambda timeout_s: self.producer.commit_transaction(timeout_s))
        for task in self.tasks.values():
            task.apply()
        self._offsets.clear()
        self._in_txn = False
        metrics.COMMIT_LATENCY.observe(time.monotonic() - started)

    def _txn(self, call: Callable[[float], Any]) -> Any:
        """A transactional call, given the seconds it may block: retriable errors tried
        again until TXN_RETRY_S has passed, anything else exits for a restart."""
        deadline = time.monotonic() + TXN_RETRY_S
        attempt = 0
        while True:
            attempt += 1
            try:
                return call(max(0.1, deadline - time.monotonic()))
            except KafkaException as e:
                err = e.args[0]
                if err.retriable() and time.monotonic() < deadline:
                    time.sleep(min(0.01 * attempt, 0.2))  # CONCURRENT_TRANSACTIONS clears in milliseconds
                    continue
                # Fenced (another incarnation took over), aborted, a record refused for
                # good, or still failing at the deadline: nothing of this transaction may
                # commit. The broker aborts it; the restarted worker resumes from the offsets.
                exit_for_restart(f"transaction failed: {err}")

    # -- rebalancing ---------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit before giving partitions up (eager: every partition is revoked)."""
        self.ready = False
        self._owned = frozenset()
        self.commit()

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Keep the tasks still ours (committed at revocation, so their stores are the
        changelogs' end); restore the new ones before their first record."""
        assigned = {tp.partition for tp in partitions}
        for p in set(self.tasks) - assigned:
            self.tasks.pop(p).close()
        new = sorted(assigned - set(self.tasks))
        if new:
            log.info("Restoring state from changelog topics: partitions %s", new)
            tasks = [Task(p, self.tables, self.config.state_dir, self.send) for p in new]
            started = time.monotonic()
            records = restore(self.config.client, tasks, RESTORE_DEADLINE_S)
            self.tasks.update((t.partition, t) for t in tasks)
            log.info(
                "restored %d changelog records of %d partitions in %.1fs", records, len(new), time.monotonic() - started
            )
        self._owned = frozenset((topic, p) for topic in self.stages for p in assigned)
        self.ready = True
        log.info("Worker ready: partitions %s", sorted(assigned))

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us (session timed out): the open transaction can no
        # longer commit its offsets. Crash-only: restart and rejoin.
        exit_for_restart(f"partitions lost: {sorted({tp.partition for tp in partitions})}")

    def owned(self) -> frozenset[tuple[str, int]]:
        """Source partitions this worker owns (safe to call from another thread)."""
        return self._owned
