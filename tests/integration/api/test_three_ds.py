"""3-D Secure 2 through the API against the real broker and a worker with fraud
scoring: a step-up payment is challenged by the simulated issuer, passes with the test
code, confirms and is authorized with the liability shift on its events; a forged value
and one replayed from another payment are refused, and that payment still awaits one."""

from __future__ import annotations

import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from connectors.vault.keys import ACS_SIGNING, ActiveSigner, FileKeyStore
from schemas.ids import derive_payment_id
from streams.api import auth
from streams.api.acs import TEST_OTP, Acs
from streams.api.app import ApiConfig, create_app
from streams.api.bus import KafkaBus
from streams.client.observe import Observer
from streams.client.publish import intake_sealer
from tests.integration.support import make_settings, start_worker

pytestmark = pytest.mark.integration

# A first $1,000 payment on a fresh card at a fresh merchant: the shipped model's score
# lands in the 3DS band (tests/integration/streams/worker/test_fraud.py checks it).
STEP_UP = {
    "amount_minor": 100_000,
    "currency": "USD",
    "card": {"number": "4000056655665556", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_challenge_confirm_liability_shift_and_forged_values_refused(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "3ds").model_copy(update={"fraud_scoring": True, "metrics_port": free_port()})
    store = FileKeyStore(settings.keys_dir)
    store.init()  # the worker trusts the issuer keys it finds at its start
    keys, secrets = {}, {}
    for merchant in ("m_3ds_a", "m_3ds_b"):  # one each: both first payments, both step-ups
        secrets[merchant], record = auth.new_key(merchant, "2026-11-25T12:00:00Z")
        keys[record.key_id] = record
    auth.save(keys, tmp_path / "api_keys.json")
    worker = start_worker(settings)
    bus = KafkaBus(settings, max_slots=100)
    try:
        # The model reads the hour of day (night scores higher: at 00:36 UTC the step-up
        # was declined), so the API stamps a clock set to yesterday's midday, never in the
        # future, running from the test's start.
        clock_started = datetime.now(UTC)
        midday = (clock_started - timedelta(days=1)).replace(hour=12, minute=0, second=0, microsecond=0)
        app = create_app(
            bus,
            auth.ApiKeys(tmp_path / "api_keys.json"),
            sealer=intake_sealer(settings),
            config=ApiConfig(outcome_timeout_s=120),
            acs=Acs(ActiveSigner.of(store, ACS_SIGNING)),
            now=lambda: midday + (datetime.now(UTC) - clock_started),
        )
        client = TestClient(app, raise_server_exceptions=False)

        def post(path: str, merchant: str, body: dict, key: str | None = None):  # type: ignore[no-untyped-def]
            headers = {"Authorization": f"Bearer {secrets[merchant]}"} | ({"Idempotency-Key": key} if key else {})
            return client.post(path, json=body, headers=headers)

        with Observer(settings) as seen:
            paused = {}
            for m in ("m_3ds_a", "m_3ds_b"):
                r = post("/v1/payments", m, STEP_UP, "order-1")
                assert r.status_code == 200 and r.json()["status"] == "requires_action", (r.text, worker.log_tail())
                paused[m] = r.json()
            a, b = paused["m_3ds_a"], paused["m_3ds_b"]
            assert a["id"] == derive_payment_id("m_3ds_a", "order-1")

            # next_action: authenticate at the issuer; $1,000 is over the frictionless limit.
            started = post(
                a["next_action"]["three_d_secure"]["authenticate_url"],
                "m_3ds_a",
                {"amount_minor": 100_000, "currency": "USD", "device_id": "browser-1", "account_age_days": 800},
            )
            assert started.status_code == 200 and started.json()["flow"] == "challenge", started.text
            passed = client.post(started.json()["challenge_url"], json={"otp": TEST_OTP}).json()
            assert (passed["trans_status"], passed["eci"]) == ("Y", "05")
            result = {k: passed[k] for k in ("trans_status", "eci", "ds_trans_id", "authentication_value")}

            # Replayed on another payment, or forged (a signature that is not the issuer's): refused.
            replayed = post(f"/v1/payments/{b['id']}/confirm", "m_3ds_b", {"three_ds": result}, "confirm-1")
            assert (replayed.status_code, replayed.json()["error"]["code"]) == (402, "cavv_replayed"), replayed.text
            head, claims, signature = result["authentication_value"].split(".")
            forged = result | {"authentication_value": f"{head}.{claims}.{signature[:-4]}AAAA"}
            refused = post(f"/v1/payments/{a['id']}/confirm", "m_3ds_a", {"three_ds": forged}, "confirm-1")
            assert (refused.status_code, refused.json()["error"]["code"]) == (402, "cavv_invalid"), refused.text

            # The genuine value (a new key: the API keeps each key's answer): authorized, liability shifted.
            confirmed = post(f"/v1/payments/{a['id']}/confirm", "m_3ds_a", {"three_ds": result}, "confirm-2")
            assert confirmed.status_code == 200 and confirmed.json()["status"] == "captured", confirmed.text
            assert seen.wait_until(lambda: any(e["type"] == "authorized" for e in seen.events[a["id"]]), 60)
            authorized = next(e for e in seen.events[a["id"]] if e["type"] == "authorized")
            assert (authorized["three_ds_status"], authorized["liability_shift"]) == ("Y", True)
            # The other payment was never authorized: it still awaits its own authentication.
            still = post(
                f"/v1/payments/{b['id']}/three_ds/authenticate", "m_3ds_b", {"amount_minor": 100_000, "currency": "USD"}
            )
            assert still.status_code == 200 and still.json()["flow"] == "challenge"
            assert not any(e["type"] == "authorized" for e in seen.events[b["id"]])
    finally:
        bus.close()
        code = worker.stop()
    assert code == 0, worker.log_tail()
