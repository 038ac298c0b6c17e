"""`paystream payouts run --date D`: the bank side of the payouts `paystream settle`
writes on the `payouts` topic.

Order (each step only after the one before succeeded):
  1. read, read_committed up to the end offsets seen at start: every payout
     instruction on `payouts` and every journal entry on ledger-entries;
  2. plan (streams/domain/payouts.py, pure): every send and bank answer due by the end of D
     (event time) that is not on the ledger yet, less the payouts compliance holds
     (streams/domain/payout_holds.py: KYC not verified, a sanctioned beneficiary);
  3. post those entries, each in its merchant's shard, in Kafka transactions of at
     most MAX_BATCH entries (a payout's send comes before its answer, in order);
  4. write the `payouts` read model rows (status per payout) to ClickHouse.
A second run posts nothing (entry ids derive from the payout id). Run one at a time,
as settle: its transactional id fences a concurrent producer, not a concurrent read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from clickhouse_connect.driver.client import Client

from connectors.clickhouse.rows import Row, rows_for
from connectors.clickhouse.sink import Sink
from connectors.kafka.clients import MissingTopic, read_to_end
from connectors.providers.bank import BankRail
from schemas.codec import Codec, DecodeError
from schemas.times import from_ms
from streams.client.merchants import read_registry
from streams.domain.ledger import JournalEntry, entry_to_record
from streams.domain.payout_holds import payout_hold
from streams.domain.payouts import (
    Payout,
    PayoutRun,
    PayoutStatus,
    payout_from_record,
    run_payouts,
)
from streams.domain.settlement import cutoff_ms
from streams.jobs.settle import ENTRY_CODEC, TXN_TIMEOUT_S, SettleError, read_entries
from streams.settings import Settings, client_config
from streams.topics import client_ids, topic_names
from streams.worker.feeds import read_list

PAYOUT_CODEC = Codec("PayoutInstruction")
MAX_BATCH = 5_000  # entries per Kafka transaction


@dataclass(frozen=True)
class PayoutsResult:
    run: PayoutRun
    posted_entries: int  # new entries this run put on ledger-entries (0 on a re-run)
    skipped_records: int  # undecodable instructions or entries left out


def read_payouts(settings: Settings) -> tuple[list[Payout], int]:
    payouts, skipped = [], 0
    try:
        for msg in read_to_end(client_config(settings), [topic_names(settings).payouts], settings.partitions):
            try:
                payouts.append(payout_from_record(PAYOUT_CODEC.decode(msg.value() or b"")))
            except (DecodeError, ValueError):
                skipped += 1
    except MissingTopic:
        pass
    return payouts, skipped


def post_entries(settings: Settings, entries: tuple[JournalEntry, ...]) -> int:
    """Produce `entries` in order, MAX_BATCH per transaction; a failed batch is aborted
    (nothing of it committed) and a re-run posts what is still missing."""
    from confluent_kafka import KafkaException, Producer

    if not entries:
        return 0
    topic = topic_names(settings).ledger
    producer = Producer(
        {
            **client_config(settings),
            "transactional.id": client_ids(settings).payouts_transaction,
            "enable.idempotence": True,
            "acks": "all",
            "log_level": 3,
        }
    )
    posted = 0
    try:
        producer.init_transactions(TXN_TIMEOUT_S)
        for start in range(0, len(entries), MAX_BATCH):
            batch = entries[start : start + MAX_BATCH]
            producer.begin_transaction()
            for entry in batch:
                producer.produce(
                    topic,
                    key=entry.merchant_id.encode(),
                    partition=entry.shard,
                    value=ENTRY_CODEC.encode(entry_to_record(entry), check=True),
                )
            producer.commit_transaction(TXN_TIMEOUT_S)
            posted += len(batch)
    except KafkaException as e:
        try:
            producer.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException:
            pass  # the broker aborts it at the transaction timeout
        raise SettleError(f"posting payouts failed after {posted} entries (re-run to post the rest): {e}") from None
    return posted


def status_record(status: PayoutStatus) -> dict[str, Any]:
    """A payout's status as the `payout` read-model record (connectors/clickhouse/rows.py)."""
    return asdict(status) | {
        "sent_at": from_ms(status.sent_at_ms),
        "answered_at": None if status.answered_at_ms is None else from_ms(status.answered_at_ms),
    }


def payout_rows(run: PayoutRun) -> list[Row]:
    """The run's new entries (the sink brings them too; Replacing engines keep one) and every payout's status."""
    rows = [r for e in run.entries for r in rows_for("ledger_entry", entry_to_record(e))]
    return rows + [r for s in run.statuses for r in rows_for("payout", status_record(s))]


def payouts_day(settings: Settings, client: Client | None, day: date, bank: BankRail) -> PayoutsResult:
    """Send and answer every payout due by the end of `day` (event time, UTC)."""
    payouts, bad_payouts = read_payouts(settings)
    entries, bad_entries = read_entries(settings)
    # Compliance holds (streams/domain/payout_holds.py): the registry and the sanctions list as they are now.
    sanctions, _ = read_list(settings)
    hold = payout_hold(read_registry(settings), sanctions, require_registration=settings.merchants_require_registration)
    run = run_payouts(
        payouts,
        {e.entry_id: e for e in entries},
        as_of_ms=cutoff_ms(day) - 1,
        bank=bank,
        shards=settings.partitions,
        hold=hold,
    )
    posted = post_entries(settings, run.entries)
    if client is not None:
        rows = payout_rows(run)
        if rows:
            Sink(client).insert(rows)
    return PayoutsResult(run, posted, bad_payouts + bad_entries)
