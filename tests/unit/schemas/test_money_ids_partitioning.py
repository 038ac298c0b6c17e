"""Money (ISO 4217 minor units), derived ids, and the key -> partition mapping."""

from __future__ import annotations

import re

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import given
from hypothesis import strategies as st

from schemas.ids import derive_dlq_id, derive_outcome_id, derive_payment_id
from schemas.money import exponent, format_minor, is_currency
from schemas.partitioning import partition_for

# --- money ---


@pytest.mark.parametrize(("currency", "exp"), [("JPY", 0), ("USD", 2), ("EUR", 2), ("KWD", 3), ("CLF", 4)])
def test_exponents(currency: str, exp: int) -> None:
    assert exponent(currency) == exp


def test_exponent_of_unknown_code_raises() -> None:
    with pytest.raises(KeyError):
        exponent("XYZ")


@pytest.mark.parametrize(
    ("amount", "currency", "text"),
    [
        (123_456, "USD", "1234.56 USD"),
        (5, "USD", "0.05 USD"),
        (-5, "USD", "-0.05 USD"),
        (0, "EUR", "0.00 EUR"),
        (1000, "JPY", "1000 JPY"),
        (-1000, "JPY", "-1000 JPY"),
        (1, "KWD", "0.001 KWD"),
        (12_345, "KWD", "12.345 KWD"),
    ],
)
def test_format_minor(amount: int, currency: str, text: str) -> None:
    assert format_minor(amount, currency) == text


@pytest.mark.parametrize("amount", [12.5, True])
def test_format_minor_refuses_non_integers(amount: object) -> None:
    with pytest.raises(AssertionError):
        format_minor(amount, "USD")  # type: ignore[arg-type]


@pytest.mark.parametrize("code", ["USD", "JPY", "KWD", "EUR"])
def test_is_currency_accepts_iso_codes(code: str) -> None:
    assert is_currency(code)


@pytest.mark.parametrize("code", ["XYZ", None, "usd", "", "XAU", "USD "])
def test_is_currency_rejects(code: str | None) -> None:
    assert not is_currency(code)


# --- ids ---


def test_payment_id_is_deterministic_and_well_formed() -> None:
    pid = derive_payment_id("m_acme", "order-1")
    assert pid == derive_payment_id("m_acme", "order-1")
    assert re.fullmatch(r"pay_[0-9a-f]{32}", pid)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (("a", "bc"), ("ab", "c")),  # separator ambiguity
        (("m_acme", "k1"), ("m_globex", "k1")),  # same key, other merchant
        (("m_acme", "k1"), ("m_acme", "k2")),
        (("m", "k"), ("k", "m")),
        (("m", ""), ("", "m")),
    ],
)
def test_payment_ids_differ(a: tuple[str, str], b: tuple[str, str]) -> None:
    assert derive_payment_id(*a) != derive_payment_id(*b)


# Strings as they arrive from Avro: valid UTF-8, so no lone surrogates. Merchant ids
# cannot hold the unit separator (ingest requires printable ones).
keys = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
merchant_ids = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x1f"), max_size=12)


@given(merchant_ids, keys, merchant_ids, keys)
def test_distinct_requests_get_distinct_payment_ids(m1: str, k1: str, m2: str, k2: str) -> None:
    if (m1, k1) != (m2, k2):
        assert derive_payment_id(m1, k1) != derive_payment_id(m2, k2)


def test_outcome_and_dlq_ids() -> None:
    assert derive_outcome_id("cmd_1") == derive_outcome_id("cmd_1")
    assert derive_outcome_id("cmd_1") != derive_outcome_id("cmd_2")
    assert re.fullmatch(r"out_[0-9a-f]{32}", derive_outcome_id("cmd_1"))
    assert re.fullmatch(r"dlq_[0-9a-f]{32}", derive_dlq_id("payment-commands", 1, 23))
    assert derive_dlq_id("t", 1, 23) == derive_dlq_id("t", 1, 23)
    assert derive_dlq_id("t", 1, 23) != derive_dlq_id("t", 12, 3)
    assert derive_dlq_id("t", 1, 23) != derive_dlq_id("u", 1, 23)


def test_id_kinds_never_collide() -> None:
    # The prefix is hashed too: inputs that join to the same string under two kinds
    # still give two different uuids.
    assert derive_outcome_id("m\x1fk")[4:] != derive_payment_id("m", "k")[4:]


# --- partitioning ---


def aiokafka_partition(key: bytes, partitions: int) -> int:
    return DefaultPartitioner()(key, list(range(partitions)), list(range(partitions)))


@given(st.binary(max_size=80), st.integers(1, 256))
def test_partition_for_matches_aiokafka(key: bytes, partitions: int) -> None:
    assert partition_for(key, partitions) == (murmur2(key) & 0x7FFFFFFF) % partitions
    assert partition_for(key, partitions) == aiokafka_partition(key, partitions)


@given(merchant_ids, keys)
def test_partition_of_payment_ids_matches_aiokafka(merchant: str, key: str) -> None:
    pid = derive_payment_id(merchant, key).encode()
    assert partition_for(pid, 8) == aiokafka_partition(pid, 8)


def test_partition_for_needs_partitions() -> None:
    with pytest.raises(AssertionError):
        partition_for(b"k", 0)


@given(merchant_ids, keys)
def test_ids_are_uuid5_as_they_always_were(merchant_id: str, key: str) -> None:
    # Ids already on the topics and in the books were uuid.uuid5's; the fast path must
    # derive the same ones, or a retried create would get a new payment.
    import uuid

    from schemas.ids import _NS, _SEP

    expected = "pay_" + uuid.uuid5(_NS, "pay_" + _SEP + _SEP.join((merchant_id, key))).hex
    assert derive_payment_id(merchant_id, key) == expected
