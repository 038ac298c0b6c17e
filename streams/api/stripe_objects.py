"""Stripe's object shapes over the pipeline's payments: ids, the Refund, Balance,
Payout, Customer, PaymentMethod, BalanceTransaction and WebhookEndpoint objects,
and Stripe's error objects. Pure. The PaymentIntent, Dispute and Event shapes are
in streams/domain/stripe_shapes.py, which the webhook runner builds its bodies with.

A PaymentIntent is a payment: `pi_<hex>` is `pay_<hex>` (the same 32 hex digits),
so an id from either API names the same payment.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.api.errors import ApiError, rejection_error
from streams.domain.stripe_shapes import IntentRequest, decline, intent_id, payment_intent
from streams.domain.stripe_shapes import unix_seconds as _seconds

INTENT_ID = re.compile(r"^pi_([0-9a-f]{32})$")
REFUND_ID = re.compile(r"^re_[0-9a-f]{32}$")
DISPUTE_ID = re.compile(r"^dp_([0-9a-f]{32})$")

# Refusals for a payment in the wrong state: Stripe's one code for them.
_UNEXPECTED_STATE = "payment_intent_unexpected_state"


def payment_id_of(pi: str) -> str | None:
    """The payment a `pi_` id names, None if it is not one of ours."""
    m = INTENT_ID.match(pi)
    return f"pay_{m.group(1)}" if m else None


def opened_event_of(dp: str) -> str | None:
    m = DISPUTE_ID.match(dp)
    return f"evt_{m.group(1)}" if m else None


def customer_id(merchant_id: str, idempotency_key: str) -> str:
    """One customer per (merchant, Idempotency-Key): a retried create finds it."""
    return "cus_" + hashlib.sha256(f"customer\x1f{merchant_id}\x1f{idempotency_key}".encode()).hexdigest()[:32]


def saved_payment_method_id(payment_id: str) -> str:
    """A card saved by a payment (setup_future_usage) is named by it: `pm_<hex>` is
    `pay_<hex>`, whose events carry the card's vault token."""
    assert payment_id.startswith("pay_"), payment_id
    return "pm_" + payment_id[4:]


def mandate_id(payment_id: str) -> str:
    """The mandate a bank debit's customer accepted with its intent (mandate_data), as
    the pipeline's mandate reference (at most 35 characters)."""
    return "mandate_" + hashlib.sha256(f"mandate\x1f{payment_id}".encode()).hexdigest()[:24]


def refund_id(merchant_id: str, idempotency_key: str) -> str:
    """One refund per (merchant, Idempotency-Key): every API process names it alike."""
    return "re_" + hashlib.sha256(f"refund\x1f{merchant_id}\x1f{idempotency_key}".encode()).hexdigest()[:32]


