"""KYC onboarding on the real broker: a merchant applies through the API, an owner on
the sanctions list sends the case to a reviewer (the match shown), the reviewer clears
it from the CLI, payouts are held until then, and a verification expired by event
time is checked again."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from streams.api import auth, kyc_routes
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from streams.cli import merchants as cli_merchants
from streams.cli.main import app as cli
from streams.client.kyc import KycDesk
from streams.domain import kyc
from streams.domain.payout_holds import payout_hold
from streams.domain.payouts import payout_of_settlement
from streams.domain.settlement import settlement_entry
from tests.integration.support import make_settings

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 10, tzinfo=UTC)
DOCS = {"registration_certificate": "docs:rc/1", "owner_id": "docs:id/1", "proof_of_address": "docs:poa/1"}


def test_apply_review_hold_and_reverify(bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = make_settings(tmp_path, "kyc")
    from connectors.kafka.admin import ensure_topics
    from streams.settings import client_config
    from streams.topics import declared_topics

    ensure_topics(client_config(settings), declared_topics(settings))
    desk = KycDesk(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    secret, record = auth.new_key(m, "2026-03-01T00:00:00Z")
    auth.save({record.key_id: record}, tmp_path / "api-keys.json")
    api = create_app(InMemoryBus(lambda _: None), auth.ApiKeys(tmp_path / "api-keys.json"), sealer=None)
    kyc_routes.install(api, desk, lambda: T0)
    client = TestClient(api, headers={"Authorization": f"Bearer {secret}"})

    assert client.get("/v1/kyc").status_code == 404
    bad = client.post(
        "/v1/kyc/application",
        json={
            "legal_name": "Acme",
            "country": "GB",
            "registration_number": "GB-1",
            "owners": ["Ada"],
            "documents": {"selfie": "x"},
        },
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "invalid_application")
    body = {
        "legal_name": "Acme Trading Ltd",
        "country": "GB",
        "registration_number": "GB-12345",
        "owners": ["Ada Example", "Sigmund Korvat"],
        "documents": DOCS,
    }
    r = client.post("/v1/kyc/application", json=body)
    assert r.status_code == 200, r.text
    case = r.json()
    assert (case["kyc_status"], case["state"]) == ("pending", "manual_review")
    assert "sanctions_hit:PS-0004:100" in next(c["detail"] for c in case["checks"] if c["name"] == "sanctions")
    assert "Ada Example" not in r.text  # owners are not echoed back
    assert client.post("/v1/kyc/application", json=body).status_code == 409  # one case at a time

    # Payouts wait while the case is open.
    payout = payout_of_settlement(settlement_entry(m, "USD", T0.date(), 1_000, shards=settings.partitions))
    assert payout_hold(desk.registry(), desk.sanctions())(payout) == "kyc_not_verified: pending"

    monkeypatch.setattr(cli_merchants, "get_settings", lambda: settings)
    runner = CliRunner()
    r = runner.invoke(cli, ["merchants", "kyc-review", m, "approve", "--reviewer", "it-ops", "--clear", "PS-0004"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["kyc_status"] == "verified"
    assert payout_hold(desk.registry(), desk.sanctions())(payout) is None
    assert client.get("/v1/kyc").json()["reviewer"] == "it-ops"

    # A year on (event time), the daily re-verification checks it again: the cleared entry stays cleared.
    until = desk.registry()[m]["kyc"]["verified_until"]
    r = runner.invoke(cli, ["merchants", "kyc-reverify", "--as-of", (until - timedelta(hours=1)).isoformat()])
    assert r.exit_code == 0 and m not in r.stdout  # not due yet
    r = runner.invoke(cli, ["merchants", "kyc-reverify", "--as-of", (until + timedelta(hours=1)).isoformat()])
    assert r.exit_code == 0, r.output
    again = json.loads(r.stdout.strip().splitlines()[-1])
    assert (again["merchant_id"], again["state"]) == (m, "verified")
    assert desk.registry()[m]["kyc"]["verified_until"] == until + timedelta(hours=1) + kyc.REVERIFY_AFTER
    r = runner.invoke(cli, ["merchants", "kyc-review", m, "approve", "--reviewer", "it-ops"])
    assert r.exit_code == 2 and "kyc_not_in_review" in r.output


def test_verify_and_reject_move_the_case_as_the_workflow_does(
    bootstrap: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`merchants verify|reject` on a merchant with a case: the workflow's transitions
    (the case says who decided), never a status beside a case that says otherwise."""
    settings = make_settings(tmp_path, "kycop")
    from connectors.kafka.admin import ensure_topics
    from streams.settings import client_config
    from streams.topics import declared_topics

    ensure_topics(client_config(settings), declared_topics(settings))
    monkeypatch.setattr(cli_merchants, "get_settings", lambda: settings)
    desk, runner = KycDesk(settings), CliRunner()
    m = f"m_{uuid.uuid4().hex[:6]}"
    desk.apply(m, kyc.application("Acme Ltd", "GB", "MANUAL-7", ["Ada Example"], DOCS), T0)
    assert desk.registry()[m]["kyc"]["state"] == "manual_review"

    r = runner.invoke(cli, ["merchants", "verify", m])
    assert r.exit_code == 2 and "--reviewer" in r.output  # a case names who decides
    r = runner.invoke(cli, ["merchants", "verify", m, "--reviewer", "it-ops"])
    assert r.exit_code == 0, r.output
    record = desk.registry()[m]
    assert (record["kyc_status"], record["kyc"]["state"]) == ("verified", "verified")
    assert record["kyc"]["reviewer"] == "it-ops"
    assert record["kyc"]["verified_until"] is not None  # re-verified a year on, as an approval by kyc-review
    assert "already" in runner.invoke(cli, ["merchants", "verify", m, "--reviewer", "it-ops"]).output

    r = runner.invoke(cli, ["merchants", "reject", m, "--reviewer", "aml-desk"])
    assert r.exit_code == 0, r.output
    record = desk.registry()[m]
    assert (record["kyc_status"], record["kyc"]["state"]) == ("rejected", "rejected")
    assert record["kyc"]["reviewer"] == "aml-desk"
    r = runner.invoke(cli, ["merchants", "verify", m, "--reviewer", "it-ops"])
    assert r.exit_code == 2 and "kyc_not_in_review" in r.output and "applies again" in r.output

    # A merchant registered without applying (test mode) has only a status: it is set.
    plain = f"m_{uuid.uuid4().hex[:6]}"
    assert runner.invoke(cli, ["merchants", "add", plain]).exit_code == 0
    assert runner.invoke(cli, ["merchants", "verify", plain]).exit_code == 0
    assert (desk.registry()[plain]["kyc_status"], desk.registry()[plain].get("kyc")) == ("verified", None)
