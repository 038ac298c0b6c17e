"""The console's pages under /dashboard (docs/dashboard.md): payments (search, filters,
pages), a payment's timeline with each event's chain verdict, the fraud review queue,
disputes with their evidence submissions, payouts, webhook deliveries and, for ops,
transaction monitoring's case queue (its decisions are `paystream cases decide`'s). The queries
read the ClickHouse read models (FINAL) with the merchant filter inside the query: an
operator's `merchant` is '' (all) or the one picked, a merchant key's is its own.
What the read models do not hold (signatures, reviews, webhook attempts) comes from
the topics through streams/api/console_sources.py. Rendering is plain functions of
rows to HTML; every value is escaped."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from html import escape
from typing import Any, Protocol
from urllib.parse import urlencode

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from schemas.money import CURRENCY_EXPONENTS, format_minor, is_currency
from streams.domain.chain import Verdict
from streams.domain.methods import METHODS
from streams.domain.monitoring import (
    ESCALATED,
    OPEN,
    OPERATOR_MAX_CHARS,
    REASON_MAX_CHARS,
    allowed_decisions,
)
from streams.domain.monitoring import STATUSES as CASE_STATUSES
from streams.domain.payments import STATUSES

Rows = Callable[[str, dict[str, Any]], list[dict[str, Any]]]

PAGE_SIZE = 25
LIST_MAX = 100  # the most rows of a page (`limit`), and of the lists without cursors
QUERY_MAX_CHARS = 64
EVENTS_MAX = 500  # a payment's events shown (a payment has a handful)

_M = "({m:String} = '' OR merchant_id = {m:String})"

# --- payments ---------------------------------------------------------------------

# Newest first by creation (the version-1 event's time), then id: a cursor is that pair.
_PAYMENTS = f"""
SELECT p.payment_id AS payment_id, p.merchant_id AS merchant_id, p.currency AS currency, p.status AS status,
       p.authorized_minor AS authorized_minor, p.captured_minor AS captured_minor,
       p.refunded_minor AS refunded_minor, p.method AS method, p.card_bin AS card_bin,
       p.card_last4 AS card_last4, c.created_at AS created_at, toUnixTimestamp64Milli(c.created_at) AS created_ms
FROM payments AS p FINAL
INNER JOIN (
    SELECT payment_id, occurred_at AS created_at FROM payment_events FINAL WHERE version = 1 AND {_M}
) AS c ON c.payment_id = p.payment_id
WHERE {_M.replace("merchant_id", "p.merchant_id")}
  AND ({{status:String}} = '' OR p.status = {{status:String}})
  AND ({{method:String}} = '' OR p.method = {{method:String}})
  AND c.created_at >= {{since:DateTime64(3, 'UTC')}} AND c.created_at < {{until:DateTime64(3, 'UTC')}}
  AND (%s)
  AND %%s
ORDER BY %%s LIMIT {{limit:UInt32}}
"""
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FAR = datetime(9999, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class PaymentFilter:
    q: str = ""
    status: str = ""
    method: str = ""
    since: date | None = None  # created on or after (UTC day)
    until: date | None = None  # created on or before (UTC day)

    def query(self) -> dict[str, str]:
        """The filter as query parameters (for links that keep it)."""
        out = {
            "q": self.q,
            "status": self.status,
            "method": self.method,
            "from": self.since.isoformat() if self.since else "",
            "to": self.until.isoformat() if self.until else "",
        }
        return {k: v for k, v in out.items() if v}


def parse_filter(params: Mapping[str, str]) -> PaymentFilter:
    """The list's filter from a query string; ValueError with a message for the page."""
    q = (params.get("q") or "").strip()
    if len(q) > QUERY_MAX_CHARS:
        raise ValueError(f"search: at most {QUERY_MAX_CHARS} characters")
    status, method = params.get("status") or "", params.get("method") or ""
    if status and status not in STATUSES:
        raise ValueError(f"unknown status {status[:40]!r}")
    if method and method not in METHODS:
        raise ValueError(f"unknown method {method[:40]!r}")
    try:
        since = date.fromisoformat(params["from"]) if params.get("from") else None
        until = date.fromisoformat(params["to"]) if params.get("to") else None
    except ValueError:
        raise ValueError("dates are YYYY-MM-DD") from None
    if since and until and since > until:
        raise ValueError("the range's start is after its end")
    return PaymentFilter(q, status, method, since, until)


_PID = re.compile(r"^pay_[0-9A-Za-z_]{1,60}$")
_LAST4 = re.compile(r"^\d{4}$")
_AMOUNT = re.compile(r"^\d{1,15}(\.\d{1,4})?$")


def search_clause(q: str) -> tuple[str, dict[str, Any]]:
    """The search box as SQL over `p.`: a payment id (or its start), a card's last four
    digits, or an amount as shown (major units: `19.99` is 1999 minor units of a
    2-decimal currency and 19.99 of none) matching the authorized or captured amount."""
    if not q:
        return "1", {}
    if _PID.match(q):
        return "startsWith(p.payment_id, {q_pid:String})", {"q_pid": q}
    terms, params = [], {}
    if _LAST4.match(q):
        terms.append("p.card_last4 = {q_last4:String}")
        params["q_last4"] = q
    if _AMOUNT.match(q):
        value = Decimal(q)
        for exp in sorted(set(CURRENCY_EXPONENTS.values())):
            minor = value * 10**exp
            if minor == minor.to_integral_value():
                currencies = sorted(c for c, e in CURRENCY_EXPONENTS.items() if e == exp)
                terms.append(
                    f"(p.currency IN {{q_cur{exp}:Array(String)}} AND "
                    f"(p.authorized_minor = {{q_amt{exp}:Int64}} OR p.captured_minor = {{q_amt{exp}:Int64}}))"
                )
                params |= {f"q_cur{exp}": currencies, f"q_amt{exp}": int(minor)}
    if not terms:
        raise ValueError("search by payment id (pay_...), card last four digits or amount (19.99)")
    return " OR ".join(terms), params


