"""The console's pages over a populated chDB, through the routes: each renders with
data, the filters filter, a merchant sees only its own rows, approve/decline writes
the review_resolve command the CLI writes, and the chain verdicts of a timeline.
The topics' side is an in-memory Sources holding real records (Avro round trip, real
Ed25519 chains); tests/integration/api/test_console_sources.py reads them from a broker."""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from streams.api import auth, console
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from streams.api.charts import hbar_chart, label_px, short_label
from streams.api.console import Cursor, PaymentFilter, parse_filter, search_clause
from streams.api.dashboard import Dashboard, bucket_for, series_title
from streams.api.readmodel import ClickHousePayments
from streams.client.fraud import resolve_command
from tests.unit.connectors.clickhouse.support import DAY0, populate, traffic
from tests.unit.streams.api.console_support import (
    MemoryQueue,
    MemorySources,
    case,
    chained,
    delivery,
    review,
    with_wallets,
)

OPS_TOKEN = "o" * 40
NOW = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)


T = with_wallets(traffic(payments=300, seed=41, days=3))


@pytest.fixture
def site(ch, tmp_path: Path, key_file):  # type: ignore[no-untyped-def]
    populate(ch, T)
    src, secret, _ = key_file
    path = tmp_path / "api_keys.json"
    path.write_bytes(src.read_bytes())
    keys = auth.ApiKeys(path)
    sources = MemorySources()
    d = Dashboard(ClickHousePayments(ch).rows, keys, OPS_TOKEN.encode(), None, sources=sources, now=lambda: NOW)
    app = create_app(InMemoryBus(lambda _c: None), keys, sealer=None, dashboard=d, instance="t")
    return TestClient(app), secret, sources, ch


def ops() -> dict[str, str]:
    return {"Authorization": f"Bearer {OPS_TOKEN}"}


def shown(html: str, attr: str) -> list[str]:
    return re.findall(rf'data-{attr}="([^"]+)"', html)


def sql(ch, query: str, **params: Any) -> list[tuple]:  # type: ignore[no-untyped-def]
    return ch.query(query, parameters=params).result_rows


# --- payments -------------------------------------------------------------------------


def test_the_payments_pages_walk_every_payment_newest_first(site) -> None:  # type: ignore[no-untyped-def]
    c, _, _, ch = site
    seen, url = [], "/dashboard/payments"
    while url:
        r = c.get(url, headers=ops())
        assert r.status_code == 200
        seen += shown(r.text, "payment")
        older = re.search(r'data-testid="older" href="([^"]+)"', r.text)
        url = older.group(1).replace("&amp;", "&") if older else ""
    want = sql(
        ch,
        "SELECT e.payment_id FROM payment_events AS e FINAL WHERE version = 1 "
        "ORDER BY occurred_at DESC, payment_id DESC",
    )
    assert seen == [pid for (pid,) in want] and len(seen) == 300
    # and back: the page before the second one is the first
    second = c.get("/dashboard/payments", params={"after": str(Cursor(0, "pay_0"))}, headers=ops())
    assert second.status_code == 200 and shown(second.text, "payment") == []


def test_a_newer_link_returns_to_the_page_before(site) -> None:  # type: ignore[no-untyped-def]
    c, _, _, _ = site
    first = shown(c.get("/dashboard/payments", headers=ops()).text, "payment")
    page2 = c.get("/dashboard/payments", params={"after": _cursor_of(c, first[-1])}, headers=ops()).text
    newer = re.search(r'data-testid="newer" href="([^"]+)"', page2).group(1).replace("&amp;", "&")
    assert shown(c.get(newer, headers=ops()).text, "payment") == first


def _cursor_of(c: TestClient, pid: str) -> str:
    page = c.get("/dashboard/payments", headers=ops()).text
    return re.search(r'data-testid="older" href="[^"]*after=([^"&]+)', page).group(1).replace("%2F", "/")


