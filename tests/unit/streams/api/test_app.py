"""The HTTP front door over an in-memory bus: idempotency, error shapes, auth,
rate limits. Every refusal is checked to publish nothing."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import httpx
import pytest

from connectors.vault.intake import CardOpener
from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PanScanner
from schemas.codec import Codec
from schemas.ids import derive_payment_id
from streams.api import auth
from streams.api.app import ApiConfig
from tests.unit.streams.api.conftest import CARD, DECLINED_CARD, Api, Clock, build_api


def error_of(r: httpx.Response) -> dict:
    body = r.json()
    assert set(body) == {"error"} and {"type", "code", "message", "param"} <= set(body["error"]), body
    return body["error"]


def test_create_publishes_one_command_and_answers_the_payment(api: Api, intake_keys: FileKeyStore) -> None:
    r = api.create()
    assert r.status_code == 200, r.text
    pid = derive_payment_id("m_acme", "order-1")
    assert r.json() == {
        "id": pid,
        "object": "payment",
        "merchant_id": "m_acme",
        "status": "authorized",
        "currency": "USD",
        "authorized_minor": 1999,
        "captured_minor": 0,
        "refunded_minor": 0,
        "card": {"bin": "424242", "last4": "4242"},
    }
    assert "Idempotent-Replayed" not in r.headers
    [cmd] = api.bus.published
    assert cmd["kind"] == "create" and cmd["merchant_id"] == "m_acme" and cmd["payment_id"] == pid
    assert cmd["idempotency_key"] == "order-1" and cmd["amount_minor"] == 1999 and cmd["card"] is None
    # The card is sealed to this command: no PAN or CVC on payment-commands, only ingest can open it.
    data = Codec("PaymentCommand").encode(cmd, check=True)
    assert PanScanner([CARD["number"]]).scan(data) == [] and b'"123"' not in data and cmd["sealed_card"] is not None
    opened = CardOpener(intake_keys).open(cmd["sealed_card"], "m_acme", cmd["command_id"])
    assert (opened.number, opened.exp_month, opened.exp_year, opened.cvc_presented) == (CARD["number"], 12, 2030, True)


def test_a_card_the_sealer_refuses_is_a_402_and_nothing_is_published(api: Api) -> None:
    r = api.create(card=CARD | {"number": "4242-4242-4242-424x"})
    assert (
        r.status_code == 402 and error_of(r)["code"] == "invalid_card_number" and error_of(r)["param"] == "card.number"
    )
    assert "4242" not in r.text and api.bus.published == []


def test_a_retry_replays_the_stored_response_without_publishing(api: Api) -> None:
    first = api.create()
    again = api.create()
    assert again.status_code == 200 and again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(api.bus.published) == 1


def test_a_decline_is_a_402_card_error_and_is_replayed_too(api: Api) -> None:
    r = api.create(card=CARD | {"number": DECLINED_CARD})
    assert r.status_code == 402
    e = error_of(r)
    assert e["type"] == "card_error" and e["code"] == "card_declined"
    assert e["payment_id"] == derive_payment_id("m_acme", "order-1")
    again = api.create(card=CARD | {"number": DECLINED_CARD})
    assert again.status_code == 402 and again.headers["Idempotent-Replayed"] == "true"
    assert len(api.bus.published) == 1


def test_a_changed_body_under_the_same_key_is_a_conflict(api: Api) -> None:
    api.create()
    r = api.create(amount_minor=2000)
    assert r.status_code == 409 and error_of(r)["code"] == "idempotency_conflict"
    assert error_of(r)["type"] == "idempotency_error"
    assert len(api.bus.published) == 1


def test_the_pipelines_conflict_and_replay_map_like_ours(api: Api, intake_keys: FileKeyStore) -> None:
    """Another instance (or this one before a restart) used the key: the pipeline answers."""
    api.create()
    api2 = build_api(api.keys_path.parent / "second", _same_keys(api), intake_keys)
    api2.bus.respond = api.pipeline  # the same pipeline behind a second API process
    r = api2.create()
    assert r.status_code == 200 and r.headers["Idempotent-Replayed"] == "true"
    assert r.json()["status"] == "authorized"
    c = api2.create(amount_minor=5)
    assert c.status_code == 409 and error_of(c)["code"] == "idempotency_conflict"


def _same_keys(api: Api) -> tuple[Path, str, str]:
    api.keys_path.parent.joinpath("second").mkdir()
    return api.keys_path, api.secret, api.other_secret


def test_follow_ups_capture_refund_and_get(api: Api) -> None:
    pid = api.create().json()["id"]
    cap = api.client.post(f"/v1/payments/{pid}/capture", json={"amount_minor": 1000}, headers=api.headers("cap-1"))
    assert cap.status_code == 200 and cap.json()["captured_minor"] == 1000 and cap.json()["status"] == "captured"
    ref = api.client.post(f"/v1/payments/{pid}/refunds", headers=api.headers("ref-1"))
    assert ref.status_code == 200 and ref.json()["refunded_minor"] == 1000
    got = api.client.get(f"/v1/payments/{pid}", headers=api.headers())
    assert got.status_code == 200 and got.json()["refunded_minor"] == 1000
    assert [c["kind"] for c in api.bus.published] == ["create", "capture", "refund"]
    assert api.bus.published[2]["amount_minor"] is None  # no amount: all that is left


def test_confirm_carries_the_3ds_result_and_evidence_the_merchants_answer(api: Api) -> None:
    pid = api.create().json()["id"]
    three_ds = {"trans_status": "Y", "eci": "05", "ds_trans_id": "6f1f6d7e-3c5a-4b7a-9e0e-2f7c1a8b9d10"}
    r = api.client.post(f"/v1/payments/{pid}/confirm", json={"three_ds": three_ds}, headers=api.headers("3ds-1"))
    assert r.status_code == 200 and r.json()["status"] == "authorized"
    assert api.bus.published[-1]["kind"] == "confirm"
    assert api.bus.published[-1]["three_ds"] == three_ds | {"authentication_value": None}
    r = api.client.post(
        f"/v1/payments/{pid}/dispute/evidence",
        json={"evidence": "signed delivery receipt"},
        headers=api.headers("ev-1"),
    )
    assert r.status_code == 200
    assert api.bus.published[-1]["kind"] == "dispute_evidence"
    assert api.bus.published[-1]["dispute"]["evidence"] == "signed delivery receipt"
    sent = len(api.bus.published)
    bad = api.client.post(
        f"/v1/payments/{pid}/confirm", json={"three_ds": {"trans_status": "X"}}, headers=api.headers("3ds-2")
    )
    assert bad.status_code == 400 and len(api.bus.published) == sent  # nothing published


def test_void(api: Api) -> None:
    pid = api.create().json()["id"]
    r = api.client.post(f"/v1/payments/{pid}/void", headers=api.headers("void-1"))
    assert r.status_code == 200 and r.json()["status"] == "voided"


def test_the_same_key_on_two_routes_gets_two_command_ids(api: Api) -> None:
    pid = api.create(capture_method="automatic").json()["id"]
    api.client.post(f"/v1/payments/{pid}/refunds", json={"amount_minor": 5}, headers=api.headers("k"))
    api.client.post(f"/v1/payments/{pid}/void", headers=api.headers("k"))
    ids = [c["command_id"] for c in api.bus.published]
    assert len(set(ids)) == 3


def test_a_state_error_is_a_409_with_the_reason(api: Api) -> None:
    pid = api.create().json()["id"]
    r = api.client.post(f"/v1/payments/{pid}/capture", json={"amount_minor": 10**6}, headers=api.headers("cap-1"))
    assert r.status_code == 400 and error_of(r)["code"] == "amount_exceeds_authorized"
    assert error_of(r)["param"] == "amount_minor"


def test_another_merchants_payment_is_404_and_leaks_nothing(api: Api) -> None:
    pid = api.create().json()["id"]
    theirs = api.client.get(f"/v1/payments/{pid}", headers=api.headers(secret=api.other_secret))
    unknown = api.client.get(f"/v1/payments/pay_{'0' * 32}", headers=api.headers(secret=api.other_secret))
    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    cap = api.client.post(f"/v1/payments/{pid}/capture", headers=api.headers("x", secret=api.other_secret))
    assert cap.status_code == 404 and cap.json() == unknown.json()
    assert "m_acme" not in cap.text and "4242" not in cap.text


def test_a_malformed_payment_id_is_404_and_publishes_nothing(api: Api) -> None:
    r = api.client.post("/v1/payments/not-an-id/capture", headers=api.headers("k"))
    assert r.status_code == 404 and error_of(r)["code"] == "resource_missing"
    assert api.bus.published == []


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (b"{not json", "invalid_json", None),
        (b"[]", "parameter_invalid", None),
        (
            json.dumps({"amount_minor": "1999", "currency": "USD", "card": CARD}).encode(),
            "parameter_invalid",
            "amount_minor",
        ),
        (
            json.dumps({"amount_minor": 19.99, "currency": "USD", "card": CARD}).encode(),
            "parameter_invalid",
            "amount_minor",
        ),
        (
            json.dumps({"amount_minor": True, "currency": "USD", "card": CARD}).encode(),
            "parameter_invalid",
            "amount_minor",
        ),
        (json.dumps({"amount_minor": 1999, "card": CARD}).encode(), "parameter_missing", "currency"),
        (
            json.dumps({"amount_minor": 1999, "currency": "USD", "card": CARD, "amount": 5}).encode(),
            "parameter_unknown",
            "amount",
        ),
        (
            json.dumps({"amount_minor": 1999, "currency": "USD", "card": CARD | {"pin": "1"}}).encode(),
            "parameter_unknown",
            "card.pin",
        ),
        (
            json.dumps({"amount_minor": 2**63, "currency": "USD", "card": CARD}).encode(),
            "parameter_invalid",
            "amount_minor",
        ),
    ],
)
def test_bad_input_is_a_400_with_a_stripe_error_and_publishes_nothing(
    api: Api, body: bytes, code: str, param: str | None
) -> None:
    r = api.client.post("/v1/payments", content=body, headers=api.headers("k") | {"Content-Type": "application/json"})
    assert r.status_code == 400, r.text
    e = error_of(r)
    assert (e["type"], e["code"], e["param"]) == ("invalid_request_error", code, param)
    assert api.bus.published == []


def test_a_card_number_never_comes_back_in_an_error(api: Api) -> None:
    r = api.create(card=CARD | {"number": "4242424242424242" * 2})  # too long: refused by shape
    assert r.status_code == 400 and "4242424242424242" not in r.text


def test_a_missing_idempotency_key_is_a_400(api: Api) -> None:
    r = api.client.post(
        "/v1/payments", json={"amount_minor": 1, "currency": "USD", "card": CARD}, headers=api.headers()
    )
    assert r.status_code == 400
    assert (error_of(r)["code"], error_of(r)["param"]) == ("idempotency_key_missing", "Idempotency-Key")
    assert api.bus.published == []


def test_a_huge_body_is_a_413_and_publishes_nothing(api: Api) -> None:
    big = {"amount_minor": 1, "currency": "USD", "card": CARD, "metadata": {"k": "x" * 20_000}}
    r = api.client.post("/v1/payments", json=big, headers=api.headers("k"))
    assert r.status_code == 413 and error_of(r)["code"] == "body_too_large"

    def chunks():  # no Content-Length: counted as it streams
        yield b'{"amount_minor": 1, "metadata": {"k": "'
        for _ in range(40):
            yield b"x" * 1024
        yield b'"}}'

    r = api.client.post("/v1/payments", content=chunks(), headers=api.headers("k2"))
    assert r.status_code == 413
    assert api.bus.published == []


@pytest.mark.parametrize("authorization", [None, "Bearer nope", "Basic abc", "Bearer sk_0000000000000000_" + "A" * 43])
def test_a_missing_or_wrong_key_is_401(api: Api, authorization: str | None) -> None:
    headers = {"Idempotency-Key": "k"} | ({"Authorization": authorization} if authorization else {})
    r = api.client.post("/v1/payments", json={"amount_minor": 1, "currency": "USD", "card": CARD}, headers=headers)
    assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"
    assert r.headers["WWW-Authenticate"] == "Bearer"
    assert api.bus.published == []


def test_a_key_with_a_wrong_secret_is_401(api: Api) -> None:
    forged = api.secret[:-4] + ("AAAA" if not api.secret.endswith("AAAA") else "BBBB")
    r = api.client.get(f"/v1/payments/pay_{'0' * 32}", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401


def test_a_revoked_key_is_refused_at_the_next_request(api: Api) -> None:
    assert api.client.get(f"/v1/payments/pay_{'0' * 32}", headers=api.headers()).status_code == 404
    keys = auth.load(api.keys_path)
    key_id = auth.KEY_PATTERN.match(api.secret).group(1)  # type: ignore[union-attr]
    keys[key_id] = auth.KeyRecord(**{**keys[key_id].__dict__, "revoked": True})
    auth.save(keys, api.keys_path)
    assert api.client.get(f"/v1/payments/pay_{'0' * 32}", headers=api.headers()).status_code == 401


def test_over_the_rate_a_key_gets_429_with_retry_after(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    clock = Clock()
    api = build_api(tmp_path, key_file, intake_keys, ApiConfig(rate_per_s=0.5, rate_burst=2, rate_queue_max=0), clock)
    url = f"/v1/payments/pay_{'0' * 32}"
    assert [api.client.get(url, headers=api.headers()).status_code for _ in range(2)] == [404, 404]
    r = api.client.get(url, headers=api.headers())
    assert r.status_code == 429 and error_of(r)["type"] == "rate_limit_error"
    assert r.headers["Retry-After"] == "2"  # one token per 2 s
    assert api.client.get(url, headers=api.headers(secret=api.other_secret)).status_code == 404  # per key
    clock.now_s += 2
    assert api.client.get(url, headers=api.headers()).status_code == 404


def test_past_the_timeout_a_write_is_202_and_a_retry_never_publishes_again(api: Api) -> None:
    api.pipeline.silent = True
    r = api.create()
    pid = derive_payment_id("m_acme", "order-1")
    assert r.status_code == 202
    assert r.json() == {
        "object": "payment_operation",
        "payment_id": pid,
        "status": "processing",
        "status_url": f"/v1/payments/{pid}",
    }
    assert r.headers["Location"] == f"/v1/payments/{pid}"
    assert api.create().status_code == 202
    assert len(api.bus.published) == 1
    # The outcome commits late: the next retry gets it, still without publishing.
    api.pipeline.silent = False
    api.bus.answer(api.pipeline(api.bus.published[0]))
    late = api.create()
    assert late.status_code == 200 and late.json()["status"] == "authorized"
    assert len(api.bus.published) == 1
    assert api.client.get(f"/v1/payments/{pid}", headers=api.headers()).json()["status"] == "authorized"


def test_the_same_key_in_flight_is_409_in_use(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    api = build_api(tmp_path, key_file, intake_keys, ApiConfig(outcome_timeout_s=30))
    api.pipeline.silent = True
    body = {"amount_minor": 1999, "currency": "USD", "capture_method": "manual", "card": CARD}

    async def scenario() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=api.client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            first = asyncio.create_task(client.post("/v1/payments", json=body, headers=api.headers("k")))
            while not api.bus.published:  # until the first request has published and waits
                await asyncio.sleep(0)
            second = await client.post("/v1/payments", json=body, headers=api.headers("k"))
            api.pipeline.silent = False
            api.bus.answer(api.pipeline(api.bus.published[0]))
            return await first, second

    first, second = asyncio.run(scenario())
    assert second.status_code == 409 and error_of(second)["code"] == "idempotency_key_in_use"
    assert first.status_code == 200
    assert len(api.bus.published) == 1


def test_an_unavailable_bus_is_503_and_the_key_stays_usable(api: Api) -> None:
    api.bus.available = False
    r = api.create()
    assert r.status_code == 503 and error_of(r)["code"] == "unavailable" and r.headers["Retry-After"] == "1"
    api.bus.available = True
    assert api.create().status_code == 200


def test_the_list_pages_through_the_callers_payments_only(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    mine = sorted(api.create(key=f"o{i}").json()["id"] for i in range(5))
    theirs = api.create(key="o0", secret=api.other_secret).json()["id"]
    seen, after, pages = [], None, 0
    while True:
        r = api.client.get(
            "/v1/payments", params={"limit": 2} | ({"starting_after": after} if after else {}), headers=api.headers()
        )
        assert r.status_code == 200, r.text
        page = r.json()
        assert page["object"] == "list" and len(page["data"]) <= 2
        seen += [p["id"] for p in page["data"]]
        pages += 1
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == mine and pages == 3 and theirs not in seen
    other = api.client.get("/v1/payments", params={"limit": 100}, headers=api.headers(secret=api.other_secret)).json()
    assert [p["id"] for p in other["data"]] == [theirs] and not other["has_more"]


@pytest.mark.parametrize(
    "params,code,param",
    [
        ({"limit": 0}, "parameter_invalid", "limit"),
        ({"limit": 101}, "parameter_invalid", "limit"),
        ({"limit": "ten"}, "parameter_invalid", "limit"),
        ({"starting_after": "pay_x"}, "parameter_invalid", "starting_after"),
    ],
)
def test_the_list_bounds_its_parameters(
    tmp_path: Path, key_file: tuple[Path, str, str], params: dict, code: str, param: str, intake_keys: FileKeyStore
) -> None:
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    r = api.client.get("/v1/payments", params=params, headers=api.headers())
    assert r.status_code == 400 and error_of(r)["code"] == code and error_of(r)["param"] == param


def test_listing_another_merchant_is_403_and_without_read_model_503(
    tmp_path: Path, key_file: tuple[Path, str, str], api: Api, intake_keys: FileKeyStore
) -> None:
    (tmp_path / "r").mkdir()
    with_reader = build_api(tmp_path / "r", key_file, intake_keys, with_reader=True)
    with_reader.create(key="o0", secret=with_reader.other_secret)
    r = with_reader.client.get("/v1/payments", params={"merchant": "m_other"}, headers=with_reader.headers())
    assert r.status_code == 403 and error_of(r)["code"] == "merchant_mismatch" and "pay_" not in r.text
    own = with_reader.client.get("/v1/payments", params={"merchant": "m_acme"}, headers=with_reader.headers())
    assert own.status_code == 200 and own.json()["data"] == []
    down = api.client.get("/v1/payments", headers=api.headers())
    assert down.status_code == 503 and error_of(down)["code"] == "read_model_unavailable"