# --- pages: newest first, a cursor is a row's (time, id) -----------------------------

_KEY = re.compile(r"^[0-9A-Za-z_-]{1,100}$")  # the lists' ids: pay_, evt_, po_, notification ids
_LAST = "~"  # sorts after every id character: the first page's cursor


@dataclass(frozen=True)
class Cursor:
    """A row's place in a newest-first list: its time in ms, then its id (ties)."""

    at_ms: int
    key: str

    def __str__(self) -> str:
        return f"{self.at_ms}.{self.key}"

    @classmethod
    def parse(cls, text: str) -> Cursor:
        at, _, key = text.partition(".")
        if not at.isdigit() or len(at) > 18 or not _KEY.match(key):
            raise ValueError("not a page cursor")
        return cls(int(at), key)


@dataclass(frozen=True)
class Page:
    rows: list[Any]
    older: Cursor | None  # the cursor of the next page (older rows), None at the end
    newer: Cursor | None  # the cursor of the previous page, None on the first


@dataclass(frozen=True)
class PageArgs:
    older_than: Cursor | None = None  # `after`: the page after this row
    newer_than: Cursor | None = None  # `before`: the page before this row
    limit: int = PAGE_SIZE


def parse_page(params: Mapping[str, str]) -> PageArgs:
    """`after` or `before` (a cursor from a pager link) and `limit` (1..LIST_MAX);
    ValueError with a message for the page."""
    if params.get("after") and params.get("before"):
        raise ValueError("a page is after a row or before one, not both")
    limit = params.get("limit") or str(PAGE_SIZE)
    if not limit.isdigit() or not 1 <= int(limit) <= LIST_MAX:
        raise ValueError(f"limit: 1..{LIST_MAX}")
    return PageArgs(
        Cursor.parse(params["after"]) if params.get("after") else None,
        Cursor.parse(params["before"]) if params.get("before") else None,
        int(limit),
    )


def keyset_page(rows: Rows, sql: str, params: dict[str, Any], at_col: str, key_col: str, args: PageArgs) -> Page:
    """One page of a newest-first list: `sql` has `%s` for the cursor's condition and `%s`
    for the order, and selects `at_col` (ms) and `key_col`. A range read from the cursor
    on, `limit + 1` rows to know whether there are more."""
    sort = f"({at_col}, {key_col})"
    params = params | {"limit": args.limit + 1}
    if args.newer_than is not None:
        at = args.newer_than
        got = rows(
            sql % (f"{sort} > ({{at:Int64}}, {{key:String}})", f"{at_col} ASC, {key_col} ASC"),
            params | {"at": at.at_ms, "key": at.key},
        )
        more, page = len(got) > args.limit, list(reversed(got[: args.limit]))
        key_of = _key_of(at_col, key_col)
        return Page(page, key_of(page[-1]) if page else None, key_of(page[0]) if more and page else None)
    at = args.older_than or Cursor(2**62, _LAST)
    got = rows(
        sql % (f"{sort} < ({{at:Int64}}, {{key:String}})", f"{at_col} DESC, {key_col} DESC"),
        params | {"at": at.at_ms, "key": at.key},
    )
    return _page_of(got, args, _key_of(at_col, key_col))


def list_page(items: list[Any], key_of: Callable[[Any], Cursor], args: PageArgs) -> Page:
    """The same page over a list in memory, newest first (its order is by `key_of`)."""
    if args.newer_than is not None:
        before = [x for x in items if _place(key_of(x)) > _place(args.newer_than)]
        more, page = len(before) > args.limit, before[-args.limit :]
        return Page(page, key_of(page[-1]) if page else None, key_of(page[0]) if more and page else None)
    at = args.older_than or Cursor(2**62, _LAST)
    return _page_of([x for x in items if _place(key_of(x)) < _place(at)][: args.limit + 1], args, key_of)


def _place(c: Cursor) -> tuple[int, str]:
    return c.at_ms, c.key


def _page_of(got: list[Any], args: PageArgs, key_of: Callable[[Any], Cursor]) -> Page:
    page = got[: args.limit]
    return Page(
        page,
        key_of(page[-1]) if len(got) > args.limit else None,
        key_of(page[0]) if args.older_than is not None and page else None,
    )


def _key_of(at_col: str, key_col: str) -> Callable[[Mapping[str, Any]], Cursor]:
    return lambda row: Cursor(int(row[at_col]), row[key_col])


def payments_page(
    rows: Rows,
    merchant: str | None,
    f: PaymentFilter,
    *,
    older_than: Cursor | None = None,
    newer_than: Cursor | None = None,
    limit: int = PAGE_SIZE,
) -> Page:
    """One page of payments, newest first, after (older than) or before (newer than) a cursor."""
    assert 1 <= limit <= LIST_MAX and not (older_than and newer_than)
    search, params = search_clause(f.q)
    since = datetime.combine(f.since, time(), UTC) if f.since else _EPOCH
    until = datetime.combine(f.until + timedelta(days=1), time(), UTC) if f.until else _FAR
    params |= {
        "m": merchant or "",
        "status": f.status,
        "method": f.method,
        "since": since,
        "until": until,
    }
    args = PageArgs(older_than, newer_than, limit)
    return keyset_page(rows, _PAYMENTS % (search,), params, "created_ms", "payment_id", args)


