"""Money is an integer count of minor units plus an ISO 4217 currency. Never a float."""

from __future__ import annotations

from types import MappingProxyType

# ISO 4217 active codes and their minor-unit exponents. Codes not listed here are
# rejected at ingest. Funds codes and metals (XAU, XDR, ...) are deliberately absent.
_EXPONENT_0 = ("BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX UYI VND VUV XAF XOF XPF").split()
_EXPONENT_3 = "BHD IQD JOD KWD LYD OMR TND".split()
_EXPONENT_4 = "CLF UYW".split()
_EXPONENT_2 = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN "
    "BWP BYN BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD "
    "FKP GBP GEL GHS GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR "
    "KPW KYD KZT LAK LBP LKR LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN "
    "MYR MZN NAD NGN NIO NOK NPR NZD PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD "
    "SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TOP TRY TTD TWD "
    "TZS UAH USD UYU UZS VES WST XCD YER ZAR ZMW ZWG"
).split()

CURRENCY_EXPONENTS = MappingProxyType(
    {c: 0 for c in _EXPONENT_0}
    | {c: 2 for c in _EXPONENT_2}
    | {c: 3 for c in _EXPONENT_3}
    | {c: 4 for c in _EXPONENT_4}
)


# Crypto assets the crypto rail takes, and their minor units (decimals): USDC has 6
# (one micro-USDC), BTC 8 (one satoshi). Not ISO 4217: a payment is priced in a
# currency, never in an asset; assets appear only on the house's crypto accounts.
ASSET_EXPONENTS = MappingProxyType({"USDC": 6, "BTC": 8})


def is_currency(code: str | None) -> bool:
    return code is not None and code in CURRENCY_EXPONENTS


def is_asset(code: str | None) -> bool:
    return code is not None and code in ASSET_EXPONENTS


def is_ledger_currency(code: str | None) -> bool:
    """What a ledger line may be denominated in: an ISO 4217 currency or a crypto asset."""
    return is_currency(code) or is_asset(code)


def asset_exponent(asset: str) -> int:
    return ASSET_EXPONENTS[asset]


def exponent(currency: str) -> int:
    """Minor-unit exponent; KeyError for a code that is not ISO 4217."""
    return CURRENCY_EXPONENTS[currency]


def format_minor(amount_minor: int, currency: str) -> str:
    """Human form for tables and logs, e.g. (123456, "USD") -> "1234.56 USD"."""
    assert isinstance(amount_minor, int) and not isinstance(amount_minor, bool)
    exp = CURRENCY_EXPONENTS[currency] if currency in CURRENCY_EXPONENTS else asset_exponent(currency)
    sign = "-" if amount_minor < 0 else ""
    whole, frac = divmod(abs(amount_minor), 10**exp)
    return f"{sign}{whole}.{frac:0{exp}d} {currency}" if exp else f"{sign}{whole} {currency}"
