"""Limits while pending: a merchant whose KYC case is open (kyc_status pending) may take
creates up to a per-day volume cap, per currency, in integer minor units
(`PAYSTREAM_KYC_PENDING_DAILY_CAP_MINOR`, e.g. '{"USD": 500000}'; a currency without a
cap, or a cap of 0, keeps such creates refused `merchant_not_verified`). Pure: the keys
stage (streams/stages/idempotency.py) reads and writes the day's total.

The day is the create's event-time UTC day (its `occurred_at`), never the wall clock.
A create is counted when it claims its idempotency key: a redelivery or a retry of the
same payment finds the claim and is not counted again; a create over the cap is refused
`kyc_pending_limit_exceeded` and claims nothing (a later retry is checked afresh).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, timedelta
from typing import Any

REASON = "kyc_pending_limit_exceeded"
DAY_MS = 86_400_000
_EPOCH = date(1970, 1, 1)
_SEP = "\x1f"


def pending_cap(cmd: Mapping[str, Any], merchant: Mapping[str, Any] | None, caps: Mapping[str, int]) -> int | None:
    """The daily cap this create is held to: its merchant is pending and its currency
    has a cap above 0. None: no allowance (verified merchants are not capped; others refused as before)."""
    if cmd["kind"] != "create" or merchant is None or merchant["kyc_status"] != "pending":
        return None
    cap = caps.get(cmd["currency"] or "", 0)
    return cap if cap > 0 else None


def event_day(at_ms: int) -> date:
    """The UTC day of an event time (floor division: correct before 1970 too)."""
    return _EPOCH + timedelta(days=at_ms // DAY_MS)


def day_end_ms(day: date) -> int:
    return ((day - _EPOCH).days + 1) * DAY_MS


def tally_key(partition: int, merchant_id: str, currency: str, day: date) -> bytes:
    """The keys table's key of one merchant's total for one currency and day."""
    return f"{partition}/kc/{merchant_id}{_SEP}{currency}{_SEP}{day.isoformat()}".encode()


def take(total: int, amount_minor: int, cap: int) -> int | None:
    """The day's total with this create counted, or None if it would pass the cap
    (a create exactly reaching the cap passes)."""
    new = total + amount_minor
    return new if new <= cap else None


def refusal_detail(currency: str, day: date, total: int, amount_minor: int, cap: int) -> str:
    return (
        f"the merchant's KYC is pending: {amount_minor} more {currency} minor units on {day.isoformat()} "
        f"would pass the daily cap of {cap} ({total} taken)"
    )
