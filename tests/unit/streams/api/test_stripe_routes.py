"""The Stripe routes over the in-memory bus and the fake pipeline: form bodies in,
Stripe's objects and errors out, the same write path (one command per key) as
/v1/payments. The official SDK against a real worker: tests/integration/api."""

from __future__ import annotations

from datetime import UTC
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.vault.keys import FileKeyStore
from schemas.ids import derive_payment_id
from streams.api.stripe_objects import intent_id
from tests.unit.streams.api.conftest import CARD, DECLINED_CARD, Api, build_api

FORM = {"Content-Type": "application/x-www-form-urlencoded"}


def card_form(number: str = CARD["number"]) -> dict[str, str]:
    return {
        "payment_method_data[type]": "card",
        "payment_method_data[card][number]": number,
        "payment_method_data[card][exp_month]": "12",
        "payment_method_data[card][exp_year]": "2030",
        "payment_method_data[card][cvc]": "123",
    }


def post(
    api: Api, path: str, data: dict[str, str] | None = None, key: str | None = "k1", secret: str | None = None
) -> httpx.Response:
    return api.client.post(
        path, data=data or {}, headers=api.headers(key, secret) | {"Stripe-Version": "2025-01-27.acacia"}
    )


def create(api: Api, key: str | None = "order-1", secret: str | None = None, **extra: str) -> httpx.Response:
    data = (
        {"amount": "1999", "currency": "usd", "confirm": "true", "capture_method": "manual", "metadata[order]": "o-1"}
        | card_form()
        | extra
    )
    return post(api, "/v1/payment_intents", data, key, secret)


def error_of(r: httpx.Response) -> dict[str, Any]:
    body = r.json()
    assert set(body) == {"error"} and {"type", "code", "message", "param"} <= set(body["error"]), body
    return body["error"]


def test_create_is_one_sealed_command_answered_with_a_payment_intent(api: Api) -> None:
    r = create(api)
    assert r.status_code == 200, r.text
    pi = r.json()
    pid = derive_payment_id("m_acme", "order-1")
    assert (pi["id"], pi["object"], pi["status"], pi["amount"], pi["amount_capturable"], pi["currency"]) == (
        intent_id(pid),
        "payment_intent",
        "requires_capture",
        1999,
        1999,
        "usd",
    )
    assert pi["metadata"] == {"order": "o-1"} and pi["capture_method"] == "manual"
    [cmd] = api.bus.published
    assert (cmd["kind"], cmd["payment_id"], cmd["amount_minor"], cmd["currency"], cmd["metadata"]) == (
        "create",
        pid,
        1999,
        "USD",
        {"order": "o-1"},
    )
    assert cmd["card"] is None and cmd["sealed_card"] is not None and CARD["number"] not in r.text


def test_a_retry_replays_and_another_body_is_an_idempotency_error(api: Api) -> None:
    first = create(api)
    again = create(api)
    assert again.status_code == 200 and again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    changed = create(api, amount="2000")
    assert changed.status_code == 400 and error_of(changed)["type"] == "idempotency_error"
    assert len(api.bus.published) == 1


def test_a_decline_is_a_402_with_decline_code_and_the_intent(api: Api) -> None:
    r = create(api, **card_form(DECLINED_CARD))
    assert r.status_code == 402
    e = error_of(r)
    assert (e["type"], e["code"], e["decline_code"]) == ("card_error", "card_declined", "generic_decline")
    assert e["payment_intent"]["status"] == "requires_payment_method"
    assert e["payment_intent"]["last_payment_error"]["decline_code"] == "generic_decline"
    assert DECLINED_CARD not in r.text


def test_capture_cancel_and_retrieve(api: Api) -> None:
    pi = create(api).json()
    cap = post(api, f"/v1/payment_intents/{pi['id']}/capture", {"amount_to_capture": "500"}, "cap-1")
    assert cap.status_code == 200, cap.text
    assert api.bus.published[-1]["kind"] == "capture" and api.bus.published[-1]["amount_minor"] == 500
    assert cap.json()["amount_received"] == 500 and cap.json()["metadata"] == {"order": "o-1"}
    got = api.client.get(f"/v1/payment_intents/{pi['id']}", headers=api.headers())
    assert got.status_code == 200 and got.json()["amount_received"] == 500
    other = create(api, key="order-2").json()
    canceled = post(api, f"/v1/payment_intents/{other['id']}/cancel", {"cancellation_reason": "duplicate"}, "void-1")
    assert canceled.status_code == 200, canceled.text
    assert (canceled.json()["status"], canceled.json()["cancellation_reason"]) == ("canceled", "duplicate")
    assert api.bus.published[-1]["kind"] == "void"


