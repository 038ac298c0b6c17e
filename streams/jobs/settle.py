"""`paystream settle --date D`: the daily settlement as a job over the event store.

Order (each step only after the one before succeeded):
  1. read, read_committed up to the end offsets seen at start: every journal entry
     on ledger-entries, the merchant registry (settlement currencies) and the
     fx-rates topic;
  2. settle the day (streams/domain/settlement.py, pure);
  3. post the payout entries not yet on ledger-entries (each in its merchant's
     shard) and their payout instructions on `payouts`, in ONE Kafka transaction:
     the ledger agent applies the entries like any other, the audit checks them;
  4. write the run's rows to ClickHouse (settlements; the entries also arrive
     through the sink).
A second run reads its own entries in step 1 and posts nothing (ids derive from
merchant, currency and day). Run one settle at a time: its transactional id fences
a concurrent producer, but two runs could both read before either posted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

from clickhouse_connect.driver.client import Client

from connectors.kafka.clients import MissingTopic, read_to_end
from schemas.codec import Codec, DecodeError
from streams.domain.fx import FxError, RateBook, rate_from_record
from streams.domain.ledger import (
    JournalEntry,
    PostingError,
    entry_from_record,
    entry_to_record,
)
from streams.domain.settlement import SettlementRun, settle
from streams.jobs.sink import record_settlement
from streams.settings import Settings, client_config
from streams.topics import client_ids, topic_names

ENTRY_CODEC, RATE_CODEC, PAYOUT_CODEC = Codec("LedgerEntry"), Codec("FxRate"), Codec("PayoutInstruction")
log = logging.getLogger("paystream.settle")
MAX_ENTRIES = 20_000_000  # entries one run holds in memory: all history before the cutoff
TXN_TIMEOUT_S = 60


class SettleError(RuntimeError):
    pass


@dataclass(frozen=True)
class SettleResult:
    run: SettlementRun
    posted_entry_ids: frozenset[str]  # the payout entries this run put on ledger-entries (none on a re-run)
    skipped_records: int  # undecodable ledger/rate records left out (the audit names them)


def read_entries(settings: Settings) -> tuple[list[JournalEntry], int]:
    entries, skipped = [], 0
    for msg in read_to_end(client_config(settings), [topic_names(settings).ledger], settings.partitions):
        try:
            entries.append(entry_from_record(ENTRY_CODEC.decode(msg.value() or b"")))
        except (DecodeError, PostingError):
            skipped += 1
        if len(entries) > MAX_ENTRIES:
            raise SettleError(f"more than {MAX_ENTRIES} journal entries: settle per shard instead")
    return entries, skipped


def read_rates(settings: Settings) -> tuple[RateBook, int]:
    book, skipped = RateBook(), 0
    try:
        for msg in read_to_end(client_config(settings), [topic_names(settings).fx_rates], settings.partitions):
            try:
                book.add(rate_from_record(RATE_CODEC.decode(msg.value() or b"")))
            except (DecodeError, FxError):
                skipped += 1
    except MissingTopic:
        pass
    return book, skipped


def post(settings: Settings, run: SettlementRun, already: set[str]) -> frozenset[str]:
    """Produce the run's entries not in `already`, and their payouts, in one transaction;
    returns the ids of the entries it produced."""
    from confluent_kafka import KafkaException, Producer

    names = topic_names(settings)
    new = [e for e in run.entries if e.entry_id not in already]
    if not new:
        return frozenset()
    payouts = {p.settlement_id: p for p in run.payouts}
    producer = Producer(
        {
            **client_config(settings),
            "transactional.id": client_ids(settings).settle_transaction,
            "enable.idempotence": True,
            "acks": "all",
            "log_level": 3,
        }
    )
    try:
        producer.init_transactions(TXN_TIMEOUT_S)
        producer.begin_transaction()
        for entry in new:
            key = entry.merchant_id.encode()
            producer.produce(
                names.ledger,
                key=key,
                value=ENTRY_CODEC.encode(entry_to_record(entry), check=True),
                partition=entry.shard,
            )
            payout = asdict(payouts[entry.event_id])
            payout["occurred_at"] = payout.pop("occurred_at_ms")
            producer.produce(names.payouts, key=key, value=PAYOUT_CODEC.encode(payout, check=True))
        producer.commit_transaction(TXN_TIMEOUT_S)
    except KafkaException as e:
        try:
            producer.abort_transaction(TXN_TIMEOUT_S)
        except KafkaException:
            pass  # the broker aborts it at the transaction timeout; nothing was committed
        raise SettleError(f"posting the settlement failed, nothing committed: {e}") from None
    return frozenset(e.entry_id for e in new)


def settle_day(
    settings: Settings, client: Client, day: date, read_registry: Callable[[Settings], dict[str, Any]]
) -> SettleResult:
    entries, skipped = read_entries(settings)
    rates, bad_rates = read_rates(settings)
    currency_of = {m: r["settlement_currency"] for m, r in read_registry(settings).items()}
    run = settle(day, entries, shards=settings.partitions, settlement_currency=currency_of, rates=rates)
    posted = post(settings, run, {e.entry_id for e in entries})
    record_settlement(client, run)
    return SettleResult(run, posted, skipped + bad_rates)
