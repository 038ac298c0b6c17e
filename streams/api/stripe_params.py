"""The Stripe routes' parameters, from decoded forms (streams/api/forms.py) to typed
values, with Stripe's error for each refusal. Pure.

Every leaf arrives as a string ("1999", "true"); an unknown parameter is refused as
Stripe refuses it. Messages name the parameter, never its value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from schemas.cards import brand_of
from streams.api.errors import ApiError
from streams.api.forms import FormError, as_list
from streams.domain.methods import WALLET_PROVIDERS

AMOUNT_MAX = 2**63 - 1
LIST_LIMIT_MAX = 100
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_CHARS = 40
METADATA_VALUE_MAX_CHARS = 500
EXPAND_MAX = 20

# Stripe's test PaymentMethods, by their documented names, as the test card numbers
# the simulated provider knows (connectors/providers/simulated.py): a merchant's
# test suite written against Stripe keeps working. A saved card is pm_<32 hex>
# (stripe_customers.py); any other pm_ id is unknown.
TEST_PAYMENT_METHODS = {
    "pm_card_visa": "4242424242424242",
    "pm_card_mastercard": "5555555555554444",
    "pm_card_chargeDeclined": "4000000000000002",
    "pm_card_chargeDeclinedInsufficientFunds": "4000000000009995",
    "pm_card_chargeDeclinedExpiredCard": "4000000000000069",
    "pm_card_chargeDeclinedIncorrectCvc": "4000000000000127",
}
TEST_CARD_EXPIRY = (12, 2034)

CAPTURE_METHODS = {"automatic": "automatic", "automatic_async": "automatic", "manual": "manual"}
CANCELLATION_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer", "abandoned"})
REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})
_CURRENCY = re.compile(r"^[A-Za-z]{3}$")
_CVC = re.compile(r"^[0-9]{3,4}$")
_DIGITS = re.compile(r"^[0-9]{1,19}$")
_CURSOR = re.compile(r"^pi_[0-9a-f]{32}$")
DISPUTE_CURSOR = re.compile(r"^dp_[0-9a-f]{32}$")
PAYOUT_CURSOR = re.compile(r"^po_[0-9a-f]{32}$")


def invalid(param: str, message: str) -> ApiError:
    return ApiError(400, "invalid_request_error", "parameter_invalid", message, param)


def missing(param: str) -> ApiError:
    return ApiError(400, "invalid_request_error", "parameter_missing", f"Missing required param: {param}.", param)


def form_error(e: FormError) -> ApiError:
    return ApiError(
        400, "invalid_request_error", "parameter_invalid" if e.param else "invalid_form", e.message, e.param
    )


def reject_unknown(params: dict[str, Any], known: frozenset[str] | set[str], prefix: str = "") -> None:
    for name in params:
        if name not in known:
            full = f"{prefix}[{name}]" if prefix else name
            raise ApiError(
                400, "invalid_request_error", "parameter_unknown", f"Received unknown parameter: {full}", full
            )


def string(params: dict[str, Any], name: str, param: str | None = None, max_chars: int = 5000) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise invalid(param or name, f"{param or name} must be a string of at most {max_chars} characters")
    return value


def integer(
    params: dict[str, Any], name: str, param: str | None = None, low: int = 1, high: int = AMOUNT_MAX
) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    elif isinstance(value, str) and _DIGITS.match(value):
        n = int(value)
    else:
        raise invalid(param or name, f"{param or name} must be an integer")
    if not low <= n <= high:
        raise invalid(param or name, f"{param or name} must be between {low} and {high}")
    return n


def boolean(params: dict[str, Any], name: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    if value in (True, "true"):
        return True
    if value in (False, "false"):
        return False
    raise invalid(name, f"{name} must be true or false")


def choice(
    params: dict[str, Any], name: str, allowed: frozenset[str] | dict[str, str] | set[str], param: str | None = None
) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise invalid(param or name, f"{param or name} must be one of: {', '.join(sorted(allowed))}")
    return value


def metadata(params: dict[str, Any]) -> dict[str, str]:
    """Stripe's limits; an empty value unsets a key (on a create: leaves it out), an
    empty `metadata=` unsets them all."""
    value = params.get("metadata")
    if value is None or value == "":
        return {}
    if not isinstance(value, dict):
        raise invalid("metadata", "metadata must be a set of key-value pairs")
    if len(value) > METADATA_MAX_KEYS:
        raise invalid("metadata", f"metadata takes at most {METADATA_MAX_KEYS} keys")
    out = {}
    for k, v in value.items():
        if not isinstance(v, str) or len(k) > METADATA_KEY_MAX_CHARS or len(v) > METADATA_VALUE_MAX_CHARS:
            raise invalid(
                f"metadata[{k[:METADATA_KEY_MAX_CHARS]}]",
                f"metadata keys are at most {METADATA_KEY_MAX_CHARS} characters, values strings of at most "
                f"{METADATA_VALUE_MAX_CHARS}",
            )
        if v != "":
            out[k] = v
    return out


def expand(params: dict[str, Any]) -> tuple[str, ...]:
    """Accepted; the objects here have nothing to expand yet (docs/api.md)."""
    value = params.get("expand")
    if value is None:
        return ()
    try:
        paths = as_list(value, "expand")
    except FormError as e:
        raise form_error(e) from None
    if len(paths) > EXPAND_MAX or not all(isinstance(p, str) and 0 < len(p) <= 200 for p in paths):
        raise invalid("expand", f"expand takes at most {EXPAND_MAX} field paths")
    return tuple(paths)


def _card(data: Any) -> dict[str, Any]:
    p = "payment_method_data[card]"
    if not isinstance(data, dict):
        raise missing(p)
    reject_unknown(data, {"number", "exp_month", "exp_year", "cvc"}, p)
    number = data.get("number")
    if number is None:
        raise missing(f"{p}[number]")
    if not isinstance(number, str) or not 12 <= len(number) <= 23:
        raise ApiError(402, "card_error", "invalid_number", "Your card number is incorrect.", f"{p}[number]")
    for name in ("exp_month", "exp_year"):
        if data.get(name) is None:
            raise missing(f"{p}[{name}]")
    month = integer(data, "exp_month", f"{p}[exp_month]", 1, 12)
    year = integer(data, "exp_year", f"{p}[exp_year]", 0, 2100)
    assert month is not None and year is not None
    if year < 100:
        year += 2000  # Stripe takes two-digit years
    if year < 2000:
        raise invalid(f"{p}[exp_year]", f"{p}[exp_year] must be a year")
    cvc = data.get("cvc")
    if cvc is not None and (not isinstance(cvc, str) or not _CVC.match(cvc)):
        raise ApiError(402, "card_error", "invalid_cvc", "Your card's security code is invalid.", f"{p}[cvc]")
    return {"number": number, "exp_month": month, "exp_year": year, "cvc": cvc}


# Stripe's payment method types -> the pipeline's method (streams/domain/methods.py). A
# wallet is a card PaymentMethod with `card[wallet]`, as Stripe shows one.
BANK_TYPES = {"us_bank_account": "ach", "sepa_debit": "sepa"}
BNPL_TYPES = frozenset({"klarna", "affirm", "afterpay_clearpay"})
PAYMENT_METHOD_TYPES = frozenset({"card", *BANK_TYPES, *BNPL_TYPES})
SETUP_FUTURE_USAGE = frozenset({"on_session", "off_session"})
SAVED_PAYMENT_METHOD = re.compile(r"^pm_[0-9a-f]{32}$")
CUSTOMER_ID = re.compile(r"^cus_[0-9a-f]{32}$")
_ROUTING = re.compile(r"^[0-9]{9}$")
_ACCOUNT = re.compile(r"^[0-9]{4,17}$")
_IBAN = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
MANDATE_REFERENCE = re.compile(r"^[A-Za-z0-9_-]{1,35}$")  # the pipeline's mandate_id (SEPA's limit)


@dataclass(frozen=True)
class Source:
    """How a PaymentIntent pays: Stripe's type, the pipeline's method and instrument.
    `card` (raw, sealed by the write path) never shows in a repr; a saved
    PaymentMethod (`saved`) is charged by its vault token, which the route looks up."""

    type: str  # Stripe's: card, us_bank_account, sepa_debit, klarna, affirm, afterpay_clearpay
    method: str  # the pipeline's: card, wallet, bank_transfer, bnpl
    card: dict[str, Any] | None = field(default=None, repr=False)
    payment_method: str | None = None  # the pm_ id the merchant named (a test or a saved one)
    saved: bool = False
    instrument: dict[str, Any] = field(default_factory=dict, repr=False)  # wallet / bank_account / bnpl of the command
    details: dict[str, Any] = field(
        default_factory=dict, repr=False
    )  # what a PaymentMethod shows: brand, last four, expiry


def _card_source(card: dict[str, Any], pm: str | None = None) -> Source:
    digits = card["number"].replace(" ", "").replace("-", "")
    details = (
        {
            "brand": brand_of(digits) or "unknown",
            "last4": digits[-4:],
            "bin": digits[:6],
            "exp_month": card["exp_month"],
            "exp_year": card["exp_year"],
        }
        if digits.isdigit()
        else {}
    )
    return Source("card", "card", card=card, payment_method=pm, details=details)


def _wallet(data: Any) -> Source:
    p = "payment_method_data[card][wallet]"
    if not isinstance(data, dict):
        raise invalid(p, f"{p} must be an object")
    reject_unknown(data, {"type", "token", "cryptogram"}, p)
    kind = choice(data, "type", WALLET_PROVIDERS, f"{p}[type]")
    if kind is None:
        raise missing(f"{p}[type]")
    for name in ("token", "cryptogram"):
        if string(data, name, f"{p}[{name}]", 128) is None:
            raise missing(f"{p}[{name}]")
    # ingest checks the token's and cryptogram's form (and that neither is a card number).
    return Source(
        "card",
        "wallet",
        instrument={"wallet": {"provider": kind, "token": data["token"], "cryptogram": data["cryptogram"]}},
        details={"brand": None, "last4": None, "wallet": {"type": kind}},
    )


def _bank(kind: str, data: Any) -> Source:
    p = f"payment_method_data[{kind}]"
    if not isinstance(data, dict):
        raise missing(p)
    if kind == "us_bank_account":
        reject_unknown(data, {"account_number", "routing_number", "account_holder_type", "account_type"}, p)
        number, routing = data.get("account_number"), data.get("routing_number")
        if number is None:
            raise missing(f"{p}[account_number]")
        if routing is None:
            raise missing(f"{p}[routing_number]")
        if not isinstance(number, str) or not _ACCOUNT.match(number):
            raise invalid(f"{p}[account_number]", f"{p}[account_number] must be 4..17 digits")
        if not isinstance(routing, str) or not _ROUTING.match(routing):
            raise invalid(f"{p}[routing_number]", f"{p}[routing_number] must be 9 digits")
        choice(data, "account_holder_type", {"individual", "company"}, f"{p}[account_holder_type]")
        choice(data, "account_type", {"checking", "savings"}, f"{p}[account_type]")
        last4, details = number[-4:], {"last4": number[-4:], "routing_number": routing}
    else:
        reject_unknown(data, {"iban"}, p)
        iban = data.get("iban")
        if iban is None:
            raise missing(f"{p}[iban]")
        compact = iban.replace(" ", "").upper() if isinstance(iban, str) else ""
        if not _IBAN.match(compact):
            raise invalid(f"{p}[iban]", f"{p}[iban] must be an IBAN")
        last4, details = compact[-4:], {"last4": compact[-4:], "country": compact[:2]}
    # Only the last four digits travel: the account number stops here (docs/payments.md).
    return Source(
        kind,
        "bank_transfer",
        instrument={"bank_account": {"scheme": BANK_TYPES[kind], "mandate_id": None, "account_last4": last4}},
        details=details,
    )


def _payment_method(params: dict[str, Any]) -> Source:
    """The source of a create, from payment_method or payment_method_data."""
    pm, data = params.get("payment_method"), params.get("payment_method_data")
    if pm is not None and data is not None:
        raise invalid("payment_method_data", "give payment_method or payment_method_data, not both")
    if pm is not None:
        if isinstance(pm, str) and SAVED_PAYMENT_METHOD.match(pm):
            return Source("card", "card", payment_method=pm, saved=True)
        if not isinstance(pm, str) or pm not in TEST_PAYMENT_METHODS:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such PaymentMethod", "payment_method")
        month, year = TEST_CARD_EXPIRY
        return _card_source({"number": TEST_PAYMENT_METHODS[pm], "exp_month": month, "exp_year": year, "cvc": None}, pm)
    if data is None:
        raise missing("payment_method")
    if not isinstance(data, dict):
        raise invalid("payment_method_data", "payment_method_data must be an object")
    kind = choice(data, "type", PAYMENT_METHOD_TYPES, "payment_method_data[type]") or "card"
    reject_unknown(data, {"type", "billing_details", kind}, "payment_method_data")
    billing = data.get("billing_details")
    if billing is not None and not isinstance(billing, dict):
        raise invalid("payment_method_data[billing_details]", "payment_method_data[billing_details] must be an object")
    if kind in BANK_TYPES:
        return _bank(kind, data.get(kind))
    if kind in BNPL_TYPES:
        if data.get(kind) not in (None, "", {}):
            raise invalid(f"payment_method_data[{kind}]", f"payment_method_data[{kind}] takes no fields")
        return Source(kind, "bnpl", instrument={"bnpl": {"provider": kind}})
    card = data.get("card")
    if isinstance(card, dict) and "wallet" in card:
        if set(card) != {"wallet"}:
            raise invalid(
                "payment_method_data[card][wallet]", "a wallet payment carries the wallet's token, not a card number"
            )
        return _wallet(card["wallet"])
    return _card_source(_card(card))


def _mandate(params: dict[str, Any]) -> tuple[str | None, bool]:
    """(a mandate reference the merchant holds, whether the customer accepted one now)."""
    ref, data = params.get("mandate"), params.get("mandate_data")
    if ref is not None and (not isinstance(ref, str) or not MANDATE_REFERENCE.match(ref)):
        raise invalid("mandate", "mandate must be 1..35 characters [A-Za-z0-9_-]")
    if data is None:
        return ref, False
    if ref is not None:
        raise invalid("mandate_data", "give mandate or mandate_data, not both")
    p = "mandate_data[customer_acceptance]"
    acceptance = data.get("customer_acceptance") if isinstance(data, dict) else None
    if isinstance(data, dict):
        reject_unknown(data, {"customer_acceptance"}, "mandate_data")
    if not isinstance(acceptance, dict):
        raise missing(p)
    reject_unknown(acceptance, {"type", "online", "offline", "accepted_at"}, p)
    if choice(acceptance, "type", {"online", "offline"}, f"{p}[type]") is None:
        raise missing(f"{p}[type]")
    online = acceptance.get("online")
    if online is not None:
        if not isinstance(online, dict):
            raise invalid(f"{p}[online]", f"{p}[online] must be an object")
        reject_unknown(online, {"ip_address", "user_agent"}, f"{p}[online]")
        for name in ("ip_address", "user_agent"):
            string(online, name, f"{p}[online][{name}]", 500)
    return None, True


@dataclass(frozen=True)
class Destination:
    """Stripe's destination charge: `account` is paid `amount - fee_minor`, the platform
    (the caller) keeps `fee_minor` (application_fee_amount); the pipeline's split."""

    account: str
    fee_minor: int


