"""Card number helpers shared by ingest, the producer CLI and anything that logs.

A PAN must never reach a log, a topic or a table: `mask_pans` is applied to any
text or bytes of unknown content before it is written anywhere.
"""

from __future__ import annotations

import re

from schemas.errors import ReasonedError

PAN_MIN_LEN = 12
PAN_MAX_LEN = 19

# Digit runs, optionally grouped by spaces or dashes, long enough to be a PAN.
_PAN_TEXT = re.compile(r"\d(?:[ -]?\d){11,}")
_PAN_TOKEN = re.compile(r"(?<![0-9A-Za-z])\d(?:[ -]?\d){11,}(?![0-9A-Za-z])")

# (brand, prefixes, valid lengths). Ranges per the networks' published IIN tables.
_BRANDS: tuple[tuple[str, tuple[tuple[int, int], ...], frozenset[int]], ...] = (
    ("amex", ((34, 34), (37, 37)), frozenset({15})),
    ("visa", ((4, 4),), frozenset({13, 16, 19})),
    ("mastercard", ((51, 55), (2221, 2720)), frozenset({16})),
    ("discover", ((6011, 6011), (644, 649), (65, 65)), frozenset({16, 19})),
    ("jcb", ((3528, 3589),), frozenset({16, 17, 18, 19})),
    ("diners", ((300, 305), (36, 36), (38, 39)), frozenset({14, 16, 19})),
    ("unionpay", ((62, 62),), frozenset({16, 17, 18, 19})),
)

CARD_BRANDS = frozenset(brand for brand, _, _ in _BRANDS)
# PAN length -> (brand, prefix width, lo, hi) in _BRANDS' order: brand_of tries only
# the ranges of brands that issue that length, and never measures a prefix again.
_RANGES_BY_LENGTH: dict[int, tuple[tuple[str, int, int, int], ...]] = {
    n: tuple((brand, len(str(lo)), lo, hi) for brand, ranges, lengths in _BRANDS if n in lengths for lo, hi in ranges)
    for n in range(1, 20)
}
PAN_STRICT_MIN_LEN = 13  # the shortest PAN of any brand we know (visa 13)


class CardError(ReasonedError, ValueError):
    """A card number that is refused. `reason` is a stable code; no PAN in the message."""


def check_pan(pan: str) -> tuple[str, str]:
    """(digits, brand) of a card number that passes length, Luhn and a known brand;
    spaces and dashes between digits are allowed. Raises CardError."""
    digits = pan.replace(" ", "").replace("-", "")
    if not (digits.isascii() and digits.isdigit() and PAN_STRICT_MIN_LEN <= len(digits) <= PAN_MAX_LEN):
        raise CardError("invalid_card_number", f"card number must be {PAN_STRICT_MIN_LEN}..{PAN_MAX_LEN} digits")
    if not luhn_valid(digits):
        raise CardError("invalid_card_number", "card number fails the Luhn check")
    brand = brand_of(digits)
    if brand is None:
        raise CardError(
            "unknown_card_brand", f"no supported card network for BIN {digits[:6]} and length {len(digits)}"
        )
    return digits, brand


# A digit's Luhn contribution when doubled (2d, less 9 past 9), as a digit.
_DOUBLED = str.maketrans("0123456789", "0246813579")


def luhn_valid(digits: str) -> bool:
    # Decimal digits of any script count by their value ("٤٢٤٢..." is a PAN too);
    # isdigit() would also admit "²", which int() refuses.
    if not digits.isdecimal():
        return False
    if not digits.isascii():
        digits = "".join(str(int(ch)) for ch in digits)
    # Every other digit from the right doubled; each digit summed as its ASCII byte
    # (less 48): C loops, ~3x faster than a Python loop per digit (two per card checked).
    backwards = digits[::-1]
    total = sum(backwards[::2].encode()) + sum(backwards[1::2].translate(_DOUBLED).encode())
    return (total - 48 * len(digits)) % 10 == 0


def brand_of(pan: str) -> str | None:
    """The card network for a PAN by IIN range and length, or None if unknown."""
    for brand, width, lo, hi in _RANGES_BY_LENGTH.get(len(pan), ()):
        if lo <= int(pan[:width]) <= hi:
            return brand
    return None


# Longer digit runs are masked whole: scanning them is not worth the risk.
_MAX_SCAN_RUN = 256


def _looks_like_pan(run: str) -> bool:
    """True if the run, or any window of it, could be a card number.

    Windows matter because in raw bytes a PAN may sit right after another digit
    (an Avro length byte, a neighbouring field), which defeats a whole-run check.
    """
    digits = re.sub(r"[ -]", "", run)
    if len(digits) > _MAX_SCAN_RUN:
        return True
    if PAN_MIN_LEN <= len(digits) <= PAN_MAX_LEN and luhn_valid(digits):
        return True
    for length in range(13, PAN_MAX_LEN + 1):
        for i in range(len(digits) - length + 1):
            window = digits[i : i + length]
            if brand_of(window) is not None and luhn_valid(window):
                return True
    return False


def contains_pan(text: str) -> bool:
    """Strict: a whole digit run (spaces or dashes allowed between digits) that is a
    plausible card number: 13..19 digits, Luhn valid, a known brand.

    For refusing input: unlike `mask_pans` it does not look at windows of longer
    runs nor at runs glued to letters, so identifiers such as hex UUIDs (about 2 in
    10,000 hold a Luhn-valid 16-digit run) are not refused by accident.
    """
    for m in _PAN_TOKEN.finditer(text):
        digits = re.sub(r"[ -]", "", m.group(0))
        if 13 <= len(digits) <= PAN_MAX_LEN and luhn_valid(digits) and brand_of(digits) is not None:
            return True
    return False


def mask_pans(text: str) -> tuple[str, int]:
    """Replace every card number in human text (logs, dead-letter details) by `[PAN]`;
    returns (text, count). A 12..19 digit run (spaces or dashes between digits) that is
    Luhn-valid, or holds a branded Luhn-valid window, is masked; two kinds of digits are
    numbers, not cards, and stay: the fraction of a decimal (the run right after
    `<digit>.`, e.g. a duration `0.5123456789012345`) and a run of more than 19 digits
    with no separator in it."""
    return _mask(text, numbers_are_not_pans=True)


def _mask(text: str, *, numbers_are_not_pans: bool) -> tuple[str, int]:
    count = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count
        run = m.group(0)
        if numbers_are_not_pans:
            start = m.start()
            if start >= 2 and text[start - 1] == "." and text[start - 2].isdecimal():
                # A decimal's fraction is its digits up to the first separator; what
                # follows a space or dash is text again ("took 1.2 4242...").
                fraction = re.match(r"\d*", run)[0]
                rest, found = _mask(run[len(fraction) :], numbers_are_not_pans=True)
                count += found
                return fraction + rest
            if len(run) > PAN_MAX_LEN and run.isdecimal():
                return run  # a longer number
        if _looks_like_pan(run):
            count += 1
            return "[PAN]"
        return run

    return _PAN_TEXT.sub(sub, text), count


def mask_pans_bytes(data: bytes) -> tuple[bytes, int]:
    """`mask_pans` for raw messages bound for the dead-letter topic, stricter: in binary
    a PAN may sit right after a digit or a dot of another field (an Avro length byte),
    so every run is scanned, windows of longer runs too, and runs past 256 digits are
    masked whole. Bytes that are not UTF-8 pass through unchanged (surrogateescape);
    digits of any script are masked as in text."""
    text, count = _mask(data.decode("utf-8", "surrogateescape"), numbers_are_not_pans=False)
    return text.encode("utf-8", "surrogateescape"), count
