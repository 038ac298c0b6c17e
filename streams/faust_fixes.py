"""Four fixes to faust-streaming's (and aiokafka's) recovery and transactions; each lost, doubled or forked.

1. Recovery order (lost commands after a restart).

When table recovery ends, Faust (0.15.3, `Recovery.on_recovery_completed` and
`Recovery._resume_streams`) resumes the stream partitions first and only then seeks
them to their committed offsets. Records fetched in between reach the agents while
the seek is in flight; the seek then rewinds Faust's read offsets under the records
still being delivered, and its offset bookkeeping (read offsets, acked offsets, gaps)
ends up treating a few never-processed offsets as done. Their offsets are committed,
their outputs never written: found by `tests/integration/streams/test_restart.py`
(kill -9 mid-batch, about one run in three) and traced in `docs/decisions.md`.

The fix keeps Faust's code and changes the order only: while either method runs,
`resume_partitions` is deferred until `perform_seek` has returned, so no stream record
is delivered before its partition sits at the committed offset.

2. Changelog highwaters under exactly-once (doubled commands after a rebalance).
Recovery reads each changelog partition up to its highwater. Under a transaction
Faust takes it from `AIOKafkaConsumer.last_stable_offset(tp)`, which is the LSO of the
last *fetch response* for that partition: None for a partition just assigned, taken
as "empty changelog". A worker taking over partitions from a killed one then skipped
their recovery and processed on empty tables: every command answered again, every
chain restarted at seq 1 (`paystream chaos`, two workers). The fix asks the broker:
`end_offsets` under the consumer's read_committed isolation is the LSO, fresh.

3. Open transactions across a rebalance (a chain fork, chaos run with kills).
Faust's eager rebalance revokes every partition, commits only the transactions that
have new offsets, and then restores the tables of every assigned partition, kept ones
too, from the changelogs up to their LSO. A partition it keeps whose transaction had
no new offset stays IN_TRANSACTION ("Invalid state transition IN_TRANSACTION ->
IN_TRANSACTION" at assignment): its changelog records, still uncommitted, are below
no LSO, so the restore rolled the local tables back to the last commit while that
transaction's outputs stayed in flight. The worker went on from the old state and the
transaction committed later: six events sealed twice with the same chain seq (the
20,000-command run, payment-events[1] offsets 908-920). The fix commits every open
transaction once Faust's revocation is done, as Kafka Streams commits on revocation:
the restore then reads what the outputs were sent with. Outputs committed ahead of
their source offsets are redelivered and skipped by the command_id dedup, whose
entries travel in the same transaction (streams/eos.py).

4. A commit over an undelivered record (a silent loss, found reading aiokafka).
aiokafka's transactional commit waits for the produce batches and then commits
whatever their result: a batch refused for good is dropped while its transaction,
and the source offsets in it, commit. `eos.guard_commits` keeps every send's delivery
and exits the worker instead of committing over a failed one.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import faust
from aiokafka.producer.sender import Sender
from faust.tables.recovery import Recovery
from faust.transport.consumer import TransactionManager
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams import eos

FIXED_FOR = "0.15.3"
_MARK = "_paystream_seek_before_resume"


class UnverifiedFaust(RuntimeError):
    """The installed Faust is not the version this fix was verified against."""


def seek_before_resume(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap a Recovery method so that stream partitions resume only after the seek."""

    @functools.wraps(method)
    async def wrapper(self: Recovery, *args: Any, **kwargs: Any) -> Any:
        consumer = self.app.consumer
        deferred: list[set] = []
        real_resume, real_seek = consumer.resume_partitions, consumer.perform_seek

        def resume_later(tps: Iterable) -> None:
            deferred.append(set(tps))

        async def seek_then_resume() -> None:
            await real_seek()
            _resume(real_resume, deferred)

        consumer.resume_partitions, consumer.perform_seek = resume_later, seek_then_resume
        try:
            return await method(self, *args, **kwargs)
        finally:
            # Instance attributes shadowed the class's methods; drop them.
            del consumer.resume_partitions, consumer.perform_seek
            # Nothing to seek (empty assignment): resume what was asked, as Faust would.
            _resume(real_resume, deferred)

    setattr(wrapper, _MARK, True)
    return wrapper


def _resume(resume: Callable[[Iterable], None], deferred: list[set]) -> None:
    while deferred:
        resume(deferred.pop(0))


async def highwaters_from_the_broker(self: AIOKafkaConsumerThread, partitions: list) -> Any:
    """The changelogs' ends as the broker has them now (read_committed: the LSO)."""
    return await self._ensure_consumer().end_offsets(partitions)


setattr(highwaters_from_the_broker, _MARK, True)


def commit_on_revoke(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Wrap TransactionManager.on_partitions_revoked: after Faust's own handling, commit
    every transaction still open and begin the next, under its lock (the one Emitter.emit and Faust's
    commit take). A failure (fenced, broker gone) propagates: Faust crashes the worker
    and its restart discards the local state."""

    @functools.wraps(method)
    async def wrapper(self: TransactionManager, revoked: Any) -> Any:
        result = await method(self, revoked)
        producer = self.producer
        for tid, txn_producer in sorted(producer._transaction_producers.items()):
            async with producer._trn_locks[tid]:
                if txn_producer._txn_manager.is_in_transaction():
                    await txn_producer.commit_transaction()
                    # A new one at once, as Faust's own commit does: its next commit sends
                    # offsets, which a producer outside a transaction refuses
                    # (IllegalOperation, which crashes the consumer).
                    await txn_producer.begin_transaction()
        return result

    setattr(wrapper, _MARK, True)
    return wrapper


def apply(version: str = faust.__version__) -> None:
    """Install the fix once per process; refuse a Faust it was not verified on."""
    if version != FIXED_FOR:
        raise UnverifiedFaust(
            f"faust-streaming {version} is installed; the recovery fix in streams/faust_fixes.py was verified "
            f"on {FIXED_FOR} only: re-run tests/integration/streams/test_restart.py and update FIXED_FOR"
        )
    for name in ("on_recovery_completed", "_resume_streams"):
        method = getattr(Recovery, name)
        if not getattr(method, _MARK, False):
            setattr(Recovery, name, seek_before_resume(method))
    AIOKafkaConsumerThread._highwaters = highwaters_from_the_broker
    if not getattr(TransactionManager.on_partitions_revoked, _MARK, False):
        TransactionManager.on_partitions_revoked = commit_on_revoke(TransactionManager.on_partitions_revoked)
    eos.guard_commits(Sender)  # aiokafka's: no commit over an undelivered record (streams/eos.py)
