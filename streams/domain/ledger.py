"""Double-entry posting rules and account balances. Pure: no Kafka, no clock.

`post(event, shard=, settlement=)` turns one PaymentEvent into one journal entry
(or None when the event moves no money). Every entry balances per currency, its
amounts are positive integers of minor units, and its id is derived from the
event id, so a redelivered event yields the same entry and the caller's dedup by
`entry_id` posts it once. Entries are immutable: a correction is a new entry
(`reverse`). The chart of accounts and the rules are in docs/ledger.md.

Balances are signed integers per (account, currency): debit positive, credit
negative, so the sum of all balances of a currency is zero.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Container, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from schemas.errors import ReasonedError
from schemas.ids import derive_entry_id, derive_reversal_id
from schemas.money import is_asset, is_currency, is_ledger_currency
from schemas.partitioning import partition_for
from schemas.state import made
from schemas.times import from_ms
from schemas.times import to_ms as datetime_to_ms
from streams.domain import crypto
from streams.domain.fx import FxRate, convert, parse_rate
from streams.domain.splits import MAX_SPLITS, Allocation, allocation_of

# incoming: a bank transfer's funds in flight (submitted, not settled): owed to the
# merchant once they arrive, not payable before. bank_transit: the house side of it.
MERCHANT_ACCOUNTS = ("holds", "pending", "available", "incoming")
# crypto_transit: a crypto payment paid in full, not yet deep enough (the fiat side of
# the merchant's incoming). In the asset (USDC, BTC): crypto_custody holds what our
# deposit addresses hold on the chain; crypto_payer is what of it is owed to payers
# (unconfirmed, excess, late, short); crypto_owned is the house's, bought for the price.
HOUSE_ACCOUNTS = (
    "holds",
    "clearing",
    "fees",
    "settlement",
    "fx",
    "disputes",
    "bank_transit",
    "payouts_in_transit",
    "bank",
    "crypto_transit",
    "crypto_custody",
    "crypto_payer",
    "crypto_owned",
)
BANK_EVENT_TYPES = frozenset({"bank_submitted", "bank_settled", "bank_returned", "bank_reversed"})
CRYPTO_EVENT_TYPES = frozenset(crypto.MOVES)
EVENT_TYPES = (
    frozenset(
        {
            "authorized",
            "declined",
            "authorization_pending",
            "captured",
            "voided",
            "expired",
            "refunded",
            "dispute_opened",
            "dispute_won",
            "dispute_lost",
            "settled",
        }
    )
    | BANK_EVENT_TYPES
    | CRYPTO_EVENT_TYPES
)
# The asset side of a crypto event (its `crypto` record's amount), house accounts (debit, credit).
# A refund of a crypto payment sends the house's coins back to the payer.
CRYPTO_ASSET_LEGS = {
    "crypto_received": ("crypto_custody", "crypto_payer"),
    "crypto_reorged": ("crypto_payer", "crypto_custody"),
    "crypto_confirmed": ("crypto_payer", "crypto_owned"),
    "crypto_refunded": ("crypto_payer", "crypto_custody"),
    "crypto_lost": ("crypto_owned", "crypto_custody"),
    "refunded": ("crypto_owned", "crypto_custody"),
}
REVERSAL = "reversal"  # event_type of an entry that reverses another
SETTLEMENT = "settlement"  # event_type of a merchant payout entry (streams/domain/settlement.py), from no payment event
# A payout on the bank rail (streams/domain/payouts.py): sent (available -> in transit), paid
# (in transit -> bank); a failed one is the REVERSAL of its sent entry.
PAYOUT_SENT, PAYOUT_PAID = "payout_sent", "payout_paid"
MAX_MERCHANT_ID_LEN = 64
MAX_ACCOUNT_LEN = 128
MAX_LINES = 16  # the largest rule: a capture split 10 ways with a platform fee and a fee (2 + 1 + 11 + 2)
MAX_AMOUNT_MINOR = 2**63 - 1  # an Avro long; ingest bounds payments far lower

#: (account, currency) -> signed minor units, debit positive. Zero balances are absent.
Balances = dict[tuple[str, str], int]


class PostingError(ReasonedError, ValueError):
    """An event the ledger cannot post, or an entry record that is not one.
    `reason` is a stable code for the dead-letter record or the audit report."""


def merchant_account(merchant_id: str, kind: str) -> str:
    assert kind in MERCHANT_ACCOUNTS, kind
    return f"merchant:{merchant_id}:{kind}"


def house_account(kind: str, shard: int) -> str:
    assert kind in HOUSE_ACCOUNTS, kind
    assert isinstance(shard, int) and shard >= 0, shard
    return f"house:{kind}:{shard}"


def shard_for(merchant_id: str, shards: int) -> int:
    """The ledger shard of a merchant: Kafka's partitioner over the merchant id."""
    return partition_for(merchant_id.encode(), shards)