def test_filters_filter(site) -> None:  # type: ignore[no-untyped-def]
    c, _, _, ch = site

    def listed(**params: str) -> set[str]:
        r = c.get("/dashboard/payments", params=params | {"merchant": "m_globex"}, headers=ops())
        assert r.status_code == 200, r.text
        return set(shown(r.text, "payment"))

    def want(where: str, **p: Any) -> set[str]:
        return {
            pid
            for (pid,) in sql(
                ch, "SELECT payment_id FROM payments FINAL WHERE merchant_id = 'm_globex' AND " + where, **p
            )
        }

    declined = listed(status="declined")
    assert declined and declined == want("status = 'declined'") if len(declined) < 25 else len(declined) == 25
    wallets = listed(method="wallet")
    assert wallets and wallets <= want("method = 'wallet'")
    day = (DAY0 + timedelta(days=1)).date().isoformat()
    by_day = listed(**{"from": day, "to": day})
    created = {
        pid
        for (pid,) in sql(
            ch,
            "SELECT payment_id FROM payment_events FINAL WHERE version = 1 AND "
            "merchant_id = 'm_globex' AND toDate(occurred_at) = {d:Date}",
            d=day,
        )
    }
    assert by_day and by_day <= created
    pid, amount, currency, last4 = sql(
        ch,
        "SELECT payment_id, authorized_minor, currency, card_last4 FROM payments "
        "FINAL WHERE merchant_id = 'm_globex' AND authorized_minor > 0 "
        "AND currency = 'USD' ORDER BY payment_id LIMIT 1",
    )[0]
    assert pid in listed(q=pid[:10]) and pid in listed(q=f"{amount // 100}.{amount % 100:02d}")
    assert all(
        p in want("card_last4 = {l:String}", l=last4)
        for p in listed(q=last4)
        if p not in want("authorized_minor = {a:Int64} OR captured_minor = {a:Int64}", a=int(last4) * 100)
    )
    bad = c.get("/dashboard/payments", params={"q": "drop table"}, headers=ops())
    assert bad.status_code == 400 and 'data-testid="filter-error"' in bad.text


def test_a_merchant_sees_only_its_own_payments_and_cannot_open_others(site) -> None:  # type: ignore[no-untyped-def]
    c, secret, _, ch = site
    me = {"Authorization": f"Bearer {secret}"}
    mine = shown(c.get("/dashboard/payments", headers=me).text, "payment")
    owners = dict(sql(ch, "SELECT payment_id, merchant_id FROM payments FINAL"))
    assert mine and {owners[p] for p in mine} == {"m_acme"}
    theirs = next(p for p, m in owners.items() if m == "m_globex")
    assert c.get(f"/dashboard/payments/{theirs}", headers=me).status_code == 404
    assert c.get("/dashboard/payments", params={"merchant": "m_globex"}, headers=me).status_code == 403
    for page in ("disputes", "payouts", "reviews", "webhooks"):
        assert c.get(f"/dashboard/{page}", params={"merchant": "m_globex"}, headers=me).status_code == 403


@pytest.mark.parametrize(
    "path",
    [
        "/dashboard/payments",
        "/dashboard/reviews",
        "/dashboard/disputes",
        "/dashboard/payouts",
        "/dashboard/webhooks",
        "/dashboard/monitoring",
        "/dashboard/payments/pay_41_1",
    ],
)
def test_every_page_wants_a_login(site, path: str) -> None:  # type: ignore[no-untyped-def]
    c, _, _, _ = site
    r = c.get(path)
    assert r.status_code == 401 and 'name="token"' in r.text
    assert c.post("/dashboard/reviews/pay_41_1", data={"decision": "approve"}).status_code == 401


# --- a payment's timeline ----------------------------------------------------------


def test_the_timeline_shows_each_event_with_its_chain_verdict(site) -> None:  # type: ignore[no-untyped-def]
    c, _, sources, ch = site
    pid = sql(
        ch,
        "SELECT payment_id FROM payment_events FINAL GROUP BY payment_id HAVING count() >= 3 "
        "ORDER BY payment_id LIMIT 1",
    )[0][0]
    events = sorted((e for e in T.events if e["payment_id"] == pid), key=lambda e: e["version"])
    sources.windows[pid] = (0, chained(events, sign_last=True))
    r = c.get(f"/dashboard/payments/{pid}", headers=ops())
    assert r.status_code == 200
    assert shown(r.text, "event") == [e["event_id"] for e in events]  # in order
    assert shown(r.text, "verdict") == ["verified"] * len(events)
    sources.windows[pid] = (0, chained(events, sign_last=False))
    assert shown(c.get(f"/dashboard/payments/{pid}", headers=ops()).text, "verdict") == ["unsigned"] * len(events)
    tampered = chained(events, sign_last=True)
    tampered[0] = tampered[0] | {"amount_minor": tampered[0]["amount_minor"] + 1}
    sources.windows[pid] = (0, tampered)
    # The changed event no longer links to the next, and the next not to it; later links still hold.
    assert shown(c.get(f"/dashboard/payments/{pid}", headers=ops()).text, "verdict") == (
        ["broken"] * 2 + ["verified"] * (len(events) - 2)
    )
    del sources.windows[pid]  # the topic unreadable: the timeline still shows, unchecked, and says why
    r = c.get(f"/dashboard/payments/{pid}", headers=ops())
    assert r.status_code == 200 and set(shown(r.text, "verdict")) == {"unchecked"} and "not checked" in r.text


