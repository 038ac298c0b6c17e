"""The merchant API over the real broker and a worker: each write is one command
whose committed outcome answers the HTTP request; retries publish nothing new."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from schemas.ids import derive_payment_id
from streams.api import auth
from streams.api.app import ApiConfig, create_app
from streams.api.bus import KafkaBus
from streams.client.publish import intake_sealer
from tests.integration.support import Pipeline

pytestmark = pytest.mark.integration

CARD = {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"}


class Gateway:
    def __init__(self, client: TestClient, bus: KafkaBus, secrets: dict[str, str]) -> None:
        self.client, self.bus, self.secrets = client, bus, secrets

    def post(self, path: str, merchant: str, key: str, body: dict | None = None):  # type: ignore[no-untyped-def]
        return self.client.post(
            path, json=body, headers={"Authorization": f"Bearer {self.secrets[merchant]}", "Idempotency-Key": key}
        )


@pytest.fixture
def gateway(pipeline: Pipeline, tmp_path: Path) -> Iterator[Gateway]:
    keys, secrets = {}, {}
    for merchant in ("m_api", "m_api_other"):
        secrets[merchant], record = auth.new_key(merchant, "2026-11-25T12:00:00Z")
        keys[record.key_id] = record
    auth.save(keys, tmp_path / "api_keys.json")
    bus = KafkaBus(pipeline.settings, max_slots=1000)
    app = create_app(
        bus,
        auth.ApiKeys(tmp_path / "api_keys.json"),
        sealer=intake_sealer(pipeline.settings),
        config=ApiConfig(outcome_timeout_s=60),
    )
    try:
        yield Gateway(TestClient(app, raise_server_exceptions=False), bus, secrets)
    finally:
        bus.close()


def test_create_retry_capture_conflict_and_isolation(gateway: Gateway) -> None:
    body = {"amount_minor": 2500, "currency": "USD", "capture_method": "manual", "card": CARD}
    created = gateway.post("/v1/payments", "m_api", "api-order-1", body)
    assert created.status_code == 200, created.text
    pid = derive_payment_id("m_api", "api-order-1")
    assert created.json()["id"] == pid and created.json()["status"] == "authorized"
    assert created.json()["card"] == {"bin": "424242", "last4": "4242"}

    again = gateway.post("/v1/payments", "m_api", "api-order-1", body)
    assert again.status_code == 200 and again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == created.json()

    changed = gateway.post("/v1/payments", "m_api", "api-order-1", body | {"amount_minor": 2600})
    assert changed.status_code == 409 and changed.json()["error"]["code"] == "idempotency_conflict"

    theirs = gateway.post(f"/v1/payments/{pid}/capture", "m_api_other", "steal-1", {"amount_minor": 100})
    assert theirs.status_code == 404  # the pipeline's payment_not_found: nothing leaks

    captured = gateway.post(f"/v1/payments/{pid}/capture", "m_api", "api-cap-1", {"amount_minor": 1000})
    assert captured.status_code == 200, captured.text
    assert (captured.json()["status"], captured.json()["captured_minor"]) == ("partially_captured", 1000)

    over = gateway.post(f"/v1/payments/{pid}/refunds", "m_api", "api-ref-1", {"amount_minor": 5000})
    assert over.status_code == 400 and over.json()["error"]["code"] == "amount_exceeds_captured"

    got = gateway.client.get(f"/v1/payments/{pid}", headers={"Authorization": f"Bearer {gateway.secrets['m_api']}"})
    assert got.status_code == 200 and got.json()["captured_minor"] == 1000


def test_a_second_api_process_gets_the_pipelines_replay(gateway: Gateway, pipeline: Pipeline, tmp_path: Path) -> None:
    """Another instance (or this one restarted) sends the key again: a new command_id,
    the pipeline's `replayed` outcome, the same answer, no second authorization."""
    body = {"amount_minor": 700, "currency": "USD", "card": CARD}
    first = gateway.post("/v1/payments", "m_api", "api-order-2", body)
    assert first.status_code == 200, first.text
    bus = KafkaBus(pipeline.settings, max_slots=10)
    try:
        app = create_app(
            bus,
            auth.ApiKeys(tmp_path / "api_keys.json"),  # the fixture wrote it here
            sealer=intake_sealer(pipeline.settings),
            config=ApiConfig(outcome_timeout_s=60),
        )
        other = Gateway(TestClient(app), bus, gateway.secrets)
        second = other.post("/v1/payments", "m_api", "api-order-2", body)
    finally:
        bus.close()
    assert second.status_code == 200 and second.headers["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
