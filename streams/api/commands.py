"""The commands the API's routes publish (both /v1/payments and Stripe's), before
the write path adds command_id and occurred_at and seals the card. Pure."""

from __future__ import annotations

from typing import Any


def create_command(
    merchant: str,
    key: str,
    payment_id: str,
    amount_minor: int,
    currency: str,
    capture_method: str,
    card: dict[str, Any] | None,
    metadata: dict[str, str],
    method: str | None = None,
    **instrument: Any,
) -> dict[str, Any]:
    """A create; `method` (None: card) and its instrument (`card_token`, `wallet`,
    `bank_account` or `bnpl`, PaymentCommand v6) when it does not pay by `card`."""
    assert set(instrument) <= {"card_token", "wallet", "bank_account", "bnpl"}, set(instrument)
    return {
        "kind": "create",
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": payment_id,
        "amount_minor": amount_minor,
        "currency": currency,
        "capture_method": capture_method,
        "card": card,
        "metadata": metadata,
        "card_token": None,
        "method": None if method == "card" else method,
    } | instrument


def dispute_evidence_command(merchant: str, key: str, payment_id: str, evidence: str) -> dict[str, Any]:
    """The merchant's answer to the payment's open dispute."""
    dispute = {"reason": None, "evidence_due_at": None, "evidence": evidence, "outcome": None}
    return follow_up_command("dispute_evidence", merchant, key, payment_id, None) | {"dispute": dispute}


def dispute_accept_command(merchant: str, key: str, payment_id: str) -> dict[str, Any]:
    """The merchant accepts the payment's open dispute: it closes lost, as the network
    would close it once the merchant stops contesting (Stripe's dispute close)."""
    dispute = {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": "lost"}
    return follow_up_command("dispute_close", merchant, key, payment_id, None) | {"dispute": dispute}


def follow_up_command(kind: str, merchant: str, key: str, payment_id: str, amount_minor: int | None) -> dict[str, Any]:
    """capture, void, refund, confirm, dispute_evidence: a command on an existing payment."""
    return {
        "kind": kind,
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": payment_id,
        "amount_minor": amount_minor,
        "currency": None,
        "capture_method": None,
        "card": None,
        "metadata": {},
        "card_token": None,
    }
