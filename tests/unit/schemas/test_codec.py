"""Avro single-object encoding: round trips, the header, the fingerprint, and that
decoding hostile bytes only ever fails with a DecodeError carrying a stable reason."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from importlib import resources

import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import (
    MAX_MESSAGE_BYTES,
    Codec,
    DecodeError,
    EncodeError,
    crc64_avro_fingerprint,
    schema_names,
)

SCHEMA_NAMES = schema_names()

AT = datetime(2026, 11, 25, 10, 0, 0, 123000, tzinfo=UTC)  # millisecond precision
PAYMENT_ID = "pay_6b1f0c2d9e8a4b7c8d9e0f1a2b3c4d5e"

RECORDS = {
    "PaymentCommand": {
        "command_id": "cmd_01",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1001",
        "payment_id": PAYMENT_ID,
        "amount_minor": 12_345,
        "currency": "USD",
        "capture_method": "manual",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        "metadata": {"order": "1001", "channel": "web"},
        "dispute": None,
        "occurred_at": AT,
        "card_token": None,
        "three_ds": None,
        "sealed_card": None,
        "splits": None,
        "platform_fee_minor": None,
        "method": None,
        "wallet": None,
        "bank_account": None,
        "bnpl": None,
        "bank_notice": None,
        "crypto": None,
        "merchant_initiated": False,
    },
    "ValidatedCommand": {
        "command_id": "cmd_01",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1001",
        "payment_id": PAYMENT_ID,
        "amount_minor": 12_345,
        "currency": "USD",
        "capture_method": "automatic",
        "card": {
            "token": "tok_abcdefghijklmnopqrstuvwxyz234567",
            "bin": "424242",
            "last4": "4242",
            "brand": "visa",
            "exp_month": 12,
            "exp_year": 2030,
        },
        "metadata": {"order": "1001"},
        "dispute": None,
        "occurred_at": AT,
        "rejection_reason": None,
        "rejection_detail": None,
        "fraud_action": "review",
        "fraud_score_ppm": 731_250,
        "fraud_reasons": ["velocity_card_1h", "score_review"],
        "fraud_model": "hgb-21686780adc8",
        "fraud_fallback": False,
        "three_ds": None,
        "merchant_features": {
            "cnt_1h": 3,
            "cnt_1d": 40,
            "cnt_7d": 210,
            "cnt_30d": 905,
            "labeled_7d": 12,
            "labeled_30d": 51,
            "fraud_7d": 1,
            "fraud_30d": 2,
        },
        "splits": None,
        "platform_fee_minor": None,
        "method": None,
        "wallet": None,
        "bank_account": None,
        "bnpl_provider": None,
        "return_code": None,
        "crypto": None,
        "merchant_initiated": False,
    },
    "FraudReview": {
        "review_id": "cmd_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "payment_id": PAYMENT_ID,
        "merchant_id": "m_acme",
        "command_id": "cmd_01",
        "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "card_bin": "424242",
        "card_last4": "4242",
        "amount_minor": 600_000,
        "currency": "USD",
        "score_ppm": 512_000,
        "reasons": ["amount_over_review_limit", "score_requires_action"],
        "model_version": "hgb-21686780adc8",
        "rules_version": "v1",
        "fallback": False,
        "features": {"amount_major": 6000.0, "card_cnt_1h": 0.0},
        "occurred_at": AT,
        "sanctions": None,
    },
    "PaymentOutcome": {
        "outcome_id": "out_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "command_id": "cmd_02",
        "kind": "refund",
        "merchant_id": "m_acme",
        "idempotency_key": "refund-1",
        "payment_id": PAYMENT_ID,
        "status": "succeeded",
        "reason_code": None,
        "reason_detail": None,
        "payment_status": "partially_refunded",
        "amount_minor": 2_000,
        "currency": "USD",
        "authorized_minor": 12_345,
        "captured_minor": 12_345,
        "refunded_minor": 2_000,
        "card_bin": "424242",
        "card_last4": "4242",
        "occurred_at": AT,
        "dispute_evidence": None,
    },
    "DeadLetter": {
        "dlq_id": "dlq_00112233445566778899aabbccddeeff",
        "stage": "ingest",
        "reason": "unknown_fingerprint",
        "detail": "schema fingerprint 0000000000000000 is not registered",
        "source_topic": "payment-commands",
        "source_partition": 3,
        "source_offset": 2**40,
        "source_timestamp": AT,
        "raw_key": PAYMENT_ID.encode(),
        "raw_value": b"\xc3\x01" + bytes(8) + b"\x00\xff garbage",
        "pans_masked": 0,
    },
    "PaymentEvent": {
        "event_id": "evt_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "type": "captured",
        "payment_id": PAYMENT_ID,
        "merchant_id": "m_acme",
        "command_id": "cmd_03",
        "currency": "KWD",
        "amount_minor": 12_345,
        "fee_minor": 371,
        "payment_status": "captured",
        "authorized_minor": 12_345,
        "captured_minor": 12_345,
        "refunded_minor": 0,
        "version": 2,
        "provider": "simcard",
        "provider_ref": "prv_00112233445566778899aabbccddeeff",
        "reason_code": None,
        "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "card_bin": "424242",
        "card_last4": "4242",
        "three_ds_status": None,
        "liability_shift": None,
        "occurred_at": AT,
        "chain_seq": 7,
        "prev_hash": bytes(range(32)),
        "key_id": "sig-v1",
        "signature": bytes(64),
        "splits": None,
        "platform_fee_minor": None,
        "method": None,
        "crypto": None,
        "attempts": None,
        "dispute_event_id": None,
    },
    "LedgerEntry": {
        "entry_id": "je_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "event_id": "evt_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "event_type": "settled",
        "payment_id": PAYMENT_ID,
        "merchant_id": "m_acme",
        "shard": 5,
        "occurred_at": AT,
        "lines": [
            {"account": "house:settlement:5", "currency": "EUR", "debit_minor": 12_345, "credit_minor": 0},
            {"account": "house:clearing:5", "currency": "EUR", "debit_minor": 0, "credit_minor": 12_345},
            {"account": "merchant:m_acme:pending", "currency": "EUR", "debit_minor": 12_345, "credit_minor": 0},
            {"account": "house:fx:5", "currency": "EUR", "debit_minor": 0, "credit_minor": 12_345},
            {"account": "house:fx:5", "currency": "JPY", "debit_minor": 20_121, "credit_minor": 0},
            {"account": "merchant:m_acme:available", "currency": "JPY", "debit_minor": 0, "credit_minor": 20_121},
        ],
        "fx": {
            "base_currency": "EUR",
            "quote_currency": "JPY",
            "rate": "162.9871",
            "rate_as_of": AT,
            "rate_source": "treasury",
            "source_minor": 12_345,
            "target_minor": 20_121,
            "residual": "-0.242505",
        },
        "reverses": None,
    },
    "PayoutInstruction": {
        "payout_id": "po_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "settlement_id": "stl_0a1b2c3d4e5f60718293a4b5c6d7e8f9",
        "merchant_id": "m_acme",
        "currency": "JPY",
        "amount_minor": 20_121,
        "day": AT.date(),
        "occurred_at": AT,
        "source_currency": "EUR",
        "source_minor": 12_345,
        "fx_rate": "162.9871",
    },
    "FxRate": {
        "base_currency": "EUR",
        "quote_currency": "JPY",
        "rate": "162.9871",
        "as_of": AT,
        "source": "treasury",
    },
    "SanctionsEntry": {
        "uid": "PS-0002",
        "kind": "individual",
        "name": "José Ramón Quiñonero Bastidas",
        "aliases": ["Jose Quinonero"],
        "programs": ["FICT-NARC"],
        "country": "XB",
        "list_version": "2026-01-15",
    },
    "FraudBlockEntry": {
        "kind": "card",
        "value": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "action": "block",
        "reason": "confirmed account takeover, case 4411",
        "actor": "ops:alice",
        "occurred_at": AT,
        "expires_at": datetime(2027, 11, 25, tzinfo=UTC),
    },
    "FraudLabel": {
        "label_id": "lbl_00112233445566778899aabbccddeeff",
        "payment_id": PAYMENT_ID,
        "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "merchant_id": "m_acme",
        "fraud": True,
        "source": "chargeback",
        "tx_occurred_at": datetime(2026, 11, 1, 9, 30, tzinfo=UTC),
        "occurred_at": AT,
        "amount_minor": 12_345,
        "currency": "USD",
        "reason_code": "10.4",
    },
    "WebhookDelivery": {
        "delivery_id": "wda_00112233445566778899aabbccddeeff",
        "notification_id": "whk_00112233445566778899aabbccddeeff",
        "merchant_id": "m_acme",
        "endpoint_id": "we_00112233445566778899aabbccddeeff",
        "url": "https://example.com/hooks",
        "payment_id": PAYMENT_ID,
        "event_type": "captured",
        "attempt": 2,
        "attempted_at": AT,
        "status": "failed",
        "http_status": 503,
        "error": "http 503",
        "next_attempt_at": datetime(2026, 11, 25, 10, 1, tzinfo=UTC),
        "key_id": "webhook-v1",
    },
}

RECORDS["JobRun"] = {
    "run_id": "run_01",
    "job": "settle",
    "day": AT.date(),
    "status": "succeeded",
    "attempt": 1,
    "event_time": AT,
    "started_at": AT,
    "finished_at": AT,
    "detail": "2 settlement(s), 2 payout(s), 2 new entr(ies) posted",
}
RECORDS["VaultReveal"] = {
    "reveal_id": "rvl_00112233445566778899aabbccddeeff",
    "token": "tok_" + "a" * 32,
    "merchant_id": "m_acme",
    "payment_id": PAYMENT_ID,
    "purpose": "merchant_initiated_charge",
    "master_key_id": "vault-master-v1",
    "worker": "w0",
    "event_time": AT,
}
RECORDS["MerchantRecord"] = {
    "merchant_id": "m_acme",
    "kyc_status": "verified",
    "currencies": ["EUR", "USD"],
    "methods": ["card"],
    "fee_plan_id": "standard",
    "settlement_currency": "USD",
    "updated_at": datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    "platform_id": None,
    "connected": ["m_shop_a", "m_shop_b"],
    "kyc": None,
}

RECORDS["MonitoringActivity"] = {
    "activity_id": "evt_00112233445566778899aabbccddeeff/card",
    "subject_kind": "card",
    "subject_id": "tok_abcdefghijklmnopqrstuvwxyz234567",
    "kind": "capture",
    "payment_id": PAYMENT_ID,
    "merchant_id": "m_acme",
    "currency": "USD",
    "amount_minor": 950_000,
    "occurred_at": AT,
    "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
}
RECORDS["MonitoringCase"] = {
    "case_id": "case_00112233445566778899aabbccddeeff",
    "rule": "structuring",
    "subject_kind": "card",
    "subject_id": "tok_abcdefghijklmnopqrstuvwxyz234567",
    "merchant_id": "m_acme",
    "currency": "USD",
    "window_start": datetime(2026, 11, 23, 10, 0, 0, 124000, tzinfo=UTC),
    "window_end": AT,
    "opened_at": AT,
    "evidence": [
        {
            "payment_id": PAYMENT_ID,
            "merchant_id": "m_acme",
            "kind": "capture",
            "currency": "USD",
            "amount_minor": 950_000,
            "occurred_at": AT,
            "card_token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        }
    ],
    "measures": {"payments": 3, "total_minor": 2_850_000, "threshold_minor": 1_000_000},
    "summary": "3 captures just under the reporting threshold of 10000.00 USD",
}
RECORDS["MonitoringDecision"] = {
    "decision_id": "dec_00112233445566778899aabbccddeeff",
    "case_id": "case_00112233445566778899aabbccddeeff",
    "decision": "escalate",
    "operator": "alice",
    "reason": "three near-threshold captures in a day; escalated for a SAR decision",
    "decided_at": AT,
}

RECORDS["SubscriptionCommand"] = {
    "command_id": "subcmd_00112233445566778899aabbccddeeff",
    "kind": "create",
    "subscription_id": "sub_00112233445566778899aabbccddeeff",
    "merchant_id": "m_acme",
    "occurred_at": AT,
    "plan": {"amount_minor": 1999, "currency": "EUR", "interval": "month", "interval_count": 1},
    "card_token": {
        "token": "tok_" + "A" * 32,
        "bin": "424242",
        "last4": "4242",
        "brand": "visa",
        "exp_month": 12,
        "exp_year": 2030,
    },
    "anchor_at": datetime(2026, 12, 1, tzinfo=UTC),
    "trial_days": 14,
    "at_period_end": False,
    "outcome": None,
}

# A refused command and a bare follow-up exercise the null branches of the unions.
EXTRA_RECORDS = [
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {
            "card": None,
            "capture_method": None,
            "rejection_reason": "expired_card",
            "rejection_detail": "card expired",
            "fraud_action": None,
            "fraud_score_ppm": None,
            "fraud_reasons": [],
            "fraud_model": None,
            "fraud_fallback": True,
            "merchant_features": None,
        },
    ),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {
            "kind": "capture",
            "amount_minor": None,
            "currency": None,
            "capture_method": None,
            "card": None,
            "metadata": {},
        },
    ),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {
            "kind": "dispute_open",
            "card": None,
            "capture_method": None,
            "dispute": {
                "reason": "fraudulent",
                "evidence_due_at": datetime(2026, 12, 16, 10, 0, tzinfo=UTC),
                "evidence": None,
                "outcome": None,
            },
        },
    ),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {
            "kind": "dispute_close",
            "amount_minor": None,
            "card": None,
            "dispute": {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": "lost"},
        },
    ),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {
            "kind": "confirm",
            "amount_minor": None,
            "currency": None,
            "capture_method": None,
            "card": None,
            "three_ds": {
                "trans_status": "Y",
                "eci": "05",
                "ds_trans_id": "f25084f0-5b16-4c0a-ae5d-b24808a95e4b",
                "authentication_value": "av1.e30.AA",
            },
        },
    ),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {
            "kind": "confirm",
            "card": None,
            "capture_method": None,
            "fraud_action": None,
            "three_ds": {"trans_status": "N", "eci": None, "ds_trans_id": None, "authentication_value": None},
        },
    ),
    ("PaymentEvent", RECORDS["PaymentEvent"] | {"type": "authorized", "three_ds_status": "A", "liability_shift": True}),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {
            "method": "wallet",
            "card": None,
            "wallet": {
                "provider": "apple_pay",
                "token": "wtok_0123456789abcdef",
                "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA=",
            },
        },
    ),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {
            "method": "bank_transfer",
            "card": None,
            "bank_account": {"scheme": "sepa", "mandate_id": "MD-2026-0001", "account_last4": "6789"},
        },
    ),
    ("PaymentCommand", RECORDS["PaymentCommand"] | {"method": "bnpl", "card": None, "bnpl": {"provider": "later"}}),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {"kind": "bank_return", "amount_minor": None, "card": None, "bank_notice": {"return_code": "R01"}},
    ),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {
            "method": "wallet",
            "card": None,
            "wallet": {"provider": "google_pay", "token": "wtok_0123456789abcdef", "cryptogram_verified": True},
        },
    ),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {
            "method": "bank_transfer",
            "card": None,
            "bank_account": {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"},
        },
    ),
    ("ValidatedCommand", RECORDS["ValidatedCommand"] | {"method": "bnpl", "card": None, "bnpl_provider": "later"}),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"] | {"kind": "bank_return", "method": None, "card": None, "return_code": "AM04"},
    ),
    (
        "PaymentEvent",
        RECORDS["PaymentEvent"]
        | {
            "type": "bank_reversed",
            "method": "bank_transfer",
            "card_token": None,
            "card_bin": None,
            "card_last4": None,
            "reason_code": "R01",
        },
    ),
    ("DeadLetter", RECORDS["DeadLetter"] | {"raw_key": None, "raw_value": b""}),
    (
        "PaymentCommand",
        RECORDS["PaymentCommand"]
        | {"splits": [{"merchant_id": "m_shop_a", "amount_minor": 12_000}], "platform_fee_minor": 345},
    ),
    (
        "ValidatedCommand",
        RECORDS["ValidatedCommand"]
        | {"splits": [{"merchant_id": "m_shop_a", "amount_minor": 12_345}], "platform_fee_minor": 0},
    ),
    (
        "PaymentEvent",
        RECORDS["PaymentEvent"]
        | {"splits": [{"merchant_id": "m_shop_a", "amount_minor": 12_000}], "platform_fee_minor": 345},
    ),
    ("PaymentEvent", RECORDS["PaymentEvent"] | {"type": "dispute_lost", "dispute_event_id": "evt_" + "0d" * 16}),
    ("MerchantRecord", RECORDS["MerchantRecord"] | {"platform_id": "m_market", "connected": []}),
    (
        "MerchantRecord",
        RECORDS["MerchantRecord"]
        | {
            "kyc_status": "pending",
            "kyc": {
                "application_id": "kyc_0011",
                "state": "manual_review",
                "legal_name": "Acme Trading Ltd",
                "country": "GB",
                "registration_number": "MANUAL-123",
                "owners": ["Ada Example"],
                "documents": [{"kind": "owner_id", "ref": "docstore:abc/1"}],
                "checks": [{"name": "registry", "outcome": "manual", "detail": "GB business registry"}],
                "submitted_at": AT,
                "decided_at": AT,
                "verified_until": None,
                "reviewer": None,
                "cleared": ["PS-0001"],
            },
        },
    ),
    ("LedgerEntry", RECORDS["LedgerEntry"] | {"fx": None, "reverses": "je_00112233445566778899aabbccddeeff"}),
    (
        "SubscriptionCommand",
        RECORDS["SubscriptionCommand"]
        | {
            "kind": "charge_outcome",
            "plan": None,
            "card_token": None,
            "anchor_at": None,
            "trial_days": 0,
            "outcome": {
                "command_id": "cmd_00112233445566778899aabbccddeeff",
                "idempotency_key": "sub/sub_0/0/1",
                "payment_id": PAYMENT_ID,
                "status": "rejected",
                "payment_status": "declined",
                "reason_code": "card_declined",
            },
        },
    ),
]


# --- an independent CRC-64-AVRO (Rabin) fingerprint, straight from the Avro spec ---

CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> list[int]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return table


_TABLE = _crc64_table()


def rabin_fingerprint(data: bytes) -> int:
    fp = CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp


def canonical_form(name: str) -> str:
    raw = json.loads(resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text())
    return to_parsing_canonical_form(raw)


# --- round trips and the header ---


@pytest.mark.parametrize(("name", "record"), [*RECORDS.items(), *EXTRA_RECORDS])
def test_round_trip(name: str, record: dict) -> None:
    codec = Codec(name)
    assert codec.decode(codec.encode(record, check=True)) == record


def test_every_shipped_schema_has_a_realistic_record() -> None:
    assert set(RECORDS) == set(SCHEMA_NAMES)


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_header_is_magic_plus_fingerprint(name: str) -> None:
    codec = Codec(name)
    data = codec.encode(RECORDS[name])
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == codec.schema.fingerprint
    assert len(codec.schema.fingerprint) == 8


@pytest.mark.parametrize("name", SCHEMA_NAMES)
def test_fingerprint_is_crc64_avro_of_the_parsing_canonical_form(name: str) -> None:
    canonical = canonical_form(name)
    assert canonical.startswith('{"name":"paystream.v1.' + name + '"')
    assert '"doc"' not in canonical and '"default"' not in canonical
    expected = rabin_fingerprint(canonical.encode()).to_bytes(8, "little")
    assert Codec(name).schema.fingerprint == expected


def test_fingerprints_are_distinct() -> None:
    assert len({Codec(n).schema.fingerprint for n in SCHEMA_NAMES}) == len(SCHEMA_NAMES)


def test_spec_vector_for_null() -> None:
    assert rabin_fingerprint(b'"null"') == 0x63DD24E7CC258F8A
    assert crc64_avro_fingerprint('"null"') == bytes.fromhex("8a8f25cce724dd63")


@given(st.text(max_size=200))
def test_fingerprint_matches_reference_on_any_text(text: str) -> None:
    assert crc64_avro_fingerprint(text) == rabin_fingerprint(text.encode()).to_bytes(8, "little")


# --- decode failures: one stable reason each ---


def _reason(codec: Codec, data: bytes | None) -> str:
    with pytest.raises(DecodeError) as err:
        codec.decode(data)
    assert err.value.detail
    return err.value.reason


COMMAND = Codec("PaymentCommand")
GOOD = COMMAND.encode(RECORDS["PaymentCommand"])


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc3",
        GOOD[:9],  # header cut short
        b"\xc3\x02" + GOOD[2:],  # wrong second magic byte
        b"\x00" + b"\x00\x00\x00\x07" + GOOD[10:],  # Confluent wire format, not ours
        b'{"command_id": "cmd_01"}',
    ],
    ids=["empty", "one-byte", "short-header", "bad-magic", "confluent", "json"],
)
def test_not_single_object_encoding(data: bytes) -> None:
    assert _reason(COMMAND, data) == "not_single_object_encoding"


def test_unknown_fingerprint() -> None:
    assert _reason(COMMAND, b"\xc3\x01" + bytes(8) + GOOD[10:]) == "unknown_fingerprint"


def test_wrong_schema() -> None:
    outcome = Codec("PaymentOutcome").encode(RECORDS["PaymentOutcome"])
    assert _reason(COMMAND, outcome) == "wrong_schema"
    assert _reason(Codec("PaymentOutcome"), GOOD) == "wrong_schema"


def test_truncated_body_is_malformed_at_every_cut() -> None:
    reasons = {_reason(COMMAND, GOOD[:end]) for end in range(10, len(GOOD))}
    assert reasons == {"malformed_avro"}


def test_trailing_bytes() -> None:
    assert _reason(COMMAND, GOOD + b"\x00") == "trailing_bytes"


def test_tombstone_is_empty_message() -> None:
    assert _reason(COMMAND, None) == "empty_message"


def test_message_too_large_is_refused_before_parsing() -> None:
    assert _reason(COMMAND, GOOD + bytes(MAX_MESSAGE_BYTES)) == "message_too_large"
    # At the limit the size check passes and the body is judged on its own.
    at_limit = GOOD + bytes(MAX_MESSAGE_BYTES - len(GOOD))
    assert _reason(COMMAND, at_limit) == "trailing_bytes"


KNOWN_REASONS = {
    "empty_message",
    "message_too_large",
    "not_single_object_encoding",
    "unknown_fingerprint",
    "wrong_schema",
    "malformed_avro",
    "trailing_bytes",
}


def _decode_or_reason(codec: Codec, data: bytes) -> None:
    try:
        codec.decode(data)
    except DecodeError as e:
        assert e.reason in KNOWN_REASONS


@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_decode_error(data: bytes) -> None:
    _decode_or_reason(COMMAND, data)


@given(st.sampled_from(SCHEMA_NAMES), st.binary(max_size=300))
def test_arbitrary_bodies_behind_a_valid_header_only_raise_decode_error(name: str, body: bytes) -> None:
    codec = Codec(name)
    _decode_or_reason(codec, codec.schema.header + body)


@given(st.sampled_from(SCHEMA_NAMES), st.data())
def test_corrupted_messages_only_raise_decode_error(name: str, data: st.DataObject) -> None:
    codec = Codec(name)
    message = bytearray(codec.encode(RECORDS[name]))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(10, len(message) - 1))  # keep the header: reach the Avro reader
        message[i] = data.draw(st.integers(0, 255))
    _decode_or_reason(codec, bytes(message))


# --- encode(check=True) names the bad field ---


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_minor": "12345"}, "amount_minor"),
        ({"amount_minor": 123.45}, "amount_minor"),
        ({"kind": "charge"}, "kind"),
        ({"merchant_id": None}, "merchant_id"),
        ({"card": {"number": "4242424242424242", "exp_month": "12", "exp_year": 2030, "cvc": None}}, "exp_month"),
    ],
)
def test_encode_check_names_the_field(change: dict, field: str) -> None:
    with pytest.raises(EncodeError) as err:
        COMMAND.encode(RECORDS["PaymentCommand"] | change, check=True)
    assert field in str(err.value)


def test_encode_without_check_still_raises_encode_error() -> None:
    record = dict(RECORDS["PaymentCommand"])
    del record["merchant_id"]
    with pytest.raises(EncodeError, match="merchant_id"):
        COMMAND.encode(record)


# --- schema history: a message written before a schema gained a field stays readable ---


def test_history_schemas_are_earlier_versions_of_shipped_ones() -> None:
    from schemas.codec import history_names, load_schema

    assert history_names() == (
        "history/FraudBlockEntry.1",
        "history/FraudReview.1",
        "history/JobRun.1",
        "history/MerchantRecord.1",
        "history/MerchantRecord.2",
        "history/PaymentCommand.1",
        "history/PaymentCommand.2",
        "history/PaymentCommand.3",
        "history/PaymentCommand.4",
        "history/PaymentCommand.5",
        "history/PaymentCommand.6",
        "history/PaymentCommand.7",
        "history/PaymentEvent.1",
        "history/PaymentEvent.2",
        "history/PaymentEvent.3",
        "history/PaymentEvent.4",
        "history/PaymentOutcome.1",
        "history/ValidatedCommand.1",
        "history/ValidatedCommand.2",
        "history/ValidatedCommand.3",
        "history/ValidatedCommand.4",
        "history/ValidatedCommand.5",
        "history/ValidatedCommand.6",
        "history/ValidatedCommand.7",
        "history/ValidatedCommand.8",
    )
    for name in history_names():
        old = load_schema(name)
        assert old.parsed["name"] == load_schema(name.split("/")[1].split(".")[0]).parsed["name"]
        assert old.fingerprint not in {Codec(n).schema.fingerprint for n in SCHEMA_NAMES}


def test_a_command_written_with_version_1_decodes_with_card_token_null() -> None:
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    old = load_schema("history/PaymentCommand.1")
    record = {k: v for k, v in RECORDS["PaymentCommand"].items() if k not in ("card_token", "sealed_card")}
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, record)
    assert Codec("PaymentCommand").decode(buf.getvalue()) == record | {"card_token": None, "sealed_card": None}


def test_a_raw_card_command_written_with_version_4_decodes_with_sealed_card_null() -> None:
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    old = load_schema("history/PaymentCommand.4")
    record = {k: v for k, v in RECORDS["PaymentCommand"].items() if k != "sealed_card"}
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, record)
    assert Codec("PaymentCommand").decode(buf.getvalue()) == record | {"sealed_card": None}


def test_a_sealed_card_command_round_trips_and_holds_no_card_digits() -> None:
    sealed = {"key_id": "card-intake-v1", "ephemeral_public": bytes(range(32)), "ciphertext": b"\x9a" * 144}
    record = RECORDS["PaymentCommand"] | {"card": None, "sealed_card": sealed}
    codec = Codec("PaymentCommand")
    data = codec.encode(record, check=True)
    assert codec.decode(data) == record and b"4242" not in data
    with pytest.raises(EncodeError, match="ephemeral_public"):
        codec.encode(record | {"sealed_card": sealed | {"ephemeral_public": "not bytes"}}, check=True)


def test_a_tokenized_command_round_trips() -> None:
    token = {
        "token": "tok_abcdefghijklmnopqrstuvwxyz234567",
        "bin": "424242",
        "last4": "4242",
        "brand": "visa",
        "exp_month": 12,
        "exp_year": 2030,
    }
    record = RECORDS["PaymentCommand"] | {"card": None, "card_token": token}
    codec = Codec("PaymentCommand")
    assert codec.decode(codec.encode(record, check=True)) == record


def test_a_validated_command_written_with_version_1_decodes_unscored() -> None:
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    fraud = ("fraud_action", "fraud_score_ppm", "fraud_reasons", "fraud_model", "fraud_fallback", "merchant_features")
    old = load_schema("history/ValidatedCommand.1")
    record = {k: v for k, v in RECORDS["ValidatedCommand"].items() if k not in fraud}
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, record)
    unscored = {
        "fraud_action": None,
        "fraud_score_ppm": None,
        "fraud_reasons": [],
        "fraud_model": None,
        "fraud_fallback": False,
        "merchant_features": None,
    }
    assert Codec("ValidatedCommand").decode(buf.getvalue()) == record | unscored


def _written_with(name: str, record: dict) -> bytes:
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    old = load_schema(name)
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, record)
    return buf.getvalue()


def test_a_confirm_written_with_version_4_decodes_without_a_3ds_result() -> None:
    record = RECORDS["PaymentCommand"] | {"kind": "confirm", "card": None, "amount_minor": None}
    old = {k: v for k, v in record.items() if k != "three_ds"}
    assert Codec("PaymentCommand").decode(_written_with("history/PaymentCommand.4", old)) == record


def test_a_confirm_written_with_version_6_decodes_without_an_authentication_value() -> None:
    three_ds = {"trans_status": "Y", "eci": "05", "ds_trans_id": None}
    for name, version in (("PaymentCommand", 6), ("ValidatedCommand", 6)):
        record = RECORDS[name] | {"kind": "confirm", "card": None, "three_ds": three_ds}
        decoded = Codec(name).decode(_written_with(f"history/{name}.{version}", record))
        assert decoded == record | {"three_ds": three_ds | {"authentication_value": None}}


def test_records_written_before_splits_decode_unsplit() -> None:
    for name, version in (("PaymentCommand", 5), ("ValidatedCommand", 4), ("PaymentEvent", 2)):
        old = {k: v for k, v in RECORDS[name].items() if k not in ("splits", "platform_fee_minor")}
        assert Codec(name).decode(_written_with(f"history/{name}.{version}", old)) == RECORDS[name]
    old = {k: v for k, v in RECORDS["MerchantRecord"].items() if k not in ("platform_id", "connected", "kyc")}
    decoded = Codec("MerchantRecord").decode(_written_with("history/MerchantRecord.1", old))
    assert decoded == old | {"platform_id": None, "connected": [], "kyc": None}
    v2 = {k: v for k, v in RECORDS["MerchantRecord"].items() if k != "kyc"}
    assert Codec("MerchantRecord").decode(_written_with("history/MerchantRecord.2", v2)) == RECORDS["MerchantRecord"]


def test_a_validated_command_written_with_version_2_decodes_without_a_3ds_result() -> None:
    old = {k: v for k, v in RECORDS["ValidatedCommand"].items() if k not in ("three_ds", "merchant_features")}
    decoded = Codec("ValidatedCommand").decode(_written_with("history/ValidatedCommand.2", old))
    assert decoded == old | {"three_ds": None, "merchant_features": None}


def test_a_validated_command_written_with_version_3_decodes_without_merchant_features() -> None:
    old = {k: v for k, v in RECORDS["ValidatedCommand"].items() if k != "merchant_features"}
    decoded = Codec("ValidatedCommand").decode(_written_with("history/ValidatedCommand.3", old))
    assert decoded == old | {"merchant_features": None}


def test_a_wallet_create_validated_with_version_7_decodes_as_an_unverified_cryptogram() -> None:
    wallet = {"provider": "apple_pay", "token": "wtok_0123456789abcdef"}
    old = RECORDS["ValidatedCommand"] | {"method": "wallet", "card": None, "wallet": wallet}
    decoded = Codec("ValidatedCommand").decode(_written_with("history/ValidatedCommand.7", old))
    assert decoded == old | {"wallet": wallet | {"cryptogram_verified": False}}  # no liability shift claimed


def test_an_outcome_written_with_version_1_decodes_without_evidence() -> None:
    old = {k: v for k, v in RECORDS["PaymentOutcome"].items() if k != "dispute_evidence"}
    assert Codec("PaymentOutcome").decode(_written_with("history/PaymentOutcome.1", old)) == old | {
        "dispute_evidence": None
    }


@pytest.mark.parametrize("name", ["PaymentCommand", "ValidatedCommand"])
def test_a_command_written_before_merchant_initiated_decodes_as_customer_initiated(name: str) -> None:
    old = {k: v for k, v in RECORDS[name].items() if k != "merchant_initiated"}
    previous = {"PaymentCommand": "history/PaymentCommand.7", "ValidatedCommand": "history/ValidatedCommand.8"}[name]
    assert Codec(name).decode(_written_with(previous, old)) == old | {"merchant_initiated": False}


_METHOD_FIELDS = {
    "PaymentCommand": ("method", "wallet", "bank_account", "bnpl", "bank_notice", "crypto"),
    "ValidatedCommand": ("method", "wallet", "bank_account", "bnpl_provider", "return_code", "crypto"),
}


@pytest.mark.parametrize(("name", "version"), [("PaymentCommand", 5), ("ValidatedCommand", 4)])
def test_a_command_written_before_payment_methods_decodes_as_a_card(name: str, version: int) -> None:
    old = {k: v for k, v in RECORDS[name].items() if k not in _METHOD_FIELDS[name]}
    decoded = Codec(name).decode(_written_with(f"history/{name}.{version}", old))
    assert decoded == old | dict.fromkeys(_METHOD_FIELDS[name])


def test_a_payment_event_written_with_version_2_decodes_without_a_method() -> None:
    old = {k: v for k, v in RECORDS["PaymentEvent"].items() if k != "method"}
    assert Codec("PaymentEvent").decode(_written_with("history/PaymentEvent.2", old)) == old | {"method": None}


def test_a_payment_event_written_with_version_4_decodes_without_attempts() -> None:
    old = {k: v for k, v in RECORDS["PaymentEvent"].items() if k not in ("attempts", "dispute_event_id")}
    assert Codec("PaymentEvent").decode(_written_with("history/PaymentEvent.4", old)) == old | {
        "attempts": None,
        "dispute_event_id": None,
    }


def test_a_payment_event_carries_its_authorization_attempts() -> None:
    attempts = [
        {"provider": "acq_north", "status": "declined", "reason_code": "do_not_honor", "retryable": False},
        {"provider": "acq_south", "status": "approved", "reason_code": None, "retryable": False},
    ]
    record = RECORDS["PaymentEvent"] | {"type": "authorized", "attempts": attempts}
    assert Codec("PaymentEvent").decode(Codec("PaymentEvent").encode(record, check=True)) == record


def test_a_payment_event_written_with_version_4_decodes_without_its_dispute() -> None:
    old = {k: v for k, v in RECORDS["PaymentEvent"].items() if k not in ("attempts", "dispute_event_id")}
    assert Codec("PaymentEvent").decode(_written_with("history/PaymentEvent.4", old)) == old | {
        "attempts": None,
        "dispute_event_id": None,
    }


def test_merchant_features_must_be_whole_counts() -> None:
    record = RECORDS["ValidatedCommand"]
    with pytest.raises(EncodeError, match="merchant_features|MerchantFeatures|cnt_1h"):
        Codec("ValidatedCommand").encode(
            record | {"merchant_features": record["merchant_features"] | {"cnt_1h": 0.5}}, check=True
        )


def test_a_payment_event_written_with_version_1_decodes_without_liability_shift() -> None:
    old = {k: v for k, v in RECORDS["PaymentEvent"].items() if k not in ("three_ds_status", "liability_shift")}
    decoded = Codec("PaymentEvent").decode(_written_with("history/PaymentEvent.1", old))
    assert decoded == old | {"three_ds_status": None, "liability_shift": None}


@pytest.mark.parametrize("status", ["C", "y", "", "YES"])
def test_a_3ds_status_outside_emv_final_statuses_cannot_be_written(status: str) -> None:
    record = RECORDS["PaymentCommand"] | {
        "kind": "confirm",
        "card": None,
        "three_ds": {"trans_status": status, "eci": None, "ds_trans_id": None},
    }
    with pytest.raises(EncodeError, match="three_ds|trans_status|ThreeDsStatus"):
        Codec("PaymentCommand").encode(record, check=True)


# --- current: a record passed on unchanged can be forwarded as it came ---


@pytest.mark.parametrize(("name", "record"), [*RECORDS.items(), *EXTRA_RECORDS])
def test_a_current_record_decoded_and_encoded_again_is_the_same_bytes(name: str, record: dict) -> None:
    codec = Codec(name)
    data = codec.encode(record)
    assert codec.current(data)
    assert codec.encode(codec.decode(data)) == data


def test_a_record_written_with_an_earlier_version_is_not_current() -> None:
    import io

    import fastavro

    from schemas.codec import MAGIC, load_schema

    old = load_schema("history/PaymentCommand.1")
    record = {k: v for k, v in RECORDS["PaymentCommand"].items() if k not in ("card_token", "sealed_card")}
    buf = io.BytesIO()
    buf.write(MAGIC + old.fingerprint)
    fastavro.schemaless_writer(buf, old.parsed, record)
    codec = Codec("PaymentCommand")
    assert not codec.current(buf.getvalue())
    assert codec.encode(codec.decode(buf.getvalue())) != buf.getvalue()  # so it is encoded again
