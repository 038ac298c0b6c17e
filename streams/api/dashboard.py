"""The console `paystream api` serves under /dashboard (docs/dashboard.md): the
overview (this module: figures, charts and the ops panel, re-fetched every REFRESH_S
seconds by a few lines of vanilla JS) and the console's pages (streams/api/console.py:
payments, a payment's timeline, reviews, disputes, payouts, webhooks, monitoring cases). Server-rendered
HTML, inline CSS and SVG (streams/api/charts.py): no front-end build, nothing fetched.
Figures come from the ClickHouse read models (FINAL, the cookbook's definitions,
docs/analytics.md); the ops panel from Kafka and the workers' /metrics
(streams/api/ops.py); what only the topics hold through streams/api/console_sources.py.

Auth (docs/api.md, Dashboard): an ops token (PAYSTREAM_DASHBOARD_TOKEN_FILE) sees
everything; a merchant's secret key sees that merchant only. Either is exchanged
once for a signed, HttpOnly session cookie, or sent as `Authorization: Bearer`.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from streams.api import console
from streams.api.auth import ApiKeys, RateLimits
from streams.api.charts import column_chart, hbar_chart
from streams.api.console import STYLE, Rows, Sources, layout, money, with_merchant
from streams.api.ops import OpsSnapshot
from streams.client.fraud import resolve_command
from streams.domain.chain import verdicts
from streams.domain.monitoring import MonitoringError

REFRESH_S = 5
SESSION_TTL_S = 8 * 3600
COOKIE = "paystream_dash"
MERCHANTS_MAX = 500
DECLINE_REASONS_MAX = 20
LOGIN_BODY_MAX_BYTES = 4096
OPS = "ops"

# `{m:String} = ''` means every merchant; otherwise the filter is in the query.
_WHERE_MERCHANT = "({m:String} = '' OR merchant_id = {m:String})"

# Per currency: the cookbook's approval (first event of a payment) and volume
# (captured), its refunds, and disputes by stage.
_CURRENCIES = f"""
SELECT currency,
       countIf(type IN ('authorized', 'declined', 'authorization_pending') AND version = 1) AS attempts,
       countIf(type = 'authorized' AND version = 1) AS approved,
       sumIf(amount_minor, type = 'captured') AS captured_minor,
       countIf(type = 'refunded') AS refunds,
       sumIf(amount_minor, type = 'refunded') AS refunded_minor
FROM payment_events FINAL WHERE {_WHERE_MERCHANT}
GROUP BY currency ORDER BY currency
"""
_DISPUTES = f"""
SELECT currency, stage, count() AS n, sum(amount_minor) AS amount_minor
FROM disputes FINAL WHERE {_WHERE_MERCHANT}
GROUP BY currency, stage ORDER BY currency, stage
"""
# Attempts over event time (not the wall clock): the first and last attempt, then
# per bucket (hour, day, week or month: the finest that shows the span in
# SERIES_BUCKETS_MAX buckets) over the last SERIES_BUCKETS_MAX buckets to the last one.
_SPAN = f"""
SELECT min(occurred_at) AS first, max(occurred_at) AS last, count() AS n FROM payment_events FINAL
WHERE {_WHERE_MERCHANT} AND version = 1 AND type IN ('authorized', 'declined', 'authorization_pending')
"""
_SERIES = f"""
SELECT toDateTime(%s(occurred_at)) AS bucket,
       countIf(type IN ('authorized', 'declined', 'authorization_pending') AND version = 1) AS attempts,
       countIf(type = 'authorized' AND version = 1) AS approved
