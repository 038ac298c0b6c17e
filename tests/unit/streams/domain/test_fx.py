"""FX: rates on the wire, HALF_EVEN conversion across ISO 4217 exponents, and
cross-currency settlement entries that balance in each currency on their own."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import Codec
from schemas.money import exponent
from streams.domain.fx import FxError, FxRate, convert, parse_rate, rate_from_record, rate_key, rate_to_record
from streams.domain.ledger import (
    PostingError,
    SettlementTerms,
    add_into,
    entry_from_record,
    entry_to_record,
    post,
    settlement_of,
    totals_by_currency,
)
from tests.unit.streams.ledger_support import event

AS_OF = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
RATES = Codec("FxRate")


def fx(base: str, quote: str, rate: str) -> FxRate:
    return FxRate(base, quote, parse_rate(rate), AS_OF, "treasury")


@pytest.mark.parametrize(
    ("amount", "base", "quote", "rate", "target", "residual"),
    [
        (10_000, "USD", "JPY", "151.37", 15_137, "0"),  # 100.00 USD -> 15137 JPY
        (12_345, "EUR", "JPY", "162.9871", 20_121, "-0.242505"),
        (1_000, "JPY", "USD", "0.0066", 660, "0"),  # 1000 JPY -> 6.60 USD
        (1_234, "KWD", "USD", "3.2547", 402, "-0.37002"),  # 1.234 KWD -> 4.02 USD
        (100, "USD", "KWD", "0.30725", 307, "0.25"),  # 1.00 USD -> 0.307 KWD
        # ties go to the even neighbour: 0.5 -> 0, 1.5 -> 2, 2.5 -> 2
        (5, "JPY", "USD", "0.001", 0, "0.5"),
        (15, "JPY", "USD", "0.001", 2, "-0.5"),
        (25, "JPY", "USD", "0.001", 2, "0.5"),
        (0, "USD", "EUR", "0.92", 0, "0"),
    ],
)
def test_convert_examples(amount: int, base: str, quote: str, rate: str, target: int, residual: str) -> None:
    conv = convert(amount, fx(base, quote, rate))
    assert (conv.source_minor, conv.target_minor) == (amount, target)
    assert conv.residual == Decimal(residual)


rate_texts = st.builds(
    lambda whole, frac: f"{whole}.{frac}" if frac else str(whole),
    st.integers(0, 10**4),
    st.text("0123456789", max_size=18),
).filter(lambda t: Decimal(t) > 0)
currencies = st.sampled_from(("USD", "JPY", "KWD", "EUR", "CLF", "BHD", "KRW"))


@given(st.integers(0, 10**15), currencies, currencies, rate_texts)
def test_conversion_is_exact_up_to_a_recorded_half_unit(amount: int, base: str, quote: str, text: str) -> None:
    if base == quote:
        return
    conv = convert(amount, fx(base, quote, text))
    # An independent oracle: exact rationals, and Python's round() is HALF_EVEN.
    exact = Fraction(amount) * Fraction(text) * Fraction(10) ** (exponent(quote) - exponent(base))
    assert conv.target_minor == round(exact)
    assert Fraction(conv.target_minor) + Fraction(conv.residual) == exact  # nothing lost unaccounted
    assert abs(Fraction(conv.residual)) <= Fraction(1, 2)


@pytest.mark.parametrize(
    "text",
    ["0", "0.000", "-1", "1e3", "NaN", "Infinity", "", " 1", "1.", ".5", "1,5", "1" * 13, "1." + "1" * 19, 1.5, None],
)
def test_parse_rate_refuses(text: object) -> None:
    with pytest.raises(FxError) as err:
        parse_rate(text)
    assert err.value.reason == "invalid_rate"


def test_rate_record_round_trip_and_key() -> None:
    rate = fx("EUR", "USD", "1.0842")
    record = RATES.decode(RATES.encode(rate_to_record(rate), check=True))
    assert rate_from_record(record) == rate
    assert rate.key == rate_key("EUR", "USD") == "EUR/USD"


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"rate": "0"}, "invalid_rate"),
        ({"rate": "1.2e2"}, "invalid_rate"),
        ({"quote_currency": "EUR"}, "same_currency"),
        ({"base_currency": "XXX"}, "invalid_currency"),
        ({"as_of": datetime(2026, 1, 1)}, "invalid_time"),
    ],
)
def test_bad_rate_records_are_refused(change: dict, reason: str) -> None:
    with pytest.raises(FxError) as err:
        rate_from_record(rate_to_record(fx("EUR", "USD", "1.0842")) | change)
    assert err.value.reason == reason


# --- settlement in another currency ---


def test_settlement_in_another_currency_balances_each_currency() -> None:
    rate = fx("EUR", "JPY", "162.9871")
    entry = post(event("settled", amount=12_345, currency="EUR"), shard=5, settlement=SettlementTerms("JPY", rate))
    lines = {(x.account, x.currency, x.signed_minor) for x in entry.lines}
    assert lines == {
        ("house:settlement:5", "EUR", 12_345),
        ("house:clearing:5", "EUR", -12_345),
        ("merchant:m_acme:pending", "EUR", 12_345),
        ("house:fx:5", "EUR", -12_345),
        ("house:fx:5", "JPY", 20_121),
        ("merchant:m_acme:available", "JPY", -20_121),
    }
    assert (entry.fx.rate, entry.fx.target_minor, entry.fx.residual) == ("162.9871", 20_121, "-0.242505")
    assert settlement_of(entry) == SettlementTerms("JPY", rate)
    record = Codec("LedgerEntry").decode(Codec("LedgerEntry").encode(entry_to_record(entry), check=True))
    assert entry_from_record(record) == entry


def test_conversion_beyond_an_avro_long_is_refused() -> None:
    with pytest.raises(PostingError) as err:
        post(
            event("settled", amount=10**15, currency="JPY"),
            shard=0,
            settlement=SettlementTerms("CLF", fx("JPY", "CLF", "999999")),
        )
    assert err.value.reason == "amount_too_large"


@pytest.mark.parametrize(
    ("terms", "reason"),
    [
        (SettlementTerms("JPY"), "missing_fx_rate"),
        (SettlementTerms("JPY", fx("USD", "JPY", "151.37")), "rate_pair_mismatch"),
        (SettlementTerms("USD", fx("EUR", "JPY", "162.9871")), "rate_pair_mismatch"),
        (SettlementTerms("XYZ"), "invalid_currency"),
    ],
)
def test_cross_currency_settlement_needs_the_right_rate(terms: SettlementTerms, reason: str) -> None:
    with pytest.raises(PostingError) as err:
        post(event("settled", amount=100, currency="EUR"), shard=0, settlement=terms)
    assert err.value.reason == reason


@given(st.lists(st.tuples(st.integers(1, 10**10), currencies, currencies, rate_texts), min_size=1, max_size=20))
def test_fx_rounding_never_creates_or_destroys_a_minor_unit_unaccounted(settlements: list) -> None:
    balances: dict = {}
    exact_by_currency: dict[str, Fraction] = {}
    residual_by_currency: dict[str, Fraction] = {}
    for i, (amount, pay_cur, settle_cur, text) in enumerate(settlements):
        if pay_cur == settle_cur:
            continue
        terms = SettlementTerms(settle_cur, fx(pay_cur, settle_cur, text))
        entry = post(event("settled", amount=amount, currency=pay_cur, event_id=f"e{i}"), shard=0, settlement=terms)
        add_into(balances, entry)
        exact = Fraction(amount) * Fraction(text) * Fraction(10) ** (exponent(settle_cur) - exponent(pay_cur))
        exact_by_currency[settle_cur] = exact_by_currency.get(settle_cur, Fraction(0)) + exact
        residual_by_currency[settle_cur] = residual_by_currency.get(settle_cur, Fraction(0)) + Fraction(
            entry.fx.residual
        )
    assert totals_by_currency(balances) == {}  # every currency balances on its own
    for cur, exact in exact_by_currency.items():
        # What merchants received in `cur` plus the recorded residuals is exactly the
        # value converted: the FX account holds the rounded side, the entries the rest.
        paid = -sum(v for (acct, c), v in balances.items() if c == cur and acct.endswith(":available"))
        assert Fraction(paid) + residual_by_currency[cur] == exact
        assert abs(residual_by_currency[cur]) <= Fraction(len(settlements), 2)
