"""The dashboard `paystream api` serves under /dashboard: server-rendered HTML with
inline SVG charts (streams/api/charts.py) and a few lines of vanilla JS that re-fetch
the panel every REFRESH_S seconds. Figures come from the ClickHouse read models
(FINAL, the cookbook's definitions, docs/analytics.md); the ops panel from Kafka and
the workers' /metrics (streams/api/ops.py).

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
from datetime import datetime
from html import escape
from typing import Any
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from schemas.money import format_minor, is_currency
from streams.api.auth import ApiKeys, RateLimits
from streams.api.charts import column_chart, hbar_chart
from streams.api.ops import OpsSnapshot

REFRESH_S = 5
SESSION_TTL_S = 8 * 3600
COOKIE = "paystream_dash"
MERCHANTS_MAX = 500
DECLINE_REASONS_MAX = 20
HOURS_SHOWN = 24
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
# The last HOURS_SHOWN hours that have events, by event time (not the wall clock).
_HOURLY = f"""
SELECT toStartOfHour(occurred_at) AS hour,
       countIf(type IN ('authorized', 'declined', 'authorization_pending') AND version = 1) AS attempts,
       countIf(type = 'authorized' AND version = 1) AS approved
FROM payment_events FINAL WHERE {_WHERE_MERCHANT}
GROUP BY hour ORDER BY hour DESC LIMIT {HOURS_SHOWN}
"""
# The cookbook's "Top declines by reason", per merchant.
_DECLINES = f"""
SELECT reason, source, count() AS n
FROM
(
    SELECT reason_code AS reason, 'payment' AS source FROM payment_events FINAL
    WHERE type = 'declined' AND reason_code IS NOT NULL AND {_WHERE_MERCHANT}
    UNION ALL
    SELECT reason_code AS reason, 'rejection' AS source FROM payment_outcomes FINAL
    WHERE status = 'rejected' AND kind = 'create' AND payment_id IS NULL AND reason_code IS NOT NULL AND {_WHERE_MERCHANT}
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
    hourly: tuple[tuple[datetime, int, int], ...]  # (hour, attempts, approved), oldest first
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


Rows = Callable[[str, dict[str, Any]], list[dict[str, Any]]]


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
        currencies.append(_currency({"currency": currency, "attempts": 0, "approved": 0, "captured_minor": 0,
                                     "refunds": 0, "refunded_minor": 0}, d))
    as_of = rows(_AS_OF, p)[0]
    return Snapshot(
        merchant=merchant,
        currencies=tuple(currencies),
        hourly=tuple((r["hour"], int(r["attempts"]), int(r["approved"])) for r in reversed(rows(_HOURLY, p))),
        declines=tuple((r["reason"], r["source"], int(r["n"])) for r in rows(_DECLINES, p)),
        fraud=tuple((r["action"], int(r["n"])) for r in rows(_FRAUD, p)),
        events=int(as_of["events"]),
        as_of=as_of["as_of"] if as_of["events"] else None,
    )


def _currency(r: dict[str, Any], d: dict[str, tuple[int, int]]) -> CurrencyFigures:
    opened, lost = d.get("opened", (0, 0)), d.get("lost", (0, 0))
    return CurrencyFigures(r["currency"], int(r["attempts"]), int(r["approved"]), int(r["captured_minor"]),
                           int(r["refunds"]), int(r["refunded_minor"]), opened[0], opened[1], lost[0], lost[1])


def merchants(rows: Rows) -> list[str]:
    return [r["merchant_id"] for r in rows(_MERCHANTS, {})]


# --- HTML -----------------------------------------------------------------------

_STYLE = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222}h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.5em}
table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:3px 10px;text-align:right}
th:first-child,td:first-child{text-align:left}.bar{fill:#4a7bd0}.total{fill:#c9d6ee}.part{fill:#2e8b57}
svg text{font-size:11px}.kpi{display:inline-block;margin-right:2em}.kpi b{font-size:1.4em;display:block}
.warn{color:#b00}.muted{color:#777}
"""

# Re-fetches the panel (same query string) and swaps it in; reloads on a 401 (the session is over).
_SCRIPT = """
setInterval(async () => {
  const r = await fetch('/dashboard/panel' + location.search, {credentials: 'same-origin'});
  if (r.status === 401) { location.reload(); return; }
  if (r.ok) document.getElementById('panel').innerHTML = await r.text();
}, REFRESH_MS);
"""


def _money(amount_minor: int, currency: str) -> str:
    return format_minor(amount_minor, currency) if is_currency(currency) else f"{amount_minor} {escape(currency)} (minor)"


def _rate(approved: int, attempts: int) -> str:
    rate = approval_rate(approved, attempts)
    return "n/a" if rate is None else f"{rate:.4f}"


def render_panel(s: Snapshot, ops: OpsSnapshot | None) -> str:
    """The live part of the page (what the script swaps every REFRESH_S seconds)."""
    who = escape(s.merchant) if s.merchant else "all merchants"
    as_of = s.as_of.isoformat(timespec="seconds") if s.as_of else "no events yet"
    out = [f'<p class="muted">{who}; {s.events} events; latest event time <span data-testid="as-of">{as_of}</span></p>',
           '<div>',
           f'<span class="kpi">attempts<b data-metric="attempts">{s.attempts}</b></span>',
           f'<span class="kpi">approved<b data-metric="approved">{s.approved}</b></span>',
           f'<span class="kpi">approval rate<b data-metric="approval-rate">{_rate(s.approved, s.attempts)}</b></span>',
           '</div>',
           '<h2>Volume, refunds and disputes by currency</h2><table data-testid="currencies"><tr><th>currency</th>'
           '<th>attempts</th><th>approval rate</th><th>captured</th><th>refunds</th><th>refunded</th>'
           '<th>disputes opened</th><th>disputed</th><th>disputes lost</th><th>lost</th></tr>']
    for c in s.currencies:
        cur = escape(c.currency)
        out.append(f'<tr data-currency="{cur}"><td>{cur}</td><td data-metric="attempts">{c.attempts}</td>'
                   f'<td data-metric="approval-rate">{_rate(c.approved, c.attempts)}</td>'
                   f'<td data-metric="captured-minor" data-value="{c.captured_minor}">{_money(c.captured_minor, c.currency)}</td>'
                   f'<td data-metric="refunds">{c.refunds}</td>'
                   f'<td data-metric="refunded-minor" data-value="{c.refunded_minor}">{_money(c.refunded_minor, c.currency)}</td>'
                   f'<td data-metric="disputes-opened">{c.disputes_opened}</td>'
                   f'<td data-metric="disputed-minor" data-value="{c.disputed_minor}">{_money(c.disputed_minor, c.currency)}</td>'
                   f'<td data-metric="disputes-lost">{c.disputes_lost}</td>'
                   f'<td data-metric="lost-minor" data-value="{c.lost_minor}">{_money(c.lost_minor, c.currency)}</td></tr>')
    out.append("</table>")
    out.append(f"<h2>Attempts (light) and approvals (green) per hour, last {HOURS_SHOWN} hours with events</h2>")
    out.append(column_chart([(h.strftime("%Y-%m-%d %H:00"), a, ok) for h, a, ok in s.hourly],
                            "attempts and approvals per hour", "chart-hourly"))
    out.append("<h2>Declines by reason</h2>")
    out.append(hbar_chart([(f"{reason} ({source})", n) for reason, source, n in s.declines],
                          "declines by reason", "chart-declines"))
    out.append('<table data-testid="declines"><tr><th>reason</th><th>source</th><th>count</th></tr>')
    out += [f'<tr data-reason="{escape(r)}" data-source="{escape(src)}"><td>{escape(r)}</td><td>{escape(src)}</td>'
            f'<td data-metric="declines">{n}</td></tr>' for r, src, n in s.declines]
    out.append("</table><h2>Fraud decisions</h2>")
    out.append(hbar_chart(list(s.fraud), "fraud decisions", "chart-fraud"))
    out.append('<table data-testid="fraud"><tr><th>action</th><th>count</th></tr>')
    out += [f'<tr data-action="{escape(a)}"><td>{escape(a)}</td><td data-metric="fraud">{n}</td></tr>' for a, n in s.fraud]
    out.append("</table>")
    if ops is not None:
        out.append(render_ops(ops))
    return "".join(out)


def render_ops(o: OpsSnapshot) -> str:
    out = ['<h2>Ops</h2><table data-testid="lag"><tr><th>group</th><th>topic</th><th>partitions</th><th>lag</th></tr>']
    out += [f'<tr><td>{escape(r.group)}</td><td>{escape(r.topic)}</td><td>{r.partitions}</td>'
            f'<td data-metric="lag">{r.lag}</td></tr>' for r in o.lag]
    out.append("</table>")
    dlq = "unknown" if o.dlq_messages is None else str(o.dlq_messages)
    out.append(f'<p>DLQ messages (offset span, an upper bound): <b data-metric="dlq">{dlq}</b></p>')
    out.append('<table data-testid="breakers"><tr><th>worker</th><th>provider</th><th>breaker</th></tr>')
    out += [f'<tr><td>{escape(b.source)}</td><td>{escape(b.provider)}</td><td>{escape(b.state)}</td></tr>' for b in o.breakers]
    out.append("</table>")
    out += [f'<p class="warn">{escape(e)}</p>' for e in o.errors]
    return "".join(out)


def render_page(panel: str, merchant: str | None, choices: list[str] | None, refresh_s: float = REFRESH_S) -> str:
    """The whole page around the panel; `choices` (ops only) lists the merchants to pick."""
    picker = ""
    if choices is not None:
        opts = ['<option value="">all merchants</option>'] + [
            f'<option value="{escape(m)}"{" selected" if m == merchant else ""}>{escape(m)}</option>' for m in choices]
        picker = (f'<form method="get" action="/dashboard"><select name="merchant" onchange="this.form.submit()">'
                  f'{"".join(opts)}</select></form>')
    return (f'<!doctype html><html><head><meta charset="utf-8"><title>paystream dashboard</title>'
            f'<style>{_STYLE}</style></head><body><h1>paystream</h1>{picker}'
            f'<form method="post" action="/dashboard/logout"><button>log out</button></form>'
            f'<div id="panel">{panel}</div><script>{_SCRIPT.replace("REFRESH_MS", str(round(refresh_s * 1000)))}</script>'
            '</body></html>')


_LOGIN = ('<!doctype html><html><head><meta charset="utf-8"><title>paystream dashboard: log in</title>'
          f'<style>{_STYLE}</style></head><body><h1>paystream dashboard</h1>{{message}}'
          '<form method="post" action="/dashboard/login"><label>ops token or merchant secret key '
          '<input type="password" name="token" autocomplete="off" size="60"></label> <button>log in</button></form>'
          '</body></html>')


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
        return HTMLResponse(_LOGIN.replace("{message}", f'<p class="warn">{escape(message)}</p>' if message else ""), status)

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
        return HTMLResponse(render_page(render_panel(snap, ops), merchant, choices, d.refresh_s),
                            headers={"Cache-Control": "no-store"})

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
        out.set_cookie(COOKIE, d.sessions.issue(role, d.wall_s()), max_age=d.sessions.ttl_s, httponly=True,
                       samesite="strict", path="/dashboard", secure=request.url.scheme == "https")
        return out

    @r.post("/dashboard/logout")
    async def logout() -> Response:
        out = RedirectResponse("/dashboard", 303)
        out.delete_cookie(COOKIE, path="/dashboard")
        return out

    return r
