"""The ClickHouse sink: event topics -> read-model tables, and the rebuild from offset 0.

A plain consumer loop, not a Faust agent: inserts are idempotent (Replacing
engines keyed by record ids, content-hash insert tokens; docs/decisions.md, "Read
models"), so at-least-once delivery is enough. The loop takes anything with the
`Source` methods, so its rules are tested with an in-memory log and a real chDB:

- each record is decoded (`schemas.codec.Codec`) and mapped (`rows_for`); bytes we
  cannot decode or a record we cannot map become a DeadLetter (stage `sink`) with
  the reason, and the loop goes on;
- rows wait in a `Batcher` (count and age bounded); offsets are committed only after
  the batch holding their rows was inserted and the dead letters were flushed;
- an insert that fails after the `Sink`'s bounded retries stops the loop with
  `ClickHouseError`, offsets uncommitted: the restarted process re-reads from the
  last commit and the idempotent inserts make the second delivery harmless.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import date, timedelta
from pathlib import Path
from typing import Any, Protocol

from clickhouse_connect.driver.client import Client
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from connectors.clickhouse.migrate import migrate
from connectors.clickhouse.rows import Row, RowError, rows_for
from connectors.clickhouse.sink import Batcher, Sink
from connectors.kafka.clients import end_offsets
from connectors.providers.chain import SimChain
from connectors.providers.rails import load_rail_configs
from schemas.codec import Codec, DecodeError
from streams.domain.crypto import CryptoPolicy
from streams.domain.ledger import entry_to_record
from streams.domain.reconcile import (
    CUSTODY_ACCOUNT,
    KIND_OF_EVENT,
    NO_CHECKPOINT,
    SEND_EVENTS,
    CustodyCheckpoint,
    ProviderTxn,
    ReconResult,
    ReportError,
    custody_since,
    day_end_ms,
    ledger_side,
    read_report,
    reconcile,
    reconcile_custody,
)
from streams.domain.settlement import SettlementRun
from streams.metrics import DEAD_LETTERS, SETTLEMENT_DISCREPANCIES, SINK_ROWS
from streams.settings import Settings, client_config
from streams.stages.ingest import Source as Origin
from streams.stages.ingest import dead_letter
from streams.topics import client_ids, topic_names

log = logging.getLogger(__name__)

STAGE = "sink"
MAX_POLL_RECORDS = 10_000
CODECS = {
    kind: Codec(name)
    for kind, name in (
        ("payment_event", "PaymentEvent"),
        ("payment_outcome", "PaymentOutcome"),
        ("ledger_entry", "LedgerEntry"),
    )
}

TopicPartitionKey = tuple[str, int]


class Message(Protocol):
    """The part of confluent_kafka.Message the loop reads."""

    def topic(self) -> str: ...
    def partition(self) -> int: ...
    def offset(self) -> int: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def error(self) -> Any: ...


class Source(Protocol):
    def consume(self, max_records: int, timeout_s: float) -> list[Message]: ...
    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None: ...


class DeadLetterSink(Protocol):
    def send(self, record: dict[str, Any], key: bytes | None) -> None: ...
    def flush(self) -> None: ...


class SinkError(RuntimeError):
    """The consumer reported a fatal error (the loop cannot go on)."""


def sink_topics(settings: Settings) -> dict[str, str]:
    """topic -> record kind of every topic the sink reads. `ledger-entries` joins
    once streams/topics.py declares it (TopicNames.ledger); until then it is skipped."""
    names = topic_names(settings)
    out = {names.events: "payment_event", names.outcomes: "payment_outcome"}
    ledger = getattr(names, "ledger", None)
    if ledger:
        out[ledger] = "ledger_entry"
    return out


@dataclass
class SinkStats:
    records: int = 0
    dead_letters: int = 0
    batches: int = 0
    commits: int = 0
    rows: dict[str, int] = field(default_factory=dict)  # inserted, per table
    positions: dict[TopicPartitionKey, int] = field(default_factory=dict)  # next offset, per partition
    at_end: dict[TopicPartitionKey, int] = field(default_factory=dict)  # partition EOF seen at this offset

    @property
    def rows_total(self) -> int:
        return sum(self.rows.values())


def rows_of(kind: str, value: bytes | None) -> list[Row]:
    """One record's rows; DecodeError or RowError (both with a `reason`) for bad input."""
    return rows_for(kind, CODECS[kind].decode(value))


