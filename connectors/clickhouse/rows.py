"""Pure mapping from decoded records to read-model rows. No client, no clock.

`rows_for(kind, record)` takes one decoded record (a `schemas.codec.Codec(...)
.decode` dict, or a settlement / reconciliation dict from streams) and returns
the rows it adds, each `Row(table, values)` in the column order of `COLUMNS`
(the order of migrations/). Everything a row is keyed by comes from the record,
so the same record always yields the same rows: that is what makes re-delivery
harmless (see docs/decisions.md, "Read models").

A record that cannot be mapped raises `RowError(reason, detail)`, for the sink's
dead-letter record; nothing else is raised for any dict input.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from schemas.cards import contains_pan
from schemas.errors import ReasonedError
from schemas.money import is_asset, is_currency, is_ledger_currency
from schemas.times import from_ms

COLUMNS: dict[str, tuple[str, ...]] = {
    "payments": (
        "payment_id",
        "merchant_id",
        "currency",
        "status",
        "authorized_minor",
        "captured_minor",
        "refunded_minor",
        "version",
        "last_event_id",
        "last_event_type",
        "reason_code",
        "provider",
        "card_token",
        "card_bin",
        "card_last4",
        "updated_at",
        "method",
        "asset",
    ),
    "payment_events": (
        "event_id",
        "type",
        "payment_id",
        "merchant_id",
        "command_id",
        "currency",
        "amount_minor",
        "fee_minor",
        "payment_status",
        "authorized_minor",
        "captured_minor",
        "refunded_minor",
        "version",
        "provider",
        "provider_ref",
        "reason_code",
        "card_token",
        "card_bin",
        "card_last4",
        "chain_seq",
        "occurred_at",
        "method",
        "asset",
        "asset_amount_minor",
        "asset_due_minor",
        "crypto_address",
        "crypto_tx_ids",
        "quote_expires_at",
        "attempts.provider",
        "attempts.status",
        "attempts.reason_code",
        "attempts.retryable",
    ),
    "ledger_entries": (
        "entry_id",
        "line_no",
        "event_id",
        "event_type",
        "payment_id",
        "merchant_id",
        "shard",
        "account",
        "currency",
        "debit_minor",
        "credit_minor",
        "reverses",
        "fx_rate",
        "occurred_at",
    ),
    "fraud_decisions": (
        "payment_id",
        "merchant_id",
        "currency",
        "action",
        "reason_code",
        "event_id",
        "event_type",
        "card_token",
        "card_bin",
        "occurred_at",
    ),
    "disputes": (
        "event_id",
        "payment_id",
        "merchant_id",
        "stage",
        "currency",
        "amount_minor",
        "reason_code",
        "occurred_at",
    ),
    "payment_outcomes": (
        "outcome_id",
        "command_id",
        "kind",
        "merchant_id",
        "idempotency_key",
        "payment_id",
        "status",
        "reason_code",
        "reason_detail",
        "payment_status",
        "amount_minor",
        "currency",
        "authorized_minor",
        "captured_minor",
        "refunded_minor",
        "card_bin",
        "card_last4",
        "occurred_at",
        "dispute_evidence",
    ),
    "settlements": (
        "settlement_id",
        "day",
        "merchant_id",
        "currency",
        "captured_minor",
        "refunded_minor",
        "disputed_minor",
        "dispute_won_minor",
        "fees_minor",
        "other_minor",
        "net_minor",
        "carried_in_minor",
        "payout_minor",
        "entry_id",
        "payout_id",
        "cutoff_at",
        "paid_currency",
        "paid_minor",
        "fx_rate",
        "refused",
    ),
    "payouts": (
        "payout_id",
        "settlement_id",
        "merchant_id",
        "currency",
        "amount_minor",
        "day",
        "status",
        "sent_at",
        "answered_at",
        "failure_reason",
        "version",
    ),
    "reconciliation": (
        "day",
        "provider",
        "provider_ref",
        "payment_id",
        "status",
        "currency",
        "report_amount_minor",
        "ledger_amount_minor",
        "report_fee_minor",
        "ledger_fee_minor",
        "detail",
    ),
}

KINDS = ("payment_event", "ledger_entry", "payment_outcome", "settlement", "reconciliation", "payout")
PAYOUT_STATUSES = {
    "held": 0,
    "sent": 1,
    "paid": 2,
    "failed": 2,
}  # -> the row's version: a send replaces a hold, an answer the send
DISPUTE_STAGES = {"dispute_opened": "opened", "dispute_won": "won", "dispute_lost": "lost"}
FRAUD_DECLINE_REASON = "fraud_suspected"  # streams/domain/payments.py: a create the fraud hook declined
MAX_STRING_LEN = 1024  # longest text kept in a column (reason details are cut, ids refused)
MAX_EVIDENCE_CHARS = 4_000  # streams/stages/ingest.py EVIDENCE_MAX_CHARS (connectors sit below streams)
MAX_LINES = 16  # streams.domain.ledger.MAX_LINES: an entry with more is not one the ledger posts
MAX_TX_IDS = 64  # chain transactions one crypto event names (a payer sends one or two)
MAX_ATTEMPTS = 16  # provider calls one authorization records (the router makes a handful at most)
ATTEMPT_STATUSES = ("approved", "declined", "unknown")  # connectors/providers/simulated.py ProviderResult
_INT64 = (-(2**63), 2**63 - 1)


class RowError(ReasonedError, ValueError):
    """A record the read models cannot take. `reason` is a stable code for the DLQ."""


@dataclass(frozen=True)
class Row:
    table: str
    values: tuple[Any, ...]

    def __post_init__(self) -> None:
        assert len(self.values) == len(COLUMNS[self.table]), self.table


def rows_for(kind: str, record: Mapping[str, Any]) -> list[Row]:
    """The rows one record adds. `kind`: payment_event | ledger_entry | payment_outcome
    | settlement | reconciliation."""
    if kind not in _MAPPERS:
        raise RowError("unknown_kind", repr(kind)[:40])
    if not isinstance(record, Mapping):
        raise RowError("not_a_record", type(record).__name__)
    try:
        rows = _MAPPERS[kind](record)
    except KeyError as e:
        raise RowError("missing_field", f"{kind} has no {str(e.args[0])[:40]!r}") from None
    except (TypeError, AttributeError) as e:  # a container where a value belongs, or the reverse
        raise RowError("malformed_record", f"{kind}: {type(e).__name__}: {e}"[:200]) from None
    for row in rows:
        for name, value in zip(COLUMNS[row.table], row.values):
            if isinstance(value, str) and contains_pan(value):
                raise RowError("pan_in_record", f"{row.table}.{name} holds a card number")
    return rows


# --- field checks: a bad value is a RowError naming the field ---


def _text(r: Mapping[str, Any], name: str, *, optional: bool = False, cut: bool = False) -> str | None:
    value = r[name]
    if value is None and optional:
        return None
    if not isinstance(value, str) or (not value and not optional):
        raise RowError("invalid_field", f"{name} must be a non-empty string")
    if len(value) > MAX_STRING_LEN:
        if not cut:
            raise RowError("invalid_field", f"{name} longer than {MAX_STRING_LEN}")
        value = value[:MAX_STRING_LEN]
    return value


def _int(r: Mapping[str, Any], name: str, *, optional: bool = False, low: int = _INT64[0]) -> int | None:
    value = r[name] if name in r or not optional else None
    if value is None and optional:
        return None
    if type(value) is not int or not low <= value <= _INT64[1]:
        raise RowError(
            "invalid_amount" if name.endswith("_minor") else "invalid_field",
            f"{name} must be an integer >= {low}, got {str(value)[:40]}",
        )
    return value


def _currency(
    r: Mapping[str, Any], name: str = "currency", *, optional: bool = False, asset: bool = False
) -> str | None:
    value = r[name]
    if value is None and optional:
        return None
    if not (is_ledger_currency(value) if asset else is_currency(value)):
        raise RowError("invalid_currency", f"{name}={str(value)[:16]!r}")
    return value


def _time(r: Mapping[str, Any], name: str) -> datetime:
    """Avro timestamp-millis: an aware datetime once decoded, or epoch ms."""
    value = r[name]
    if type(value) is int:
        try:
            return from_ms(value)
        except OverflowError:  # past year 9999: no time a record can carry
            raise RowError("invalid_time", f"{name} out of range") from None
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(UTC)
    raise RowError("invalid_time", f"{name} must be an aware datetime or epoch ms")


def _card(r: Mapping[str, Any]) -> tuple[str | None, str | None, str | None]:
    token, bin_, last4 = r.get("card_token"), r.get("card_bin"), r.get("card_last4")
    if token is not None and not (isinstance(token, str) and token.startswith("tok_") and len(token) <= 128):
        raise RowError("invalid_card", "card_token is not a token")
    if bin_ is not None and not (isinstance(bin_, str) and bin_.isdigit() and 6 <= len(bin_) <= 8):
        raise RowError("invalid_card", "card_bin must be 6-8 digits")
    if last4 is not None and not (isinstance(last4, str) and last4.isdigit() and len(last4) == 4):
        raise RowError("invalid_card", "card_last4 must be 4 digits")
    return token, bin_, last4


# --- mappers ---


def _payment_event(r: Mapping[str, Any]) -> list[Row]:
    event_id, etype, payment_id = _text(r, "event_id"), _text(r, "type"), _text(r, "payment_id")
    merchant_id, currency = _text(r, "merchant_id"), _currency(r)
    occurred_at, version = _time(r, "occurred_at"), _int(r, "version", low=1)
    status, reason = _text(r, "payment_status"), _text(r, "reason_code", optional=True)
    totals = [_int(r, n, low=0) for n in ("authorized_minor", "captured_minor", "refunded_minor")]
    amount, fee = _int(r, "amount_minor", low=0), _int(r, "fee_minor", optional=True, low=0) or 0
    provider = _text(r, "provider", optional=True)
    token, bin_, last4 = _card(r)
    method = _text(r, "method", optional=True) or "card"  # null: a card (PaymentEvent before version 3)
    crypto = _crypto(r)
    rows = [
        Row(
            "payment_events",
            (
                event_id,
                etype,
                payment_id,
                merchant_id,
                _text(r, "command_id", optional=True),
                currency,
                amount,
                fee,
                status,
                *totals,
                version,
                provider,
                _text(r, "provider_ref", optional=True),
                reason,
                token,
                bin_,
                last4,
                _int(r, "chain_seq", optional=True, low=0) or 0,
                occurred_at,
                method,
                *crypto,
                *_attempts(r),
            ),
        ),
        Row(
            "payments",
            (
                payment_id,
                merchant_id,
                currency,
                status,
                *totals,
                version,
                event_id,
                etype,
                reason,
                provider,
                token,
                bin_,
                last4,
                occurred_at,
                method,
                crypto[0],
            ),
        ),
    ]
    if version == 1:  # the create's first event carries the fraud hook's verdict
        action = "decline" if etype == "declined" and reason == FRAUD_DECLINE_REASON else "approve"
        rows.append(
            Row(
                "fraud_decisions",
                (
                    payment_id,
                    merchant_id,
                    currency,
                    action,
                    reason,
                    event_id,
                    etype,
                    token,
                    bin_,
                    occurred_at,
                ),
            )
        )
    if etype in DISPUTE_STAGES:
        rows.append(
            Row(
                "disputes",
                (
                    event_id,
                    payment_id,
                    merchant_id,
                    DISPUTE_STAGES[etype],
                    currency,
                    amount,
                    reason,
                    occurred_at,
                ),
            )
        )
    return rows


def _crypto(r: Mapping[str, Any]) -> tuple[str, int, int, str, list[str], datetime | None]:
    """The crypto columns of a payment event: (asset, amount, due, address, tx ids,
    quote expiry); empty for an event without a `crypto` record (PaymentEvent before v4)."""
    c = r.get("crypto")
    if c is None:
        return "", 0, 0, "", [], None
    if not isinstance(c, Mapping):
        raise RowError("invalid_field", "crypto must be a record")
    asset = c["asset"]
    if not is_asset(asset):
        raise RowError("invalid_currency", f"crypto.asset={str(asset)[:16]!r}")
    tx_ids = c["tx_ids"]
    if (
        not isinstance(tx_ids, list)
        or len(tx_ids) > MAX_TX_IDS
        or not all(isinstance(t, str) and 0 < len(t) <= MAX_STRING_LEN for t in tx_ids)
    ):
        raise RowError("invalid_field", f"crypto.tx_ids must be at most {MAX_TX_IDS} transaction ids")
    return (
        asset,
        _int(c, "amount_minor", low=0),
        _int(c, "due_minor", low=0),
        _text(c, "address"),
        list(tx_ids),
        _time(c, "expires_at"),
    )


def _attempts(r: Mapping[str, Any]) -> tuple[list[str], list[str], list[str], list[bool]]:
    """The routing attempts' columns of a payment event (PaymentEvent v5 `attempts`), one
    element per provider call: providers, statuses, reason codes ('' when approved),
    retryable. Empty for an event without them (one call, or not an authorization)."""
    attempts = r.get("attempts")
    if attempts is None:
        return [], [], [], []
    if not isinstance(attempts, list) or len(attempts) > MAX_ATTEMPTS:
        raise RowError("invalid_field", f"attempts must be a list of at most {MAX_ATTEMPTS} calls")
    cols: tuple[list[str], list[str], list[str], list[bool]] = ([], [], [], [])
    for a in attempts:
        if not isinstance(a, Mapping) or a["status"] not in ATTEMPT_STATUSES or type(a["retryable"]) is not bool:
            raise RowError("invalid_field", f"attempts: each call has a provider, a status among {ATTEMPT_STATUSES}")
        cols[0].append(_text(a, "provider"))
        cols[1].append(a["status"])
        cols[2].append(_text(a, "reason_code", optional=True, cut=True) or "")
        cols[3].append(a["retryable"])
    return cols


def _ledger_entry(r: Mapping[str, Any]) -> list[Row]:
    entry_id, event_id, etype = _text(r, "entry_id"), _text(r, "event_id"), _text(r, "event_type")
    payment_id, merchant_id = _text(r, "payment_id"), _text(r, "merchant_id")
    shard, occurred_at = _int(r, "shard", low=0), _time(r, "occurred_at")
    reverses = _text(r, "reverses", optional=True) if "reverses" in r else None
    fx = r.get("fx")
    if fx is not None and not isinstance(fx, Mapping):
        raise RowError("invalid_field", "fx must be a record")
    fx_rate = (
        None
        if fx is None
        else f"{_currency(fx, 'base_currency')}/{_currency(fx, 'quote_currency')} {_text(fx, 'rate')}"
    )
    lines = r["lines"]
    if not isinstance(lines, list) or not 0 < len(lines) <= MAX_LINES:
        raise RowError("invalid_entry", f"an entry has 1..{MAX_LINES} lines")
    rows, net = [], {}
    for no, line in enumerate(lines):
        if not isinstance(line, Mapping):
            raise RowError("invalid_entry", f"line {no} is not a record")
        currency = _currency(line, asset=True)  # a house crypto account keeps an asset
        debit, credit = _int(line, "debit_minor", low=0), _int(line, "credit_minor", low=0)
        if (debit > 0) == (credit > 0):
            raise RowError("invalid_amount", f"line {no}: exactly one of debit and credit is positive")
        net[currency] = net.get(currency, 0) + debit - credit
        rows.append(
            Row(
                "ledger_entries",
                (
                    entry_id,
                    no,
                    event_id,
                    etype,
                    payment_id,
                    merchant_id,
                    shard,
                    _text(line, "account"),
                    currency,
                    debit,
                    credit,
                    reverses,
                    fx_rate,
                    occurred_at,
                ),
            )
        )
    if any(net.values()):
        raise RowError("unbalanced", f"entry {entry_id} does not balance per currency")
    return rows


def _payment_outcome(r: Mapping[str, Any]) -> list[Row]:
    _, bin_, last4 = _card(r)
    return [
        Row(
            "payment_outcomes",
            (
                _text(r, "outcome_id"),
                _text(r, "command_id"),
                _text(r, "kind"),
                _text(r, "merchant_id"),
                _text(r, "idempotency_key"),
                _text(r, "payment_id", optional=True),
                _text(r, "status"),
                _text(r, "reason_code", optional=True),
                _text(r, "reason_detail", optional=True, cut=True),
                _text(r, "payment_status", optional=True),
                _int(r, "amount_minor", optional=True, low=0),
                _currency(r, optional=True),
                *(
                    _int(r, n, optional=True, low=0) or 0
                    for n in ("authorized_minor", "captured_minor", "refunded_minor")
                ),
                bin_,
                last4,
                _time(r, "occurred_at"),
                _evidence(r),
            ),
        )
    ]


def _evidence(r: Mapping[str, Any]) -> str | None:
    """A dispute_evidence outcome's text (PaymentOutcome v2; absent before): ingest bounds it."""
    value = r.get("dispute_evidence")
    if value is not None and (not isinstance(value, str) or len(value) > MAX_EVIDENCE_CHARS):
        raise RowError("invalid_field", f"dispute_evidence must be a string of at most {MAX_EVIDENCE_CHARS}")
    return value


