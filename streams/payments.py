"""The payment aggregate and its transition function. Pure: no Kafka, no clock.

`decide(payment, command, authorize, policy) -> Decision` is the whole state machine.
Every path returns exactly one outcome; an illegal command is a rejection with a
stable reason code and leaves the payment untouched.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

from schemas.ids import derive_outcome_id
from streams.outcomes import outcome, rejection

# A payment carries the idempotency records of its follow-ups; bound them.
MAX_FOLLOW_UPS = 100

STATUSES = frozenset(
    {
        "authorized",
        "partially_captured",
        "captured",
        "partially_refunded",
        "refunded",
        "voided",
        "expired",
        "declined",
    }
)


@dataclass(frozen=True)
class Policy:
    auth_window: timedelta = timedelta(days=7)


@dataclass(frozen=True)
class AuthResult:
    approved: bool
    reason: str | None = None  # decline code when not approved


#: (validated create command) -> AuthResult; the provider hook of the saga.
Authorize = Callable[[dict[str, Any]], AuthResult]


@dataclass(frozen=True)
class Payment:
    payment_id: str
    merchant_id: str
    currency: str
    amount_minor: int
    capture_method: str
    status: str
    authorized_minor: int
    captured_minor: int
    refunded_minor: int
    card_bin: str | None
    card_last4: str | None
    created_at_ms: int
    version: int
    # idempotency_key -> {"fingerprint": str, "outcome": {...}}; the create's key included
    idempotency: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.status in STATUSES, self.status
        assert 0 <= self.captured_minor <= self.authorized_minor <= self.amount_minor, self
        assert 0 <= self.refunded_minor <= self.captured_minor, self

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Payment:
        return cls(**json.loads(data))


@dataclass(frozen=True)
class Decision:
    payment: Payment | None  # the new state; None only when there is none
    outcome: dict[str, Any]  # a PaymentOutcome record
    changed: bool  # False for rejections and replays


def fingerprint(cmd: dict[str, Any]) -> str:
    """Canonical hash of what the command asks for.

    command_id and occurred_at identify the attempt, not the request, so a
    retry that regenerates them is still the same request.
    """
    card = cmd.get("card")
    body = {
        "kind": cmd["kind"],
        "merchant_id": cmd["merchant_id"],
        "payment_id": cmd["payment_id"],
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "capture_method": cmd["capture_method"],
        "card": None if card is None else [card["token"], card["exp_month"], card["exp_year"]],
        "metadata": cmd["metadata"],
    }
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def decide(payment: Payment | None, cmd: dict[str, Any], authorize: Authorize, policy: Policy) -> Decision:
    key = cmd["idempotency_key"]
    fp = fingerprint(cmd)
    if payment is not None and payment.merchant_id != cmd["merchant_id"]:
        # Another merchant's payment: answer as if it did not exist, leak nothing.
        return _reject(payment, cmd, "payment_not_found", "no such payment for this merchant", keep=None)
    if payment is not None and key in payment.idempotency:
        prior = payment.idempotency[key]
        if prior["fingerprint"] != fp:
            return _reject(payment, cmd, "idempotency_conflict", "idempotency_key reused with a different request", keep=payment)
        return Decision(payment, _replayed(prior["outcome"], cmd), changed=False)

    if cmd["kind"] == "create":
        assert payment is None, "a create with a new key cannot find an existing payment"
        return _create(cmd, fp, authorize)
    if payment is None:
        return _reject(None, cmd, "payment_not_found", "no such payment for this merchant", keep=None)
    if len(payment.idempotency) >= MAX_FOLLOW_UPS:
        return _reject(payment, cmd, "too_many_operations", f"at most {MAX_FOLLOW_UPS} operations per payment", keep=payment)
    if cmd["currency"] is not None and cmd["currency"] != payment.currency:
        return _reject(payment, cmd, "currency_mismatch", f"payment is in {payment.currency}", keep=payment)
    step = _FOLLOW_UPS[cmd["kind"]]
    result = step(payment, cmd, policy)
    if isinstance(result, tuple):
        reason, detail = result
        return _reject(payment, cmd, reason, detail, keep=payment)
    return _succeed(result, cmd, fp)


def _create(cmd: dict[str, Any], fp: str, authorize: Authorize) -> Decision:
    card = cmd["card"]
    auth = authorize(cmd)
    amount = cmd["amount_minor"]
    if auth.approved:
        captured = amount if cmd["capture_method"] == "automatic" else 0
        status = "captured" if captured else "authorized"
    else:
        captured, status = 0, "declined"
    payment = Payment(
        payment_id=cmd["payment_id"],
        merchant_id=cmd["merchant_id"],
        currency=cmd["currency"],
        amount_minor=amount,
        capture_method=cmd["capture_method"],
        status=status,
        authorized_minor=amount if auth.approved else 0,
        captured_minor=captured,
        refunded_minor=0,
        card_bin=card["bin"],
        card_last4=card["last4"],
        created_at_ms=_ms(cmd["occurred_at"]),
        version=0,
    )
    if auth.approved:
        return _succeed(payment, cmd, fp)
    # A decline is the key's first outcome and is kept, as Stripe does.
    outcome = _outcome(payment, cmd, "rejected", auth.reason or "card_declined")
    return Decision(_remember(payment, cmd, fp, outcome), outcome, changed=True)


def _take(done_minor: int, limit_minor: int, requested_minor: int | None) -> int | None:
    """The running total after taking `requested_minor` (None: all that is left)
    of what `limit_minor` leaves; None if that is more than is left."""
    remaining = limit_minor - done_minor
    amount = remaining if requested_minor is None else requested_minor
    assert amount > 0 or requested_minor is None, "ingest admits positive amounts only"
    return done_minor + amount if amount <= remaining else None


def _capture(p: Payment, cmd: dict[str, Any], policy: Policy) -> Payment | tuple[str, str]:
    if p.status in ("voided", "expired", "declined"):
        return f"already_{p.status}" if p.status != "declined" else "payment_declined", f"payment is {p.status}"
    if p.status not in ("authorized", "partially_captured"):
        return "already_captured", f"payment is {p.status}"
    if _ms(cmd["occurred_at"]) >= p.created_at_ms + _window_ms(policy):
        return "authorization_expired", "the authorization window has passed"
    captured = _take(p.captured_minor, p.authorized_minor, cmd["amount_minor"])
    if captured is None:
        return "amount_exceeds_authorized", f"at most {p.authorized_minor - p.captured_minor} left to capture"
    status = "captured" if captured == p.authorized_minor else "partially_captured"
    return replace(p, captured_minor=captured, status=status)


def _void(p: Payment, cmd: dict[str, Any], policy: Policy) -> Payment | tuple[str, str]:
    if p.status == "authorized":
        return replace(p, status="voided")
    if p.status in ("voided", "expired"):
        return f"already_{p.status}", f"payment is {p.status}"
    if p.status == "declined":
        return "payment_declined", "payment is declined"
    return "already_captured", "capture happened; refund instead"


def _refund(p: Payment, cmd: dict[str, Any], policy: Policy) -> Payment | tuple[str, str]:
    if p.captured_minor == 0:
        return "not_captured", f"payment is {p.status}; nothing captured to refund"
    if p.refunded_minor == p.captured_minor:
        return "already_refunded", "everything captured is refunded"
    refunded = _take(p.refunded_minor, p.captured_minor, cmd["amount_minor"])
    if refunded is None:
        return "amount_exceeds_captured", f"at most {p.captured_minor - p.refunded_minor} left to refund"
    status = "refunded" if refunded == p.captured_minor else "partially_refunded"
    return replace(p, refunded_minor=refunded, status=status)


def _expire(p: Payment, cmd: dict[str, Any], policy: Policy) -> Payment | tuple[str, str]:
    if p.status != "authorized":
        return "not_expirable", f"payment is {p.status}"
    if _ms(cmd["occurred_at"]) < p.created_at_ms + _window_ms(policy):
        return "authorization_window_open", "the authorization window has not passed yet"
    return replace(p, status="expired")


_FOLLOW_UPS = {"capture": _capture, "void": _void, "refund": _refund, "expire": _expire}


def _succeed(payment: Payment, cmd: dict[str, Any], fp: str) -> Decision:
    payment = replace(payment, version=payment.version + 1) if cmd["kind"] != "create" else payment
    outcome = _outcome(payment, cmd, "succeeded", None)
    return Decision(_remember(payment, cmd, fp, outcome), outcome, changed=True)


def _remember(payment: Payment, cmd: dict[str, Any], fp: str, outcome: dict[str, Any]) -> Payment:
    stored = {k: v for k, v in outcome.items() if k not in ("outcome_id", "command_id", "occurred_at")}
    idem = dict(payment.idempotency)
    idem[cmd["idempotency_key"]] = {"fingerprint": fp, "outcome": stored}
    return replace(payment, idempotency=idem)


def _reject(payment: Payment | None, cmd: dict[str, Any], reason: str, detail: str, *, keep: Payment | None) -> Decision:
    """A rejection of an illegal command: not stored under the key, nothing changes."""
    outcome = rejection(cmd, reason, detail, payment_id=cmd["payment_id"])
    if keep is not None:
        outcome |= _amounts(keep)
    return Decision(payment, outcome, changed=False)


def _replayed(stored: dict[str, Any], cmd: dict[str, Any]) -> dict[str, Any]:
    return stored | {
        "outcome_id": derive_outcome_id(cmd["command_id"]),
        "command_id": cmd["command_id"],
        "status": "replayed",
        "occurred_at": cmd["occurred_at"],
    }


def _outcome(p: Payment, cmd: dict[str, Any], status: str, reason: str | None) -> dict[str, Any]:
    return outcome(cmd, status, payment_id=p.payment_id, currency=p.currency, reason=reason, amounts=_amounts(p))


def _amounts(p: Payment) -> dict[str, Any]:
    return {
        "payment_status": p.status,
        "authorized_minor": p.authorized_minor,
        "captured_minor": p.captured_minor,
        "refunded_minor": p.refunded_minor,
        "card_bin": p.card_bin,
        "card_last4": p.card_last4,
    }


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _ms(ts: datetime) -> int:
    return (ts - _EPOCH) // timedelta(milliseconds=1)  # integer math: no float rounding


def _window_ms(policy: Policy) -> int:
    return int(policy.auth_window.total_seconds() * 1000)
