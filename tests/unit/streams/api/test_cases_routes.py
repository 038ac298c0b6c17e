"""The ops case queue routes over an in-memory queue: ops only, list with filters,
decisions with their errors."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streams.api import auth, cases_routes
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from tests.unit.streams.api.console_support import MemoryQueue

AT = datetime(2026, 12, 6, 12, tzinfo=UTC)  # console_support.case's opened_at, the decisions' time
TOKEN = "ops-token-" + "x" * 40


@pytest.fixture
def client(tmp_path: Path) -> TestClient:
    app = create_app(InMemoryBus(lambda _: None), auth.ApiKeys(tmp_path / "keys.json"), sealer=None)
    cases_routes.install(app, MemoryQueue(), cases_routes.bearer_role(TOKEN.encode()), lambda: AT)
    return TestClient(app)


def test_only_ops_reach_the_queue(client: TestClient, tmp_path: Path) -> None:
    for headers in ({}, {"Authorization": "Bearer sk_not_ops"}, {"Authorization": f"Bearer {TOKEN}x"}):
        r = client.get("/dashboard/cases", headers=headers)
        assert (r.status_code, r.json()["error"]["code"]) == (401, "ops_only")
        assert client.post("/dashboard/cases/c1/decision", headers=headers, json={}).status_code == 401
    # no token configured: nobody is ops
    app = create_app(InMemoryBus(lambda _: None), auth.ApiKeys(tmp_path / "other-keys.json"), sealer=None)
    cases_routes.install(app, MemoryQueue(), cases_routes.bearer_role(None), lambda: AT)
    assert TestClient(app).get("/dashboard/cases", headers={"Authorization": "Bearer "}).status_code == 401


def test_list_and_decide(client: TestClient) -> None:
    ops = {"Authorization": f"Bearer {TOKEN}"}
    (listed,) = client.get("/dashboard/cases?status=open", headers=ops).json()["data"]
    assert listed["case_id"] == "c1" and listed["status"] == "open" and listed["opened_at"] == AT.isoformat()
    r = client.post(
        "/dashboard/cases/c1/decision",
        headers=ops,
        json={"decision": "report", "operator": "alice", "reason": "SAR filed"},
    )
    assert r.status_code == 200 and r.json()["decided_at"] == AT.isoformat() and r.json()["operator"] == "alice"
    assert client.get("/dashboard/cases?status=open", headers=ops).json()["data"] == []
    (done,) = client.get("/dashboard/cases?status=reported", headers=ops).json()["data"]
    assert [d["reason"] for d in done["decisions"]] == ["SAR filed"]
    again = client.post(
        "/dashboard/cases/c1/decision", headers=ops, json={"decision": "dismiss", "operator": "bob", "reason": "no"}
    )
    assert (again.status_code, again.json()["error"]["code"]) == (409, "case_closed")
    missing = client.post(
        "/dashboard/cases/nope/decision", headers=ops, json={"decision": "dismiss", "operator": "bob", "reason": "no"}
    )
    assert (missing.status_code, missing.json()["error"]["code"]) == (404, "case_not_found")


@pytest.mark.parametrize(
    "body",
    [
        {"decision": "approve", "operator": "a", "reason": "r"},
        {"decision": "dismiss", "operator": "", "reason": "r"},
        {"decision": "dismiss", "operator": "a"},
        {"decision": "dismiss", "operator": "a", "reason": "r", "extra": 1},
    ],
)
def test_a_bad_decision_is_a_400(client: TestClient, body: dict) -> None:
    r = client.post("/dashboard/cases/c1/decision", headers={"Authorization": f"Bearer {TOKEN}"}, json=body)
    assert (r.status_code, r.json()["error"]["code"]) == (400, "parameter_invalid")
    assert (
        client.get("/dashboard/cases?status=nonsense", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 400
    )


def test_the_dashboard_s_ops_session_reaches_the_queue_and_a_merchant_s_does_not(tmp_path: Path) -> None:
    from streams.api.dashboard import Dashboard

    secret, record = auth.new_key("m_1", "2026-12-01T00:00:00Z")
    auth.save({record.key_id: record}, tmp_path / "keys.json")
    keys = auth.ApiKeys(tmp_path / "keys.json")
    dashboard = Dashboard(lambda *_: [], keys, TOKEN.encode())
    app = create_app(InMemoryBus(lambda _: None), keys, sealer=None, dashboard=dashboard)
    cases_routes.install(app, MemoryQueue(), dashboard.role_of, lambda: AT)
    ops, merchant = TestClient(app), TestClient(app)
    assert ops.post("/dashboard/login", data={"token": TOKEN}, follow_redirects=False).status_code == 303
    assert [c["case_id"] for c in ops.get("/dashboard/cases").json()["data"]] == ["c1"]
    assert merchant.post("/dashboard/login", data={"token": secret}, follow_redirects=False).status_code == 303
    assert merchant.get("/dashboard/cases").status_code == 401
