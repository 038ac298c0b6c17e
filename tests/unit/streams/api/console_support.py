"""Shared by the console's route and browser tests: console.Sources over records held
in memory (what KafkaSources reads from the topics; tests/integration/api/
test_console_sources.py reads the real ones), and builders of real records (Avro
round trip, Ed25519 chains)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.codec import Codec
from streams.api.console import Notification
from streams.client.cases import fold_cases
from streams.domain.chain import ChainHead, Signer, link, sign_block
from streams.domain.monitoring import MonitoringError, decision_record
from tests.unit.connectors.clickhouse.support import DAY0, Traffic

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))  # a fixed test key
SIGNER = Signer("sig-v1", KEY)
EVENTS, REVIEWS, DELIVERIES, VALIDATED, CASES = (
    Codec("PaymentEvent"),
    Codec("FraudReview"),
    Codec("WebhookDelivery"),
    Codec("ValidatedCommand"),
    Codec("MonitoringCase"),
)
CASE_AT = datetime(2026, 12, 6, 12, tzinfo=UTC)


def with_wallets(t: Traffic) -> Traffic:
    """Every tenth payment paid by wallet (the generator's are all cards)."""
    pids = sorted({e["payment_id"] for e in t.events})
    wallets = set(pids[::10])
    return Traffic([e | {"method": "wallet"} if e["payment_id"] in wallets else e for e in t.events], t.entries)


def review(pid: str, merchant: str, amount: int = 4_200) -> dict[str, Any]:
    r = {
        "review_id": f"rev_{pid}",
        "payment_id": pid,
        "merchant_id": merchant,
        "command_id": f"cmd_{pid}",
        "card_token": "tok_abc",
        "card_bin": "424242",
        "card_last4": "4242",
        "amount_minor": amount,
        "currency": "EUR",
        "score_ppm": 612_000,
        "reasons": ["velocity_card_1h"],
        "occurred_at": DAY0 + timedelta(hours=3),
    }
    return REVIEWS.decode(REVIEWS.encode(r))


def delivery(nid: str, merchant: str, attempt: int, status: str, pid: str = "pay_41_1") -> dict[str, Any]:
    d = {
        "delivery_id": f"wda_{nid}_{attempt}",
        "notification_id": nid,
        "merchant_id": merchant,
        "endpoint_id": "whe_1",
        "url": "https://example.test/hook",
        "payment_id": pid,
        "event_type": "captured",
        "attempt": attempt,
        "attempted_at": DAY0 + timedelta(minutes=attempt),
        "status": status,
        "http_status": 500 if status != "delivered" else 200,
        "error": None,
        "next_attempt_at": None,
        "key_id": "whk-v1",
    }
    return DELIVERIES.decode(DELIVERIES.encode(d))


@dataclass
class MemorySources:
    """console.Sources over records held here (what KafkaSources reads from the topics)."""

    windows: dict[str, tuple[int, list[dict[str, Any]]]] = field(default_factory=dict)
    review_records: list[dict[str, Any]] = field(default_factory=list)
    delivery_records: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[tuple[bytes, dict[str, Any]]] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)

    def public_keys(self) -> dict[str, Any]:
        return {SIGNER.key_id: KEY.public_key()}

    def chain_window(self, payment_id: str, since: datetime, event_ids: set[str]) -> tuple[int, list[dict[str, Any]]]:
        return self.windows[payment_id]

    def reviews(self) -> list[dict[str, Any]]:
        return self.review_records

    def resolve(self, key: bytes, command: dict[str, Any]) -> None:
        VALIDATED.encode(command, check=True)  # what KafkaSources publishes must encode
        self.resolved.append((key, command))

    def deliveries(self) -> list[dict[str, Any]]:
        return self.delivery_records

    def retry(self, n: Notification, now: datetime) -> dict[str, Any]:
        self.retried.append(n.last["notification_id"])
        record = dict(n.last) | {
            "attempt": n.last["attempt"] + 1,
            "status": "delivered",
            "http_status": 200,
            "attempted_at": now,
        }
        self.delivery_records.append(record)
        return record


def chained(events: list[dict[str, Any]], sign_last: bool) -> list[dict[str, Any]]:
    """The events linked on partition 0 in one block, signed on its last (or not yet)."""
    head, out = ChainHead.genesis(0), []
    for e in events:
        linked, head = link(e, head, SIGNER.key_id)
        out.append(linked)
    if sign_last:
        out[-1] = sign_block(out[-1], SIGNER)
    return [EVENTS.decode(EVENTS.encode(e, check=True)) for e in out]


def case(case_id: str = "c1", merchant: str = "m_1", evidence: int = 0, rule: str = "structuring") -> dict[str, Any]:
    """A MonitoringCase (Avro round trip) of a card subject with `evidence` captures just under USD 10,000."""
    c = {
        "case_id": case_id,
        "rule": rule,
        "subject_kind": "card",
        "subject_id": f"tok_{case_id}",
        "merchant_id": merchant,
        "currency": "USD",
        "window_start": CASE_AT - timedelta(days=2),
        "window_end": CASE_AT,
        "opened_at": CASE_AT,
        "evidence": [
            {
                "payment_id": f"pay_{case_id}_{i}",
                "merchant_id": merchant,
                "kind": "capture",
                "currency": "USD",
                "amount_minor": 950_000 + i,
                "occurred_at": CASE_AT - timedelta(hours=10 - i),
                "card_token": f"tok_{case_id}",
            }
            for i in range(evidence)
        ],
        "measures": {"payments": evidence or 3, "threshold_minor": 1_000_000},
        "summary": f"{evidence or 3} captures just under the USD 10,000.00 reporting threshold",
    }
    return CASES.decode(CASES.encode(c, check=True))


class MemoryQueue:
    """console.Cases over records held here (CaseQueue reads them from the topics), with the real folds."""

    def __init__(self, records: list[dict[str, Any]] | None = None) -> None:
        self.records = [case()] if records is None else records
        self.decisions: list[dict[str, Any]] = []

    def cases(self) -> list[dict[str, Any]]:
        return fold_cases(self.records, self.decisions)

    def decide(self, case_id: str, decision: str, operator: str, reason: str, at: datetime) -> dict[str, Any]:
        found = next((c for c in self.cases() if c["case_id"] == case_id), None)
        if found is None:
            raise MonitoringError("case_not_found", case_id)
        record = decision_record(case_id, found["status"], decision, operator, reason, at)
        self.decisions.append(record)
        return record
