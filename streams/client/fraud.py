"""Records the fraud operator commands write, and the folds that read topics back. Pure:
`paystream fraud block|unblock|list|label|review` (streams/cli/fraud.py) do the Kafka IO.

  fraud-blocklist (compacted, key `kind:value`)  FraudBlockEntry   block / unblock / list
  fraud-labels    (key card token)               FraudLabel        label
  fraud-review    (key payment_id)               FraudReview       review (list)
  payment-commands-validated (key payment_id)    ValidatedCommand  review --resolve (kind review_resolve)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from models.blocklist import BlockEntry, Blocklist, BlocklistError
from schemas.ids import derive_command_id
from streams.settings import Settings
from streams.topics import prefixed

BLOCKLIST, LABELS, REVIEW = "fraud-blocklist", "fraud-labels", "fraud-review"
LABEL_SOURCES = ("chargeback", "fraud_report", "review", "matured")
MAX_OPERATOR_LEN = 64


def fraud_topic(settings: Settings, base: str) -> str:
    """A fraud topic's name under the settings' namespace."""
    return prefixed(settings, base)


def block_record(
    kind: str,
    value: str,
    action: str,
    reason: str,
    at: datetime,
    *,
    actor: str | None = None,
    expires_at: datetime | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """(key, FraudBlockEntry record); raises BlocklistError with a clear message."""
    entry = BlockEntry.make(kind, value, action, reason, at, actor, expires_at)
    return entry.key.encode(), entry.to_record()


def fold_blocklist(records: Iterable[Mapping[str, Any] | None]) -> tuple[Blocklist, int]:
    """The blocklist a topic holds (records in offset order; None: a tombstone or an
    undecodable record), and how many records could not be applied."""
    blocklist, bad = Blocklist(), 0
    for record in records:
        if record is None:
            continue
        try:
            blocklist.apply(BlockEntry.from_record(record))
        except BlocklistError:
            bad += 1
    return blocklist, bad


def label_record(
    payment_id: str,
    card_token: str,
    merchant_id: str,
    *,
    fraud: bool,
    source: str,
    tx_occurred_at: datetime,
    at: datetime,
    amount_minor: int | None = None,
    currency: str | None = None,
    reason_code: str | None = None,
) -> tuple[bytes, dict[str, Any]]:
    """(key = card token, FraudLabel record). The label id is derived from the payment,
    the source and the verdict, so labelling the same payment twice the same way is one
    label (the risk stage applies a label_id once)."""
    if source not in LABEL_SOURCES:
        raise ValueError(f"source {source!r} is not one of {LABEL_SOURCES}")
    if at < tx_occurred_at:
        raise ValueError("a label cannot be known before its transaction happened")
    label_id = derive_command_id(payment_id, "label", source, "fraud" if fraud else "genuine")
    return card_token.encode(), {
        "label_id": label_id,
        "payment_id": payment_id,
        "card_token": card_token,
        "merchant_id": merchant_id,
        "fraud": fraud,
        "source": source,
        "tx_occurred_at": tx_occurred_at,
        "occurred_at": at,
        "amount_minor": amount_minor,
        "currency": currency,
        "reason_code": reason_code,
    }


def open_reviews(
    reviews: Iterable[Mapping[str, Any]], resolved_payment_ids: Iterable[str] = ()
) -> list[Mapping[str, Any]]:
    """The review records not yet resolved, one per payment (the latest), oldest first."""
    done = set(resolved_payment_ids)
    latest: dict[str, Mapping[str, Any]] = {}
    for review in reviews:
        latest[review["payment_id"]] = review
    return sorted((r for pid, r in latest.items() if pid not in done), key=lambda r: r["occurred_at"])


def resolve_command(
    review: Mapping[str, Any], decision: str, at: datetime, operator: str
) -> tuple[bytes, dict[str, Any]]:
    """(key = payment_id, ValidatedCommand review_resolve) for the payments stage. One
    idempotency key per review: resolving it again is a replay, or a conflict if the
    decision changed."""
    if decision not in ("approve", "decline"):
        raise ValueError(f"decision must be approve or decline, not {decision!r}")
    if not operator or len(operator) > MAX_OPERATOR_LEN:
        raise ValueError(f"operator must be 1..{MAX_OPERATOR_LEN} characters")
    pid = review["payment_id"]
    return pid.encode(), {
        "command_id": derive_command_id(pid, "review_resolve", review["review_id"], decision),
        "kind": "review_resolve",
        "merchant_id": review["merchant_id"],
        "idempotency_key": f"review-{review['review_id']}",
        "payment_id": pid,
        "amount_minor": None,
        "currency": None,
        "capture_method": None,
        "card": None,
        "metadata": {"reviewer": operator},
        "occurred_at": at,
        "rejection_reason": None,
        "rejection_detail": None,
        "fraud_action": decision,
        "fraud_score_ppm": None,
        "fraud_reasons": [f"review_{decision}"],
        "fraud_model": None,
        "fraud_fallback": False,
    }