# --- one payment and its timeline -------------------------------------------------

_PAYMENT = f"""
SELECT payment_id, merchant_id, currency, status, authorized_minor, captured_minor, refunded_minor, method,
       card_bin, card_last4, provider, reason_code, version, updated_at
FROM payments FINAL WHERE payment_id = {{pid:String}} AND {_M} LIMIT 1
"""
_TIMELINE = f"""
SELECT event_id, type, version, currency, amount_minor, fee_minor, payment_status, reason_code, provider,
       chain_seq, occurred_at
FROM payment_events FINAL WHERE payment_id = {{pid:String}} AND merchant_id = {{merchant:String}}
ORDER BY version LIMIT {EVENTS_MAX}
"""


def payment(rows: Rows, merchant: str | None, payment_id: str) -> dict[str, Any] | None:
    """The payment if the scope may see it (None: unknown or another merchant's)."""
    got = rows(_PAYMENT, {"pid": payment_id, "m": merchant or ""})
    return got[0] if got else None


def timeline(rows: Rows, p: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The payment's events by version."""
    return rows(_TIMELINE, {"pid": p["payment_id"], "merchant": p["merchant_id"]})


# --- reviews ------------------------------------------------------------------------

_STATUS_OF = "SELECT payment_id, status FROM payments FINAL WHERE payment_id IN {pids:Array(String)}"
REVIEW_WAITING = "requires_review"


def open_reviews(rows: Rows, merchant: str | None, reviews: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The reviews (latest per payment) the scope may see whose payment still waits in
    review, oldest first. A payment the read model does not have yet still waits."""
    mine = [r for r in reviews if merchant is None or r["merchant_id"] == merchant][: LIST_MAX * 10]
    status = (
        {r["payment_id"]: r["status"] for r in rows(_STATUS_OF, {"pids": [r["payment_id"] for r in mine]})}
        if mine
        else {}
    )
    waiting = [r for r in mine if status.get(r["payment_id"], REVIEW_WAITING) == REVIEW_WAITING]
    return sorted(waiting, key=lambda r: r["occurred_at"])[:LIST_MAX]


# --- disputes, payouts --------------------------------------------------------------

# As readmodel's disputes: one open at a time per payment, so the dispute event after
# an opening (by version) is its close.
_DISPUTES = f"""
SELECT *, toUnixTimestamp64Milli(occurred_at) AS opened_ms FROM (
    SELECT event_id, payment_id, merchant_id, currency, amount_minor, reason_code, occurred_at,
           type, leadInFrame(type) OVER w AS closed_as, leadInFrame(occurred_at) OVER w AS closed_at
    FROM payment_events FINAL
    WHERE {_M} AND type IN ('dispute_opened', 'dispute_won', 'dispute_lost')
    WINDOW w AS (PARTITION BY payment_id ORDER BY version ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)
)
WHERE type = 'dispute_opened' AND %s ORDER BY %s LIMIT {{limit:UInt32}}
"""
# The merchant's evidence submissions, as the pipeline answered them, with the text an
# accepted one submitted (PaymentOutcome v2; earlier submissions show no text).
_EVIDENCE = f"""
SELECT payment_id, status, reason_code, occurred_at, dispute_evidence AS text FROM payment_outcomes FINAL
WHERE {_M} AND kind = 'dispute_evidence' AND payment_id IN {{pids:Array(String)}}
ORDER BY occurred_at
"""


def disputes(rows: Rows, merchant: str | None, args: PageArgs = PageArgs()) -> Page:
    """A page of disputes, newest first, each with `evidence`: its payment's submissions
    while it was open."""
    page = keyset_page(rows, _DISPUTES, {"m": merchant or ""}, "opened_ms", "event_id", args)
    out = page.rows
    if not out:
        return page
    subs = rows(_EVIDENCE, {"m": merchant or "", "pids": sorted({d["payment_id"] for d in out})})
    for d in out:
        end = d["closed_at"] if d["closed_as"] else None
        d["evidence"] = [
            s
            for s in subs
            if s["payment_id"] == d["payment_id"]
            and s["occurred_at"] >= d["occurred_at"]
            and (end is None or s["occurred_at"] <= end)
        ]
    return page


_PAYOUTS = f"""
SELECT payout_id, merchant_id, currency, amount_minor, day, status, sent_at, answered_at, failure_reason,
       toUnixTimestamp64Milli(sent_at) AS sent_ms
FROM payouts FINAL WHERE {_M} AND %s ORDER BY %s LIMIT {{limit:UInt32}}
"""


def payouts(rows: Rows, merchant: str | None, args: PageArgs = PageArgs()) -> Page:
    """A page of payouts, the latest sent first."""
    return keyset_page(rows, _PAYOUTS, {"m": merchant or ""}, "sent_ms", "payout_id", args)


# --- webhook deliveries ---------------------------------------------------------------


@dataclass(frozen=True)
class Notification:
    """A notification's attempts (WebhookDelivery records), in attempt order."""

    attempts: tuple[Mapping[str, Any], ...]

    @property
    def last(self) -> Mapping[str, Any]:
        return self.attempts[-1]

    @property
    def retryable(self) -> bool:
        """Given up: the runner's schedule is over, a manual attempt races nothing."""
        return self.last["status"] == "gave_up"


def notifications(
    deliveries: Iterable[Mapping[str, Any]], merchant: str | None, status: str = ""
) -> list[Notification]:
    """The attempts grouped by notification, the latest attempted first; `status`
    keeps those whose last attempt has it. (console_sources bounds how many it holds.)"""
    by_id: dict[str, list[Mapping[str, Any]]] = {}
    for d in deliveries:
        if merchant is None or d["merchant_id"] == merchant:
            by_id.setdefault(d["notification_id"], []).append(d)
    out = [Notification(tuple(sorted(a, key=lambda d: (d["attempt"], d["attempted_at"])))) for a in by_id.values()]
    out = [n for n in out if not status or n.last["status"] == status]
    return sorted(out, key=lambda n: _place(notification_key(n)), reverse=True)


def notification_key(n: Notification) -> Cursor:
    """A notification's place in its page: its last attempt's time, then its id."""
    return Cursor(round(utc(n.last["attempted_at"]).timestamp() * 1000), n.last["notification_id"])


# --- transaction monitoring's cases (ops only) ------------------------------------------

# The case list's views: '' the cases awaiting a decision (open or escalated), a status, or all.
CASE_VIEWS = ("", *CASE_STATUSES, "all")
# A decision refused by the case queue, as an HTTP status (the page's and the JSON route's).
CASE_ERROR_STATUS = {"case_not_found": 404, "case_closed": 409, "invalid_transition": 409}


class Cases(Protocol):
    """The case queue (streams/client/cases.py CaseQueue: monitoring-cases folded with
    monitoring-decisions; a decision written as `paystream cases decide` writes it)."""

    def cases(self) -> list[dict[str, Any]]: ...

    def decide(self, case_id: str, decision: str, operator: str, reason: str, at: datetime) -> dict[str, Any]: ...


def case_list(cases: Iterable[Mapping[str, Any]], merchant: str | None, view: str) -> list[Mapping[str, Any]]:
    """The view's cases the merchant pick covers, oldest opened first (the queue's order), at most LIST_MAX."""
    assert view in CASE_VIEWS
    wanted = {OPEN, ESCALATED} if view == "" else set(CASE_STATUSES) if view == "all" else {view}
    return [c for c in cases if c["status"] in wanted and merchant in (None, c["merchant_id"])][:LIST_MAX]


class Sources(Protocol):
    """What the console reads from and writes to the topics (console_sources.KafkaSources)."""

    def public_keys(self) -> Mapping[str, Ed25519PublicKey]:
        """The event signing keys' public halves, by key id."""

    def chain_window(self, payment_id: str, since: datetime, event_ids: set[str]) -> tuple[int, list[dict[str, Any]]]:
        """(partition, its PaymentEvent records in offset order) around the payment's events."""

    def reviews(self) -> list[dict[str, Any]]:
        """The latest FraudReview record per payment."""

    def resolve(self, key: bytes, command: dict[str, Any]) -> None:
        """Publish a review_resolve ValidatedCommand (streams/client/fraud.py resolve_command)."""

    def deliveries(self) -> list[dict[str, Any]]:
        """WebhookDelivery records (every attempt kept)."""

    def retry(self, n: Notification, now: datetime) -> dict[str, Any]:
        """One attempt of a given-up notification; its WebhookDelivery record."""


# --- HTML ------------------------------------------------------------------------------

STYLE = """
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1f2933;background:#f5f7fa}
header{background:#1f2d3d;color:#fff;padding:0 24px;display:flex;align-items:center;gap:24px;flex-wrap:wrap}
header .brand{font-weight:600;font-size:16px;padding:12px 0}
nav a{color:#c8d3df;text-decoration:none;padding:14px 10px;display:inline-block;border-bottom:3px solid transparent}
nav a:hover{color:#fff}nav a.on{color:#fff;border-bottom-color:#5b9cf2}
header .who{margin-left:auto;display:flex;gap:10px;align-items:center;font-size:13px;color:#c8d3df}
main{padding:20px 24px;max-width:1280px}
h1{font-size:20px;margin:4px 0 14px}h2{font-size:15px;margin:22px 0 8px;color:#323f4b}
.card{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:14px 16px;margin-bottom:16px;overflow-x:auto}
table{border-collapse:collapse;width:100%}
td,th{border-bottom:1px solid #eef0f2;padding:6px 10px;text-align:right;white-space:nowrap;vertical-align:top}
th{font-weight:600;color:#52606d;background:#f9fafb;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
th:first-child,td:first-child,td.l,th.l{text-align:left}
tr:hover td{background:#f9fbff}
a{color:#2467c4}code,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
.bar{fill:#4a7bd0}.total{fill:#c9d6ee}.part{fill:#2e8b57}svg text{font-size:11px;fill:#323f4b}
.kpis{display:flex;gap:16px;flex-wrap:wrap;margin-bottom:16px}
.kpi{background:#fff;border:1px solid #e4e7eb;border-radius:6px;padding:10px 16px;min-width:150px;color:#52606d}
.kpi b{font-size:22px;display:block;color:#1f2933}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#e4e7eb;color:#323f4b}
.b-ok{background:#def7ec;color:#03543f}.b-bad{background:#fde8e8;color:#9b1c1c}.b-wait{background:#fdf6b2;color:#723b13}
.warn{color:#b00}.muted{color:#7b8794}.flash{background:#e1effe;border:1px solid #a4cafe;padding:8px
12px;border-radius:6px}
form.filters{display:flex;gap:8px;flex-wrap:wrap;align-items:end;margin-bottom:12px}
form.filters label{display:flex;flex-direction:column;font-size:12px;color:#52606d;gap:2px}
input,select,button{font:inherit;padding:5px 8px;border:1px solid #cbd2d9;border-radius:4px;background:#fff}
button{cursor:pointer;background:#2467c4;color:#fff;border-color:#2467c4}button.secondary{background:#fff;color:#2467c4}
button.danger{background:#c81e1e;border-color:#c81e1e}header button{padding:3px 8px}
.pager{display:flex;gap:12px;margin-top:10px}.evidence{white-space:pre-wrap;max-width:48em;color:#3e4c59}form.inline{display:inline}table.facts{width:auto}table.facts
td{padding-left:24px}
"""

NAV = (
    ("overview", "/dashboard"),
    ("payments", "/dashboard/payments"),
    ("reviews", "/dashboard/reviews"),
    ("disputes", "/dashboard/disputes"),
    ("payouts", "/dashboard/payouts"),
    ("webhooks", "/dashboard/webhooks"),
    ("monitoring", "/dashboard/monitoring"),
)
OPS_NAV = {"monitoring"}  # AML cases are never shown to the merchant they concern


def money(amount_minor: int, currency: str) -> str:
    return (
        format_minor(amount_minor, currency) if is_currency(currency) else f"{amount_minor} {escape(currency)} (minor)"
    )


def utc(t: datetime) -> datetime:
    """A read model's time as an aware UTC datetime (the chDB client answers naive UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def when(t: datetime | None) -> str:
    return "" if t is None else escape(utc(t).strftime("%Y-%m-%d %H:%M:%S"))


def badge(status: str) -> str:
    good = {
        "captured",
        "authorized",
        "refunded",
        "partially_captured",
        "partially_refunded",
        "paid",
        "delivered",
        "won",
        "verified",
        "settled",
        "confirmed",
        "succeeded",
        "dismissed",
    }
    bad = {"declined", "failed", "lost", "gave_up", "broken", "returned", "expired", "rejected", "reported"}
    cls = "b-ok" if status in good else "b-bad" if status in bad else "b-wait"
    return f'<span class="badge {cls}">{escape(status)}</span>'


def with_merchant(path: str, merchant: str | None, **params: str) -> str:
    """A console link keeping the operator's merchant pick."""
    query = ({"merchant": merchant} if merchant else {}) | {k: v for k, v in params.items() if v}
    return f"{path}?{urlencode(query)}" if query else path


def layout(
    title: str,
    body: str,
    *,
    active: str,
    who: str,
    merchant: str | None,
    choices: list[str] | None,
    script: str = "",
    path: str = "/dashboard",
) -> str:
    """The page around `body`: the nav (links keep the merchant pick), the merchant
    picker (ops only: `choices`), who is logged in and the log-out button."""
    links = "".join(
        f'<a href="{escape(with_merchant(href, merchant))}" class="{"on" if name == active else ""}">{name}</a>'
        for name, href in NAV
        if choices is not None or name not in OPS_NAV  # choices: an operator's page
    )
    picker = ""
    if choices is not None:
        opts = ['<option value="">all merchants</option>'] + [
            f'<option value="{escape(m)}"{" selected" if m == merchant else ""}>{escape(m)}</option>' for m in choices
        ]
        picker = (
            f'<form method="get" action="{escape(path)}"><select name="merchant" aria-label="merchant" '
            f'onchange="this.form.submit()">{"".join(opts)}</select></form>'
        )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)} · paystream</title><style>{STYLE}</style></head><body>"
        f'<header><span class="brand">paystream</span><nav>{links}</nav><div class="who">{picker}'
        f'<span data-testid="who">{escape(who)}</span>'
        '<form method="post" action="/dashboard/logout"><button class="secondary">log '
        "out</button></form></div></header>"
        f"<main><h1>{escape(title)}</h1>{body}</main>{f'<script>{script}</script>' if script else ''}</body></html>"
    )