# --- reviews ----------------------------------------------------------------------


def test_the_review_queue_and_approve_writes_the_clis_command(site) -> None:  # type: ignore[no-untyped-def]
    c, secret, sources, ch = site
    resolved_pid = sql(ch, "SELECT payment_id FROM payments FINAL WHERE merchant_id = 'm_acme' LIMIT 1")[0][0]
    sources.review_records += [
        review("pay_wait_1", "m_acme"),
        review("pay_wait_2", "m_globex"),
        review(resolved_pid, "m_acme"),
    ]
    me = {"Authorization": f"Bearer {secret}"}
    assert shown(c.get("/dashboard/reviews", headers=me).text, "review") == ["pay_wait_1"]  # own, still waiting
    assert shown(c.get("/dashboard/reviews", headers=ops()).text, "review") == ["pay_wait_1", "pay_wait_2"]
    # another merchant's review is not there for this key
    assert c.post("/dashboard/reviews/pay_wait_2", data={"decision": "approve"}, headers=me).status_code == 404
    r = c.post("/dashboard/reviews/pay_wait_1", data={"decision": "approve"}, headers=me, follow_redirects=False)
    assert r.status_code == 303 and "sent=approve" in r.headers["location"]
    [(key, command)] = sources.resolved
    assert (key, command) == resolve_command(sources.review_records[0], "approve", NOW, "dashboard:m_acme")
    assert command["kind"] == "review_resolve" and command["fraud_action"] == "approve"
    d = c.post("/dashboard/reviews/pay_wait_2", data={"decision": "decline"}, headers=ops(), follow_redirects=False)
    assert d.status_code == 303
    assert sources.resolved[1] == resolve_command(sources.review_records[1], "decline", NOW, "dashboard:ops")
    assert c.post("/dashboard/reviews/pay_wait_1", data={"decision": "maybe"}, headers=ops()).status_code == 400
    assert c.post(f"/dashboard/reviews/{resolved_pid}", data={"decision": "approve"}, headers=ops()).status_code == 404


# --- disputes, payouts, webhooks --------------------------------------------------------


def test_disputes_and_payouts_render_with_data_and_scope(site) -> None:  # type: ignore[no-untyped-def]
    c, secret, _, ch = site
    opened = sql(ch, "SELECT event_id, merchant_id FROM disputes FINAL WHERE stage = 'opened'")
    assert opened
    r = c.get("/dashboard/disputes", headers=ops())
    assert r.status_code == 200 and set(shown(r.text, "dispute")) == {e for e, _ in opened}
    me = {"Authorization": f"Bearer {secret}"}
    assert set(shown(c.get("/dashboard/disputes", headers=me).text, "dispute")) == {
        e for e, m in opened if m == "m_acme"
    }
    payouts = sql(ch, "SELECT payout_id, merchant_id FROM payouts FINAL")
    assert payouts
    assert set(shown(c.get("/dashboard/payouts", headers=ops()).text, "payout")) == {p for p, _ in payouts}
    assert set(shown(c.get("/dashboard/payouts", headers=me).text, "payout")) == {
        p for p, m in payouts if m == "m_acme"
    }