def balance_object(merchant_id: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Stripe's Balance from the merchant's ledger accounts (docs/ledger.md): `available`
    is `merchant:<id>:available` (settled, what payouts send); `pending` is
    `merchant:<id>:pending` plus `incoming` (captured or submitted, not settled yet).
    Holds are a memo, not money owed: not in it. Per currency, in minor units."""
    sums: dict[str, dict[str, int]] = {"available": {}, "pending": {}}
    for row in rows:
        prefix, _, kind = row["account"].rpartition(":")
        assert prefix == f"merchant:{merchant_id}", "another merchant's account"
        side = sums["available" if kind == "available" else "pending"]
        currency = row["currency"].lower()
        side[currency] = side.get(currency, 0) + int(row["amount"])
    currencies = sorted(set(sums["available"]) | set(sums["pending"]))
    return {
        "object": "balance",
        "livemode": False,
        **{side: [{"amount": sums[side].get(c, 0), "currency": c} for c in currencies] for side in sums},
    }


def refund_object(
    refund: str, view: dict[str, Any], amount: int | None, created: int, reason: str | None, metadata: dict[str, str]
) -> dict[str, Any]:
    """A succeeded refund of `amount` on the payment `view` (its outcome)."""
    return {
        "id": refund,
        "object": "refund",
        "amount": amount,
        "currency": (view.get("currency") or "").lower() or None,
        "payment_intent": intent_id(view["payment_id"]),
        "charge": None,
        "created": created,
        "metadata": dict(metadata),
        "reason": reason,
        "status": "succeeded",
    }


_PAYOUT_STATUSES = {"sent": "in_transit", "paid": "paid", "failed": "failed"}


def payout_object(row: dict[str, Any]) -> dict[str, Any]:
    """A payout from its read-model row (`paystream payouts run`): sent is in_transit,
    then paid or failed with the bank's reason. `arrival_date` is when the bank
    answered paid, else the day after the settlement day (00:00 UTC), expected."""
    status = _PAYOUT_STATUSES.get(row["status"], row["status"])
    day = row["day"]
    expected = int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp()) + 86_400
    answered = _seconds(row.get("answered_at"))
    return {
        "id": row["payout_id"],
        "object": "payout",
        "amount": row["amount_minor"],
        "currency": row["currency"].lower(),
        "arrival_date": answered if status == "paid" and answered is not None else expected,
        "created": _seconds(row["sent_at"]),
        "status": status,
        "failure_code": (row.get("failure_reason") or None) if status == "failed" else None,
        "failure_message": None,
        "method": "standard",
        "type": "bank_account",
        "automatic": True,
        "livemode": False,
        "metadata": {},
    }


def stripe_error(e: ApiError, params: dict[str, str] | None = None, intent: dict[str, Any] | None = None) -> ApiError:
    """An error of ours as Stripe answers it: a changed body under a key is 400
    idempotency_error; a payment in the wrong state 400
    payment_intent_unexpected_state (our reason stays in the message); declines
    carry `decline_code` and the PaymentIntent. `params` renames our parameter
    names to the route's (e.g. amount_minor -> amount_to_capture)."""
    params = params or {}
    param = params.get(e.param or "", e.param)
    if e.code == "idempotency_conflict":
        return ApiError(
            400,
            "idempotency_error",
            "idempotency_key_reused",
            "Keys for idempotent requests can only be used with the same parameters they were first used with",
            None,
            headers=e.headers,
        )
    if e.code == "split_account_not_connected":  # Stripe's answer for a destination that is not the platform's
        return ApiError(
            400, "invalid_request_error", "resource_missing", "No such destination account", param, headers=e.headers
        )
    if e.code == "idempotency_key_in_use":
        return ApiError(409, "idempotency_error", e.code, e.message, None, headers=e.headers)
    if e.status_code == 409 and e.type == "invalid_request_error":
        return ApiError(
            400,
            "invalid_request_error",
            _UNEXPECTED_STATE,
            f"{e.message} ({e.code})",
            param,
            payment_intent=intent,
            headers=e.headers,
        )
    if e.status_code == 402:
        code, decline_code = decline(e.code)
        return ApiError(
            402,
            "card_error",
            code,
            e.message,
            param,
            decline_code=decline_code,
            payment_intent=intent,
            headers=e.headers,
        )
    return ApiError(e.status_code, e.type, e.code, e.message, param, payment_intent=intent, headers=e.headers)


def outcome_answer(
    outcome: dict[str, Any], request: IntentRequest | None, params: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], bool]:
    """(status code, body, replayed) of a PaymentIntent route answering an outcome."""
    replayed = outcome["status"] == "replayed"
    if outcome["status"] == "rejected" or (replayed and outcome.get("reason_code")):
        intent = (
            payment_intent(outcome, request) if outcome.get("payment_status") and outcome.get("payment_id") else None
        )
        e = rejection_error(outcome)
        if outcome.get("kind") == "confirm" and outcome.get("payment_status") in ("declined", "failed"):
            e = ApiError(402, "card_error", e.code, e.message, None)  # the step-up failed: a decline, as a create's
        e = stripe_error(e, params, intent)
        return e.status_code, e.body(), replayed
    return 200, payment_intent(outcome, request), replayed


def customer_object(doc: dict[str, Any]) -> dict[str, Any]:
    """A Customer from its stored document (streams/api/objects.py)."""
    return {
        "id": doc["id"],
        "object": "customer",
        "created": doc["created"],
        "email": doc.get("email"),
        "name": doc.get("name"),
        "description": doc.get("description"),
        "phone": doc.get("phone"),
        "metadata": dict(doc.get("metadata") or {}),
        "livemode": False,
        "invoice_settings": {
            "default_payment_method": doc.get("default_payment_method"),
            "custom_fields": None,
            "footer": None,
            "rendering_options": None,
        },
    }


