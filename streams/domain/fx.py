"""FX rates and conversion. Pure. Decimal lives here only, and rounding (HALF_EVEN,
banker's) happens once: when a converted amount becomes integer minor units.

A rate says how many major units of `quote_currency` one major unit of
`base_currency` buys. Converting `amount_minor` of base gives exactly
`amount_minor * rate * 10**(exp(quote) - exp(base))` quote minor units; the
integer part kept is that value rounded HALF_EVEN, and the difference
(`residual`, at most half a minor unit) is recorded on the entry, so no fraction
of a minor unit is created or lost without a trace.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import (
    ROUND_HALF_EVEN,
    Context,
    Decimal,
    Inexact,
    InvalidOperation,
    Rounded,
)
from typing import Any

from schemas.errors import ReasonedError
from schemas.money import exponent, is_currency

# A plain decimal: no sign, no exponent, no NaN/Infinity, bounded digits, so the
# product with any amount is exact within _EXACT's precision.
_RATE_TEXT = re.compile(r"[0-9]{1,12}(\.[0-9]{1,18})?")
MAX_SOURCE_LEN = 64
# amount (<= 19 digits) x rate (<= 30 digits) needs <= 49 digits: 80 is exact with room.
_EXACT = Context(prec=80, traps=[InvalidOperation, Inexact, Rounded])
_ROUND = Context(prec=80, rounding=ROUND_HALF_EVEN, traps=[InvalidOperation])
_ONE = Decimal(1)


class FxError(ReasonedError, ValueError):
    """A rate we cannot use; `reason` is a stable code."""


def rate_key(base_currency: str, quote_currency: str) -> str:
    """The key of a pair on the compacted rate topic, e.g. 'EUR/USD'."""
    return f"{base_currency}/{quote_currency}"


def parse_rate(text: Any) -> Decimal:
    """A rate from its wire form; FxError for anything but a positive plain decimal."""
    if not isinstance(text, str) or not _RATE_TEXT.fullmatch(text):
        raise FxError("invalid_rate", f"not a plain decimal string: {str(text)[:40]!r}")
    rate = Decimal(text)
    if not rate:
        raise FxError("invalid_rate", "rate must be positive")
    return rate


@dataclass(frozen=True)
class FxRate:
    base_currency: str
    quote_currency: str
    rate: Decimal
    as_of: datetime  # timezone-aware, event time of the quote
    source: str = ""

    def __post_init__(self) -> None:
        assert is_currency(self.base_currency) and is_currency(self.quote_currency), self
        assert self.base_currency != self.quote_currency, "a rate converts between two currencies"
        assert isinstance(self.rate, Decimal) and self.rate == parse_rate(format(self.rate, "f")), self.rate
        assert isinstance(self.as_of, datetime) and self.as_of.tzinfo is not None, self.as_of

    @property
    def key(self) -> str:
        return rate_key(self.base_currency, self.quote_currency)

    @property
    def rate_text(self) -> str:
        return format(self.rate, "f")


@dataclass(frozen=True)
class Conversion:
    source_minor: int
    target_minor: int
    residual: Decimal  # exact value - target_minor, in target minor units; |residual| <= 1/2


def convert(amount_minor: int, rate: FxRate) -> Conversion:
    """`amount_minor` of rate.base_currency in rate.quote_currency minor units,
    rounded HALF_EVEN, with the rounding residual."""
    assert type(amount_minor) is int and amount_minor >= 0, amount_minor
    shift = exponent(rate.quote_currency) - exponent(rate.base_currency)
    exact = _EXACT.multiply(Decimal(amount_minor), rate.rate).scaleb(shift, _EXACT)
    target = int(exact.quantize(_ONE, context=_ROUND))
    residual = _EXACT.subtract(exact, Decimal(target))
    assert abs(residual) * 2 <= 1, residual
    return Conversion(amount_minor, target, residual)


def rate_from_record(record: Mapping[str, Any]) -> FxRate:
    """A decoded FxRate record; FxError (reason code) when it is not a usable rate."""
    try:
        base, quote, as_of = record["base_currency"], record["quote_currency"], record["as_of"]
        source = record.get("source", "")
    except KeyError as e:
        raise FxError("missing_field", f"rate has no {e.args[0]!r}") from None
    for code in (base, quote):
        if not is_currency(code):
            raise FxError("invalid_currency", repr(code)[:16])
    if base == quote:
        raise FxError("same_currency", f"{base}/{quote}")
    if not isinstance(as_of, datetime) or as_of.tzinfo is None:
        raise FxError("invalid_time", "as_of must be a timezone-aware timestamp")
    if not isinstance(source, str) or len(source) > MAX_SOURCE_LEN:
        raise FxError("invalid_source", f"at most {MAX_SOURCE_LEN} characters")
    return FxRate(base, quote, parse_rate(record["rate"]), as_of, source)


def rate_to_record(rate: FxRate) -> dict[str, Any]:
    return {
        "base_currency": rate.base_currency,
        "quote_currency": rate.quote_currency,
        "rate": rate.rate_text,
        "as_of": rate.as_of,
        "source": rate.source,
    }


MAX_RATES_PER_PAIR = 1_000  # the compacted topic keeps one per pair; a bound on what a reader holds


class RateBook:
    """The rates read from the fx-rates topic, per pair in as-of order, so a
    conversion at event time T uses the latest rate quoted at or before T."""

    def __init__(self, rates: Iterable[FxRate] = ()) -> None:
        self._by_pair: dict[str, list[FxRate]] = {}
        for rate in rates:
            self.add(rate)

    def add(self, rate: FxRate) -> None:
        pair = self._by_pair.setdefault(rate.key, [])
        pair.append(rate)
        pair.sort(key=lambda r: r.as_of)
        del pair[:-MAX_RATES_PER_PAIR]

    def at(self, base_currency: str, quote_currency: str, at: datetime) -> FxRate | None:
        """The latest rate of the pair quoted at or before `at`; None when there is none."""
        known = [r for r in self._by_pair.get(rate_key(base_currency, quote_currency), ()) if r.as_of <= at]
        return known[-1] if known else None

    def all(self) -> list[FxRate]:
        """Every rate held, by pair, oldest first."""
        return [r for pair in sorted(self._by_pair) for r in self._by_pair[pair]]