def test_dispute_evidence_submissions_are_listed(site) -> None:  # type: ignore[no-untyped-def]
    c, _, _, ch = site
    from connectors.clickhouse.rows import rows_for
    from connectors.clickhouse.sink import Sink

    pid, merchant, at = sql(
        ch,
        "SELECT payment_id, merchant_id, occurred_at FROM disputes FINAL "
        "WHERE stage = 'opened' ORDER BY event_id LIMIT 1",
    )[0]
    Sink(ch).insert(
        rows_for(
            "payment_outcome",
            {
                "outcome_id": "out_ev",
                "command_id": "c_ev",
                "kind": "dispute_evidence",
                "merchant_id": merchant,
                "idempotency_key": "ev-1",
                "payment_id": pid,
                "status": "succeeded",
                "reason_code": None,
                "reason_detail": None,
                "payment_status": "captured",
                "amount_minor": None,
                "currency": None,
                "occurred_at": console.utc(at) + timedelta(seconds=1),
                "dispute_evidence": "receipt: <b>signed</b> delivery\nshipping_tracking_number: 1Z999",
            },
        )
    )
    html = c.get("/dashboard/disputes", params={"limit": "100"}, headers=ops()).text
    row = re.search(
        rf'<tr data-dispute="[^"]+"><td class="l"><a class="mono" href="[^"]*">{pid}</a>.*?</tr>', html, re.S
    ).group(0)
    assert "succeeded" in row and "none" not in row.split('data-field="evidence"')[1]
    # the text the network got, escaped, from the read model (PaymentOutcome v2)
    assert "receipt: &lt;b&gt;signed&lt;/b&gt; delivery\nshipping_tracking_number: 1Z999" in row


def _walk(c: TestClient, url: str, attr: str, headers: dict[str, str]) -> tuple[list[str], int]:
    """Every row of a paged list, following its older links; and how many pages it took."""
    seen, pages = [], 0
    while url:
        r = c.get(url, headers=headers)
        assert r.status_code == 200, r.text
        seen, pages = seen + shown(r.text, attr), pages + 1
        older = re.search(r'data-testid="older" href="([^"]+)"', r.text)
        url = older.group(1).replace("&amp;", "&") if older else ""
    return seen, pages