def _options(values: Iterable[str], chosen: str, empty: str) -> str:
    return "".join(
        [f'<option value="">{empty}</option>']
        + [f'<option value="{escape(v)}"{" selected" if v == chosen else ""}>{escape(v)}</option>' for v in values]
    )


def pager(path: str, page: Page, keep: Mapping[str, str]) -> str:
    """The newer/older links of a page, keeping the list's filter (and merchant)."""
    out = ['<div class="pager">']
    for testid, cursor, name, text in (
        ("newer", page.newer, "before", "← newer"),
        ("older", page.older, "after", "older →"),
    ):
        if cursor is not None:
            href = escape(f"{path}?{urlencode(dict(keep) | {name: str(cursor)})}")
            out.append(f'<a data-testid="{testid}" href="{href}">{text}</a>')
    out.append("</div>")
    return "".join(out)


def _keep(merchant: str | None, args: PageArgs, **query: str) -> dict[str, str]:
    """What a pager link keeps: the operator's merchant, a limit that is not the default, the filter."""
    kept = {"merchant": merchant or "", "limit": str(args.limit) if args.limit != PAGE_SIZE else ""} | query
    return {k: v for k, v in kept.items() if v}


def render_payments(
    page: Page, f: PaymentFilter, merchant: str | None, error: str | None = None, args: PageArgs = PageArgs()
) -> str:
    out = [
        '<div class="card"><form class="filters" method="get" action="/dashboard/payments">',
        f'<input type="hidden" name="merchant" value="{escape(merchant)}">' if merchant else "",
        f'<label>search<input name="q" value="{escape(f.q)}" placeholder="pay_…, last4 or 19.99" size="26"></label>',
        f'<label>status<select name="status">{_options(sorted(STATUSES), f.status, "any")}</select></label>',
        f'<label>method<select name="method">{_options(METHODS, f.method, "any")}</select></label>',
        f'<label>from<input type="date" name="from" value="{f.since.isoformat() if f.since else ""}"></label>',
        f'<label>to<input type="date" name="to" value="{f.until.isoformat() if f.until else ""}"></label>',
        "<button>filter</button></form>",
    ]
    if error:
        out.append(f'<p class="warn" data-testid="filter-error">{escape(error)}</p>')
    out.append(
        '<table data-testid="payments"><tr><th>payment</th><th class="l">merchant</th><th>created (UTC)</th>'
        '<th class="l">status</th><th class="l">method</th><th>card</th><th>amount</th><th>captured</th>'
        "<th>refunded</th></tr>"
    )
    for p in page.rows:
        pid = escape(p["payment_id"])
        href = escape(with_merchant(f"/dashboard/payments/{p['payment_id']}", merchant))
        card = f"{escape(p['card_bin'] or '')}…{escape(p['card_last4'])}" if p["card_last4"] else ""
        out.append(
            f'<tr data-payment="{pid}"><td><a class="mono" href="{href}">{pid}</a></td>'
            f'<td class="l">{escape(p["merchant_id"])}</td><td>{when(p["created_at"])}</td>'
            f'<td class="l" data-field="status">{badge(p["status"])}</td><td class="l">{escape(p["method"])}</td>'
            f'<td class="mono">{card}</td><td data-field="amount">{money(p["authorized_minor"], p["currency"])}</td>'
            f"<td>{money(p['captured_minor'], p['currency'])}</td>"
            f"<td>{money(p['refunded_minor'], p['currency'])}</td></tr>"
        )
    if not page.rows:
        out.append('<tr><td colspan="9" class="muted">no payments match</td></tr>')
    out.append("</table>")
    out.append(pager("/dashboard/payments", page, _keep(merchant, args, **f.query())))
    out.append("</div>")
    return "".join(out)