@dataclass(frozen=True)
class Line:
    account: str
    currency: str
    debit_minor: int = 0
    credit_minor: int = 0

    def __post_init__(self) -> None:
        problem = line_problem(self.account, self.currency, self.debit_minor, self.credit_minor)
        assert problem is None, f"{problem}: {self}"

    @classmethod
    def of(cls, account: str, currency: str, debit_minor: int = 0, credit_minor: int = 0) -> Line:
        """`Line(...)`, checked the same, without the frozen constructor's setattr per
        field: every payment event posts two or more lines, every ledger record reads them."""
        return made(
            cls, {"account": account, "currency": currency, "debit_minor": debit_minor, "credit_minor": credit_minor}
        )

    @property
    def signed_minor(self) -> int:
        return self.debit_minor - self.credit_minor


@dataclass(frozen=True)
class FxApplied:
    """The conversion a cross-currency entry used, kept on the entry so the books
    can be re-derived without the (compacted) rate topic's history."""

    base_currency: str
    quote_currency: str
    rate: str  # decimal string, quote major units per base major unit
    rate_as_of_ms: int
    rate_source: str
    source_minor: int
    target_minor: int
    residual: str  # exact converted value - target_minor, in target minor units


@dataclass(frozen=True)
class JournalEntry:
    entry_id: str
    event_id: str
    event_type: str
    payment_id: str
    merchant_id: str
    shard: int
    occurred_at_ms: int
    lines: tuple[Line, ...]
    fx: FxApplied | None = None
    reverses: str | None = None  # the entry_id this one reverses

    def __post_init__(self) -> None:
        problem = entry_problem(self.lines)
        assert problem is None, f"{problem}: {self.entry_id}"


def line_problem(account: Any, currency: Any, debit_minor: Any, credit_minor: Any) -> str | None:
    """None for a well-formed line, else a stable reason code."""
    if type(debit_minor) is not int or type(credit_minor) is not int:
        return "amount_not_integer"
    if (
        debit_minor < 0
        or credit_minor < 0
        or debit_minor > MAX_AMOUNT_MINOR
        or credit_minor > MAX_AMOUNT_MINOR
        or (debit_minor > 0) == (credit_minor > 0)
    ):
        return "bad_amount"  # exactly one side positive, the other zero
    if not is_ledger_currency(currency):
        return "invalid_currency"
    if not isinstance(account, str) or not 0 < len(account) <= MAX_ACCOUNT_LEN or _KEY_SEP in account:
        return "invalid_account"
    return None


def imbalance(lines: Iterable[Line]) -> dict[str, int]:
    """Debits minus credits per currency, only the currencies that do not balance."""
    net: dict[str, int] = {}
    for line in lines:
        net[line.currency] = net.get(line.currency, 0) + line.debit_minor - line.credit_minor
    return {c: n for c, n in net.items() if n}


def entry_problem(lines: tuple[Line, ...]) -> str | None:
    """None for a well-formed entry, else a stable reason code."""
    if not lines:
        return "no_lines"
    if len(lines) > MAX_LINES:
        return "too_many_lines"
    return "unbalanced" if imbalance(lines) else None


# --- posting rules ---


@dataclass(frozen=True)
class SettlementTerms:
    """How a merchant is paid: in `currency`, converted at `rate` (payment
    currency -> settlement currency) when the two differ."""

    currency: str
    rate: FxRate | None = None


