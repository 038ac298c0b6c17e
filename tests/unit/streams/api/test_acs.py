"""The simulated issuer on the API: next_action points at it, the directory server
answers frictionless or challenge, the ACS's challenge takes the test code, and what it
signs verifies for the payment (as the payments stage will check it)."""

from __future__ import annotations

from connectors.vault.keys import ACS_SIGNING, FileKeyStore
from schemas.times import to_ms
from streams.api.acs import TEST_OTP
from streams.domain.authentication import verify_cavv
from tests.unit.streams.api.conftest import CARD, STEP_UP_CARD, T0, Api

STEP_UP = CARD | {"number": STEP_UP_CARD}


def paused(api: Api, key: str = "order-1", amount: int = 1999) -> str:
    r = api.create(key, amount_minor=amount, card=STEP_UP)
    assert r.status_code == 200 and r.json()["status"] == "requires_action", r.text
    pid = r.json()["id"]
    assert r.json()["next_action"] == {
        "type": "three_d_secure",
        "three_d_secure": {
            "authenticate_url": f"/v1/payments/{pid}/three_ds/authenticate",
            "confirm_url": f"/v1/payments/{pid}/confirm",
        },
    }
    return pid


def authenticate(api: Api, pid: str, secret: str | None = None, **body: object):  # type: ignore[no-untyped-def]
    return api.client.post(
        f"/v1/payments/{pid}/three_ds/authenticate",
        json={"amount_minor": 1999, "currency": "USD"} | body,
        headers=api.headers(secret=secret),
    )


def verified(keys: FileKeyStore, pid: str, result: dict, amount: int = 1999):  # type: ignore[no-untyped-def]
    return verify_cavv(
        result["authentication_value"],
        keys.public_keys(ACS_SIGNING),
        payment_id=pid,
        merchant_id="m_acme",
        amount_minor=amount,
        currency="USD",
        trans_status=result["trans_status"],
        eci=result["eci"],
        ds_trans_id=result["ds_trans_id"],
        at_ms=to_ms(T0),
    )


def test_a_challenge_then_frictionless_for_the_device_that_passed_it(api: Api, intake_keys: FileKeyStore) -> None:
    pid = paused(api)
    first = authenticate(api, pid, device_id="dev-1", account_age_days=400).json()
    assert (first["flow"], first["reason"], first["trans_status"]) == ("challenge", "unknown_device", "C")
    url = first["challenge_url"]
    wrong = api.client.post(url, json={"otp": "000000"}).json()
    assert (wrong["trans_status"], wrong["attempts_left"]) == ("C", 2)
    passed = api.client.post(url, json={"otp": TEST_OTP}).json()
    assert (passed["flow"], passed["trans_status"], passed["eci"]) == ("challenge", "Y", "05")
    assert verified(intake_keys, pid, passed).payment_id == pid
    assert api.client.post(url, json={"otp": TEST_OTP}).status_code == 404  # answered: gone
    # The issuer now knows the device: a small payment of an established account is frictionless.
    again = authenticate(api, paused(api, "order-2"), device_id="dev-1", account_age_days=400).json()
    assert (again["flow"], again["reason"], again["trans_status"]) == ("frictionless", "low_risk", "Y")
    # ... unless the amount or the requestor's fraud score asks for a challenge.
    assert (
        authenticate(
            api, paused(api, "order-3", 30_000), device_id="dev-1", account_age_days=400, amount_minor=30_000
        ).json()["reason"]
        == "amount_over_frictionless_limit"
    )
    assert (
        authenticate(
            api, paused(api, "order-4"), device_id="dev-1", account_age_days=400, fraud_score_ppm=900_000
        ).json()["reason"]
        == "high_risk_score"
    )


def test_three_wrong_codes_fail_the_authentication(api: Api) -> None:
    url = authenticate(api, paused(api)).json()["challenge_url"]
    answers = [api.client.post(url, json={"otp": "999999"}).json()["trans_status"] for _ in range(3)]
    assert answers == ["C", "C", "N"]
    assert api.client.post(url, json={"otp": TEST_OTP}).status_code == 404


def test_authenticate_refuses_what_the_pipeline_would(api: Api) -> None:
    pid = paused(api)
    r = authenticate(api, pid, amount_minor=1)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "amount_mismatch")
    assert authenticate(api, pid, secret=api.other_secret).status_code == 404  # another merchant's payment
    assert authenticate(api, "pay_" + "0" * 32).status_code == 404
    assert authenticate(api, "not-a-payment").status_code == 404
    done = api.create("order-9").json()["id"]  # authorized at once: nothing to authenticate
    r = authenticate(api, done)
    assert (r.status_code, r.json()["error"]["code"]) == (409, "not_awaiting")
    r = api.client.post(f"/v1/payments/{pid}/three_ds/authenticate", json={"amount_minor": 1999, "currency": "USD"})
    assert r.status_code == 401  # the merchant's key, as every /v1 route
    assert authenticate(api, pid, device_id="").status_code == 400
    assert api.client.post("/acs/v1/challenges/unknown", json={"otp": TEST_OTP}).status_code == 404


def test_confirm_forwards_the_signed_value(api: Api) -> None:
    pid = paused(api)
    url = authenticate(api, pid).json()["challenge_url"]
    result = api.client.post(url, json={"otp": TEST_OTP}).json()
    three_ds = {k: result[k] for k in ("trans_status", "eci", "ds_trans_id", "authentication_value")}
    r = api.client.post(f"/v1/payments/{pid}/confirm", json={"three_ds": three_ds}, headers=api.headers("3ds-1"))
    assert r.status_code == 200 and api.bus.published[-1]["three_ds"] == three_ds
