"""The PAN scanner: every encoding of a known PAN, unknown Luhn-valid runs, no false alarms on ids."""

from __future__ import annotations

import base64
import json
import os
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rocksdict import Options, Rdict

from connectors.vault.scan import PUBLIC_TEST_PANS, PanScanner, base64_needles, mask_pan, rocksdb_items, scan
from schemas.cards import brand_of, luhn_valid
from schemas.codec import Codec

PAN = "4242424242424242"
AMEX = "378282246310005"
SCANNER = PanScanner(PUBLIC_TEST_PANS)


def encodings(kind: str) -> list[str]:
    return sorted({f.encoding for f in SCANNER.scan(kind.encode()) if f.encoding != "unknown"})


def only(findings: list, encoding: str) -> list:
    return [f for f in findings if f.encoding == encoding]


@pytest.mark.parametrize("pan", PUBLIC_TEST_PANS)
def test_the_public_test_pans_are_valid_cards(pan: str) -> None:
    assert luhn_valid(pan) and brand_of(pan) is not None


@pytest.mark.parametrize("pan", PUBLIC_TEST_PANS)
@pytest.mark.parametrize(
    ("encoding", "encode"),
    [
        ("raw", lambda p: p.encode()),
        ("hex", lambda p: p.encode().hex().encode()),
        ("hex", lambda p: p.encode().hex().upper().encode()),
        ("utf16", lambda p: p.encode("utf-16-le")),
        ("utf16", lambda p: p.encode("utf-16-be")),
    ],
)
def test_each_encoding_of_each_known_pan_is_found_in_the_middle_of_noise(pan: str, encoding: str, encode) -> None:  # type: ignore[no-untyped-def]
    prefix, suffix = b"\x00\xffheader:", b";trailer\x01"
    blob = prefix + encode(pan) + suffix
    found = only(SCANNER.scan(blob, where="t/0@7"), encoding)
    assert len(found) == 1
    assert (found[0].where, found[0].offset, found[0].pan) == ("t/0@7", len(prefix), mask_pan(pan))


@pytest.mark.parametrize("pan", PUBLIC_TEST_PANS)
@pytest.mark.parametrize("align", [0, 1, 2])
@pytest.mark.parametrize("urlsafe", [False, True])
def test_base64_is_found_at_every_alignment_inside_a_longer_payload(pan: str, align: int, urlsafe: bool) -> None:
    payload = os.urandom(30 + align) + pan.encode() + os.urandom(17)  # the PAN starts at offset align mod 3
    encode = base64.urlsafe_b64encode if urlsafe else base64.b64encode
    blob = b'{"raw_value": "' + encode(payload) + b'"}'
    assert pan.encode() not in blob
    assert [f.pan for f in only(SCANNER.scan(blob), "base64")] == [mask_pan(pan)]


def test_base64_needles_match_a_direct_encoding() -> None:
    needles = base64_needles(PAN.encode())
    assert needles[0] == base64.b64encode(PAN.encode())[:21]  # 128 bits: 21 whole characters
    for align, needle in enumerate(needles):
        assert needle in base64.b64encode(b"xy"[:align] + PAN.encode() + b"zz")


@pytest.mark.parametrize(
    "text",
    ["card 4242 4242 4242 4242 ok", "card 4242-4242-4242-4242 ok", "amex 3782 822463 10005."],
)
def test_printed_groupings_are_found(text: str) -> None:
    assert only(SCANNER.scan(text.encode()), "raw")


def test_packed_bcd_is_found() -> None:
    assert only(SCANNER.scan(b"\x02\x10" + bytes.fromhex(PAN) + b"\x00"), "bcd")
    assert only(SCANNER.scan(b"\x02" + bytes.fromhex(AMEX + "f")), "bcd")
    assert only(SCANNER.scan(bytes.fromhex("0" + AMEX) + b"\x99"), "bcd")


def test_a_pan_inside_an_avro_message_is_found() -> None:
    cmd = {
        "command_id": "c1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1",
        "payment_id": None,
        "amount_minor": 1999,
        "currency": "USD",
        "capture_method": None,
        "card": {"number": PAN, "exp_month": 12, "exp_year": 2030, "cvc": "737"},
        "metadata": {},
        "occurred_at": datetime(2026, 11, 25, tzinfo=UTC),
    }
    blob = Codec("PaymentCommand").encode(cmd)
    assert [f.encoding for f in SCANNER.scan(blob)] == ["raw"]
    assert [f.pan for f in PanScanner([]).scan(blob)] == [mask_pan(PAN)]  # and as an unknown PAN