def post(event: Mapping[str, Any], *, shard: int, settlement: SettlementTerms | None = None) -> JournalEntry | None:
    """The journal entry of one PaymentEvent, or None for an event that moves no
    money (declined, authorization_pending, a zero amount without a fee).

    `shard` is the ledger partition the entry is posted in (its house accounts);
    `settlement` is required for `settled` events. Raises PostingError on an event
    that does not fit the contract.
    """
    etype, merchant, currency, amount, fee = _checked(event)
    if not isinstance(shard, int) or isinstance(shard, bool) or shard < 0:
        raise PostingError("invalid_shard", f"shard must be a non-negative int, got {shard!r}")

    def m(kind: str) -> str:
        return merchant_account(merchant, kind)

    def h(kind: str) -> str:
        return house_account(kind, shard)

    lines: list[Line] = []

    def move(debit: str, credit: str, amount_minor: int, cur: str = currency) -> None:
        if amount_minor:
            lines.extend(
                (Line.of(debit, cur, debit_minor=amount_minor), Line.of(credit, cur, credit_minor=amount_minor))
            )

    split = _split_of(event, etype, amount)

    def pending(house: str, credit: bool) -> None:
        """`amount` between a house account and the merchant's pending balance, or
        each split account's (its part; the platform's fee part to the merchant's)."""
        if split is None:
            move(house, m("pending"), amount) if credit else move(m("pending"), house, amount)
            return
        parts = [(merchant_account(acct, "pending"), part) for acct, part in split.splits]
        parts += [(m("pending"), split.platform_minor)] if split.platform_minor else []
        side = "credit_minor" if credit else "debit_minor"
        lines.append(Line.of(house, currency, **{"debit_minor" if credit else "credit_minor": amount}))
        lines.extend(Line.of(acct, currency, **{side: part}) for acct, part in parts)

    fx = None
    if etype == "authorized":
        move(h("holds"), m("holds"), amount)
    elif etype == "captured":
        move(m("holds"), h("holds"), amount)  # the captured part of the hold is used up
        if amount:
            pending(h("clearing"), credit=True)
    elif etype in ("voided", "expired"):
        move(m("holds"), h("holds"), amount)  # the released rest of the hold
    elif etype == "refunded":
        pending(h("clearing"), credit=False)
    elif etype == "dispute_opened":
        pending(h("disputes"), credit=False)  # withdrawn from the merchant while it is open
    elif etype == "dispute_won":
        pending(h("disputes"), credit=True)  # returned
    elif etype == "dispute_lost":
        move(h("disputes"), h("clearing"), amount)  # the network keeps it: the acquirer owes us less
    elif etype == "settled":
        fx = _settle(settlement, currency, amount, move, m, h)
    elif etype == "bank_submitted":
        move(h("bank_transit"), m("incoming"), amount)  # in flight: owed once the bank settles it
    elif etype == "bank_settled":
        move(m("incoming"), m("pending"), amount)  # arrived: payable with the merchant's next settlement
        move(h("clearing"), h("bank_transit"), amount)
    elif etype == "bank_returned":
        move(m("incoming"), h("bank_transit"), amount)  # returned before it arrived: the submission unwinds
    elif etype == "bank_reversed":
        # Returned after it arrived (and maybe after the merchant was paid): taken back from
        # the merchant's pending balance, which may go negative (docs/ledger.md).
        move(m("pending"), h("clearing"), amount)
    elif etype == "crypto_pending":
        move(h("crypto_transit"), m("incoming"), amount)  # paid in full: owed once deep enough
    elif etype == "crypto_unpending":
        move(m("incoming"), h("crypto_transit"), amount)  # a reorg took the payment away again
    elif etype == "crypto_confirmed":
        move(m("incoming"), m("pending"), amount)  # final: payable with the merchant's next settlement
        move(h("clearing"), h("crypto_transit"), amount)  # the coins' sale will bring it in
    crypto = _crypto_of(event, etype)
    if crypto is not None:
        debit, credit = CRYPTO_ASSET_LEGS[etype]
        move(h(debit), h(credit), crypto[1], crypto[0])
    # declined, authorization_pending: no money moves (see docs/ledger.md)
    move(m("pending"), h("fees"), fee)

    if not lines:
        return None
    return JournalEntry(
        entry_id=derive_entry_id(event["event_id"]),
        event_id=event["event_id"],
        event_type=etype,
        payment_id=event["payment_id"],
        merchant_id=merchant,
        shard=shard,
        occurred_at_ms=to_ms(event["occurred_at"]),
        lines=tuple(lines),
        fx=fx,
    )