def run(
    source: Source,
    sink: Sink,
    dead_letters: DeadLetterSink,
    kinds: Mapping[str, str],
    batcher: Batcher,
    *,
    stop: Callable[[SinkStats], bool],
    clock_ms: Callable[[], int] = lambda: time.monotonic_ns() // 1_000_000,
    max_poll_records: int = 1_000,
    poll_timeout_s: float = 0.5,
    ends: Mapping[TopicPartitionKey, int] | None = None,
    on_batch: Callable[[SinkStats], None] | None = None,
) -> SinkStats:
    """Consume until `stop(stats)` holds (checked after every poll), then insert what
    waits and commit. `ends`: offsets at or past which records are ignored (a rebuild
    reads up to the end offsets it saw at start). `clock_ms` is operational time for
    the batch age only (records' business time never comes from it)."""
    assert 1 <= max_poll_records <= MAX_POLL_RECORDS
    stats = SinkStats()
    pending: dict[TopicPartitionKey, int] = {}  # next offset to commit, per partition

    def flush(batch: list[Row] | None) -> None:
        if batch:
            written = sink.insert(batch)  # raises ClickHouseError after bounded retries
            stats.batches += 1
            for table, n in written.items():
                stats.rows[table] = stats.rows.get(table, 0) + n
                SINK_ROWS.labels(table).inc(n)
        if pending and not len(batcher):  # every pending record's rows are in ClickHouse now
            dead_letters.flush()
            source.commit(dict(pending))
            stats.commits += 1
            pending.clear()
        if batch and on_batch is not None:
            on_batch(stats)

    while not stop(stats):
        msgs = source.consume(max_poll_records, poll_timeout_s)
        now_ms = clock_ms()
        for msg in msgs:
            tp = (msg.topic(), msg.partition())
            err = msg.error()
            if err is not None:
                if _is_eof(err):
                    stats.at_end[tp] = msg.offset()
                    continue
                if getattr(err, "fatal", lambda: False)():
                    raise SinkError(f"consumer error: {err}")
                log.warning("sink: consumer error on %s[%s]: %s", *tp, err)  # librdkafka recovers by itself
                continue
            offset = msg.offset()
            stats.positions[tp] = offset + 1
            if ends is not None and offset >= ends.get(tp, 0):
                continue  # past the end this run was asked to read
            stats.records += 1
            pending[tp] = offset + 1
            flush(batcher.add(_rows_or_dead_letter(msg, kinds[tp[0]], dead_letters, stats), now_ms))
        flush(batcher.poll(now_ms))
    flush(batcher.take())
    return stats


def _rows_or_dead_letter(msg: Message, kind: str, dead_letters: DeadLetterSink, stats: SinkStats) -> list[Row]:
    try:
        return rows_of(kind, msg.value())
    except (DecodeError, RowError) as e:
        origin = Origin(msg.topic(), msg.partition(), msg.offset(), msg.timestamp()[1], msg.key())
        dead_letters.send(dead_letter(STAGE, e.reason, e.detail, msg.value(), origin).record, msg.key())
        DEAD_LETTERS.labels(STAGE, e.reason).inc()
        stats.dead_letters += 1
        return []


def _is_eof(err: Any) -> bool:
    return getattr(err, "code", lambda: None)() == KafkaError._PARTITION_EOF


# --- the process: confluent-kafka consumer and DLQ producer behind the loop's interfaces ---

DLQ_CODEC = Codec("DeadLetter")
FLUSH_TIMEOUT_S = 30.0


class KafkaSource:
    """A consumer as the loop's `Source`; `commit=False` for a reader that commits nothing (rebuild)."""

    def __init__(self, consumer: Consumer, *, commit: bool = True) -> None:
        self.consumer, self._commit = consumer, commit

    def consume(self, max_records: int, timeout_s: float) -> list[Message]:
        return self.consumer.consume(max_records, timeout=timeout_s)

    def commit(self, offsets: Mapping[TopicPartitionKey, int]) -> None:
        if self._commit:
            self.consumer.commit(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()], asynchronous=False)