# A connected account's id: a merchant id (printable, at most 64 characters, as the registry takes it).
ACCOUNT_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


def _destination(params: dict[str, Any], amount: int) -> Destination | None:
    """transfer_data[destination] with application_fee_amount or transfer_data[amount]."""
    transfer, fee = params.get("transfer_data"), integer(params, "application_fee_amount", low=0)
    if params.get("on_behalf_of") is not None:
        raise invalid(
            "on_behalf_of", "on_behalf_of is not served: the platform is the merchant of record (docs/api.md)"
        )
    if transfer is None:
        if fee is not None:
            raise invalid(
                "application_fee_amount",
                "application_fee_amount needs transfer_data[destination] here: "
                "there are no direct charges on a connected account (docs/api.md)",
            )
        return None
    if not isinstance(transfer, dict):
        raise invalid("transfer_data", "transfer_data must be an object")
    reject_unknown(transfer, {"destination", "amount"}, "transfer_data")
    account = string(transfer, "destination", "transfer_data[destination]", max_chars=64)
    if account is None:
        raise missing("transfer_data[destination]")
    if not ACCOUNT_ID.match(account):
        raise ApiError(
            400,
            "invalid_request_error",
            "resource_missing",
            "No such destination account",
            "transfer_data[destination]",
        )
    paid = integer(transfer, "amount", "transfer_data[amount]", low=1)
    if paid is not None and fee is not None:
        raise invalid("application_fee_amount", "give application_fee_amount or transfer_data[amount], not both")
    fee = amount - paid if paid is not None else (fee or 0)
    if not 0 <= fee < amount:
        raise invalid(
            "application_fee_amount" if paid is None else "transfer_data[amount]",
            "the destination's part must be positive and at most the amount",
        )
    return Destination(account, fee)


