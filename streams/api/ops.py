"""The dashboard's ops panel: consumer lag per group and topic (committed offsets
against end offsets, Kafka admin), the DLQ's size, and the provider breakers as the
workers export them (`paystream_breaker_state` on their /metrics, streams/metrics.py).

The arithmetic is pure (lag_rows, breaker_states); KafkaOps does the I/O, bounded
and cached, and reports what it could not read instead of failing the page."""

from __future__ import annotations

import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from streams.metrics import BREAKER_CLOSED, BREAKER_HALF_OPEN, BREAKER_OPEN

GROUPS_MAX = 50
METRICS_URLS_MAX = 16
METRICS_BYTES_MAX = 4 * 1_048_576
TIMEOUT_S = 5.0
CACHE_S = 5.0
BREAKER_NAMES = {BREAKER_CLOSED: "closed", BREAKER_HALF_OPEN: "half-open", BREAKER_OPEN: "open"}


@dataclass(frozen=True)
class LagRow:
    group: str
    topic: str
    partitions: int
    lag: int  # messages (offsets: EOS commit markers count too)


@dataclass(frozen=True)
class Breaker:
    source: str  # the worker's metrics URL
    provider: str
    state: str


@dataclass(frozen=True)
class OpsSnapshot:
    lag: tuple[LagRow, ...]
    dlq_messages: int | None
    breakers: tuple[Breaker, ...]
    errors: tuple[str, ...] = ()


TP = tuple[str, int]  # (topic, partition)


def lag_rows(group: str, committed: Mapping[TP, int], ends: Mapping[TP, int]) -> list[LagRow]:
    """Per topic of `ends` (the partitions of the topics the group reads), the sum
    over partitions of end minus committed offset. A partition the group never
    committed (absent, or librdkafka's negative "invalid" offset) counts from 0 (a worker reads those from the earliest
    offset); a negative difference (end read before the commit) counts 0."""
    by_topic: dict[str, list[int]] = {}
    for tp, end in ends.items():
        by_topic.setdefault(tp[0], []).append(max(0, end - max(0, committed.get(tp, 0))))
    return [LagRow(group, topic, len(lags), sum(lags)) for topic, lags in sorted(by_topic.items())]


def breaker_states(source: str, metrics_text: str) -> list[Breaker]:
    """The breakers in one worker's Prometheus text exposition."""
    out = []
    for family in text_string_to_metric_families(metrics_text):
        if family.name == "paystream_breaker_state":
            for sample in family.samples:
                level = int(sample.value)
                out.append(
                    Breaker(source, sample.labels.get("provider", "?"), BREAKER_NAMES.get(level, f"unknown ({level})"))
                )
    return sorted(out, key=lambda b: b.provider)


def _fetch_text(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as r:  # noqa: S310 (http URLs from the settings)
        return r.read(METRICS_BYTES_MAX).decode("utf-8", "replace")


class KafkaOps:
    """Reads the ops figures of the pipeline's consumer groups; one read per CACHE_S
    however many pages ask. A group that does not exist yet has no rows."""

    def __init__(
        self,
        connection: Mapping[str, str],
        groups: Iterable[str],
        dlq_topic: str,
        metrics_urls: Iterable[str],
        fetch_text: Callable[[str], str] = _fetch_text,
    ) -> None:
        """`connection`: librdkafka's connection settings (streams.settings.client_config)."""
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient(dict(connection) | {"log_level": 0})
        # Named, not a prefix: "paystream" is a prefix of every other namespace's groups.
        self.groups, self.dlq_topic = sorted(groups)[:GROUPS_MAX], dlq_topic
        self.metrics_urls = list(metrics_urls)[:METRICS_URLS_MAX]
        self.fetch_text = fetch_text
        self._lock = threading.Lock()
        self._cached: tuple[float, OpsSnapshot] | None = None

    def __call__(self) -> OpsSnapshot:
        with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] > CACHE_S:
                self._cached = (now, self._read())
            return self._cached[1]

    def _read(self) -> OpsSnapshot:
        errors: list[str] = []
        lag: list[LagRow] = []
        dlq = None
        try:
            lag = self.lag()
        except Exception as e:  # the page still shows the rest
            errors.append(f"consumer lag unavailable: {type(e).__name__}")
        try:
            dlq = self._dlq()
        except Exception as e:
            errors.append(f"DLQ size unavailable: {type(e).__name__}")
        breakers: list[Breaker] = []
        for url in self.metrics_urls:
            try:
                breakers += breaker_states(url, self.fetch_text(url))
            except Exception as e:
                errors.append(f"{url}: metrics unavailable ({type(e).__name__})")
        if not self.metrics_urls:
            errors.append("no worker metrics configured (PAYSTREAM_DASHBOARD_METRICS_URLS): breaker states unknown")
        return OpsSnapshot(tuple(lag), dlq, tuple(breakers), tuple(errors))

    def _offsets(self, tps: list, spec) -> dict[TP, int]:  # type: ignore[no-untyped-def]
        from confluent_kafka import TopicPartition

        if not tps:
            return {}
        futures = self.admin.list_offsets({TopicPartition(t, p): spec for t, p in tps}, request_timeout=TIMEOUT_S)
        return {(tp.topic, tp.partition): f.result(TIMEOUT_S).offset for tp, f in futures.items()}

    def _partitions(self, topics: set[str]) -> list[TP]:
        meta = self.admin.list_topics(timeout=TIMEOUT_S).topics
        return [(t, p) for t in sorted(topics) if t in meta for p in meta[t].partitions]

    def lag(self) -> list[LagRow]:
        """Lag per group and topic, read now (not cached)."""
        from confluent_kafka import ConsumerGroupTopicPartitions
        from confluent_kafka.admin import OffsetSpec

        rows: list[LagRow] = []
        for group in self.groups:
            fut = self.admin.list_consumer_group_offsets(
                [ConsumerGroupTopicPartitions(group)], request_timeout=TIMEOUT_S
            )[group]
            committed = {(tp.topic, tp.partition): tp.offset for tp in fut.result(TIMEOUT_S).topic_partitions}
            ends = self._offsets(self._partitions({t for t, _ in committed}), OffsetSpec.latest())
            rows += lag_rows(group, committed, ends)
        return rows

    def _dlq(self) -> int:
        from confluent_kafka.admin import OffsetSpec

        tps = self._partitions({self.dlq_topic})
        ends, starts = self._offsets(tps, OffsetSpec.latest()), self._offsets(tps, OffsetSpec.earliest())
        return sum(ends[tp] - starts[tp] for tp in tps)