class KafkaDeadLetters:
    """DeadLetter records to the DLQ topic; `flush` raises unless every one was acknowledged."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self.producer, self.topic, self.failed = producer, topic, 0

    def send(self, record: dict[str, Any], key: bytes | None) -> None:
        self.producer.produce(self.topic, value=DLQ_CODEC.encode(record), key=key, on_delivery=self._delivered)
        self.producer.poll(0)

    def flush(self) -> None:
        left = self.producer.flush(FLUSH_TIMEOUT_S)
        if left or self.failed:
            raise SinkError(
                f"{left} dead letter(s) unsent, {self.failed} refused by {self.topic}: offsets not committed"
            )

    def _delivered(self, err: Any, _msg: Any) -> None:
        if err is not None:
            self.failed += 1


def sink_consumer(settings: Settings, *, group: bool = True, eof: bool | None = None) -> Consumer:
    """read_committed; in the group `<app_id>-sink` with manual commits, or (rebuild)
    an anonymous reader; `eof` (default: not in the group) reports each partition's end."""
    ids = client_ids(settings)
    return Consumer(
        {
            **client_config(settings),
            "group.id": ids.sink_group if group else f"{ids.rebuild_groups}{uuid.uuid4().hex[:8]}",
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "enable.partition.eof": (not group) if eof is None else eof,
            "log_level": 3,
        }
    )


def dead_letter_producer(settings: Settings) -> KafkaDeadLetters:
    producer = Producer({**client_config(settings), "enable.idempotence": True, "acks": "all", "log_level": 3})
    return KafkaDeadLetters(producer, topic_names(settings).dlq)


def serve(
    settings: Settings,
    client: Client,
    stopping: Callable[[], bool],
    *,
    max_rows: int = 10_000,
    max_wait_ms: int = 1_000,
) -> SinkStats:
    """The `paystream sink` process body: consume the event topics into ClickHouse until `stopping()`."""
    kinds = sink_topics(settings)
    consumer = sink_consumer(settings)
    consumer.subscribe(sorted(kinds))
    try:
        return run(
            KafkaSource(consumer),
            Sink(client),
            dead_letter_producer(settings),
            kinds,
            Batcher(max_rows=max_rows, max_wait_ms=max_wait_ms),
            stop=lambda _s: stopping(),
        )
    finally:
        consumer.close()  # leaves the group at once: the partitions move without waiting for the session timeout


# --- batch jobs over the read models: settlement and reconciliation of a day ---

RECON_LOOKBACK_DAYS = 7  # ledger days a report row may refer to (bank returns come 4 days later)


def record_settlement(client: Client, run_: SettlementRun) -> None:
    """Write a settlement run's `settlements` rows and its journal entries (the sink
    brings the same entries from ledger-entries; tokens and Replacing engines keep one)."""
    rows = [r for e in run_.entries for r in rows_for("ledger_entry", entry_to_record(e))]
    rows += [r for s in run_.settlements for r in rows_for("settlement", asdict(s))]
    if rows:
        Sink(client).insert(rows)


def provider_txns(client: Client, first: date, last: date) -> list[ProviderTxn]:
    """The ledger's provider transactions (captures, refunds, bank submissions and
    returns) of days first..last, from `payment_events FINAL`. A crypto payment's
    refund is a send on the chain, reconciled with the custody (`custody_day`): no
    provider reports it."""
    types = ", ".join(f"'{t}'" for t in sorted(KIND_OF_EVENT))  # our constants, not input
    q = f"""
        SELECT type, provider, provider_ref, payment_id, currency, amount_minor, fee_minor,
               toUnixTimestamp64Milli(occurred_at) AS at_ms
        FROM payment_events FINAL
        WHERE type IN ({types}) AND provider != '' AND provider_ref != '' AND asset = ''
          AND toDate(occurred_at) BETWEEN {{first:Date}} AND {{last:Date}}
    """
    result = client.query(q, parameters={"first": first, "last": last})
    names = [("occurred_at" if n == "at_ms" else n) for n in result.column_names]  # an alias would shadow the column
    return ledger_side(dict(zip(names, r)) for r in result.result_rows)


