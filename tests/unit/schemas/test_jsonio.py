"""JSON <-> Avro records for the producer and reader CLIs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from schemas.codec import Codec, EncodeError
from schemas.ids import derive_payment_id
from schemas.jsonio import JsonCommandError, command_from_json, parse_timestamp, record_to_json

COMMAND = Codec("PaymentCommand")


def create_json(**overrides: Any) -> dict[str, Any]:
    """A create as a merchant would write it: optional fields left out."""
    return {
        "command_id": "cmd_1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1",
        "amount_minor": 1000,
        "currency": "USD",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030},
        "occurred_at": "2026-11-25T10:00:00Z",
    } | overrides


def test_create_gets_defaults_and_a_derived_payment_id() -> None:
    record = command_from_json(create_json())

    assert record["payment_id"] == derive_payment_id("m_acme", "order-1")
    assert record["capture_method"] is None
    assert record["metadata"] == {}
    assert record["dispute"] is None
    assert record["card"] == {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": None}
    assert record["occurred_at"] == datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
    assert COMMAND.decode(COMMAND.encode(record, check=True)) == record


def test_given_values_are_kept() -> None:
    record = command_from_json(
        create_json(payment_id="pay_given", capture_method="manual", metadata={"order": "1"}, card=None)
    )
    assert record["payment_id"] == "pay_given"
    assert record["capture_method"] == "manual"
    assert record["metadata"] == {"order": "1"}
    assert record["card"] is None


def test_follow_up_payment_id_is_not_derived() -> None:
    record = command_from_json(
        {
            "command_id": "c2",
            "kind": "capture",
            "merchant_id": "m_acme",
            "idempotency_key": "cap-1",
            "occurred_at": "2026-11-25T10:00:00Z",
        }
    )
    assert record["payment_id"] is None
    assert record["amount_minor"] is None and record["currency"] is None and record["card"] is None


def test_create_without_merchant_is_left_to_the_schema_check() -> None:
    obj = create_json()
    del obj["merchant_id"]
    record = command_from_json(obj)
    assert record["payment_id"] is None
    with pytest.raises(EncodeError, match="merchant_id"):
        COMMAND.encode(record, check=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25T10:00:00+00:00", datetime(2026, 11, 25, 10, 0, tzinfo=UTC)),
        ("2026-11-25T12:30:00.250+02:00", datetime(2026, 11, 25, 10, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_timestamps_are_converted_to_utc(value: str, expected: datetime) -> None:
    ts = parse_timestamp(value)
    assert ts == expected
    assert ts.utcoffset() is not None and ts.utcoffset().total_seconds() == 0


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("2026-11-25T10:00:00", "needs a timezone"),
        ("2026-11-25", "needs a timezone"),
        ("yesterday", "is not ISO 8601"),
        (1732540000000, "must be an ISO 8601 string"),
        (None, "must be an ISO 8601 string"),
    ],
)
def test_bad_timestamps_are_refused(value: Any, message: str) -> None:
    with pytest.raises(JsonCommandError, match=message):
        command_from_json(create_json(occurred_at=value))


def test_missing_timestamp_is_refused() -> None:
    obj = create_json()
    del obj["occurred_at"]
    with pytest.raises(JsonCommandError, match="occurred_at must be an ISO 8601 string"):
        command_from_json(obj)


@pytest.mark.parametrize("obj", [[], "create", 42, None])
def test_a_command_must_be_an_object(obj: Any) -> None:
    with pytest.raises(JsonCommandError, match="must be a JSON object"):
        command_from_json(obj)


def test_record_to_json_renders_timestamps_and_bytes() -> None:
    record = {"at": datetime(2026, 11, 25, 10, 0, tzinfo=UTC), "raw": b"\xc3\x01", "n": 5, "s": "é"}
    text = record_to_json(record)
    assert json.loads(text) == {"at": "2026-11-25T10:00:00Z", "raw": "c301", "n": 5, "s": "é"}
    assert "é" in text  # not escaped


def test_record_to_json_round_trips_a_command() -> None:
    record = command_from_json(create_json())
    assert command_from_json(json.loads(record_to_json(record))) == record


def test_record_to_json_refuses_unknown_types() -> None:
    with pytest.raises(TypeError, match="set"):
        record_to_json({"x": {1, 2}})


def test_a_dispute_gets_its_defaults_and_a_parsed_due_date() -> None:
    record = command_from_json(
        create_json(
            kind="dispute_open",
            card=None,
            payment_id="pay_given",
            dispute={"reason": "fraudulent", "evidence_due_at": "2026-12-16T10:00:00Z"},
        )
    )
    assert record["dispute"] == {
        "reason": "fraudulent",
        "evidence_due_at": datetime(2026, 12, 16, 10, 0, tzinfo=UTC),
        "evidence": None,
        "outcome": None,
    }
    assert COMMAND.decode(COMMAND.encode(record, check=True)) == record


def test_a_confirm_gets_its_3ds_defaults() -> None:
    record = command_from_json(
        create_json(kind="confirm", card=None, payment_id="pay_given", three_ds={"trans_status": "Y"})
    )
    assert record["three_ds"] == {"trans_status": "Y", "eci": None, "ds_trans_id": None, "authentication_value": None}
    assert COMMAND.decode(COMMAND.encode(record, check=True)) == record
