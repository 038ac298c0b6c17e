"""The official `stripe` SDK (pinned in pyproject.toml) against `paystream api` on
a loopback port, in front of a real worker on the real broker, with the sink
feeding a chDB read model for the lists and `webhooks run` delivering events. A
merchant's Stripe code, unchanged but for the base address."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
import stripe
import uvicorn
from aiohttp import web
from fastapi.routing import APIRoute

from connectors.clickhouse.client import connect
from connectors.clickhouse.migrate import migrate
from connectors.kafka.clients import read_to_end
from connectors.providers.simulated import fee_minor
from connectors.vault.keys import FileKeyStore
from connectors.webhooks import registry
from connectors.webhooks.signing import stripe_secret
from schemas.codec import Codec
from streams.api import auth
from streams.api.app import ApiConfig, create_app
from streams.api.bus import KafkaBus
from streams.api.objects import KafkaObjects
from streams.api.readmodel import ClickHousePayments
from streams.api.stripe_events import Webhooks
from streams.client.kyc import KycDesk
from streams.client.processes import wait_until
from streams.client.publish import intake_sealer
from streams.domain.merchants import merchant_record
from streams.domain.payments import REVEAL_MIT
from streams.jobs.sink import serve
from streams.jobs.webhooks import WebhookRunner, registry_path
from streams.settings import client_config
from streams.topics import topic_names
from tests.integration.support import WAIT_S, Pipeline, follow_up, run

pytestmark = pytest.mark.integration

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}
INSUFFICIENT_FUNDS = "4000000000009995"  # connectors/providers/simulated.py DECLINED_CARDS
REVEALS = Codec("VaultReveal")


@dataclass
class Stripe:
    clients: dict[str, stripe.StripeClient]
    merchants: dict[str, str]  # role -> merchant id
    secrets: dict[str, str]  # role -> secret key
    base: str
    routes: list[tuple[str, str]]  # (method, path template) of every /v1 route
    read: ClickHousePayments  # the read model the API reads, for what the SDK does not show

    def __getitem__(self, role: str) -> stripe.StripeClient:
        return self.clients[role]


def _card(number: str = CARD["number"]) -> dict[str, Any]:
    return {"type": "card", "card": CARD | {"number": number}}


def _free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture(scope="module")
def sdk(pipeline: Pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stripe]:
    tmp = tmp_path_factory.mktemp("stripe")
    suffix = uuid.uuid4().hex[:6]
    merchants = {
        "shop": f"m_shop_{suffix}",
        "lister": f"m_list_{suffix}",
        "payee": f"m_payee_{suffix}",
        "disputed": f"m_disputed_{suffix}",
        "saver": f"m_saver_{suffix}",
        "debtor": f"m_debtor_{suffix}",
        "owner": f"m_owner_{suffix}",
        "intruder": f"m_intruder_{suffix}",
        "market": f"m_market_{suffix}",
    }
    keys, secrets = {}, {}
    for role, merchant in merchants.items():
        secrets[role], record = auth.new_key(merchant, "2026-11-25T12:00:00Z")
        keys[record.key_id] = record
    auth.save(keys, tmp / "api_keys.json")

    url = f"chdb://{(tmp / 'ch').resolve()}"
    sink_client = connect(url, "it_stripe")  # chDB: clients may share one path in one process
    migrate(sink_client)
    read_client = connect(url, "it_stripe")
    stop_sink = threading.Event()
    sink = threading.Thread(
        target=serve,
        args=(pipeline.settings, sink_client, stop_sink.is_set),
        kwargs={"max_wait_ms": 200},
        name="it-sink",
        daemon=True,
    )
    sink.start()

    bus = KafkaBus(pipeline.settings, max_slots=1000)
    objects = KafkaObjects(pipeline.settings)
    keys_dir = pipeline.settings.keys_dir
    webhooks = Webhooks(
        registry_path(pipeline.settings), lambda m: stripe_secret(FileKeyStore(keys_dir).webhook_secret(m).digest)
    )
    app = create_app(
        bus,
        auth.ApiKeys(tmp / "api_keys.json"),
        sealer=intake_sealer(pipeline.settings),
        config=ApiConfig(outcome_timeout_s=60),
        reader=ClickHousePayments(read_client),
        objects=objects,
        webhooks=webhooks,
        registry=KycDesk(pipeline.settings),
    )
    sock = _free_socket()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    serving = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="it-api", daemon=True)
    serving.start()
    try:
        assert wait_until(lambda: server.started, 30), "the API did not start"
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        clients = {
            role: stripe.StripeClient(secret, base_addresses={"api": base}, max_network_retries=0)
            for role, secret in secrets.items()
        }
        routes = [
            (method, r.path)
            for r in app.routes
            if isinstance(r, APIRoute) and r.path.startswith("/v1/")
            for method in sorted(r.methods)
        ]
        yield Stripe(clients, merchants, secrets, base, routes, ClickHousePayments(read_client))
    finally:
        server.should_exit = True
        serving.join(30)
        objects.close()
        bus.close()
        stop_sink.set()
        sink.join(60)
        read_client.close()
        sink_client.close()
        sock.close()


def test_checkout_with_automatic_capture(sdk: Stripe) -> None:
    pi = sdk["shop"].v1.payment_intents.create(
        {
            "amount": 2599,
            "currency": "usd",
            "confirm": True,
            "payment_method_data": _card(),
            "metadata": {"order_id": "o-1001"},
            "expand": ["latest_charge"],
        },
        {"idempotency_key": "checkout-1"},
    )
    assert isinstance(pi, stripe.PaymentIntent)
    assert (pi.status, pi.amount, pi.amount_received, pi.currency) == ("succeeded", 2599, 2599, "usd")
    assert pi.metadata.to_dict() == {"order_id": "o-1001"} and pi.id.startswith("pi_")
    got = sdk["shop"].v1.payment_intents.retrieve(pi.id)
    assert got.id == pi.id and got.status == "succeeded"


def test_a_manual_capture_in_two_parts(sdk: Stripe) -> None:
    pi = sdk["shop"].v1.payment_intents.create(
        {
            "amount": 1000,
            "currency": "usd",
            "confirm": True,
            "capture_method": "manual",
            "payment_method": "pm_card_visa",
        },
        {"idempotency_key": "two-parts-1"},
    )
    assert (pi.status, pi.amount_capturable, pi.amount_received) == ("requires_capture", 1000, 0)
    first = sdk["shop"].v1.payment_intents.capture(
        pi.id, {"amount_to_capture": 400, "final_capture": False}, {"idempotency_key": "two-parts-cap-1"}
    )
    assert (first.status, first.amount_capturable, first.amount_received) == ("requires_capture", 600, 400)
    rest = sdk["shop"].v1.payment_intents.capture(pi.id, {}, {"idempotency_key": "two-parts-cap-2"})
    assert (rest.status, rest.amount_capturable, rest.amount_received) == ("succeeded", 0, 1000)
    with pytest.raises(stripe.InvalidRequestError) as e:
        sdk["shop"].v1.payment_intents.capture(pi.id, {"amount_to_capture": 1}, {"idempotency_key": "two-parts-cap-3"})
    assert e.value.code == "payment_intent_unexpected_state"


def test_a_refund_in_part_then_the_rest(sdk: Stripe) -> None:
    pi = sdk["shop"].v1.payment_intents.create(
        {"amount": 1000, "currency": "eur", "confirm": True, "payment_method_data": _card()},
        {"idempotency_key": "refund-1"},
    )
    assert pi.status == "succeeded"
    part = sdk["shop"].v1.refunds.create(
        {"payment_intent": pi.id, "amount": 300, "reason": "requested_by_customer"}, {"idempotency_key": "refund-1-a"}
    )
    assert isinstance(part, stripe.Refund)
    assert (part.status, part.amount, part.currency, part.payment_intent) == ("succeeded", 300, "eur", pi.id)
    assert sdk["shop"].v1.refunds.retrieve(part.id).amount == 300
    with pytest.raises(stripe.InvalidRequestError) as e:
        sdk["shop"].v1.refunds.create({"payment_intent": pi.id, "amount": 5000}, {"idempotency_key": "refund-1-b"})
    assert e.value.param == "amount"
    rest = sdk["shop"].v1.refunds.create({"payment_intent": pi.id}, {"idempotency_key": "refund-1-c"})
    assert (rest.status, rest.amount) == ("succeeded", 700)
    with pytest.raises(stripe.InvalidRequestError):  # another merchant's refund is no refund
        sdk["lister"].v1.refunds.retrieve(part.id)

    # Listed from the read model (as fresh as the sink) under the ids the API answered, by id.
    def listed(limit: int) -> list[stripe.Refund]:
        return [
            r for r in sdk["shop"].v1.refunds.list({"limit": limit}).auto_paging_iter() if r.payment_intent == pi.id
        ]

    assert wait_until(lambda: len(listed(100)) == 2, WAIT_S), "the sink lags"
    assert [(r.id, r.amount, r.currency) for r in listed(1)] == sorted([(part.id, 300, "eur"), (rest.id, 700, "eur")])
    assert sdk["lister"].v1.refunds.list().data == []


def test_a_cancel_voids_the_authorization(sdk: Stripe) -> None:
    pi = sdk["shop"].v1.payment_intents.create(
        {
            "amount": 1500,
            "currency": "usd",
            "confirm": True,
            "capture_method": "manual",
            "payment_method_data": _card(),
        },
        {"idempotency_key": "cancel-1"},
    )
    canceled = sdk["shop"].v1.payment_intents.cancel(
        pi.id, {"cancellation_reason": "abandoned"}, {"idempotency_key": "cancel-1-void"}
    )
    assert (canceled.status, canceled.cancellation_reason, canceled.amount_capturable) == ("canceled", "abandoned", 0)
    with pytest.raises(stripe.InvalidRequestError) as e:
        sdk["shop"].v1.payment_intents.capture(pi.id, {}, {"idempotency_key": "cancel-1-cap"})
    assert e.value.code == "payment_intent_unexpected_state"


def test_a_declined_card_is_a_card_error_with_the_intent(sdk: Stripe) -> None:
    with pytest.raises(stripe.CardError) as e:
        sdk["shop"].v1.payment_intents.create(
            {"amount": 800, "currency": "usd", "confirm": True, "payment_method_data": _card(INSUFFICIENT_FUNDS)},
            {"idempotency_key": "declined-1"},
        )
    assert (e.value.code, e.value.error.decline_code) == ("card_declined", "insufficient_funds")
    intent = e.value.error.payment_intent
    assert intent is not None and intent.status == "requires_payment_method"
    assert intent.last_payment_error.decline_code == "insufficient_funds"
    assert INSUFFICIENT_FUNDS not in str(e.value.json_body)
    with pytest.raises(stripe.CardError) as again:  # Stripe's test PaymentMethod for a generic decline
        sdk["shop"].v1.payment_intents.create(
            {"amount": 800, "currency": "usd", "confirm": True, "payment_method": "pm_card_chargeDeclined"},
            {"idempotency_key": "declined-2"},
        )
    assert again.value.error.decline_code == "generic_decline"


def test_an_idempotent_retry_and_a_conflicting_one(sdk: Stripe) -> None:
    params = {
        "amount": 1200,
        "currency": "usd",
        "confirm": True,
        "capture_method": "manual",
        "payment_method_data": _card(),
    }
    first = sdk["shop"].v1.payment_intents.create(params, {"idempotency_key": "idem-1"})
    again = sdk["shop"].v1.payment_intents.create(params, {"idempotency_key": "idem-1"})
    assert again.id == first.id and again.to_dict() == first.to_dict()
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    with pytest.raises(stripe.IdempotencyError):
        sdk["shop"].v1.payment_intents.create(params | {"amount": 1300}, {"idempotency_key": "idem-1"})
    assert sdk["shop"].v1.payment_intents.retrieve(first.id).amount == 1200


def test_a_saved_card_charged_again(sdk: Stripe, pipeline: Pipeline) -> None:
    """A customer pays once and saves the card (its vault token); a later off-session
    payment charges it by the PaymentMethod alone."""
    client = sdk["saver"]
    cus = client.v1.customers.create(
        {"email": "ada@example.com", "name": "Ada", "metadata": {"tier": "gold"}}, {"idempotency_key": "cus-1"}
    )
    assert isinstance(cus, stripe.Customer) and cus.id.startswith("cus_") and cus.metadata.to_dict() == {"tier": "gold"}
    assert (
        client.v1.customers.create(
            {"email": "ada@example.com", "name": "Ada", "metadata": {"tier": "gold"}}, {"idempotency_key": "cus-1"}
        ).id
        == cus.id
    )
    first = client.v1.payment_intents.create(
        {
            "amount": 1500,
            "currency": "usd",
            "confirm": True,
            "customer": cus.id,
            "setup_future_usage": "off_session",
            "payment_method_data": _card(),
        },
        {"idempotency_key": "save-1"},
    )
    assert (first.status, first.customer) == ("succeeded", cus.id) and first.payment_method.startswith("pm_")
    pm = client.v1.payment_methods.retrieve(first.payment_method)
    assert isinstance(pm, stripe.PaymentMethod)
    assert (pm.type, pm.card.brand, pm.card.last4, pm.card.exp_month, pm.card.exp_year, pm.customer) == (
        "card",
        "visa",
        "4242",
        12,
        2030,
        cus.id,
    )
    assert CARD["number"] not in str(pm.to_dict()) and "tok_" not in str(pm.to_dict())
    assert [m.id for m in client.v1.customers.payment_methods.list(cus.id).data] == [pm.id]
    assert [m.id for m in client.v1.payment_methods.list({"customer": cus.id, "type": "card"}).data] == [pm.id]
    updated = client.v1.customers.update(
        cus.id, {"invoice_settings": {"default_payment_method": pm.id}, "metadata": {"tier": "", "since": "2026"}}
    )
    assert updated.invoice_settings.default_payment_method == pm.id and updated.metadata.to_dict() == {"since": "2026"}

    again = client.v1.payment_intents.create(
        {
            "amount": 2300,
            "currency": "usd",
            "confirm": True,
            "customer": cus.id,
            "payment_method": pm.id,
            "off_session": True,
        },
        {"idempotency_key": "save-1-again"},
    )
    assert (again.status, again.amount_received, again.payment_method, again.customer) == (
        "succeeded",
        2300,
        pm.id,
        cus.id,
    )
    assert again.paystream.card.last4 == "4242" and again.id != first.id
    # Off session is the pipeline's merchant-initiated charge: the payments stage revealed the
    # saved card from the vault for the provider call, audited on vault-reveals; the first
    # payment (the customer's own card details) revealed nothing.
    settings = pipeline.settings
    (topic,) = [topic_names(settings).vault_reveals]
    reveals = [REVEALS.decode(m.value()) for m in read_to_end(client_config(settings), [topic], settings.partitions)]
    saver = sdk.merchants["saver"]
    assert [(r["payment_id"], r["purpose"]) for r in reveals if r["merchant_id"] == saver] == [
        ("pay_" + again.id.removeprefix("pi_"), REVEAL_MIT)
    ]

    with pytest.raises(stripe.InvalidRequestError) as e:  # another merchant's card is no card
        sdk["shop"].v1.payment_methods.retrieve(pm.id)
    assert e.value.http_status == 404 and e.value.code == "resource_missing"
    with pytest.raises(stripe.InvalidRequestError) as charged_elsewhere:
        sdk["shop"].v1.payment_intents.create(
            {"amount": 100, "currency": "usd", "confirm": True, "payment_method": pm.id}, {"idempotency_key": "steal-1"}
        )
    assert charged_elsewhere.value.param == "payment_method"
    with pytest.raises(stripe.InvalidRequestError):
        sdk["shop"].v1.customers.retrieve(cus.id)

    detached = client.v1.payment_methods.detach(pm.id)
    assert detached.customer is None
    assert client.v1.customers.retrieve(cus.id).invoice_settings.default_payment_method is None
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.payment_intents.create(
            {"amount": 100, "currency": "usd", "confirm": True, "customer": cus.id, "payment_method": pm.id},
            {"idempotency_key": "save-1-detached"},
        )
    assert gone.value.param == "payment_method"
    deleted = client.v1.customers.delete(cus.id)
    assert deleted.deleted and deleted.id == cus.id
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.customers.retrieve(cus.id)


def test_a_bank_debit(sdk: Stripe, pipeline: Pipeline) -> None:
    """An ACH debit is processing until the bank's feed says its funds arrived; a SEPA
    debit takes euros only. The account number stops at the API (its last four go on)."""
    client, merchant = sdk["debtor"], sdk.merchants["debtor"]
    accepted = {"customer_acceptance": {"type": "online", "online": {"ip_address": "127.0.0.1", "user_agent": "sdk"}}}
    ach = {
        "type": "us_bank_account",
        "billing_details": {"name": "Ada"},
        "us_bank_account": {
            "account_number": "000123456789",
            "routing_number": "110000000",
            "account_holder_type": "individual",
        },
    }
    pi = client.v1.payment_intents.create(
        {
            "amount": 5000,
            "currency": "usd",
            "confirm": True,
            "payment_method_types": ["us_bank_account"],
            "payment_method_data": ach,
            "mandate_data": accepted,
        },
        {"idempotency_key": "ach-1"},
    )
    assert (pi.status, pi.amount, pi.amount_received, pi.payment_method_types) == (
        "processing",
        5000,
        0,
        ["us_bank_account"],
    )
    assert "000123456789" not in str(pi.to_dict())
    pid = pi.paystream.payment_id
    run(pipeline, [follow_up("bank_settle", merchant, pid, "bank-feed-settle-1", at=datetime.now(UTC))])
    # The bank's notice is not this API's write: the intent reads it from the read model.
    assert wait_until(lambda: client.v1.payment_intents.retrieve(pi.id).status == "succeeded", WAIT_S), "the sink lags"
    assert client.v1.payment_intents.retrieve(pi.id).amount_received == 5000

    sepa = {"type": "sepa_debit", "sepa_debit": {"iban": "DE89370400440532013000"}}
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.payment_intents.create(
            {"amount": 900, "currency": "usd", "confirm": True, "payment_method_data": sepa, "mandate_data": accepted},
            {"idempotency_key": "sepa-usd"},
        )
    assert (e.value.code, e.value.param) == ("currency_not_supported", "currency")
    euro = client.v1.payment_intents.create(
        {"amount": 900, "currency": "eur", "confirm": True, "payment_method_data": sepa, "mandate": "MD-2026-0001"},
        {"idempotency_key": "sepa-eur"},
    )
    assert (euro.status, euro.payment_method_types) == ("processing", ["sepa_debit"])
    klarna = client.v1.payment_intents.create(
        {"amount": 12_000, "currency": "eur", "confirm": True, "payment_method_data": {"type": "klarna"}},
        {"idempotency_key": "bnpl-1"},
    )
    assert (klarna.status, klarna.payment_method_types) == ("succeeded", ["klarna"])
    wallet = client.v1.payment_intents.create(
        {
            "amount": 700,
            "currency": "usd",
            "confirm": True,
            "payment_method_data": {
                "type": "card",
                "card": {
                    "wallet": {
                        "type": "google_pay",
                        "token": "gpay_tok_0a1b2c3d4e5f",
                        "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA=",
                    }
                },
            },
        },
        {"idempotency_key": "wallet-1"},
    )
    assert (wallet.status, wallet.amount_received) == ("succeeded", 700)


def test_a_list_with_pagination(sdk: Stripe) -> None:
    client = sdk["lister"]
    made = sorted(
        client.v1.payment_intents.create(
            {
                "amount": 100 + i,
                "currency": "usd",
                "confirm": True,
                "capture_method": "manual",
                "payment_method_data": _card(),
            },
            {"idempotency_key": f"list-{i}"},
        ).id
        for i in range(5)
    )
    # The list reads the read model: as fresh as the sink.
    assert wait_until(lambda: len(client.v1.payment_intents.list({"limit": 100}).data) == 5, WAIT_S), "the sink lags"
    first = client.v1.payment_intents.list({"limit": 2})
    assert [pi.id for pi in first.data] == made[:2] and first.has_more
    second = client.v1.payment_intents.list({"limit": 2, "starting_after": first.data[-1].id})
    assert [pi.id for pi in second.data] == made[2:4] and second.has_more
    last = client.v1.payment_intents.list({"limit": 2, "starting_after": second.data[-1].id})
    assert [pi.id for pi in last.data] == made[4:] and not last.has_more
    assert [pi.id for pi in first.auto_paging_iter()] == made
    back = client.v1.payment_intents.list({"limit": 2, "ending_before": made[4]})
    assert [pi.id for pi in back.data] == made[2:4] and back.has_more
    assert [pi.id for pi in back.auto_paging_iter()] == made[3::-1]  # the SDK pages backwards from there
    assert all(pi.status == "requires_capture" and pi.metadata.to_dict() == {} for pi in first.data)
    others = sdk["shop"].v1.payment_intents.list({"limit": 100})
    assert not set(made) & {pi.id for pi in others.auto_paging_iter()}


def test_a_webhook_of_a_stripe_checkout_verified_with_the_sdk(sdk: Stripe, pipeline: Pipeline) -> None:
    """`paystream webhooks run` delivers the payment's events as Stripe's Events; the
    merchant's Stripe code verifies each with `stripe.Webhook.construct_event` and its
    `whsec_` secret, and reads the PaymentIntent in `data.object`: the object
    `GET /v1/events/{id}` answers for the same event."""
    settings, merchant = pipeline.settings, sdk.merchants["shop"]
    verified: list[stripe.Event] = []
    refused: list[str] = []
    secret = ""  # the endpoint's, from its create
    arrived = asyncio.Event()  # set at each delivery: the wait below looks again then

    async def handle(request: web.Request) -> web.Response:
        body = (await request.read()).decode()
        try:
            verified.append(stripe.Webhook.construct_event(body, request.headers.get("Stripe-Signature", ""), secret))
        except stripe.SignatureVerificationError:
            refused.append(body)
            return web.Response(status=400)
        finally:
            arrived.set()
        return web.Response(status=200)

    async def main() -> str:
        app = web.Application()
        app.router.add_post("/hooks", handle)
        http = web.AppRunner(app)
        await http.setup()
        await web.TCPSite(http, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{http.addresses[0][1]}/hooks"
        endpoint = await asyncio.to_thread(
            sdk["shop"].v1.webhook_endpoints.create, {"url": url, "enabled_events": ["*"]}
        )
        nonlocal secret
        secret = endpoint.secret
        assert isinstance(endpoint, stripe.WebhookEndpoint) and secret.startswith("whsec_")
        stop = asyncio.Event()
        task = asyncio.create_task(WebhookRunner(settings).run(stop))
        try:
            pi = await asyncio.to_thread(
                sdk["shop"].v1.payment_intents.create,
                {"amount": 4200, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"},
                {"idempotency_key": "hooked-1"},
            )
            deadline = time.monotonic() + WAIT_S
            while not any(e.type == "payment_intent.succeeded" and e.data.object.id == pi.id for e in verified):
                assert time.monotonic() < deadline and not refused, f"{len(verified)} verified, {len(refused)} refused"
                arrived.clear()
                with contextlib.suppress(TimeoutError):  # the loop's assert names what is missing
                    await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.monotonic()))
            return pi.paystream.payment_id
        finally:
            stop.set()
            await task
            await http.cleanup()

    pid = asyncio.run(main())
    intent = "pi_" + pid[4:]
    mine = [e for e in verified if e.data.object.id == intent]
    assert {e.type for e in mine} >= {"payment_intent.amount_capturable_updated", "payment_intent.succeeded"}
    assert not refused and all(isinstance(e.data.object, stripe.PaymentIntent) for e in mine)
    hooked = next(e for e in mine if e.type == "payment_intent.succeeded")
    assert (hooked.data.object.status, hooked.data.object.amount_received, hooked.data.object.currency) == (
        "succeeded",
        4200,
        "usd",
    )
    assert secret == stripe_secret(FileKeyStore(settings.keys_dir).webhook_secret(merchant).digest)
    [endpoint] = sdk["shop"].v1.webhook_endpoints.list().data
    assert sdk["shop"].v1.webhook_endpoints.retrieve(endpoint.id).url == endpoint.url and "secret" not in endpoint
    with pytest.raises(stripe.InvalidRequestError):  # another merchant's endpoint is unknown
        sdk["lister"].v1.webhook_endpoints.delete(endpoint.id)
    assert sdk["shop"].v1.webhook_endpoints.delete(endpoint.id).deleted
    assert (
        sdk["shop"].v1.webhook_endpoints.list().data == [] and registry.load(registry_path(settings)).of(merchant) == ()
    )
    # The events the webhooks carried, the same objects from the read model.

    def events() -> list[stripe.Event]:
        return [e for e in sdk["shop"].v1.events.list({"limit": 100}).auto_paging_iter() if e.data.object.id == intent]

    assert wait_until(
        lambda: {e.type for e in events()} >= {"payment_intent.amount_capturable_updated", "payment_intent.succeeded"},
        WAIT_S,
    ), "the sink lags"
    succeeded = next(e for e in events() if e.type == "payment_intent.succeeded")
    assert isinstance(succeeded, stripe.Event) and succeeded.data.object.status == "succeeded"
    assert succeeded.to_dict() == hooked.to_dict(), "the webhook's body and GET /v1/events are one object"
    assert sdk["shop"].v1.events.retrieve(succeeded.id).data.object.amount_received == 4200
    with pytest.raises(stripe.InvalidRequestError):
        sdk["lister"].v1.events.retrieve(succeeded.id)


def test_the_balance_comes_from_the_ledger(sdk: Stripe) -> None:
    client = sdk["payee"]
    pi = client.v1.payment_intents.create(
        {"amount": 10_000, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"},
        {"idempotency_key": "payee-1"},
    )
    client.v1.refunds.create({"payment_intent": pi.id, "amount": 2_500}, {"idempotency_key": "payee-1-refund"})
    owed = 10_000 - fee_minor(10_000) - 2_500  # captured, less the provider's fee, less the refund; not settled yet

    def pending() -> list[tuple[int, str]]:
        return [(b.amount, b.currency) for b in client.v1.balance.retrieve().pending]

    # The balance reads the ledger's read model: as fresh as the sink.
    assert wait_until(lambda: pending() == [(owed, "usd")], WAIT_S), pending()
    balance = client.v1.balance.retrieve()
    assert isinstance(balance, stripe.Balance) and [(b.amount, b.currency) for b in balance.available] == [(0, "usd")]
    # Nothing settled, nothing paid out. (Settling here would settle every merchant of the
    # shared pipeline's day: the payout rows are tested over chDB in tests/unit/streams/api.)
    payouts = client.v1.payouts.list({"limit": 10})
    assert payouts.data == [] and not payouts.has_more
    txns = list(client.v1.balance_transactions.list({"limit": 1}).auto_paging_iter())
    assert [(t.type, t.amount, t.status, t.source) for t in txns] == [
        ("charge", 10_000 - fee_minor(10_000), "pending", pi.id),
        ("refund", -2_500, "pending", pi.id),
    ]
    assert sum(t.net for t in txns) == owed
    assert client.v1.balance_transactions.retrieve(txns[1].id).amount == -2_500
    back = client.v1.balance_transactions.list({"ending_before": txns[1].id})
    assert [t.id for t in back.data] == [txns[0].id] and not back.has_more
    with pytest.raises(stripe.InvalidRequestError) as e:  # another merchant's is unknown
        sdk["shop"].v1.balance_transactions.retrieve(txns[0].id)
    assert e.value.http_status == 404


def dispute_command(
    kind: str, merchant: str, payment_id: str, key: str, amount: int | None = None, **dispute: str
) -> dict[str, Any]:
    """What the acquirer's feed publishes: the network opens and closes disputes."""
    fields = {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": None} | dispute
    return follow_up(kind, merchant, payment_id, key, amount, at=datetime.now(UTC)) | {"dispute": fields}


def test_a_dispute_answered_with_evidence(sdk: Stripe, pipeline: Pipeline) -> None:
    client, merchant = sdk["disputed"], sdk.merchants["disputed"]
    pi = client.v1.payment_intents.create(
        {"amount": 3000, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"},
        {"idempotency_key": "disputed-1"},
    )
    pid = pi.paystream.payment_id
    run(
        pipeline,
        [dispute_command("dispute_open", merchant, pid, "network-open-1", 3000, reason="product_not_received")],
    )
    # Disputes read the read model: as fresh as the sink.
    assert wait_until(lambda: len(client.v1.disputes.list().data) == 1, WAIT_S), "the sink lags"
    [dispute] = client.v1.disputes.list().data
    assert isinstance(dispute, stripe.Dispute)
    assert (dispute.status, dispute.amount, dispute.currency, dispute.reason, dispute.payment_intent) == (
        "needs_response",
        3000,
        "usd",
        "product_not_received",
        pi.id,
    )
    answered = client.v1.disputes.update(
        dispute.id,
        {"evidence": {"uncategorized_text": "delivered, signed for", "shipping_tracking_number": "1Z999AA1"}},
        {"idempotency_key": "disputed-1-evidence"},
    )
    assert answered.status == "under_review" and answered.evidence_details.submission_count == 1
    # The text went to the network through the pipeline and reached the read model on its
    # outcome (PaymentOutcome v2), where the console shows it.
    evidence = (
        "SELECT dispute_evidence FROM payment_outcomes FINAL "
        "WHERE payment_id = {p:String} AND kind = 'dispute_evidence'"
    )
    text = "shipping_tracking_number: 1Z999AA1\nuncategorized_text: delivered, signed for"
    assert wait_until(lambda: [r["dispute_evidence"] for r in sdk.read.rows(evidence, {"p": pid})] == [text], WAIT_S), (
        sdk.read.rows(evidence, {"p": pid})
    )
    with pytest.raises(stripe.InvalidRequestError):  # another merchant's dispute is no dispute
        sdk["shop"].v1.disputes.retrieve(dispute.id)
    run(pipeline, [dispute_command("dispute_close", merchant, pid, "network-close-1", outcome="won")])
    assert wait_until(lambda: client.v1.disputes.retrieve(dispute.id).status == "won", WAIT_S), "the sink lags"
    with pytest.raises(stripe.InvalidRequestError) as closed:
        client.v1.disputes.update(dispute.id, {"evidence": {"uncategorized_text": "more"}}, {"idempotency_key": "late"})
    assert closed.value.code == "dispute_closed"
    with pytest.raises(stripe.InvalidRequestError) as won:  # a dispute won is not accepted afterwards
        client.v1.disputes.close(dispute.id)
    assert won.value.code == "dispute_closed"


def test_a_dispute_accepted(sdk: Stripe, pipeline: Pipeline) -> None:
    """Closing a dispute accepts it: the merchant stops contesting, the dispute is lost."""
    client, merchant = sdk["disputed"], sdk.merchants["disputed"]
    pi = client.v1.payment_intents.create(
        {"amount": 2000, "currency": "usd", "confirm": True, "payment_method": "pm_card_visa"},
        {"idempotency_key": "accepted-1"},
    )
    pid = pi.paystream.payment_id
    run(pipeline, [dispute_command("dispute_open", merchant, pid, "network-open-2", 2000, reason="fraudulent")])
    assert wait_until(
        lambda: any(d.payment_intent == pi.id for d in client.v1.disputes.list({"limit": 100}).data), WAIT_S
    ), "the sink lags"
    [dispute] = [d for d in client.v1.disputes.list({"limit": 100}).data if d.payment_intent == pi.id]
    with pytest.raises(stripe.InvalidRequestError):  # another merchant cannot accept it
        sdk["shop"].v1.disputes.close(dispute.id)
    closed = client.v1.disputes.close(dispute.id, {}, {"idempotency_key": "accept-1"})
    assert (closed.id, closed.status) == (dispute.id, "lost")
    assert wait_until(lambda: client.v1.disputes.retrieve(dispute.id).status == "lost", WAIT_S), "the sink lags"
    assert client.v1.disputes.close(dispute.id).status == "lost"  # accepting again changes nothing


SELLER = {
    "type": "custom",
    "country": "US",
    "business_type": "company",
    "company": {"name": "Seller Inc", "registration_number": "US-778899", "owners": ["Grace Hopper"]},
    "documents": {
        "registration_certificate": "docs/seller/cert.pdf",
        "owner_id": "docs/seller/id.pdf",
        "proof_of_address": "docs/seller/address.pdf",
    },
    "capabilities": {"card_payments": {"requested": True}, "transfers": {"requested": True}},
}


def destination_charge(
    sdk: Stripe, pipeline: Pipeline, role: str, key: str
) -> tuple[stripe.Account, stripe.PaymentIntent]:
    """A marketplace (the role's merchant, registered verified) opens a seller's account
    and charges 100.00 for it, keeping 10.00: a split payment."""
    client = sdk[role]
    KycDesk(pipeline.settings).write(
        merchant_record(sdk.merchants[role], kyc_status="verified", updated_at=datetime.now(UTC))
    )
    acct = client.v1.accounts.create(SELLER, {"idempotency_key": f"{key}-acct"})
    assert isinstance(acct, stripe.Account) and acct.charges_enabled and acct.payouts_enabled
    charge = {
        "amount": 10_000,
        "currency": "usd",
        "confirm": True,
        "payment_method": "pm_card_visa",
        "transfer_data": {"destination": acct.id},
        "application_fee_amount": 1_000,
    }
    attempt = iter(range(10_000))
    pi: list[stripe.PaymentIntent] = []

    def charged() -> bool:
        # The keys stage learns of the connection from the registry topic: until then
        # the split is refused (each try its own key: a refusal is kept for its key).
        try:
            pi.append(client.v1.payment_intents.create(charge, {"idempotency_key": f"{key}-pay-{next(attempt)}"}))
        except stripe.InvalidRequestError as e:  # the platform, then the account, not known there yet
            assert e.code == "merchant_unknown" or (e.code, e.param) == (
                "resource_missing",
                "transfer_data[destination]",
            ), e
            return False
        return True

    assert wait_until(charged, WAIT_S), "the keys stage never saw the connected account"
    return acct, pi[-1]


def test_a_marketplace_pays_its_seller_with_a_destination_charge(sdk: Stripe, pipeline: Pipeline) -> None:
    client = sdk["market"]
    acct, pi = destination_charge(sdk, pipeline, "market", "market-1")
    assert (pi.status, pi.amount_received, pi.transfer_data.destination, pi.application_fee_amount) == (
        "succeeded",
        10_000,
        acct.id,
        1_000,
    )
    assert client.v1.accounts.create(SELLER, {"idempotency_key": "market-1-acct"}).id == acct.id  # a retry finds it
    assert [a.id for a in client.v1.accounts.list().data] == [acct.id]
    assert client.v1.accounts.retrieve(acct.id).charges_enabled
    with pytest.raises(stripe.InvalidRequestError) as e:
        client.v1.payment_intents.create(
            {
                "amount": 500,
                "currency": "usd",
                "confirm": True,
                "payment_method": "pm_card_visa",
                "transfer_data": {"destination": "acct_not_mine"},
                "application_fee_amount": 50,
            },
            {"idempotency_key": "market-1-elsewhere"},
        )
    assert (e.value.code, e.value.param) == ("resource_missing", "transfer_data[destination]")

    # Transfers and fees are the ledger's lines of the split capture: as fresh as the sink.
    assert wait_until(lambda: client.v1.transfers.list().data and client.v1.application_fees.list().data, WAIT_S), (
        "the sink lags"
    )
    [transfer] = client.v1.transfers.list().data
    assert isinstance(transfer, stripe.Transfer)
    assert (transfer.amount, transfer.currency, transfer.destination, transfer.paystream.payment_intent) == (
        9_000,
        "usd",
        acct.id,
        pi.id,
    )
    assert client.v1.transfers.retrieve(transfer.id).amount == 9_000
    [fee] = client.v1.application_fees.list().data
    assert isinstance(fee, stripe.ApplicationFee) and (fee.amount, fee.account, fee.currency) == (1_000, acct.id, "usd")
    assert client.v1.application_fees.retrieve(fee.id).amount == 1_000
    for call in (
        lambda: sdk["shop"].v1.accounts.retrieve(acct.id),
        lambda: sdk["shop"].v1.transfers.retrieve(transfer.id),
        lambda: sdk["shop"].v1.application_fees.retrieve(fee.id),
    ):
        with pytest.raises(stripe.InvalidRequestError) as other:  # another merchant's are unknown
            call()
        assert other.value.http_status == 404
    assert sdk["shop"].v1.transfers.list().data == [] and sdk["shop"].v1.accounts.list().data == []

    # A refund of a destination charge takes back pro rata (the ledger's rule): 1,800 of the
    # seller's 9,000 as a transfer reversal, 200 of the 1,000 fee as a fee refund.
    with pytest.raises(stripe.InvalidRequestError) as kept:
        client.v1.refunds.create({"payment_intent": pi.id, "amount": 2_000, "reverse_transfer": False})
    assert kept.value.param == "reverse_transfer"
    refund = client.v1.refunds.create(
        {"payment_intent": pi.id, "amount": 2_000, "reverse_transfer": True, "refund_application_fee": True},
        {"idempotency_key": "market-1-refund"},
    )
    assert refund.status == "succeeded"
    assert wait_until(lambda: client.v1.transfers.retrieve(transfer.id).amount_reversed == 1_800, WAIT_S), (
        "the sink lags"
    )
    assert not client.v1.transfers.retrieve(transfer.id).reversed
    [reversal] = client.v1.transfers.reversals.list(transfer.id).data
    assert isinstance(reversal, stripe.TransferReversal) and (
        reversal.amount,
        reversal.transfer,
        reversal.currency,
    ) == (
        1_800,
        transfer.id,
        "usd",
    )
    assert wait_until(lambda: client.v1.application_fees.retrieve(fee.id).amount_refunded == 200, WAIT_S)
    [fee_refund] = client.v1.application_fees.refunds.list(fee.id).data
    assert isinstance(fee_refund, stripe.ApplicationFeeRefund) and (fee_refund.amount, fee_refund.fee) == (200, fee.id)
    with pytest.raises(stripe.InvalidRequestError) as hidden:  # another merchant's transfer has no reversals to list
        sdk["shop"].v1.transfers.reversals.list(transfer.id)
    assert hidden.value.http_status == 404


def test_a_key_sees_only_its_own_merchants_objects(sdk: Stripe, pipeline: Pipeline) -> None:
    """Every /v1 route that names an object, called with another merchant's key and the
    owner's real ids: 404 resource_missing, as for an id that does not exist. A route
    added without an entry here fails the test."""
    owner, merchant = sdk["owner"], sdk.merchants["owner"]
    acct, _ = destination_charge(sdk, pipeline, "owner", "sec-market")  # the owner is a marketplace too
    cus = owner.v1.customers.create({"email": "o@example.com"}, {"idempotency_key": "sec-cus"})
    saved = owner.v1.payment_intents.create(
        {
            "amount": 3000,
            "currency": "usd",
            "confirm": True,
            "customer": cus.id,
            "setup_future_usage": "off_session",
            "payment_method": "pm_card_visa",
        },
        {"idempotency_key": "sec-pay"},
    )
    refund = owner.v1.refunds.create({"payment_intent": saved.id, "amount": 100}, {"idempotency_key": "sec-refund"})
    pid = saved.paystream.payment_id
    run(pipeline, [dispute_command("dispute_open", merchant, pid, "sec-open", 1000, reason="general")])
    endpoint = owner.v1.webhook_endpoints.create({"url": "http://127.0.0.1:9/owner", "enabled_events": ["*"]})
    assert wait_until(
        lambda: (
            owner.v1.disputes.list().data
            and owner.v1.events.list().data
            and owner.v1.balance_transactions.list().data
            and owner.v1.transfers.list().data
            and owner.v1.application_fees.list().data
        ),
        WAIT_S,
    ), "the sink lags"
    ids = {
        "payment_id": pid,
        "intent": saved.id,
        "refund": refund.id,
        "dispute": owner.v1.disputes.list().data[0].id,
        "customer": cus.id,
        "payment_method": saved.payment_method,
        "txn": owner.v1.balance_transactions.list().data[0].id,
        "event": owner.v1.events.list().data[0].id,
        "endpoint": endpoint.id,
        "payout": "po_" + "0" * 32,
        "account": acct.id,
        "transfer": owner.v1.transfers.list().data[0].id,
        "fee": owner.v1.application_fees.list().data[0].id,
    }
    mine = sdk["intruder"].v1.customers.create({}, {"idempotency_key": "sec-own-cus"})  # the intruder's own, for attach
    form = {
        "/v1/payment_intents/{intent}/confirm": {
            "payment_method_options[card][three_d_secure][ares_trans_status]": "Y"
        },
        "/v1/disputes/{dispute}": {"evidence[uncategorized_text]": "mine"},
        "/v1/payment_methods/{payment_method}/attach": {"customer": mine.id},
        "/v1/customers/{customer}": {"name": "x"},
    }
    json_bodies = {
        "/v1/payments/{payment_id}/confirm": {"three_ds": {"trans_status": "Y"}},
        "/v1/payments/{payment_id}/dispute/evidence": {"evidence": "mine"},
    }
    headers = {"Authorization": f"Bearer {sdk.secrets['intruder']}", "Idempotency-Key": f"sec-{uuid.uuid4().hex}"}
    tried = []
    with httpx.Client(base_url=sdk.base, timeout=60) as http:
        for method, template in sdk.routes:
            names = [n for n in ids if "{" + n + "}" in template]
            if not names:
                continue
            path = template
            for n in names:
                path = path.replace("{" + n + "}", ids[n])
            h = headers | {"Idempotency-Key": f"sec-{uuid.uuid4().hex}"}
            if template.startswith("/v1/payments/"):
                r = http.request(
                    method, path, json=json_bodies.get(template, {}) if method == "POST" else None, headers=h
                )
            else:
                r = http.request(method, path, data=form.get(template) if method == "POST" else None, headers=h)
            assert (r.status_code, r.json()["error"]["code"]) == (404, "resource_missing"), (method, template, r.text)
            assert merchant not in r.text and "4242" not in r.text
            tried.append((method, template))
        unnamed = [rt for rt in sdk.routes if "{" in rt[1] and rt not in tried]
        assert not unnamed, f"routes with an id this test does not try: {unnamed}"
        assert len(tried) >= 29, tried
        # Ids in a body or a query: Stripe's resource_missing on the parameter.
        for method, path, data, param in [
            ("POST", "/v1/refunds", {"payment_intent": saved.id}, "payment_intent"),
            (
                "POST",
                "/v1/payment_intents",
                {
                    "amount": "100",
                    "currency": "usd",
                    "confirm": "true",
                    "customer": cus.id,
                    "payment_method": saved.payment_method,
                },
                "customer",
            ),
            ("GET", "/v1/payment_methods?customer=" + cus.id, None, "customer"),
            ("GET", "/v1/balance_transactions?starting_after=" + ids["txn"], None, "starting_after"),
        ]:
            r = http.request(method, path, data=data, headers=headers | {"Idempotency-Key": f"sec-{uuid.uuid4().hex}"})
            assert r.status_code in (400, 404) and r.json()["error"]["code"] == "resource_missing", (path, r.text)
            assert r.json()["error"]["param"] == param, (path, r.text)
    # The owner's objects are untouched by all that.
    assert owner.v1.payment_methods.retrieve(saved.payment_method).customer == cus.id
    assert owner.v1.disputes.retrieve(ids["dispute"]).status == "needs_response"
    assert owner.v1.payment_intents.retrieve(saved.id).amount_received == 3000
    assert owner.v1.accounts.retrieve(acct.id).charges_enabled and sdk["intruder"].v1.accounts.list().data == []