def reconcile_day(
    client: Client,
    day: date,
    report: list[ProviderTxn],
    lag_days: Mapping[str, int],
    chains: Mapping[str, SimChain] | None = None,
    crypto: CryptoPolicy | None = None,
) -> ReconResult:
    """Reconcile `day`'s provider report against the read models and, with `chains`
    (asset -> the simulated chain), the ledger's crypto custody against the chain
    (`custody_day`); writes the `reconciliation` rows and counts each discrepancy in
    SETTLEMENT_DISCREPANCIES."""
    first = day - timedelta(days=RECON_LOOKBACK_DAYS + max(lag_days.values(), default=0))
    result = reconcile(day, report, provider_txns(client, first, day), lag_days)
    if chains:
        result = ReconResult(day, result.items + custody_day(client, day, chains, crypto or CryptoPolicy()).items)
    rows = [r for i in result.items for r in rows_for("reconciliation", asdict(i))]
    if rows:
        Sink(client).insert(rows)
    count_discrepancies(result)
    return result


MAX_CUSTODY_EVENTS = 5_000_000  # crypto quotes and sends one custody check reads (since its checkpoint)
# A custody check saves its checkpoint this many days before the day it checks: the
# events of those days may still be on their way to the read models (the sink lags).
CUSTODY_CHECKPOINT_LAG_DAYS = 2


def crypto_events(client: Client, cutoff_ms: int, since_ms: int = -1, watched_ms: int = 0) -> list[dict[str, Any]]:
    """What `custody_since` reads, up to `cutoff_ms`, from `payment_events FINAL`: the
    crypto quotes (asset, deposit address, due amount, lock window) whose address may
    still have been watched after `since_ms` (its lock window ends less than `watched_ms`,
    the policy's watch and one poll, before it) and the sends (coins given back, a
    merchant's refund) after `since_ms`, as payment events with their `crypto`."""
    types = ", ".join(f"'{t}'" for t in ("crypto_quoted", *SEND_EVENTS))  # our constants, not input
    q = f"""
        SELECT type, asset, asset_amount_minor, asset_due_minor, crypto_address,
               toUnixTimestamp64Milli(quote_expires_at) AS expires_ms, toUnixTimestamp64Milli(occurred_at) AS at_ms
        FROM payment_events FINAL
        WHERE type IN ({types}) AND asset != '' AND toUnixTimestamp64Milli(occurred_at) <= {{cutoff:Int64}}
          AND (toUnixTimestamp64Milli(occurred_at) > {{since:Int64}}
               OR (type = 'crypto_quoted' AND toUnixTimestamp64Milli(quote_expires_at) > {{watched_from:Int64}}))
        ORDER BY at_ms
        LIMIT {MAX_CUSTODY_EVENTS + 1}
    """
    params = {"cutoff": cutoff_ms, "since": since_ms, "watched_from": since_ms - watched_ms}
    rows = client.query(q, parameters=params).result_rows
    if len(rows) > MAX_CUSTODY_EVENTS:
        raise ReportError(f"more than {MAX_CUSTODY_EVENTS} crypto quotes and sends to check custody against")
    return [
        {
            "type": t,
            "occurred_at": at,
            "crypto": {
                "asset": asset,
                "amount_minor": amount,
                "due_minor": due,
                "address": address,
                "expires_at": expires,
            },
        }
        for t, asset, amount, due, address, expires, at in rows
    ]