def _crypto_of(event: Mapping[str, Any], etype: str) -> tuple[str, int] | None:
    """(asset, amount) of a crypto event's asset side; None when it has none."""
    crypto = event.get("crypto")
    if crypto is None or etype not in CRYPTO_ASSET_LEGS:
        if etype in CRYPTO_ASSET_LEGS and etype != "refunded":
            raise PostingError("missing_crypto", f"a {etype} event needs its crypto record")
        return None
    try:
        asset, amount = crypto["asset"], crypto["amount_minor"]
    except (KeyError, TypeError):
        raise PostingError("invalid_crypto", "crypto must be a record with asset and amount_minor") from None
    if not is_asset(asset):
        raise PostingError("invalid_crypto", f"not a crypto asset: {str(asset)[:16]!r}")
    if type(amount) is not int or not 0 <= amount <= MAX_AMOUNT_MINOR:
        raise PostingError(
            "invalid_amount", f"crypto.amount_minor must be a non-negative integer, got {amount!r}"[:120]
        )
    return asset, amount


_SPLIT_TYPES = frozenset({"captured", "refunded", "dispute_opened", "dispute_won"})


def _split_of(event: Mapping[str, Any], etype: str, amount: int) -> Allocation | None:
    """How a split payment's event divides among its accounts (None: all the merchant's)."""
    if etype not in _SPLIT_TYPES or not amount:
        return None
    try:
        split = allocation_of(event)
    except (KeyError, TypeError, AttributeError):
        raise PostingError("invalid_splits", "splits must be {merchant_id, amount_minor} records") from None
    if split is None:
        return None
    if len(split.splits) > MAX_SPLITS:
        raise PostingError("invalid_splits", f"more than {MAX_SPLITS} split accounts")
    for acct, part in split.splits:
        if not isinstance(acct, str) or not 0 < len(acct) <= MAX_MERCHANT_ID_LEN or not acct.isprintable():
            raise PostingError("invalid_splits", "a split's merchant_id is empty, too long or not printable")
        if type(part) is not int or part <= 0:
            raise PostingError("invalid_splits", f"split part {part!r} is not a positive integer"[:120])
    if type(split.platform_minor) is not int or split.platform_minor < 0:
        raise PostingError("invalid_splits", "platform_fee_minor must be a non-negative integer")
    if split.total_minor != amount:
        raise PostingError("split_mismatch", f"parts sum to {split.total_minor}, the event moves {amount}")
    return split


def _settle(settlement, currency, amount, move, m, h) -> FxApplied | None:  # type: ignore[no-untyped-def]
    if settlement is None:
        raise PostingError("missing_settlement_terms", "a settled event needs the merchant's settlement terms")
    move(h("settlement"), h("clearing"), amount)  # the acquirer paid what it owed
    return _pay_merchant(settlement, currency, amount, move, m, h, refuse_zero=False)


