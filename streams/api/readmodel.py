"""The API's reads from the ClickHouse read models (`payments`, FINAL): one payment,
a merchant's list (cursor pagination), and the dashboard's queries (`rows`)."""

from __future__ import annotations

import threading
from typing import Any

from streams.api.stripe_objects import Take, split_returns
from streams.domain.ledger import merchant_account

LIST_LIMIT_MAX = 100

_COLUMNS = """payment_id, merchant_id, status AS payment_status, currency, authorized_minor, captured_minor,
       refunded_minor, card_bin, card_last4"""

_GET = f"SELECT {_COLUMNS} FROM payments FINAL WHERE payment_id = {{pid:String}} LIMIT 1"

# Ordered by payment_id, the table's sorting key: a cursor (`starting_after`) stays
# exact while payments change status, and the range read is cheap. The merchant
# filter is in the query, never applied after it: another merchant's rows never leave ClickHouse.
_LIST = f"""
SELECT {_COLUMNS} FROM payments FINAL
WHERE merchant_id = {{merchant:String}} AND payment_id > {{after:String}}
ORDER BY payment_id LIMIT {{limit:UInt32}}
"""
# A page before a cursor (Stripe's ending_before): nearest first.
_LIST_BEFORE = f"""
SELECT {_COLUMNS} FROM payments FINAL
WHERE merchant_id = {{merchant:String}} AND payment_id < {{before:String}}
ORDER BY payment_id DESC LIMIT {{limit:UInt32}}
"""


# A merchant's balances, from the journal: credits less debits of its liability
# accounts (docs/ledger.md), per account and currency.
BALANCE_ACCOUNTS = ("pending", "incoming", "available")
_BALANCE = """
SELECT account, currency, toInt64(sum(credit_minor)) - toInt64(sum(debit_minor)) AS amount
FROM ledger_entries FINAL
WHERE account IN {accounts:Array(String)}
GROUP BY account, currency ORDER BY account, currency
"""

# Disputes from the payment events: one open at a time per payment, so the dispute
# event after an opening (by the payment's version) is its close. The opening's
# event id names the dispute.
_DISPUTES = """
SELECT * FROM (
    SELECT event_id, payment_id, merchant_id, currency, amount_minor, reason_code, occurred_at,
           type, leadInFrame(type) OVER w AS closed_as, leadInFrame(occurred_at) OVER w AS closed_at
    FROM payment_events FINAL
    WHERE merchant_id = {merchant:String} AND type IN ('dispute_opened', 'dispute_won', 'dispute_lost')
    WINDOW w AS (PARTITION BY payment_id ORDER BY version ROWS BETWEEN CURRENT ROW AND 1 FOLLOWING)
)
WHERE type = 'dispute_opened' AND %s
ORDER BY event_id %s LIMIT {limit:UInt32}
"""
_DISPUTES_AFTER = _DISPUTES % ("event_id > {after:String}", "ASC")
_DISPUTES_BEFORE = _DISPUTES % ("event_id < {before:String}", "DESC")
_DISPUTE = _DISPUTES % ("event_id = {event:String}", "ASC")
# The evidence the pipeline accepted for the merchant's disputed payments (PaymentOutcome v2
# put the text there; any version counts a submission).
_SUBMISSIONS = """
SELECT payment_id, occurred_at FROM payment_outcomes FINAL
WHERE merchant_id = {merchant:String} AND kind = 'dispute_evidence' AND status = 'succeeded'
  AND payment_id IN {pids:Array(String)}
"""

# Payouts on the bank rail, latest status per payout (sent, then paid or failed).
_PAYOUTS = """
SELECT payout_id, merchant_id, currency, amount_minor, day, status, sent_at, answered_at, failure_reason
FROM payouts FINAL
WHERE merchant_id = {merchant:String} AND %s
ORDER BY payout_id %s LIMIT {limit:UInt32}
"""
_PAYOUTS_AFTER = _PAYOUTS % ("payout_id > {after:String}", "ASC")
_PAYOUTS_BEFORE = _PAYOUTS % ("payout_id < {before:String}", "DESC")
_PAYOUT = _PAYOUTS % ("payout_id = {payout:String}", "ASC")

