"""The dashboard's figures against direct SQL over a populated chDB, its auth
(ops token, merchant keys, signed cookies) and its charts."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from streams.api import auth
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from streams.api.charts import column_chart, hbar_chart
from streams.api.dashboard import COOKIE, OPS, Dashboard, Sessions, approval_rate, scope, snapshot
from streams.api.ops import OpsSnapshot
from streams.api.readmodel import ClickHousePayments
from tests.unit.connectors.clickhouse.support import populate, traffic

T = traffic(payments=300, seed=23, days=2)
OPS_TOKEN = "o" * 40


def direct(ch, sql: str, **params):  # type: ignore[no-untyped-def]
    return ch.query(sql, parameters=params).result_rows


@pytest.mark.parametrize("merchant", [None, "m_acme"])
def test_the_snapshot_equals_direct_sql(ch, merchant: str | None) -> None:  # type: ignore[no-untyped-def]
    populate(ch, T)
    s = snapshot(ClickHousePayments(ch).rows, merchant)
    where = "merchant_id = {m:String}" if merchant else "1"
    m = {"m": merchant} if merchant else {}
    [(attempts, approved)] = direct(
        ch,
        f"SELECT countIf(version = 1 AND type IN ('authorized', 'declined')), "
        f"countIf(version = 1 AND type = 'authorized') FROM payment_events FINAL WHERE {where}",
        **m,
    )
    assert (s.attempts, s.approved) == (attempts, approved) and attempts > 0
    captured = dict(
        direct(
            ch,
            f"SELECT currency, sum(amount_minor) FROM payment_events FINAL WHERE type = 'captured' AND {where} "
            "GROUP BY currency",
            **m,
        )
    )
    assert {c.currency: c.captured_minor for c in s.currencies if c.captured_minor} == captured
    refunds = dict(
        direct(
            ch,
            f"SELECT currency, count() FROM payment_events FINAL WHERE type = 'refunded' AND {where} GROUP BY currency",
            **m,
        )
    )
    assert {c.currency: c.refunds for c in s.currencies if c.refunds} == refunds
    opened = dict(
        direct(
            ch,
            f"SELECT currency, count() FROM disputes FINAL WHERE stage = 'opened' AND {where} GROUP BY currency",
            **m,
        )
    )
    assert {c.currency: c.disputes_opened for c in s.currencies if c.disputes_opened} == opened
    fraud = dict(direct(ch, f"SELECT action, count() FROM fraud_decisions FINAL WHERE {where} GROUP BY action", **m))
    assert dict(s.fraud) == fraud and fraud.get("decline", 0) > 0
    declined = dict(
        direct(
            ch,
            f"SELECT reason_code, count() FROM payment_events FINAL WHERE type = 'declined' AND {where} "
            "GROUP BY reason_code",
            **m,
        )
    )
    assert {r: n for r, src, n in s.declines if src == "payment"} == declined
    assert ("invalid_currency", "rejection", 1) in s.declines  # populate's rejection is m_acme's
    # Two days of traffic: per hour, every attempt in the series (48 buckets reach back far enough).
    assert s.bucket == "hour" and sum(a for _, a, _ in s.series) == attempts and len(s.series) <= 48
    assert [h for h, _, _ in s.series] == sorted(h for h, _, _ in s.series)


def test_an_empty_read_model_shows_no_rate(ch) -> None:  # type: ignore[no-untyped-def]
    s = snapshot(ClickHousePayments(ch).rows, None)
    assert (s.attempts, s.currencies, s.as_of, s.events, s.series) == (0, (), None, 0, ())
    assert approval_rate(0, 0) is None and approval_rate(1, 3) == 0.3333


def test_a_merchant_sees_only_itself_and_ops_sees_all() -> None:
    assert scope(OPS, None) is None and scope(OPS, "m_x") == "m_x"
    assert scope("m:m_acme", None) == scope("m:m_acme", "m_acme") == "m_acme"
    with pytest.raises(PermissionError):
        scope("m:m_acme", "m_other")


def test_sessions_are_signed_and_expire() -> None:
    sessions = Sessions(ttl_s=60, key=b"k" * 32)
    cookie = sessions.issue("m:m_acme", 1000.0)
    assert sessions.role(cookie, 1059.0) == "m:m_acme"
    assert sessions.role(cookie, 1061.0) is None
    assert sessions.role(cookie.replace("m:m_acme", OPS), 1000.0) is None  # a forged role
    assert Sessions(key=b"x" * 32).role(cookie, 1000.0) is None  # another process's key
    assert sessions.role("garbage", 1000.0) is None and sessions.role("||", 1000.0) is None


@pytest.fixture
def client(ch, tmp_path: Path, key_file) -> tuple[TestClient, str, str]:  # type: ignore[no-untyped-def]
    populate(ch, T)
    src, secret, other = key_file
    path = tmp_path / "api_keys.json"
    path.write_bytes(src.read_bytes())
    keys = auth.ApiKeys(path)
    ops = OpsSnapshot(lag=(), dlq_messages=3, breakers=(), errors=())
    d = Dashboard(ClickHousePayments(ch).rows, keys, OPS_TOKEN.encode(), lambda: ops)
    app = create_app(InMemoryBus(lambda _c: None), keys, sealer=None, dashboard=d, instance="t")  # publishes nothing
    return TestClient(app), secret, other


def test_no_session_gets_the_login_page_and_a_bad_token_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    c, _, _ = client
    r = c.get("/dashboard")
    assert r.status_code == 401 and 'name="token"' in r.text and "data-metric" not in r.text
    assert c.get("/dashboard/panel").status_code == 401
    bad = c.post("/dashboard/login", data={"token": "sk_nope"}, follow_redirects=False)
    assert bad.status_code == 401 and COOKIE not in bad.cookies


def test_a_merchant_key_logs_in_to_its_own_merchant_only(client) -> None:  # type: ignore[no-untyped-def]
    c, secret, _ = client
    r = c.post("/dashboard/login", data={"token": secret}, follow_redirects=False)
    assert r.status_code == 303 and COOKIE in r.cookies
    set_cookie = r.headers["set-cookie"].lower()
    assert "httponly" in set_cookie and "samesite=strict" in set_cookie
    page = c.get("/dashboard")
    assert page.status_code == 200 and "m_acme" in page.text and 'data-metric="dlq"' not in page.text
    assert "<select" not in page.text  # no merchant picker for a merchant
    assert c.get("/dashboard", params={"merchant": "m_globex"}).status_code == 403
    assert c.get("/dashboard/panel", params={"merchant": "m_globex"}).status_code == 403


def test_the_ops_token_sees_every_merchant_and_the_ops_panel(client) -> None:  # type: ignore[no-untyped-def]
    c, _, _ = client
    headers = {"Authorization": f"Bearer {OPS_TOKEN}"}
    page = c.get("/dashboard", headers=headers)
    assert page.status_code == 200 and 'data-metric="dlq">3<' in page.text and "<select" in page.text
    assert all(f'value="{m}"' in page.text for m in ("m_acme", "m_globex", "m_initech"))
    panel = c.get("/dashboard/panel", params={"merchant": "m_globex"}, headers=headers)
    assert panel.status_code == 200 and "m_globex" in panel.text


def test_the_dashboard_is_not_in_the_api_spec(client) -> None:  # type: ignore[no-untyped-def]
    c, _, _ = client
    assert not any(p.startswith("/dashboard") for p in c.get("/openapi.json").json()["paths"])


def test_charts_scale_bars_and_escape_labels() -> None:
    svg = hbar_chart([("<b>", 10), ("x", 5)], "t", "c")
    assert "&lt;b&gt;" in svg and "<b>" not in svg
    widths = [int(w) for w in re.findall(r'width="(\d+)" height="14" class="bar"', svg)]
    assert len(widths) == 2 and widths[0] == 2 * widths[1]
    assert "no data" in hbar_chart([], "t", "c") and "no data" in column_chart([], "t", "c")
    with pytest.raises(AssertionError):
        column_chart([("h", 1, 2)], "t", "c")