FROM payment_events FINAL WHERE {_WHERE_MERCHANT} AND occurred_at >= {{since:DateTime64(3, 'UTC')}}
GROUP BY bucket HAVING attempts > 0 ORDER BY bucket
"""
SERIES_BUCKETS_MAX = 48
# (name, ClickHouse function, a bucket's nominal length): finest first.
BUCKETS = (
    ("hour", "toStartOfHour", timedelta(hours=1)),
    ("day", "toStartOfDay", timedelta(days=1)),
    ("week", "toMonday", timedelta(weeks=1)),
    ("month", "toStartOfMonth", timedelta(days=31)),
)
# The cookbook's "Top declines by reason", per merchant.
_DECLINES = f"""
SELECT reason, source, count() AS n
FROM
(
    SELECT reason_code AS reason, 'payment' AS source FROM payment_events FINAL
    WHERE type = 'declined' AND reason_code IS NOT NULL AND {_WHERE_MERCHANT}
    UNION ALL
    SELECT reason_code AS reason, 'rejection' AS source FROM payment_outcomes FINAL
    WHERE status = 'rejected' AND kind = 'create' AND payment_id IS NULL AND reason_code IS NOT NULL AND
    {_WHERE_MERCHANT}
)
GROUP BY reason, source ORDER BY n DESC, reason, source LIMIT {DECLINE_REASONS_MAX}
"""
_FRAUD = f"""
SELECT action, count() AS n FROM fraud_decisions FINAL WHERE {_WHERE_MERCHANT}
GROUP BY action ORDER BY action
"""
_AS_OF = f"SELECT max(occurred_at) AS as_of, count() AS events FROM payment_events FINAL WHERE {_WHERE_MERCHANT}"
_MERCHANTS = f"SELECT DISTINCT merchant_id FROM payments FINAL ORDER BY merchant_id LIMIT {MERCHANTS_MAX}"


@dataclass(frozen=True)
class CurrencyFigures:
    currency: str
    attempts: int
    approved: int
    captured_minor: int
    refunds: int
    refunded_minor: int
    disputes_opened: int = 0
    disputed_minor: int = 0
    disputes_lost: int = 0
    lost_minor: int = 0


@dataclass(frozen=True)
class Snapshot:
    """What the panel shows for one merchant (or all: merchant None)."""

    merchant: str | None
    currencies: tuple[CurrencyFigures, ...]
    bucket: str  # the series' bucket: hour, day, week or month
    series: tuple[tuple[datetime, int, int], ...]  # (bucket start, attempts, approved), oldest first, non-empty buckets
    declines: tuple[tuple[str, str, int], ...]  # (reason, source, count), most first
    fraud: tuple[tuple[str, int], ...]  # (action, count)
    events: int
    as_of: datetime | None  # the latest event time in the read model

    @property
    def attempts(self) -> int:
        return sum(c.attempts for c in self.currencies)

    @property
    def approved(self) -> int:
        return sum(c.approved for c in self.currencies)


def approval_rate(approved: int, attempts: int) -> float | None:
    """Rounded like the cookbook (4 places); None without attempts."""
    assert 0 <= approved <= attempts or attempts == 0
    return round(approved / attempts, 4) if attempts else None


def snapshot(rows: Rows, merchant: str | None) -> Snapshot:
    """Every figure of the panel, read from the read models."""
    p = {"m": merchant or ""}
    disputes: dict[str, dict[str, tuple[int, int]]] = {}
    for r in rows(_DISPUTES, p):
        disputes.setdefault(r["currency"], {})[r["stage"]] = (int(r["n"]), int(r["amount_minor"]))
    currencies = []
    for r in rows(_CURRENCIES, p):
        d = disputes.pop(r["currency"], {})
        currencies.append(_currency(r, d))
    for currency, d in sorted(disputes.items()):  # disputes of a currency with no events in the window
        currencies.append(
            _currency(
                {
                    "currency": currency,
                    "attempts": 0,
                    "approved": 0,
                    "captured_minor": 0,
                    "refunds": 0,
                    "refunded_minor": 0,
                },
                d,
            )
        )
    as_of = rows(_AS_OF, p)[0]
    span = rows(_SPAN, p)[0]
    bucket, series = "hour", []
    if int(span["n"]):
        bucket, fn, since = bucket_for(span["first"], span["last"])
        series = rows(_SERIES % fn, p | {"since": since})
    return Snapshot(
        merchant=merchant,
        currencies=tuple(currencies),
        bucket=bucket,
        series=tuple((r["bucket"], int(r["attempts"]), int(r["approved"])) for r in series),
        declines=tuple((r["reason"], r["source"], int(r["n"])) for r in rows(_DECLINES, p)),
        fraud=tuple((r["action"], int(r["n"])) for r in rows(_FRAUD, p)),
        events=int(as_of["events"]),
        as_of=as_of["as_of"] if as_of["events"] else None,
    )


def bucket_for(first: datetime, last: datetime, buckets_max: int = SERIES_BUCKETS_MAX) -> tuple[str, str, datetime]:
    """The finest bucket that shows first..last in `buckets_max` buckets (months past
    that: the last `buckets_max` months), its ClickHouse function, and where the
    series starts."""
    assert first <= last and buckets_max >= 2
    for name, fn, length in BUCKETS:
        if last - first < length * (buckets_max - 1) or name == "month":
            return name, fn, max(first, last - length * (buckets_max - 1))
    raise AssertionError("unreachable: month is the last bucket")


def series_title(bucket: str, series: tuple[tuple[datetime, int, int], ...]) -> str:
    """What the series chart shows, with the span its buckets really cover."""
    if not series:
        return "Attempts (light) and approvals (green): no attempts yet"
    fmt = "%Y-%m-%d %H:00" if bucket == "hour" else "%Y-%m-%d"
    first, last = series[0][0].strftime(fmt), series[-1][0].strftime(fmt)
    span = first if first == last else f"{first} to {last}"
    return (
        f"Attempts (light) and approvals (green) per {bucket}, {span} (UTC, event time; "
        f"{len(series)} {bucket}{'s' if len(series) > 1 else ''} with attempts)"
    )


def _currency(r: dict[str, Any], d: dict[str, tuple[int, int]]) -> CurrencyFigures:
    opened, lost = d.get("opened", (0, 0)), d.get("lost", (0, 0))
    return CurrencyFigures(
        r["currency"],
        int(r["attempts"]),
        int(r["approved"]),
        int(r["captured_minor"]),
        int(r["refunds"]),
        int(r["refunded_minor"]),
        opened[0],
        opened[1],
        lost[0],
        lost[1],
    )


def merchants(rows: Rows) -> list[str]:
    return [r["merchant_id"] for r in rows(_MERCHANTS, {})]


# --- HTML -----------------------------------------------------------------------

# Re-fetches the panel (same query string) and swaps it in; reloads on a 401 (the session is over).
_SCRIPT = """
setInterval(async () => {
  const r = await fetch('/dashboard/panel' + location.search, {credentials: 'same-origin'});
  if (r.status === 401) { location.reload(); return; }
  if (r.ok) document.getElementById('panel').innerHTML = await r.text();
}, REFRESH_MS);
"""


def _rate(approved: int, attempts: int) -> str:
    rate = approval_rate(approved, attempts)
    return "n/a" if rate is None else f"{rate:.4f}"


def render_panel(s: Snapshot, ops: OpsSnapshot | None) -> str:
    """The live part of the page (what the script swaps every REFRESH_S seconds)."""
    who = escape(s.merchant) if s.merchant else "all merchants"
    as_of = s.as_of.isoformat(timespec="seconds") if s.as_of else "no events yet"
    out = [
        f'<p class="muted">{who}; {s.events} events; latest event time <span data-testid="as-of">{as_of}</span></p>',
        '<div class="kpis">',
        f'<span class="kpi">attempts<b data-metric="attempts">{s.attempts}</b></span>',
        f'<span class="kpi">approved<b data-metric="approved">{s.approved}</b></span>',
        f'<span class="kpi">approval rate<b data-metric="approval-rate">{_rate(s.approved, s.attempts)}</b></span>',
        "</div>",
        '<h2>Volume, refunds and disputes by currency</h2><div class="card"><table '
        'data-testid="currencies"><tr><th>currency</th>'
        "<th>attempts</th><th>approval rate</th><th>captured</th><th>refunds</th><th>refunded</th>"
        "<th>disputes opened</th><th>disputed</th><th>disputes lost</th><th>lost</th></tr>",
    ]
    for c in s.currencies:
        cur = escape(c.currency)
        out.append(
            f'<tr data-currency="{cur}"><td>{cur}</td><td data-metric="attempts">{c.attempts}</td>'
            f'<td data-metric="approval-rate">{_rate(c.approved, c.attempts)}</td>'
            '<td data-metric="captured-minor" '
            f'data-value="{c.captured_minor}">{money(c.captured_minor, c.currency)}</td>'
            f'<td data-metric="refunds">{c.refunds}</td>'
            '<td data-metric="refunded-minor" '
            f'data-value="{c.refunded_minor}">{money(c.refunded_minor, c.currency)}</td>'
            f'<td data-metric="disputes-opened">{c.disputes_opened}</td>'
            '<td data-metric="disputed-minor" '
            f'data-value="{c.disputed_minor}">{money(c.disputed_minor, c.currency)}</td>'
            f'<td data-metric="disputes-lost">{c.disputes_lost}</td>'
            f'<td data-metric="lost-minor" data-value="{c.lost_minor}">{money(c.lost_minor, c.currency)}</td></tr>'
        )
    out.append("</table></div>")
    fmt = "%Y-%m-%d %H:00" if s.bucket == "hour" else "%Y-%m-%d"
    out.append(f'<h2 data-testid="series-title">{escape(series_title(s.bucket, s.series))}</h2><div class="card">')
    out.append(
        column_chart(
            [(h.strftime(fmt), a, ok) for h, a, ok in s.series],
            f"attempts and approvals per {s.bucket}",
            "chart-series",
        )
    )
    out.append("</div>")
    out.append('<h2>Declines by reason</h2><div class="card">')
    out.append(
        hbar_chart(
            [(f"{reason} ({source})", n) for reason, source, n in s.declines], "declines by reason", "chart-declines"
        )
    )
    out.append('<table data-testid="declines"><tr><th>reason</th><th>source</th><th>count</th></tr>')
    out += [
        f'<tr data-reason="{escape(r)}" data-source="{escape(src)}"><td>{escape(r)}</td><td>{escape(src)}</td>'
        f'<td data-metric="declines">{n}</td></tr>'
        for r, src, n in s.declines
    ]
    out.append('</table></div><h2>Fraud decisions</h2><div class="card">')
    out.append(hbar_chart(list(s.fraud), "fraud decisions", "chart-fraud"))
    out.append('<table data-testid="fraud"><tr><th>action</th><th>count</th></tr>')
    out += [
        f'<tr data-action="{escape(a)}"><td>{escape(a)}</td><td data-metric="fraud">{n}</td></tr>' for a, n in s.fraud
    ]
    out.append("</table></div>")
    if ops is not None:
        out.append(render_ops(ops))
    return "".join(out)


def render_ops(o: OpsSnapshot) -> str:
    out = [
        '<h2>Ops</h2><div class="card"><table '
        'data-testid="lag"><tr><th>group</th><th>topic</th><th>partitions</th><th>lag</th></tr>'
    ]
    out += [
        f"<tr><td>{escape(r.group)}</td><td>{escape(r.topic)}</td><td>{r.partitions}</td>"
        f'<td data-metric="lag">{r.lag}</td></tr>'
        for r in o.lag
    ]
    out.append("</table>")
    dlq = "unknown" if o.dlq_messages is None else str(o.dlq_messages)
    out.append(f'<p>DLQ messages (offset span, an upper bound): <b data-metric="dlq">{dlq}</b></p>')
    out.append('<table data-testid="breakers"><tr><th>worker</th><th>provider</th><th>breaker</th></tr>')
    out += [
        f"<tr><td>{escape(b.source)}</td><td>{escape(b.provider)}</td><td>{escape(b.state)}</td></tr>"
        for b in o.breakers
    ]
    out.append("</table>")
    out += [f'<p class="warn">{escape(e)}</p>' for e in o.errors]
    out.append("</div>")
    return "".join(out)


def who_of(role: str) -> str:
    return "operator (all merchants)" if role == OPS else f"merchant {role.removeprefix('m:')}"


def render_page(
    panel: str, role: str, merchant: str | None, choices: list[str] | None, refresh_s: float = REFRESH_S
) -> str:
    """The overview around its live panel; `choices` (ops only) lists the merchants to pick."""
    return layout(
        "Overview",
        f'<div id="panel">{panel}</div>',
        active="overview",
        who=who_of(role),
        merchant=merchant,
        choices=choices,
        script=_SCRIPT.replace("REFRESH_MS", str(round(refresh_s * 1000))),
    )


_LOGIN = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>log in · paystream</title>'
    f'<style>{STYLE}</style></head><body><header><span class="brand">paystream</span></header><main>'
    '<h1>Log in to the console</h1>{message}<div class="card">'
    '<form method="post" action="/dashboard/login"><label>ops token or merchant secret key '
    '<input type="password" name="token" autocomplete="off" size="60"></label> <button>log in</button></form>'
    "</div></main></body></html>"
)


# --- sessions ---------------------------------------------------------------------


class Sessions:
    """Signed cookies `<role>|<expires s>|<hmac>`: role is `ops` or `m:<merchant>`.
    The key is per process: a restart logs everyone out, which is acceptable here."""

    def __init__(self, ttl_s: int = SESSION_TTL_S, key: bytes | None = None) -> None:
        self.ttl_s, self._key = ttl_s, key or secrets.token_bytes(32)

    def issue(self, role: str, now_s: float) -> str:
        body = f"{role}|{int(now_s) + self.ttl_s}"
        return f"{body}|{hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()}"

    def role(self, cookie: str, now_s: float) -> str | None:
        body, _, tag = cookie.rpartition("|")
        role, _, expires = body.rpartition("|")
        good = hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
        if not role or not hmac.compare_digest(tag, good) or not expires.isdigit() or int(expires) < now_s:
            return None
        return role


@dataclass
class Dashboard:
    """What the routes need: the read-model rows, the API keys, the ops token, the ops probe."""

    rows: Rows
    keys: ApiKeys
    ops_token: bytes | None = None  # None: no ops login (merchants only)
    ops: Callable[[], OpsSnapshot] | None = None
    sessions: Sessions = field(default_factory=Sessions)
    wall_s: Callable[[], float] = time.time  # session expiry: operational time, not business time
    refresh_s: float = REFRESH_S
    sources: Sources | None = None  # the topics' side (None: those parts of the console say so)
    cases: console.Cases | None = None  # transaction monitoring's case queue (None: its page says so)
    # When an operator's decision happens: its event time (as the CLI's `fraud review --resolve`).
    now: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))

    def role_of_token(self, token: str) -> str | None:
        if self.ops_token is not None and hmac.compare_digest(token.encode(), self.ops_token):
            return OPS
        who = self.keys.authenticate(token)
        return f"m:{who[1]}" if who else None

    def role_of(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if auth[:7].lower() == "bearer ":
            return self.role_of_token(auth[7:].strip())
        cookie = request.cookies.get(COOKIE)
        return self.sessions.role(cookie, self.wall_s()) if cookie else None


def scope(role: str, asked: str | None) -> str | None:
    """The merchant a role may see for a request asking `asked` (None: all);
    PermissionError when a merchant asks for another one."""
    if role == OPS:
        return asked or None
    own = role.removeprefix("m:")
    if asked and asked != own:
        raise PermissionError(asked)
    return own


def router(d: Dashboard) -> APIRouter:
    r = APIRouter(include_in_schema=False)
    login_limits = RateLimits(rate_per_s=1.0, burst=10, queue_max=0)  # each try may cost an scrypt

    def login_page(message: str = "", status: int = 200) -> HTMLResponse:
        return HTMLResponse(
            _LOGIN.replace("{message}", f'<p class="warn">{escape(message)}</p>' if message else ""), status
        )

    async def figures(role: str, request: Request) -> tuple[Snapshot, OpsSnapshot | None, str | None]:
        merchant = scope(role, request.query_params.get("merchant"))
        snap = await asyncio.to_thread(snapshot, d.rows, merchant)
        ops = await asyncio.to_thread(d.ops) if role == OPS and d.ops is not None else None
        return snap, ops, merchant

    @r.get("/dashboard")
    async def page(request: Request) -> Response:
        role = d.role_of(request)
        if role is None:
            return login_page(status=401)
        try:
            snap, ops, merchant = await figures(role, request)
        except PermissionError:
            return HTMLResponse("<p>a merchant key sees its own merchant only</p>", 403)
        choices = await asyncio.to_thread(merchants, d.rows) if role == OPS else None
        return HTMLResponse(
            render_page(render_panel(snap, ops), role, merchant, choices, d.refresh_s),
            headers={"Cache-Control": "no-store"},
        )

    @r.get("/dashboard/panel")
    async def panel(request: Request) -> Response:
        role = d.role_of(request)
        if role is None:
            return HTMLResponse("", 401)
        try:
            snap, ops, _ = await figures(role, request)
        except PermissionError:
            return HTMLResponse("", 403)
        return HTMLResponse(render_panel(snap, ops), headers={"Cache-Control": "no-store"})

    @r.post("/dashboard/login")
    async def login(request: Request) -> Response:
        host = request.client.host if request.client else "?"
        if not login_limits.acquire(f"login:{host}", time.monotonic())[0]:
            return login_page("too many attempts; wait a little", 429)
        body = await request.body()
        if len(body) > LOGIN_BODY_MAX_BYTES:
            return login_page("that is not a token", 400)
        token = (parse_qs(body.decode("utf-8", "replace")).get("token") or [""])[0].strip()
        role = await asyncio.to_thread(d.role_of_token, token) if token else None
        if role is None:
            return login_page("unknown or revoked token", 401)
        out = RedirectResponse("/dashboard", 303)
        out.set_cookie(
            COOKIE,
            d.sessions.issue(role, d.wall_s()),
            max_age=d.sessions.ttl_s,
            httponly=True,
            samesite="strict",
            path="/dashboard",
            secure=request.url.scheme == "https",
        )
        return out

    async def console_page(
        request: Request, active: str, title: str, body: Callable[[str, str | None], tuple[str, int]]
    ) -> Response:
        """A console page for the session's role: `body(role, merchant)` -> (HTML, status)."""
        role = d.role_of(request)
        if role is None:
            return login_page(status=401)
        try:
            merchant = scope(role, request.query_params.get("merchant"))
        except PermissionError:
            return HTMLResponse("<p>a merchant key sees its own merchant only</p>", 403)
        html, status = await asyncio.to_thread(body, role, merchant)
        choices = await asyncio.to_thread(merchants, d.rows) if role == OPS else None
        return HTMLResponse(
            layout(
                title, html, active=active, who=who_of(role), merchant=merchant, choices=choices, path=request.url.path
            ),
            status,
            headers={"Cache-Control": "no-store"},
        )

    async def form(request: Request) -> dict[str, str]:
        body = await request.body()
        if len(body) > LOGIN_BODY_MAX_BYTES:
            return {}
        return {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}

    def pick(request: Request, role: str) -> str | None:
        """The merchant a redirect keeps: the operator's pick (a merchant's is implied)."""
        return request.query_params.get("merchant") if role == OPS else None

    @r.get("/dashboard/payments")
    async def payments_list(request: Request) -> Response:
        q = request.query_params

        def body(_role: str, merchant: str | None) -> tuple[str, int]:
            try:
                f, args = console.parse_filter(q), console.parse_page(q)
                page = console.payments_page(
                    d.rows, merchant, f, older_than=args.older_than, newer_than=args.newer_than, limit=args.limit
                )
            except ValueError as e:
                return console.render_payments(
                    console.Page([], None, None), console.PaymentFilter(), merchant, str(e)
                ), 400
            return console.render_payments(page, f, merchant, None, args), 200

        return await console_page(request, "payments", "Payments", body)

    @r.get("/dashboard/payments/{payment_id}")
    async def payment_detail(request: Request, payment_id: str) -> Response:
        def body(_role: str, merchant: str | None) -> tuple[str, int]:
            p = console.payment(d.rows, merchant, payment_id)
            if p is None:  # the same answer for unknown and another merchant's
                return '<p class="warn">no such payment</p>', 404
            events = console.timeline(d.rows, p)
            found, note = None, None
            if d.sources is None:
                note = "signatures not checked: this console has no access to the event topic"
            elif events:
                try:
                    partition, window = d.sources.chain_window(
                        payment_id, console.utc(events[0]["occurred_at"]), {e["event_id"] for e in events}
                    )
                    found = verdicts(partition, window, {e["event_id"] for e in events}, d.sources.public_keys())
                    note = (
                        f"checked against payment-events partition {partition} ({len(window)} records read) "
                        "and the event signing keys"
                    )
                except Exception as e:  # the timeline still shows; the page says why it is unchecked
                    note = f"signatures not checked: {type(e).__name__}: {str(e)[:200]}"
            return console.render_payment(p, events, found, note), 200

        return await console_page(request, "payments", "Payment", body)

    @r.get("/dashboard/reviews")
    async def reviews(request: Request) -> Response:
        q = request.query_params
        flash = f"{q['sent']} sent for {q['payment']}" if q.get("sent") and q.get("payment") else None

        def body(_role: str, merchant: str | None) -> tuple[str, int]:
            if d.sources is None:
                return '<p class="warn">the review queue needs the fraud-review topic</p>', 503
            try:
                waiting = console.open_reviews(d.rows, merchant, d.sources.reviews())
            except Exception as e:
                return f'<p class="warn">review queue unavailable: {escape(type(e).__name__)}</p>', 503
            return console.render_reviews(waiting, merchant, flash), 200

        return await console_page(request, "reviews", "Fraud review queue", body)

    @r.post("/dashboard/reviews/{payment_id}")
    async def resolve(request: Request, payment_id: str) -> Response:
        role = d.role_of(request)
        if role is None:
            return login_page(status=401)
        try:
            merchant = scope(role, request.query_params.get("merchant"))
        except PermissionError:
            return HTMLResponse("<p>a merchant key sees its own merchant only</p>", 403)
        decision = (await form(request)).get("decision", "")
        if decision not in ("approve", "decline"):
            return HTMLResponse("<p>decision: approve or decline</p>", 400)
        if d.sources is None:
            return HTMLResponse("<p>the review queue needs the fraud-review topic</p>", 503)
        sources = d.sources

        def send() -> dict[str, Any] | None:
            waiting = console.open_reviews(d.rows, merchant, sources.reviews())
            review = next((x for x in waiting if x["payment_id"] == payment_id), None)
            if review is None:
                return None
            operator = ("dashboard:ops" if role == OPS else f"dashboard:{role.removeprefix('m:')}")[:64]
            key, command = resolve_command(review, decision, d.now(), operator)
            sources.resolve(key, command)
            return command

        command = await asyncio.to_thread(send)
        if command is None:  # unknown, another merchant's, or resolved already
            return HTMLResponse("<p>no open review for that payment</p>", 404)
        return RedirectResponse(
            with_merchant("/dashboard/reviews", pick(request, role), sent=decision, payment=payment_id), 303
        )

    def paged(
        request: Request, render: Callable[[str | None, console.PageArgs], str]
    ) -> Callable[..., tuple[str, int]]:
        """A list page's body: its cursor and limit parsed, a bad one a 400 that says why."""

        def body(_role: str, merchant: str | None) -> tuple[str, int]:
            try:
                args = console.parse_page(request.query_params)
            except ValueError as e:
                return f'<p class="warn" data-testid="page-error">{escape(str(e))}</p>', 400
            return render(merchant, args), 200

        return body

    @r.get("/dashboard/disputes")
    async def disputes(request: Request) -> Response:
        def render(m: str | None, args: console.PageArgs) -> str:
            return console.render_disputes(console.disputes(d.rows, m, args), m, args)

        return await console_page(request, "disputes", "Disputes", paged(request, render))

    @r.get("/dashboard/payouts")
    async def payouts(request: Request) -> Response:
        def render(m: str | None, args: console.PageArgs) -> str:
            return console.render_payouts(console.payouts(d.rows, m, args), m, args)

        return await console_page(request, "payouts", "Payouts", paged(request, render))

    @r.get("/dashboard/webhooks")
    async def webhooks(request: Request) -> Response:
        q = request.query_params
        status = q.get("status") or ""
        flash = f"retry of {q['retried']}: {q['result']}" if q.get("retried") and q.get("result") else None

        def body(_role: str, merchant: str | None) -> tuple[str, int]:
            if status not in ("", "delivered", "failed", "gave_up"):
                return '<p class="warn">status: delivered, failed or gave_up</p>', 400
            if d.sources is None:
                return '<p class="warn">webhook deliveries need the webhook-deliveries topic</p>', 503
            try:
                args = console.parse_page(q)
            except ValueError as e:
                return f'<p class="warn" data-testid="page-error">{escape(str(e))}</p>', 400
            try:
                items = console.notifications(d.sources.deliveries(), merchant, status)
            except Exception as e:
                return f'<p class="warn">webhook deliveries unavailable: {escape(type(e).__name__)}</p>', 503
            page = console.list_page(items, console.notification_key, args)
            return console.render_webhooks(page, merchant, status, flash, None, args), 200

        return await console_page(request, "webhooks", "Webhook deliveries", body)

    @r.post("/dashboard/webhooks/{notification_id}/retry")
    async def retry(request: Request, notification_id: str) -> Response:
        role = d.role_of(request)
        if role is None:
            return login_page(status=401)
        try:
            merchant = scope(role, request.query_params.get("merchant"))
        except PermissionError:
            return HTMLResponse("<p>a merchant key sees its own merchant only</p>", 403)
        if d.sources is None:
            return HTMLResponse("<p>webhook deliveries need the webhook-deliveries topic</p>", 503)
        sources = d.sources

        def send() -> dict[str, Any] | str | None:
            n = next(
                (
                    x
                    for x in console.notifications(sources.deliveries(), merchant)
                    if x.last["notification_id"] == notification_id
                ),
                None,
            )
            if n is None or not n.retryable:
                return None
            try:
                return sources.retry(n, d.now())
            except Exception as e:  # e.g. the endpoint was removed: said on the page
                return f"not sent: {str(e)[:200]}"

        got = await asyncio.to_thread(send)
        if got is None:
            return HTMLResponse("<p>no given-up notification with that id</p>", 404)
        result = (
            got
            if isinstance(got, str)
            else (f"{got['status']} (attempt {got['attempt']}, {got['http_status'] or got['error'] or ''})")
        )
        return RedirectResponse(
            with_merchant("/dashboard/webhooks", pick(request, role), retried=notification_id, result=result), 303
        )

    def case_page(view: str, flash: str | None, error: str | None, status: int) -> Callable[..., tuple[str, int]]:
        """The case queue's body for console_page: ops only (a case is never shown to its merchant)."""

        def body(role: str, merchant: str | None) -> tuple[str, int]:
            if role != OPS:
                return '<p class="warn">the case queue is for ops</p>', 403
            if view not in console.CASE_VIEWS:
                return f'<p class="warn">cases: one of {", ".join(v or "(empty)" for v in console.CASE_VIEWS)}</p>', 400
            if d.cases is None:
                return '<p class="warn">the case queue needs the monitoring topics</p>', 503
            try:
                cases = console.case_list(d.cases.cases(), merchant, view)
            except Exception as e:
                return f'<p class="warn">case queue unavailable: {escape(type(e).__name__)}</p>', 503
            return console.render_cases(cases, merchant, view, flash, error), status

        return body

    @r.get("/dashboard/monitoring")
    async def monitoring(request: Request) -> Response:
        q = request.query_params
        flash = f"{q['decided']} recorded for {q['case']}" if q.get("decided") and q.get("case") else None
        return await console_page(
            request, "monitoring", "Monitoring cases", case_page(q.get("status") or "", flash, None, 200)
        )

    @r.post("/dashboard/monitoring/{case_id}")
    async def decide_case(request: Request, case_id: str) -> Response:
        role = d.role_of(request)
        if role is None:
            return login_page(status=401)
        if role != OPS or d.cases is None:
            return await console_page(request, "monitoring", "Monitoring cases", case_page("", None, None, 200))
        f, queue = await form(request), d.cases
        try:  # the case queue's decision, as `paystream cases decide` records it; its time is the request's
            await asyncio.to_thread(
                queue.decide, case_id, f.get("decision", ""), f.get("operator", ""), f.get("reason", ""), d.now()
            )
        except MonitoringError as e:
            status = console.CASE_ERROR_STATUS.get(e.reason, 400)
            page = case_page("", None, f"{case_id}: {e.reason}: {e.detail}", status)
            return await console_page(request, "monitoring", "Monitoring cases", page)
        return RedirectResponse(
            with_merchant("/dashboard/monitoring", pick(request, role), decided=f.get("decision", ""), case=case_id),
            303,
        )

    @r.post("/dashboard/logout")
    async def logout() -> Response:
        out = RedirectResponse("/dashboard", 303)
        out.delete_cookie(COOKIE, path="/dashboard")
        return out

    return r