# A saved card's vault token: the card of one of the merchant's payments that went through.
_SAVED_CARD = """
SELECT card_token FROM payments FINAL
WHERE payment_id = {pid:String} AND merchant_id = {merchant:String} AND card_token IS NOT NULL
  AND status NOT IN ('declined', 'failed')
LIMIT 1
"""

# A merchant's balance transactions: per journal entry, what it moved on each of the
# merchant's balance accounts (fees netted, as the ledger posts them). By event
# time, then entry and account: a cursor is the triple of the row it names.
_TXNS = """
SELECT * FROM (
    SELECT entry_id, account, currency, any(event_type) AS event_type, any(payment_id) AS payment_id,
           toInt64(sum(credit_minor)) - toInt64(sum(debit_minor)) AS amount_minor, min(occurred_at) AS first_at,
           toUnixTimestamp64Milli(first_at) AS at_ms
    FROM ledger_entries FINAL
    WHERE account IN {accounts:Array(String)}
    GROUP BY entry_id, account, currency
)
WHERE amount_minor != 0 AND %s
ORDER BY at_ms %s, entry_id %s, account %s LIMIT {limit:UInt32}
"""
_TXNS_AFTER = _TXNS % (
    "(at_ms, entry_id, account) > ({at:Int64}, {entry:String}, {account:String})",
    "ASC",
    "ASC",
    "ASC",
)
_TXNS_BEFORE = _TXNS % (
    "(at_ms, entry_id, account) < ({at:Int64}, {entry:String}, {account:String})",
    "DESC",
    "DESC",
    "DESC",
)
_TXN = _TXNS % ("account = {account:String} AND endsWith(entry_id, {hex:String})", "ASC", "ASC", "ASC")

# A merchant's payment events by id; a dispute's close names the opening before it.
_EVENT_COLUMNS = """event_id, type, payment_id, merchant_id, currency, amount_minor, fee_minor,
       payment_status, authorized_minor, captured_minor, refunded_minor, reason_code, card_bin, card_last4,
       version, occurred_at"""
_EVENTS = f"""
SELECT {_EVENT_COLUMNS} FROM payment_events FINAL
WHERE merchant_id = {{merchant:String}} AND %s
ORDER BY event_id %s LIMIT {{limit:UInt32}}
"""
_EVENTS_AFTER = _EVENTS % ("event_id > {after:String}", "ASC")
_EVENTS_BEFORE = _EVENTS % ("event_id < {before:String}", "DESC")
_EVENT = _EVENTS % ("event_id = {event:String}", "ASC")
_OPENINGS = """
SELECT payment_id, event_id, version FROM payment_events FINAL
WHERE merchant_id = {merchant:String} AND type = 'dispute_opened' AND payment_id IN {pids:Array(String)}
ORDER BY payment_id, version
"""

