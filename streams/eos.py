"""One event's effects, in one Kafka transaction, as one indivisible group.

Faust's exactly-once leaves two holes this module closes (faust-streaming 0.15):
- table writes reach their changelog through a buffer that an EOS commit does not
  flush, so a state change can land in a later transaction than the outcome it
  belongs to;
- a commit may run between any two sends of one event, splitting them.
Either way a crash could then drop a dedup entry while keeping its outcome (a
duplicate later) or the reverse (a lost outcome). `Emitter.emit` sends an event's
changelog records and outputs while holding the transaction's lock, the same lock
Faust's commit takes, so the group lands in one transaction; the event's offset is
committed with it or after it, and the command_id dedup covers the "after" case.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import faust
from aiokafka.producer.transaction_manager import TransactionResult
from faust.streams import _current_event

log = logging.getLogger("paystream.eos")

# When the command entered the pipeline (its payment-commands record's timestamp, ms):
# every output carries it on as a header, so the stage that answers can measure the
# whole way (the `pipeline` latency). Operational time only: no stage decides by it.
ORIGIN_HEADER = "paystream-origin-ms"


def origin_ms(message: Any) -> int:
    """The origin header of a consumed message, or its own timestamp (the first hop)."""
    headers = message.headers or ()
    for key, value in (headers.items() if isinstance(headers, dict) else headers):
        if key == ORIGIN_HEADER and value:
            try:
                return int(value)
            except ValueError:
                break  # not ours to trust: start the clock here
    return int(message.timestamp * 1000)


@dataclass(frozen=True)
class StateWrite:
    table: faust.Table
    key: bytes
    value: bytes | None  # None deletes (a changelog tombstone)


@dataclass(frozen=True)
class Record:
    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None  # None: the source partition (same key, same partition count)


# Faust's commit holds the same lock, with no bound of its own: a commit that never
# returns would stall the partition forever. Past this bound the worker exits; its
# supervisor restarts it and Kafka aborts the open transaction, so nothing is lost
# or doubled. (The restart stall in docs/decisions.md is not this: no lock wait.)
LOCK_WAIT_S = 60.0
LOCK_WARN_S = 10.0
EXIT_STALLED = 75  # EX_TEMPFAIL: restart me


def exit_for_restart(why: str) -> None:
    """Crash-only: log why, flush the logs and exit with EXIT_STALLED at once (a graceful
    stop would wait on what is stuck). Kafka aborts the open transactions and the
    supervisor restarts the worker, which resumes from the committed offsets."""
    log.critical("%s; exiting with %d for a restart", why, EXIT_STALLED)
    logging.shutdown()
    os._exit(EXIT_STALLED)


def still_current(event: faust.types.EventT, generation_id: int, active: bool) -> bool:
    """False for an event fetched before a rebalance (another generation, or flow
    control suspended): it is dropped, and must never be acked, because an acked
    offset is committed as processed; the partition's owner reads it again from the
    committed offset. take_events acks a whole batch, so a dropped event's message is
    marked acked here, which makes Faust's later ack a no-op (the offset is not marked
    safe to commit)."""
    if active and event.message.generation_id == generation_id:
        return True
    event.message.acked = True
    return False


def dlq_mark_key(stage: str, message: Any) -> bytes:
    """The dead-letter mark's key: one per stage, source topic and partition (bounded;
    two stages reading one topic keep apart)."""
    return f"{stage}:{message.topic}/{message.partition}".encode()


def dead_lettered_before(mark: bytes | None, offset: int) -> bool:
    """A mark is the last offset a stage dead-lettered from one source partition,
    written in the dead letter's own transaction. That transaction can commit ahead of
    the source offset (a rebalance commits the open transaction, faust_fixes fix 3),
    and the message comes again; a partition is read in order, so a message at or
    below the mark was handled in a committed transaction: its letter is there already."""
    return mark is not None and offset <= int(mark)


class PartitionNotOwned(RuntimeError):
    """This worker holds no transaction for the partition (it was revoked)."""


class TransactionStalled(RuntimeError):
    """A partition's transaction lock was not released within LOCK_WAIT_S."""


