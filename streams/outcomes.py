"""Builders for PaymentOutcome records: the one answer each command gets."""

from __future__ import annotations

from typing import Any

from schemas.cards import mask_pans
from schemas.ids import derive_outcome_id


def rejection(cmd: dict[str, Any], reason: str, detail: str, *, payment_id: str | None) -> dict[str, Any]:
    """A rejection for a command that changed nothing. `detail` is PAN-masked."""
    return {
        "outcome_id": derive_outcome_id(cmd["command_id"]),
        "command_id": cmd["command_id"],
        "kind": cmd["kind"],
        "merchant_id": cmd["merchant_id"],
        "idempotency_key": cmd["idempotency_key"],
        "payment_id": payment_id,
        "status": "rejected",
        "reason_code": reason,
        "reason_detail": mask_pans(detail)[0][:500],
        "payment_status": None,
        "amount_minor": cmd["amount_minor"],
        "currency": cmd["currency"],
        "authorized_minor": 0,
        "captured_minor": 0,
        "refunded_minor": 0,
        "card_bin": None,
        "card_last4": None,
        "occurred_at": cmd["occurred_at"],
    }
