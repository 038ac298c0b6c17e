"""Payment methods: what each needs at ingest and how its lifecycle differs. Pure.

A create names its method (PaymentCommand v6 `method`; absent: card) and carries
exactly the instrument that method needs:

| method | instrument | lifecycle (streams/domain/payments.py) |
|---|---|---|
| card | card, card_token or sealed_card (ingest tokenizes) | authorize, capture, void, refund, 3DS step-up, disputes |
| wallet | `wallet`: provider, payment token, cryptogram; no PAN at all | as a card, without a 3DS step-up (the device
authenticated the customer) |
| bank_transfer | `bank_account`: scheme ach/sepa, mandate id, last four digits | no hold: submitted at once, settled
or returned days later (bank_settle, bank_return) |
| bnpl | `bnpl`: the provider | the provider approves the plan, pays the merchant upfront at capture (less its fee);
no disputes here |
| crypto | `crypto`: asset (USDC, BTC), the payer's refund address | quoted, paid on a chain to an address of its own,
confirmed blocks deep (streams/domain/crypto.py); no hold, no disputes |

docs/payments.md (Payment methods) has the why; `check_instrument` is ingest's rule.

Every method is scored by the risk stage, keyed by its instrument (`risk_key`): a
card's token, a wallet account, a bank account (its digest, else the mandate), a BNPL
customer, a crypto payer address; `risk_fields` are what its blocklists match
(docs/fraud.md, "Every method").
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from connectors.providers.rails import RailConfig
from models.blocklist import crypto_address_key, email_digest
from schemas.cards import contains_pan
from schemas.errors import ReasonedError
from schemas.money import ASSET_EXPONENTS, is_asset
from schemas.times import to_ms
from streams.domain.authentication import (
    CRYPTOGRAM_PREFIX,
    Refusal,
    is_signed_token,
    verify_cryptogram,
)
from streams.domain.crypto import check_refund_address

METHODS = ("card", "wallet", "bank_transfer", "bnpl", "crypto")
DEFAULT_METHOD = "card"
WALLET_PROVIDERS = frozenset({"apple_pay", "google_pay"})
# A bank scheme debits accounts in one currency: ACH in USD, SEPA in EUR.
SCHEME_CURRENCY = {"ach": "USD", "sepa": "EUR"}
# The device authenticated the customer (wallet), or 3DS does not apply (a bank
# debit, a BNPL plan the provider approves): a step-up request authorizes instead.
NO_STEP_UP = frozenset({"wallet", "bank_transfer", "bnpl", "crypto"})
# Disputes are the card networks' (a wallet pays through one); a bank transfer is
# contested by a return, a BNPL plan with its provider.
DISPUTABLE = frozenset({"card", "wallet"})
# A bank debit has no authorization hold: it is submitted at once.
NO_MANUAL_CAPTURE = frozenset({"bank_transfer", "crypto"})
# Which instrument field each non-card method carries (PaymentCommand v6).
INSTRUMENT_FIELD = {"wallet": "wallet", "bank_transfer": "bank_account", "bnpl": "bnpl", "crypto": "crypto"}
# A crypto payment is priced by its chain (connectors/providers/chains.toml), not by a rail.
NOT_ON_RAILS = frozenset({"crypto"})
CARD_FIELDS = ("card", "card_token", "sealed_card")
WALLET_TOKEN_PATTERN = re.compile(r"[A-Za-z0-9_-]{16,128}")
CRYPTOGRAM_PATTERN = re.compile(r"[A-Za-z0-9+/]{16,64}={0,2}")
MANDATE_ID_PATTERN = re.compile(r"[A-Za-z0-9_-]{1,35}")
BNPL_PROVIDER_PATTERN = re.compile(r"[a-z0-9_]{1,32}")
# Create metadata the risk stage reads for a non-card instrument (optional, never a
# number): the SHA-256 of the debited account's normalized number (models.blocklist.
# account_digest), and the customer's account id at the BNPL provider.
ACCOUNT_DIGEST_METADATA = "bank_account_digest"
BNPL_CUSTOMER_METADATA = "bnpl_customer"
ACCOUNT_DIGEST_PATTERN = re.compile(r"[0-9a-f]{64}")
BNPL_CUSTOMER_PATTERN = re.compile(r"[A-Za-z0-9_.@-]{1,64}")
# ACH return codes R01..R99; SEPA's ISO 20022 reason codes (AC04, AM04, MD07, MS03...).
RETURN_CODE_PATTERN = re.compile(r"R[0-9]{2}|[A-Z]{2}[0-9]{2}")


class MethodError(ReasonedError, ValueError):
    """A create whose method and instrument do not fit; `reason` is the rejection code."""


@dataclass(frozen=True)
class Instrument:
    """What a create's method forwards on ValidatedCommand v5 (card: the tokenized
    card goes separately, as before)."""

    method: str
    wallet: dict[str, Any] | None = None
    bank_account: dict[str, str] | None = None
    bnpl_provider: str | None = None
    crypto: dict[str, str] | None = None

    def fields(self) -> dict[str, Any]:
        out = {
            "method": self.method,
            "wallet": self.wallet,
            "bank_account": self.bank_account,
            "bnpl_provider": self.bnpl_provider,
        }
        if self.crypto is not None:  # only then: other methods' records stay as they were
            out["crypto"] = self.crypto
        return out


NO_INSTRUMENT = {"method": None, "wallet": None, "bank_account": None, "bnpl_provider": None}


def method_of(cmd: Mapping[str, Any]) -> str:
    """A ValidatedCommand's method: its own field, else (records before v5) the old
    metadata convention, else card."""
    return cmd.get("method") or (cmd.get("metadata") or {}).get("payment_method") or DEFAULT_METHOD


def check_instrument(
    cmd: Mapping[str, Any],
    method_currencies: Mapping[str, frozenset[str]] | None = None,
    wallet_keys: Mapping[str, bytes] | None = None,
    payment_id: str | None = None,
) -> Instrument:
    """The create's method and instrument, checked: exactly the instrument its method
    needs, no card number in it, a currency its rails take, a signed wallet cryptogram
    that verifies under `wallet_keys` (the wallet provider's public keys) for this
    create (`payment_id`, merchant, amount, event time). MethodError otherwise.
    A card's own fields (which one, Luhn, expiry) are ingest's tokenizer's to check."""
    method = cmd.get("method") or DEFAULT_METHOD
    given = [f for f in (*CARD_FIELDS, *INSTRUMENT_FIELD.values()) if cmd.get(f) is not None]
    needed = CARD_FIELDS if method == "card" else (INSTRUMENT_FIELD[method],)
    extra = [f for f in given if f not in needed]
    if extra:
        raise MethodError("ambiguous_payment_method", f"a {method} create must not carry {', '.join(extra)}")
    if method != "card" and not given:
        raise MethodError("missing_payment_method", f"a {method} create needs {needed[0]}")
    if method in NO_MANUAL_CAPTURE and cmd.get("capture_method") == "manual":
        raise MethodError(
            "capture_method_not_supported", f"a {method} has no authorization hold: capture_method automatic"
        )
    currency = cmd.get("currency")
    if (
        method_currencies is not None
        and method not in NOT_ON_RAILS
        and currency not in method_currencies.get(method, frozenset())
    ):
        takes = ", ".join(sorted(method_currencies.get(method, ()))) or "nothing"
        raise MethodError("currency_not_supported", f"{method} rails take {takes}")
    if method == "wallet":
        return Instrument(method, wallet=_wallet(cmd, wallet_keys or {}, payment_id))
    if method == "bank_transfer":
        return Instrument(method, bank_account=_mandate(cmd["bank_account"], currency))
    if method == "bnpl":
        provider = cmd["bnpl"]["provider"]
        if not BNPL_PROVIDER_PATTERN.fullmatch(provider):
            raise MethodError("invalid_bnpl", "bnpl.provider must be 1..32 chars [a-z0-9_]")
        return Instrument(method, bnpl_provider=provider)
    if method == "crypto":
        return Instrument(method, crypto=_crypto(cmd["crypto"]))
    return Instrument(method)


def _crypto(crypto: Mapping[str, Any]) -> dict[str, str]:
    asset, address = crypto.get("asset"), crypto.get("refund_address")
    if not is_asset(asset):
        raise MethodError("invalid_crypto", f"crypto.asset must be one of {', '.join(sorted(ASSET_EXPONENTS))}")
    problem = check_refund_address(address)
    if problem is not None:
        raise MethodError("invalid_crypto", problem)
    # The payer's address is kept (refunds go there) and screened by the risk stage (risk_fields).
    return {"asset": str(asset), "refund_address": str(address)}


def _wallet(cmd: Mapping[str, Any], keys: Mapping[str, bytes], payment_id: str | None) -> dict[str, Any]:
    wallet = cmd["wallet"]
    token, cryptogram = wallet["token"], wallet["cryptogram"]
    if contains_pan(token) or contains_pan(cryptogram):
        # A device token is never a card number; one that looks like it is refused, never forwarded.
        raise MethodError("pan_in_field", "a wallet token or cryptogram must not contain a card number")
    if not WALLET_TOKEN_PATTERN.fullmatch(token):
        raise MethodError("invalid_wallet", "wallet.token must be 16..128 chars [A-Za-z0-9_-]")
    if wallet["provider"] not in WALLET_PROVIDERS:
        raise MethodError("invalid_wallet", f"wallet.provider must be one of {', '.join(sorted(WALLET_PROVIDERS))}")
    if is_signed_token(cryptogram, CRYPTOGRAM_PREFIX):
        # Signed by the wallet provider: it must be for this very payment (docs/payments.md).
        assert payment_id is not None, "ingest derives a create's payment_id before its instrument"
        checked = verify_cryptogram(
            cryptogram,
            keys,
            provider=wallet["provider"],
            wallet_token=token,
            payment_id=payment_id,
            merchant_id=cmd["merchant_id"],
            amount_minor=cmd["amount_minor"],
            currency=cmd["currency"],
            at_ms=to_ms(cmd["occurred_at"]),
        )
        if isinstance(checked, Refusal):
            raise MethodError(checked.reason, checked.detail)
        verified = True
    elif not CRYPTOGRAM_PATTERN.fullmatch(cryptogram):
        # An opaque cryptogram (producers before version 7): format-checked only, as before.
        raise MethodError("invalid_wallet", "wallet.cryptogram must be a signed wc1 value or 16..64 base64 chars")
    else:
        verified = False
    # The cryptogram authenticates one payment: checked here, not kept downstream; that it
    # verified goes on (ValidatedCommand v8): the payments stage records the liability shift.
    return {"provider": wallet["provider"], "token": token, "cryptogram_verified": verified}


def _mandate(account: Mapping[str, Any], currency: str | None) -> dict[str, str]:
    scheme, mandate_id, last4 = account["scheme"], account["mandate_id"], account["account_last4"]
    if contains_pan(mandate_id):
        raise MethodError("pan_in_field", "bank_account.mandate_id must not contain a card number")
    if not MANDATE_ID_PATTERN.fullmatch(mandate_id):
        raise MethodError("invalid_bank_account", "bank_account.mandate_id must be 1..35 chars [A-Za-z0-9_-]")
    if not (len(last4) == 4 and last4.isascii() and last4.isdigit()):
        raise MethodError(
            "invalid_bank_account", "bank_account.account_last4 must be 4 digits (never the account number)"
        )
    if scheme not in SCHEME_CURRENCY:
        raise MethodError(
            "invalid_bank_account", f"bank_account.scheme must be one of {', '.join(sorted(SCHEME_CURRENCY))}"
        )
    if currency != SCHEME_CURRENCY[scheme]:
        raise MethodError("currency_not_supported", f"{scheme} debits accounts in {SCHEME_CURRENCY[scheme]}")
    return {"scheme": scheme, "mandate_id": mandate_id, "account_last4": last4}


def check_return_code(code: str | None) -> str:
    if code is None or not RETURN_CODE_PATTERN.fullmatch(code):
        raise MethodError("invalid_return_code", "bank_notice.return_code must be an ACH (R01) or SEPA (AC04) code")
    return code


def method_currencies(
    rails: Mapping[str, RailConfig], methods: Mapping[str, tuple[str, ...]]
) -> dict[str, frozenset[str]]:
    """method -> the currencies some rail of its kinds takes (routing.toml `methods`)."""
    return {
        m: frozenset().union(*(r.currencies for r in rails.values() if r.kind in kinds)) for m, kinds in methods.items()
    }


def instrument_label(method: str, cmd: Mapping[str, Any]) -> str | None:
    """What the payment keeps to name its non-card instrument: the wallet, the
    masked mandate, the BNPL provider (None for a card: its BIN and last four)."""
    if method == "wallet" and cmd.get("wallet"):
        return str(cmd["wallet"]["provider"])
    if method == "bank_transfer" and cmd.get("bank_account"):
        a = cmd["bank_account"]
        return f"{a['scheme']}:{a['mandate_id']}:****{a['account_last4']}"
    if method == "bnpl" and cmd.get("bnpl_provider"):
        return str(cmd["bnpl_provider"])
    if method == "crypto" and cmd.get("crypto"):
        # asset:refund_address, what the quote (maybe after a review) needs
        return f"{cmd['crypto']['asset']}:{cmd['crypto']['refund_address']}"
    return None


def risk_fields(cmd: Mapping[str, Any]) -> dict[str, str] | None:
    """What the risk stage keys and matches a create's instrument by (a ValidatedCommand):
    `card_token` (the instrument's key: its velocity state and the risk partition's
    key, named as the card's) plus, for a non-card method, `method` and the fields its
    blocklist kinds match (models/blocklist.py). None: nothing to key by (a create
    without its instrument, refused upstream)."""
    method = method_of(cmd)
    if method == "card":
        card = cmd.get("card")
        return {"card_token": card["token"], "bin": card["bin"]} if card else None
    meta = cmd.get("metadata") or {}
    if method == "wallet" and cmd.get("wallet"):
        w = cmd["wallet"]
        return {"card_token": f"wallet:{w['provider']}:{w['token']}", "method": method, "wallet_token": w["token"]}
    if method == "bank_transfer" and cmd.get("bank_account"):
        a = cmd["bank_account"]
        # A mandate id is unique per creditor only: scoped by the merchant.
        out = {"method": method, "mandate": f"{cmd['merchant_id']}:{a['mandate_id']}"}
        digest = meta.get(ACCOUNT_DIGEST_METADATA)
        if isinstance(digest, str) and ACCOUNT_DIGEST_PATTERN.fullmatch(digest):
            return out | {"card_token": f"bank:{digest}", "bank_account_hash": digest}
        return out | {"card_token": f"mandate:{out['mandate']}"}
    if method == "bnpl" and cmd.get("bnpl_provider"):
        provider = cmd["bnpl_provider"]
        customer, email = meta.get(BNPL_CUSTOMER_METADATA), meta.get("email")
        if isinstance(customer, str) and BNPL_CUSTOMER_PATTERN.fullmatch(customer):
            ref = f"{provider}:{customer}"
            return {"card_token": f"bnpl:{ref}", "method": method, "bnpl_customer": ref}
        if isinstance(email, str) and email:
            return {"card_token": f"bnpl:{provider}:email:{email_digest(email)}", "method": method}
        # No customer to follow: a key of its own (no history, so no velocity); the
        # amount, country and blocklist (email, IP, device) rules still apply.
        return {"card_token": f"bnpl:{provider}:payment:{cmd['payment_id']}", "method": method}
    if method == "crypto" and cmd.get("crypto"):
        address = crypto_address_key(cmd["crypto"]["refund_address"])
        return {"card_token": f"crypto:{address}", "method": method, "crypto_address": address}
    return None


def risk_key(cmd: Mapping[str, Any]) -> str | None:
    """The key a create is scored under (its risk partition's key), None: nothing to key by."""
    fields = risk_fields(cmd)
    return None if fields is None else fields["card_token"]
