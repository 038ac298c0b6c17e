"""Builders for PaymentOutcome records: the one answer each command gets."""

from __future__ import annotations

from typing import Any

from schemas.cards import mask_pans
from schemas.ids import derive_outcome_id

# The amounts of an outcome that concerns no payment (a refused command).
NO_PAYMENT = {
    "payment_status": None,
    "authorized_minor": 0,
    "captured_minor": 0,
    "refunded_minor": 0,
    "card_bin": None,
    "card_last4": None,
}


def outcome(
    cmd: dict[str, Any],
    status: str,
    *,
    payment_id: str | None,
    currency: str | None,
    reason: str | None = None,
    detail: str | None = None,
    amounts: dict[str, Any] = NO_PAYMENT,
    evidence: str | None = None,
) -> dict[str, Any]:
    """The PaymentOutcome record answering `cmd`; its id is derived from the command's.
    `evidence`: the text an accepted dispute_evidence submitted (PaymentOutcome v2)."""
    return {
        "outcome_id": derive_outcome_id(cmd["command_id"]),
        "command_id": cmd["command_id"],
        "kind": cmd["kind"],
        "merchant_id": cmd["merchant_id"],
        "idempotency_key": cmd["idempotency_key"],
        "payment_id": payment_id,
        "status": status,
        "reason_code": reason,
        "reason_detail": detail,
        "amount_minor": cmd["amount_minor"],
        "currency": currency,
        **amounts,
        "occurred_at": cmd["occurred_at"],
        "dispute_evidence": evidence,
    }


def rejection(cmd: dict[str, Any], reason: str, detail: str, *, payment_id: str | None) -> dict[str, Any]:
    """A rejection for a command that changed nothing. `detail` is PAN-masked."""
    return outcome(
        cmd,
        "rejected",
        payment_id=payment_id,
        currency=cmd["currency"],
        reason=reason,
        detail=mask_pans(detail)[0][:500],
    )
