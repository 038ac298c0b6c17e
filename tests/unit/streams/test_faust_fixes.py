"""The recovery-order fix: stream partitions resume only after the seek to committed offsets."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from faust.tables.recovery import Recovery
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from streams import faust_fixes


class Consumer:
    """Records the order of resume and seek, as Faust's consumer would see them."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def resume_partitions(self, tps) -> None:
        self.calls.append(f"resume {sorted(tps)}")

    async def perform_seek(self) -> None:
        await asyncio.sleep(0)  # the real seek awaits the broker
        self.calls.append("seek")


def recovery_with(consumer: Consumer) -> SimpleNamespace:
    return SimpleNamespace(app=SimpleNamespace(consumer=consumer))


async def faust_order(self, seek: bool = True) -> str:
    """Faust 0.15.3's order inside on_recovery_completed: resume, then seek."""
    consumer = self.app.consumer
    consumer.resume_partitions({"validated-1", "commands-3"})
    if seek:
        await consumer.perform_seek()
    consumer.calls.append("flow resumed")
    return "done"


def test_resume_waits_for_the_seek() -> None:
    consumer = Consumer()
    result = asyncio.run(faust_fixes.seek_before_resume(faust_order)(recovery_with(consumer)))
    assert result == "done"
    assert consumer.calls == ["seek", "resume ['commands-3', 'validated-1']", "flow resumed"]


def test_without_a_seek_the_partitions_still_resume() -> None:
    consumer = Consumer()
    asyncio.run(faust_fixes.seek_before_resume(faust_order)(recovery_with(consumer), seek=False))
    assert consumer.calls == ["flow resumed", "resume ['commands-3', 'validated-1']"]


def test_the_consumer_gets_its_own_methods_back_even_after_an_error() -> None:
    consumer = Consumer()

    async def fails(self) -> None:
        self.app.consumer.resume_partitions({"p"})
        raise RuntimeError("rebalance")

    with pytest.raises(RuntimeError):
        asyncio.run(faust_fixes.seek_before_resume(fails)(recovery_with(consumer)))
    assert "resume_partitions" not in vars(consumer) and "perform_seek" not in vars(consumer)
    assert consumer.calls == ["resume ['p']"]


def test_apply_wraps_both_recovery_paths_once() -> None:
    faust_fixes.apply()
    first = Recovery.on_recovery_completed
    faust_fixes.apply()
    assert Recovery.on_recovery_completed is first
    for name in ("on_recovery_completed", "_resume_streams"):
        assert getattr(getattr(Recovery, name), faust_fixes._MARK)


def test_an_unverified_faust_is_refused() -> None:
    with pytest.raises(faust_fixes.UnverifiedFaust, match="0.15.3"):
        faust_fixes.apply(version="0.16.0")


class FreshConsumer:
    """An aiokafka consumer right after an assignment: no fetch yet, so no LSO cached."""

    def last_stable_offset(self, tp):
        return None

    async def end_offsets(self, partitions):
        return {tp: 1_000 + i for i, tp in enumerate(partitions)}


def test_changelog_highwaters_come_from_the_broker_not_a_missing_fetch() -> None:
    faust_fixes.apply()
    thread = SimpleNamespace(_ensure_consumer=lambda: FreshConsumer(), consumer=SimpleNamespace(in_transaction=True))
    got = asyncio.run(AIOKafkaConsumerThread._highwaters(thread, ["changelog-0", "changelog-1"]))
    assert got == {"changelog-0": 1_000, "changelog-1": 1_001}  # not None: Faust read None as "empty"


# --- fix 3: every open transaction commits at revocation ---


class TxnState:
    def __init__(self, open_: bool) -> None:
        self.open = open_

    def is_in_transaction(self) -> bool:
        return self.open


class TxnProducer:
    def __init__(self, tid: str, open_: bool, log: list[str], lock: asyncio.Lock | None = None) -> None:
        self.tid, self._txn_manager, self.log, self.lock = tid, TxnState(open_), log, lock

    async def commit_transaction(self) -> None:
        assert self.lock is not None and self.lock.locked()  # under the lock emit and Faust's commit take
        assert self._txn_manager.open
        self._txn_manager.open = False
        self.log.append(f"commit {self.tid}")

    async def begin_transaction(self) -> None:
        assert self.lock is not None and self.lock.locked() and not self._txn_manager.open
        self._txn_manager.open = True
        self.log.append(f"begin {self.tid}")


def test_a_transaction_left_open_by_faust_s_revocation_is_committed() -> None:
    # The chain fork: Faust committed at revocation only the transactions with new offsets;
    # a kept partition's transaction stayed open while its tables were restored to the last commit.
    log: list[str] = []

    async def run() -> None:
        locks = {t: asyncio.Lock() for t in ("app-0-0", "app-0-1", "app-0-3")}
        producers = {"app-0-0": TxnProducer("app-0-0", False, log, locks["app-0-0"]),  # committed by Faust already
                     "app-0-1": TxnProducer("app-0-1", True, log, locks["app-0-1"]),
                     "app-0-3": TxnProducer("app-0-3", True, log, locks["app-0-3"])}

        async def faust_revoke(self, revoked) -> str:
            log.append(f"faust revoke {sorted(revoked)}")
            return "revoked"

        manager = SimpleNamespace(producer=SimpleNamespace(_transaction_producers=producers, _trn_locks=locks))
        assert await faust_fixes.commit_on_revoke(faust_revoke)(manager, {"v-1"}) == "revoked"
        # Faust's next commit sends offsets: a producer outside a transaction would refuse them
        assert [t for t, p in producers.items() if p._txn_manager.open] == ["app-0-1", "app-0-3"]

    asyncio.run(run())
    assert log == ["faust revoke ['v-1']", "commit app-0-1", "begin app-0-1", "commit app-0-3", "begin app-0-3"]


def test_the_revocation_fix_is_installed_once() -> None:
    from faust.transport.consumer import TransactionManager

    faust_fixes.apply()
    installed = TransactionManager.on_partitions_revoked
    faust_fixes.apply()
    assert TransactionManager.on_partitions_revoked is installed
    assert getattr(installed, faust_fixes._MARK)