@dataclass(frozen=True)
class CreateIntent:
    amount: int
    currency: str  # ISO 4217, upper case as the pipeline takes it
    capture_method: str  # automatic | manual
    source: Source
    metadata: dict[str, str]
    description: str | None
    expand: tuple[str, ...]
    customer: str | None = None
    setup_future_usage: str | None = None
    mandate: str | None = None  # a mandate reference the merchant holds (bank debits)
    mandate_accepted: bool = False  # mandate_data: the customer accepted a mandate with this intent
    destination: Destination | None = None  # a destination charge: a split payment (marketplaces)
    # A saved card charged with no customer present (off_session): the pipeline's
    # merchant-initiated create, for which the payments stage reveals the card from the vault.
    merchant_initiated: bool = False

    @property
    def card(self) -> dict[str, Any] | None:
        return self.source.card

    @property
    def payment_method(self) -> str | None:
        return self.source.payment_method


_CREATE = frozenset(
    {
        "amount",
        "currency",
        "confirm",
        "capture_method",
        "payment_method",
        "payment_method_data",
        "payment_method_types",
        "metadata",
        "expand",
        "description",
        "confirmation_method",
        "automatic_payment_methods",
        "statement_descriptor",
        "receipt_email",
        "customer",
        "setup_future_usage",
        "off_session",
        "mandate",
        "mandate_data",
        "transfer_data",
        "application_fee_amount",
        "on_behalf_of",
        "transfer_group",
    }
)


