"""The sink loop over an in-memory log and a real chDB: every record lands once,
bad records become dead letters, offsets are committed only after their rows
were inserted, an outage mid-run loses and doubles nothing."""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta

import pytest

from connectors.clickhouse.client import ClickHouseError
from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Batcher, Sink
from schemas.codec import Codec
from streams.domain.ledger import entry_from_record, entry_to_record
from streams.domain.reconcile import ledger_side
from streams.domain.settlement import settle
from streams.jobs.sink import CODECS, SinkStats, reconcile_day, record_settlement, reset_tables, run, sink_topics
from streams.settings import Settings
from tests.unit.connectors.clickhouse.support import DAY0, SHARDS, traffic
from tests.unit.deploy.alert_support import sample

T = traffic(payments=120, seed=3)
EV, LE = "t.payment-events", "t.ledger-entries"
KINDS = {EV: "payment_event", LE: "ledger_entry"}
JUNK = b"\xc3\x01" + b"\x00" * 8 + b"not avro"
BAD_EVENT = CODECS["payment_event"].encode(T.events[0] | {"version": 0})  # decodes, cannot be mapped


@dataclass
class Msg:
    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _key: bytes | None = None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, 1_764_000_000_000)

    def error(self) -> None:
        return None


@dataclass
class Log:
    """Partitions of records plus the group's committed offsets (they outlive a consumer)."""

    partitions: dict[tuple[str, int], list[Msg]] = field(default_factory=dict)
    committed: dict[tuple[str, int], int] = field(default_factory=dict)

    def append(self, topic: str, partition: int, value: bytes | None, key: bytes | None = None) -> None:
        msgs = self.partitions.setdefault((topic, partition), [])
        msgs.append(Msg(topic, partition, len(msgs), value, key))

    @property
    def ends(self) -> dict[tuple[str, int], int]:
        return {tp: len(m) for tp, m in self.partitions.items()}