def booked_custody(client: Client, cutoff_ms: int, since: CustodyCheckpoint = NO_CHECKPOINT) -> dict[str, int]:
    """asset -> the ledger's `crypto_custody` balance (debit, every shard) up to
    `cutoff_ms`, from `ledger_entries FINAL` (as `reconcile.ledger_custody` over the
    topic): `since`'s balance plus the entries after its cut-off."""
    result = client.query(
        """SELECT currency, sum(debit_minor) - sum(credit_minor) FROM ledger_entries FINAL
           WHERE startsWith(account, {prefix:String}) AND toUnixTimestamp64Milli(occurred_at) <= {cutoff:Int64}
             AND toUnixTimestamp64Milli(occurred_at) > {since:Int64}
           GROUP BY currency""",
        parameters={"prefix": CUSTODY_ACCOUNT, "cutoff": cutoff_ms, "since": since.cutoff_ms},
    )
    out = dict(since.ledger)
    for asset, n in result.result_rows:
        out[asset] = out.get(asset, 0) + int(n)
    return out


def custody_checkpoint(client: Client, at_most_ms: int) -> CustodyCheckpoint:
    """The latest saved checkpoint whose cut-off is at or before `at_most_ms` (none: NO_CHECKPOINT)."""
    rows = client.query(
        """SELECT cutoff_ms, asset, chain_settled_minor, ledger_minor FROM custody_checkpoints FINAL
           WHERE cutoff_ms = (SELECT max(cutoff_ms) FROM custody_checkpoints WHERE cutoff_ms <= {at_most:Int64})""",
        parameters={"at_most": at_most_ms},
    ).result_rows
    if not rows:
        return NO_CHECKPOINT
    return CustodyCheckpoint(
        int(rows[0][0]),
        {a: int(c) for _, a, c, _ in rows if a},
        {a: int(b) for _, a, _, b in rows if a},
    )


def save_custody_checkpoint(client: Client, cp: CustodyCheckpoint) -> None:
    assets = sorted(set(cp.chain_settled) | set(cp.ledger))
    rows = [[cp.cutoff_ms, a, cp.chain_settled.get(a, 0), cp.ledger.get(a, 0)] for a in assets] or [
        [cp.cutoff_ms, "", 0, 0]
    ]
    client.insert(
        "custody_checkpoints", rows, column_names=["cutoff_ms", "asset", "chain_settled_minor", "ledger_minor"]
    )


def custody_day(client: Client, day: date, chains: Mapping[str, SimChain], policy: CryptoPolicy) -> ReconResult:
    """The chain against the books at the end of `day`: one item per asset either side
    holds, `custody_mismatch` where they differ (streams/domain/reconcile.py). Starts from
    the latest checkpoint at least CUSTODY_CHECKPOINT_LAG_DAYS before the day and saves
    the one of that many days before it, so each check reads a few days of events."""
    cutoff = day_end_ms(day)
    keep = day_end_ms(day - timedelta(days=CUSTODY_CHECKPOINT_LAG_DAYS))
    since = custody_checkpoint(client, keep)
    events = crypto_events(client, cutoff, since.cutoff_ms, policy.watch_ms + policy.poll_ms)
    on_chain, kept = custody_since(since, events, chains, policy, cutoff, keep)
    if kept.cutoff_ms > since.cutoff_ms:
        save_custody_checkpoint(client, replace(kept, ledger=booked_custody(client, keep, since)))
    booked = booked_custody(client, cutoff, since)
    return reconcile_custody(day, on_chain, booked, {a: c.name for a, c in chains.items()})


def count_discrepancies(result: ReconResult) -> None:
    """Each unmatched item of a reconciliation (a provider's report or the chain's
    custody) in SETTLEMENT_DISCREPANCIES, by status."""
    for item in result.items:
        if item.status != "matched":
            SETTLEMENT_DISCREPANCIES.labels(item.status).inc()


def provider_reports(
    settings: Settings, day: date, files: list[Path] | None = None
) -> tuple[list[ProviderTxn], dict[str, int]]:
    """The providers' report rows of `day` (`files`, default every CSV under
    <reports dir>/<day>/) and each rail's settlement lag: reconcile_day's inputs.
    ReportError when there is no report or a row is bad; RailConfigError from the rails file."""

    files = files or sorted((settings.reports_dir / day.isoformat()).glob("*.csv"))
    if not files:
        raise ReportError(f"no provider report for {day}")
    rows = [t for f in files for t in read_report(f)]
    return rows, {name: cfg.settle_days for name, cfg in load_rail_configs().items()}