def create_intent(params: dict[str, Any]) -> CreateIntent:
    reject_unknown(params, _CREATE)
    if params.get("amount") is None:
        raise missing("amount")
    amount = integer(params, "amount")
    currency = string(params, "currency", max_chars=3)
    if currency is None:
        raise missing("currency")
    if not _CURRENCY.match(currency):
        raise invalid("currency", "currency must be a three-letter ISO code")
    if boolean(params, "confirm") is not True:
        # paystream authorizes as it creates: there is no unconfirmed PaymentIntent yet.
        raise invalid(
            "confirm", "confirm=true is required: a PaymentIntent is confirmed as it is created (docs/api.md)"
        )
    capture = choice(params, "capture_method", CAPTURE_METHODS) or "automatic"
    choice(params, "confirmation_method", {"automatic", "manual"})
    off_session = _off_session(params)
    types = None
    if params.get("payment_method_types") is not None:
        try:
            types = as_list(params["payment_method_types"], "payment_method_types")
        except FormError as e:
            raise form_error(e) from None
        if not types or any(t not in PAYMENT_METHOD_TYPES for t in types):
            raise invalid(
                "payment_method_types", f"payment_method_types takes {', '.join(sorted(PAYMENT_METHOD_TYPES))}"
            )
    for name in ("statement_descriptor", "receipt_email"):
        string(params, name, max_chars=500)
    auto = params.get("automatic_payment_methods")
    if auto is not None and not isinstance(auto, dict):
        raise invalid("automatic_payment_methods", "automatic_payment_methods must be an object")
    source = _payment_method(params)
    if types is not None and source.type not in types:
        raise invalid("payment_method_types", f"the payment method is {source.type}, not in payment_method_types")
    customer = string(params, "customer", max_chars=100)
    if customer is not None and not CUSTOMER_ID.match(customer):
        raise ApiError(400, "invalid_request_error", "resource_missing", "No such customer", "customer")
    future = choice(params, "setup_future_usage", SETUP_FUTURE_USAGE)
    if future is not None and source.method != "card":
        raise invalid("setup_future_usage", "only cards are saved for later here (docs/api.md)")
    if future is not None and source.saved:
        raise invalid("setup_future_usage", "this PaymentMethod is saved already")
    mandate, accepted = _mandate(params)
    if source.method == "bank_transfer":
        if mandate is None and not accepted:
            raise missing("mandate_data")
        if CAPTURE_METHODS[capture] == "manual":
            raise invalid("capture_method", "a bank debit has no authorization hold: capture_method automatic")
    elif mandate is not None or accepted:
        raise invalid(
            "mandate_data" if accepted else "mandate", "a mandate is for bank debits (us_bank_account, sepa_debit)"
        )
    assert amount is not None
    string(params, "transfer_group", max_chars=200)  # accepted: transfers here are one per capture, not grouped
    return CreateIntent(
        amount,
        currency.upper(),
        CAPTURE_METHODS[capture],
        source,
        metadata(params),
        string(params, "description", max_chars=1000),
        expand(params),
        customer,
        future,
        mandate,
        accepted,
        _destination(params, amount),
        # Card details in the request are the customer's, present: only a saved card is charged off session.
        merchant_initiated=off_session and source.saved,
    )


