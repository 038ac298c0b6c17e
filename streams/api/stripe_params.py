"""The Stripe routes' parameters, from decoded forms (streams/api/forms.py) to typed
values, with Stripe's error for each refusal. Pure.

Every leaf arrives as a string ("1999", "true"); an unknown parameter is refused as
Stripe refuses it. Messages name the parameter, never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from streams.api.errors import ApiError
from streams.api.forms import FormError, as_list

AMOUNT_MAX = 2**63 - 1
LIST_LIMIT_MAX = 100
METADATA_MAX_KEYS = 50
METADATA_KEY_MAX_CHARS = 40
METADATA_VALUE_MAX_CHARS = 500
EXPAND_MAX = 20

# Stripe's test PaymentMethods, by their documented names, as the test card numbers
# the simulated provider knows (connectors/providers/simulated.py): a merchant's
# test suite written against Stripe keeps working. Any other pm_ id is unknown:
# saved PaymentMethods are not built yet (docs/api.md).
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
    return ApiError(400, "invalid_request_error", "parameter_invalid" if e.param else "invalid_form", e.message, e.param)


def reject_unknown(params: dict[str, Any], known: frozenset[str] | set[str], prefix: str = "") -> None:
    for name in params:
        if name not in known:
            full = f"{prefix}[{name}]" if prefix else name
            raise ApiError(400, "invalid_request_error", "parameter_unknown", f"Received unknown parameter: {full}", full)


def string(params: dict[str, Any], name: str, param: str | None = None, max_chars: int = 5000) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > max_chars:
        raise invalid(param or name, f"{param or name} must be a string of at most {max_chars} characters")
    return value


def integer(params: dict[str, Any], name: str, param: str | None = None, low: int = 1, high: int = AMOUNT_MAX) -> int | None:
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


def choice(params: dict[str, Any], name: str, allowed: frozenset[str] | dict[str, str] | set[str]) -> str | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or value not in allowed:
        raise invalid(name, f"{name} must be one of: {', '.join(sorted(allowed))}")
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
            raise invalid(f"metadata[{k[:METADATA_KEY_MAX_CHARS]}]",
                          f"metadata keys are at most {METADATA_KEY_MAX_CHARS} characters, values strings of at most "
                          f"{METADATA_VALUE_MAX_CHARS}")
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


def _payment_method(params: dict[str, Any]) -> tuple[dict[str, Any], str | None]:
    """(card, payment method id) from payment_method or payment_method_data."""
    pm, data = params.get("payment_method"), params.get("payment_method_data")
    if pm is not None and data is not None:
        raise invalid("payment_method_data", "give payment_method or payment_method_data, not both")
    if pm is not None:
        if not isinstance(pm, str) or pm not in TEST_PAYMENT_METHODS:
            raise ApiError(400, "invalid_request_error", "resource_missing", "No such PaymentMethod", "payment_method")
        month, year = TEST_CARD_EXPIRY
        return {"number": TEST_PAYMENT_METHODS[pm], "exp_month": month, "exp_year": year, "cvc": None}, pm
    if data is None:
        raise missing("payment_method")
    if not isinstance(data, dict):
        raise invalid("payment_method_data", "payment_method_data must be an object")
    reject_unknown(data, {"type", "card", "billing_details"}, "payment_method_data")
    if data.get("type", "card") != "card":
        raise invalid("payment_method_data[type]", "payment_method_data[type] must be card (other methods are not built yet)")
    return _card(data.get("card")), None


@dataclass(frozen=True)
class CreateIntent:
    amount: int
    currency: str  # ISO 4217, upper case as the pipeline takes it
    capture_method: str  # automatic | manual
    card: dict[str, Any] = field(repr=False)  # never in a repr: it holds the number
    payment_method: str | None
    metadata: dict[str, str]
    description: str | None
    expand: tuple[str, ...]


_CREATE = frozenset({"amount", "currency", "confirm", "capture_method", "payment_method", "payment_method_data",
                     "payment_method_types", "metadata", "expand", "description", "confirmation_method",
                     "automatic_payment_methods", "statement_descriptor", "receipt_email"})


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
        raise invalid("confirm", "confirm=true is required: a PaymentIntent is confirmed as it is created (docs/api.md)")
    capture = choice(params, "capture_method", CAPTURE_METHODS) or "automatic"
    choice(params, "confirmation_method", {"automatic", "manual"})
    types = params.get("payment_method_types")
    if types is not None:
        try:
            if any(t != "card" for t in as_list(types, "payment_method_types")):
                raise invalid("payment_method_types", "payment_method_types must be [card] (other methods are not built yet)")
        except FormError as e:
            raise form_error(e) from None
    for name in ("statement_descriptor", "receipt_email"):
        string(params, name, max_chars=500)
    auto = params.get("automatic_payment_methods")
    if auto is not None and not isinstance(auto, dict):
        raise invalid("automatic_payment_methods", "automatic_payment_methods must be an object")
    card, pm = _payment_method(params)
    assert amount is not None
    return CreateIntent(amount, currency.upper(), CAPTURE_METHODS[capture], card, pm, metadata(params),
                        string(params, "description", max_chars=1000), expand(params))


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
    reject_unknown(three_ds, {"ares_trans_status", "electronic_commerce_indicator", "transaction_id", "version",
                              "cryptogram"}, base)
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
    reject_unknown(params, {"payment_intent", "charge", "amount", "reason", "metadata", "expand"})
    if params.get("charge") is not None:
        raise invalid("charge", "refund a payment_intent (charges are not separate objects here)")
    pi = string(params, "payment_intent", max_chars=100)
    if pi is None:
        raise missing("payment_intent")
    return CreateRefund(pi, integer(params, "amount"), choice(params, "reason", REFUND_REASONS), metadata(params),
                        expand(params))


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