def _pay_merchant(terms, currency, amount, move, m, h, *, refuse_zero: bool) -> FxApplied | None:  # type: ignore[no-untyped-def]
    """Move `amount` of `currency` from the merchant's pending to its available
    balance in the terms' currency, through the FX account when the two differ.
    `refuse_zero`: refuse a conversion that rounds to nothing (a payout leaves it
    owed); otherwise the FX account keeps it and the entry records the residual."""
    if not is_currency(terms.currency):
        raise PostingError("invalid_currency", f"settlement currency {terms.currency!r}")
    if terms.currency == currency:
        move(m("pending"), m("available"), amount)
        return None
    rate = terms.rate
    if rate is None:
        raise PostingError("missing_fx_rate", f"settling {currency} in {terms.currency} needs a rate")
    if (rate.base_currency, rate.quote_currency) != (currency, terms.currency):
        raise PostingError("rate_pair_mismatch", f"{rate.key} for {currency}/{terms.currency}")
    conv = convert(amount, rate)
    if conv.target_minor > MAX_AMOUNT_MINOR:
        raise PostingError("amount_too_large", f"{amount} {currency} is {conv.target_minor} {terms.currency}")
    if conv.target_minor == 0 and refuse_zero:  # the merchant would give money and get nothing: leave it owed
        raise PostingError(
            "converts_to_zero", f"{amount} {currency} is less than half a minor unit of {terms.currency}"
        )
    # Each currency balances on its own: the FX desk takes the payment currency
    # from the merchant and gives the settlement currency, rounded HALF_EVEN.
    move(m("pending"), h("fx"), amount)
    move(h("fx"), m("available"), conv.target_minor, terms.currency)
    return FxApplied(
        base_currency=rate.base_currency,
        quote_currency=rate.quote_currency,
        rate=rate.rate_text,
        rate_as_of_ms=to_ms(rate.as_of),
        rate_source=rate.source,
        source_minor=conv.source_minor,
        target_minor=conv.target_minor,
        residual=format(conv.residual, "f"),
    )


def payout_entry(
    entry_id: str,
    event_id: str,
    merchant_id: str,
    *,
    shard: int,
    occurred_at_ms: int,
    currency: str,
    amount_minor: int,
    terms: SettlementTerms,
) -> JournalEntry:
    """A merchant payout (the daily settlement): `amount_minor` of `currency` moves
    from pending to available, converted per `terms`. PostingError when the terms
    cannot be used (no rate for the pair, a foreign pair, an overflow)."""
    assert amount_minor > 0, amount_minor

    def m(kind: str) -> str:
        return merchant_account(merchant_id, kind)

    def h(kind: str) -> str:
        return house_account(kind, shard)

    lines: list[Line] = []

    def move(debit: str, credit: str, amount: int, cur: str = currency) -> None:
        lines.extend((Line(debit, cur, debit_minor=amount), Line(credit, cur, credit_minor=amount)))

    fx = _pay_merchant(terms, currency, amount_minor, move, m, h, refuse_zero=True)
    return JournalEntry(
        entry_id=entry_id,
        event_id=event_id,
        event_type=SETTLEMENT,
        payment_id=event_id,
        merchant_id=merchant_id,
        shard=shard,
        occurred_at_ms=occurred_at_ms,
        lines=tuple(lines),
        fx=fx,
    )


def _checked(event: Mapping[str, Any]) -> tuple[str, str, str, int, int]:
    try:
        etype, merchant, currency = event["type"], event["merchant_id"], event["currency"]
        amount, fee = event["amount_minor"], event.get("fee_minor", 0)
        event_id, payment_id, occurred_at = event["event_id"], event["payment_id"], event["occurred_at"]
    except KeyError as e:
        raise PostingError("missing_field", f"event has no {e.args[0]!r}") from None
    if etype not in EVENT_TYPES:
        raise PostingError("unknown_event_type", repr(etype)[:80])
    if not isinstance(merchant, str) or not 0 < len(merchant) <= MAX_MERCHANT_ID_LEN or not merchant.isprintable():
        raise PostingError("invalid_merchant_id", "empty, too long or not printable")
    if not is_currency(currency):
        raise PostingError("invalid_currency", repr(currency)[:16])
    for name, value in (("amount_minor", amount), ("fee_minor", fee)):
        if type(value) is not int or not 0 <= value <= MAX_AMOUNT_MINOR:
            raise PostingError("invalid_amount", f"{name} must be a non-negative integer, got {value!r}"[:120])
    if not isinstance(event_id, str) or not event_id or not isinstance(payment_id, str):
        raise PostingError("missing_field", "event_id and payment_id must be non-empty strings")
    try:
        to_ms(occurred_at)
    except (TypeError, ValueError) as e:
        raise PostingError("invalid_time", str(e)) from None
    return etype, merchant, currency, amount, fee