# --- rebuild: drop the topic-fed tables and replay the topics from offset 0 ---

TOPIC_TABLES = ("payments", "payment_events", "ledger_entries", "fraud_decisions", "disputes", "payment_outcomes")
DERIVED_TABLES = ("custody_checkpoints",)  # made from the topic tables: rebuilt from them
REBUILD_TIMEOUT_S = 6 * 3600


class _NoDeadLetters:
    """A rebuild re-reads records the live sink already dead-lettered: count them, do not send them again."""

    def send(self, record: dict[str, Any], key: bytes | None) -> None:
        pass

    def flush(self) -> None:
        pass


def reset_tables(client: Client) -> None:
    """Drop the tables the topics fill (and the `balances` view over them) and
    re-apply the migrations (IF NOT EXISTS: `settlements` and `reconciliation`,
    which are runs' results and on no topic, stay; payout entries are on ledger-entries;
    `custody_checkpoints`, made from the topic tables, goes with them)."""
    client.command("DROP VIEW IF EXISTS balances")
    for table in (*TOPIC_TABLES, *DERIVED_TABLES):
        client.command(f"DROP TABLE IF EXISTS {table}")
    client.command("TRUNCATE TABLE IF EXISTS schema_migrations")
    migrate(client)


def rebuild(
    settings: Settings,
    client: Client,
    *,
    on_progress: Callable[[int, int], None] | None = None,
    timeout_s: float = REBUILD_TIMEOUT_S,
    max_rows: int = 10_000,
) -> SinkStats:
    """Reset the tables, then read every sink topic from offset 0 up to the end offsets
    seen at start with a fresh reader that commits nothing. `on_progress(done, total)` in records."""
    reset_tables(client)
    return _consume_to_end(
        settings, client, group=False, on_progress=on_progress, timeout_s=timeout_s, max_rows=max_rows
    )


def catch_up(
    settings: Settings, client: Client, *, timeout_s: float = REBUILD_TIMEOUT_S, max_rows: int = 10_000
) -> SinkStats:
    """Run the sink (its group, committing) until it has read the end offsets seen at
    start: what a `paystream sink` would have written by now, e.g. after the demo."""
    return _consume_to_end(settings, client, group=True, on_progress=None, timeout_s=timeout_s, max_rows=max_rows)


def _consume_to_end(
    settings: Settings,
    client: Client,
    *,
    group: bool,
    on_progress: Callable[[int, int], None] | None,
    timeout_s: float,
    max_rows: int,
) -> SinkStats:
    kinds = sink_topics(settings)
    consumer = sink_consumer(settings, group=group, eof=True)
    try:
        ends = {(t, p): end for t in kinds for p, end in end_offsets(consumer, t, settings.partitions).items()}
        if group:
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in consumer.committed([TopicPartition(t, p) for t, p in ends], timeout=30)
            }
            consumer.assign([TopicPartition(t, p, committed[(t, p)] if committed[(t, p)] >= 0 else 0) for t, p in ends])
        else:
            consumer.assign([TopicPartition(t, p, 0) for t, p in ends])
        total, deadline = sum(ends.values()), time.monotonic() + timeout_s

        def done(stats: SinkStats) -> bool:
            if time.monotonic() > deadline:
                raise SinkError(f"the end offsets were not reached in {timeout_s:.0f}s")
            # read_committed: a partition's end can be a transaction marker, never delivered; its EOF says we are there
            return all(
                stats.positions.get(tp, 0) >= end or stats.at_end.get(tp, -1) >= end for tp, end in ends.items() if end
            )

        def progress(stats: SinkStats) -> None:
            if on_progress is not None:
                on_progress(sum(min(stats.positions.get(tp, 0), end) for tp, end in ends.items()), total)

        source = KafkaSource(consumer, commit=group)
        dead_letters = dead_letter_producer(settings) if group else _NoDeadLetters()
        stats = run(
            source,
            Sink(client),
            dead_letters,
            kinds,
            Batcher(max_rows=max_rows, max_wait_ms=1_000),
            stop=done,
            ends=ends,
            on_batch=progress,
        )
        progress(stats)
        return stats
    finally:
        consumer.close()
