"""The worker's gauges that no single event sets: consumer lag, the ledger's balance
per currency, and the breakers' states folded over partitions. Pure folds here;
streams/worker/topology.py runs them (periodic jobs and per batch) and sets streams/metrics.py."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from connectors.kafka.clients import readable_past
from connectors.providers.breaker import Transition
from streams import metrics
from streams.domain.ledger import decode_balance, parse_balance_key
from streams.stages.risk import RiskEffects

# How often the worker refreshes the lag and imbalance gauges.
PROBE_INTERVAL_S = 5.0
# Balance records one imbalance check reads; past it the check is skipped, loudly
# (a partial sum would page with a false imbalance).
BALANCE_SCAN_MAX = 1_000_000

BREAKER_LEVEL = {"closed": metrics.BREAKER_CLOSED, "half_open": metrics.BREAKER_HALF_OPEN, "open": metrics.BREAKER_OPEN}


def partition_lag(low: int, high: int, committed: int) -> int:
    """Messages of one partition the group has not committed yet: from its committed
    offset (none: from the log start) to the end. Under exactly-once the end is past
    the last transaction's commit marker, so a caught-up partition shows 1."""
    assert 0 <= low <= high, (low, high)
    start = committed if committed >= 0 else low
    return max(0, high - max(start, low))


class TooManyBalances(RuntimeError):
    """More balance records than BALANCE_SCAN_MAX: not summed."""


def ledger_imbalance(records: Iterable[tuple[bytes, bytes]], max_records: int = BALANCE_SCAN_MAX) -> dict[str, int]:
    """Debits minus credits per currency over balance-table records (key, value), every
    currency seen included: all zeros while invariant 1 holds."""
    out: dict[str, int] = {}
    for n, (key, value) in enumerate(records, 1):
        if n > max_records:
            raise TooManyBalances(f"over {max_records} balance records")
        _, currency = parse_balance_key(key)
        out[currency] = out.get(currency, 0) + decode_balance(value)
    return out


def set_ledger_gauge(records: Iterable[tuple[bytes, bytes]], currencies_seen: set[str]) -> None:
    """`paystream_ledger_imbalance_minor` from balance records; a currency once seen
    keeps its series (back to 0 when it balances again), so the alert can clear."""
    totals = ledger_imbalance(records)
    currencies_seen.update(totals)
    for currency in currencies_seen:
        metrics.LEDGER_IMBALANCE.labels(currency=currency).set(totals.get(currency, 0))


def count_fraud_decision(effects: RiskEffects) -> None:
    """The risk stage's decision of one create, by action (the fraud-spike alert's
    numerator and denominator), fallback and merchant-state source."""
    if effects.decision is not None:
        metrics.child(
            metrics.FRAUD_DECISIONS,
            effects.decision.action,
            str(effects.fallback).lower(),
            "partition" if effects.merchant_fallback else "exact",
        ).inc()


@dataclass
class BreakerBoard:
    """Breakers are per provider and payment partition (connectors/providers/router.py);
    the gauge is per provider: the worst state over this worker's partitions."""

    providers: tuple[str, ...]
    levels: dict[tuple[str, int], int] = field(default_factory=dict)

    def apply(self, partition: int, change: Transition) -> None:
        self.levels[(change.provider, partition)] = BREAKER_LEVEL[change.to_state]

    def worst(self) -> Mapping[str, int]:
        """Every provider's level: closed until a partition's breaker says otherwise."""
        out = dict.fromkeys(self.providers, metrics.BREAKER_CLOSED)
        for (provider, _), level in self.levels.items():
            out[provider] = max(out.get(provider, metrics.BREAKER_CLOSED), level)
        return out

    def export(self, changes: Iterable[tuple[int, Transition]] = ()) -> None:
        """Apply (partition, transition)s and set the gauge of every provider they
        touch (all of them when there are none: the worker's start)."""
        touched = set()
        for partition, change in changes:
            self.apply(partition, change)
            touched.add(change.provider)
        for provider, level in self.worst().items():
            if provider in touched or not touched:
                metrics.BREAKER_STATE.labels(provider=provider).set(level)


@dataclass(frozen=True)
class Progress:
    committed: int  # the group's committed offset (negative: none yet)
    lag: int