def reverse(entry: JournalEntry, *, correction_id: str, occurred_at_ms: int) -> JournalEntry:
    """A new entry undoing `entry` (debits and credits swapped). `correction_id`
    names the correction, so re-issuing the same correction yields the same id;
    the time comes from the correction, never the clock."""
    assert correction_id and entry.reverses is None, "reverse the original, not a reversal"
    return JournalEntry(
        entry_id=derive_reversal_id(entry.entry_id, correction_id),
        event_id=entry.event_id,
        event_type=REVERSAL,
        payment_id=entry.payment_id,
        merchant_id=entry.merchant_id,
        shard=entry.shard,
        occurred_at_ms=occurred_at_ms,
        lines=tuple(
            Line(x.account, x.currency, debit_minor=x.credit_minor, credit_minor=x.debit_minor) for x in entry.lines
        ),
        fx=entry.fx,
        reverses=entry.entry_id,
    )


# --- balances ---


def deltas(entry: JournalEntry) -> dict[tuple[str, str], int]:
    """What the entry adds to each (account, currency) balance; the RocksDB table
    applies these key by key."""
    out: dict[tuple[str, str], int] = {}
    for line in entry.lines:
        key = (line.account, line.currency)
        out[key] = out.get(key, 0) + line.debit_minor - line.credit_minor
    return out


def apply(balances: Mapping[tuple[str, str], int], entry: JournalEntry) -> Balances:
    """The balances after `entry` (a new dict; `balances` is left as it was)."""
    out = dict(balances)
    add_into(out, entry)
    return out


def add_into(balances: Balances, entry: JournalEntry) -> None:
    """In-place `apply`, for folds over millions of entries (replay)."""
    for key, delta in deltas(entry).items():
        total = balances.get(key, 0) + delta
        if total:
            balances[key] = total
        else:
            balances.pop(key, None)


def apply_once(
    balances: Mapping[tuple[str, str], int], applied: Container[str], entry: JournalEntry
) -> tuple[Mapping[tuple[str, str], int], bool]:
    """Apply `entry` unless its id is in `applied` (the caller's dedup table).
    Returns (balances, applied_now); the caller records entry_id when applied_now."""
    if entry.entry_id in applied:
        return balances, False
    return apply(balances, entry), True


