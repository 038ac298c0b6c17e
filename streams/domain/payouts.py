"""Payouts on the bank rail: what `paystream payouts run` posts for the payout
instructions `paystream settle` wrote, and the audit's check of it. Pure: no Kafka,
no clock; time is the instruction's and the bank's answer's (event time).

A payout of day D is sent at D+1 00:00 (the first millisecond after its settlement
entry): `payout_sent` moves it from the merchant's available balance to the shard's
`payouts_in_transit` hold. The bank answers (connectors/providers/bank.py) days later:
paid, `payout_paid` moves the hold to `house:bank` (the money left our bank account);
failed, the REVERSAL of the sent entry puts it back on the merchant's available
balance exactly. A run as of T posts every send and answer at or before T that is not
on the ledger yet; ids derive from the payout id, so a re-run posts nothing new.

The audit (`PayoutCheck`) checks from the entries alone: each send is exactly what
its settlement's payout sends, each payout is sent once and answered at most once
(paid or failed, not both), and none is left unanswered past the bank's window
(measured against the latest event time on the ledger).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from connectors.providers.bank import BankRail
from schemas.ids import derive_entry_id, derive_event_id, derive_payout_id
from schemas.times import from_ms, to_ms
from streams.domain.ledger import (
    PAYOUT_PAID,
    PAYOUT_SENT,
    REVERSAL,
    SETTLEMENT,
    JournalEntry,
    Line,
    house_account,
    merchant_account,
    reverse,
    shard_for,
)

MAX_PAYOUTS = 1_000_000  # instructions one run holds in memory
BANK_FAILED = "bank_failed"  # the correction id of a failed payout's reversal
STATUSES = ("sent", "paid", "failed")  # on the ledger; "held" (not sent, compliance) is a run's status only


@dataclass(frozen=True)
class Payout:
    """What a payout instruction asks for (schemas/avro/PayoutInstruction.avsc)."""

    payout_id: str
    settlement_id: str
    merchant_id: str
    currency: str  # what is wired: the merchant's settlement currency
    amount_minor: int
    day: date
    settled_at_ms: int  # the settlement entry's time: the settled day's last millisecond

    def __post_init__(self) -> None:
        assert self.amount_minor > 0 and self.payout_id == derive_payout_id(self.settlement_id), self

    @property
    def sent_at_ms(self) -> int:
        return self.settled_at_ms + 1


def payout_from_record(record: Mapping[str, Any]) -> Payout:
    """A decoded PayoutInstruction; ValueError when it is not a usable one."""
    try:
        return Payout(
            record["payout_id"],
            record["settlement_id"],
            record["merchant_id"],
            record["currency"],
            record["amount_minor"],
            record["day"],
            to_ms(record["occurred_at"]),
        )
    except (KeyError, TypeError, AssertionError) as e:
        raise ValueError(f"not a payout instruction: {type(e).__name__} {e}"[:200]) from None


def payout_of_settlement(entry: JournalEntry) -> Payout:
    """The payout a settlement entry (streams/domain/settlement.py) instructs: what reaches
    the merchant's available balance, in its settlement currency."""
    assert entry.event_type == SETTLEMENT, entry.event_type
    currency, amount = (
        (entry.lines[0].currency, entry.lines[0].debit_minor)
        if entry.fx is None
        else (entry.fx.quote_currency, entry.fx.target_minor)
    )
    return Payout(
        derive_payout_id(entry.event_id),
        entry.event_id,
        entry.merchant_id,
        currency,
        amount,
        from_ms(entry.occurred_at_ms).date(),
        entry.occurred_at_ms,
    )