def render_payment(
    p: Mapping[str, Any], events: list[dict[str, Any]], verdicts: Mapping[str, Verdict] | None, chain_note: str | None
) -> str:
    cur = p["currency"]
    facts = [
        ("payment", f'<span class="mono">{escape(p["payment_id"])}</span>'),
        ("merchant", escape(p["merchant_id"])),
        ("status", badge(p["status"])),
        ("method", escape(p["method"])),
        ("card", f"{escape(p['card_bin'] or '')}…{escape(p['card_last4'])}" if p["card_last4"] else "—"),
        ("authorized", money(p["authorized_minor"], cur)),
        ("captured", money(p["captured_minor"], cur)),
        ("refunded", money(p["refunded_minor"], cur)),
        ("provider", escape(p["provider"] or "—")),
        ("last change (UTC)", when(p["updated_at"])),
    ]
    out = ['<div class="card"><table class="facts" data-testid="payment">']
    out += [f'<tr><th class="l">{k}</th><td class="l">{v}</td></tr>' for k, v in facts]
    out.append('</table></div><h2>Timeline</h2><div class="card">')
    if chain_note:
        out.append(f'<p class="muted" data-testid="chain-note">{escape(chain_note)}</p>')
    out.append(
        '<table data-testid="timeline"><tr><th>#</th><th class="l">event</th><th>at (UTC)</th><th>amount</th>'
        '<th>fee</th><th class="l">status after</th><th class="l">reason</th><th>chain seq</th>'
        '<th class="l">signature</th></tr>'
    )
    for e in events:
        v = verdicts.get(e["event_id"]) if verdicts is not None else None
        mark = (
            f"{badge(v.verdict)}{f' <span class=muted>{escape(v.reason)}</span>' if v.reason else ''}"
            if v
            else '<span class="muted">not checked</span>'
        )
        out.append(
            f'<tr data-event="{escape(e["event_id"])}" data-verdict="{escape(v.verdict) if v else "unchecked"}">'
            f'<td>{e["version"]}</td><td class="l">{escape(e["type"])}</td><td>{when(e["occurred_at"])}</td>'
            f"<td>{money(e['amount_minor'], e['currency'])}</td><td>{money(e['fee_minor'], e['currency'])}</td>"
            f'<td class="l">{escape(e["payment_status"])}</td><td class="l">{escape(e["reason_code"] or "")}</td>'
            f'<td>{e["chain_seq"]}</td><td class="l">{mark}</td></tr>'
        )
    out.append("</table></div>")
    return "".join(out)