def test_another_merchants_intent_is_404_everywhere(api: Api) -> None:
    pi = create(api).json()
    theirs = api.client.get(f"/v1/payment_intents/{pi['id']}", headers=api.headers(secret=api.other_secret))
    assert theirs.status_code == 404 and error_of(theirs)["code"] == "resource_missing"
    for path, form in (
        (f"/v1/payment_intents/{pi['id']}/capture", {}),
        (f"/v1/payment_intents/{pi['id']}/cancel", {}),
        (f"/v1/payment_intents/{pi['id']}/confirm", {f"{THREE_DS}[ares_trans_status]": "Y"}),
        ("/v1/refunds", {"payment_intent": pi["id"]}),
    ):
        theirs = post(api, path, form, f"steal-{path}", api.other_secret)
        assert theirs.status_code == 404, (path, theirs.text)
        assert error_of(theirs)["code"] == "resource_missing" and "o-1" not in theirs.text
    assert [c["kind"] for c in api.bus.published if c["merchant_id"] == "m_other"] == [
        "capture",
        "void",
        "confirm",
        "refund",
    ]
    assert api.pipeline.payments[derive_payment_id("m_acme", "order-1")]["payment_status"] == "authorized"
    for bad in ("pi_nope", "pay_" + "0" * 32):
        assert api.client.get(f"/v1/payment_intents/{bad}", headers=api.headers()).status_code == 404


def test_refund_then_retrieve_it(api: Api) -> None:
    pi = create(api, capture_method="automatic").json()
    assert pi["status"] == "succeeded"
    r = post(api, "/v1/refunds", {"payment_intent": pi["id"], "amount": "300", "metadata[why]": "size"}, "ref-1")
    assert r.status_code == 200, r.text
    refund = r.json()
    assert (refund["object"], refund["amount"], refund["currency"], refund["payment_intent"], refund["status"]) == (
        "refund",
        300,
        "usd",
        pi["id"],
        "succeeded",
    )
    assert refund["metadata"] == {"why": "size"} and refund["id"].startswith("re_")
    got = api.client.get(f"/v1/refunds/{refund['id']}", headers=api.headers())
    assert got.status_code == 200 and got.json() == refund
    # Another merchant's refund is not this process's to show; the read model is asked next,
    # which it cannot be without one: 503, never the refund.
    other = api.client.get(f"/v1/refunds/{refund['id']}", headers=api.headers(secret=api.other_secret))
    assert other.status_code == 503 and "re_" not in other.text
    missing = post(api, "/v1/refunds", {"payment_intent": "pi_x"}, "ref-2")
    assert missing.status_code == 400 and error_of(missing)["param"] == "payment_intent"


def test_another_merchants_refund_is_unknown_to_the_read_model_too(tmp_path: Path, key_file, intake_keys) -> None:  # type: ignore[no-untyped-def]
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    pi = create(api, capture_method="automatic").json()
    refund = post(api, "/v1/refunds", {"payment_intent": pi["id"], "amount": "300"}, "ref-1").json()
    other = api.headers(secret=api.other_secret)
    assert api.client.get(f"/v1/refunds/{refund['id']}", headers=other).status_code == 404
    assert api.client.get("/v1/refunds", headers=other).json()["data"] == []
    bad = api.client.get("/v1/refunds", params={"starting_after": "pi_x"}, headers=other)
    assert bad.status_code == 400 and error_of(bad)["param"] == "starting_after"


def test_bad_bodies_are_stripe_errors_and_publish_nothing(api: Api) -> None:
    json_body = api.client.post("/v1/payment_intents", json={"amount": 5}, headers=api.headers("j"))
    assert json_body.status_code == 400 and error_of(json_body)["code"] == "invalid_content_type"
    twice = api.client.post("/v1/payment_intents", content=b"amount=1&amount=2", headers=api.headers("t") | FORM)
    assert twice.status_code == 400 and error_of(twice)["param"] == "amount"
    unknown = create(api, surprise="1")
    assert unknown.status_code == 400 and error_of(unknown)["code"] == "parameter_unknown"
    long_key = create(api, key="k" * 256)
    assert long_key.status_code == 400 and error_of(long_key)["param"] == "Idempotency-Key"
    sealer_refuses = create(api, **card_form("4242-4242-4242-424x"))
    assert (
        sealer_refuses.status_code == 402 and error_of(sealer_refuses)["param"] == "payment_method_data[card][number]"
    )
    assert "4242" not in sealer_refuses.text
    assert api.bus.published == []