def _day(r: Mapping[str, Any]) -> date:
    value = r["day"]
    if not isinstance(value, date) or isinstance(value, datetime):
        raise RowError("invalid_field", "day must be a date")
    return value


def _settlement(r: Mapping[str, Any]) -> list[Row]:
    amounts = [_int(r, n) for n in COLUMNS["settlements"][4:13]]
    return [
        Row(
            "settlements",
            (
                _text(r, "settlement_id"),
                _day(r),
                _text(r, "merchant_id"),
                _currency(r),
                *amounts,
                _text(r, "entry_id", optional=True),
                _text(r, "payout_id", optional=True),
                _time(r, "cutoff_at"),
                _currency(r, "paid_currency"),
                _int(r, "paid_minor"),
                _text(r, "fx_rate", optional=True) or "",
                _text(r, "refused", optional=True) or "",
            ),
        )
    ]


def _payout(r: Mapping[str, Any]) -> list[Row]:
    status = r["status"]
    if status not in PAYOUT_STATUSES:
        raise RowError("invalid_field", f"status must be one of {', '.join(PAYOUT_STATUSES)}")
    answered = None if status in ("held", "sent") else _time(r, "answered_at")
    return [
        Row(
            "payouts",
            (
                _text(r, "payout_id"),
                _text(r, "settlement_id"),
                _text(r, "merchant_id"),
                _currency(r),
                _int(r, "amount_minor", low=1),
                _day(r),
                status,
                _time(r, "sent_at"),
                answered,
                _text(r, "failure_reason", optional=True) or "",
                PAYOUT_STATUSES[status],
            ),
        )
    ]


def _reconciliation(r: Mapping[str, Any]) -> list[Row]:
    return [
        Row(
            "reconciliation",
            (
                _day(r),
                _text(r, "provider"),
                _text(r, "provider_ref"),
                _text(r, "payment_id", optional=True) or "",
                _text(r, "status"),
                _currency(r, asset=True),  # a custody item is in its asset
                *(_int(r, n, optional=True) for n in COLUMNS["reconciliation"][6:10]),
                _text(r, "detail", optional=True, cut=True) or "",
            ),
        )
    ]


_MAPPERS = {
    "payment_event": _payment_event,
    "ledger_entry": _ledger_entry,
    "payment_outcome": _payment_outcome,
    "settlement": _settlement,
    "reconciliation": _reconciliation,
    "payout": _payout,
}
assert set(_MAPPERS) == set(KINDS)
