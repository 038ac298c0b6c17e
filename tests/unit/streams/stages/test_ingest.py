"""Ingest: decode, validate, tokenize; refuse with a reason, or dead-letter the undecodable."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from connectors.vault.intake import CardOpener, Sealer, active_sealer
from connectors.vault.keys import FileKeyStore
from connectors.vault.scan import PanScanner
from connectors.vault.tokenizer import StoreTokenizer, Tokenizer
from connectors.vault.vault import CardSealer, VaultCard, card_of, open_record
from schemas.cards import contains_pan
from schemas.codec import Codec
from schemas.ids import derive_dlq_id, derive_payment_id
from schemas.partitioning import partition_for
from streams.settings import Settings
from streams.stages.ingest import DeadLetter, Forward, Limits, Source, _free_text, command_key, ingest

TOKENIZER = Tokenizer(b"k" * 32, "t1")
LIMITS = Limits(10**15, 255, 8)
COMMANDS = Codec("PaymentCommand")
VALIDATED = Codec("ValidatedCommand")
DEAD_LETTERS = Codec("DeadLetter")

PAN = "4242424242424242"
CVC = "737"
T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
TOPIC = "payment-commands"
FOLLOW_UP_PID = "pay_0123456789abcdef0123456789abcdef"
MERCHANT = "m_acme"  # the key of its commands
# What `paystream produce --tokenize` publishes instead of the card.
CARD_TOKEN = {
    "token": TOKENIZER.token("m_acme", PAN),
    "bin": "424242",
    "last4": "4242",
    "brand": "visa",
    "exp_month": 12,
    "exp_year": 2030,
}


def create(**overrides: Any) -> dict[str, Any]:
    return {
        "command_id": "cmd_1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1",
        "payment_id": None,
        "amount_minor": 10_000,
        "currency": "USD",
        "capture_method": None,
        "card": {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": CVC},
        "metadata": {"order": "1"},
        "occurred_at": T0,
    } | overrides


def follow_up(kind: str, **overrides: Any) -> dict[str, Any]:
    return (
        create(
            kind=kind,
            idempotency_key=f"{kind}-1",
            payment_id=FOLLOW_UP_PID,
            amount_minor=None,
            currency=None,
            card=None,
            metadata={},
        )
        | overrides
    )


def card(**overrides: Any) -> dict[str, Any]:
    return create()["card"] | overrides


def routed_key(cmd: dict[str, Any]) -> str:
    """What a correct producer keys the message by."""
    return command_key(cmd).decode()


def source_for(routed: str, *, offset: int = 42, **overrides: Any) -> Source:
    fields = {
        "topic": TOPIC,
        "partition": partition_for(routed.encode(), LIMITS.partitions),
        "offset": offset,
        "timestamp_ms": 1_732_540_000_000,
        "key": routed.encode(),
    }
    return Source(**(fields | overrides))


def run(cmd: dict[str, Any], source: Source | None = None) -> Forward | DeadLetter:
    return ingest(COMMANDS.encode(cmd, check=True), source or source_for(routed_key(cmd)), TOKENIZER, LIMITS)


def forwarded(cmd: dict[str, Any], source: Source | None = None) -> dict[str, Any]:
    result = run(cmd, source)
    assert isinstance(result, Forward)
    VALIDATED.encode(result.command, check=True)
    return result.command


# --- valid commands ---


def test_valid_create_is_tokenized() -> None:
    cmd = forwarded(create())

    pid = derive_payment_id("m_acme", "order-1")
    assert cmd["payment_id"] == pid
    assert cmd["card"] == {
        "token": TOKENIZER.token("m_acme", PAN),
        "bin": "424242",
        "last4": "4242",
        "brand": "visa",
        "exp_month": 12,
        "exp_year": 2030,
    }
    assert cmd["capture_method"] == "automatic"  # Stripe's default
    assert cmd["rejection_reason"] is None and cmd["rejection_detail"] is None
    assert (cmd["amount_minor"], cmd["currency"], cmd["metadata"], cmd["occurred_at"]) == (
        10_000,
        "USD",
        {"order": "1"},
        T0,
    )


def test_forward_key_is_the_payment_id() -> None:
    result = run(create())
    assert isinstance(result, Forward)
    assert result.key == derive_payment_id("m_acme", "order-1").encode()


def _values(obj: Any) -> list[Any]:
    if isinstance(obj, dict):
        return [v for x in obj.values() for v in _values(x)]
    return [obj]


def test_no_pan_or_cvc_leaves_ingest() -> None:
    cmd = forwarded(create())
    data = VALIDATED.encode(cmd)

    assert PAN.encode() not in data
    assert PAN not in repr(cmd)
    assert CVC not in _values(cmd)
    assert set(VALIDATED.decode(data)["card"]) == {"token", "bin", "last4", "brand", "exp_month", "exp_year"}


def test_manual_capture_method_is_kept() -> None:
    assert forwarded(create(capture_method="manual"))["capture_method"] == "manual"


def test_grouped_card_number_is_normalised() -> None:
    cmd = forwarded(create(card=card(number="4242 4242 4242 4242")))
    assert cmd["card"]["token"] == TOKENIZER.token("m_acme", PAN)
    assert cmd["card"]["last4"] == "4242"


@pytest.mark.parametrize(
    ("number", "bin_", "last4", "brand"),
    [
        ("378282246310005", "378282", "0005", "amex"),
        ("5555555555554444", "555555", "4444", "mastercard"),
        ("1234567812345670", "123456", "5670", "unknown"),  # Luhn-valid, no known network
    ],
)
def test_card_reference_fields(number: str, bin_: str, last4: str, brand: str) -> None:
    ref = forwarded(create(card=card(number=number)))["card"]
    assert (ref["bin"], ref["last4"], ref["brand"]) == (bin_, last4, brand)


def test_create_with_its_own_derived_payment_id_is_valid() -> None:
    pid = derive_payment_id("m_acme", "order-1")
    assert forwarded(create(payment_id=pid))["rejection_reason"] is None


THREE_DS = {
    "trans_status": "Y",
    "eci": "05",
    "ds_trans_id": "f25084f0-5b16-4c0a-ae5d-b24808a95e4b",
    "authentication_value": None,
}


@pytest.mark.parametrize("kind", ["capture", "void", "refund", "expire", "confirm"])
def test_valid_follow_up(kind: str) -> None:
    cmd = forwarded(
        follow_up(
            kind,
            amount_minor=500 if kind in ("capture", "refund") else None,
            three_ds=THREE_DS if kind == "confirm" else None,
        )
    )
    assert cmd["rejection_reason"] is None and cmd["kind"] == kind
    assert cmd["three_ds"] == (THREE_DS if kind == "confirm" else None)
    assert cmd["payment_id"] == FOLLOW_UP_PID
    assert cmd["card"] is None and cmd["capture_method"] is None


@pytest.mark.parametrize("status", ["Y", "A", "N", "U", "R"])
def test_a_confirm_forwards_its_3ds_result_optional_fields_absent(status: str) -> None:
    result = {"trans_status": status, "eci": None, "ds_trans_id": None, "authentication_value": None}
    assert forwarded(follow_up("confirm", three_ds=result))["three_ds"] == result


def test_a_refused_command_carries_no_3ds_result() -> None:
    refused = forwarded(follow_up("confirm", three_ds=THREE_DS | {"eci": "123"}))
    assert refused["rejection_reason"] == "invalid_three_ds" and refused["three_ds"] is None


def test_card_expiring_this_month_is_accepted() -> None:
    assert forwarded(create(card=card(exp_month=11, exp_year=2026)))["rejection_reason"] is None


def test_expiry_is_judged_against_occurred_at_not_the_wall_clock() -> None:
    # Long expired by today's clock, valid when the command happened.
    old = create(card=card(exp_month=1, exp_year=2001), occurred_at=datetime(2000, 12, 31, 23, 0, tzinfo=UTC))
    assert forwarded(old)["rejection_reason"] is None
    # Valid by today's clock, expired when the command happened.
    future = create(card=card(exp_month=6, exp_year=2090), occurred_at=datetime(2090, 7, 1, tzinfo=UTC))
    assert forwarded(future)["rejection_reason"] == "expired_card"


# --- tokens ---


def test_same_pan_same_merchant_same_token() -> None:
    a = forwarded(create(command_id="c1", idempotency_key="order-1"))["card"]["token"]
    b = forwarded(create(command_id="c2", idempotency_key="order-2"))["card"]["token"]
    assert a == b


def test_token_differs_by_merchant_and_pan() -> None:
    base = forwarded(create())["card"]["token"]
    other_merchant = forwarded(create(merchant_id="m_globex"))["card"]["token"]
    other_pan = forwarded(create(card=card(number="5555555555554444")))["card"]["token"]
    assert len({base, other_merchant, other_pan}) == 3
    assert base.startswith("tok_") and "4242" not in base


# --- refusals: forwarded with a reason, never with a card ---

REFUSALS = [
    ("invalid_merchant_id", create(merchant_id="")),
    ("invalid_merchant_id", create(merchant_id="m" * 65)),
    ("invalid_merchant_id", create(merchant_id="m\x1facme")),
    ("invalid_idempotency_key", create(idempotency_key="")),
    ("invalid_idempotency_key", create(idempotency_key="k" * 256)),
    ("payment_id_mismatch", create(payment_id="pay_somebody_else")),
    ("missing_amount", create(amount_minor=None)),
    ("missing_currency", create(currency=None)),
    ("missing_payment_id", follow_up("capture", payment_id=None)),
    ("missing_payment_id", follow_up("refund", payment_id="")),
    ("unexpected_payment_method", follow_up("capture", card=card())),
    ("unexpected_capture_method", follow_up("capture", capture_method="manual")),
    ("invalid_amount", create(amount_minor=0)),
    ("invalid_amount", create(amount_minor=-100)),
    ("invalid_amount", follow_up("refund", amount_minor=-1)),
    ("amount_too_large", create(amount_minor=10**15 + 1)),
    ("invalid_currency", create(currency="XYZ")),
    ("invalid_currency", follow_up("capture", amount_minor=5, currency="usd")),
    ("missing_payment_method", create(card=None)),
    ("invalid_card_number", create(card=card(number="4242424242424241"))),
    ("invalid_card_number", create(card=card(number="42424242424"))),
    ("invalid_card_number", create(card=card(number="4242x42424242424"))),
    ("invalid_expiry", create(card=card(exp_month=13))),
    ("invalid_expiry", create(card=card(exp_month=0))),
    ("invalid_expiry", create(card=card(exp_year=2101))),
    ("expired_card", create(card=card(exp_month=10, exp_year=2026))),
    ("invalid_metadata", create(metadata={f"k{i}": "v" for i in range(51)})),
    ("invalid_metadata", create(metadata={"": "v"})),
    ("invalid_metadata", create(metadata={"k" * 41: "v"})),
    ("invalid_metadata", create(metadata={"k": "v" * 501})),
    ("invalid_metadata", create(metadata={"bank_account_digest": "DE89370400440532013000"})),
    ("invalid_metadata", create(metadata={"bank_account_digest": "AB" * 32})),
    ("invalid_metadata", create(metadata={"bnpl_customer": "cust 9"})),
    ("pan_in_metadata", create(metadata={"note": f"customer card {PAN}"})),
    ("pan_in_metadata", create(metadata={PAN: "card"})),
    ("pan_in_metadata", follow_up("refund", metadata={"note": "card 4242-4242-4242-4242"})),
    ("unexpected_payment_method", follow_up("capture", card_token=CARD_TOKEN)),
    ("ambiguous_payment_method", create(card_token=CARD_TOKEN)),
    ("invalid_card_token", create(card=None, card_token=CARD_TOKEN | {"token": PAN})),
    ("invalid_card_token", create(card=None, card_token=CARD_TOKEN | {"token": "tok_" + "A" * 32})),
    ("invalid_card_token", create(card=None, card_token=CARD_TOKEN | {"bin": "4242x4"})),
    ("invalid_card_token", create(card=None, card_token=CARD_TOKEN | {"last4": "42424"})),
    ("invalid_card_token", create(card=None, card_token=CARD_TOKEN | {"brand": "unknown"})),
    ("expired_card", create(card=None, card_token=CARD_TOKEN | {"exp_month": 10, "exp_year": 2026})),
    ("invalid_expiry", create(card=None, card_token=CARD_TOKEN | {"exp_month": 13})),
    ("invalid_merchant_initiated", create(merchant_initiated=True)),  # a card number: the customer is there
    ("invalid_merchant_initiated", follow_up("capture", merchant_initiated=True)),
    ("missing_three_ds", follow_up("confirm")),
    ("unexpected_three_ds", follow_up("capture", three_ds=THREE_DS)),
    ("unexpected_three_ds", create(three_ds=THREE_DS)),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"eci": "5"})),
    (
        "invalid_three_ds",
        follow_up("confirm", three_ds=THREE_DS | {"authentication_value": "av1." + "A" * 1100 + ".x"}),
    ),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"authentication_value": "av1.a b.c"})),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"authentication_value": "av1.4000056655665556.x"})),
    (
        "invalid_three_ds",
        follow_up("confirm", three_ds=THREE_DS | {"trans_status": "N", "authentication_value": "av1.e30.AA"}),
    ),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"eci": "0x"})),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"ds_trans_id": "f25084f05b164c0aae5db24808a95e4b"})),
    ("invalid_three_ds", follow_up("confirm", three_ds=THREE_DS | {"ds_trans_id": "x" * 36})),
]


# Digits, separators, letters, line breaks and another script's digits: near-PANs and PANs.
_TEXT = st.text(st.sampled_from([*"0123456789", " ", "-", "a", "\n", "\u0664"]), max_size=24)
_FIELD = _TEXT | st.builds(
    lambda before, pan, after: before + pan + after,
    _TEXT,
    st.sampled_from([PAN, "4242 4242 4242 4242", "378282246310005", "4242424242424241"]),
    _TEXT,
)


@given(
    st.lists(_FIELD, min_size=3, max_size=3),
    st.lists(_FIELD | st.none(), min_size=2, max_size=2),
    st.dictionaries(_FIELD, _FIELD, max_size=3),
    st.lists(_FIELD, max_size=3),
)
def test_one_scan_of_the_free_text_finds_a_card_number_exactly_when_a_field_holds_one(
    ids: list[str], optional: list[str | None], metadata: dict[str, str], split_merchants: list[str]
) -> None:
    cmd = dict(zip(("command_id", "merchant_id", "idempotency_key", "payment_id", "currency"), ids + optional)) | {
        "metadata": metadata,
        "splits": [{"merchant_id": m, "amount_minor": 1} for m in split_merchants] or None,
    }
    fields = [*ids, *(x for x in optional if x is not None), *metadata, *metadata.values(), *split_merchants]
    assert contains_pan(_free_text(cmd)) == any(contains_pan(f) for f in fields)


@pytest.mark.parametrize(("reason", "cmd"), REFUSALS, ids=[r for r, _ in REFUSALS])
def test_refusal(reason: str, cmd: dict[str, Any]) -> None:
    refused = forwarded(cmd)

    assert refused["rejection_reason"] == reason
    assert refused["rejection_detail"]
    assert refused["card"] is None
    assert refused["command_id"] == cmd["command_id"]
    # Whatever was refused, no card number is forwarded.
    data = VALIDATED.encode(refused)
    assert PAN.encode() not in data and b"4242-4242" not in data


def test_refused_create_still_carries_its_derived_payment_id() -> None:
    refused = forwarded(create(amount_minor=0))
    assert refused["payment_id"] == derive_payment_id("m_acme", "order-1")
    assert refused["capture_method"] == "automatic"


def test_refused_create_without_key_has_no_payment_id() -> None:
    result = run(create(idempotency_key=""))
    assert isinstance(result, Forward)
    assert result.command["payment_id"] is None
    assert result.key == b"cmd_1"  # keyed by command_id when there is no payment


def test_a_refused_command_carries_no_metadata() -> None:
    refused = forwarded(create(metadata={"note": f"card {PAN}", "order": "1"}))
    assert refused["rejection_reason"] == "pan_in_metadata" and refused["metadata"] == {}


def test_a_refused_command_cuts_its_text_fields_to_their_bounds() -> None:
    refused = forwarded(create(merchant_id="m" * 100_000, idempotency_key="k" * 100_000, currency="C" * 100))
    assert refused["rejection_reason"] == "invalid_merchant_id"
    assert refused["merchant_id"] == "m" * 64 + "…" and refused["idempotency_key"] == "k" * 255 + "…"
    assert refused["currency"] == "C" * 8 + "…"
    assert refused["payment_id"] == derive_payment_id("m" * 100_000, "k" * 100_000)  # what the producer keyed by


@pytest.mark.parametrize("payment_id", ["pay_123", "pay_" + "A" * 32, "x" * 100_000, "pay_" + "0" * 32 + "\n"])
def test_a_follow_up_payment_id_must_be_a_derived_one(payment_id: str) -> None:
    refused = forwarded(follow_up("capture", payment_id=payment_id), source_for(MERCHANT))
    assert refused["rejection_reason"] == "invalid_payment_id"
    assert refused["payment_id"] is None  # not carried on: it names no payment


def test_key_mismatch() -> None:
    pid = derive_payment_id("m_acme", "order-1")
    # The payment_id was the key before commands travelled by merchant (docs/decisions.md, Hop budget).
    for key in (b"some-other-key", pid.encode()):
        refused = forwarded(create(), source_for(MERCHANT, key=key))
        assert refused["rejection_reason"] == "key_mismatch"
        assert refused["rejection_detail"] == "the message key must be the merchant_id"


def test_wrong_partition() -> None:
    wrong = (partition_for(MERCHANT.encode(), LIMITS.partitions) + 1) % LIMITS.partitions
    refused = forwarded(create(), source_for(MERCHANT, partition=wrong))
    assert refused["rejection_reason"] == "wrong_partition"
    assert "merchant_id hashes to partition" in refused["rejection_detail"] and "murmur2" in refused["rejection_detail"]


def test_a_payments_commands_share_their_merchants_key() -> None:
    create_key = command_key(create())
    assert create_key == MERCHANT.encode()
    assert all(command_key(follow_up(kind)) == create_key for kind in ("capture", "void", "refund"))


def test_missing_key_is_tolerated_when_the_partition_is_right() -> None:
    assert forwarded(create(), source_for(MERCHANT, key=None))["rejection_reason"] is None


def test_amount_at_the_limit_is_accepted() -> None:
    assert forwarded(create(amount_minor=10**15))["rejection_reason"] is None


# --- dead letters ---


def dead(raw: bytes | None, source: Source | None = None) -> dict[str, Any]:
    result = ingest(raw, source or source_for(MERCHANT), TOKENIZER, LIMITS)
    assert isinstance(result, DeadLetter)
    DEAD_LETTERS.encode(result.record, check=True)
    return result.record


def test_undecodable_bytes_become_a_dead_letter() -> None:
    source = source_for(MERCHANT, offset=7)
    record = dead(b"not avro, card " + PAN.encode(), source)

    assert record["reason"] == "not_single_object_encoding"
    assert record["stage"] == "ingest"
    assert record["detail"]
    assert (record["source_topic"], record["source_partition"], record["source_offset"]) == (TOPIC, source.partition, 7)
    assert record["source_timestamp"] == datetime.fromtimestamp(1_732_540_000, tz=UTC)
    assert record["raw_key"] == MERCHANT.encode()
    assert record["raw_value"] == b"not avro, card [PAN]"
    assert record["pans_masked"] == 1
    assert record["dlq_id"] == derive_dlq_id(TOPIC, source.partition, 7)


def test_dead_letter_id_is_deterministic_per_source_offset() -> None:
    first = dead(b"junk", source_for(MERCHANT, offset=7))
    again = dead(b"junk", source_for(MERCHANT, offset=7))
    other = dead(b"junk", source_for(MERCHANT, offset=8))
    assert first == again
    assert first["dlq_id"] != other["dlq_id"]


def test_truncated_command_is_dead_lettered_with_its_pan_masked() -> None:
    raw = COMMANDS.encode(create())[:-3]
    record = dead(raw)

    assert record["reason"] == "malformed_avro"
    assert PAN.encode() not in record["raw_value"]
    assert record["raw_value"] == raw.replace(b" " + PAN.encode(), b" [PAN]")  # the rest is preserved
    assert record["pans_masked"] == 1


def test_pan_in_the_message_key_is_masked() -> None:
    record = dead(b"junk", source_for(MERCHANT, key=PAN.encode()))
    assert record["raw_key"] == b"[PAN]"
    assert record["pans_masked"] == 1


def test_tombstone_is_dead_lettered() -> None:
    record = dead(None)
    assert record["reason"] == "empty_message"
    assert record["raw_value"] == b""


def test_another_schema_on_the_commands_topic_is_dead_lettered() -> None:
    validated = forwarded(create())
    assert dead(VALIDATED.encode(validated))["reason"] == "wrong_schema"


@pytest.mark.parametrize("command_id", ["", "c" * 129])
def test_unusable_command_id_is_dead_lettered(command_id: str) -> None:
    raw = COMMANDS.encode(create(command_id=command_id))
    record = dead(raw)

    assert record["reason"] == "invalid_command_id"
    assert PAN.encode() not in record["raw_value"]
    assert record["pans_masked"] == 1
    assert len(record["raw_value"]) == len(raw) - len(PAN) + len("[PAN]")


def test_longest_command_id_is_accepted() -> None:
    assert forwarded(create(command_id="c" * 128))["command_id"] == "c" * 128


@pytest.mark.parametrize("field", ["merchant_id", "idempotency_key", "currency"])
def test_pan_in_a_text_field_is_refused_and_masked_downstream(field: str) -> None:
    pan = "4242424242424242"
    result = run(create(**{field: f"x-{pan}" if field != "currency" else pan}))
    assert isinstance(result, Forward)
    assert result.command["rejection_reason"] == "pan_in_field"
    encoded = VALIDATED.encode(result.command)
    assert pan.encode() not in encoded


def test_pan_in_command_id_is_a_masked_dead_letter() -> None:
    pan = "4242424242424242"
    result = run(create(command_id=f"c:{pan}"))
    assert isinstance(result, DeadLetter)
    assert result.record["reason"] == "invalid_command_id"
    assert pan.encode() not in result.record["raw_value"]


# --- a card tokenized before publishing (produce --tokenize) ---


def test_a_pre_tokenized_create_is_forwarded_with_its_card_token() -> None:
    cmd = forwarded(create(card=None, card_token=CARD_TOKEN))
    assert cmd["rejection_reason"] is None
    assert cmd["card"] == CARD_TOKEN
    # The same card gets the same token whichever side tokenized it.
    assert cmd["card"]["token"] == forwarded(create())["card"]["token"]
    assert cmd["merchant_initiated"] is False


def test_a_merchant_initiated_charge_on_a_saved_card_is_forwarded_marked() -> None:
    cmd = forwarded(create(card=None, card_token=CARD_TOKEN, merchant_initiated=True))
    assert (cmd["rejection_reason"], cmd["card"], cmd["merchant_initiated"]) == (None, CARD_TOKEN, True)
    assert VALIDATED.decode(VALIDATED.encode(cmd, check=True))["merchant_initiated"] is True


def test_ingest_with_the_vault_seals_the_pan_and_refuses_what_the_vault_refuses(tmp_path: Path) -> None:
    keys = FileKeyStore(tmp_path / "keys")
    keys.init()
    vault = CardSealer(keys, StoreTokenizer(keys), held=lambda token: False)
    cmd = create()
    result = ingest(COMMANDS.encode(cmd, check=True), source_for(routed_key(cmd)), vault, LIMITS)
    assert isinstance(result, Forward)
    ref = result.command["card"]
    assert list(vault.sealed) == [ref["token"]]  # the record the batch sends to card-vault with the token
    assert open_record(keys, ref["token"], vault.sealed[ref["token"]]).pan == PAN
    assert card_of(ref["token"], vault.sealed[ref["token"]]) == VaultCard(ref["token"], "424242", "4242", "visa")

    odd = create(card=card(number="1234567812345670"))  # Luhn-valid, no known network
    result = ingest(COMMANDS.encode(odd, check=True), source_for(routed_key(odd)), vault, LIMITS)
    assert isinstance(result, Forward)
    assert result.command["rejection_reason"] == "unknown_card_brand"
    assert "1234567812345670" not in result.command["rejection_detail"]
    assert len(vault.sealed) == 1


@pytest.mark.parametrize(
    "number",
    [
        "\u00b2000000000000009",  # "²": isdigit() but not a digit int() reads; crashed ingest once
        "".join(chr(0xFF10 + int(c)) for c in PAN),  # fullwidth digits
    ],
)
def test_a_card_number_must_be_ascii_digits(number: str) -> None:
    assert forwarded(create(card=card(number=number)))["rejection_reason"] == "invalid_card_number"


def test_a_card_token_with_a_trailing_newline_is_refused() -> None:
    cmd = create(card=None, card_token=CARD_TOKEN | {"token": CARD_TOKEN["token"] + "\n"})
    assert forwarded(cmd)["rejection_reason"] == "invalid_card_token"


# --- dispute commands ---


def dispute(kind: str, amount_minor: int | None = None, **fields: Any) -> dict[str, Any]:
    body = {"reason": None, "evidence_due_at": None, "evidence": None, "outcome": None} | fields
    return follow_up(kind, amount_minor=amount_minor, dispute=body)


def test_dispute_open_defaults_the_evidence_due_date_from_event_time() -> None:
    cmd = forwarded(dispute("dispute_open", reason="fraudulent"))
    assert cmd["rejection_reason"] is None
    assert cmd["dispute"]["reason"] == "fraudulent"
    assert cmd["dispute"]["evidence_due_at"] == datetime(2026, 12, 16, 10, 0, tzinfo=UTC)  # T0 + 21 days
    assert cmd["amount_minor"] is None  # the payments stage takes the disputable rest


def test_dispute_open_keeps_a_given_amount_and_due_date() -> None:
    due = datetime(2026, 12, 1, tzinfo=UTC)
    cmd = forwarded(dispute("dispute_open", 700, reason="duplicate", evidence_due_at=due))
    assert (cmd["amount_minor"], cmd["dispute"]["evidence_due_at"]) == (700, due)


def test_dispute_close_and_evidence_are_forwarded() -> None:
    assert forwarded(dispute("dispute_close", outcome="lost"))["dispute"]["outcome"] == "lost"
    cmd = forwarded(dispute("dispute_evidence", evidence="receipt and delivery photo"))
    assert cmd["dispute"]["evidence"] == "receipt and delivery photo"


def test_evidence_is_pan_masked_before_it_goes_downstream() -> None:
    cmd = forwarded(dispute("dispute_evidence", evidence=f"customer paid with {PAN} on the 3rd"))
    assert cmd["rejection_reason"] is None
    assert PAN not in cmd["dispute"]["evidence"] and "[PAN]" in cmd["dispute"]["evidence"]


@pytest.mark.parametrize(
    ("cmd", "reason"),
    [
        (dispute("dispute_open"), "missing_dispute_reason"),
        (dispute("dispute_open", reason="because"), "invalid_dispute_reason"),
        (dispute("dispute_open", reason="general", evidence_due_at=T0), "invalid_evidence_due"),
        (
            dispute("dispute_open", reason="general", evidence_due_at=datetime(2027, 6, 1, tzinfo=UTC)),
            "invalid_evidence_due",
        ),
        (dispute("dispute_open", reason="general", outcome="won"), "unexpected_dispute_field"),
        (dispute("dispute_open", 0, reason="general"), "invalid_amount"),
        (dispute("dispute_close"), "missing_dispute_outcome"),
        (dispute("dispute_close", 100, outcome="won"), "unexpected_amount"),
        (dispute("dispute_evidence"), "invalid_evidence"),
        (dispute("dispute_evidence", evidence="   "), "invalid_evidence"),
        (dispute("dispute_evidence", evidence="x" * 4_001), "invalid_evidence"),
        (follow_up("dispute_close"), "missing_dispute_outcome"),
        (
            follow_up(
                "refund", dispute={"reason": "general", "evidence_due_at": None, "evidence": None, "outcome": None}
            ),
            "unexpected_dispute",
        ),
    ],
)
def test_invalid_dispute_commands_are_refused(cmd: dict[str, Any], reason: str) -> None:
    out = forwarded(cmd)
    assert out["rejection_reason"] == reason
    assert out["dispute"] is None  # a refused command forwards no evidence


def test_a_command_of_the_previous_schema_still_decodes() -> None:
    import io
    import json

    from fastavro import parse_schema, schemaless_writer
    from fastavro.schema import to_parsing_canonical_form

    from schemas.codec import MAGIC, crc64_avro_fingerprint, schema_text

    old = json.loads(schema_text("history/PaymentCommand.2"))
    body = io.BytesIO()
    schemaless_writer(body, parse_schema(old), follow_up("refund", amount_minor=5) | {"card_token": None})
    raw = MAGIC + crc64_avro_fingerprint(to_parsing_canonical_form(old)) + body.getvalue()
    result = ingest(raw, source_for(MERCHANT), TOKENIZER, LIMITS)
    assert isinstance(result, Forward) and result.command["dispute"] is None
    assert result.command["rejection_reason"] is None


# --- a card sealed by the producer (PaymentCommand v5, connectors/vault/intake.py) ---


@pytest.fixture(scope="module")
def intake(tmp_path_factory: pytest.TempPathFactory) -> tuple[Sealer, CardOpener]:
    store = FileKeyStore(tmp_path_factory.mktemp("intake") / "keys")
    store.init()
    return active_sealer(store), CardOpener(store)


def run_sealed(cmd: dict[str, Any], opener: CardOpener | None, limits: Limits = LIMITS) -> Forward | DeadLetter:
    return ingest(COMMANDS.encode(cmd, check=True), source_for(routed_key(cmd)), TOKENIZER, limits, opener)


def sealed_create(sealer: Sealer, **overrides: Any) -> dict[str, Any]:
    return sealer.seal_command(create(**overrides))


def test_a_sealed_card_is_opened_tokenized_and_dropped(intake: tuple[Sealer, CardOpener]) -> None:
    sealer, opener = intake
    cmd = sealed_create(sealer)
    raw = COMMANDS.encode(cmd, check=True)
    assert PanScanner([PAN]).scan(raw) == [] and CVC.encode() not in raw  # nothing readable on the topic
    result = run_sealed(cmd, opener)
    assert isinstance(result, Forward) and result.command["rejection_reason"] is None
    # The same token as the raw card gets: velocity history survives the producers' switch.
    assert result.command["card"] == forwarded(create())["card"]
    out = VALIDATED.encode(result.command, check=True)
    assert PanScanner([PAN]).scan(out) == [] and b"sealed" not in out


def test_a_sealed_card_is_validated_like_a_raw_one(intake: tuple[Sealer, CardOpener]) -> None:
    sealer, opener = intake
    for change, reason in (
        (card(number=PAN[:-1] + "3"), "invalid_card_number"),
        (card(exp_month=10, exp_year=2026), "expired_card"),
    ):
        result = run_sealed(sealer.seal_command(create(card=change)), opener)
        assert isinstance(result, Forward) and result.command["rejection_reason"] == reason
        assert result.command["card"] is None


def tampered(sealer: Sealer, what: str) -> dict[str, Any]:
    cmd = sealed_create(sealer)
    sealed = cmd["sealed_card"]
    if what == "ciphertext":
        sealed = sealed | {"ciphertext": sealed["ciphertext"][:-1] + bytes([sealed["ciphertext"][-1] ^ 1])}
    elif what == "replayed":  # the sealed card of another command of the same merchant
        sealed = sealed_create(sealer, command_id="cmd_other")["sealed_card"]
    elif what == "foreign":
        sealed = Sealer(
            "card-intake-v1", X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        ).seal(card(), cmd["merchant_id"], cmd["command_id"])
    elif what == "unknown_key":
        sealed = sealed | {"key_id": "card-intake-v9"}
    elif what == "short":
        sealed = sealed | {"ephemeral_public": b"\x01" * 5}
    return cmd | {"sealed_card": sealed}


@pytest.mark.parametrize(
    "what, reason",
    [
        ("ciphertext", "sealed_card_tampered"),
        ("replayed", "sealed_card_tampered"),
        ("foreign", "sealed_card_tampered"),
        ("unknown_key", "unknown_intake_key"),
        ("short", "sealed_card_malformed"),
    ],
)
def test_a_sealed_card_that_does_not_open_is_a_dead_letter(
    intake: tuple[Sealer, CardOpener], what: str, reason: str
) -> None:
    sealer, opener = intake
    result = run_sealed(tampered(sealer, what), opener)
    assert isinstance(result, DeadLetter)
    record = DEAD_LETTERS.decode(DEAD_LETTERS.encode(result.record, check=True))
    assert (record["stage"], record["reason"]) == ("ingest", reason)
    assert record["detail"] and PAN not in record["detail"]


def test_without_intake_keys_a_sealed_card_is_a_dead_letter(intake: tuple[Sealer, CardOpener]) -> None:
    result = run_sealed(sealed_create(intake[0]), None)
    assert isinstance(result, DeadLetter) and result.record["reason"] == "unknown_intake_key"


def test_a_sealed_card_goes_alone_and_only_on_a_create(intake: tuple[Sealer, CardOpener]) -> None:
    sealer, opener = intake
    sealed = sealed_create(sealer)["sealed_card"]
    for cmd, reason in (
        (create(sealed_card=sealed), "ambiguous_payment_method"),
        (create(card=None, card_token=CARD_TOKEN, sealed_card=sealed), "ambiguous_payment_method"),
        (follow_up("capture", sealed_card=sealed), "unexpected_payment_method"),
    ):
        result = run_sealed(cmd, opener)
        assert isinstance(result, Forward) and result.command["rejection_reason"] == reason


def test_raw_cards_are_accepted_by_default_and_refused_when_switched_off(intake: tuple[Sealer, CardOpener]) -> None:
    sealer, opener = intake
    assert LIMITS.accept_raw_card and forwarded(create())["rejection_reason"] is None
    strict = Limits(10**15, 255, 8, accept_raw_card=False)
    refused = run_sealed(create(), opener, strict)
    assert isinstance(refused, Forward) and refused.command["rejection_reason"] == "raw_card_refused"
    assert refused.command["card"] is None
    for ok in (sealed_create(sealer), create(card=None, card_token=CARD_TOKEN)):
        result = run_sealed(ok, opener, strict)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None


@settings(max_examples=50, deadline=None)
@given(
    key_id=st.text(max_size=50),
    ephemeral=st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32)),
    ciphertext=st.one_of(st.binary(max_size=300), st.binary(min_size=144, max_size=144)),
)
def test_any_sealed_card_that_is_not_ours_is_a_dead_letter_never_a_crash(
    intake: tuple[Sealer, CardOpener], key_id: str, ephemeral: bytes, ciphertext: bytes
) -> None:
    sealed = {"key_id": key_id, "ephemeral_public": ephemeral, "ciphertext": ciphertext}
    result = run_sealed(create(card=None, sealed_card=sealed), intake[1])
    assert isinstance(result, DeadLetter)
    assert result.record["reason"] in ("sealed_card_tampered", "unknown_intake_key", "sealed_card_malformed")
    DEAD_LETTERS.encode(result.record, check=True)


def test_the_raw_card_setting_defaults_to_accept() -> None:
    assert Settings.model_fields["ingest_accept_raw_card"].default is True


# --- payment methods (PaymentCommand v6): exactly the instrument the method needs ---

WALLET = {"provider": "apple_pay", "token": "wtok_0a1b2c3d4e5f6a7b", "cryptogram": "AgAAAAAABk4DWZ4C28yUQAAAAAA="}
MANDATE = {"scheme": "ach", "mandate_id": "MD-2026-0001", "account_last4": "6789"}


def refused_at_ingest(cmd: dict[str, Any], limits: Limits = LIMITS) -> str:
    result = ingest(COMMANDS.encode(cmd, check=True), source_for(routed_key(cmd)), TOKENIZER, limits)
    assert isinstance(result, Forward)
    return result.command["rejection_reason"]


def test_a_wallet_create_forwards_the_token_and_drops_the_cryptogram() -> None:
    cmd = forwarded(create(method="wallet", card=None, wallet=WALLET))
    assert cmd["rejection_reason"] is None
    assert (cmd["method"], cmd["card"]) == ("wallet", None)
    assert cmd["wallet"] == {"provider": "apple_pay", "token": WALLET["token"], "cryptogram_verified": False}
    assert WALLET["cryptogram"] not in repr(cmd)


def test_a_card_create_says_card_and_a_bank_or_bnpl_create_carries_its_instrument() -> None:
    assert forwarded(create())["method"] == "card"
    bank = forwarded(create(method="bank_transfer", card=None, bank_account=MANDATE))
    assert (bank["method"], bank["bank_account"], bank["capture_method"]) == ("bank_transfer", MANDATE, "automatic")
    bnpl = forwarded(create(method="bnpl", card=None, bnpl={"provider": "later"}))
    assert (bnpl["method"], bnpl["bnpl_provider"], bnpl["card"]) == ("bnpl", "later", None)


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"method": "wallet", "card": None, "wallet": WALLET | {"token": PAN}}, "pan_in_field"),
        ({"method": "wallet", "card": None, "wallet": WALLET | {"cryptogram": "4000056655665556"}}, "pan_in_field"),
        ({"method": "wallet", "card": None, "wallet": WALLET | {"token": "short"}}, "invalid_wallet"),
        ({"method": "wallet", "wallet": WALLET}, "ambiguous_payment_method"),  # a card too
        ({"method": "wallet", "card": None}, "missing_payment_method"),
        ({"card": None, "wallet": WALLET}, "ambiguous_payment_method"),  # a card create with a wallet
        (
            {"method": "bank_transfer", "card": None, "bank_account": MANDATE, "capture_method": "manual"},
            "capture_method_not_supported",
        ),
        (
            {"method": "bank_transfer", "card": None, "bank_account": MANDATE, "currency": "EUR"},
            "currency_not_supported",
        ),
        (
            {"method": "bank_transfer", "card": None, "bank_account": MANDATE | {"account_last4": "123456789"}},
            "invalid_bank_account",
        ),
        ({"method": "bank_transfer", "card": None, "bank_account": MANDATE | {"mandate_id": PAN}}, "pan_in_field"),
        ({"method": "bnpl", "card": None, "bnpl": {"provider": "Later Inc"}}, "invalid_bnpl"),
    ],
)
def test_a_create_with_the_wrong_instrument_is_refused(overrides: dict[str, Any], reason: str) -> None:
    assert refused_at_ingest(create(**overrides)) == reason


def test_a_signed_wallet_cryptogram_is_verified_against_the_wallet_providers_keys(tmp_path: Path) -> None:
    from connectors.vault.keys import WALLET_SIGNING, ActiveSigner
    from schemas.times import to_ms
    from streams.domain.authentication import WalletCryptogram, issue_cryptogram, token_digest

    store = FileKeyStore(tmp_path / "keys")
    store.init()
    limits = Limits(10**15, 255, 8, wallet_keys=store.public_keys(WALLET_SIGNING))
    base = create(method="wallet", card=None, wallet=WALLET)
    pid = derive_payment_id(base["merchant_id"], base["idempotency_key"])

    def signed(**changes: Any) -> dict[str, Any]:
        claims = (
            dict(
                key_id="wallet-signing-v1",
                provider="apple_pay",
                token_sha256=token_digest(WALLET["token"]),
                payment_id=pid,
                merchant_id=base["merchant_id"],
                amount_minor=base["amount_minor"],
                currency=base["currency"],
                created_at_ms=to_ms(base["occurred_at"]),
            )
            | changes
        )
        token = issue_cryptogram(WalletCryptogram(**claims), ActiveSigner.of(store, WALLET_SIGNING))
        return base | {"wallet": WALLET | {"cryptogram": token}}

    good = ingest(COMMANDS.encode(signed(), check=True), source_for(MERCHANT), TOKENIZER, limits)
    assert isinstance(good, Forward) and good.command["rejection_reason"] is None
    # the cryptogram stays here; that it verified goes on (ValidatedCommand v8)
    assert good.command["wallet"] == {"provider": "apple_pay", "token": WALLET["token"], "cryptogram_verified": True}
    assert refused_at_ingest(signed(), LIMITS) == "cryptogram_unknown_key"  # no wallet keys trusted
    assert refused_at_ingest(signed(amount_minor=1), limits) == "cryptogram_amount_mismatch"
    assert refused_at_ingest(signed(payment_id="pay_" + "0" * 32), limits) == "cryptogram_replayed"
    tampered = signed()
    tampered["wallet"]["cryptogram"] = tampered["wallet"]["cryptogram"][:-4] + "AAAA"
    assert refused_at_ingest(tampered, limits) == "cryptogram_invalid"
    # An opaque cryptogram (producers before version 7) is format-checked only, as before.
    assert refused_at_ingest(base, limits) is None
    # The verified one shifts the liability as a verified CAVV does, on every event; the
    # opaque one does not; both are the same request (the flag is no part of the fingerprint).
    from streams.domain.payments import Policy, decide, fingerprint
    from tests.unit.streams.conftest import saga_of

    opaque = forwarded(base)
    assert opaque["wallet"]["cryptogram_verified"] is False
    shifted, plain = decide(None, good.command, saga_of(), Policy()), decide(None, opaque, saga_of(), Policy())
    assert shifted.payment.liability_shift is True and shifted.payment.three_ds_status is None
    assert [e["liability_shift"] for e in shifted.events] == [True] * len(shifted.events) != []
    assert plain.payment.liability_shift is None and {e["liability_shift"] for e in plain.events} == {None}
    assert fingerprint(good.command) == fingerprint(opaque)


def test_the_method_must_have_a_rail_for_the_currency() -> None:
    limits = Limits(10**15, 255, 8, method_currencies={"card": frozenset({"USD"}), "bnpl": frozenset({"USD", "EUR"})})
    assert (
        refused_at_ingest(create(method="bnpl", card=None, bnpl={"provider": "later"}, currency="JPY"), limits)
        == "currency_not_supported"
    )
    assert refused_at_ingest(create(method="wallet", card=None, wallet=WALLET), limits) == "currency_not_supported"
    assert refused_at_ingest(create(), limits) is None


def test_bank_notices_carry_a_return_code_only_on_a_return() -> None:
    ret = forwarded(follow_up("bank_return", bank_notice={"return_code": "R01"}))
    assert (ret["rejection_reason"], ret["return_code"]) == (None, "R01")
    assert forwarded(follow_up("bank_settle"))["rejection_reason"] is None
    assert refused_at_ingest(follow_up("bank_return")) == "invalid_return_code"
    assert refused_at_ingest(follow_up("bank_return", bank_notice={"return_code": "oops"})) == "invalid_return_code"
    assert refused_at_ingest(follow_up("bank_settle", bank_notice={"return_code": "R01"})) == "unexpected_bank_notice"
    assert refused_at_ingest(follow_up("refund", bank_notice={"return_code": "R01"})) == "unexpected_bank_notice"
    assert (
        refused_at_ingest(follow_up("bank_return", amount_minor=5, bank_notice={"return_code": "R01"}))
        == "unexpected_amount"
    )


def test_a_follow_up_carries_no_payment_method() -> None:
    assert refused_at_ingest(follow_up("refund", wallet=WALLET)) == "unexpected_payment_method"
    assert refused_at_ingest(follow_up("capture", method="wallet")) == "unexpected_payment_method"