def _off_session(params: dict[str, Any]) -> bool:
    """Stripe's `off_session`: true, false, or the kind of off-session use (`one_off`,
    `recurring`), which the networks do not need from us."""
    if params.get("off_session") in ("one_off", "recurring"):
        return True
    return boolean(params, "off_session") is True


@dataclass(frozen=True)
class Capture:
    amount: int | None  # None: all that is left
    final: bool
    expand: tuple[str, ...]


def capture(params: dict[str, Any]) -> Capture:
    reject_unknown(params, {"amount_to_capture", "final_capture", "expand", "metadata"})
    if params.get("metadata"):
        raise invalid("metadata", "metadata cannot change after creation yet (docs/api.md)")
    final = boolean(params, "final_capture")
    return Capture(integer(params, "amount_to_capture"), final is not False, expand(params))


def cancel(params: dict[str, Any]) -> tuple[str | None, tuple[str, ...]]:
    reject_unknown(params, {"cancellation_reason", "expand"})
    return choice(params, "cancellation_reason", CANCELLATION_REASONS), expand(params)


_ECI = re.compile(r"^[0-9]{2}$")
THREE_DS_STATUSES = frozenset({"Y", "A", "N", "U", "R"})


def confirm(params: dict[str, Any]) -> tuple[dict[str, Any], tuple[str, ...]]:
    """A confirm of a PaymentIntent in requires_action: the 3DS result as Stripe takes
    one from a third-party 3DS server, `payment_method_options[card][three_d_secure]`
    (ares_trans_status, electronic_commerce_indicator, transaction_id, version,
    cryptogram), as the pipeline's three_ds {trans_status, eci, ds_trans_id, authentication_value}."""
    reject_unknown(params, {"payment_method_options", "expand"})
    base = "payment_method_options[card][three_d_secure]"
    options = params.get("payment_method_options")
    card = options.get("card") if isinstance(options, dict) else None
    three_ds = card.get("three_d_secure") if isinstance(card, dict) else None
    if options is not None and not isinstance(options, dict):
        raise invalid("payment_method_options", "payment_method_options must be an object")
    if options is not None:
        reject_unknown(options, {"card"}, "payment_method_options")
    if isinstance(card, dict):
        reject_unknown(card, {"three_d_secure"}, "payment_method_options[card]")
    if not isinstance(three_ds, dict):
        raise missing(base)
    reject_unknown(
        three_ds,
        {"ares_trans_status", "electronic_commerce_indicator", "transaction_id", "version", "cryptogram"},
        base,
    )
    status = three_ds.get("ares_trans_status")
    if status is None:
        raise missing(f"{base}[ares_trans_status]")
    if status not in THREE_DS_STATUSES:
        raise invalid(f"{base}[ares_trans_status]", f"{base}[ares_trans_status] must be one of: A, N, R, U, Y")
    eci = three_ds.get("electronic_commerce_indicator")
    if eci is not None and (not isinstance(eci, str) or not _ECI.match(eci)):
        raise invalid(f"{base}[electronic_commerce_indicator]", f"{base}[electronic_commerce_indicator] is 2 digits")
    tid = three_ds.get("transaction_id")
    if tid is not None and (not isinstance(tid, str) or len(tid) != 36):
        raise invalid(f"{base}[transaction_id]", f"{base}[transaction_id] is the 36-character dsTransID")
    string(three_ds, "version", f"{base}[version]", max_chars=100)
    # The CAVV: the ACS's signed authentication value (liability shifts only with one that verifies).
    cryptogram = string(three_ds, "cryptogram", f"{base}[cryptogram]", max_chars=1024)
    return {"trans_status": status, "eci": eci, "ds_trans_id": tid, "authentication_value": cryptogram}, expand(params)


