"""A PAN scanner: proof that no card number leaked into a blob of bytes.

Given the card numbers a test fed in (known PANs), it finds each of them in any
bytes as:
- `raw`     the ASCII digits, also grouped by spaces or dashes (4-4-4-4, amex 4-6-5);
- `hex`     hex of the ASCII digits (the hex of "0".."9" is itself all digits, so
            upper and lower case are the same needle);
- `base64`  base64 of the ASCII digits at each of the three byte alignments (a PAN
            inside a longer base64 string starts at offset 0, 1 or 2 mod 3). The
            base64 of ASCII digits never uses `+` or `/`, so url-safe base64 is covered;
- `utf16`   UTF-16 LE and BE of the digits;
- `bcd`     packed BCD (two digits per byte, odd lengths padded with F or a leading 0);

and, for card numbers it was not told about, any `unknown` run of 13-19 digits
(single spaces or dashes allowed between digits) that passes Luhn and starts
with 2-6 (the major industry identifiers of every card network we accept; this
excludes epoch timestamps, which start with 1). A digit run that is part of a
hex identifier (a token of hex digits with a letter in it, like `uuid4().hex`)
is not a PAN and is not flagged.

Findings carry where, the offset, the encoding, the PAN masked to BIN and last 4,
and the surrounding bytes with the match replaced: a report never re-leaks.

Compressed storage (RocksDB SST blocks, ClickHouse parts, gzip logs) hides bytes
from a byte scan: read stores through their client (`rocksdb_items`), not as files.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from schemas.cards import PAN_MAX_LEN, luhn_valid, mask_pans

# The public test cards of the issuers' documentation (the demo uses these).
PUBLIC_TEST_PANS = (
    "4242424242424242",
    "4000056655665556",
    "4000000000000002",
    "4111111111111111",
    "5555555555554444",
    "2223003122003222",
    "5105105105105100",
    "378282246310005",
    "371449635398431",
    "6011111111111117",
    "6011000990139424",
    "3056930009020004",
    "36227206271667",
    "3566002020360505",
    "6200000000000005",
)

UNKNOWN_MIN_DIGITS = 13
CONTEXT_BYTES = 24
MAX_FINDINGS = 1000  # per scan: a blob full of PANs is reported, not enumerated
_CARD_MII = b"23456"
_DIGIT_RUN = re.compile(rb"(?<![0-9])[0-9](?:[ -]?[0-9]){12,}(?![0-9])")
_SEPARATORS = re.compile(rb"[ -]")
_ALNUM = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_HEX = frozenset(b"0123456789abcdefABCDEF")


@dataclass(frozen=True)
class Finding:
    where: str
    offset: int
    encoding: str
    pan: str  # masked: BIN and last 4 only
    context: str  # the surrounding bytes, escaped, with the match masked

    def __str__(self) -> str:
        return f"{self.where}@{self.offset}: {self.encoding} {self.pan} in {self.context}"


def mask_pan(pan: str) -> str:
    return pan[:6] + "*" * (len(pan) - 10) + pan[-4:]


def base64_needles(data: bytes) -> list[bytes]:
    """The base64 characters that depend on `data` alone, at offsets 0, 1 and 2 mod 3."""
    needles = []
    for align in range(3):
        encoded = base64.b64encode(b"\0" * align + data)
        first = -(-8 * align // 6)  # the first character with no bit of the filler
        last = 8 * (align + len(data)) // 6  # characters after this mix in the next bytes
        needles.append(encoded[first:last])
    return needles


def _grouped(pan: str) -> list[bytes]:
    """The printed forms: amex 4-6-5, diners 4-6-4, the rest in fours."""
    sizes = {15: (4, 6, 5), 14: (4, 6, 4)}.get(len(pan)) or (4,) * (len(pan) // 4) + (
        (len(pan) % 4,) if len(pan) % 4 else ()
    )
    parts, i = [], 0
    for size in sizes:
        parts.append(pan[i : i + size])
        i += size
    return [sep.join(parts).encode() for sep in (" ", "-")]


def needles_for(pan: str) -> list[tuple[str, bytes]]:
    digits = pan.encode()
    needles = [("raw", digits), *(("raw", g) for g in _grouped(pan)), ("hex", digits.hex().encode())]
    needles += [("base64", n) for n in base64_needles(digits)]
    needles += [("utf16", pan.encode("utf-16-le")), ("utf16", pan.encode("utf-16-be"))]
    padded = [pan] if len(pan) % 2 == 0 else [pan + "f", "0" + pan]
    needles += [("bcd", bytes.fromhex(p)) for p in padded]
    return needles


# A hex run this long around a digit run is an id (uuid4().hex is 32), not a card number.
HEX_ID_MIN_LEN = 28


class PanScanner:
    """Built once from the known PANs, then run over any number of blobs."""

    def __init__(self, known_pans: Iterable[str] = PUBLIC_TEST_PANS) -> None:
        self._needles: list[tuple[str, str, bytes]] = []
        for pan in dict.fromkeys(known_pans):
            if not (pan.isascii() and pan.isdigit() and UNKNOWN_MIN_DIGITS <= len(pan) <= PAN_MAX_LEN):
                raise ValueError(f"a known PAN must be {UNKNOWN_MIN_DIGITS}..{PAN_MAX_LEN} ASCII digits")
            self._needles += [(pan, encoding, needle) for encoding, needle in needles_for(pan)]

    def scan(self, blob: bytes, where: str = "") -> list[Finding]:
        findings: list[Finding] = []
        known_spans: list[tuple[int, int]] = []
        for pan, encoding, needle in self._needles:
            start = blob.find(needle)
            while start != -1 and len(findings) < MAX_FINDINGS:
                end = start + len(needle)
                known_spans.append((start, end))
                findings.append(_finding(blob, where, start, end, encoding, pan))
                start = blob.find(needle, start + 1)
        for m in _DIGIT_RUN.finditer(blob):
            if len(findings) >= MAX_FINDINGS:
                break
            for start, end in _candidates(m):
                digits = _SEPARATORS.sub(b"", blob[start:end])
                if not (
                    UNKNOWN_MIN_DIGITS <= len(digits) <= PAN_MAX_LEN
                    and digits[0] in _CARD_MII
                    and luhn_valid(digits.decode())
                ):
                    continue
                if not any(s <= start and end <= e for s, e in known_spans) and not _inside_hex_id(blob, start, end):
                    findings.append(_finding(blob, where, start, end, "unknown", digits.decode()))
                break
        return sorted(findings, key=lambda f: (f.offset, f.encoding))


def scan(blob: bytes, known_pans: Iterable[str] = PUBLIC_TEST_PANS, where: str = "") -> list[Finding]:
    """One-off form of `PanScanner(known_pans).scan(blob, where)`."""
    return PanScanner(known_pans).scan(blob, where)


def rocksdb_items(path: Path) -> Iterator[tuple[bytes, bytes]]:
    """Every (key, value) of a RocksDB store as stored bytes, read-only (works while
    its owner holds it open). Scan these, not the SST files: their blocks are compressed."""
    from rocksdict import AccessType, Options, Rdict

    db = Rdict(str(path), Options(raw_mode=True), access_type=AccessType.read_only())
    try:
        yield from db.items()
    finally:
        db.close()


def _candidates(m: re.Match[bytes]) -> list[tuple[int, int]]:
    """The whole run, then its unseparated pieces: in binary data a PAN may follow
    a digit and a space (an Avro length byte is 0x20 for 16 characters)."""
    pieces = [(m.start() + p.start(), m.start() + p.end()) for p in re.finditer(rb"[0-9]{13,}", m.group(0))]
    return [m.span(), *(p for p in pieces if p != m.span())]


def _inside_hex_id(blob: bytes, start: int, end: int) -> bool:
    """True if the digits are part of a longer all-hex token holding a letter (an id),
    or of a long hex run (a `uuid4().hex` glued to a binary length byte that happens
    to be a letter, as Avro strings are)."""
    has_letter = lambda run: any(not 48 <= b <= 57 for b in run)  # noqa: E731
    lo, hi = _around(blob, start, end, _ALNUM)
    token = blob[lo:hi]
    if (lo, hi) != (start, end) and all(b in _HEX for b in token) and has_letter(token):
        return True
    lo, hi = _around(blob, start, end, _HEX)
    return hi - lo >= HEX_ID_MIN_LEN and has_letter(blob[lo:hi])


def _around(blob: bytes, start: int, end: int, chars: bytes | frozenset[int]) -> tuple[int, int]:
    """The widest span around blob[start:end] made of `chars`."""
    while start > 0 and blob[start - 1] in chars:
        start -= 1
    while end < len(blob) and blob[end] in chars:
        end += 1
    return start, end


def _finding(blob: bytes, where: str, start: int, end: int, encoding: str, pan: str) -> Finding:
    before = _show(blob[max(0, start - CONTEXT_BYTES) : start])
    after = _show(blob[end : end + CONTEXT_BYTES])
    return Finding(where, start, encoding, mask_pan(pan), f"{before}[{encoding}:{mask_pan(pan)}]{after}")


def _show(data: bytes) -> str:
    # Escape the bytes, then mask any other card number that sits in the context.
    text = data.decode("latin-1").encode("unicode_escape").decode("ascii")
    return mask_pans(text)[0]