# A partition with more than this lag whose committed offset has not moved for
# STALL_S while the worker is ready (not recovering tables, not rebalancing) is
# stalled. Under exactly-once a caught-up partition shows 1 (its commit marker).
STALL_LAG_MIN = 1
STALL_S = 60.0  # the default of settings.worker_stall_s
MAX_WATCHED = 4_096


@dataclass
class StallWatch:
    """The worker's own stall detector, per source partition it owns.

    Supervising from outside ("no new answer for 45 s") cannot tell a stalled worker
    from one restoring its tables, and it restarted both: each restart discarded the
    local state and began the restore again, so a long restore never ended (the
    20,000-command chaos run, docs/reliability.md). The worker knows which it is: the
    clock of a partition runs only while the worker is ready, and restarts at each
    move of its committed offset. Pure: the caller passes the time and the readings."""

    stall_s: float = STALL_S
    since: dict[tuple[str, int], tuple[int, float]] = field(
        default_factory=dict
    )  # committed offset, when first seen there

    def observe(self, now_s: float, progress: Mapping[tuple[str, int], Progress], ready: bool) -> list[tuple[str, int]]:
        """The partitions stalled as of `now_s` (sorted); empty while not ready."""
        assert len(progress) <= MAX_WATCHED, len(progress)
        if not ready:
            self.since.clear()  # a restore or a rebalance: every clock starts again once ready
            return []
        stalled = []
        for tp, p in progress.items():
            seen = self.since.get(tp)
            if p.lag <= STALL_LAG_MIN or seen is None or seen[0] != p.committed:
                self.since[tp] = (p.committed, now_s)
            elif now_s - seen[1] >= self.stall_s:
                stalled.append(tp)
        for tp in set(self.since) - set(progress):  # revoked: forgotten
            del self.since[tp]
        return sorted(stalled)

    def idle(self, tp: tuple[str, int], now_s: float) -> None:
        """`tp` has nothing readable past its committed offset (its lag is aborted
        records and commit markers, which a read_committed reader skips and no commit
        moves past): not a stall; its clock starts again."""
        if tp in self.since:
            self.since[tp] = (self.since[tp][0], now_s)


class LagProbe:
    """The group's committed offsets and the partitions' watermarks, read by a side
    consumer that never joins the group. Blocking: the worker calls it off its loop."""

    def __init__(self, conf: Mapping[str, str], group_id: str) -> None:
        self._conf, self._group_id = dict(conf), group_id  # conf may hold the SASL password: never logged
        self._consumer = None

    def lags(self, partitions: Iterable[tuple[str, int]], timeout_s: float = 5.0) -> dict[tuple[str, int], Progress]:
        from confluent_kafka import Consumer, TopicPartition

        if self._consumer is None:
            self._consumer = Consumer(
                {
                    **self._conf,
                    "group.id": self._group_id,
                    "enable.auto.commit": False,
                    "isolation.level": "read_committed",
                    # readable_after's offset may be one the log no longer holds (none committed
                    # is 0; a truncated log starts later): read from its start, as the worker's
                    # consumer does (runtime/engine.py), not from its end (calling a lag idle).
                    "auto.offset.reset": "earliest",
                    "log_level": 3,
                }
            )
        tps = [TopicPartition(t, p) for t, p in sorted(partitions)]
        if not tps:
            return {}
        committed = {(tp.topic, tp.partition): tp.offset for tp in self._consumer.committed(tps, timeout=timeout_s)}
        out = {}
        for tp in tps:
            low, high = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
            done = committed[(tp.topic, tp.partition)]
            out[(tp.topic, tp.partition)] = Progress(done, partition_lag(low, high, done))
        return out

    def readable_after(self, tp: tuple[str, int], offset: int, timeout_s: float = 5.0) -> bool:
        """Whether a read_committed reader finds a record at or past `offset` (the
        committed offset of a partition that looks stalled). False when its lag is
        only aborted records and markers: then there is nothing to process."""
        from confluent_kafka import TopicPartition

        assert self._consumer is not None, "lags() first"
        return readable_past(self._consumer, [TopicPartition(tp[0], tp[1], max(offset, 0))], timeout_s)

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