def render_reviews(reviews: list[Mapping[str, Any]], merchant: str | None, flash: str | None) -> str:
    out = [
        f'<p class="flash" data-testid="flash">{escape(flash)}</p>' if flash else "",
        '<div class="card"><table data-testid="reviews"><tr><th class="l">payment</th><th class="l">merchant</th>'
        '<th>since (UTC)</th><th>amount</th><th>card</th><th>score</th><th class="l">reasons</th><th '
        'class="l">decision</th></tr>',
    ]
    for r in reviews:
        pid = escape(r["payment_id"])
        action = escape(with_merchant(f"/dashboard/reviews/{r['payment_id']}", merchant))
        score = "rules only" if r.get("score_ppm") is None else f"{r['score_ppm'] / 10_000:.2f}%"
        reasons = ", ".join(r.get("reasons") or [])
        if r.get("sanctions"):
            s = r["sanctions"]
            reasons += f"; sanctions: {s['matched_name']} ({s['score']}/{s['threshold']}, {s['list_version']})"
        href = escape(with_merchant(f"/dashboard/payments/{r['payment_id']}", merchant))
        out.append(
            f'<tr data-review="{pid}"><td class="l"><a class="mono" href="{href}">{pid}</a></td>'
            f'<td class="l">{escape(r["merchant_id"])}</td><td>{when(r["occurred_at"])}</td>'
            f"<td>{money(r['amount_minor'], r['currency'])}</td><td "
            f'class="mono">…{escape(r.get("card_last4") or "")}</td>'
            f'<td>{escape(score)}</td><td class="l">{escape(reasons)}</td><td class="l">'
            f'<form class="inline" method="post" action="{action}"><button name="decision" '
            'value="approve">approve</button> '
            f'<button class="danger" name="decision" value="decline">decline</button></form></td></tr>'
        )
    if not reviews:
        out.append('<tr><td colspan="8" class="muted">nothing waits in review</td></tr>')
    out.append("</table></div>")
    return "".join(out)


