"""The dashboard end to end in headless Chromium (Debian's /usr/bin/chromium, driven
by Playwright): log in as a merchant and as ops, read the numbers the page shows, and
check them against direct SQL over the same populated chDB; then add traffic and
watch the page's own refresh pick it up. One console flow: filter and search the
payments, open one and read its timeline's chain verdicts, approve a review; ops works
the monitoring case queue (evidence, escalate, report, the trail), which a merchant
never sees; and the charts' labels are measured in the browser (none starts left of
its SVG).

Skipped when Chromium or Playwright is missing, unless PAYSTREAM_REQUIRE_BROWSER=1
(.ci/run sets it after installing Chromium, so CI never skips it silently)."""

from __future__ import annotations

import os
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.api import auth
from streams.api.app import create_app
from streams.api.bus import InMemoryBus
from streams.api.dashboard import Dashboard
from streams.api.ops import Breaker, LagRow, OpsSnapshot
from streams.api.readmodel import ClickHousePayments
from tests.unit.connectors.clickhouse.support import populate, traffic
from tests.unit.streams.api.console_support import MemoryQueue, MemorySources, case, chained, review

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
OPS_TOKEN = "ops-" + "t" * 40
TIMEOUT_MS = 20_000
T = traffic(payments=250, seed=31, days=1)
MORE = traffic(payments=40, seed=32, days=1)  # arrives while the page is open

try:
    from playwright.sync_api import Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the machine
    sync_playwright = None  # type: ignore[assignment]

