"""The Stripe routes' parameters: strings in, typed values or Stripe's errors out (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from streams.api import stripe_params as p
from streams.api.errors import ApiError
from streams.api.forms import decode_form

CARD = {"number": "4242424242424242", "exp_month": "12", "exp_year": "30", "cvc": "123"}


def create(**extra: Any) -> dict[str, Any]:
    return {
        "amount": "1999",
        "currency": "usd",
        "confirm": "true",
        "payment_method_data": {"type": "card", "card": dict(CARD)},
    } | extra


ACH = {
    "type": "us_bank_account",
    "us_bank_account": {
        "account_number": "000123456789",
        "routing_number": "110000000",
        "account_holder_type": "individual",
    },
}
ACCEPTED = {"customer_acceptance": {"type": "online", "online": {"ip_address": "127.0.0.1", "user_agent": "sdk"}}}
WALLET = {"type": "apple_pay", "token": "applepay_tok_0123456789", "cryptogram": "AAAAAAAAAAAAAAAAAAAAAAAAAAA="}


def refused(fn: Any, form: dict[str, Any]) -> ApiError:
    with pytest.raises(ApiError) as e:
        fn(form)
    return e.value


def test_a_create_converts_its_strings() -> None:
    c = p.create_intent(
        create(capture_method="manual", metadata={"order": "o-1", "gone": ""}, expand={"0": "latest_charge"})
    )
    assert (c.amount, c.currency, c.capture_method, c.metadata, c.expand) == (
        1999,
        "USD",
        "manual",
        {"order": "o-1"},
        ("latest_charge",),
    )
    assert c.card == {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
    assert "4242" not in repr(c)
    assert p.create_intent(create(capture_method="automatic_async")).capture_method == "automatic"


def test_each_payment_method_type_maps_onto_the_pipelines_method() -> None:
    ach = p.create_intent(
        create(payment_method_data=ACH, mandate_data=ACCEPTED, payment_method_types={"0": "us_bank_account"})
    )
    assert (ach.source.type, ach.source.method, ach.mandate_accepted, ach.card) == (
        "us_bank_account",
        "bank_transfer",
        True,
        None,
    )
    assert ach.source.instrument == {"bank_account": {"scheme": "ach", "mandate_id": None, "account_last4": "6789"}}
    assert "000123456789" not in repr(ach) and "000123456789" not in repr(ach.source.instrument)
    sepa = p.create_intent(
        create(
            currency="eur",
            payment_method_data={"type": "sepa_debit", "sepa_debit": {"iban": "DE89 3704 0044 0532 0130 00"}},
            mandate="mandate-7",
        )
    )
    assert sepa.source.instrument["bank_account"] == {"scheme": "sepa", "mandate_id": None, "account_last4": "3000"}
    assert sepa.mandate == "mandate-7"
    wallet = p.create_intent(create(payment_method_data={"type": "card", "card": {"wallet": WALLET}}))
    assert (wallet.source.type, wallet.source.method, wallet.card) == ("card", "wallet", None)
    assert wallet.source.instrument == {
        "wallet": {"provider": "apple_pay", "token": WALLET["token"], "cryptogram": WALLET["cryptogram"]}
    }
    bnpl = p.create_intent(create(payment_method_data={"type": "afterpay_clearpay"}))
    assert (bnpl.source.method, bnpl.source.instrument) == ("bnpl", {"bnpl": {"provider": "afterpay_clearpay"}})
    saved = create(payment_method="pm_" + "a" * 32, customer="cus_" + "b" * 32, off_session="true")
    del saved["payment_method_data"]
    s = p.create_intent(saved)
    assert (s.source.saved, s.payment_method, s.customer, s.card) == (True, "pm_" + "a" * 32, "cus_" + "b" * 32, None)
    keep = p.create_intent(create(setup_future_usage="off_session"))
    assert keep.setup_future_usage == "off_session" and keep.source.details["last4"] == "4242"


def test_off_session_on_a_saved_card_is_the_pipelines_merchant_initiated_charge() -> None:
    saved = create(payment_method="pm_" + "a" * 32, customer="cus_" + "b" * 32)
    del saved["payment_method_data"]
    assert p.create_intent(saved | {"off_session": "true"}).merchant_initiated
    assert p.create_intent(saved | {"off_session": "recurring"}).merchant_initiated
    assert not p.create_intent(saved).merchant_initiated  # on session: the customer is there
    assert not p.create_intent(saved | {"off_session": "false"}).merchant_initiated
    # A card in the request is the customer's own, present: nothing to reveal from the vault.
    assert not p.create_intent(create(off_session="true")).merchant_initiated
    with pytest.raises(ApiError) as e:
        p.create_intent(saved | {"off_session": "sometimes"})
    assert e.value.param == "off_session"


def test_stripes_test_payment_methods_are_the_simulated_providers_cards() -> None:
    form = create(payment_method="pm_card_chargeDeclinedInsufficientFunds")
    del form["payment_method_data"]
    c = p.create_intent(form)
    assert c.card["number"] == "4000000000009995" and c.payment_method == "pm_card_chargeDeclinedInsufficientFunds"
    form["payment_method"] = "pm_123"
    assert refused(p.create_intent, form).code == "resource_missing"


@pytest.mark.parametrize(
    "form,status,code,param",
    [
        ({"currency": "usd"}, 400, "parameter_missing", "amount"),
        (create(amount="19.99"), 400, "parameter_invalid", "amount"),
        (create(amount="0"), 400, "parameter_invalid", "amount"),
        (create(amount="-5"), 400, "parameter_invalid", "amount"),
        (create(amount=str(2**63)), 400, "parameter_invalid", "amount"),
        (create(currency="dollars"), 400, "parameter_invalid", "currency"),
        (create(confirm="false"), 400, "parameter_invalid", "confirm"),
        ({"amount": "1", "currency": "usd"}, 400, "parameter_invalid", "confirm"),
        (create(confirm="yes"), 400, "parameter_invalid", "confirm"),
        (create(capture_method="later"), 400, "parameter_invalid", "capture_method"),
        (create(surprise="1"), 400, "parameter_unknown", "surprise"),
        (create(metadata={str(i): "v" for i in range(51)}), 400, "parameter_invalid", "metadata"),
        (create(metadata={"k" * 41: "v"}), 400, "parameter_invalid", "metadata[" + "k" * 40 + "]"),
        (create(metadata={"k": {"nested": "x"}}), 400, "parameter_invalid", "metadata[k]"),
        (create(metadata="x"), 400, "parameter_invalid", "metadata"),
        (create(expand="latest_charge"), 400, "parameter_invalid", "expand"),
        (create(payment_method_data={"type": "bitcoin"}), 400, "parameter_invalid", "payment_method_data[type]"),
        (
            create(payment_method_data={"type": "sepa_debit"}),
            400,
            "parameter_missing",
            "payment_method_data[sepa_debit]",
        ),
        (
            create(payment_method_data={"type": "sepa_debit", "sepa_debit": {"iban": "DE89"}}, mandate_data=ACCEPTED),
            400,
            "parameter_invalid",
            "payment_method_data[sepa_debit][iban]",
        ),
        (create(payment_method_data=ACH), 400, "parameter_missing", "mandate_data"),
        (
            create(payment_method_data=ACH, mandate_data={"customer_acceptance": {}}),
            400,
            "parameter_missing",
            "mandate_data[customer_acceptance][type]",
        ),
        (
            create(
                payment_method_data=ACH
                | {"us_bank_account": {"account_number": "000123456789", "routing_number": "11"}},
                mandate_data=ACCEPTED,
            ),
            400,
            "parameter_invalid",
            "payment_method_data[us_bank_account][routing_number]",
        ),
        (
            create(payment_method_data=ACH, mandate_data=ACCEPTED, capture_method="manual"),
            400,
            "parameter_invalid",
            "capture_method",
        ),
        (create(mandate="mandate-1"), 400, "parameter_invalid", "mandate"),
        (
            create(payment_method_data={"type": "card", "card": {"wallet": WALLET, "number": CARD["number"]}}),
            400,
            "parameter_invalid",
            "payment_method_data[card][wallet]",
        ),
        (
            create(payment_method_data={"type": "card", "card": {"wallet": WALLET | {"type": "samsung_pay"}}}),
            400,
            "parameter_invalid",
            "payment_method_data[card][wallet][type]",
        ),
        (
            create(payment_method_data={"type": "klarna"}, setup_future_usage="off_session"),
            400,
            "parameter_invalid",
            "setup_future_usage",
        ),
        (
            create(payment_method_data={"type": "klarna", "klarna": {"dob": "1"}}),
            400,
            "parameter_invalid",
            "payment_method_data[klarna]",
        ),
        (create(customer="cus_1"), 400, "resource_missing", "customer"),
        (create(setup_future_usage="always"), 400, "parameter_invalid", "setup_future_usage"),
        (create(payment_method_data={"type": "card"}), 400, "parameter_missing", "payment_method_data[card]"),
        (
            create(payment_method_data={"type": "card", "card": CARD | {"pin": "1"}}),
            400,
            "parameter_unknown",
            "payment_method_data[card][pin]",
        ),
        (
            create(payment_method_data={"type": "card", "card": CARD | {"number": "42"}}),
            402,
            "invalid_number",
            "payment_method_data[card][number]",
        ),
        (
            create(payment_method_data={"type": "card", "card": CARD | {"cvc": "12a"}}),
            402,
            "invalid_cvc",
            "payment_method_data[card][cvc]",
        ),
        (
            create(payment_method_data={"type": "card", "card": CARD | {"exp_month": "13"}}),
            400,
            "parameter_invalid",
            "payment_method_data[card][exp_month]",
        ),
        (create(payment_method="pm_card_visa"), 400, "parameter_invalid", "payment_method_data"),
        (create(payment_method_types={"0": "klarna"}), 400, "parameter_invalid", "payment_method_types"),
    ],
)
def test_a_bad_create_is_stripes_error_and_never_echoes_the_card(
    form: dict, status: int, code: str, param: str
) -> None:
    e = refused(p.create_intent, form)
    assert (e.status_code, e.code, e.param) == (status, code, param)
    assert "4242" not in e.message


def test_capture_cancel_refund_and_list() -> None:
    assert p.capture({"amount_to_capture": "400", "final_capture": "false"}) == p.Capture(400, False, ())
    assert p.capture({}) == p.Capture(None, True, ())
    assert refused(p.capture, {"amount": "4"}).code == "parameter_unknown"
    assert p.cancel({"cancellation_reason": "duplicate"}) == ("duplicate", ())
    assert refused(p.cancel, {"cancellation_reason": "bored"}).param == "cancellation_reason"
    r = p.create_refund(decode_form("payment_intent=pi_x&amount=5&reason=duplicate&metadata[a]=b"))
    assert (r.payment_intent, r.amount, r.reason, r.metadata) == ("pi_x", 5, "duplicate", {"a": "b"})
    assert refused(p.create_refund, {}).code == "parameter_missing"
    assert refused(p.create_refund, {"payment_intent": "pi_x", "charge": "ch_1"}).param == "charge"
    pi = "pi_" + "0" * 32
    assert p.list_params({}) == p.ListParams(10, None, None)
    assert p.list_params({"limit": "3", "ending_before": pi}) == p.ListParams(3, None, pi)
    for bad, param in (
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"starting_after": "pay_1"}, "starting_after"),
        ({"starting_after": pi, "ending_before": pi}, "ending_before"),
        ({"created": "1"}, "created"),
    ):
        assert refused(p.list_params, bad).param == param


def test_confirm_takes_stripes_third_party_3ds_result() -> None:
    base = "payment_method_options[card][three_d_secure]"
    form = decode_form(f"{base}[ares_trans_status]=A&{base}[electronic_commerce_indicator]=06&{base}[cryptogram]=AAAB")
    assert p.confirm(form) == (
        {"trans_status": "A", "eci": "06", "ds_trans_id": None, "authentication_value": "AAAB"},
        (),
    )
    assert refused(p.confirm, decode_form(f"{base}[surprise]=1")).code == "parameter_unknown"
    assert (
        refused(p.confirm, decode_form(f"{base}[ares_trans_status]=Y&{base}[electronic_commerce_indicator]=5")).param
        == f"{base}[electronic_commerce_indicator]"
    )
    assert refused(p.confirm, decode_form("payment_method_options[wallet][x]=1")).code == "parameter_unknown"
    assert refused(p.confirm, {"payment_method_options": "x"}).param == "payment_method_options"


def test_dispute_evidence_is_one_text_by_field() -> None:
    form = decode_form("evidence[uncategorized_text]=signed+for&evidence[customer_name]=Ada&evidence[empty]=")
    assert p.dispute_evidence(form, 4000) == "customer_name: Ada\nuncategorized_text: signed for"
    assert refused(lambda f: p.dispute_evidence(f, 4000), {}).code == "parameter_missing"
    assert refused(lambda f: p.dispute_evidence(f, 4000), {"evidence": {"a": " "}}).code == "parameter_missing"
    assert refused(lambda f: p.dispute_evidence(f, 10), {"evidence": {"a": "x" * 20}}).param == "evidence"
    assert refused(lambda f: p.dispute_evidence(f, 4000), {"evidence": {"a": {"b": "c"}}}).param == "evidence[a]"
    assert refused(lambda f: p.dispute_evidence(f, 4000), {"evidence": {"a": "b"}, "submit": "false"}).param == "submit"
    assert (
        refused(lambda f: p.dispute_evidence(f, 4000), {"evidence": {"a": "b"}, "metadata": {"k": "v"}}).param
        == "metadata"
    )
    assert (
        p.list_params({"starting_after": "dp_" + "0" * 32}, p.DISPUTE_CURSOR, "Dispute").starting_after
        == "dp_" + "0" * 32
    )
    assert (
        refused(lambda f: p.list_params(f, p.DISPUTE_CURSOR, "Dispute"), {"starting_after": "pi_" + "0" * 32}).param
        == "starting_after"
    )
