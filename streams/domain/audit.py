"""Audit and replay over records read from the topics. Pure: the caller reads
Kafka and hands over `(topic, partition, offset, decoded record)` in offset order
per partition (a record that did not decode is passed as its DecodeError).

`audit(records, public_keys, ...)` checks, from the log alone:
- every payment event's chain link per partition and every block's Ed25519
  signature (streams/domain/chain.py: a block's last event signs it; an event no valid
  signature follows is `unsigned`), naming gaps, reorders, forks, broken links,
  foreign or missing keys;
- DESIGN.md invariants 1-3 on the payment events: versions strictly increasing
  per payment, no event id twice, captured <= authorized, refunded <= captured,
  running totals that add up, no capture after void or expiry; disputes: one
  open at a time, closed for the amount opened, no refund while one is open, and
  refunded + open dispute + lost disputes <= captured;
- every journal entry: well formed and balanced per currency, equal to what the
  posting rules make of its (signed) event, no event without its entry and no
  entry without its event; and the sum of all balances per currency is zero;
- the daily settlement's payout entries (`payout_problem`) and the bank payouts
  (streams/domain/payouts.py `PayoutCheck`): each send what its settlement instructs,
  sent once, answered at most once, none unanswered past the bank's window.

`rebuild(records)` folds the same records into balances and chain heads for
`paystream replay`; `compare` names what differs from the live stores.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.ids import derive_entry_id, derive_settlement_id
from schemas.times import from_ms
from streams.domain.chain import (
    ChainError,
    ChainHead,
    awaits_signature,
    event_hash,
    signature_problem,
)
from streams.domain.ledger import (
    SETTLEMENT,
    Balances,
    JournalEntry,
    PostingError,
    SettlementTerms,
    add_into,
    entry_from_record,
    payout_entry,
    post,
    settlement_of,
    totals_by_currency,
)
from streams.domain.payouts import PayoutCheck, is_payout_entry
from streams.domain.settlement import cutoff_ms

EVENTS_TOPIC = "payment-events"
ENTRIES_TOPIC = "ledger-entries"
MAX_FAILURES = 100  # kept in the report; all are counted

#: (topic, partition, offset, decoded record, the exception decoding raised, or a LogStart)
Record = tuple[str, int, int, Any]


@dataclass(frozen=True)
class LogStart:
    """In place of a record: this partition's log starts at `offset`, not 0 (records
    deleted by retention or DeleteRecords). The books cannot be proven from it."""

    reason: str = "log_truncated"


@dataclass(frozen=True)
class Failure:
    topic: str
    partition: int | None  # None for a failure of the whole books (books_unbalanced)
    offset: int | None
    reason: str
    detail: str

    def __str__(self) -> str:
        where = self.topic if self.partition is None else f"{self.topic}[{self.partition}]@{self.offset}"
        return f"{where}: {self.reason}: {self.detail}"


@dataclass(frozen=True)
class AuditReport:
    records: int
    events: int
    entries: int
    signatures_verified: int  # block signatures
    events_authenticated: int  # events a verified block signature covers
    partitions: int
    payments: int
    duplicate_entries: int  # redelivered entries (same id, same content), counted once
    accounts: int  # non-zero (account, currency) balances
    totals: Mapping[str, int]  # non-zero sums of balances per currency: empty when the books balance
    failures: tuple[Failure, ...]  # the first MAX_FAILURES by position (see _order)
    failures_total: int

    @property
    def ok(self) -> bool:
        return self.failures_total == 0

    @property
    def first_failure(self) -> Failure | None:
        return self.failures[0] if self.failures else None


_SIGNATURE_REASONS = frozenset(
    {"unsigned", "unknown_key", "bad_signature", "unchained", "not_canonical", "event_too_large"}
)


def _order(failure: Failure, topics: tuple[str, str]) -> tuple[int, int, int, int]:
    """Failures sort by where they are: events before entries, then partition and
    offset; the books last. At one offset an authenticity failure comes first, then
    the chain, then the rest (a reordered event also breaks its payment's totals,
    but the reorder is the cause)."""
    rank = 0 if failure.reason in _SIGNATURE_REASONS else 1 if failure.reason.startswith("chain_") else 2
    topic = topics.index(failure.topic) if failure.topic in topics else 2
    if failure.partition is None:
        return (3, 0, 0, rank)
    return (topic, failure.partition, failure.offset if failure.offset is not None else 0, rank)


@dataclass
class _Partition:
    seq: int = 0
    hash: bytes | None = None  # None after a failure: the next link is taken at face value
    suspect: tuple[int, Mapping[str, Any]] | None = None  # (offset, event) ahead of its seq
    # Linked events that await their block's signature: how many, from which offset.
    unsigned: int = 0
    unsigned_from: int | None = None


@dataclass
class _Payment:
    version: int
    merchant_id: str
    currency: str
    authorized: int = 0
    captured: int = 0
    refunded: int = 0
    closed: str | None = None  # "voided" / "expired"
    disputed: int = 0  # the open dispute's amount
    lost: int = 0  # lost in disputes


@dataclass
class Auditor:
    """The audit as a fold: `feed` each record, then `finish`. `audit()` drives it."""

    public_keys: Mapping[str, Ed25519PublicKey]
    events_topic: str = EVENTS_TOPIC
    entries_topic: str = ENTRIES_TOPIC
    max_failures: int = MAX_FAILURES
    _records: int = 0
    _events: int = 0
    _entries: int = 0
    _signed: int = 0
    _authenticated: int = 0
    _duplicates: int = 0
    _failures: list[Failure] = field(default_factory=list)
    _failures_total: int = 0
    _chains: dict[int, _Partition] = field(default_factory=dict)
    _payments: dict[str, _Payment] = field(default_factory=dict)
    _event_ids: set[str] = field(default_factory=set)
    _entry_ids: dict[str, JournalEntry] = field(default_factory=dict)
    _balances: Balances = field(default_factory=dict)
    # Events and entries not yet matched with each other, by event id.
    _open_events: dict[str, tuple[int, int, Mapping[str, Any]]] = field(default_factory=dict)
    _open_entries: dict[str, tuple[int, int, JournalEntry]] = field(default_factory=dict)
    _refused: set[str] = field(default_factory=set)  # event ids of entry records refused
    _payouts: PayoutCheck = field(default_factory=PayoutCheck)
    _positions: dict[str, tuple[int, int]] = field(default_factory=dict)  # payout entry id -> (partition, offset)

    def _fail(self, topic: str, partition: int | None, offset: int | None, reason: str, detail: str) -> None:
        # Keep the max_failures earliest by position, whatever order they are found
        # in; equal positions keep the order found (insort is stable).
        self._failures_total += 1
        failure = Failure(topic, partition, offset, reason, detail[:300])
        key = lambda f: _order(f, (self.events_topic, self.entries_topic))  # noqa: E731
        bisect.insort(self._failures, failure, key=key)
        del self._failures[self.max_failures :]

    def feed(self, topic: str, partition: int, offset: int, record: Any) -> None:
        self._records += 1
        if isinstance(record, LogStart):
            self._fail(
                topic,
                partition,
                offset,
                "log_truncated",
                f"the log starts at offset {offset}: earlier records are gone",
            )
        elif not isinstance(record, Mapping):
            reason = getattr(record, "reason", type(record).__name__)
            self._fail(topic, partition, offset, "undecodable", str(reason))
        elif topic == self.events_topic:
            self._event(partition, offset, record)
        elif topic == self.entries_topic:
            self._entry(partition, offset, record)
        else:
            self._fail(topic, partition, offset, "unknown_topic", f"not {self.events_topic} nor {self.entries_topic}")

    # --- payment events: signature, chain, payment invariants ---

    def _event(self, partition: int, offset: int, event: Mapping[str, Any]) -> None:
        self._events += 1

        def fail(reason: str, detail: str) -> None:
            self._fail(self.events_topic, partition, offset, reason, detail)

        chain = self._chains.setdefault(partition, _Partition(hash=ChainHead.genesis(partition).hash))
        problem = signature_problem(event, self.public_keys)
        if problem is None:
            self._signed += 1
            self._link(partition, offset, event, chain)
            self._authenticated += 1 + chain.unsigned
            chain.unsigned, chain.unsigned_from = 0, None
        elif problem == "unsigned" and awaits_signature(event):
            self._link(partition, offset, event, chain)
            chain.unsigned += 1
            chain.unsigned_from = offset if chain.unsigned_from is None else chain.unsigned_from
        else:
            fail(problem, f"key_id={event.get('key_id')!r} seq={event.get('chain_seq')!r}")
            self._unsigned_block(partition, chain)
            self._resolve_suspect(partition, chain)
            if type(event.get("chain_seq")) is int and event["chain_seq"] > chain.seq:
                chain.seq, chain.hash = event["chain_seq"], None  # resync: do not blame its successor
        event_id: Any = event.get("event_id")
        if event_id in self._event_ids:
            fail("duplicate_event", f"event {event_id} seen before")
            return
        self._event_ids.add(event_id)
        self._invariants(event, fail)
        self._match_event(partition, offset, event, fail)

    def _link(self, partition: int, offset: int, event: Mapping[str, Any], chain: _Partition) -> None:
        seq = event["chain_seq"]
        if chain.suspect is not None:
            s_offset, s_event = chain.suspect
            swapped = s_event["chain_seq"] == chain.seq + 2 and seq == chain.seq + 1
            if swapped and chain.hash in (None, event["prev_hash"]) and s_event["prev_hash"] == event_hash(event):
                chain.suspect = None
                self._fail(
                    self.events_topic,
                    partition,
                    s_offset,
                    "chain_reorder",
                    f"seq {s_event['chain_seq']} at offset {s_offset} comes before seq {seq} at offset {offset}",
                )
                chain.seq, chain.hash = s_event["chain_seq"], event_hash(s_event)
                return
            self._resolve_suspect(partition, chain)
        expected = chain.seq + 1
        if seq > expected:
            chain.suspect = (offset, event)  # a gap, or the first of a swapped pair: the next record tells
        elif seq < expected:
            self._fail(self.events_topic, partition, offset, "chain_fork", f"seq {seq} again after seq {chain.seq}")
        else:
            if chain.hash is not None and event["prev_hash"] != chain.hash:
                self._fail(
                    self.events_topic,
                    partition,
                    offset,
                    "chain_broken_link",
                    f"seq {seq}: prev_hash is not the hash of seq {chain.seq}",
                )
            chain.seq, chain.hash = seq, event_hash(event)

    def _unsigned_block(self, partition: int, chain: _Partition) -> None:
        """The events awaiting a signature that will not come (the log ends, or the
        block's signature failed): nothing vouches for them."""
        if chain.unsigned:
            self._fail(
                self.events_topic,
                partition,
                chain.unsigned_from,
                "unsigned",
                f"{chain.unsigned} event(s) from this offset on: no valid block signature follows them",
            )
            chain.unsigned, chain.unsigned_from = 0, None

    def _resolve_suspect(self, partition: int, chain: _Partition) -> None:
        if chain.suspect is None:
            return
        s_offset, s_event = chain.suspect
        chain.suspect = None
        self._fail(
            self.events_topic,
            partition,
            s_offset,
            "chain_gap",
            f"seq {s_event['chain_seq']} follows seq {chain.seq}: {s_event['chain_seq'] - chain.seq - 1} missing",
        )
        chain.seq, chain.hash = s_event["chain_seq"], event_hash(s_event)

    def _invariants(self, e: Mapping[str, Any], fail: Any) -> None:
        pid: Any = e.get("payment_id")
        etype: Any = e.get("type")
        p = self._payments.get(pid)
        if p is None:
            p = self._payments[pid] = _Payment(0, e.get("merchant_id", ""), e.get("currency", ""))
        if (e.get("merchant_id"), e.get("currency")) != (p.merchant_id, p.currency):
            fail("payment_mismatch", f"{pid}: merchant or currency changed")
        if not isinstance(e.get("version"), int) or e["version"] <= p.version:
            fail("version_not_increasing", f"{pid}: version {e.get('version')!r} after {p.version}")
        else:
            p.version = e["version"]
        amount: Any = e.get("amount_minor")
        if etype == "captured" and p.closed:
            fail("capture_after_void", f"{pid}: captured after {p.closed}")
        expected = {
            "authorized": (amount, p.captured, p.refunded),
            "captured": (p.authorized, p.captured + amount, p.refunded),
            "refunded": (p.authorized, p.captured, p.refunded + amount),
            "bank_submitted": (amount, p.captured + amount, p.refunded),  # no hold: submitted is captured
        }.get(etype, (p.authorized, p.captured, p.refunded))
        if etype in ("voided", "expired"):
            p.closed = etype
            if amount != p.authorized - p.captured:
                fail("totals_mismatch", f"{pid}: {etype} releases {amount}, hold rest is {p.authorized - p.captured}")
        totals = (e.get("authorized_minor"), e.get("captured_minor"), e.get("refunded_minor"))
        if totals != expected:
            fail("totals_mismatch", f"{pid}: {etype} says {totals}, the events add up to {expected}")
        p.authorized, p.captured, p.refunded = (t if isinstance(t, int) else 0 for t in totals)
        if p.captured > p.authorized:
            fail("captured_exceeds_authorized", f"{pid}: {p.captured} > {p.authorized}")
        if p.refunded > p.captured:
            fail("refunded_exceeds_captured", f"{pid}: {p.refunded} > {p.captured}")
        if isinstance(amount, int):
            self._dispute(p, pid, etype, amount, fail)

    @staticmethod
    def _dispute(p: _Payment, pid: Any, etype: Any, amount: int, fail: Any) -> None:
        if etype == "refunded" and p.disputed:
            fail("refund_during_dispute", f"{pid}: refunded while a dispute of {p.disputed} is open")
        elif etype == "dispute_opened":
            if p.disputed:
                fail("dispute_already_open", f"{pid}: a second dispute while {p.disputed} is open")
            p.disputed = amount
        elif etype in ("dispute_won", "dispute_lost"):
            if amount != p.disputed:
                fail("dispute_mismatch", f"{pid}: {etype} of {amount}, the open dispute is {p.disputed}")
            p.lost += amount if etype == "dispute_lost" else 0
            p.disputed = 0
        if p.refunded + p.disputed + p.lost > p.captured:
            fail(
                "disputed_exceeds_captured",
                f"{pid}: refunded {p.refunded} + disputed {p.disputed} + lost {p.lost} > captured {p.captured}",
            )

    # --- journal entries ---

    def _entry(self, partition: int, offset: int, record: Mapping[str, Any]) -> None:
        self._entries += 1

        def fail(reason: str, detail: str) -> None:
            self._fail(self.entries_topic, partition, offset, reason, detail)

        try:
            entry = entry_from_record(record)
        except PostingError as e:
            fail(f"entry_{e.reason}", e.detail)
            if isinstance(record.get("event_id"), str):
                self._refused.add(record["event_id"])  # its event is not also "missing" an entry
            return
        if entry.shard != partition:
            fail("wrong_shard", f"{entry.entry_id} of shard {entry.shard} read from partition {partition}")
        seen = self._entry_ids.get(entry.entry_id)
        if seen is not None:
            if seen == entry:
                self._duplicates += 1
            else:
                fail("entry_conflict", f"{entry.entry_id} posted twice with different lines")
            return
        self._entry_ids[entry.entry_id] = entry
        add_into(self._balances, entry)
        self._payouts.seen(entry)
        if entry.event_type == SETTLEMENT:
            problem = payout_problem(entry)
            if problem is not None:
                fail("payout_mismatch", f"{entry.entry_id}: {problem}")
            else:
                self._payouts.settled(entry)
        elif is_payout_entry(entry):  # the bank rail's (streams/domain/payouts.py): checked whole in finish
            self._payouts.feed(entry)
            self._positions[entry.entry_id] = (partition, offset)
        elif entry.reverses is None:
            self._open_entries[entry.event_id] = (partition, offset, entry)
            self._match(entry.event_id)

    def _match_event(self, partition: int, offset: int, event: Mapping[str, Any], fail: Any) -> None:
        try:
            # Whether it posts at all does not depend on the shard or the settlement currency.
            posts = post(event, shard=0, settlement=SettlementTerms(event.get("currency", ""))) is not None
        except PostingError as e:
            fail(f"event_{e.reason}", e.detail)
            return
        if posts:
            self._open_events[event["event_id"]] = (partition, offset, event)
            self._match(event["event_id"])

    def _match(self, event_id: str) -> None:
        if event_id not in self._open_events or event_id not in self._open_entries:
            return
        _, _, event = self._open_events.pop(event_id)
        partition, offset, entry = self._open_entries.pop(event_id)
        try:
            expected = post(event, shard=entry.shard, settlement=settlement_of(entry))
        except PostingError as e:
            expected, why = None, e.reason
        else:
            why = "lines differ"
        if expected != entry:
            self._fail(
                self.entries_topic,
                partition,
                offset,
                "entry_mismatch",
                f"{entry.entry_id} is not what event {event_id} posts ({why})",
            )

    def finish(self) -> AuditReport:
        for partition, chain in sorted(self._chains.items()):
            self._resolve_suspect(partition, chain)
            self._unsigned_block(partition, chain)
        for event_id, (partition, offset, _) in self._open_events.items():
            if event_id not in self._refused:
                self._fail(
                    self.events_topic, partition, offset, "missing_entry", f"event {event_id} has no journal entry"
                )
        for event_id, (partition, offset, entry) in self._open_entries.items():
            self._fail(self.entries_topic, partition, offset, "orphan_entry", f"{entry.entry_id}: no event {event_id}")
        for entry, reason, detail in self._payouts.finish():
            partition, offset = self._positions[entry.entry_id]
            self._fail(self.entries_topic, partition, offset, reason, detail)
        for entry in self._entry_ids.values():
            if entry.reverses is not None and entry.reverses not in self._entry_ids:
                self._fail(
                    self.entries_topic,
                    None,
                    None,
                    "orphan_reversal",
                    f"{entry.entry_id} reverses unknown {entry.reverses}",
                )
        totals = totals_by_currency(self._balances)
        if totals:
            self._fail(self.entries_topic, None, None, "books_unbalanced", f"sum of balances per currency: {totals}")
        return AuditReport(
            records=self._records,
            events=self._events,
            entries=self._entries,
            signatures_verified=self._signed,
            events_authenticated=self._authenticated,
            partitions=len(self._chains),
            payments=len(self._payments),
            duplicate_entries=self._duplicates,
            accounts=len(self._balances),
            totals=totals,
            failures=tuple(self._failures),
            failures_total=self._failures_total,
        )


def audit(
    records: Iterable[Record],
    public_keys: Mapping[str, Ed25519PublicKey],
    *,
    events_topic: str = EVENTS_TOPIC,
    entries_topic: str = ENTRIES_TOPIC,
) -> AuditReport:
    """Verify the event store and the books from the topics' records alone."""
    auditor = Auditor(public_keys, events_topic, entries_topic)
    for topic, partition, offset, record in records:
        auditor.feed(topic, partition, offset, record)
    return auditor.finish()


# --- replay ---


class ReplayError(ValueError):
    """A record replay cannot fold (run `paystream audit` to see why); names where."""

    def __init__(self, topic: str, partition: int, offset: int, reason: str) -> None:
        super().__init__(f"{topic}[{partition}]@{offset}: {reason}")
        self.topic, self.partition, self.offset, self.reason = topic, partition, offset, reason


@dataclass(frozen=True)
class Rebuilt:
    balances: Balances
    chain_heads: dict[int, ChainHead]
    events: int
    entries: int
    duplicate_entries: int


def rebuild(
    records: Iterable[Record], *, events_topic: str = EVENTS_TOPIC, entries_topic: str = ENTRIES_TOPIC
) -> Rebuilt:
    """Balances (from the journal entries, each applied once by entry_id) and
    the chain head of each partition (from the payment events), from offset 0.
    Verifies nothing: that is the audit's job; raises ReplayError on a record it
    cannot fold. The entries carry the FX rates they used, so the result does not
    depend on the rate topic's compacted history."""
    balances: Balances = {}
    heads: dict[int, ChainHead] = {}
    applied: set[str] = set()
    events = entries = duplicates = 0
    for topic, partition, offset, record in records:
        if not isinstance(record, Mapping):
            raise ReplayError(topic, partition, offset, f"undecodable: {getattr(record, 'reason', record)!r}"[:200])
        try:
            if topic == events_topic:
                events += 1
                heads[partition] = ChainHead(partition, record["chain_seq"], event_hash(record))
            elif topic == entries_topic:
                entries += 1
                entry = entry_from_record(record)
                if entry.entry_id in applied:
                    duplicates += 1
                    continue
                applied.add(entry.entry_id)
                add_into(balances, entry)
            else:
                raise ReplayError(topic, partition, offset, "unknown topic")
        except (ChainError, PostingError) as e:
            raise ReplayError(topic, partition, offset, e.reason) from None
        except (KeyError, AssertionError) as e:
            raise ReplayError(topic, partition, offset, f"malformed: {e}"[:200]) from None
    return Rebuilt(balances, heads, events, entries, duplicates)


@dataclass(frozen=True)
class Difference:
    kind: str  # "balance" or "chain_head"
    key: str  # "merchant:m_acme:pending USD", "partition 3"
    live: str
    rebuilt: str

    def __str__(self) -> str:
        return f"{self.kind} {self.key}: live {self.live}, rebuilt {self.rebuilt}"


def compare(
    live_balances: Mapping[tuple[str, str], int],
    live_heads: Mapping[int, ChainHead],
    rebuilt: Rebuilt,
    *,
    max_differences: int = MAX_FAILURES,
) -> list[Difference]:
    """What differs between the live stores and a rebuild, named (at most
    `max_differences`, sorted). A zero balance stored live equals an absent one."""
    out: list[Difference] = []
    live = {k: v for k, v in live_balances.items() if v}
    for key in sorted(live.keys() | rebuilt.balances.keys()):
        a, b = live.get(key, 0), rebuilt.balances.get(key, 0)
        if a != b:
            out.append(Difference("balance", f"{key[0]} {key[1]}", str(a), str(b)))
    for p in sorted(live_heads.keys() | rebuilt.chain_heads.keys()):
        live_head, rebuilt_head = live_heads.get(p), rebuilt.chain_heads.get(p)
        if live_head != rebuilt_head:
            out.append(Difference("chain_head", f"partition {p}", _head(live_head), _head(rebuilt_head)))
    return out[:max_differences]


def _head(head: ChainHead | None) -> str:
    return "none" if head is None else f"seq {head.seq} {head.hash.hex()[:16]}"


def payout_problem(entry: JournalEntry) -> str | None:
    """None when a payout entry (`paystream settle`) is exactly what settling its
    merchant, currency and day posts; it has no payment event to be checked against."""
    settled_day = from_ms(entry.occurred_at_ms).date()
    if entry.occurred_at_ms != cutoff_ms(settled_day) - 1:
        return "not at a day's last millisecond"
    head = entry.lines[0]
    day = settled_day.isoformat()
    sid = derive_settlement_id(entry.merchant_id, head.currency, day)
    if (entry.event_id, entry.payment_id, entry.entry_id) != (sid, sid, derive_entry_id(sid)):
        return f"ids are not those of settling {entry.merchant_id} {head.currency} on {day}"
    terms = settlement_of(entry)
    if terms is None:
        return "carries no settlement terms"
    try:
        expected = payout_entry(
            entry.entry_id,
            sid,
            entry.merchant_id,
            shard=entry.shard,
            occurred_at_ms=entry.occurred_at_ms,
            currency=head.currency,
            amount_minor=head.debit_minor,
            terms=terms,
        )
    except (PostingError, AssertionError) as e:
        return f"cannot be re-posted ({e})"[:200]
    return None if expected == entry else "lines differ from the payout rule"