_missing = sync_playwright is None or shutil.which(CHROMIUM) is None
if _missing and os.environ.get("PAYSTREAM_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"PAYSTREAM_REQUIRE_BROWSER=1 but {CHROMIUM} or the playwright package is missing")
pytestmark = pytest.mark.skipif(_missing, reason=f"needs {CHROMIUM} and the playwright package")


class Server:
    """uvicorn on a loopback port picked by the OS, in a thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


@pytest.fixture
def sources() -> MemorySources:
    return MemorySources()


@pytest.fixture
def queue() -> MemoryQueue:
    return MemoryQueue([case("c_split", "m_acme", evidence=3), case("c_device", "m_globex", evidence=2)])


@pytest.fixture
def site(ch, tmp_path: Path, key_file, sources: MemorySources, queue: MemoryQueue) -> Iterator[tuple[str, str, Any]]:  # type: ignore[no-untyped-def]
    populate(ch, T)
    src, secret, _ = key_file
    path = tmp_path / "api_keys.json"
    path.write_bytes(src.read_bytes())
    keys = auth.ApiKeys(path)
    ops = OpsSnapshot(
        lag=(LagRow("paystream", "payment-commands", 8, 42),),
        dlq_messages=7,
        breakers=(Breaker("w0", "visa_rail", "open"),),
    )
    d = Dashboard(
        ClickHousePayments(ch).rows, keys, OPS_TOKEN.encode(), lambda: ops, refresh_s=0.5, sources=sources, cases=queue
    )
    with Server(create_app(InMemoryBus(lambda _c: None), keys, sealer=None, dashboard=d, instance="t")) as server:
        yield server.url, secret, ch


@pytest.fixture
def page() -> Iterator[Page]:
    assert sync_playwright is not None
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS, headless=True)
        try:
            pg = browser.new_page()
            pg.set_default_timeout(TIMEOUT_MS)
            yield pg
        finally:
            browser.close()


def sql(ch: Any, query: str, merchant: str | None) -> list[tuple]:
    where = "merchant_id = {m:String}" if merchant else "1"
    return ch.query(query.replace("WHERE_M", where), parameters={"m": merchant} if merchant else {}).result_rows


def expected(ch: Any, merchant: str | None) -> dict[str, Any]:
    """The figures, each from its own plain query (not the dashboard's)."""
    [(attempts, approved)] = sql(
        ch,
        "SELECT countIf(version = 1 AND type IN ('authorized', 'declined')), "
        "countIf(version = 1 AND type = 'authorized') FROM payment_events FINAL WHERE WHERE_M",
        merchant,
    )
    return {
        "attempts": attempts,
        "approved": approved,
        "captured": dict(
            sql(
                ch,
                "SELECT currency, sum(amount_minor) FROM payment_events FINAL "
                "WHERE type = 'captured' AND WHERE_M GROUP BY currency",
                merchant,
            )
        ),
        "refunded": dict(
            sql(
                ch,
                "SELECT currency, sum(amount_minor) FROM payment_events FINAL "
                "WHERE type = 'refunded' AND WHERE_M GROUP BY currency",
                merchant,
            )
        ),
        "fraud": dict(
            sql(ch, "SELECT action, count() FROM fraud_decisions FINAL WHERE WHERE_M GROUP BY action", merchant)
        ),
        "declines": dict(
            sql(
                ch,
                "SELECT reason_code, count() FROM payment_events FINAL "
                "WHERE type = 'declined' AND WHERE_M GROUP BY reason_code",
                merchant,
            )
        ),
    }


def shown(page: Page) -> dict[str, Any]:
    """The same figures as the page shows them."""

    def cells(table: str, key: str, metric: str, attr: str | None = None) -> dict[str, int]:
        out = {}
        for row in page.locator(f'[data-testid="{table}"] tr[data-{key}]').all():
            cell = row.locator(f'[data-metric="{metric}"]')
            value = cell.get_attribute(attr) if attr else cell.inner_text()
            if int(value or 0):
                out[row.get_attribute(f"data-{key}") or ""] = int(value or 0)
        return out

    declines = {
        row.get_attribute("data-reason"): int(row.locator('[data-metric="declines"]').inner_text())
        for row in page.locator('[data-testid="declines"] tr[data-source="payment"]').all()
    }
    return {
        "attempts": int(page.locator('.kpi [data-metric="attempts"]').inner_text()),
        "approved": int(page.locator('.kpi [data-metric="approved"]').inner_text()),
        "captured": cells("currencies", "currency", "captured-minor", "data-value"),
        "refunded": cells("currencies", "currency", "refunded-minor", "data-value"),
        "fraud": cells("fraud", "action", "fraud"),
        "declines": declines,
    }


def log_in(page: Page, url: str, token: str) -> None:
    page.goto(f"{url}/dashboard")
    page.fill('input[name="token"]', token)
    page.click("button")
    page.wait_for_selector('.kpi [data-metric="attempts"]')


def test_a_merchant_sees_its_numbers_as_sql_counts_them_and_they_go_live(site, page: Page) -> None:
    url, secret, ch = site
    log_in(page, url, secret)
    want = expected(ch, "m_acme")
    assert want["attempts"] > 0 and want["fraud"] and want["captured"]
    assert shown(page) == want
    rate = page.locator('.kpi [data-metric="approval-rate"]').inner_text()
    assert rate == f"{round(want['approved'] / want['attempts'], 4):.4f}"
    assert page.locator('svg[data-testid="chart-declines"] rect.bar').count() == len(
        page.locator('[data-testid="declines"] tr[data-reason]').all()
    )
    assert page.locator('[data-metric="dlq"]').count() == 0  # the ops panel is for ops
    page.goto(f"{url}/dashboard?merchant=m_globex")
    assert "own merchant only" in page.content()

    page.goto(f"{url}/dashboard")
    before = want["attempts"]
    populate(ch, MORE)  # new traffic lands in the read model; the page's refresh must show it
    want = expected(ch, "m_acme")
    assert want["attempts"] > before
    page.wait_for_function(
        f"document.querySelector('.kpi [data-metric=\"attempts\"]').innerText === '{want['attempts']}'"
    )
    assert shown(page) == want


def test_ops_sees_all_merchants_one_by_one_and_the_ops_panel(site, page: Page) -> None:
    url, _, ch = site
    log_in(page, url, OPS_TOKEN)
    assert shown(page) == expected(ch, None)
    assert page.locator('[data-metric="dlq"]').inner_text() == "7"
    assert page.locator('[data-testid="lag"] [data-metric="lag"]').inner_text() == "42"
    assert "visa_rail" in page.locator('[data-testid="breakers"]').inner_text()
    page.select_option("select[name=merchant]", "m_globex")  # submits the picker
    page.wait_for_url("**/dashboard?merchant=m_globex")
    assert shown(page) == expected(ch, "m_globex")


def test_chart_labels_fit_inside_their_charts(site, page: Page) -> None:
    url, secret, _ = site
    log_in(page, url, secret)
    lefts = page.eval_on_selector_all('svg[data-testid^="chart-"] text.label', "ts => ts.map(t => t.getBBox().x)")
    assert lefts and min(lefts) >= 0  # "fraud_suspected (payment)" once started at -20 px: "aud_suspected"
    title = page.locator('[data-testid="series-title"]').inner_text()
    assert "per hour" in title and "24 hours" not in title


def test_a_merchant_finds_a_payment_reads_its_timeline_and_approves_a_review(
    site, page: Page, sources: MemorySources
) -> None:
    url, secret, ch = site
    log_in(page, url, secret)
    page.click("nav >> text=payments")
    page.select_option("select[name=status]", "declined")
    page.click("form.filters button")
    page.wait_for_url("**/dashboard/payments?*status=declined*")
    statuses = page.locator('[data-testid="payments"] [data-field="status"]').all_inner_texts()
    [(declined,)] = ch.query(
        "SELECT count() FROM payments FINAL WHERE merchant_id = 'm_acme' AND status = 'declined'"
    ).result_rows
    assert statuses and set(statuses) == {"declined"} and len(statuses) == min(declined, 25)

    [(pid,)] = ch.query(
        "SELECT payment_id FROM payment_events FINAL WHERE merchant_id = 'm_acme' GROUP BY payment_id "
        "HAVING count() >= 2 ORDER BY payment_id LIMIT 1"
    ).result_rows
    events = sorted((e for e in T.events if e["payment_id"] == pid), key=lambda e: e["version"])
    sources.windows[pid] = (0, chained(events, sign_last=True))
    page.select_option("select[name=status]", "")
    page.fill('input[name="q"]', pid)
    page.click("form.filters button")
    page.click(f'[data-testid="payments"] a:text("{pid}")')
    page.wait_for_selector('[data-testid="timeline"]')
    verdicts = [r.get_attribute("data-verdict") for r in page.locator('[data-testid="timeline"] tr[data-event]').all()]
    assert verdicts == ["verified"] * len(events)

    sources.review_records.append(review("pay_wait_1", "m_acme"))
    page.click("nav >> text=reviews")
    page.click('[data-review="pay_wait_1"] button[value="approve"]')
    page.wait_for_selector('[data-testid="flash"]')
    assert "approve sent for pay_wait_1" in page.locator('[data-testid="flash"]').inner_text()
    [(_, command)] = sources.resolved
    assert (command["payment_id"], command["kind"], command["fraud_action"]) == (
        "pay_wait_1",
        "review_resolve",
        "approve",
    )


def test_ops_reads_a_cases_evidence_escalates_and_reports_it(site, page: Page, queue: MemoryQueue) -> None:
    url, secret, _ = site
    log_in(page, url, secret)
    assert page.locator("nav >> text=monitoring").count() == 0  # a merchant never sees AML cases
    page.goto(f"{url}/dashboard/monitoring")
    assert page.locator("[data-case]").count() == 0 and "for ops" in page.content()
    page.click("text=log out")

    log_in(page, url, OPS_TOKEN)
    page.click("nav >> text=monitoring")
    page.wait_for_selector('[data-case="c_split"]')
    split = page.locator('[data-case="c_split"]')
    assert split.locator('[data-testid="evidence"] tr[data-evidence]').count() == 3
    assert "just under" in split.locator('[data-field="summary"]').inner_text()
    split.locator('input[name="operator"]').fill("alice")
    split.locator('input[name="reason"]').fill("three captures a day apart, same card")
    split.locator('button[value="escalate"]').click()
    page.wait_for_selector('[data-testid="flash"]')
    assert "escalate recorded for c_split" in page.locator('[data-testid="flash"]').inner_text()
    split = page.locator('[data-case="c_split"]')
    assert split.get_attribute("data-status") == "escalated"
    assert split.locator('button[value="escalate"]').count() == 0  # escalated once

    split.locator('input[name="operator"]').fill("bob")
    split.locator('input[name="reason"]').fill("SAR filed")
    split.locator('button[value="report"]').click()
    page.wait_for_selector('[data-testid="flash"]:has-text("report recorded")')
    assert page.locator('[data-case="c_split"]').count() == 0  # closed: off the queue
    page.select_option("select[name=status]", "reported")
    page.click("form.filters >> text=show")
    page.wait_for_selector('[data-case="c_split"]')
    trail = page.locator('[data-case="c_split"] [data-testid="decisions"] li').all_inner_texts()
    assert len(trail) == 2 and "alice" in trail[0] and "bob" in trail[1] and "SAR filed" in trail[1]
    assert [(d["decision"], d["operator"]) for d in queue.decisions] == [("escalate", "alice"), ("report", "bob")]