def test_disputes_and_payouts_page_with_cursors_newest_first(site) -> None:  # type: ignore[no-untyped-def]
    c, secret, _, ch = site
    opened = sql(
        ch,
        "SELECT event_id FROM payment_events FINAL WHERE type = 'dispute_opened' "
        "ORDER BY occurred_at DESC, event_id DESC",
    )
    seen, pages = _walk(c, "/dashboard/disputes?limit=2", "dispute", ops())
    assert seen == [e for (e,) in opened] and pages == -(-len(opened) // 2) and len(opened) > 2
    payouts = sql(
        ch, "SELECT payout_id FROM payouts FINAL WHERE merchant_id = 'm_acme' ORDER BY sent_at DESC, payout_id DESC"
    )
    me = {"Authorization": f"Bearer {secret}"}
    seen, pages = _walk(c, "/dashboard/payouts?limit=1", "payout", me)
    assert seen == [p for (p,) in payouts] and pages == len(payouts) and len(payouts) > 1
    # a newer link from the second page goes back to the first
    first = c.get("/dashboard/payouts?limit=1", headers=me).text
    older = re.search(r'data-testid="older" href="([^"]+)"', first).group(1).replace("&amp;", "&")
    newer = re.search(r'data-testid="newer" href="([^"]+)"', c.get(older, headers=me).text).group(1)
    assert shown(c.get(newer.replace("&amp;", "&"), headers=me).text, "payout") == shown(first, "payout")
    for bad in ("limit=0", "limit=101", "limit=x", "after=nope", "after=1.a&before=1.b"):
        assert c.get(f"/dashboard/disputes?{bad}", headers=ops()).status_code == 400, bad


def test_webhook_deliveries_and_a_retry_of_a_given_up_one(site) -> None:  # type: ignore[no-untyped-def]
    c, secret, sources, _ = site
    sources.delivery_records += [
        delivery("whk_a", "m_acme", 1, "failed"),
        delivery("whk_a", "m_acme", 2, "gave_up"),
        delivery("whk_b", "m_acme", 1, "failed"),
        delivery("whk_c", "m_globex", 1, "delivered"),
    ]
    me = {"Authorization": f"Bearer {secret}"}
    page = c.get("/dashboard/webhooks", headers=me).text
    assert sorted(shown(page, "notification")) == ["whk_a", "whk_b"]
    assert page.count(">retry</button>") == 1  # only the given-up one: the failed one is on the runner's schedule
    assert shown(c.get("/dashboard/webhooks", params={"status": "gave_up"}, headers=ops()).text, "notification") == [
        "whk_a"
    ]
    assert c.post("/dashboard/webhooks/whk_b/retry", headers=me).status_code == 404  # not given up
    assert c.post("/dashboard/webhooks/whk_c/retry", headers=me).status_code == 404  # another merchant's
    r = c.post("/dashboard/webhooks/whk_a/retry", headers=me, follow_redirects=False)
    assert r.status_code == 303 and sources.retried == ["whk_a"]
    after = c.get(r.headers["location"], headers=me).text
    assert "retry of whk_a: delivered" in after and ">retry</button>" not in after
    # pages of one, newest attempt first, the filter kept by the pager's links
    seen, _ = _walk(c, "/dashboard/webhooks?limit=1", "notification", me)
    assert seen == shown(c.get("/dashboard/webhooks", headers=me).text, "notification") and len(seen) == 2
    assert _walk(c, "/dashboard/webhooks?limit=1&status=failed", "notification", me)[0] == ["whk_b"]


# --- monitoring cases (ops only) --------------------------------------------------------


@pytest.fixture
def case_site(tmp_path: Path, key_file):  # type: ignore[no-untyped-def]
    src, secret, _ = key_file
    path = tmp_path / "api_keys.json"
    path.write_bytes(src.read_bytes())
    keys = auth.ApiKeys(path)
    queue = MemoryQueue([case("c_old", "m_acme", evidence=3), case("c_other", "m_globex", evidence=1)])
    minutes = itertools.count()  # each decision a minute after the last: the trail's order is theirs
    d = Dashboard(
        lambda *_: [], keys, OPS_TOKEN.encode(), None, cases=queue, now=lambda: NOW + timedelta(minutes=next(minutes))
    )
    return (
        TestClient(create_app(InMemoryBus(lambda _c: None), keys, sealer=None, dashboard=d, instance="t")),
        secret,
        queue,
    )


def test_ops_works_the_case_queue_as_the_cli_does(case_site) -> None:  # type: ignore[no-untyped-def]
    c, _, queue = case_site
    html = c.get("/dashboard/monitoring", headers=ops()).text
    assert shown(html, "case") == ["c_old", "c_other"] and 'href="/dashboard/monitoring"' in html
    assert shown(html, "evidence") == ["pay_c_old_0", "pay_c_old_1", "pay_c_old_2", "pay_c_other_0"]
    assert "9500.00 USD" in html and "9500.02 USD" in html  # evidence amounts as money
    assert shown(c.get("/dashboard/monitoring?merchant=m_globex", headers=ops()).text, "case") == ["c_other"]

    r = c.post(
        "/dashboard/monitoring/c_old?merchant=m_acme",
        data={"decision": "escalate", "operator": "alice", "reason": "looks split on purpose"},
        headers=ops(),
        follow_redirects=False,
    )
    assert r.status_code == 303 and r.headers["location"].startswith("/dashboard/monitoring?merchant=m_acme")
    (d,) = queue.decisions  # the record `paystream cases decide` writes: who, what, why, when
    assert (d["case_id"], d["decision"], d["operator"], d["reason"], d["decided_at"]) == (
        "c_old",
        "escalate",
        "alice",
        "looks split on purpose",
        NOW,
    )
    after = c.get(r.headers["location"], headers=ops()).text
    assert "escalate recorded for c_old" in after and shown(after, "status") == ["escalated"]
    assert shown(after, "decision") == ["escalate"] and 'value="escalate"' not in after  # escalated once

    c.post(
        "/dashboard/monitoring/c_old",
        data={"decision": "report", "operator": "bob", "reason": "SAR filed"},
        headers=ops(),
    )
    assert shown(c.get("/dashboard/monitoring", headers=ops()).text, "case") == ["c_other"]  # closed: off the queue
    closed = c.get("/dashboard/monitoring?status=reported", headers=ops()).text
    assert shown(closed, "case") == ["c_old"] and shown(closed, "decision") == ["escalate", "report"]
    assert 'name="decision"' not in closed  # a closed case takes no decision
    again = c.post(
        "/dashboard/monitoring/c_old", data={"decision": "dismiss", "operator": "eve", "reason": "x"}, headers=ops()
    )
    assert again.status_code == 409 and "case_closed" in again.text and len(queue.decisions) == 2
    assert (
        c.post(
            "/dashboard/monitoring/nope", data={"decision": "dismiss", "operator": "e", "reason": "x"}, headers=ops()
        ).status_code
        == 404
    )
    bad = c.post("/dashboard/monitoring/c_other", data={"decision": "dismiss", "operator": "e"}, headers=ops())
    assert bad.status_code == 400 and "invalid_reason" in bad.text
    assert c.get("/dashboard/monitoring?status=nonsense", headers=ops()).status_code == 400


def test_a_merchant_never_sees_the_case_queue(case_site) -> None:  # type: ignore[no-untyped-def]
    c, secret, queue = case_site
    me = {"Authorization": f"Bearer {secret}"}
    assert "/dashboard/monitoring" not in c.get("/dashboard/payouts", headers=me).text  # no nav link
    r = c.get("/dashboard/monitoring", headers=me)
    assert r.status_code == 403 and "data-case" not in r.text
    r = c.post("/dashboard/monitoring/c_old", data={"decision": "dismiss", "operator": "m", "reason": "x"}, headers=me)
    assert r.status_code == 403 and queue.decisions == []
    assert c.get("/dashboard/monitoring").status_code == 401


def test_the_overview_and_every_page_are_styled_and_fetch_nothing(site) -> None:  # type: ignore[no-untyped-def]
    c, _, _, _ = site
    for path in (
        "/dashboard",
        "/dashboard/payments",
        "/dashboard/reviews",
        "/dashboard/disputes",
        "/dashboard/payouts",
        "/dashboard/webhooks",
        "/dashboard/monitoring",
    ):
        html = c.get(path, headers=ops()).text
        assert "<style>" in html and "<nav>" in html
        assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing from elsewhere


# --- pure parts: filters, cursors, chart labels and spans -------------------------------


def test_parse_filter_and_search_clause() -> None:
    f = parse_filter(
        {"q": " 19.99 ", "status": "captured", "method": "wallet", "from": "2026-11-01", "to": "2026-11-30"}
    )
    assert f == PaymentFilter("19.99", "captured", "wallet", DAY0.date().replace(day=1), DAY0.date().replace(day=30))
    assert parse_filter(f.query()) == f
    for bad in (
        {"status": "nope"},
        {"method": "cash"},
        {"from": "yesterday"},
        {"from": "2026-12-02", "to": "2026-12-01"},
        {"q": "x" * 65},
    ):
        with pytest.raises(ValueError):
            parse_filter(bad)
    sql_, params = search_clause("19.99")
    assert params["q_amt2"] == 1999 and "USD" in params["q_cur2"] and "q_amt0" not in params  # no 19.99 JPY
    assert search_clause("4242")[1]["q_last4"] == "4242" and search_clause("4242")[1]["q_amt0"] == 4242
    assert search_clause("pay_ab")[1] == {"q_pid": "pay_ab"}
    with pytest.raises(ValueError):
        search_clause("'; drop")
    assert Cursor.parse(str(Cursor(123, "pay_x"))) == Cursor(123, "pay_x")


def test_chart_labels_are_never_clipped() -> None:
    labels = ["fraud_suspected (payment)", "authentication_failed (rejection)", "x" * 80]
    svg = hbar_chart([(x, 3) for x in labels], "t", "c")
    left = label_px(labels)
    for x in labels:
        assert len(short_label(x)) * 7 + 6 <= left  # the text ends at left - 6 and starts at >= 0
        assert f">{short_label(x)}</text>" in svg
    assert f"<title>{'x' * 80}: 3</title>" in svg and len(short_label("x" * 80)) == 40


def test_a_series_title_says_the_span_its_buckets_cover() -> None:
    first = datetime(2026, 9, 1, tzinfo=UTC)
    assert bucket_for(first, first + timedelta(hours=20))[0] == "hour"
    assert bucket_for(first, first + timedelta(days=91))[0] == "week"  # three months: 13 weeks
    assert bucket_for(first, first + timedelta(days=20))[0] == "day"
    name, _, since = bucket_for(first, first + timedelta(days=2000))
    assert name == "month" and since > first  # the last 48 months
    months = ((datetime(2026, 9, 7, tzinfo=UTC), 3, 2), (datetime(2026, 11, 30, tzinfo=UTC), 1, 1))
    title = series_title("week", months)
    assert "per week, 2026-09-07 to 2026-11-30" in title and "24 hours" not in title
    assert series_title("hour", ()).endswith("no attempts yet")