# A platform's destination charges, from its split captures' journal lines
# (docs/ledger.md, Split payments): a transfer is a capture entry's credit to a
# connected account's pending balance; an application fee is the same entry's credit
# to the platform's own. Named by the entry (and the line), ordered by that name.
_TRANSFERS = """
SELECT * FROM (
    SELECT concat('tr_', right(entry_id, 32), leftPad(toString(line_no), 2, '0')) AS id, entry_id, payment_id,
           account, currency, credit_minor AS amount_minor, occurred_at
    FROM ledger_entries FINAL
    WHERE merchant_id = {merchant:String} AND event_type = 'captured' AND credit_minor > 0
      AND startsWith(account, 'merchant:') AND endsWith(account, ':pending') AND account != {own:String}
)
WHERE %s ORDER BY id %s LIMIT {limit:UInt32}
"""
_FEES = """
SELECT * FROM (
    SELECT concat('fee_', right(entry_id, 32)) AS id, entry_id, any(payment_id) AS payment_id, any(currency) AS
    currency,
           toInt64(sumIf(credit_minor, account = {own:String})) AS amount_minor,
           minIf(account, account != {own:String} AND credit_minor > 0 AND startsWith(account, 'merchant:')
                 AND endsWith(account, ':pending')) AS destination,
           min(occurred_at) AS occurred_at
    FROM ledger_entries FINAL
    WHERE merchant_id = {merchant:String} AND event_type = 'captured'
    GROUP BY entry_id
)
WHERE destination != '' AND amount_minor > 0 AND %s ORDER BY id %s LIMIT {limit:UInt32}
"""
# A merchant's refunds: each refund event joined to the outcome of the refund command that
# made it, for its Idempotency-Key, and named as the API names a refund
# (stripe_objects.refund_id: re_ + the first 32 hex of sha256("refund", merchant, key)).
_REFUNDS = """
SELECT * FROM (
    SELECT concat('re_', left(lower(hex(SHA256(concat('refund', char(31), e.merchant_id, char(31),
                                                       o.idempotency_key)))), 32)) AS id,
           e.payment_id AS payment_id, e.currency AS currency, e.amount_minor AS amount_minor,
           e.occurred_at AS occurred_at
    FROM payment_events AS e FINAL
    INNER JOIN (
        SELECT command_id, idempotency_key FROM payment_outcomes FINAL
        WHERE merchant_id = {merchant:String} AND kind = 'refund' AND status = 'succeeded'
    ) AS o ON o.command_id = e.command_id
    WHERE e.merchant_id = {merchant:String} AND e.type = 'refunded'
)
WHERE %s ORDER BY id %s LIMIT {limit:UInt32}
"""
# The captures and refunds of some destination charges: what their refunds took back of
# the transfers and the fees (stripe_objects.split_returns).
_SPLIT_LINES = """
SELECT entry_id, line_no, payment_id, account, event_type, debit_minor, credit_minor, occurred_at
FROM ledger_entries FINAL
WHERE merchant_id = {merchant:String} AND payment_id IN {pids:Array(String)}
  AND event_type IN ('captured', 'refunded')
ORDER BY occurred_at, entry_id, line_no
LIMIT 100000
"""
_CURSORED = {
    "after": ("id > {after:String}", "ASC"),
    "before": ("id < {before:String}", "DESC"),
    "one": ("id = {one:String}", "ASC"),
}

# How far a payment has gone, for views of equal amounts: any legal step moves up.
_PROGRESS = {
    "authorized": 1,
    "partially_captured": 2,
    "captured": 3,
    "partially_refunded": 4,
    "refunded": 5,
    "voided": 6,
    "expired": 6,
    "declined": 6,
    "failed": 6,
}


def fresher(stored: dict[str, Any] | None, seen: dict[str, Any] | None) -> dict[str, Any] | None:
    """The newer of a payment's read-model row and the last outcome this process saw:
    the read model lags the sink, and a merchant reads its own write right after it.
    Amounts only grow (captured + refunded), then the status only moves on."""
    if stored is None or seen is None:
        return stored or seen

    def progress(v: dict[str, Any]) -> tuple[int, int]:
        return (
            (v.get("captured_minor") or 0) + (v.get("refunded_minor") or 0),
            _PROGRESS.get(v.get("payment_status") or "", 0),
        )

    return seen if progress(seen) > progress(stored) else stored


