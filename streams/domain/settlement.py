"""Daily settlement per merchant and currency, and reconciliation against the
providers' reports. Pure: plain values in, plain values out, no clock.

Settlement of day D (event time, UTC) for (merchant, currency): what we owe the
merchant at the cutoff (D+1 00:00) is the credit balance of
`merchant:<id>:pending` over every entry before the cutoff, which already nets
captures, fees, refunds and disputes, and earlier days' settlements. When it is
positive we post one journal entry moving it from `pending` to `available` and
emit a payout instruction for it; when it is zero or negative nothing is posted
and the balance carries into the next day. Ids derive from (merchant, currency,
D), and a day's own settlement entries are left out of its computation, so a
second run yields the same entries and payouts: nothing changes. A day once
settled stays settled: events of the day that arrive later are paid with the
next day (a re-run's row then shows them as carried_in + net - payout).

A merchant is paid in its settlement currency (merchant registry). When that
differs from the payment currency, the payout converts at the latest rate of the
pair quoted at or before the cutoff (the fx-rates topic), rounded HALF_EVEN once,
through the shard's FX account so each currency balances; the rate is stored on
the entry. With no such rate the pair is refused (`refused`), nothing is posted,
and the balance carries into the next run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from schemas.ids import derive_entry_id, derive_payout_id, derive_settlement_id
from schemas.times import from_ms, to_ms
from streams.domain.fx import RateBook
from streams.domain.ledger import (
    SETTLEMENT,
    JournalEntry,
    PostingError,
    SettlementTerms,
    payout_entry,
    shard_for,
)

__all__ = ["SETTLEMENT", "PayoutInstruction", "Settlement", "SettlementRun", "cutoff_ms", "settle", "settlement_entry"]
DAY_MS = 86_400_000
MAX_PAYOUTS = 1_000_000  # per day; a bound on what one run builds in memory
_PREFIX, _PENDING = "merchant:", ":pending"
# (event_type of the entry) -> settlement column for the merchant's pending movement
# (a bank transfer is owed once settled, a crypto payment once confirmed; a return after that counts with the refunds)
_COMPONENT = {
    "captured": "captured_minor",
    "refunded": "refunded_minor",
    "dispute_opened": "disputed_minor",
    "dispute_won": "dispute_won_minor",
    "bank_settled": "captured_minor",
    "bank_reversed": "refunded_minor",
    "crypto_confirmed": "captured_minor",
}


@dataclass(frozen=True)
class Settlement:
    """One row of the `settlements` table (field names are its columns). Amounts
    are what the merchant is owed, positive; refunds, disputes and fees are
    positive amounts taken off: net = captured - refunded - disputed + dispute_won
    - fees + other; payout = max(0, carried_in + net) unless the day was settled before."""

    settlement_id: str
    day: date
    merchant_id: str
    currency: str
    captured_minor: int
    refunded_minor: int
    disputed_minor: int
    dispute_won_minor: int
    fees_minor: int
    other_minor: int  # reversals and per-payment `settled` moves to available
    net_minor: int
    carried_in_minor: int  # owed at the start of the day (negative: the merchant owes us)
    payout_minor: int  # in `currency`, taken off the merchant's pending balance
    entry_id: str | None
    payout_id: str | None
    cutoff_at: datetime
    paid_currency: str  # what the merchant receives: its settlement currency
    paid_minor: int  # payout_minor converted into paid_currency (equal when no conversion)
    fx_rate: str  # the rate used, '' when none
    refused: str  # why nothing was paid although money is owed ('' when paid or nothing owed)


@dataclass(frozen=True)
class PayoutInstruction:
    """What the bank must wire: `amount_minor` of `currency` (the merchant's
    settlement currency), for `source_minor` of `source_currency` owed."""

    payout_id: str
    settlement_id: str
    merchant_id: str
    currency: str
    amount_minor: int
    day: date
    occurred_at_ms: int
    source_currency: str
    source_minor: int
    fx_rate: str

    def __post_init__(self) -> None:
        assert self.amount_minor > 0 and self.source_minor > 0, self


@dataclass(frozen=True)
class SettlementRun:
    day: date
    settlements: tuple[Settlement, ...]
    entries: tuple[JournalEntry, ...]  # to post (already posted ones come back identical)
    payouts: tuple[PayoutInstruction, ...]


def cutoff_ms(day: date) -> int:
    return to_ms(datetime.combine(day + timedelta(days=1), time(), UTC))


def _pending_owner(account: str) -> str | None:
    if account.startswith(_PREFIX) and account.endswith(_PENDING):
        return account[len(_PREFIX) : -len(_PENDING)]
    return None


def settlement_entry(
    merchant: str, currency: str, day: date, payout_minor: int, *, shards: int, terms: SettlementTerms | None = None
) -> JournalEntry:
    """The journal entry paying out `payout_minor` for (merchant, currency, day): pending -> available
    at the day's last millisecond, converted per `terms` (default: no conversion). Deterministic:
    a settlements row is enough to re-derive it. PostingError when the terms cannot be used."""
    sid = derive_settlement_id(merchant, currency, day.isoformat())
    return payout_entry(
        derive_entry_id(sid),
        sid,
        merchant,
        shard=shard_for(merchant, shards),
        occurred_at_ms=cutoff_ms(day) - 1,
        currency=currency,
        amount_minor=payout_minor,
        terms=terms or SettlementTerms(currency),
    )


def _terms(
    merchant: str, currency: str, day: date, settlement_currency: Mapping[str, str], rates: RateBook
) -> SettlementTerms:
    target = settlement_currency.get(merchant, currency)
    if target == currency:
        return SettlementTerms(currency)
    return SettlementTerms(target, rates.at(currency, target, from_ms(cutoff_ms(day) - 1)))


def settle(
    day: date,
    entries: Iterable[JournalEntry],
    *,
    shards: int,
    settlement_currency: Mapping[str, str] | None = None,
    rates: RateBook | None = None,
) -> SettlementRun:
    """Settle `day` from the ledger's entries (any order; entries after the day are ignored).
    `settlement_currency`: merchant -> the currency it is paid in (default: the payment's);
    `rates`: the FX rates known (needed only where the two differ)."""
    settlement_currency, rates = settlement_currency or {}, rates or RateBook()
    assert shards >= 1
    end_ms = cutoff_ms(day)
    start_ms, at_ms = end_ms - DAY_MS, end_ms - 1  # a settlement entry is the day's last moment
    owed_before: dict[tuple[str, str], int] = defaultdict(int)
    parts: dict[tuple[str, str], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    posted: dict[str, JournalEntry] = {}  # this day's settlement entries from an earlier run
    for entry in entries:
        if entry.occurred_at_ms >= end_ms:
            continue
        if entry.event_type == SETTLEMENT and entry.occurred_at_ms == at_ms:
            posted[entry.entry_id] = entry
            continue
        in_day = entry.occurred_at_ms >= start_ms
        for i, line in enumerate(entry.lines):
            merchant = _pending_owner(line.account)
            if merchant is None:
                continue
            key, owed = (merchant, line.currency), -line.signed_minor
            if not in_day:
                owed_before[key] += owed
                continue
            nxt = entry.lines[i + 1] if i + 1 < len(entry.lines) else None
            if nxt is not None and nxt.account.startswith("house:fees:") and line.debit_minor:
                parts[key]["fees_minor"] += line.debit_minor
            else:
                column = _COMPONENT.get(entry.event_type, "other_minor")
                parts[key][column] += (
                    owed if column in ("captured_minor", "dispute_won_minor", "other_minor") else -owed
                )
    settlements, new_entries, payouts = [], [], []
    for key in sorted(set(parts) | {k for k, v in owed_before.items() if v}):
        merchant, currency = key
        p = parts.get(key, {})
        net = (
            p.get("captured_minor", 0)
            - p.get("refunded_minor", 0)
            - p.get("disputed_minor", 0)
            + p.get("dispute_won_minor", 0)
            - p.get("fees_minor", 0)
            + p.get("other_minor", 0)
        )
        sid = derive_settlement_id(merchant, currency, day.isoformat())
        entry_id = derive_entry_id(sid)
        payout = max(0, owed_before[key] + net)
        settled: JournalEntry | None = posted.get(entry_id)
        refused = ""
        if settled is not None:  # settled before: what was posted stands
            payout = settled.lines[0].debit_minor
        elif payout:
            try:
                settled = settlement_entry(
                    merchant,
                    currency,
                    day,
                    payout,
                    shards=shards,
                    terms=_terms(merchant, currency, day, settlement_currency, rates),
                )
            except PostingError as e:
                refused = e.reason
        paid_currency, paid, fx_rate = currency, 0, ""
        if settled is not None:
            new_entries.append(settled)
            fx = settled.fx
            paid_currency, paid, fx_rate = (
                (currency, payout, "") if fx is None else (fx.quote_currency, fx.target_minor, fx.rate)
            )
            payouts.append(
                PayoutInstruction(
                    derive_payout_id(sid), sid, merchant, paid_currency, paid, day, at_ms, currency, payout, fx_rate
                )
            )
        settlements.append(
            Settlement(
                settlement_id=sid,
                day=day,
                merchant_id=merchant,
                currency=currency,
                captured_minor=p.get("captured_minor", 0),
                refunded_minor=p.get("refunded_minor", 0),
                disputed_minor=p.get("disputed_minor", 0),
                dispute_won_minor=p.get("dispute_won_minor", 0),
                fees_minor=p.get("fees_minor", 0),
                other_minor=p.get("other_minor", 0),
                net_minor=net,
                carried_in_minor=owed_before[key],
                payout_minor=payout if settled else 0,
                entry_id=entry_id if settled else None,
                payout_id=derive_payout_id(sid) if settled else None,
                cutoff_at=from_ms(end_ms),
                paid_currency=paid_currency,
                paid_minor=paid,
                fx_rate=fx_rate,
                refused=refused,
            )
        )
        assert len(payouts) <= MAX_PAYOUTS
    return SettlementRun(day, tuple(settlements), tuple(new_entries), tuple(payouts))