def sent_entry(payout: Payout, *, shard: int) -> JournalEntry:
    """available -> in transit, in the merchant's shard (where its settlement was posted)."""
    event_id = derive_event_id(payout.payout_id, PAYOUT_SENT)
    cur, amount = payout.currency, payout.amount_minor
    return JournalEntry(
        derive_entry_id(event_id),
        event_id,
        PAYOUT_SENT,
        payout.payout_id,
        payout.merchant_id,
        shard,
        payout.sent_at_ms,
        (
            Line(merchant_account(payout.merchant_id, "available"), cur, debit_minor=amount),
            Line(house_account("payouts_in_transit", shard), cur, credit_minor=amount),
        ),
    )


def paid_entry(sent: JournalEntry, at_ms: int) -> JournalEntry:
    """in transit -> bank: the bank confirmed the transfer."""
    assert sent.event_type == PAYOUT_SENT and at_ms > sent.occurred_at_ms
    event_id = derive_event_id(sent.payment_id, PAYOUT_PAID)
    hold = sent.lines[1]
    return JournalEntry(
        derive_entry_id(event_id),
        event_id,
        PAYOUT_PAID,
        sent.payment_id,
        sent.merchant_id,
        sent.shard,
        at_ms,
        (
            Line(hold.account, hold.currency, debit_minor=hold.credit_minor),
            Line(house_account("bank", sent.shard), hold.currency, credit_minor=hold.credit_minor),
        ),
    )


def failed_entry(sent: JournalEntry, at_ms: int) -> JournalEntry:
    """The sent entry reversed: the bank returned the transfer, the merchant has it back."""
    assert sent.event_type == PAYOUT_SENT and at_ms > sent.occurred_at_ms
    return reverse(sent, correction_id=BANK_FAILED, occurred_at_ms=at_ms)


@dataclass(frozen=True)
class PayoutStatus:
    """One row of the `payouts` read model (field names are its columns)."""

    payout_id: str
    settlement_id: str
    merchant_id: str
    currency: str
    amount_minor: int
    day: date
    status: str  # one of STATUSES
    sent_at_ms: int
    answered_at_ms: int | None
    failure_reason: str  # '' unless failed


@dataclass(frozen=True)
class PayoutRun:
    as_of_ms: int
    entries: tuple[JournalEntry, ...]  # to post: not on the ledger yet, in order (send before answer)
    statuses: tuple[PayoutStatus, ...]  # every payout sent by as_of_ms

    def count(self, status: str) -> int:
        return sum(s.status == status for s in self.statuses)


def run_payouts(
    payouts: Iterable[Payout],
    posted: Mapping[str, JournalEntry],
    *,
    as_of_ms: int,
    bank: BankRail,
    shards: int,
    hold: Callable[[Payout], str | None] | None = None,
) -> PayoutRun:
    """The sends and answers due by `as_of_ms` for `payouts` (duplicates by payout id
    are one), leaving out those already in `posted` (entry id -> entry). `hold`: why a
    payout not sent yet must wait (compliance: streams/domain/payout_holds.py), or None; a held
    one is not sent (the money stays on the merchant's available balance) and shows as
    `held` with the reason, and a later run sends it once nothing holds it."""
    unique = {p.payout_id: p for p in payouts}
    assert len(unique) <= MAX_PAYOUTS, f"more than {MAX_PAYOUTS} payouts in one run"
    entries, statuses = [], []
    for payout in sorted(unique.values(), key=lambda p: (p.sent_at_ms, p.payout_id)):
        if payout.sent_at_ms > as_of_ms:
            continue
        sent = sent_entry(payout, shard=shard_for(payout.merchant_id, shards))
        why = hold(payout) if hold is not None and sent.entry_id not in posted else None
        if why is not None:
            statuses.append(
                PayoutStatus(
                    payout.payout_id,
                    payout.settlement_id,
                    payout.merchant_id,
                    payout.currency,
                    payout.amount_minor,
                    payout.day,
                    "held",
                    payout.sent_at_ms,
                    None,
                    why,
                )
            )
            continue
        answer = bank.answer(payout.payout_id, payout.merchant_id, payout.sent_at_ms)
        due = [sent]
        if answer.at_ms <= as_of_ms:
            due.append(paid_entry(sent, answer.at_ms) if answer.status == "paid" else failed_entry(sent, answer.at_ms))
        entries += [e for e in due if e.entry_id not in posted]
        answered = answer.at_ms <= as_of_ms
        statuses.append(
            PayoutStatus(
                payout.payout_id,
                payout.settlement_id,
                payout.merchant_id,
                payout.currency,
                payout.amount_minor,
                payout.day,
                answer.status if answered else "sent",
                payout.sent_at_ms,
                answer.at_ms if answered else None,
                (answer.reason or "") if answered else "",
            )
        )
    return PayoutRun(as_of_ms, tuple(entries), tuple(statuses))