def payment_method_object(doc: dict[str, Any]) -> dict[str, Any]:
    """A saved card's PaymentMethod from its stored document: brand, last four and
    expiry; never the token or a number."""
    card = doc["card"]
    return {
        "id": doc["id"],
        "object": "payment_method",
        "type": "card",
        "created": doc["created"],
        "customer": doc.get("customer"),
        "livemode": False,
        "metadata": dict(doc.get("metadata") or {}),
        "billing_details": {"address": None, "email": None, "name": None, "phone": None},
        "card": {
            "brand": card["brand"],
            "last4": card["last4"],
            "exp_month": card["exp_month"],
            "exp_year": card["exp_year"],
            "country": None,
            "funding": None,
            "wallet": None,
        },
    }


TXN_ID = re.compile(r"^txn_([0-9a-f]{32})([pia])$")
_TXN_KINDS = {"p": "pending", "i": "incoming", "a": "available"}
# The ledger entry's event type -> Stripe's balance transaction type.
_TXN_TYPES = {
    "captured": "charge",
    "refunded": "refund",
    "dispute_opened": "adjustment",
    "dispute_won": "adjustment",
    "dispute_lost": "adjustment",
    "bank_submitted": "payment",
    "bank_settled": "payment",
    "bank_returned": "payment_failure_refund",
    "bank_reversed": "payment_failure_refund",
    "settled": "transfer",
    "settlement": "transfer",
    "payout_sent": "payout",
    "payout_paid": "payout",
    "reversal": "payout_failure",
}
_TXN_CATEGORIES = {
    "charge": "charge",
    "refund": "refund",
    "adjustment": "dispute",
    "payment": "charge",
    "payment_failure_refund": "charge_failure",
    "transfer": "transfer",
    "payout": "payout",
    "payout_failure": "payout_reversal",
}


def balance_transaction_id(entry_id: str, account: str) -> str:
    """`txn_<the entry's 32 hex><p|i|a>`: one journal entry's move on one of the
    merchant's balance accounts (pending, incoming, available)."""
    kind = account.rpartition(":")[2]
    return f"txn_{entry_id[-32:]}{kind[0]}"


def balance_transaction_of(txn: str) -> tuple[str, str] | None:
    """(the entry's 32 hex, the account kind) a txn_ id names, None if not one of ours."""
    m = TXN_ID.match(txn)
    return (m.group(1), _TXN_KINDS[m.group(2)]) if m else None


def balance_transaction_object(row: dict[str, Any]) -> dict[str, Any]:
    """A balance transaction from its read-model row (ClickHousePayments.balance_transactions).
    The amount is what the entry moved on the account, fees netted as the ledger
    posts them (fee 0): `available` money is settled, the rest pending."""
    kind = row["account"].rpartition(":")[2]
    txn_type = _TXN_TYPES.get(row["event_type"], "adjustment")
    source = row.get("payment_id") or None
    created = _seconds(row["first_at"])
    return {
        "id": balance_transaction_id(row["entry_id"], row["account"]),
        "object": "balance_transaction",
        "amount": row["amount_minor"],
        "fee": 0,
        "fee_details": [],
        "net": row["amount_minor"],
        "currency": row["currency"].lower(),
        "type": txn_type,
        "reporting_category": _TXN_CATEGORIES[txn_type],
        "status": "available" if kind == "available" else "pending",
        "source": intent_id(source) if source and source.startswith("pay_") else source,
        "created": created,
        "available_on": created,
        "description": row["event_type"],
        "exchange_rate": None,
        "paystream": {"account": kind, "entry_id": row["entry_id"], "event_type": row["event_type"]},
    }


def webhook_endpoint_object(endpoint_id: str, url: str, secret: str | None = None) -> dict[str, Any]:
    """A WebhookEndpoint: every event of the merchant goes to it (`enabled_events` ["*"]);
    `secret` (the merchant's `whsec_`, one per merchant) only in the create's answer."""
    body: dict[str, Any] = {
        "id": endpoint_id,
        "object": "webhook_endpoint",
        "url": url,
        "enabled_events": ["*"],
        "status": "enabled",
        "api_version": None,
        "application": None,
        "description": None,
        "livemode": False,
        "metadata": {},
        "created": None,
    }
    if secret is not None:
        body["secret"] = secret
    return body


def connected_account_of(account: str) -> str:
    """The merchant a connected account's pending balance belongs to (`merchant:<id>:pending`)."""
    prefix, suffix = "merchant:", ":pending"
    assert account.startswith(prefix) and account.endswith(suffix), account
    return account[len(prefix) : -len(suffix)]


_DISABLED = {"pending": "requirements.pending_verification", "rejected": "rejected.other"}


