"""Stripe-like error bodies, and how a pipeline outcome maps to an HTTP answer.

Pure: no FastAPI here, so the mapping is tested on plain values.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schemas.cards import mask_pans

MAX_MESSAGE_CHARS = 500


@dataclass(eq=False)  # not frozen: raising sets __traceback__
class ApiError(Exception):
    status_code: int
    # invalid_request_error | card_error | idempotency_error | authentication_error | rate_limit_error | api_error
    type: str
    code: str
    message: str
    param: str | None = None
    payment_id: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    # Stripe's: why the issuer declined (card errors), and the PaymentIntent it concerns.
    decline_code: str | None = None
    payment_intent: dict[str, Any] | None = None

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {
            "type": self.type,
            "code": self.code,
            "message": mask_pans(self.message)[0][:MAX_MESSAGE_CHARS],
            "param": self.param,
        }
        if self.payment_id is not None:
            error["payment_id"] = self.payment_id
        if self.decline_code is not None:
            error["decline_code"] = self.decline_code
        if self.payment_intent is not None:
            error["payment_intent"] = self.payment_intent
        return {"error": error}


# Reason codes of rejection outcomes (docs/payments.md) -> (HTTP status, error type, param).
_INVALID = (400, "invalid_request_error")
_STATE = (409, "invalid_request_error")
_CARD = (402, "card_error")
_REASONS: dict[str, tuple[int, str, str | None]] = {
    "invalid_merchant_id": (*_INVALID, None),
    "invalid_idempotency_key": (*_INVALID, "Idempotency-Key"),
    "invalid_metadata": (*_INVALID, "metadata"),
    "pan_in_metadata": (*_INVALID, "metadata"),
    "pan_in_field": (*_INVALID, None),
    "missing_amount": (*_INVALID, "amount_minor"),
    "missing_currency": (*_INVALID, "currency"),
    "missing_payment_method": (*_INVALID, "card"),
    # A method and its instrument (streams/domain/methods.py), and the merchant's registry.
    "currency_not_supported": (*_INVALID, "currency"),
    "currency_not_allowed": (*_INVALID, "currency"),
    "method_not_allowed": (*_INVALID, "payment_method"),
    "capture_method_not_supported": (*_INVALID, "capture_method"),
    "invalid_wallet": (*_INVALID, "payment_method"),
    "invalid_bank_account": (*_INVALID, "payment_method"),
    "invalid_bnpl": (*_INVALID, "payment_method"),
    # The registry's refusals of a create (streams/domain/merchants.py `admit`): not declines.
    "merchant_unknown": (*_INVALID, None),
    "merchant_not_verified": (*_INVALID, None),
    # A split's accounts (streams/domain/splits.py).
    "split_account_not_connected": (*_INVALID, "splits"),
    "invalid_splits": (*_INVALID, "splits"),
    "too_many_splits": (*_INVALID, "splits"),
    "splits_mismatch": (*_INVALID, "platform_fee_minor"),
    "already_submitted": (*_STATE, None),
    "not_settled": (*_STATE, None),
    "invalid_amount": (*_INVALID, "amount_minor"),
    "amount_too_large": (*_INVALID, "amount_minor"),
    "invalid_currency": (*_INVALID, "currency"),
    "currency_mismatch": (*_INVALID, "currency"),
    "amount_exceeds_authorized": (*_INVALID, "amount_minor"),
    "amount_exceeds_captured": (*_INVALID, "amount_minor"),
    "too_many_operations": (*_INVALID, None),
    "invalid_card_number": (*_CARD, "card.number"),
    "invalid_expiry": (*_CARD, "card.exp_month"),
    "expired_card": (*_CARD, "card.exp_year"),
    "payment_not_found": (404, "invalid_request_error", None),
    "invalid_payment_id": (404, "invalid_request_error", None),
    "idempotency_conflict": (409, "idempotency_error", None),
    "already_captured": (*_STATE, None),
    "already_voided": (*_STATE, None),
    "already_expired": (*_STATE, None),
    "already_refunded": (*_STATE, None),
    "not_captured": (*_STATE, None),
    "not_expirable": (*_STATE, None),
    "authorization_window_open": (*_STATE, None),
    "authorization_expired": (*_STATE, None),
    "payment_declined": (*_STATE, None),
    "payment_failed": (*_STATE, None),
    "payment_pending": (*_STATE, None),
    # A confirm's authentication value that does not vouch for the payment (streams/domain/authentication.py).
    **{
        f"cavv_{why}": (*_CARD, "three_ds.authentication_value")
        for why in (
            "malformed",
            "unknown_key",
            "invalid",
            "replayed",
            "merchant_mismatch",
            "amount_mismatch",
            "mismatch",
            "expired",
            "not_yet_valid",
        )
    },
}
# Codes that mean the API built a bad command: our bug, not the merchant's.
_OURS = frozenset(
    {
        "payment_id_mismatch",
        "key_mismatch",
        "wrong_partition",
        "unexpected_payment_method",
        "unexpected_capture_method",
        "missing_payment_id",
        "ambiguous_payment_method",
        "invalid_card_token",
        "invalid_command_id",
        "invalid_merchant_initiated",
    }
)


def rejection_error(outcome: dict[str, Any]) -> ApiError:
    """The HTTP error answering a rejected (or replayed rejected) outcome. A reason
    not listed is a decline by the provider or the fraud check on a create (402),
    else a refused request (400)."""
    reason = outcome.get("reason_code") or "rejected"
    detail = outcome.get("reason_detail") or reason.replace("_", " ")
    if reason == "payment_not_found" or reason == "invalid_payment_id":
        # The same answer for unknown and another merchant's: nothing leaks.
        return not_found()
    if reason in _OURS:
        return ApiError(500, "api_error", "internal_error", "the gateway built an invalid command")
    if reason in _REASONS:
        status, type_, param = _REASONS[reason]
    elif outcome.get("kind") == "create" or reason in ("provider_declined", "capture_failed", "fraud_suspected"):
        status, type_, param = 402, "card_error", None
    else:
        status, type_, param = 400, "invalid_request_error", None
    return ApiError(status, type_, reason, detail, param, payment_id=outcome.get("payment_id"))


def not_found() -> ApiError:
    return ApiError(404, "invalid_request_error", "resource_missing", "no such payment")


def payment_body(view: dict[str, Any]) -> dict[str, Any]:
    """The payment object of a response, from an outcome or a read-model row."""
    body = {
        "id": view["payment_id"],
        "object": "payment",
        "merchant_id": view["merchant_id"],
        "status": view["payment_status"],
        "currency": view["currency"],
        "authorized_minor": view["authorized_minor"],
        "captured_minor": view["captured_minor"],
        "refunded_minor": view["refunded_minor"],
        "card": {"bin": view["card_bin"], "last4": view["card_last4"]} if view.get("card_last4") else None,
    }
    if view["payment_status"] == "requires_action":  # only then: other bodies stay as they were
        body["next_action"] = three_ds_next_action(view["payment_id"])
    return body


def three_ds_next_action(payment_id: str) -> dict[str, Any]:
    """Where a payment in requires_action goes next: authenticate the cardholder at the
    simulated issuer (frictionless, or a challenge), then confirm with the result."""
    return {
        "type": "three_d_secure",
        "three_d_secure": {
            "authenticate_url": f"/v1/payments/{payment_id}/three_ds/authenticate",
            "confirm_url": f"/v1/payments/{payment_id}/confirm",
        },
    }


def outcome_response(outcome: dict[str, Any]) -> tuple[int, dict[str, Any], bool]:
    """(status code, body, replayed) answering a committed outcome."""
    replayed = outcome["status"] == "replayed"
    if outcome["status"] == "rejected" or (replayed and outcome.get("reason_code")):
        e = rejection_error(outcome)
        return e.status_code, e.body(), replayed
    return 200, payment_body(outcome), replayed
