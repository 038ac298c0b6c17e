"""Builders shared by the payments tests: ValidatedCommand records as ingest forwards them."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from connectors.providers.simulated import APPROVED, Call, ProviderResult
from schemas.ids import derive_payment_id
from streams.domain.payments import Saga

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
MERCHANT = "m_acme"


class Commands:
    """`cmds.create(...)`, `cmds.capture(pid, key, ...)` and so on. The command_id
    defaults to one per idempotency key; pass another to model a retry."""

    t0 = T0
    merchant = MERCHANT

    def card(self, merchant: str = MERCHANT) -> dict[str, Any]:
        return {
            "token": f"tok_{merchant}_4242",
            "bin": "424242",
            "last4": "4242",
            "brand": "visa",
            "exp_month": 12,
            "exp_year": 2030,
        }

    def create(
        self,
        key: str = "order-1",
        *,
        merchant: str = MERCHANT,
        amount: int = 10_000,
        currency: str = "USD",
        capture_method: str = "automatic",
        at: datetime = T0,
        command_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return self._command(
            "create",
            key,
            merchant,
            derive_payment_id(merchant, key),
            amount,
            currency,
            at,
            command_id,
            metadata,
            capture_method=capture_method,
            card=self.card(merchant),
        )

    def follow_up(
        self,
        kind: str,
        payment_id: str,
        key: str,
        *,
        merchant: str = MERCHANT,
        amount: int | None = None,
        currency: str | None = None,
        at: datetime = T0,
        command_id: str | None = None,
        metadata: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        return self._command(kind, key, merchant, payment_id, amount, currency, at, command_id, metadata)

    def capture(self, payment_id: str, key: str, **kw: Any) -> dict[str, Any]:
        return self.follow_up("capture", payment_id, key, **kw)

    def void(self, payment_id: str, key: str, **kw: Any) -> dict[str, Any]:
        return self.follow_up("void", payment_id, key, **kw)

    def refund(self, payment_id: str, key: str, **kw: Any) -> dict[str, Any]:
        return self.follow_up("refund", payment_id, key, **kw)

    def expire(self, payment_id: str, key: str, **kw: Any) -> dict[str, Any]:
        return self.follow_up("expire", payment_id, key, **kw)

    def dispute(
        self,
        kind: str,
        payment_id: str,
        key: str,
        *,
        reason: str | None = None,
        due: datetime | None = None,
        evidence: str | None = None,
        outcome: str | None = None,
        **kw: Any,
    ) -> dict[str, Any]:
        """A dispute_open/evidence/close as ingest forwards it (the due date filled in)."""
        cmd = self.follow_up(kind, payment_id, key, **kw)
        if kind == "dispute_open":
            due = due or cmd["occurred_at"] + timedelta(days=21)
        return cmd | {"dispute": {"reason": reason, "evidence_due_at": due, "evidence": evidence, "outcome": outcome}}

    @staticmethod
    def _command(
        kind, key, merchant, payment_id, amount, currency, at, command_id, metadata, *, capture_method=None, card=None
    ) -> dict[str, Any]:  # type: ignore[no-untyped-def]
        return {
            "command_id": command_id or f"cmd-{merchant}-{key}",
            "kind": kind,
            "merchant_id": merchant,
            "idempotency_key": key,
            "payment_id": payment_id,
            "amount_minor": amount,
            "currency": currency,
            "capture_method": capture_method,
            "card": card,
            "metadata": metadata or {},
            "dispute": None,
            "occurred_at": at,
            "rejection_reason": None,
            "rejection_detail": None,
        }


@pytest.fixture(scope="session")
def cmds() -> Commands:
    return Commands()


@dataclass
class ScriptedProvider:
    """A provider whose answers the test sets; `journal` counts calls per (operation, key)."""

    name: str = "scripted"
    authorize_result: ProviderResult = APPROVED
    status_results: list[ProviderResult] = field(default_factory=lambda: [APPROVED])
    capture_result: ProviderResult = APPROVED
    journal: Counter[tuple[str, str]] = field(default_factory=Counter)

    def authorize(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, currency: str, call: Call | None = None
    ) -> ProviderResult:
        self.journal["authorize", key] += 1
        return self.authorize_result

    def status(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult:
        self.journal["status", key] += 1
        return self.status_results[min(self.journal["status", key], len(self.status_results)) - 1]

    def capture(
        self, key: str, card_bin: str, card_last4: str, amount_minor: int, call: Call | None = None
    ) -> ProviderResult:
        self.journal["capture", key] += 1
        return self.capture_result

    def void(self, key: str, call: Call | None = None) -> ProviderResult:
        self.journal["void", key] += 1
        return APPROVED

    def refund(self, key: str, amount_minor: int, call: Call | None = None) -> ProviderResult:
        self.journal["refund", key] += 1
        return APPROVED

    def calls(self, operation: str) -> int:
        return sum(n for (op, _), n in self.journal.items() if op == operation)


def saga_of(provider: ScriptedProvider | None = None, **kw: Any) -> Saga:
    return Saga.single(provider or ScriptedProvider(), **kw)