def account_object(record: dict[str, Any], connected: bool) -> dict[str, Any]:
    """A connected account (Stripe's custom account) from its registry record: it can
    be paid (`charges_enabled`, `payouts_enabled`) once verified and connected to the
    platform. The owners' names stay in the registry; the legal name is not echoed."""
    case = record.get("kyc") or {}
    submitted = case.get("submitted_at")
    status = record["kyc_status"]
    disabled = None if connected else _DISABLED.get(status, "platform_paused" if status == "verified" else "other")
    active = "active" if connected else "inactive"
    return {
        "id": record["merchant_id"],
        "object": "account",
        "type": "custom",
        "business_type": "company",
        "country": case.get("country"),
        "default_currency": record["settlement_currency"].lower(),
        "email": None,
        "created": _seconds(submitted if submitted is not None else record["updated_at"]),
        "charges_enabled": connected,
        "payouts_enabled": connected,
        "details_submitted": bool(case),
        "capabilities": {"card_payments": active, "transfers": active},
        "requirements": {
            "currently_due": [],
            "eventually_due": [],
            "past_due": [],
            "pending_verification": [],
            "disabled_reason": disabled,
            "current_deadline": None,
            "errors": [],
        },
        "metadata": {},
        "livemode": False,
        # Ours, not Stripe's: the registry's KYC status and the case's state (docs/compliance.md).
        "paystream": {"kyc_status": status, "kyc_state": case.get("state")},
    }


def split_returns(lines: list[dict[str, Any]], own: str) -> tuple[dict[str, list[Take]], dict[str, list[Take]]]:
    """From the ledger lines of destination charges (their `captured` and `refunded`
    entries, oldest first), what was given back: per transfer id its reversals, per
    application fee id its refunds. A refund of a split payment takes from each connected
    account and from the platform's fee pro rata (docs/ledger.md, Split payments): its
    debit to a connected account's pending reverses that account's transfers of the
    payment, and the rest of the refund (its clearing credit less those debits) refunds
    the payment's fees. A payment captured in parts has several of each: a take goes to
    the oldest with room first (its id gets a suffix where it spans two). `own` is the
    platform's pending account."""
    reversals: dict[str, list[Take]] = {}
    refunds: dict[str, list[Take]] = {}
    for pid in dict.fromkeys(x["payment_id"] for x in lines):
        mine = [x for x in lines if x["payment_id"] == pid]
        for account in dict.fromkeys(x["account"] for x in mine if _connected(x["account"], own)):
            given = [
                (transfer_id(x), x["credit_minor"])
                for x in mine
                if x["account"] == account and x["event_type"] == "captured" and x["credit_minor"] > 0
            ]
            taken = [
                Take("trr_" + x["entry_id"][-32:] + f"{x['line_no']:02d}", x["debit_minor"], x["occurred_at"])
                for x in mine
                if x["account"] == account and x["event_type"] == "refunded" and x["debit_minor"] > 0
            ]
            reversals |= _oldest_first(given, taken)
        entries = list(dict.fromkeys(x["entry_id"] for x in mine))
        fees = [(fee_id(e), _sum(mine, e, own, "credit_minor")) for e in entries if _kind(mine, e) == "captured"]
        fee_refunds = []
        for e in entries:
            if _kind(mine, e) != "refunded":
                continue
            cleared = sum(
                x["credit_minor"] for x in mine if x["entry_id"] == e and x["account"].startswith("house:clearing")
            )
            reversed_ = sum(x["debit_minor"] for x in mine if x["entry_id"] == e and _connected(x["account"], own))
            at = next(x["occurred_at"] for x in mine if x["entry_id"] == e)
            if cleared > reversed_:
                fee_refunds.append(Take("fr_" + e[-32:], cleared - reversed_, at))
        refunds |= _oldest_first([(f, amount) for f, amount in fees if amount > 0], fee_refunds)
    return reversals, refunds


@dataclass(frozen=True)
class Take:
    """A reversal of a transfer or a refund of an application fee (minor units)."""

    id: str
    amount_minor: int
    occurred_at: Any


def transfer_id(line: dict[str, Any]) -> str:
    return "tr_" + line["entry_id"][-32:] + f"{line['line_no']:02d}"


def fee_id(entry_id: str) -> str:
    return "fee_" + entry_id[-32:]


def _connected(account: str, own: str) -> bool:
    return account.startswith("merchant:") and account.endswith(":pending") and account != own