def render_disputes(page: Page, merchant: str | None, args: PageArgs = PageArgs()) -> str:
    out = [
        '<div class="card"><table data-testid="disputes"><tr><th class="l">payment</th><th class="l">merchant</th>'
        '<th>opened (UTC)</th><th>amount</th><th class="l">reason</th><th class="l">state</th><th>closed (UTC)</th>'
        '<th class="l">evidence submitted</th></tr>'
    ]
    for d in page.rows:
        state = d["closed_as"].removeprefix("dispute_") if d["closed_as"] else "open"
        ev = (
            "<br>".join(
                f"{when(s['occurred_at'])} {badge(s['status'])}"
                f"{' ' + escape(s['reason_code']) if s['reason_code'] else ''}"
                f"{_evidence_text(s.get('text'))}"
                for s in d["evidence"]
            )
            or "none"
        )
        href = escape(with_merchant(f"/dashboard/payments/{d['payment_id']}", merchant))
        out.append(
            f'<tr data-dispute="{escape(d["event_id"])}"><td class="l"><a class="mono" href="{href}">'
            f'{escape(d["payment_id"])}</a></td><td class="l">{escape(d["merchant_id"])}</td>'
            f"<td>{when(d['occurred_at'])}</td><td>{money(d['amount_minor'], d['currency'])}</td>"
            f'<td class="l">{escape(d["reason_code"] or "")}</td><td class="l" data-field="state">{badge(state)}</td>'
            f'<td>{when(d["closed_at"]) if d["closed_as"] else ""}</td><td class="l" '
            f'data-field="evidence">{ev}</td></tr>'
        )
    if not page.rows:
        out.append('<tr><td colspan="8" class="muted">no disputes</td></tr>')
    out.append(
        '</table><p class="muted">newest first; evidence: each submission, the pipeline\'s answer and the text '
        "it sent to the network (none shown for submissions before the text reached the read model)</p>"
    )
    out.append(pager("/dashboard/disputes", page, _keep(merchant, args)))
    out.append("</div>")
    return "".join(out)


def _evidence_text(text: str | None) -> str:
    return f'<div class="evidence" data-field="evidence-text">{escape(text)}</div>' if text else ""


def render_payouts(page: Page, merchant: str | None = None, args: PageArgs = PageArgs()) -> str:
    out = [
        '<div class="card"><table data-testid="payouts"><tr><th class="l">payout</th><th class="l">merchant</th>'
        '<th>day</th><th>amount</th><th class="l">status</th><th>sent (UTC)</th><th>answered (UTC)</th>'
        '<th class="l">failure</th></tr>'
    ]
    for p in page.rows:
        out.append(
            f'<tr data-payout="{escape(p["payout_id"])}"><td class="l mono">{escape(p["payout_id"])}</td>'
            f'<td class="l">{escape(p["merchant_id"])}</td><td>{escape(str(p["day"]))}</td>'
            f'<td>{money(p["amount_minor"], p["currency"])}</td><td class="l">{badge(p["status"])}</td>'
            f"<td>{when(p['sent_at'])}</td><td>{when(p['answered_at'])}</td>"
            f'<td class="l">{escape(p["failure_reason"] or "")}</td></tr>'
        )
    if not page.rows:
        out.append('<tr><td colspan="8" class="muted">no payouts</td></tr>')
    out.append('</table><p class="muted">the latest sent first</p>')
    out.append(pager("/dashboard/payouts", page, _keep(merchant, args)))
    out.append("</div>")
    return "".join(out)


