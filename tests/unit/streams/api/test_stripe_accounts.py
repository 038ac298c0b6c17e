"""Stripe Connect over the registry and the ledger: connected accounts opened with
their KYC checks, destination charges as split payments, transfers and application
fees listed for their platform only (over fakes of the registry and the read model;
tests/integration/api/test_stripe_sdk.py runs them on the real pipeline)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from connectors.vault.keys import FileKeyStore
from streams.api.stripe_accounts import account_id
from tests.unit.streams.api.conftest import Api, build_api
from tests.unit.streams.api.test_stripe_routes import create, error_of, post

COMPANY = {"type": "custom", "country": "de", "business_type": "company", "company[name]": "Seller GmbH",
           "company[registration_number]": "HRB-12345", "company[owners][0]": "Ada Lovelace",
           "capabilities[card_payments][requested]": "true", "capabilities[transfers][requested]": "true",
           "documents[registration_certificate]": "docs/seller/hrb.pdf", "documents[owner_id]": "docs/seller/id.pdf",
           "documents[proof_of_address]": "docs/seller/address.pdf"}
DOCUMENTS = {k: v for k, v in COMPANY.items() if k.startswith("documents")}


def test_an_account_is_opened_checked_and_connected_to_its_platform_only(api: Api) -> None:
    r = post(api, "/v1/accounts", COMPANY, key="seller-1")
    assert r.status_code == 200, r.text
    acct = r.json()
    assert (acct["id"], acct["object"], acct["country"], acct["charges_enabled"], acct["payouts_enabled"]) == (
        account_id("m_acme", "seller-1"), "account", "DE", True, True)
    assert acct["requirements"]["disabled_reason"] is None and acct["paystream"]["kyc_status"] == "verified"
    assert "Ada" not in r.text and "Seller GmbH" not in r.text  # names stay in the registry
    assert api.registry is not None
    account, platform = api.registry.writes  # the account first: the platform never lists one not written
    assert (account["merchant_id"], account["platform_id"]) == (acct["id"], "m_acme")
    assert platform["merchant_id"] == "m_acme" and platform["connected"] == [acct["id"]]
    again = post(api, "/v1/accounts", COMPANY, key="seller-1")  # a retry finds it, checks nothing again
    assert again.json() == acct and len(api.registry.writes) == 2
    changed = post(api, "/v1/accounts", COMPANY | {"company[name]": "Other GmbH"}, key="seller-1")
    assert changed.status_code == 400 and error_of(changed)["type"] == "idempotency_error"

    listed = api.client.get("/v1/accounts", headers=api.headers())
    assert [a["id"] for a in listed.json()["data"]] == [acct["id"]]
    assert api.client.get(f"/v1/accounts/{acct['id']}", headers=api.headers()).json() == acct
    theirs = api.client.get(f"/v1/accounts/{acct['id']}", headers=api.headers(secret=api.other_secret))
    assert theirs.status_code == 404 and error_of(theirs)["code"] == "resource_missing"
    assert api.client.get("/v1/accounts", headers=api.headers(secret=api.other_secret)).json()["data"] == []
    assert api.client.get("/v1/accounts/m_acme", headers=api.headers()).status_code == 404  # itself is no account of its


def test_a_manual_review_leaves_the_account_pending_and_unconnected(api: Api) -> None:
    r = post(api, "/v1/accounts", {"country": "US", "business_type": "individual", "individual[first_name]": "Ada",
                                   "individual[last_name]": "L", "individual[id_number]": "MANUAL-1"} | DOCUMENTS,
             key="seller-2")
    acct = r.json()
    assert (acct["charges_enabled"], acct["requirements"]["disabled_reason"], acct["paystream"]["kyc_status"]) == (
        False, "requirements.pending_verification", "pending")
    assert api.registry is not None and [w["merchant_id"] for w in api.registry.writes] == [acct["id"]]
    assert [a["id"] for a in api.client.get("/v1/accounts", headers=api.headers()).json()["data"]] == [acct["id"]]


@pytest.mark.parametrize("change, param", [
    ({"type": "express"}, "type"), ({"email": "a@example.com"}, "email"), ({"metadata[k]": "v"}, "metadata"),
    ({"country": None}, "country"), ({"company[owners][0]": None}, "company[owners]"),
    ({"company[registration_number]": None}, "company[registration_number]"), ({"company[vat]": "x"}, "company[vat]"),
    ({"documents[passport]": "x"}, "documents"),
])
def test_an_account_refuses_what_it_cannot_keep_or_check(api: Api, change: dict[str, Any], param: str) -> None:
    form = {k: v for k, v in (COMPANY | change).items() if v is not None}
    r = post(api, "/v1/accounts", form)
    assert r.status_code == 400 and error_of(r)["param"] == param, r.text
    assert api.registry is not None and api.registry.writes == []


def test_a_platform_that_is_not_verified_opens_no_account(api: Api) -> None:
    assert api.registry is not None
    api.registry.records.pop("m_acme")
    r = post(api, "/v1/accounts", COMPANY)
    assert r.status_code == 400 and error_of(r)["code"] == "account_invalid" and api.registry.writes == []


def test_a_destination_charge_is_a_split_payment(api: Api) -> None:
    r = create(api, key="dest-1", **{"transfer_data[destination]": "acct_seller", "application_fee_amount": "199"})
    assert r.status_code == 200, r.text
    pi = r.json()
    assert (pi["transfer_data"], pi["application_fee_amount"]) == ({"destination": "acct_seller"}, 199)
    [cmd] = api.bus.published
    assert (cmd["splits"], cmd["platform_fee_minor"]) == ([{"merchant_id": "acct_seller", "amount_minor": 1800}], 199)
    by_amount = create(api, key="dest-2", **{"transfer_data[destination]": "acct_seller", "transfer_data[amount]": "1500"})
    assert (api.bus.published[-1]["splits"][0]["amount_minor"], api.bus.published[-1]["platform_fee_minor"]) == (1500, 499)
    assert by_amount.json()["application_fee_amount"] == 499
    assert "splits" not in create(api, key="plain").json() and "splits" not in api.bus.published[-1]


@pytest.mark.parametrize("extra, param", [
    ({"application_fee_amount": "10"}, "application_fee_amount"),
    ({"transfer_data[destination]": "acct_x", "application_fee_amount": "1999"}, "application_fee_amount"),
    ({"transfer_data[destination]": "acct_x", "transfer_data[amount]": "5000"}, "transfer_data[amount]"),
    ({"transfer_data[destination]": "acct_x", "transfer_data[amount]": "5", "application_fee_amount": "1"},
     "application_fee_amount"),
    ({"transfer_data[amount]": "5"}, "transfer_data[destination]"),
    ({"transfer_data[destination]": "acct x"}, "transfer_data[destination]"),
    ({"transfer_data[destination]": "acct_x", "on_behalf_of": "acct_x"}, "on_behalf_of"),
])
def test_a_destination_charge_that_does_not_add_up_is_refused(api: Api, extra: dict[str, str], param: str) -> None:
    r = create(api, key="bad-dest", **extra)
    assert r.status_code == 400 and error_of(r)["param"] == param, r.text
    assert api.bus.published == []


def test_a_destination_not_connected_is_stripes_resource_missing(api: Api) -> None:
    from streams.api.stripe_objects import outcome_answer

    outcome = {"status": "rejected", "kind": "create", "reason_code": "split_account_not_connected",
               "reason_detail": "acct_x is not a verified connected account of m_acme", "payment_id": None,
               "payment_status": None}
    from streams.api.stripe_routes import _CREATE_PARAMS

    status, body, _ = outcome_answer(outcome, None, _CREATE_PARAMS)
    assert (status, body["error"]["code"], body["error"]["param"]) == (400, "resource_missing", "transfer_data[destination]")


def test_transfers_and_application_fees_are_the_platforms_only(tmp_path: Path, key_file: tuple[Path, str, str],
                                                              intake_keys: FileKeyStore) -> None:
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    assert api.reader is not None
    at = datetime(2026, 11, 25, tzinfo=timezone.utc)
    tr = [{"id": f"tr_{'a' * 32}0{n}", "merchant_id": "m_acme", "entry_id": "je_" + "a" * 32, "payment_id": "pay_" + "b" * 32,
           "account": f"merchant:acct_{n}:pending", "currency": "USD", "amount_minor": 100 * n, "occurred_at": at}
          for n in (1, 2, 3)]
    api.reader.transfer_rows += tr
    api.reader.fee_rows.append({"id": "fee_" + "a" * 32, "merchant_id": "m_acme", "entry_id": "je_" + "a" * 32,
                                "payment_id": "pay_" + "b" * 32, "destination": "merchant:acct_1:pending",
                                "currency": "USD", "amount_minor": 40, "occurred_at": at})
    first = api.client.get("/v1/transfers?limit=2", headers=api.headers()).json()
    assert [t["id"] for t in first["data"]] == [tr[0]["id"], tr[1]["id"]] and first["has_more"]
    t = first["data"][1]
    assert (t["object"], t["amount"], t["currency"], t["destination"], t["paystream"]["payment_intent"]) == (
        "transfer", 200, "usd", "acct_2", "pi_" + "b" * 32)
    rest = api.client.get(f"/v1/transfers?starting_after={tr[1]['id']}", headers=api.headers()).json()
    assert [t["id"] for t in rest["data"]] == [tr[2]["id"]] and not rest["has_more"]
    assert api.client.get(f"/v1/transfers/{tr[2]['id']}", headers=api.headers()).json()["amount"] == 300
    [fee] = api.client.get("/v1/application_fees", headers=api.headers()).json()["data"]
    assert (fee["object"], fee["amount"], fee["account"], fee["currency"]) == ("application_fee", 40, "acct_1", "usd")
    assert api.client.get(f"/v1/application_fees/{fee['id']}", headers=api.headers()).json() == fee
    for path in (f"/v1/transfers/{tr[0]['id']}", f"/v1/application_fees/{fee['id']}", "/v1/transfers/tr_x"):
        r = api.client.get(path, headers=api.headers(secret=api.other_secret))
        assert r.status_code == 404 and error_of(r)["code"] == "resource_missing", path
    assert api.client.get("/v1/transfers", headers=api.headers(secret=api.other_secret)).json()["data"] == []
    r = api.client.get("/v1/transfers?starting_after=fee_x", headers=api.headers())
    assert r.status_code == 400 and error_of(r)["param"] == "starting_after"