def is_payout_entry(entry: JournalEntry) -> bool:
    """A send, a confirmation, or the reversal of a send (a failed payout)."""
    return entry.event_type in (PAYOUT_SENT, PAYOUT_PAID) or (
        entry.event_type == REVERSAL and entry.event_id == derive_event_id(entry.payment_id, PAYOUT_SENT)
    )


@dataclass
class PayoutCheck:
    """The audit of the bank payouts, as a fold: `settled` every settlement entry,
    `feed` every payout entry, `seen` every entry's time, then `finish`."""

    window_ms: int = BankRail().window_ms
    _settled: dict[str, tuple[Payout, int]] = field(default_factory=dict)  # payout id -> (payout, shard)
    _by_payout: dict[str, dict[str, list[JournalEntry]]] = field(default_factory=dict)
    _horizon_ms: int = 0

    def seen(self, entry: JournalEntry) -> None:
        self._horizon_ms = max(self._horizon_ms, entry.occurred_at_ms)

    def settled(self, entry: JournalEntry) -> None:
        payout = payout_of_settlement(entry)
        self._settled[payout.payout_id] = (payout, entry.shard)

    def feed(self, entry: JournalEntry) -> None:
        kind = {PAYOUT_SENT: "sent", PAYOUT_PAID: "paid"}.get(entry.event_type, "failed")
        self._by_payout.setdefault(entry.payment_id, {}).setdefault(kind, []).append(entry)

    def finish(self) -> list[tuple[JournalEntry, str, str]]:
        """(entry, reason, detail) of every problem found."""
        out = []
        for payout_id, kinds in sorted(self._by_payout.items()):
            sent, paid, failed = (kinds.get(k, []) for k in STATUSES)
            first = (sent or paid or failed)[0]
            if len(sent) > 1 or len(paid) > 1 or len(failed) > 1:
                out.append((first, "payout_twice", f"{payout_id} sent or answered more than once"))
                continue
            if not sent:
                out.append((first, "payout_answer_without_send", f"{payout_id} answered but never sent"))
                continue
            settled = self._settled.get(payout_id)
            expected = None if settled is None else sent_entry(settled[0], shard=settled[1])
            if expected != sent[0]:
                why = "no settlement instructs it" if settled is None else "lines differ from its settlement's payout"
                out.append((sent[0], "payout_mismatch", f"{payout_id}: {why}"))
                continue
            if paid and failed:
                out.append((paid[0], "payout_paid_and_failed", f"{payout_id} both paid and reversed"))
            for answer in paid + failed:
                rebuilt = (
                    (paid_entry if answer in paid else failed_entry)(sent[0], answer.occurred_at_ms)
                    if answer.occurred_at_ms > sent[0].occurred_at_ms
                    else None
                )
                if rebuilt != answer:
                    out.append((answer, "payout_mismatch", f"{payout_id}: the answer is not what the rule posts"))
            if not paid and not failed and sent[0].occurred_at_ms + self.window_ms < self._horizon_ms:
                out.append(
                    (
                        sent[0],
                        "payout_unanswered",
                        f"{payout_id} sent at {sent[0].occurred_at_ms}, no answer within the bank's window",
                    )
                )
        return out