class MemorySource:
    """A consumer on the log: starts at the committed offsets, reads round-robin."""

    def __init__(self, log: Log, on_commit=None) -> None:  # type: ignore[no-untyped-def]
        self.log, self.on_commit = log, on_commit
        self.positions = {tp: log.committed.get(tp, 0) for tp in log.partitions}

    def consume(self, max_records: int, timeout_s: float) -> list[Msg]:
        out: list[Msg] = []
        for tp, msgs in self.log.partitions.items():
            take = msgs[self.positions[tp] : self.positions[tp] + max(1, max_records // len(self.log.partitions))]
            self.positions[tp] += len(take)
            out.extend(take)
        return out

    def drained(self, _stats: SinkStats) -> bool:
        return all(self.positions[tp] >= end for tp, end in self.log.ends.items())

    def commit(self, offsets: Mapping[tuple[str, int], int]) -> None:
        if self.on_commit is not None:
            self.on_commit(dict(offsets))
        for tp, o in offsets.items():
            assert o > self.log.committed.get(tp, -1), "commits move forward"
            self.log.committed[tp] = o


class DeadLetters:
    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.flushed = 0

    def send(self, record: dict, key: bytes | None) -> None:
        self.sent.append(record)

    def flush(self) -> None:
        self.flushed = len(self.sent)


def filled_log() -> Log:
    log = Log()
    events, entries = Codec("PaymentEvent"), Codec("LedgerEntry")
    for e in T.events:
        log.append(EV, zlib.crc32(e["payment_id"].encode()) % 2, events.encode(e), e["payment_id"].encode())
    for e in T.entries:
        log.append(LE, e["shard"] % 2, entries.encode(e))
    log.append(EV, 1, JUNK, b"junk-key")
    log.append(EV, 0, BAD_EVENT)
    return log


def counts(ch) -> dict[str, int]:
    return {
        t: ch.query(f"SELECT count() FROM {t} FINAL").result_rows[0][0]
        for t in ("payment_events", "payments", "ledger_entries")
    }


EXPECTED = {
    "payment_events": len(T.events),
    "payments": len({e["payment_id"] for e in T.events}),
    "ledger_entries": sum(len(e["lines"]) for e in T.entries),
}


def test_every_record_lands_once_and_bad_ones_become_dead_letters(ch) -> None:
    log, dlq = filled_log(), DeadLetters()
    src = MemorySource(log)
    stats = run(
        src, Sink(ch), dlq, KINDS, Batcher(max_rows=400, max_wait_ms=60_000), stop=src.drained, max_poll_records=50
    )
    assert counts(ch) == EXPECTED
    assert stats.rows["payment_events"] == len(T.events) and stats.records == len(T.events) + len(T.entries) + 2
    assert log.committed == log.ends  # everything, the dead letters included, is committed
    assert {(d["reason"], d["source_topic"]) for d in dlq.sent} == {("unknown_fingerprint", EV), ("invalid_field", EV)}
    junk = next(d for d in dlq.sent if d["reason"] == "unknown_fingerprint")
    assert junk["raw_value"] == JUNK and junk["raw_key"] == b"junk-key" and junk["stage"] == "sink"
    assert junk["source_offset"] == log.ends[(EV, 1)] - 1
    assert dlq.flushed == len(dlq.sent)  # flushed before the offsets past them were committed
    assert ch.query("SELECT sum(debit_minor) - sum(credit_minor) FROM ledger_entries FINAL").result_rows[0][0] == 0


def test_offsets_are_committed_only_after_their_rows_are_in(ch) -> None:
    log = filled_log()
    event_at = {
        (EV, m.partition(), m.offset())
        for msgs in log.partitions.values()
        for m in msgs
        if m.topic() == EV and m.value() not in (JUNK, BAD_EVENT)
    }
    seen: list[int] = []

    def check(offsets: dict) -> None:
        committed_events = sum(1 for (t, p, o) in event_at if o < offsets.get((t, p), log.committed.get((t, p), 0)))
        in_ch = ch.query("SELECT count() FROM payment_events FINAL").result_rows[0][0]
        assert in_ch >= committed_events
        seen.append(committed_events)

    src = MemorySource(log, on_commit=check)
    stats = run(
        src,
        Sink(ch),
        DeadLetters(),
        KINDS,
        Batcher(max_rows=100, max_wait_ms=60_000),
        stop=src.drained,
        max_poll_records=20,
    )
    assert stats.batches > 5 and len(seen) >= stats.batches
    assert seen == sorted(seen) and seen[-1] == len(T.events)


def test_batches_are_due_by_age_with_the_clock_passed_in(ch) -> None:
    log = Log()
    for e in T.events[:3]:
        log.append(EV, 0, Codec("PaymentEvent").encode(e))
    src, now = MemorySource(log), iter(range(0, 10_000, 400))
    polls = []

    def stop(stats: SinkStats) -> bool:
        polls.append(stats.batches)
        return len(polls) > 4

    run(
        src,
        Sink(ch),
        DeadLetters(),
        KINDS,
        Batcher(max_rows=1000, max_wait_ms=1_000),
        stop=stop,
        clock_ms=lambda: next(now),
        max_poll_records=1,
    )
    # one record per poll at 0, 400, 800 ms: the batch becomes due at 1,200 ms, not by count
    assert polls == [0, 0, 0, 0, 1]
    assert log.committed == {(EV, 0): 3}


def test_outage_that_outlasts_the_retries_stops_uncommitted_and_a_restart_loses_nothing(ch) -> None:
    log = filled_log()
    first = MemorySource(log)
    inserted = {"n": 0}

    def flaky_stop(stats: SinkStats) -> bool:
        if stats.batches == 2 and not inserted["n"]:
            inserted["n"] = 1
            ch.command("DETACH TABLE ledger_entries")  # the target goes away mid-run
        return first.drained(stats)

    with pytest.raises(ClickHouseError):
        run(
            first,
            Sink(ch, attempts=2, sleep=lambda s: None),
            DeadLetters(),
            KINDS,
            Batcher(max_rows=200, max_wait_ms=60_000),
            stop=flaky_stop,
            max_poll_records=30,
        )
    assert log.committed != log.ends  # the failed batch's offsets were not committed
    ch.command("ATTACH TABLE ledger_entries")
    again = MemorySource(log)  # the restarted process resumes at the last commit
    run(again, Sink(ch), DeadLetters(), KINDS, Batcher(max_rows=200, max_wait_ms=60_000), stop=again.drained)
    assert counts(ch) == EXPECTED and log.committed == log.ends


def test_stop_inserts_and_commits_what_waits(ch) -> None:
    log = filled_log()
    src = MemorySource(log)
    stats = run(
        src,
        Sink(ch),
        DeadLetters(),
        KINDS,
        Batcher(max_rows=100_000, max_wait_ms=60_000),
        stop=lambda s: s.records > 0,
        max_poll_records=40,
    )  # SIGTERM after the first poll
    assert stats.batches == 1 and 0 < stats.records <= 40
    assert sum(log.committed.values()) == stats.records
    assert ch.query("SELECT count() FROM payment_events FINAL").result_rows[0][0] > 0


def test_ends_bound_what_a_run_reads(ch) -> None:
    log = filled_log()
    ends = {tp: n // 2 for tp, n in log.ends.items()}
    src = MemorySource(log)
    stats = run(src, Sink(ch), DeadLetters(), KINDS, Batcher(), stop=src.drained, ends=ends)
    assert stats.records == sum(ends.values())


def test_sink_topics_are_events_outcomes_and_the_ledger() -> None:
    topics = sink_topics(Settings(namespace="x"))
    assert topics == {
        "x.payment-events": "payment_event",
        "x.payment-outcomes": "payment_outcome",
        "x.ledger-entries": "ledger_entry",
    }


# --- settlement and reconciliation from the read models ---

D = DAY0.date()
DAYS = traffic(payments=200, seed=21, start=DAY0, days=2)


def fill(ch, t=DAYS) -> None:  # type: ignore[no-untyped-def]
    Sink(ch).insert(
        [r for e in t.events for r in rows_for("payment_event", e)]
        + [r for e in t.entries for r in rows_for("ledger_entry", e)]
    )


def raw_counts(ch) -> dict[str, int]:
    return {t: ch.query(f"SELECT count() FROM {t}").result_rows[0][0] for t in ("settlements", "ledger_entries")}


def test_a_settlement_run_recorded_twice_changes_nothing(ch) -> None:
    fill(ch)
    first = settle(D, [entry_from_record(r) for r in DAYS.entries], shards=SHARDS)
    assert first.payouts
    record_settlement(ch, first)
    before, raw = ch.query("SELECT * FROM settlements FINAL ORDER BY merchant_id, currency").result_rows, raw_counts(ch)
    record_settlement(ch, first)
    assert ch.query("SELECT * FROM settlements FINAL ORDER BY merchant_id, currency").result_rows == before
    assert raw_counts(ch) == raw  # not even an unmerged duplicate
    pending = ch.query(
        "SELECT account, currency, balance_minor FROM balances WHERE account LIKE '%:pending'"
    ).result_rows
    owed_now = {(a, c): -b for a, c, b in pending}
    # Day D's payouts left pending: what remains there is day D+1's traffic (or a carried debt).
    assert sum(s.payout_minor for s in first.settlements) == sum(
        ch.query(
            "SELECT sum(credit_minor) FROM ledger_entries FINAL WHERE account LIKE '%:available' "
            "AND event_type = 'settlement'"
        ).result_rows[0]
    )
    assert owed_now and sum(v for v in owed_now.values()) < sum(
        -line.signed_minor
        for r in DAYS.entries
        for line in entry_from_record(r).lines
        if line.account.endswith(":pending")
    )


def rail_report(books, lag_days: int):  # type: ignore[no-untyped-def]
    """What a rail reports: each transaction `lag_days` after it happened."""
    return [replace(t, day=t.day + timedelta(days=lag_days)) for t in books]


def test_reconcile_day_matches_a_faithful_report_and_flags_an_injected_discrepancy(ch) -> None:
    fill(ch)
    books = ledger_side(DAYS.events)
    providers = {t.provider for t in books}
    lag = {p: 1 for p in providers}
    day = D + timedelta(days=1)
    report = [t for t in rail_report(books, 1) if t.day == day]
    clean = reconcile_day(ch, day, report, lag)
    assert clean.discrepancies == 0 and clean.counts["matched"] == len(report) > 0
    before = sample("paystream_settlement_discrepancies_total", kind="amount_mismatch")
    report[0] = replace(report[0], amount_minor=report[0].amount_minor - 1)
    dirty = reconcile_day(ch, day, report, lag)
    assert dirty.discrepancies == 1
    assert sample("paystream_settlement_discrepancies_total", kind="amount_mismatch") == before + 1
    got = dict(
        ch.query(
            "SELECT status, count() FROM reconciliation FINAL WHERE day = {d:Date} GROUP BY status",
            parameters={"d": day},
        ).result_rows
    )
    assert got == {"matched": len(report) - 1, "amount_mismatch": 1}  # the re-run replaced the row by its key


def test_without_the_lag_every_transaction_of_the_day_would_look_unreported(ch) -> None:
    fill(ch)
    books = ledger_side(DAYS.events)
    day = D + timedelta(days=1)
    report = [t for t in rail_report(books, 1) if t.day == day]
    assert reconcile_day(ch, day, report, {}).counts["missing_in_report"] == sum(1 for t in books if t.day == day)


def test_reset_keeps_the_runs_and_a_replay_restores_the_same_tables(ch) -> None:
    fill(ch)
    run_ = settle(D, [entry_from_record(r) for r in DAYS.entries], shards=SHARDS)
    record_settlement(ch, run_)
    q_bal = "SELECT account, currency, balance_minor FROM balances ORDER BY account, currency"
    q_pay = "SELECT * FROM payments FINAL ORDER BY payment_id"
    before_bal, before_pay = ch.query(q_bal).result_rows, ch.query(q_pay).result_rows
    settlements = ch.query("SELECT * FROM settlements FINAL ORDER BY settlement_id").result_rows
    reset_tables(ch)
    assert ch.query("SELECT count() FROM payment_events").result_rows[0][0] == 0
    assert ch.query("SELECT count() FROM ledger_entries").result_rows[0][0] == 0
    fill(ch)  # what the replay of the topics inserts: the payout entries are on ledger-entries too
    Sink(ch).insert([r for e in run_.entries for r in rows_for("ledger_entry", entry_to_record(e))])
    assert ch.query(q_bal).result_rows == before_bal and ch.query(q_pay).result_rows == before_pay
    assert ch.query("SELECT * FROM settlements FINAL ORDER BY settlement_id").result_rows == settlements


def test_a_bank_transfer_submission_and_return_reconcile_from_the_read_model(ch) -> None:
    fill(ch)
    captured = next(
        e for e in DAYS.events if e["type"] == "captured" and e["provider"] and e["occurred_at"].date() == D
    )
    bank = {"provider": "bank_sepa", "provider_ref": "prv_" + "b" * 32, "method": "bank_transfer", "fee_minor": 0}
    submitted = captured | bank | {"event_id": "evt_" + "1" * 32, "type": "bank_submitted", "fee_minor": 55}
    returned = (
        captured
        | bank
        | {
            "event_id": "evt_" + "2" * 32,
            "type": "bank_reversed",
            "version": captured["version"] + 2,
            "occurred_at": captured["occurred_at"] + timedelta(days=1),
        }
    )
    Sink(ch).insert([r for e in (submitted, returned) for r in rows_for("payment_event", e)])
    books = ledger_side([submitted, returned])
    assert [t.kind for t in books] == ["capture", "return"]
    day = D + timedelta(days=1)
    everything = ledger_side(DAYS.events) + books
    report = [t for t in rail_report(everything, 1) if t.day == day]  # the submission among them, the next day
    result = reconcile_day(ch, day, report, {t.provider: 1 for t in everything})
    assert result.discrepancies == 0  # the submission found in the read model, not missing_in_ledger
    assert [i.status for i in result.items if i.provider_ref == bank["provider_ref"]] == ["matched"]