@dataclass(frozen=True)
class CreateRefund:
    payment_intent: str  # the pi_ id
    amount: int | None  # None: all that is left
    reason: str | None
    metadata: dict[str, str]
    expand: tuple[str, ...]


def create_refund(params: dict[str, Any]) -> CreateRefund:
    reject_unknown(
        params,
        {
            "payment_intent",
            "charge",
            "amount",
            "reason",
            "metadata",
            "expand",
            "reverse_transfer",
            "refund_application_fee",
        },
    )
    if params.get("charge") is not None:
        raise invalid("charge", "refund a payment_intent (charges are not separate objects here)")
    for name in ("reverse_transfer", "refund_application_fee"):
        # The ledger refunds a destination charge pro rata over the connected accounts and
        # the platform's fee (docs/ledger.md, Split payments): both always happen.
        if boolean(params, name) is False:
            raise invalid(
                name,
                f"{name}=false is not supported: a refund takes back from the transfers and the fee "
                "pro rata (docs/api.md)",
            )
    pi = string(params, "payment_intent", max_chars=100)
    if pi is None:
        raise missing("payment_intent")
    return CreateRefund(
        pi, integer(params, "amount"), choice(params, "reason", REFUND_REASONS), metadata(params), expand(params)
    )


@dataclass(frozen=True)
class ListParams:
    limit: int
    starting_after: str | None
    ending_before: str | None


def list_params(params: dict[str, Any], cursor_id: re.Pattern[str] = _CURSOR, of: str = "PaymentIntent") -> ListParams:
    """limit, starting_after and ending_before; cursors are ids matching `cursor_id`."""
    reject_unknown(params, {"limit", "starting_after", "ending_before", "expand"})
    expand(params)
    limit = integer(params, "limit", low=1, high=LIST_LIMIT_MAX) or 10
    after, before = string(params, "starting_after", max_chars=100), string(params, "ending_before", max_chars=100)
    if after is not None and before is not None:
        raise invalid("ending_before", "give starting_after or ending_before, not both")
    for name, cursor in (("starting_after", after), ("ending_before", before)):
        if cursor is not None and not cursor_id.match(cursor):
            raise invalid(name, f"{name} must be a {of} id")
    return ListParams(limit, after, before)