def render_webhooks(
    page: Page,
    merchant: str | None,
    status: str,
    flash: str | None,
    note: str | None,
    args: PageArgs = PageArgs(),
) -> str:
    out = [
        f'<p class="flash" data-testid="flash">{escape(flash)}</p>' if flash else "",
        f'<p class="muted">{escape(note)}</p>' if note else "",
        '<div class="card"><form class="filters" method="get" action="/dashboard/webhooks">',
        f'<input type="hidden" name="merchant" value="{escape(merchant)}">' if merchant else "",
        f'<label>last attempt<select name="status">{_options(("delivered", "failed", "gave_up"), status, "any")}'
        "</select></label><button>filter</button></form>",
        '<table data-testid="webhooks"><tr><th class="l">notification</th><th class="l">merchant</th>'
        '<th class="l">event</th><th class="l">endpoint</th><th class="l">attempts</th><th '
        'class="l">last</th><th></th></tr>',
    ]
    for n in page.rows:
        last = n.last
        tries = "<br>".join(
            f"#{a['attempt']} {when(a['attempted_at'])} {badge(a['status'])} "
            f"{escape(str(a['http_status']) if a['http_status'] is not None else a['error'] or '')}"
            for a in n.attempts
        )
        retry = ""
        if n.retryable:
            action = escape(with_merchant(f"/dashboard/webhooks/{last['notification_id']}/retry", merchant))
            retry = f'<form class="inline" method="post" action="{action}"><button>retry</button></form>'
        href = escape(with_merchant(f"/dashboard/payments/{last['payment_id']}", merchant))
        out.append(
            f'<tr data-notification="{escape(last["notification_id"])}"><td class="l mono">'
            f'{escape(last["notification_id"])}</td><td class="l">{escape(last["merchant_id"])}</td>'
            f'<td class="l">{escape(last["event_type"])} <a class="mono" href="{href}">'
            f'{escape(last["payment_id"])}</a></td><td class="l">{escape(last["url"])}</td>'
            f'<td class="l" data-field="attempts">{tries}</td><td class="l" '
            f'data-field="last">{badge(last["status"])}</td>'
            f"<td>{retry}</td></tr>"
        )
    if not page.rows:
        out.append('<tr><td colspan="7" class="muted">no webhook deliveries</td></tr>')
    out.append(
        '</table><p class="muted">the latest attempted first; a given-up one can be retried once by hand '
        "(a failed one is still on the runner's schedule)</p>"
    )
    out.append(pager("/dashboard/webhooks", page, _keep(merchant, args, status=status)))
    out.append("</div>")
    return "".join(out)


def render_cases(
    cases: list[Mapping[str, Any]], merchant: str | None, view: str, flash: str | None, error: str | None = None
) -> str:
    """Each case with its finding, measures, evidence and decisions, and a form for the
    decisions it can still take (the operator names themselves: the ops token is shared)."""
    views = "".join(
        f'<option value="{v}"{" selected" if v == view else ""}>{v or "awaiting a decision"}</option>'
        for v in CASE_VIEWS
    )
    out = [
        f'<p class="flash" data-testid="flash">{escape(flash)}</p>' if flash else "",
        f'<p class="warn" data-testid="case-error">{escape(error)}</p>' if error else "",
        '<form class="filters" method="get" action="/dashboard/monitoring">',
        f'<input type="hidden" name="merchant" value="{escape(merchant)}">' if merchant else "",
        f'<label>cases<select name="status">{views}</select></label><button>show</button></form>',
    ]
    for c in cases:
        cid = escape(c["case_id"])
        measures = ", ".join(f"{escape(k)} {v}" for k, v in sorted(c["measures"].items()))
        evidence = "".join(
            f'<tr data-evidence="{escape(e["payment_id"])}"><td class="l"><a class="mono" '
            f'href="{escape(with_merchant("/dashboard/payments/" + e["payment_id"], merchant))}">'
            f'{escape(e["payment_id"])}</a></td><td class="l">{escape(e["kind"])}</td>'
            f"<td>{money(e['amount_minor'], e['currency'])}</td><td>{when(e['occurred_at'])}</td>"
            f'<td class="l mono">{escape(e.get("card_token") or "")}</td></tr>'
            for e in c["evidence"]
        )
        trail = "".join(
            f'<li data-decision="{escape(d["decision"])}">{when(d["decided_at"])} {escape(d["operator"])}: '
            f"<b>{escape(d['decision'])}</b> — {escape(d['reason'])}</li>"
            for d in c["decisions"]
        )
        allowed = allowed_decisions(c["status"])
        form = ""
        if allowed:
            action = escape(with_merchant(f"/dashboard/monitoring/{c['case_id']}", merchant))
            buttons = " ".join(
                f'<button{" class=danger" if d == "report" else ""} name="decision" value="{d}">{d}</button>'
                for d in allowed
            )
            form = (
                f'<form class="filters" method="post" action="{action}">'
                f'<label>operator<input name="operator" required maxlength="{OPERATOR_MAX_CHARS}" size="14"></label>'
                f'<label>reason<input name="reason" required maxlength="{REASON_MAX_CHARS}" size="48"></label>'
                f"{buttons}</form>"
            )
        out.append(
            f'<div class="card" data-case="{cid}" data-status="{escape(c["status"])}">'
            f'<h2>{escape(c["rule"])} · {escape(c["subject_kind"])} <span class="mono">{escape(c["subject_id"])}'
            f'</span> {badge(c["status"])}</h2><table class="facts">'
            f'<tr><th class="l">case</th><td class="l mono">{cid}</td></tr>'
            f'<tr><th class="l">merchant</th><td class="l">{escape(c["merchant_id"])}</td></tr>'
            f'<tr><th class="l">window (UTC)</th><td class="l">{when(c["window_start"])} … '
            f"{when(c['window_end'])}{' · ' + escape(c['currency']) if c.get('currency') else ''}</td></tr>"
            f'<tr><th class="l">opened (UTC)</th><td class="l">{when(c["opened_at"])}</td></tr>'
            f'<tr><th class="l">finding</th><td class="l" data-field="summary">{escape(c["summary"])}</td></tr>'
            f'<tr><th class="l">measures</th><td class="l">{measures}</td></tr></table>'
            '<table data-testid="evidence"><tr><th class="l">payment</th><th class="l">kind</th><th>amount</th>'
            f'<th>at (UTC)</th><th class="l">card token</th></tr>{evidence}</table>'
            f'<ul data-testid="decisions">{trail}</ul>{form}</div>'
        )
    if not cases:
        out.append('<div class="card muted" data-testid="no-cases">no cases</div>')
    out.append(
        f'<p class="muted">oldest opened first, at most {LIST_MAX}; a decision is recorded on monitoring-decisions '
        "with who, when and why, as `paystream cases decide` records it</p>"
    )
    return "".join(out)