def test_unknown_luhn_valid_runs_are_found_and_reported_masked() -> None:
    unknown = "4000002500003155"  # a valid visa number nobody told the scanner about
    assert unknown not in PUBLIC_TEST_PANS
    for blob in (f"charging {unknown} now".encode(), f"x\x20{unknown}\x08".encode(), f"id 1 {unknown}".encode()):
        found = SCANNER.scan(blob)
        assert [(f.encoding, f.pan) for f in found] == [("unknown", "400000******3155")]
        assert unknown not in str(found[0]) and unknown not in found[0].context


def test_a_known_pan_is_reported_once_not_also_as_unknown() -> None:
    assert [f.encoding for f in SCANNER.scan(f"pan={PAN}".encode())] == ["raw"]


def test_the_report_never_re_leaks_a_pan() -> None:
    blob = f"a={PAN} b={PUBLIC_TEST_PANS[1]} hex={PAN.encode().hex()}".encode()
    report = "\n".join(map(str, SCANNER.scan(blob)))
    for pan in (PAN, PUBLIC_TEST_PANS[1]):
        assert pan not in report and pan.encode().hex() not in report
    assert "[raw:424242******4242]" in report


@pytest.mark.parametrize(
    "text",
    [
        "offset 1732540000000 ts 1732540000000123",  # epoch millis and micros start with 1
        "amount 424242 last4 4242 bin 42424242",  # short runs
        "4242424242424241",  # Luhn fails
        "12345678901234567890123",  # longer than any PAN
        "pay_" + "ab4000002500003155cdef0123456789ab",  # a hex id holding a Luhn-valid visa-like run
        "tok_" + "a" * 32,
    ],
)
def test_no_false_alarms(text: str) -> None:
    assert SCANNER.scan(text.encode()) == []


def test_a_pan_glued_to_a_word_is_still_found() -> None:
    assert [f.encoding for f in PanScanner([]).scan(b"card4000002500003155;")] == ["unknown"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.uuids(version=4), min_size=1, max_size=20))
def test_hex_ids_are_never_flagged(ids: list[uuid.UUID]) -> None:
    blob = json.dumps(
        {"ids": [f"pay_{u.hex}" for u in ids], "raw": [u.hex for u in ids], "upper": [u.hex.upper() for u in ids]}
    )
    assert SCANNER.scan(blob.encode()) == []


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.uuids(version=4), st.sampled_from(b"HJLPRZhjl")), min_size=1, max_size=20))
def test_hex_ids_in_avro_strings_are_never_flagged(ids: list[tuple[uuid.UUID, int]]) -> None:
    # Avro prefixes a string with its zig-zag length: for ids of 36-44 chars that byte is a letter.
    blob = b"".join(bytes([length]) + b"out_" + u.hex.encode() for u, length in ids)
    assert SCANNER.scan(blob) == []


def test_the_avro_id_that_once_looked_like_a_card() -> None:
    blob = b"\x00\xc3Hout_72f6956286112345372b7d4dc59447cd919Hcmd_45f"
    assert SCANNER.scan(blob) == []


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(PUBLIC_TEST_PANS),
    st.binary(max_size=64),
    st.binary(max_size=64),
    st.sampled_from(["raw", "hex", "base64", "utf16"]),
)
def test_a_known_pan_is_found_wherever_it_sits(pan: str, before: bytes, after: bytes, encoding: str) -> None:
    encode = {
        "raw": lambda b: b,
        "hex": lambda b: b.hex().encode(),
        "base64": base64.b64encode,
        "utf16": lambda b: b.decode().encode("utf-16-le"),
    }[encoding]
    if encoding == "base64":
        blob = encode(before + pan.encode() + after)
    else:
        blob = before + encode(pan.encode()) + after
    assert mask_pan(pan) in {f.pan for f in SCANNER.scan(blob) if f.encoding == encoding}


def test_findings_are_bounded() -> None:
    found = SCANNER.scan((PAN + " ").encode() * 5000)
    assert len(found) == 1000


def test_bad_known_pans_are_refused() -> None:
    with pytest.raises(ValueError, match="13..19 ASCII digits"):
        PanScanner(["4242"])


def test_rocksdb_items_reads_a_store_its_owner_holds_open(tmp_path: Path) -> None:
    db = Rdict(str(tmp_path / "store"), Options(raw_mode=True))
    db[b"k1"] = b"v" + PAN.encode()
    db.flush()
    found = [f for k, v in rocksdb_items(tmp_path / "store") for f in scan(k + v, where=k.decode())]
    db.close()
    assert [(f.where, f.encoding) for f in found] == [("k1", "raw")]
