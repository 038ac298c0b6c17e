"""Card helpers: Luhn, brand by IIN range, and PAN masking of text and raw bytes."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from schemas.cards import PAN_MAX_LEN, brand_of, contains_pan, luhn_valid, mask_pans, mask_pans_bytes
from schemas.codec import Codec

TEST_CARDS = {
    "4242424242424242": "visa",
    "5555555555554444": "mastercard",
    "4000056655665556": "visa",
    "378282246310005": "amex",
    "6011111111111117": "discover",
}
PAN = "4242424242424242"


def luhn_complete(payload: str) -> str:
    """Append the check digit that makes `payload` Luhn-valid (computed independently)."""
    total = 0
    for i, ch in enumerate(reversed(payload)):
        d = int(ch)
        if i % 2 == 0:  # these positions are doubled once the check digit is appended
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return payload + str((10 - total % 10) % 10)


# --- Luhn and brand ---


@pytest.mark.parametrize("pan", TEST_CARDS)
def test_public_test_cards_are_luhn_valid(pan: str) -> None:
    assert luhn_valid(pan)


@pytest.mark.parametrize(
    "pan", ["4242424242424241", "5555555555554445", "378282246310006", "4242 4242 4242 4242", "", "42a2"]
)
def test_luhn_rejects_bad_check_digit_and_non_digits(pan: str) -> None:
    assert not luhn_valid(pan)


@pytest.mark.parametrize(("pan", "brand"), TEST_CARDS.items())
def test_brand_of_public_test_cards(pan: str, brand: str) -> None:
    assert brand_of(pan) == brand


@pytest.mark.parametrize(
    ("pan", "brand"),
    [
        ("2221000000000009", "mastercard"),  # 2-series
        ("4222222222222", "visa"),  # 13 digits
        ("424242424242424", None),  # visa prefix, impossible length
        ("1234567812345670", None),  # Luhn-valid, no network
    ],
)
def test_brand_of_checks_prefix_and_length(pan: str, brand: str | None) -> None:
    assert brand_of(pan) == brand


# The networks' IIN ranges as the test reads them: (brand, first digits as text, lengths).
IIN_TABLE = [
    ("amex", ["34", "37"], {15}),
    ("visa", ["4"], {13, 16, 19}),
    ("mastercard", [str(p) for p in range(51, 56)] + [str(p) for p in range(2221, 2721)], {16}),
    ("discover", ["6011", "644", "645", "646", "647", "648", "649", "65"], {16, 19}),
    ("jcb", [str(p) for p in range(3528, 3590)], {16, 17, 18, 19}),
    ("diners", ["300", "301", "302", "303", "304", "305", "36", "38", "39"], {14, 16, 19}),
    ("unionpay", ["62"], {16, 17, 18, 19}),
]


@given(
    st.text(string.digits, min_size=1, max_size=19)
    | st.builds(
        lambda prefix, rest: (prefix + rest)[:19],
        st.sampled_from([p for _, prefixes, _ in IIN_TABLE for p in prefixes]),
        st.text(string.digits, min_size=9, max_size=16),
    )
)
def test_brand_of_is_the_first_network_whose_range_and_lengths_take_the_number(pan: str) -> None:
    expected = next(
        (brand for brand, prefixes, lengths in IIN_TABLE if len(pan) in lengths and pan.startswith(tuple(prefixes))),
        None,
    )
    assert brand_of(pan) == expected


def test_luhn_complete_helper_agrees_with_the_test_cards() -> None:
    assert all(luhn_complete(pan[:-1]) == pan for pan in TEST_CARDS)


def luhn_by_digit(text: str) -> bool:
    """Luhn as defined, one digit at a time (the reference for luhn_valid's C-loop form)."""
    if not text.isdecimal():
        return False
    total = 0
    for i, ch in enumerate(reversed(text)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


# Decimal digits of ASCII and two other scripts, and things that are not digits.
_LUHN_CHARS = st.sampled_from([*string.digits, *(chr(0x660 + d) for d in range(10)), "\uff14", "²", "a", " ", "-"])


@given(st.text(_LUHN_CHARS, max_size=24) | st.text(max_size=24))
def test_luhn_valid_is_luhn_digit_by_digit(text: str) -> None:
    assert luhn_valid(text) == luhn_by_digit(text)


@given(st.text(string.digits, min_size=1, max_size=23))
def test_a_luhn_completed_number_is_valid_and_any_other_check_digit_is_not(payload: str) -> None:
    pan = luhn_complete(payload)
    assert luhn_valid(pan)
    assert not any(luhn_valid(payload + d) for d in string.digits if d != pan[-1])


# --- masking text ---


@pytest.mark.parametrize(
    ("text", "expected", "count"),
    [
        (f"card {PAN} declined", "card [PAN] declined", 1),
        ("card 4242 4242 4242 4242 declined", "card [PAN] declined", 1),
        ("card 4242-4242-4242-4242 declined", "card [PAN] declined", 1),
        ("amex 3782 822463 10005.", "amex [PAN].", 1),
        (f"{PAN},5555555555554444", "[PAN],[PAN]", 2),
        (f"order=7{PAN}", "order=[PAN]", 1),  # preceded by another digit: 17 digits, a window is a card
        (f"n=7 {PAN}9", "n=[PAN]", 1),  # grouped with neighbouring digits on both sides
        (f"card {PAN} 123", "card [PAN]", 1),  # a PAN and its CVC: separated digits are scanned whole
    ],
)
def test_mask_pans(text: str, expected: str, count: int) -> None:
    assert mask_pans(text) == (expected, count)


@pytest.mark.parametrize(
    "text",
    [
        "at=1732540000000",  # epoch millis
        "from 1732540000000 to 1732540000001",
        "4242424242424241",  # fails Luhn
        "order 12345678901",  # too short to be a PAN
        "amount 4242.42 USD",
        f"runtime=0.{PAN[:16]}",  # a float's fraction (a worker log's duration)
        f"1.{PAN}s",
        "id " + "4242424242424242" * 2,  # a number of 32 digits, not a card
    ],
)
def test_mask_pans_leaves_non_pans_alone(text: str) -> None:
    assert mask_pans(text) == (text, 0)


def test_very_long_digit_runs_are_a_number_in_text_and_masked_whole_in_bytes() -> None:
    assert mask_pans("x" + "1" * 300 + "x") == ("x" + "1" * 300 + "x", 0)
    assert mask_pans_bytes(b"x" + b"1" * 300 + b"x") == (b"x[PAN]x", 1)
    assert mask_pans_bytes(f"0.{PAN}".encode()) == (b"0.[PAN]", 1)  # binary has no decimals


# --- masking bytes ---


def test_mask_pans_bytes_plain() -> None:
    assert mask_pans_bytes(b"\x00\xffcard " + PAN.encode() + b"\x01") == (b"\x00\xffcard [PAN]\x01", 1)
    assert mask_pans_bytes(b"ts 1732540000000") == (b"ts 1732540000000", 0)


def test_mask_pans_bytes_removes_the_pan_from_an_avro_command() -> None:
    command = {
        "command_id": "cmd_1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1",
        "payment_id": None,
        "amount_minor": 1000,
        "currency": "USD",
        "capture_method": None,
        "card": {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        "metadata": {"note": f"card {PAN}", "7": PAN},  # a digit right before a PAN
        "occurred_at": datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
    }
    data = Codec("PaymentCommand").encode(command)
    assert data.count(PAN.encode()) == 3

    masked, count = mask_pans_bytes(data)

    assert PAN.encode() not in masked
    assert count == 3
    assert masked.startswith(data[:10])  # the header and the rest survive


# --- properties ---


visa_like = st.text(string.digits, min_size=14, max_size=14).map(lambda body: luhn_complete("4" + body))


@given(visa_like, st.text(string.printable, max_size=60), st.text(string.printable, max_size=60))
def test_an_embedded_pan_never_survives_text_masking(pan: str, before: str, after: str) -> None:
    """Anywhere in text but a decimal's fraction or a longer number (the next two)."""
    assume(not re.search(r"\d\.\d*$", before))  # digits glued to a decimal's fraction are that fraction
    assume(
        not (before[-1:].isdigit() or after[:1].isdigit())
        or len(re.search(r"\d*$", before)[0] + pan + re.match(r"\d*", after)[0]) <= PAN_MAX_LEN
    )
    masked, count = mask_pans(before + pan + after)
    assert pan not in masked
    assert count >= 1


@pytest.mark.parametrize("text", ["took 1.2 4242424242424242 ms", "took 1.25-4242424242424242"])
def test_a_pan_after_a_decimal_and_a_separator_is_masked(text: str) -> None:
    # Found by the property above: the fraction's exemption once swallowed the whole run.
    masked, count = mask_pans(text)
    assert "4242424242424242" not in masked and count == 1


@given(st.integers(0, 10**6), visa_like, st.sampled_from(["", "s", " ms", ")"]))
def test_a_decimals_fraction_is_never_masked(whole: int, digits: str, unit: str) -> None:
    text = f"took {whole}.{digits}{unit}"
    assert mask_pans(text) == (text, 0)


@given(st.text(string.digits, min_size=PAN_MAX_LEN + 1, max_size=80), st.sampled_from(["", " ", "=", "#"]))
def test_a_number_longer_than_a_card_is_never_masked_in_text(number: str, before: str) -> None:
    text = f"id{before}{number} end"
    assert mask_pans(text) == (text, 0)


@given(visa_like, st.binary(max_size=60), st.binary(max_size=60))
def test_an_embedded_pan_never_survives_bytes_masking(pan: str, before: bytes, after: bytes) -> None:
    masked, count = mask_pans_bytes(before + pan.encode() + after)
    assert pan.encode() not in masked
    assert count >= 1


@given(st.text(string.ascii_letters + " .,:=", max_size=80))
def test_text_without_digits_is_unchanged(text: str) -> None:
    assert mask_pans(text) == (text, 0)


@given(st.uuids())
def test_contains_pan_never_refuses_a_uuid(u) -> None:
    assert not contains_pan(f"cmd_{u.hex}") and not contains_pan(str(u)) and not contains_pan(u.hex)


def test_contains_pan_ignores_a_luhn_valid_run_inside_a_hex_id() -> None:
    assert not contains_pan("cmd_e234578b38e5435693491613762c46e5")


@pytest.mark.parametrize(
    "text", ["4242424242424242", "ord 4242 4242 4242 4242", "x-378282246310005.", "card:6011111111111117"]
)
def test_contains_pan_finds_real_card_numbers(text: str) -> None:
    assert contains_pan(text)


@pytest.mark.parametrize("text", ["1732540000000", "4242424242424241", "12345678901234567890123"])
def test_contains_pan_ignores_timestamps_bad_luhn_and_long_runs(text: str) -> None:
    assert not contains_pan(text)


ARABIC_INDIC_PAN = "".join(chr(0x660 + int(c)) for c in "4242424242424242")


def test_a_pan_in_other_script_digits_is_found_and_masked() -> None:
    assert luhn_valid(ARABIC_INDIC_PAN) and contains_pan(f"note {ARABIC_INDIC_PAN}")
    assert mask_pans(f"note {ARABIC_INDIC_PAN}") == ("note [PAN]", 1)
    assert mask_pans_bytes(f"x {ARABIC_INDIC_PAN} \xff".encode() + b"\xfe") == (b"x [PAN] \xc3\xbf\xfe", 1)


def test_digit_like_characters_that_are_not_decimal_are_not_a_card_number() -> None:
    assert not luhn_valid("²000000000000009")  # isdigit() is True, int() refuses it
    assert mask_pans("²000000000000009") == ("²000000000000009", 0)