def totals_by_currency(balances: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Sum of all balances per currency, only the non-zero ones: empty when the books balance."""
    out: dict[str, int] = defaultdict(int)
    for (_, currency), amount in balances.items():
        out[currency] += amount
    return {c: n for c, n in out.items() if n}


# RocksDB table encoding: key "<account>\x1f<currency>", value the balance as a
# minimal two's-complement big-endian integer (1 byte for small balances, and no
# 64-bit ceiling on a house account's running total).
_KEY_SEP = "\x1f"
MAX_BALANCE_BYTES = 16


def balance_key(account: str, currency: str) -> bytes:
    assert _KEY_SEP not in account and is_ledger_currency(currency), (account, currency)
    return f"{account}{_KEY_SEP}{currency}".encode()


def parse_balance_key(key: bytes) -> tuple[str, str]:
    account, sep, currency = key.decode().rpartition(_KEY_SEP)
    if not sep or not account or not is_ledger_currency(currency):
        raise ValueError(f"not a balance key: {key[:80]!r}")
    return account, currency


def encode_balance(amount_minor: int) -> bytes:
    assert type(amount_minor) is int
    magnitude = amount_minor if amount_minor >= 0 else ~amount_minor  # ~n = -n-1: -128 fits one byte
    data = amount_minor.to_bytes(magnitude.bit_length() // 8 + 1, "big", signed=True)
    assert len(data) <= MAX_BALANCE_BYTES, "balance beyond 2**127 minor units"
    return data


def decode_balance(data: bytes) -> int:
    if not 0 < len(data) <= MAX_BALANCE_BYTES:
        raise ValueError(f"balance value of {len(data)} bytes")
    return int.from_bytes(data, "big", signed=True)


# --- Avro records (schemas/avro/LedgerEntry.avsc) ---


def to_ms(value: datetime | int) -> int:
    """Epoch milliseconds of an Avro timestamp-millis (decoded: an aware datetime)."""
    if isinstance(value, datetime):
        return datetime_to_ms(value)
    if type(value) is int:
        return value
    raise TypeError(f"not a timestamp: {type(value).__name__}")


def settlement_of(entry: JournalEntry) -> SettlementTerms | None:
    """The settlement terms a `settled` or payout entry was posted with (None for
    other entries), so an auditor can re-post it and compare."""
    if entry.event_type not in ("settled", SETTLEMENT):
        return None
    fx = entry.fx
    if fx is None:
        return SettlementTerms(entry.lines[0].currency)
    try:
        rate = FxRate(
            fx.base_currency, fx.quote_currency, parse_rate(fx.rate), from_ms(fx.rate_as_of_ms), fx.rate_source
        )
    except AssertionError as e:
        raise PostingError("invalid_fx", str(e)[:200]) from None
    return SettlementTerms(fx.quote_currency, rate)


def entry_to_record(entry: JournalEntry) -> dict[str, Any]:
    fx = entry.fx
    return {
        "entry_id": entry.entry_id,
        "event_id": entry.event_id,
        "event_type": entry.event_type,
        "payment_id": entry.payment_id,
        "merchant_id": entry.merchant_id,
        "shard": entry.shard,
        "occurred_at": from_ms(entry.occurred_at_ms),
        "lines": [
            {"account": x.account, "currency": x.currency, "debit_minor": x.debit_minor, "credit_minor": x.credit_minor}
            for x in entry.lines
        ],
        "fx": None
        if fx is None
        else {
            "base_currency": fx.base_currency,
            "quote_currency": fx.quote_currency,
            "rate": fx.rate,
            "rate_as_of": from_ms(fx.rate_as_of_ms),
            "rate_source": fx.rate_source,
            "source_minor": fx.source_minor,
            "target_minor": fx.target_minor,
            "residual": fx.residual,
        },
        "reverses": entry.reverses,
    }


def entry_from_record(record: Mapping[str, Any]) -> JournalEntry:
    """A decoded LedgerEntry record as an entry; PostingError (reason code) if it is
    not a well-formed, balanced entry. Never an AssertionError: records come from a topic."""
    try:
        lines = tuple(
            _line_from(x["account"], x["currency"], x["debit_minor"], x["credit_minor"]) for x in record["lines"]
        )
        problem = entry_problem(lines)
        if problem is not None:
            raise PostingError(problem, f"entry {record['entry_id']}")
        fx = record.get("fx")
        # Its lines checked just above: JournalEntry's own check would repeat it.
        return made(
            JournalEntry,
            {
                "entry_id": record["entry_id"],
                "event_id": record["event_id"],
                "event_type": record["event_type"],
                "payment_id": record["payment_id"],
                "merchant_id": record["merchant_id"],
                "shard": record["shard"],
                "occurred_at_ms": to_ms(record["occurred_at"]),
                "lines": lines,
                "fx": None
                if fx is None
                else FxApplied(
                    fx["base_currency"],
                    fx["quote_currency"],
                    fx["rate"],
                    to_ms(fx["rate_as_of"]),
                    fx["rate_source"],
                    fx["source_minor"],
                    fx["target_minor"],
                    fx["residual"],
                ),
                "reverses": record.get("reverses"),
            },
            check=False,
        )
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, PostingError):
            raise
        raise PostingError("malformed_entry", f"{type(e).__name__}: {e}"[:200]) from None


def _line_from(account: Any, currency: Any, debit: Any, credit: Any) -> Line:
    problem = line_problem(account, currency, debit, credit)
    if problem is not None:
        raise PostingError(problem, f"line on {str(account)[:80]}")
    # Checked just above: Line's own check would repeat it.
    return made(
        Line, {"account": account, "currency": currency, "debit_minor": debit, "credit_minor": credit}, check=False
    )
