"""JSON <-> Avro records, for the producer and reader CLIs.

Timestamps are ISO 8601 strings in JSON (timezone required) and aware UTC
datetimes in records; bytes are shown as hex. Nothing else is converted.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from schemas.ids import derive_payment_id

_COMMAND_DEFAULTS: dict[str, Any] = {
    "payment_id": None,
    "amount_minor": None,
    "currency": None,
    "capture_method": None,
    "card": None,
    "card_token": None,
    "sealed_card": None,
    "dispute": None,
    "three_ds": None,
    "splits": None,
    "platform_fee_minor": None,
    "method": None,
    "wallet": None,
    "bank_account": None,
    "bnpl": None,
    "bank_notice": None,
    "crypto": None,
    "merchant_initiated": False,
}
_DISPUTE_DEFAULTS: dict[str, Any] = {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": None}
_THREE_DS_DEFAULTS: dict[str, Any] = {"eci": None, "ds_trans_id": None, "authentication_value": None}


class JsonCommandError(ValueError):
    pass


def parse_timestamp(value: Any, name: str = "occurred_at") -> datetime:
    if not isinstance(value, str):
        raise JsonCommandError(f"{name} must be an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise JsonCommandError(f"{name} {value!r} is not ISO 8601") from None
    if ts.tzinfo is None:
        raise JsonCommandError(f"{name} needs a timezone (e.g. 2026-11-25T10:00:00Z)")
    return ts.astimezone(UTC)


def command_from_json(obj: Any) -> dict[str, Any]:
    """A PaymentCommand record from a decoded JSON object; fills optional fields."""
    if not isinstance(obj, dict):
        raise JsonCommandError("a command must be a JSON object")
    record = _COMMAND_DEFAULTS | {"metadata": {}} | obj
    card = record.get("card")
    if isinstance(card, dict):
        record["card"] = {"cvc": None} | card
    record["occurred_at"] = parse_timestamp(record.get("occurred_at"))
    dispute = record.get("dispute")
    if isinstance(dispute, dict):
        record["dispute"] = _DISPUTE_DEFAULTS | dispute
        if dispute.get("evidence_due_at") is not None:
            record["dispute"]["evidence_due_at"] = parse_timestamp(
                dispute["evidence_due_at"], "dispute.evidence_due_at"
            )
    three_ds = record.get("three_ds")
    if isinstance(three_ds, dict):
        record["three_ds"] = _THREE_DS_DEFAULTS | three_ds
    if record.get("kind") == "create" and record["payment_id"] is None:
        try:
            record["payment_id"] = derive_payment_id(record["merchant_id"], record["idempotency_key"])
        except (KeyError, TypeError, UnicodeEncodeError):
            pass  # the schema check names the bad or missing field
    return record


def record_to_json(record: dict[str, Any]) -> str:
    return json.dumps(record, default=_default, sort_keys=False, ensure_ascii=False)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