def list_page(rows: list[Any], p: ListParams, url: str, render: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
    """A Stripe list from a reader's `rows`, asked for `p.limit + 1` and nearest to the
    cursor first: `has_more` from the extra row, the page in id order (an ending_before
    page is read backwards)."""
    page = list(reversed(rows[: p.limit])) if p.ending_before else rows[: p.limit]
    return {"object": "list", "url": url, "has_more": len(rows) > p.limit, "data": [render(row) for row in page]}


def dispute_evidence(params: dict[str, Any], max_chars: int) -> str:
    """A dispute update: Stripe's `evidence[<field>]` texts, as one text for the
    network ("field: text" per line, by field name). `submit=false` (staging) is
    refused: evidence goes to the network as it comes."""
    reject_unknown(params, {"evidence", "submit", "metadata", "expand"})
    expand(params)
    if params.get("metadata"):
        raise invalid("metadata", "a dispute's metadata cannot be set yet (docs/api.md)")
    if boolean(params, "submit") is False:
        raise invalid("submit", "evidence is submitted as it comes: staging (submit=false) is not supported")
    evidence = params.get("evidence")
    if evidence is None or evidence == {}:
        raise missing("evidence")
    if not isinstance(evidence, dict):
        raise invalid("evidence", "evidence must be a set of fields")
    lines = []
    for name in sorted(evidence):
        text = evidence[name]
        if not isinstance(text, str):
            raise invalid(f"evidence[{name[:40]}]", f"evidence[{name[:40]}] must be text")
        if text.strip():
            lines.append(f"{name}: {text.strip()}")
    joined = "\n".join(lines)
    if not joined:
        raise missing("evidence")
    if len(joined) > max_chars:
        raise invalid("evidence", f"the evidence is over {max_chars} characters in all")
    return joined


@dataclass(frozen=True)
class CustomerFields:
    """A customer's create or update: only the fields given (an update leaves the rest)."""

    fields: dict[str, Any]
    metadata: dict[str, str] | None  # None: not given; on an update, merged (an empty value unsets a key)
    default_payment_method: str | None  # "" unsets it
    expand: tuple[str, ...]


_CUSTOMER_TEXT = {"email": 512, "name": 256, "description": 1000, "phone": 20}


def customer(params: dict[str, Any]) -> CustomerFields:
    reject_unknown(params, {*_CUSTOMER_TEXT, "metadata", "invoice_settings", "expand"})
    fields = {name: string(params, name, max_chars=n) for name, n in _CUSTOMER_TEXT.items() if name in params}
    # Stripe unsets a field sent empty.
    fields = {k: (v or None) for k, v in fields.items()}
    default = None
    settings = params.get("invoice_settings")
    if settings is not None:
        if not isinstance(settings, dict):
            raise invalid("invoice_settings", "invoice_settings must be an object")
        reject_unknown(settings, {"default_payment_method"}, "invoice_settings")
        default = string(settings, "default_payment_method", "invoice_settings[default_payment_method]", 100)
        if default and not SAVED_PAYMENT_METHOD.match(default):
            raise ApiError(
                400,
                "invalid_request_error",
                "resource_missing",
                "No such PaymentMethod",
                "invoice_settings[default_payment_method]",
            )
    raw = params.get("metadata")
    meta = None
    if raw is not None:
        meta = metadata(params) if raw != "" else {}
        if isinstance(raw, dict):  # keep the unsets (empty values) for the merge
            meta |= {k: "" for k, v in raw.items() if v == ""}
    return CustomerFields(fields, meta, default, expand(params))


def attach(params: dict[str, Any]) -> tuple[str, tuple[str, ...]]:
    """A PaymentMethod's attach: the customer."""
    reject_unknown(params, {"customer", "expand"})
    cus = string(params, "customer", max_chars=100)
    if cus is None:
        raise missing("customer")
    if not CUSTOMER_ID.match(cus):
        raise ApiError(400, "invalid_request_error", "resource_missing", "No such customer", "customer")
    return cus, expand(params)


def payment_method_list(params: dict[str, Any]) -> tuple[str | None, str | None, ListParams]:
    """(customer, type, paging) of GET /v1/payment_methods."""
    rest = {k: v for k, v in params.items() if k not in ("customer", "type")}
    page = list_params(rest, SAVED_PAYMENT_METHOD, "PaymentMethod")
    cus = string(params, "customer", max_chars=100)
    kind = choice(params, "type", PAYMENT_METHOD_TYPES)
    return cus, kind, page


def expand_only(params: dict[str, Any]) -> tuple[str, ...]:
    reject_unknown(params, {"expand"})
    return expand(params)


ACCOUNT_TYPES = frozenset({"custom"})  # the platform onboards its sellers through this API; no hosted onboarding
BUSINESS_TYPES = frozenset({"company", "individual"})
_COUNTRY = re.compile(r"^[A-Z]{2}$")
OWNERS_MAX = 10
_NOT_KEPT = {
    "email": "the registry keeps no email",
    "metadata": "the registry keeps no metadata",
    "business_profile": "the registry keeps no business profile",
}


@dataclass(frozen=True)
class CreateAccount:
    country: str
    legal_name: str
    registration_number: str
    owners: tuple[str, ...]
    documents: dict[str, str]  # kind -> the document store's reference (streams/domain/kyc.py)
    default_currency: str  # ISO 4217, upper case
    expand: tuple[str, ...]


def create_account(params: dict[str, Any]) -> CreateAccount:
    """Stripe's POST /v1/accounts for a custom account with its KYC details: a company
    (`company[name]`, `company[registration_number]` or `company[tax_id]`, and its
    beneficial owners in `company[owners][]`, ours: Stripe takes owners through its
    Persons API) or an individual (`individual[first_name]`, `[last_name]`, `[id_number]`),
    and `documents[<kind>]` the document store's references (ours: Stripe takes File ids,
    and there are no Files here; the kinds are the KYC case's, docs/compliance.md)."""
    for name, why in _NOT_KEPT.items():
        if params.get(name) not in (None, "", {}):
            raise invalid(name, f"{name} is not accepted: {why} (docs/api.md)")
    reject_unknown(
        params,
        {
            "type",
            "country",
            "business_type",
            "company",
            "individual",
            "default_currency",
            "capabilities",
            "tos_acceptance",
            "documents",
            "expand",
            *_NOT_KEPT,
        },
    )
    documents = params.get("documents") or {}
    if not isinstance(documents, dict) or not all(isinstance(v, str) for v in documents.values()):
        raise invalid("documents", "documents[<kind>] takes a document store reference per kind")
    if choice(params, "type", ACCOUNT_TYPES | {"express", "standard"}) in ("express", "standard"):
        raise invalid("type", "type must be custom: there is no hosted onboarding here (docs/api.md)")
    country = string(params, "country", max_chars=2)
    if country is None:
        raise missing("country")
    if not _COUNTRY.match(country.upper()):
        raise invalid("country", "country must be an ISO 3166-1 alpha-2 code")
    currency = string(params, "default_currency", max_chars=3) or "usd"
    if not _CURRENCY.match(currency):
        raise invalid("default_currency", "default_currency must be a three-letter ISO code")
    for name in ("capabilities", "tos_acceptance"):  # accepted: every connected account takes cards and transfers
        if params.get(name) is not None and not isinstance(params[name], dict):
            raise invalid(name, f"{name} must be an object")
    kind = choice(params, "business_type", BUSINESS_TYPES) or "company"
    part = params.get(kind)
    if not isinstance(part, dict):
        raise missing(f"{kind}[{'name' if kind == 'company' else 'first_name'}]")
    if kind == "company":
        reject_unknown(part, {"name", "registration_number", "tax_id", "owners"}, "company")
        name = string(part, "name", "company[name]", max_chars=200)
        number = string(part, "registration_number", "company[registration_number]", max_chars=32) or string(
            part, "tax_id", "company[tax_id]", max_chars=32
        )
        try:
            owners = as_list(part.get("owners") or [], "company[owners]")
        except FormError as e:
            raise form_error(e) from None
        if not 1 <= len(owners) <= OWNERS_MAX or not all(
            isinstance(o, str) and 0 < len(o.strip()) <= 200 for o in owners
        ):
            raise invalid(
                "company[owners]",
                f"company[owners] names 1..{OWNERS_MAX} beneficial owners (ours: Stripe "
                "takes them through its Persons API)",
            )
        if name is None:
            raise missing("company[name]")
        if number is None:
            raise missing("company[registration_number]")
    else:
        reject_unknown(part, {"first_name", "last_name", "id_number"}, "individual")
        first = string(part, "first_name", "individual[first_name]", max_chars=100)
        last = string(part, "last_name", "individual[last_name]", max_chars=100)
        number = string(part, "id_number", "individual[id_number]", max_chars=32)
        if not first or not last:
            raise missing("individual[first_name]" if not first else "individual[last_name]")
        if number is None:
            raise missing("individual[id_number]")
        name, owners = f"{first} {last}", [f"{first} {last}"]
    return CreateAccount(
        country.upper(),
        name,
        number,
        tuple(o.strip() for o in owners),
        dict(documents),
        currency.upper(),
        expand(params),
    )
