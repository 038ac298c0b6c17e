"""The worker's loop: one consumer, one transactional producer, tasks per partition.

streams/runtime/__init__.py writes the commit order down; this module carries it out.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from connectors.kafka.clients import consume_available, produce_batch_waiting, produce_waiting
from streams import metrics
from streams.runtime.callwatch import CallWatch
from streams.runtime.catchup import CatchUp
from streams.runtime.handoff import FROM_HEADER, HANDLED_HEADER, Handoff, marks
from streams.runtime.messages import ORIGIN_HEADER, Message, Record, exit_for_restart, origin_of
from streams.runtime.restore import high_watermarks, restore
from streams.runtime.state import PENDING_KEYS_MAX, Task, shared_changelogs
from streams.runtime.txn import RetryLimits, Step, backoff_s, step_for

log = logging.getLogger("paystream.runtime")
# librdkafka's own log lines, as structured (and masked) records like every other.
CLIENT_LOG = logging.getLogger("paystream.librdkafka")

Handler = Callable[[list[Message], Task], None]
# A transactional call's retriable errors (CONCURRENT_TRANSACTIONS right after a commit,
# a coordinator moving, a timeout while a broker restarts) are tried again at most this
# many times, and for at most EngineConfig.transaction_retry_ms (streams/runtime/txn.py).
TXN_ATTEMPTS_MAX = 200
# Transactions aborted in a row (each redone from its offsets) before the worker exits
# for a restart instead: an input that fails every transaction it is in must not spin.
TXN_ABORTS_IN_ROW_MAX = 5
RESTORE_DEADLINE_S = 600.0
# A task's feeding partitions reach their ends within this after an assignment, or the
# worker exits for a restart (streams/runtime/catchup.py); it says what it waits for at
# every CATCH_UP_REPORT_S meanwhile.
CATCH_UP_DEADLINE_S = 600.0
CATCH_UP_REPORT_S = 10.0


# Each call asking the hand-off partitions' ends is bounded by this, and a failed ask is
# tried again after it: a broker away (restarting) costs the loop a second now and then.
HANDOFF_ASK_S = 1.0
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


def watch_gc() -> None:
    """Time the cyclic collector's pauses (metrics.GC_PAUSE), and move every object the
    start made (modules, models, schemas, the stages' wiring: ~180k) out of its reach
    for good: in a 10,000-command run the worker's five full collections stopped the loop
    89-191 ms each; frozen, 3-28 ms. They live as long as the process anyway; what the
    loop makes is collected as before."""
    if _time_gc not in gc.callbacks:
        gc.callbacks.append(_time_gc)
    gc.freeze()


_gc_started_s = [0.0]


def _time_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        _gc_started_s[0] = time.perf_counter()
    else:
        metrics.child(metrics.GC_PAUSE, str(info["generation"])).observe(time.perf_counter() - _gc_started_s[0])


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
    # Its source feeds a table the task's other stages read: after an assignment they
    # wait until it is read to its end (streams/runtime/catchup.py).
    feeds: bool = False
    # A record an earlier stage (by declaration order) sends to a partition of its source
    # that this worker owns is handed to it in the same transaction (streams/runtime/handoff.py).
    takes_handoff: bool = False


@dataclass
class Flight:
    """A transaction handed to the committer thread: what its abort must rewind."""

    offsets: dict[tuple[str, int], int]  # the next offset to read, per source partition
    replay_from: dict[tuple[str, int], int]  # its first offset, per source partition
    replay: bool  # redo its input if it aborts (not at a revocation or a stop)
    started_s: float
    committed: Future[bool]  # True: committed; False: to abort (anything else exits)


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
    # worker that takes them over until the broker aborts it, after this long; and a
    # record not delivered within it fails its transaction (librdkafka caps
    # message.timeout.ms at it). docs/reliability.md, finding 8, says how it was chosen.
    transaction_timeout_ms: int = 30_000
    # How long one transactional call's retriable errors are tried again: shorter than
    # the transaction timeout, past which the broker aborts the transaction anyway.
    transaction_retry_ms: int = 20_000

    def __post_init__(self) -> None:
        assert 0 < self.transaction_retry_ms < self.transaction_timeout_ms, "retries end before the broker aborts"


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
        shared_changelogs(tables)  # asserts the names can prefix a shared changelog's keys
        assert 0 <= config.commit_idle_ms <= config.commit_interval_ms, "an idle commit comes no later than a busy one"
        self.config = config
        self.stages = {s.source: s for s in stages}
        # A batch's records go to their stages in this order, so a stage that feeds a
        # table (the merchant registry) runs before one that reads it (the keys stage).
        self._rank = {s.source: i for i, s in enumerate(stages)}
        self.tables = dict(tables)
        self.periodic = list(periodic)
        self._call_watch = CallWatch()  # exits the worker if a transactional call outlives its timeout
        self.watchers = list(watchers)  # daemon threads started with the loop (lag and stall watch)
        self._next_run = [0.0] * len(self.periodic)
        self.tasks: dict[int, Task] = {}
        self.ready = False  # tables restored and partitions assigned
        self._owned: frozenset[tuple[str, int]] = frozenset()  # swapped whole: the probe thread reads it
        self.stopping = False
        self._offsets: dict[tuple[str, int], int] = {}
        self._replay_from: dict[tuple[str, int], int] = {}  # the open transaction's first offset per partition
        self._in_txn = False
        # The open transaction was begun at the producer; until the one in flight is
        # decided it is not, and its sends wait here (bounded by commit_records_max).
        self._begun = False
        self._deferred: list[tuple[Record, int, list[tuple[str, bytes]], int | None]] = []
        self._flight: Flight | None = None
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="commit")
        self._txn_started = 0.0
        self._txn_records = 0
        self._must_abort = False  # a send was refused: the open transaction cannot commit
        self._aborts_in_row = 0
        self._retry = RetryLimits(TXN_ATTEMPTS_MAX, config.transaction_retry_ms)
        self._catch_up: CatchUp | None = None
        self._catch_up_started = 0.0
        self._catch_up_reported = 0.0
        self._handoff = Handoff(s.source for s in stages if s.takes_handoff)
        self._handed: dict[tuple[str, int], list[Message]] = {}  # this batch's hand-offs, per partition
        self._handling_rank = len(stages)  # the stage whose sends are being made: none, outside a batch
        self._handoff_retry_s = 0.0  # the broker did not tell the ends: ask again from then
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
                # How the catch-up after an assignment knows a feeding partition is at its end.
                "enable.partition.eof": True,
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
        self._call_watch.start()  # init_transactions is watched too: a restarted broker can hang it as well
        # Fences an earlier incarnation and aborts its open transaction.
        self._txn("init_transactions", self.producer.init_transactions)
        for watcher in self.watchers:
            watcher.start()
        watch_gc()
        self.consumer.subscribe(
            list(self.stages), on_assign=self._on_assign, on_revoke=self._on_revoke, on_lost=self._on_lost
        )
        interval_s, idle_s = self.config.commit_interval_ms / 1000, self.config.commit_idle_ms / 1000
        while not self.stopping:
            # Before the consume: an abort seeks back, and nothing may be read past it unhandled.
            self._settle(wait=False)
            if self._handoff.wants_ends and self.ready:
                self._ask_handoff_ends()
            txn_age_s = time.monotonic() - self._txn_started if self._in_txn else None
            batch = consume_available(self.consumer, self.config.batch_max, poll_wait_s(txn_age_s, idle_s))
            handled = self._handle(batch) if batch else 0
            if self._catch_up is not None:
                self._watch_catch_up()
            if self._in_txn and commit_due(
                time.monotonic() - self._txn_started,
                idle=handled == 0,
                interval_s=interval_s,
                idle_s=idle_s,
                over_bounds=self._txn_records >= self.config.commit_records_max
                or sum(t.pending_keys() for t in self.tasks.values()) >= PENDING_KEYS_MAX,
            ):
                # Idle: nothing to handle meanwhile, so the commit is decided at once, as
                # before it left the loop (left in flight, 100/s measured ~40 ms slower at p50).
                self.commit(wait=handled == 0)
            self.producer.poll(0)  # serves the producer's log lines
            self._run_periodic()
        log.info("stopping: committing and leaving the group")
        self.commit(replay=False, wait=True)
        self._committer.shutdown()
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

    def _handle(self, batch: list[Any]) -> int:
        """The batch's records, each to its stage; returns how many there were."""
        groups: dict[tuple[str, int], list[Message]] = {}
        read: dict[tuple[str, int], tuple[int, int]] = {}  # (first, last) offset read, skipped records too
        ends: list[tuple[str, int, int]] = []  # end-of-partition events: (topic, partition, offset)
        handoff = self._handoff
        for msg in batch:
            err = msg.error()
            if err is not None:
                if err.fatal():
                    exit_for_restart(f"consumer error: {err}")
                if err.code() == KafkaError._PARTITION_EOF:
                    ends.append((msg.topic(), msg.partition(), msg.offset()))
                else:
                    log.warning("consumer: %s", err)
                continue
            topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
            tp = (topic, partition)
            read[tp] = (read[tp][0] if tp in read else offset, offset)
            headers = msg.headers()
            if headers is not None and len(headers) > 1:  # ours carry the origin alone, unless marked
                handled, token = marks(headers)
                if handled:  # handled in the transaction that wrote it (which committed)
                    continue
                if token is not None:
                    handoff.read_back(topic, partition, msg.key(), token)
            ts_ms = msg.timestamp()[1]
            groups.setdefault(tp, []).append(
                Message(topic, partition, offset, ts_ms, msg.key(), msg.value(), origin_of(headers, ts_ms))
            )
        for (topic, partition), (_, last) in read.items():
            handoff.read(topic, partition, last + 1)
        for topic, partition, offset in ends:
            handoff.read(topic, partition, offset)
        for (topic, partition), (first, last) in sorted(read.items(), key=lambda tp_read: self._rank[tp_read[0][0]]):
            task = self.tasks.get(partition)
            assert task is not None, f"a record of {topic}[{partition}], a partition with no task"
            self._begin()
            messages = groups.get((topic, partition))
            if messages:
                self._run(self.stages[topic], messages, task)
            self._replay_from.setdefault((topic, partition), first)
            self._offsets[(topic, partition)] = last + 1
        # What the stages handed on, in the order of the stages (a hand-off only goes to a
        # later one, so each stage's are all here by its turn), in this transaction.
        while self._handed:
            tp = min(self._handed, key=lambda tp: (self._rank[tp[0]], tp[1]))
            self._run(self.stages[tp[0]], self._handed.pop(tp), self.tasks[tp[1]])
        metrics.flush_held()  # the stages' latencies, one add per bucket for the batch
        if self._must_abort:
            self._abort("a send was refused")
        elif self._catch_up is not None:
            # Past what was just handled (in the open transaction: the stages that read
            # the table read its pending writes), and past what the events say is the end.
            reached = [(topic, partition, last + 1) for (topic, partition), (_, last) in read.items()]
            self._resume(
                self._catch_up, [tp for t, p, offset in reached + ends for tp in self._catch_up.reached(t, p, offset)]
            )
        return len(batch) - len(ends)

    def _run(self, stage: Stage, messages: list[Message], task: Task) -> None:
        """One stage's handler over messages of one partition, in the open transaction."""
        self._handling_rank = self._rank[stage.source]
        try:
            stage.handle(messages, task.scoped(stage.name, stage.tables, stage.outputs))
        finally:
            self._handling_rank = len(self._rank)
        self._txn_records += len(messages)

    def _ask_handoff_ends(self) -> None:
        """The owned hand-off partitions' ends, once after each reset; a broker that does
        not answer now is asked again at the next turn (nothing is handed off meanwhile)."""
        if time.monotonic() < self._handoff_retry_s:
            return
        owned = [(t, p) for t in sorted(self._handoff.targets) for p in sorted(self.tasks)]
        try:
            ends = high_watermarks(self.config.client, owned, HANDOFF_ASK_S)
        except KafkaException as e:
            log.warning("hand-offs wait: the partitions' ends are not known yet (%s)", e.args[0])
            self._handoff_retry_s = time.monotonic() + HANDOFF_ASK_S
            return
        self._handoff.set_ends(ends)

    def _resume(self, catch_up: CatchUp, partitions: list[tuple[str, int]]) -> None:
        if partitions:
            self.consumer.resume([TopicPartition(t, p) for t, p in partitions])
        if catch_up.done:
            log.info("feeding partitions read to their ends in %.1fs", time.monotonic() - self._catch_up_started)
            self._catch_up = None

    def _watch_catch_up(self) -> None:
        """Say what the held partitions wait for; past the deadline, exit for a restart."""
        assert self._catch_up is not None
        now = time.monotonic()
        waiting = self._catch_up.waiting_for()
        if now - self._catch_up_started > CATCH_UP_DEADLINE_S:
            exit_for_restart(f"feeding partitions not at their ends after {CATCH_UP_DEADLINE_S:.0f}s: {waiting}")
        if now - self._catch_up_reported >= CATCH_UP_REPORT_S:
            self._catch_up_reported = now
            log.info(
                "holding %d partitions until the feeding partitions reach their ends (partition: end): %s",
                len(self._catch_up.held()),
                waiting,
            )

    def _begin(self) -> None:
        if not self._in_txn:
            self._in_txn = True
            self._txn_started = time.monotonic()
            self._txn_records = 0
            if self._flight is None:  # else it begins once that commit is decided (`_settle`)
                self._begin_at_producer()

    def _begin_at_producer(self) -> None:
        """Begin the open transaction at the producer and send what waited for it."""
        assert self._in_txn and not self._begun and self._flight is None
        self._txn("begin_transaction", lambda _: self.producer.begin_transaction())
        self._begun = True
        deferred, self._deferred = self._deferred, []
        for record, partition, headers, timestamp_ms in deferred:
            self._produce(record, partition, headers, timestamp_ms)

    def send(self, record: Record, source_partition: int, origin_ms: int) -> None:
        """An output record into the open transaction, with the origin header; while the
        transaction before it commits, kept until this one begins at the producer. One for
        a later stage's partition that this worker owns is handed to that stage too."""
        assert self._in_txn, "a send outside a transaction"
        topic, key = record.topic, record.key
        partition = source_partition if record.partition is None else record.partition
        headers = [(ORIGIN_HEADER, str(origin_ms).encode())]
        timestamp_ms = None  # the producer's clock
        if topic in self._handoff.targets:
            if (
                self._handling_rank < self._rank[topic]
                and self._catch_up is None
                and self._handoff.may_hand(topic, partition, key)
            ):
                # The stage reads the timestamp the record carries (event time of its own).
                timestamp_ms = int(time.time() * 1000)
                headers.append((HANDLED_HEADER, b""))
                ref = self._handoff.next_ref()
                handed = Message(topic, partition, -1, timestamp_ms, key, record.value, origin_ms, ref)
                self._handed.setdefault((topic, partition), []).append(handed)
                metrics.HANDOFFS.inc()
            elif self._handoff.sent_normally(topic, partition, key):
                headers.append((FROM_HEADER, self._handoff.token))
        if not self._begun:
            self._deferred.append((record, partition, headers, timestamp_ms))
            return
        self._produce(record, partition, headers, timestamp_ms)

    def _produce(
        self, record: Record, partition: int, headers: list[tuple[str, bytes]], timestamp_ms: int | None = None
    ) -> None:
        if self._must_abort:
            return  # the transaction is lost already; its input is redone after the abort
        extra = {} if timestamp_ms is None else {"timestamp": timestamp_ms}
        try:
            produce_waiting(
                self.producer,
                record.topic,
                value=record.value,
                key=record.key,
                partition=partition,
                headers=headers,
                **extra,
            )
        except KafkaException as e:
            self._refused(e)

    def _produce_changelog(self, topic: str, partition: int, records: list[tuple[bytes, bytes | None]]) -> None:
        """A task's changelog records at the commit, in one call per topic (each key once)."""
        if self._must_abort:
            return
        try:
            produce_batch_waiting(self.producer, topic, partition, records)
        except KafkaException as e:
            self._refused(e)

    def _refused(self, e: KafkaException) -> None:
        # librdkafka refuses a record (_STATE) once the transaction has failed (a
        # record timed out, say). Abort it: if the producer is fenced or fatal instead,
        # the abort fails and the worker exits.
        log.warning("a send into the open transaction was refused (%s): aborting it", e.args[0])
        self._must_abort = True

    # -- committing ----------------------------------------------------------------

    def commit(self, replay: bool = True, wait: bool = False) -> None:
        """Hand the open transaction to the committer thread: its changelogs now, then
        its offsets and the commit there, while this thread handles the next batch into
        a transaction that begins at the producer once this one is decided (`_settle`;
        with `wait`, before returning). The one before it is decided first: one
        transaction in flight at most."""
        self._settle(replay=replay)
        if not self._in_txn:
            return
        started = time.monotonic()
        for task in self.tasks.values():
            for topic, records in task.changelog_records().items():
                self._produce_changelog(topic, task.partition, records)
        if self._must_abort:
            self._abort("the transaction failed", replay)
            return
        # The same offsets and metadata on every attempt (rdkafka.h: retriable, not resumable).
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._offsets.items()]
        metadata = self.consumer.consumer_group_metadata() if offsets else None
        for task in self.tasks.values():
            task.seal()
        committed = self._committer.submit(self._commit_offsets_and_transaction, offsets, metadata)
        self._flight = Flight(self._offsets, self._replay_from, replay, started, committed)
        self._offsets, self._replay_from = {}, {}
        self._in_txn = self._begun = False
        if wait:
            self._settle(replay=replay)

    def _commit_offsets_and_transaction(self, offsets: list[TopicPartition], metadata: Any) -> bool:
        """On the committer thread (librdkafka's calls block it, not the loop)."""
        committed = not offsets or self._txn(
            "send_offsets_to_transaction",
            lambda timeout_s: self.producer.send_offsets_to_transaction(offsets, metadata, timeout_s),
            in_transaction=True,
        )
        return committed and self._txn(
            "commit_transaction", lambda timeout_s: self.producer.commit_transaction(timeout_s), in_transaction=True
        )

    def _settle(self, *, wait: bool = True, replay: bool = True) -> None:
        """The transaction in flight, if decided (or waited for): committed, its writes go
        to RocksDB and the open transaction begins at the producer; failed, it is aborted
        with the open one, which read its writes, and both are redone (with `replay`)."""
        flight = self._flight
        if flight is None or not (wait or flight.committed.done()):
            return
        committed = flight.committed.result()
        self._flight = None
        if committed:
            for task in self.tasks.values():
                task.apply()
            self._aborts_in_row = 0
            metrics.COMMIT_LATENCY.observe(time.monotonic() - flight.started_s)
            if self._in_txn:
                self._begin_at_producer()
            return
        # The aborted transaction's producer state is the flight's: the open one never began.
        self._offsets = {**flight.offsets, **self._offsets}  # the furthest read, per partition
        self._replay_from = {**self._replay_from, **flight.replay_from}  # the first
        self._abort("the transaction failed", flight.replay and replay)

    def _abort(self, why: str, replay: bool = True) -> None:
        """Abort the open transaction (its outputs, changelog records and offsets go
        with it), drop its pending table writes and, with `replay`, seek its source
        partitions back to where it began: the same input is handled again in the next
        transaction, as a restarted worker would from the committed offsets, without
        the restart and the restore. At a revocation there is nothing to redo here: the
        partitions' next owner starts from the committed offsets."""
        self._aborts_in_row += 1
        if self._aborts_in_row > TXN_ABORTS_IN_ROW_MAX:
            exit_for_restart(f"{why}: {TXN_ABORTS_IN_ROW_MAX} transactions aborted in a row")
        log.warning("%s: aborting the transaction and %s", why, "redoing its input" if replay else "giving it up")
        self._txn("abort_transaction", lambda timeout_s: self.producer.abort_transaction(timeout_s))
        metrics.TRANSACTIONS_ABORTED.inc()
        for task in self.tasks.values():
            task.discard()
        if replay:
            try:
                for (topic, partition), offset in self._replay_from.items():
                    self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as e:
                exit_for_restart(f"cannot seek back to redo an aborted transaction: {e.args[0]}")
            self._hold_while_redone({tp: self._offsets[tp] for tp in self._replay_from if self.stages[tp[0]].feeds})
        self._offsets.clear()
        self._replay_from.clear()
        self._in_txn = self._begun = False
        self._deferred.clear()
        self._handed.clear()
        # Nothing of ours is undecided now: hand-offs wait until the partitions are read again.
        self._handoff.reset((t, p) for t in self._handoff.targets for p in self.tasks)
        self._must_abort = False

    def _txn(self, name: str, call: Callable[[float], Any], *, in_transaction: bool = False) -> bool:
        """A transactional call, given the seconds it may block. True once it succeeds;
        False when the open transaction must be aborted (only `in_transaction` calls);
        anything else exits for a restart (streams/runtime/txn.py decides which)."""
        first = time.monotonic()
        deadline = first + self.config.transaction_retry_ms / 1000
        attempt = 0
        while True:
            attempt += 1
            try:
                timeout_s = max(0.1, deadline - time.monotonic())
                with self._call_watch.watching(name, timeout_s):
                    call(timeout_s)
                return True
            except KafkaException as e:
                err = e.args[0]
                elapsed_ms = (time.monotonic() - first) * 1000
                decided = step_for(
                    err, in_transaction=in_transaction, attempt=attempt, elapsed_ms=elapsed_ms, limits=self._retry
                )
                if decided is Step.RETRY:
                    if attempt == 1:
                        log.warning("%s: %s; trying again for up to %d ms", name, err, self.config.transaction_retry_ms)
                    metrics.TRANSACTION_RETRIES.labels(call=name).inc()
                    time.sleep(backoff_s(attempt))
                    continue
                if decided is Step.ABORT:
                    log.warning("%s: %s (abortable)", name, err)
                    return False
                # Fenced (another incarnation took over), fatal, an error with no flag, or
                # still failing at the deadline: nothing of this transaction may commit.
                # The broker aborts it; the restarted worker resumes from the offsets.
                exit_for_restart(f"{name} failed after {attempt} attempt(s) in {elapsed_ms:.0f} ms: {err}")

    # -- rebalancing ---------------------------------------------------------------

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Commit before giving partitions up (eager: every partition is revoked)."""
        self.ready = False
        self._owned = frozenset()
        self.commit(replay=False, wait=True)
        self._handoff.reset(())
        if self._catch_up is not None:  # what stays paused past a revocation would stay paused after it
            consumer.resume([TopicPartition(t, p) for t, p in self._catch_up.held()])
            self._catch_up = None

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Keep the tasks still ours (committed at revocation, so their stores are the
        changelogs' end); restore the new ones before their first record; hold every
        task's other partitions until its feeding partitions are read to their ends."""
        assert self._flight is None, "an assignment with a transaction in flight (a revocation decides it)"
        assigned = {tp.partition for tp in partitions}
        for p in set(self.tasks) - assigned:
            self.tasks.pop(p).close()
        new = sorted(assigned - set(self.tasks))
        try:
            if new:
                log.info("Restoring state from changelog topics: partitions %s", new)
                tasks = [Task(p, self.tables, self.config.state_dir, self.send) for p in new]
                started = time.monotonic()
                records = restore(self.config.client, tasks, RESTORE_DEADLINE_S)
                self.tasks.update((t.partition, t) for t in tasks)
                log.info(
                    "restored %d changelog records of %d partitions in %.1fs",
                    records,
                    len(new),
                    time.monotonic() - started,
                )
            self._hold_until_fed(consumer, partitions, assigned)
        except KafkaException as e:
            # A broker that does not answer the partitions' ends (a node gone): nothing is
            # handled yet, so the restarted worker starts this assignment over.
            exit_for_restart(f"the assignment could not read the partitions' ends: {e.args[0]}")
        self._owned = frozenset((topic, p) for topic in self.stages for p in assigned)
        # Committed at the revocation, nothing of ours is undecided: hand-offs wait until
        # these are read to their ends (asked in the loop, `_ask_handoff_ends`).
        self._handoff.reset((t, p) for t in self._handoff.targets for p in assigned)
        self.ready = True
        log.info("Worker ready: partitions %s", sorted(assigned))

    def _hold_until_fed(self, consumer: Consumer, partitions: list[TopicPartition], assigned: set[int]) -> None:
        feeding = [topic for topic, stage in self.stages.items() if stage.feeds]
        if not feeding or not assigned:
            return
        held = self._hold(high_watermarks(self.config.client, [(t, p) for t in feeding for p in assigned]), assigned)
        if not held:
            return
        # Assigned here, not after the callback: only an assigned partition can be paused.
        consumer.assign(partitions)
        consumer.pause([TopicPartition(t, p) for t, p in held])
        log.info("holding %d partitions until the feeding partitions reach their ends", len(held))

    def _hold_while_redone(self, read_to: dict[tuple[str, int], int]) -> None:
        """The aborted transaction had read these feeding partitions up to `read_to` (and
        its other partitions' records saw what they fed); the redo reads them again. Until
        it has, their tasks' other partitions are held, as after an assignment: a create
        is never redone ahead of the registration it was first handled after."""
        if not read_to:
            return
        held = self._hold(read_to, {p for _, p in read_to})
        if held:
            # After the seeks: a pause keeps the position a seek set (librdkafka #3567).
            self.consumer.pause([TopicPartition(t, p) for t, p in held])
        if self._catch_up is not None:
            waiting = len(self._catch_up.held())
            log.info("holding %d partitions until the redo reads the feeding partitions again", waiting)

    def _hold(self, ends: Mapping[tuple[str, int], int], tasks: Iterable[int]) -> list[tuple[str, int]]:
        """Hold the other source partitions of `tasks` until each feeding partition is
        read to its end in `ends` (joining a catch-up under way): those newly held, for
        the caller to pause. A task with nothing to wait for holds nothing."""
        feeding = {topic for topic, stage in self.stages.items() if stage.feeds}
        catch_up = self._catch_up or CatchUp({}, {})
        added = catch_up.hold(ends, {p: [(t, p) for t in self.stages if t not in feeding] for p in tasks})
        released = set(catch_up.released())
        if catch_up.done:
            self._catch_up = None
            return []
        if self._catch_up is None:
            self._catch_up = catch_up
            self._catch_up_started = self._catch_up_reported = time.monotonic()
        return [tp for tp in added if tp not in released]

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # The group moved on without us (session timed out): the open transaction can no
        # longer commit its offsets. Crash-only: restart and rejoin.
        exit_for_restart(f"partitions lost: {sorted({tp.partition for tp in partitions})}")

    def handoffs_waiting(self) -> dict[tuple[str, int], int]:
        """The owned hand-off partitions not taking hand-offs yet, with the end each waits
        to be read to (-1: not asked yet). Loop thread only."""
        return self._handoff.waiting()

    def owned(self) -> frozenset[tuple[str, int]]:
        """Source partitions this worker owns (safe to call from another thread)."""
        return self._owned