class Emitter:
    def __init__(self, app: faust.App) -> None:
        self.app = app

    def _transaction(self, source_topic: str, partition: int) -> tuple[Any, Any]:
        producer = self.app.producer
        # The id Faust's consumer commits this source partition's offsets under.
        group = self.app.assignor.group_for_topic(source_topic)
        tid = f"{self.app.conf.id}-{group}-{partition}"
        txn_producer = producer._transaction_producers.get(tid)
        if txn_producer is None:
            raise PartitionNotOwned(tid)
        return txn_producer, producer._trn_locks[tid]

    async def emit(self, source: faust.types.EventT, writes: Sequence[StateWrite], records: Sequence[Record]) -> None:
        topic, partition = source.message.topic, source.message.partition
        txn_producer, lock = self._transaction(topic, partition)
        # Local store first (no changelog: we send it ourselves, below). After a
        # crash the local store is discarded and rebuilt from the changelog.
        if writes:  # the RocksDB store files a write under Faust's current event's partition
            _current_event.set(weakref.ref(source))
        for w in writes:
            if w.value is None:
                del w.table.data[w.key]
            else:
                w.table.data[w.key] = w.value
        changelog = [Record(w.table.changelog_topic.get_topic_name(), w.key, w.value) for w in writes]
        origin = [(ORIGIN_HEADER, str(origin_ms(source.message)).encode())]
        try:
            await _acquire(lock, f"{topic}/{partition}")
        except TransactionStalled as e:
            exit_for_restart(str(e))  # a graceful stop would wait on the same stuck commit
        deliveries = _deliveries(txn_producer)
        try:
            for r in changelog:
                deliveries.append(await txn_producer.send(r.topic, value=r.value, key=r.key, partition=partition))
            for r in records:
                target = partition if r.partition is None else r.partition
                deliveries.append(await txn_producer.send(r.topic, value=r.value, key=r.key, partition=target,
                                                          headers=origin))
        finally:
            lock.release()


async def _acquire(lock: asyncio.Lock, what: str) -> None:
    """Take the lock, warning after LOCK_WARN_S and giving up after LOCK_WAIT_S.
    One acquire task throughout, so a late grant cannot leave the lock orphaned."""
    if not lock.locked() and not lock._waiters:  # CPython's queue: with none, acquire cannot wait
        # Free: take it without suspending, so a batch's emits never yield to the
        # producer's sender between events and their records share requests.
        await lock.acquire()
        return
    task = asyncio.ensure_future(lock.acquire())
    done, _ = await asyncio.wait({task}, timeout=LOCK_WARN_S)
    if not done:
        log.warning("waiting over %ss for the transaction of %s (a commit in progress)", LOCK_WARN_S, what)
        done, _ = await asyncio.wait({task}, timeout=LOCK_WAIT_S - LOCK_WARN_S)
    if not done:
        task.cancel()
        raise TransactionStalled(f"transaction of {what} held for over {LOCK_WAIT_S:g}s")


# aiokafka (0.14) commits a transaction one of whose produce batches failed for good
# (a non-retriable error: a record too large, an authorization revoked): the sender's
# commit waits for the batches, then sends EndTxn(COMMIT) whatever their result, so
# the failed records are gone while the source offsets beside them commit: a silent
# loss. Every send's delivery future is kept on its producer's transaction manager
# until the commit; the guarded commit looks at them first and, if one failed, exits
# the worker instead (crash-only: the broker aborts the open transaction, and the
# restarted worker reads the partition again from its committed offset).
_DELIVERIES = "_paystream_deliveries"


def _deliveries(txn_producer: Any) -> list[asyncio.Future]:
    manager = txn_producer._txn_manager
    if not hasattr(manager, _DELIVERIES):
        setattr(manager, _DELIVERIES, [])
    return getattr(manager, _DELIVERIES)


def failed_delivery(manager: Any) -> BaseException | None:
    """The first failure among the deliveries of the transaction being committed
    (each is done: the commit waited for its batches); the list starts afresh."""
    deliveries = getattr(manager, _DELIVERIES, [])
    setattr(manager, _DELIVERIES, [])
    for future in deliveries:
        if future.done() and not future.cancelled() and future.exception() is not None:
            return future.exception()
    return None


def guard_commits(sender_cls: Any) -> None:
    """Install the guard on aiokafka's Sender (once per process)."""
    original = sender_cls._do_txn_commit
    if getattr(original, _DELIVERIES, False):
        return

    @functools.wraps(original)
    async def _do_txn_commit(self: Any, commit_result: Any) -> Any:
        await self._message_accumulator.flush_for_commit()  # as the original does first: every batch answered
        failure = failed_delivery(self._txn_manager)
        if failure is not None and commit_result == TransactionResult.COMMIT:
            exit_for_restart(f"a record of transaction {self._txn_manager.transactional_id} was not delivered"
                             f" ({type(failure).__name__}: {failure}), not committing")
        return await original(self, commit_result)

    setattr(_do_txn_commit, _DELIVERIES, True)
    sender_cls._do_txn_commit = _do_txn_commit
