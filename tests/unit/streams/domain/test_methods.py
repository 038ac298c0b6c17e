"""streams/domain/methods.py: what each method needs at ingest (the ingest tests run it on
the wire; these pin the rule itself), the currencies of its rails, instrument labels."""

from __future__ import annotations

import pytest

from connectors.providers.rails import load_rail_configs
from connectors.providers.router import load_router_config
from models.blocklist import email_digest
from streams.domain.methods import (
    METHODS,
    NOT_ON_RAILS,
    MethodError,
    check_instrument,
    check_return_code,
    instrument_label,
    method_currencies,
    method_of,
    risk_fields,
    risk_key,
)

WALLET = {"provider": "google_pay", "token": "wtok_0a1b2c3d4e5f6a7b", "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA="}


def test_the_shipped_rails_give_every_method_a_currency() -> None:
    currencies = method_currencies(load_rail_configs(), load_router_config().methods)
    assert set(currencies) == set(METHODS) - NOT_ON_RAILS  # crypto is priced by its chain
    assert currencies["bank_transfer"] == {"USD", "EUR"} and currencies["bnpl"] == {"USD", "EUR", "GBP"}
    assert "KWD" in currencies["card"] and "KWD" not in currencies["wallet"]


def test_method_of_prefers_the_field_then_the_old_metadata_convention() -> None:
    assert method_of({"method": "bnpl", "metadata": {"payment_method": "wallet"}}) == "bnpl"
    assert method_of({"method": None, "metadata": {"payment_method": "wallet"}}) == "wallet"
    assert method_of({"metadata": {}}) == "card"


def test_the_instrument_forwarded_drops_the_cryptogram() -> None:
    checked = check_instrument({"method": "wallet", "wallet": WALLET, "currency": "USD"})
    assert checked.fields() == {
        "method": "wallet",
        "wallet": {
            "provider": "google_pay",
            "token": WALLET["token"],
            "cryptogram_verified": False,
        },  # opaque: format-checked
        "bank_account": None,
        "bnpl_provider": None,
    }


def test_sepa_debits_euros_and_ach_dollars() -> None:
    mandate = {"scheme": "sepa", "mandate_id": "MD-1", "account_last4": "0001"}
    assert (
        check_instrument({"method": "bank_transfer", "bank_account": mandate, "currency": "EUR"}).bank_account
        == mandate
    )
    with pytest.raises(MethodError) as e:
        check_instrument({"method": "bank_transfer", "bank_account": mandate, "currency": "USD"})
    assert e.value.reason == "currency_not_supported"


@pytest.mark.parametrize("code", ["R01", "R10", "AC04", "MD07"])
def test_return_codes_of_both_schemes(code: str) -> None:
    assert check_return_code(code) == code


@pytest.mark.parametrize("code", [None, "", "R1", "r01", "R001", "4242424242424242"])
def test_bad_return_codes(code: str | None) -> None:
    with pytest.raises(MethodError, match="invalid_return_code"):
        check_return_code(code)


def test_instrument_labels_name_no_account_number() -> None:
    mandate = {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"}
    assert instrument_label("bank_transfer", {"bank_account": mandate}) == "ach:MD-1:****6789"
    assert instrument_label("wallet", {"wallet": {"provider": "apple_pay", "token": "t"}}) == "apple_pay"
    assert instrument_label("bnpl", {"bnpl_provider": "later"}) == "later"
    assert instrument_label("card", {"card": {"token": "tok"}}) is None


# --- the risk stage's key and blocklist fields per method (docs/fraud.md, "Every method") ---

DIGEST = "ab" * 32


def validated(method: str | None, **fields) -> dict:
    base = {
        "merchant_id": "m_1",
        "payment_id": "pay_1",
        "metadata": {},
        "method": method,
        "card": None,
        "wallet": None,
        "bank_account": None,
        "bnpl_provider": None,
        "crypto": None,
    }
    return base | fields


@pytest.mark.parametrize(
    "cmd, key, matched",
    [
        (validated(None, card={"token": "tok_a", "bin": "424242"}), "tok_a", {"bin": "424242"}),
        (
            validated("wallet", wallet={"provider": "apple_pay", "token": "wtok_0a1b2c3d4e5f6a7b"}),
            "wallet:apple_pay:wtok_0a1b2c3d4e5f6a7b",
            {"wallet_token": "wtok_0a1b2c3d4e5f6a7b"},
        ),
        (
            validated(
                "bank_transfer",
                bank_account={"scheme": "sepa", "mandate_id": "MD-1", "account_last4": "3000"},
                metadata={"bank_account_digest": DIGEST},
            ),
            f"bank:{DIGEST}",
            {"bank_account_hash": DIGEST, "mandate": "m_1:MD-1"},
        ),
        (
            validated(
                "bank_transfer",
                bank_account={"scheme": "ach", "mandate_id": "MD-1", "account_last4": "3000"},
                metadata={"bank_account_digest": "not-a-digest"},
            ),
            "mandate:m_1:MD-1",
            {"mandate": "m_1:MD-1"},
        ),
        (
            validated("bnpl", bnpl_provider="later", metadata={"bnpl_customer": "cust_9", "email": "a@b.c"}),
            "bnpl:later:cust_9",
            {"bnpl_customer": "later:cust_9"},
        ),
        (
            validated("bnpl", bnpl_provider="later", metadata={"email": "A@B.c"}),
            f"bnpl:later:email:{email_digest('a@b.c')}",
            {},
        ),
        (validated("bnpl", bnpl_provider="later"), "bnpl:later:payment:pay_1", {}),
        (
            validated(
                "crypto", crypto={"asset": "USDC", "refund_address": "0xABCdef0000000000000000000000000000000001"}
            ),
            "crypto:0xabcdef0000000000000000000000000000000001",
            {"crypto_address": "0xabcdef0000000000000000000000000000000001"},
        ),
    ],
)
def test_each_method_is_keyed_by_its_own_instrument(cmd, key, matched) -> None:
    fields = risk_fields(cmd)
    assert risk_key(cmd) == key == fields["card_token"]
    assert {k: v for k, v in fields.items() if k not in ("card_token", "method")} == matched
    assert fields.get("method") == (None if cmd["method"] is None else cmd["method"])


def test_a_create_without_its_instrument_has_no_risk_key() -> None:
    assert risk_key(validated(None)) is None and risk_key(validated("wallet")) is None