class ClickHousePayments:
    """One client, used by one thread at a time (the API calls it off the event loop)."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._lock = threading.Lock()

    def rows(self, sql: str, parameters: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """A query's rows as dicts, under the client's lock."""
        with self._lock:
            return list(self._client.query(sql, parameters=parameters or {}).named_results())

    def get(self, payment_id: str) -> dict[str, Any] | None:
        rows = self.rows(_GET, {"pid": payment_id})
        return rows[0] if rows else None

    def balance(self, merchant_id: str) -> list[dict[str, Any]]:
        """The merchant's pending, incoming and available balances: {account, currency, amount}."""
        accounts = [merchant_account(merchant_id, kind) for kind in BALANCE_ACCOUNTS]
        return self.rows(_BALANCE, {"accounts": accounts})

    def disputes(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        """The merchant's disputes by opening event id, after (or before, nearest first)
        the cursor: the opening's fields, and `closed_as` ('' while open) and `closed_at`."""
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit
        if ending_before is not None:
            rows = self.rows(_DISPUTES_BEFORE, {"merchant": merchant_id, "before": ending_before, "limit": limit})
        else:
            rows = self.rows(_DISPUTES_AFTER, {"merchant": merchant_id, "after": starting_after or "", "limit": limit})
        return self._with_submissions(merchant_id, rows)

    def _with_submissions(self, merchant_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Each dispute with `submissions`: the evidence accepted while it was open."""
        if not rows:
            return rows
        subs = self.rows(_SUBMISSIONS, {"merchant": merchant_id, "pids": sorted({r["payment_id"] for r in rows})})
        for r in rows:
            end = r["closed_at"] if r["closed_as"] else None
            r["submissions"] = sum(
                1
                for s in subs
                if s["payment_id"] == r["payment_id"]
                and s["occurred_at"] >= r["occurred_at"]
                and (end is None or s["occurred_at"] <= end)
            )
        return rows

    def payouts(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        """The merchant's payouts by id, after (or before, nearest first) the cursor."""
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit
        if ending_before is not None:
            return self.rows(_PAYOUTS_BEFORE, {"merchant": merchant_id, "before": ending_before, "limit": limit})
        return self.rows(_PAYOUTS_AFTER, {"merchant": merchant_id, "after": starting_after or "", "limit": limit})

    def payout(self, merchant_id: str, payout_id: str) -> dict[str, Any] | None:
        rows = self.rows(_PAYOUT, {"merchant": merchant_id, "payout": payout_id, "limit": 1})
        return rows[0] if rows else None

    def dispute(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        """One of the merchant's disputes by its opening event id."""
        rows = self.rows(_DISPUTE, {"merchant": merchant_id, "event": event_id, "limit": 1})
        return self._with_submissions(merchant_id, rows)[0] if rows else None

    def balance_transactions(
        self, merchant_id: str, limit: int, after: dict[str, Any] | None = None, before: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        """The merchant's balance transactions after (or before, nearest first) the
        cursor row (one of these rows): {entry_id, account, currency, event_type,
        payment_id, amount_minor, occurred_at, at_ms}."""
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit
        accounts = [merchant_account(merchant_id, kind) for kind in BALANCE_ACCOUNTS]
        cursor = before or after or {"at_ms": -1, "entry_id": "", "account": ""}
        return self.rows(
            _TXNS_BEFORE if before else _TXNS_AFTER,
            {
                "accounts": accounts,
                "limit": limit,
                "at": cursor["at_ms"],
                "entry": cursor["entry_id"],
                "account": cursor["account"],
            },
        )

    def balance_transaction(self, merchant_id: str, entry_hex: str, kind: str) -> dict[str, Any] | None:
        """One balance transaction: the entry ending in `entry_hex` on the merchant's `kind` account."""
        accounts = [merchant_account(merchant_id, k) for k in BALANCE_ACCOUNTS]
        rows = self.rows(
            _TXN, {"accounts": accounts, "account": merchant_account(merchant_id, kind), "hex": entry_hex, "limit": 1}
        )
        return rows[0] if rows else None

    def events(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        """The merchant's payment events by id after (or before, nearest first) the
        cursor; a dispute's close carries `opened_event_id`, the opening before it."""
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit
        if ending_before is not None:
            rows = self.rows(_EVENTS_BEFORE, {"merchant": merchant_id, "before": ending_before, "limit": limit})
        else:
            rows = self.rows(_EVENTS_AFTER, {"merchant": merchant_id, "after": starting_after or "", "limit": limit})
        return self._with_openings(merchant_id, rows)

    def event(self, merchant_id: str, event_id: str) -> dict[str, Any] | None:
        rows = self._with_openings(
            merchant_id, self.rows(_EVENT, {"merchant": merchant_id, "event": event_id, "limit": 1})
        )
        return rows[0] if rows else None

    def _with_openings(self, merchant_id: str, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        closes = [r for r in rows if r["type"] in ("dispute_won", "dispute_lost")]
        if not closes:
            return rows
        openings = self.rows(_OPENINGS, {"merchant": merchant_id, "pids": sorted({r["payment_id"] for r in closes})})
        for r in closes:  # one dispute open at a time: the latest opening before the close is its dispute
            before = [
                o["event_id"] for o in openings if o["payment_id"] == r["payment_id"] and o["version"] < r["version"]
            ]
            r["opened_event_id"] = before[-1] if before else None
        return rows

    def transfers(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        transfer_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The platform's transfers to its connected accounts by id, after (or before,
        nearest first) the cursor, or the one named: {id, entry_id, payment_id,
        account (the connected one's pending), currency, amount_minor, occurred_at}."""
        rows = self._split_rows(_TRANSFERS, merchant_id, limit, starting_after, ending_before, transfer_id)
        reversals, _ = self._returns(merchant_id, rows)
        return [r | {"reversals": reversals.get(r["id"], [])} for r in rows]

    def application_fees(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        fee_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The platform's application fees by id, as `transfers` (`destination`: the
        first connected account's pending the charge paid)."""
        rows = self._split_rows(_FEES, merchant_id, limit, starting_after, ending_before, fee_id)
        _, refunds = self._returns(merchant_id, rows)
        return [r | {"refunds": refunds.get(r["id"], [])} for r in rows]

    def _returns(
        self, merchant_id: str, rows: list[dict[str, Any]]
    ) -> tuple[dict[str, list[Take]], dict[str, list[Take]]]:
        if not rows:
            return {}, {}
        pids = sorted({r["payment_id"] for r in rows})
        lines = self.rows(_SPLIT_LINES, {"merchant": merchant_id, "pids": pids})
        return split_returns(lines, merchant_account(merchant_id, "pending"))

    def refunds(
        self,
        merchant_id: str,
        limit: int,
        starting_after: str | None = None,
        ending_before: str | None = None,
        refund_id: str | None = None,
    ) -> list[dict[str, Any]]:
        """The merchant's refunds by id, after (or before, nearest first) the cursor, or
        the one named: {id, payment_id, currency, amount_minor, occurred_at}."""
        return self._split_rows(_REFUNDS, merchant_id, limit, starting_after, ending_before, refund_id)

    def _split_rows(
        self, sql: str, merchant_id: str, limit: int, after: str | None, before: str | None, one: str | None
    ) -> list[dict[str, Any]]:
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit
        which = "one" if one is not None else "before" if before is not None else "after"
        where, order = _CURSORED[which]
        return self.rows(
            sql % (where, order),
            {
                "merchant": merchant_id,
                "own": merchant_account(merchant_id, "pending"),
                "limit": limit,
                "after": after or "",
                "before": before or "",
                "one": one or "",
            },
        )

    def saved_card(self, merchant_id: str, payment_id: str) -> str | None:
        """The vault token of the card one of the merchant's payments was made with
        (a PaymentMethod saved with it), None until the sink has it."""
        rows = self.rows(_SAVED_CARD, {"pid": payment_id, "merchant": merchant_id})
        return rows[0]["card_token"] if rows else None

    def list(
        self, merchant_id: str, limit: int, starting_after: str | None = None, ending_before: str | None = None
    ) -> list[dict[str, Any]]:
        """Up to `limit` of the merchant's payments after the cursor, by payment id; with
        `ending_before`, those before it, nearest first."""
        assert 1 <= limit <= LIST_LIMIT_MAX + 1, limit  # +1: the API asks one more to know has_more
        if ending_before is not None:
            return self.rows(_LIST_BEFORE, {"merchant": merchant_id, "before": ending_before, "limit": limit})
        return self.rows(_LIST, {"merchant": merchant_id, "after": starting_after or "", "limit": limit})