def test_without_an_idempotency_key_each_write_is_new(api: Api) -> None:
    a, b = create(api, key=None), create(api, key=None)
    assert a.status_code == b.status_code == 200 and a.json()["id"] != b.json()["id"]
    assert len(api.bus.published) == 2


def test_the_list_pages_both_ways(tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore) -> None:
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    mine = sorted(create(api, key=f"o{i}").json()["id"] for i in range(5))
    create(api, key="o0", secret=api.other_secret)
    seen, after = [], None
    while True:
        page = api.client.get(
            "/v1/payment_intents",
            params={"limit": 2} | ({"starting_after": after} if after else {}),
            headers=api.headers(),
        ).json()
        assert page["object"] == "list" and page["url"] == "/v1/payment_intents"
        seen += [pi["id"] for pi in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == mine
    back = api.client.get(
        "/v1/payment_intents", params={"limit": 2, "ending_before": mine[3]}, headers=api.headers()
    ).json()
    assert [pi["id"] for pi in back["data"]] == mine[1:3] and back["has_more"]
    first = api.client.get(
        "/v1/payment_intents", params={"limit": 2, "ending_before": mine[2]}, headers=api.headers()
    ).json()
    assert [pi["id"] for pi in first["data"]] == mine[0:2] and not first["has_more"]
    bad = api.client.get("/v1/payment_intents", params={"limit": "0"}, headers=api.headers())
    assert bad.status_code == 400 and error_of(bad)["param"] == "limit"


def test_without_the_read_model_the_list_is_503(api: Api) -> None:
    r = api.client.get("/v1/payment_intents", headers=api.headers())
    assert r.status_code == 503 and error_of(r)["code"] == "read_model_unavailable"


@pytest.mark.parametrize("path", ["/v1/payment_intents", "/v1/refunds"])
def test_no_key_is_401(api: Api, path: str) -> None:
    r = api.client.post(path, data={"amount": "1"})
    assert r.status_code == 401 and error_of(r)["type"] == "authentication_error"


THREE_DS = "payment_method_options[card][three_d_secure]"
DS_TRANS_ID = "6f1f6d7e-3c5a-4b7a-9e0e-2f7c1a8b9d10"


def test_confirm_carries_the_3ds_result_and_a_failed_one_is_a_card_error(api: Api) -> None:
    pi = create(api).json()
    ok = post(
        api,
        f"/v1/payment_intents/{pi['id']}/confirm",
        {
            f"{THREE_DS}[ares_trans_status]": "Y",
            f"{THREE_DS}[electronic_commerce_indicator]": "05",
            f"{THREE_DS}[transaction_id]": DS_TRANS_ID,
            f"{THREE_DS}[version]": "2.2.0",
        },
        "3ds-1",
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["status"] == "requires_capture"
    assert api.bus.published[-1]["kind"] == "confirm"
    assert api.bus.published[-1]["three_ds"] == {
        "trans_status": "Y",
        "eci": "05",
        "ds_trans_id": DS_TRANS_ID,
        "authentication_value": None,
    }
    other = create(api, key="order-2").json()
    failed = post(api, f"/v1/payment_intents/{other['id']}/confirm", {f"{THREE_DS}[ares_trans_status]": "N"}, "3ds-2")
    assert failed.status_code == 402
    assert error_of(failed)["code"] == "payment_intent_authentication_failure"
    assert error_of(failed)["payment_intent"]["status"] == "requires_payment_method"
    sent = len(api.bus.published)
    for form, param in (
        ({}, THREE_DS),
        ({f"{THREE_DS}[ares_trans_status]": "X"}, f"{THREE_DS}[ares_trans_status]"),
        (
            {f"{THREE_DS}[ares_trans_status]": "Y", f"{THREE_DS}[transaction_id]": "short"},
            f"{THREE_DS}[transaction_id]",
        ),
    ):
        bad = post(api, f"/v1/payment_intents/{pi['id']}/confirm", form, "3ds-bad")
        assert bad.status_code == 400 and error_of(bad)["param"] == param
    assert len(api.bus.published) == sent


def test_a_create_refused_before_publishing_leaves_nothing_for_the_next_one(api: Api) -> None:
    refused = create(api, **{"metadata[order]": "first"}, **card_form("4242-4242-4242-424x"))
    assert refused.status_code == 402 and api.bus.published == []
    fixed = create(api, **{"metadata[order]": "second"})
    assert fixed.status_code == 200 and fixed.json()["metadata"] == {"order": "second"}
    got = api.client.get(f"/v1/payment_intents/{fixed.json()['id']}", headers=api.headers())
    assert got.json()["metadata"] == {"order": "second"} and got.json()["created"] == fixed.json()["created"]


def test_the_balance_is_the_callers_only(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore, api: Api
) -> None:
    (tmp_path / "r").mkdir()
    with_reader = build_api(tmp_path / "r", key_file, intake_keys, with_reader=True)
    create(with_reader, capture_method="automatic")
    create(with_reader, key="o-2", secret=with_reader.other_secret, capture_method="automatic", amount="5")
    r = with_reader.client.get("/v1/balance", headers=with_reader.headers())
    assert r.status_code == 200, r.text
    assert r.json() == {
        "object": "balance",
        "livemode": False,
        "available": [{"amount": 0, "currency": "usd"}],
        "pending": [{"amount": 1999, "currency": "usd"}],
    }
    down = api.client.get("/v1/balance", headers=api.headers())
    assert down.status_code == 503 and error_of(down)["code"] == "read_model_unavailable"


def dispute_row(
    api: Api, pi: dict[str, Any], event_hex: str, closed_as: str = "", merchant: str = "m_acme"
) -> dict[str, Any]:
    from datetime import datetime

    from streams.api.stripe_objects import payment_id_of

    row = {
        "event_id": "evt_" + event_hex,
        "payment_id": payment_id_of(pi["id"]),
        "merchant_id": merchant,
        "currency": "USD",
        "amount_minor": 1999,
        "reason_code": "fraudulent",
        "occurred_at": datetime(2026, 11, 26, tzinfo=UTC),
        "type": "dispute_opened",
        "closed_as": closed_as,
        "closed_at": None,
    }
    assert api.reader is not None
    api.reader.dispute_rows.append(row)
    return row


def test_disputes_list_retrieve_answer_with_evidence_and_accept(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    pi = create(api, capture_method="automatic").json()
    dispute_row(api, pi, "1" * 32)
    dispute_row(api, pi, "0" * 32, closed_as="dispute_lost")
    theirs = create(api, key="o-x", secret=api.other_secret, capture_method="automatic").json()
    dispute_row(api, theirs, "2" * 32, merchant="m_other")
    listed = api.client.get("/v1/disputes", params={"limit": 1}, headers=api.headers())
    assert listed.status_code == 200, listed.text
    assert [(d["id"], d["status"]) for d in listed.json()["data"]] == [("dp_" + "0" * 32, "lost")] and listed.json()[
        "has_more"
    ]
    rest = api.client.get("/v1/disputes", params={"starting_after": "dp_" + "0" * 32}, headers=api.headers()).json()
    assert [(d["id"], d["status"], d["payment_intent"]) for d in rest["data"]] == [
        ("dp_" + "1" * 32, "needs_response", pi["id"])
    ]
    dp = "dp_" + "1" * 32
    answered = post(
        api,
        f"/v1/disputes/{dp}",
        {"evidence[uncategorized_text]": "signed for at the door", "evidence[shipping_tracking_number]": "1Z999"},
        "ev-1",
    )
    assert answered.status_code == 200, answered.text
    assert answered.json()["status"] == "under_review" and answered.json()["evidence_details"]["submission_count"] == 1
    cmd = api.bus.published[-1]
    assert (cmd["kind"], cmd["payment_id"]) == ("dispute_evidence", payment_id_of_pi(pi))
    assert cmd["dispute"]["evidence"] == "shipping_tracking_number: 1Z999\nuncategorized_text: signed for at the door"
    again = post(
        api,
        f"/v1/disputes/{dp}",
        {"evidence[uncategorized_text]": "signed for at the door", "evidence[shipping_tracking_number]": "1Z999"},
        "ev-1",
    )
    assert again.json() == answered.json() and again.headers["Idempotent-Replayed"] == "true"
    assert api.client.get(f"/v1/disputes/{dp}", headers=api.headers()).json()["status"] == "under_review"
    closed = post(api, f"/v1/disputes/dp_{'0' * 32}", {"evidence[uncategorized_text]": "late"}, "ev-2")
    assert closed.status_code == 400 and error_of(closed)["code"] == "dispute_closed"
    assert post(api, f"/v1/disputes/dp_{'2' * 32}/close", {}, "close-theirs").status_code == 404
    accept = post(api, f"/v1/disputes/{dp}/close", {}, "close-1")
    assert accept.status_code == 200 and accept.json()["status"] == "lost", accept.text
    cmd = api.bus.published[-1]
    assert (cmd["kind"], cmd["payment_id"], cmd["dispute"]["outcome"]) == (
        "dispute_close",
        payment_id_of_pi(pi),
        "lost",
    )
    lost = post(
        api, f"/v1/disputes/dp_{'0' * 32}/close", {}, "close-2"
    )  # lost already: nothing to accept, nothing sent
    assert lost.status_code == 200 and lost.json()["status"] == "lost" and api.bus.published[-1] is cmd
    for path in (f"/v1/disputes/dp_{'2' * 32}", "/v1/disputes/dp_nope", f"/v1/disputes/evt_{'1' * 32}"):
        assert api.client.get(path, headers=api.headers()).status_code == 404  # another merchant's is unknown
    assert post(api, f"/v1/disputes/dp_{'2' * 32}", {"evidence[x]": "y"}, "steal").status_code == 404
    staged = post(api, f"/v1/disputes/{dp}", {"evidence[x]": "y", "submit": "false"}, "ev-3")
    assert staged.status_code == 400 and error_of(staged)["param"] == "submit"


def payment_id_of_pi(pi: dict[str, Any]) -> str:
    from streams.api.stripe_objects import payment_id_of

    pid = payment_id_of(pi["id"])
    assert pid is not None
    return pid


def test_payouts_list_and_retrieve_the_callers_only(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    from datetime import date, datetime

    api = build_api(tmp_path, key_file, intake_keys, with_reader=True)
    assert api.reader is not None
    for i, merchant in enumerate(["m_acme", "m_acme", "m_other"]):
        api.reader.payout_rows.append(
            {
                "payout_id": f"po_{i:032x}",
                "merchant_id": merchant,
                "currency": "USD",
                "amount_minor": 100 + i,
                "day": date(2026, 11, 25),
                "status": "sent",
                "sent_at": datetime(2026, 11, 26, tzinfo=UTC),
                "answered_at": None,
                "failure_reason": "",
            }
        )
    page = api.client.get("/v1/payouts", params={"limit": 1}, headers=api.headers()).json()
    assert [(p["id"], p["amount"], p["status"]) for p in page["data"]] == [(f"po_{0:032x}", 100, "in_transit")]
    assert page["has_more"]
    rest = api.client.get("/v1/payouts", params={"starting_after": f"po_{0:032x}"}, headers=api.headers()).json()
    assert [p["id"] for p in rest["data"]] == [f"po_{1:032x}"] and not rest["has_more"]
    assert api.client.get(f"/v1/payouts/po_{1:032x}", headers=api.headers()).json()["amount"] == 101
    for bad in (f"po_{2:032x}", "po_nope"):  # another merchant's payout is unknown
        r = api.client.get(f"/v1/payouts/{bad}", headers=api.headers())
        assert r.status_code == 404 and error_of(r)["code"] == "resource_missing"
    bad_cursor = api.client.get("/v1/payouts", params={"starting_after": "pi_" + "0" * 32}, headers=api.headers())
    assert bad_cursor.status_code == 400 and error_of(bad_cursor)["param"] == "starting_after"


def test_the_new_routes_are_rate_limited_with_retry_after(
    tmp_path: Path, key_file: tuple[Path, str, str], intake_keys: FileKeyStore
) -> None:
    from streams.api.app import ApiConfig

    api = build_api(
        tmp_path, key_file, intake_keys, ApiConfig(rate_per_s=0.01, rate_burst=1, rate_queue_max=0), with_reader=True
    )
    assert api.client.get("/v1/customers", headers=api.headers()).status_code == 200  # the one token
    for method, path in [
        ("POST", "/v1/customers"),
        ("GET", "/v1/customers/cus_" + "0" * 32),
        ("GET", "/v1/payment_methods/pm_" + "0" * 32),
        ("POST", "/v1/payment_methods/pm_" + "0" * 32 + "/detach"),
        ("GET", "/v1/balance_transactions"),
        ("GET", "/v1/events"),
        ("GET", "/v1/webhook_endpoints"),
        ("POST", "/v1/webhook_endpoints"),
        ("POST", "/v1/disputes/dp_" + "0" * 32 + "/close"),
    ]:
        r = api.client.request(method, path, headers=api.headers("k-429"))
        assert r.status_code == 429, (path, r.text)
        assert int(r.headers["Retry-After"]) >= 1 and error_of(r)["type"] == "rate_limit_error"