def _kind(lines: list[dict[str, Any]], entry_id: str) -> str:
    return str(next(x["event_type"] for x in lines if x["entry_id"] == entry_id))


def _sum(lines: list[dict[str, Any]], entry_id: str, account: str, side: str) -> int:
    return sum(x[side] for x in lines if x["entry_id"] == entry_id and x["account"] == account)


def _oldest_first(given: list[tuple[str, int]], taken: list[Take]) -> dict[str, list[Take]]:
    """Each take to the oldest of `given` (id, amount) with room left, split where it spans two."""
    out: dict[str, list[Take]] = {gid: [] for gid, _ in given}
    room = [[gid, amount] for gid, amount in given]
    i = 0
    for take in taken:
        left, part = take.amount_minor, 0
        while left > 0 and i < len(room):
            moved = min(left, int(room[i][1]))
            if moved:
                whole = moved == take.amount_minor
                out[str(room[i][0])].append(Take(take.id if whole else f"{take.id}_{part}", moved, take.occurred_at))
                part, left, room[i][1] = part + 1, left - moved, int(room[i][1]) - moved
            if room[i][1] == 0:
                i += 1
    return out


def take_object(take: Take, kind: str, parent: str, currency: str) -> dict[str, Any]:
    """A `transfer_reversal` (parent: the transfer) or a `fee_refund` (the fee)."""
    body = {
        "id": take.id,
        "object": kind,
        "amount": take.amount_minor,
        "currency": currency.lower(),
        "created": _seconds(take.occurred_at),
        "metadata": {},
        "balance_transaction": None,
    }
    if kind == "transfer_reversal":
        return body | {"transfer": parent, "destination_payment_refund": None, "source_refund": None}
    return body | {"fee": parent}


def transfer_object(row: dict[str, Any]) -> dict[str, Any]:
    """A transfer to a connected account: one split capture's credit to its pending
    balance (ClickHousePayments.transfers), with the reversals the payment's refunds made
    (`row["reversals"]`, split_returns)."""
    pid = row["payment_id"]
    takes: list[Take] = row.get("reversals") or []
    reversed_minor = sum(t.amount_minor for t in takes)
    return {
        "id": row["id"],
        "object": "transfer",
        "amount": row["amount_minor"],
        "amount_reversed": reversed_minor,
        "currency": row["currency"].lower(),
        "destination": connected_account_of(row["account"]),
        "destination_payment": None,
        "source_transaction": None,
        "source_type": "card",
        "created": _seconds(row["occurred_at"]),
        "description": None,
        "livemode": False,
        "metadata": {},
        "reversed": reversed_minor == row["amount_minor"],
        "reversals": {
            "object": "list",
            "data": [take_object(t, "transfer_reversal", row["id"], row["currency"]) for t in takes],
            "has_more": False,
            "url": f"/v1/transfers/{row['id']}/reversals",
        },
        "transfer_group": None,
        "balance_transaction": None,
        "paystream": {
            "payment_intent": intent_id(pid) if pid.startswith("pay_") else None,
            "entry_id": row["entry_id"],
        },
    }


def application_fee_object(row: dict[str, Any]) -> dict[str, Any]:
    """The platform's fee on one split capture: that entry's credit to the platform's
    own pending balance (ClickHousePayments.application_fees), with what the payment's
    refunds gave back of it (`row["refunds"]`, split_returns)."""
    pid = row["payment_id"]
    takes: list[Take] = row.get("refunds") or []
    refunded_minor = sum(t.amount_minor for t in takes)
    return {
        "id": row["id"],
        "object": "application_fee",
        "account": connected_account_of(row["destination"]),
        "amount": row["amount_minor"],
        "amount_refunded": refunded_minor,
        "refunded": refunded_minor == row["amount_minor"],
        "application": None,
        "balance_transaction": None,
        "charge": None,
        "originating_transaction": None,
        "currency": row["currency"].lower(),
        "created": _seconds(row["occurred_at"]),
        "livemode": False,
        "refunds": {
            "object": "list",
            "data": [take_object(t, "fee_refund", row["id"], row["currency"]) for t in takes],
            "has_more": False,
            "url": f"/v1/application_fees/{row['id']}/refunds",
        },
        "paystream": {
            "payment_intent": intent_id(pid) if pid.startswith("pay_") else None,
            "entry_id": row["entry_id"],
        },
    }
