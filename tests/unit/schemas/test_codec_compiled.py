"""The compiled Avro codec (schemas/avro_compiled.py) against fastavro, the reference:
for every shipped schema, generated records encode to fastavro's exact bytes and
decode to what fastavro reads; bad values raise instead of being written; hostile
bytes give DecodeError without stalling."""

from __future__ import annotations

import io
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.avro_compiled import (
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    CompiledSchema,
    _large_varint_of,
    _varint_of,
    compile_schema,
)
from schemas.codec import Codec, DecodeError, EncodeError, load_schema, schema_names
from tests.unit.schemas.test_codec import EXTRA_RECORDS, RECORDS

SCHEMA_NAMES = schema_names()
# Timestamps fastavro can read back: within datetime's range once in UTC.
MIN_MILLIS = (datetime(1, 1, 2, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
MAX_MILLIS = (datetime(9999, 12, 30, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def compiled(name: str) -> CompiledSchema:
    result = compile_schema(load_schema(name).parsed)
    assert result is not None, f"{name} did not compile"
    return result


def fastavro_bytes(name: str, record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, load_schema(name).parsed, record)
    return buf.getvalue()


def fastavro_record(name: str, body: bytes) -> Any:
    return fastavro.schemaless_reader(io.BytesIO(body), load_schema(name).parsed, None)


def compiled_bytes(name: str, record: dict[str, Any]) -> bytes:
    return compiled(name).encode(b"", record)


def assert_same_as_fastavro(name: str, record: dict[str, Any]) -> None:
    body = fastavro_bytes(name, record)
    assert compiled_bytes(name, record) == body
    decoded, end = compiled(name).decode(body, 0)
    assert end == len(body)
    assert decoded == fastavro_record(name, body)
    assert list(decoded) == list(fastavro_record(name, body))  # field order too


# --- records generated from the schema ---

# Aware datetimes: UTC and fixed offsets, microseconds included (fastavro floors them).
OFFSETS = st.builds(timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23)))
AWARE = st.one_of(
    st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)),
    st.datetimes(min_value=datetime(1, 1, 3), max_value=datetime(9999, 12, 29), timezones=OFFSETS),
)


def bounded_ints(lo: int, hi: int) -> st.SearchStrategy[int]:
    return st.one_of(st.sampled_from([lo, hi, 0, -1, 1, 63, -64, 64, 8191, -8192, 8192]), st.integers(lo, hi))


def strategy(schema: Any, named: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of a fastavro-parsed schema, the way our code builds them."""
    if isinstance(schema, str) and schema in named:
        return st.deferred(lambda: strategy(named[schema], named))
    if isinstance(schema, list):
        return st.one_of(*(strategy(s, named) for s in schema))
    if isinstance(schema, str):
        schema = {"type": schema}
    kind, logical = schema["type"], schema.get("logicalType")
    if logical == "timestamp-millis":
        return st.one_of(AWARE, bounded_ints(MIN_MILLIS, MAX_MILLIS))
    if logical == "date":
        return st.one_of(st.dates(), st.integers(date.min.toordinal() - 719163, date.max.toordinal() - 719163))
    simple = {
        "null": st.none(),
        "string": st.text(max_size=80),
        "bytes": st.binary(max_size=80),
        "long": bounded_ints(LONG_MIN, LONG_MAX),
        "int": bounded_ints(INT_MIN, INT_MAX),
        "boolean": st.booleans(),
        # An int is a double too (written as float(int), as fastavro does).
        "double": st.one_of(st.floats(allow_nan=False), st.integers(-(2**53), 2**53)),
    }
    if kind in simple:
        return simple[kind]
    if kind == "enum":
        return st.sampled_from(schema["symbols"])
    if kind == "array":
        return st.lists(strategy(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(st.text(max_size=12), strategy(schema["values"], named), max_size=4)
    assert kind == "record", kind
    required, optional = {}, {}
    for field in schema["fields"]:
        value = strategy(field["type"], named)
        nullable = isinstance(field["type"], list) and "null" in field["type"]
        (optional if "default" in field or nullable else required)[field["name"]] = value
    return st.fixed_dictionaries(required, optional=optional)  # absent: the field's default


def record_of(name: str) -> st.SearchStrategy[dict[str, Any]]:
    parsed = load_schema(name).parsed
    return strategy(parsed, parsed["__named_schemas"])


def test_every_shipped_schema_compiles() -> None:
    for name in SCHEMA_NAMES:
        assert compiled(name).source


@pytest.mark.parametrize("name", SCHEMA_NAMES)
@settings(max_examples=60, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(data=st.data())
def test_generated_records_match_fastavro(name: str, data: st.DataObject) -> None:
    assert_same_as_fastavro(name, data.draw(record_of(name)))


@pytest.mark.parametrize(("name", "record"), [*RECORDS.items(), *EXTRA_RECORDS])
def test_real_shaped_records_match_fastavro(name: str, record: dict[str, Any]) -> None:
    assert_same_as_fastavro(name, record)


@pytest.mark.parametrize(("name", "record"), [*RECORDS.items(), *EXTRA_RECORDS])
def test_the_codec_writes_fastavros_bytes_after_its_header(name: str, record: dict[str, Any]) -> None:
    codec = Codec(name)
    message = codec.encode(record)
    assert message == codec.schema.header + fastavro_bytes(name, record)
    assert codec.decode(message) == fastavro_record(name, message[len(codec.schema.header) :])


@given(st.datetimes(min_value=datetime(1900, 1, 2), max_value=datetime(2200, 1, 1)))
def test_naive_datetimes_are_written_as_fastavro_writes_them(at: datetime) -> None:
    # fastavro reads a naive datetime in the process's local time zone.
    record = RECORDS["PaymentOutcome"] | {"occurred_at": at}
    assert compiled_bytes("PaymentOutcome", record) == fastavro_bytes("PaymentOutcome", record)


def test_a_date_may_be_a_datetime_or_an_iso_string_as_in_fastavro() -> None:
    for day in (datetime(2026, 11, 25, 23, 59), "2026-11-25", date(2026, 11, 25)):
        record = RECORDS["PayoutInstruction"] | {"day": day}
        assert compiled_bytes("PayoutInstruction", record) == fastavro_bytes("PayoutInstruction", record)


def test_sequences_and_mappings_that_are_not_lists_and_dicts() -> None:
    from collections import OrderedDict

    record = RECORDS["ValidatedCommand"] | {
        "fraud_reasons": ("velocity_card_1h", "score_review"),
        "metadata": OrderedDict(order="1001"),
        "card": OrderedDict(RECORDS["ValidatedCommand"]["card"]),
    }
    assert compiled_bytes("ValidatedCommand", record) == fastavro_bytes("ValidatedCommand", record)


def test_a_missing_field_without_default_raises_as_in_fastavro() -> None:
    record = dict(RECORDS["LedgerEntry"])
    del record["shard"]
    with pytest.raises(ValueError, match="shard"):
        compiled_bytes("LedgerEntry", record)
    with pytest.raises(ValueError, match="shard"):
        fastavro_bytes("LedgerEntry", record)


# --- bad values raise: never written ---

LINE = RECORDS["LedgerEntry"]["lines"][0]


# The inline paths' edges: a zig-zagged long's 2**14 and 2**28 lookups (a timestamp's
# 2**28 to 2**42 in three pieces), negative values, and a length's 8192 table.
VARINT_EDGES = [2**k + d for k in (13, 14, 27, 28, 41, 42, 62) for d in (-1, 0)] + [LONG_MAX]
LONG_EDGES = sorted({s * n for n in VARINT_EDGES for s in (1, -1)} | {LONG_MIN})


@pytest.mark.parametrize("n", LONG_EDGES)
def test_longs_and_timestamps_at_the_lookups_edges_match_fastavro(n: int) -> None:
    line = LINE | {"debit_minor": n}
    assert_same_as_fastavro("LedgerEntry", RECORDS["LedgerEntry"] | {"lines": [line]})
    if MIN_MILLIS <= n <= MAX_MILLIS:
        assert_same_as_fastavro("LedgerEntry", RECORDS["LedgerEntry"] | {"occurred_at": n})
    if INT_MIN <= n <= INT_MAX:
        assert_same_as_fastavro("LedgerEntry", RECORDS["LedgerEntry"] | {"shard": n})
    assert_same_as_fastavro("ValidatedCommand", RECORDS["ValidatedCommand"] | {"amount_minor": n})


@pytest.mark.parametrize("length", [0, 63, 64, 8191, 8192, 70_000])
def test_strings_and_optional_strings_at_the_length_tables_edges_match_fastavro(length: int) -> None:
    text = "é" * (length // 2) + "x" * (length % 2)  # two bytes a character: the byte length counts
    assert_same_as_fastavro("ValidatedCommand", RECORDS["ValidatedCommand"] | {"merchant_id": text, "currency": text})


def test_dict_subclasses_are_read_as_fastavro_reads_them() -> None:
    from collections import Counter, defaultdict

    # A defaultdict's __missing__ is not a value: an absent field takes its default.
    record = defaultdict(lambda: "oops", RECORDS["ValidatedCommand"])
    del record["payment_id"], record["metadata"]
    card = defaultdict(int, RECORDS["ValidatedCommand"]["card"])
    record["card"] = card
    record["metadata"] = Counter({"order": "1001"})
    assert compiled_bytes("ValidatedCommand", record) == fastavro_bytes("ValidatedCommand", record)
    del card["exp_year"]
    with pytest.raises(ValueError, match="exp_year"):
        compiled_bytes("ValidatedCommand", record)


def test_a_missing_field_of_a_nested_record_is_named() -> None:
    card = dict(RECORDS["ValidatedCommand"]["card"])
    del card["token"]
    with pytest.raises(EncodeError, match=r"CardRef\.token"):
        Codec("ValidatedCommand").encode(RECORDS["ValidatedCommand"] | {"card": card})


@pytest.mark.parametrize(
    ("name", "change", "field"),
    [
        ("ValidatedCommand", {"amount_minor": 123.45}, "amount_minor"),
        ("ValidatedCommand", {"amount_minor": 12_345.0}, "amount_minor"),
        ("ValidatedCommand", {"amount_minor": "12345"}, "amount_minor"),
        ("ValidatedCommand", {"amount_minor": 2**63}, "amount_minor"),
        ("ValidatedCommand", {"amount_minor": True}, "amount_minor"),
        ("ValidatedCommand", {"fraud_score_ppm": 2**31}, "fraud_score_ppm"),
        ("ValidatedCommand", {"kind": "charge"}, "kind"),
        ("ValidatedCommand", {"capture_method": "later"}, "capture_method"),
        ("ValidatedCommand", {"merchant_id": None}, "merchant_id"),
        ("ValidatedCommand", {"merchant_id": b"m_acme"}, "merchant_id"),
        ("ValidatedCommand", {"fraud_fallback": None}, "fraud_fallback"),
        ("ValidatedCommand", {"fraud_fallback": 0}, "fraud_fallback"),
        ("ValidatedCommand", {"fraud_reasons": "velocity"}, "fraud_reasons"),
        ("ValidatedCommand", {"metadata": {"order": 1001}}, "metadata"),
        ("ValidatedCommand", {"metadata": {1: "x"}}, "metadata"),
        ("ValidatedCommand", {"occurred_at": "2026-11-25T10:00:00Z"}, "occurred_at"),
        ("ValidatedCommand", {"occurred_at": date(2026, 11, 25)}, "occurred_at"),
        ("ValidatedCommand", {"card": "tok_abc"}, "card"),
        # Outside a union fastavro's writer would truncate these (1.5 -> 1) or wrap them.
        ("LedgerEntry", {"lines": [LINE | {"debit_minor": 1.5}]}, "debit_minor"),
        ("LedgerEntry", {"lines": [LINE | {"debit_minor": "1"}]}, "debit_minor"),
        ("LedgerEntry", {"lines": [LINE | {"credit_minor": 2**63}]}, "credit_minor"),
        ("LedgerEntry", {"lines": [LINE | {"credit_minor": -(2**63) - 1}]}, "credit_minor"),
        ("LedgerEntry", {"shard": 2**31}, "shard"),
        ("LedgerEntry", {"shard": 5.0}, "shard"),
    ],
)
def test_bad_values_raise_encode_error_naming_the_field(name: str, change: dict[str, Any], field: str) -> None:
    record = RECORDS[name] | change
    with pytest.raises((TypeError, ValueError, KeyError)):
        compiled_bytes(name, record)
    with pytest.raises(EncodeError, match=field):
        Codec(name).encode(record)


@given(st.one_of(st.integers(min_value=LONG_MAX + 1), st.integers(max_value=LONG_MIN - 1)))
def test_longs_beyond_64_bits_raise(amount: int) -> None:
    with pytest.raises(EncodeError):
        Codec("ValidatedCommand").encode(RECORDS["ValidatedCommand"] | {"amount_minor": amount})
    with pytest.raises(EncodeError):
        Codec("LedgerEntry").encode(RECORDS["LedgerEntry"] | {"lines": [LINE | {"debit_minor": amount}]})


# --- hostile bytes: DecodeError, and no stall ---

NAMES_AND_BODIES = [(name, fastavro_bytes(name, record)) for name, record in [*RECORDS.items(), *EXTRA_RECORDS]]


def reason(name: str, body: bytes) -> str:
    codec = Codec(name)
    with pytest.raises(DecodeError) as err:
        codec.decode(codec.schema.header + body)
    return err.value.reason


@pytest.mark.parametrize(("name", "body"), NAMES_AND_BODIES)
def test_truncated_messages_are_malformed_at_every_cut(name: str, body: bytes) -> None:
    assert {reason(name, body[:end]) for end in range(len(body))} == {"malformed_avro"}


def zigzag(n: int) -> bytes:
    return _varint_of((n << 1) ^ (n >> 63))


@given(
    st.one_of(st.integers(1 << 14, (1 << 64) - 1), st.sampled_from([1 << 14, (1 << 28) - 1, 1 << 28, (1 << 64) - 1]))
)
def test_large_varints_by_lookup_are_the_loops(n: int) -> None:
    assert _large_varint_of(n) == _varint_of(n)


def test_zigzag_helper_is_fastavros() -> None:
    for n in (0, -1, 1, 63, -64, 64, 2**62, LONG_MIN, LONG_MAX):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, fastavro.parse_schema("long"), n)
        assert buf.getvalue() == zigzag(n)


# LedgerEntry: entry_id (string) first; `lines` an array of records after five
# strings, an int and a timestamp; then `fx`, a ["null", record] union.
LEDGER = fastavro_bytes("LedgerEntry", RECORDS["LedgerEntry"])
ENTRY_ID = RECORDS["LedgerEntry"]["entry_id"].encode()


@pytest.mark.parametrize(
    "body",
    [
        zigzag(2**60) + ENTRY_ID,  # a string's length far beyond the message
        zigzag(len(ENTRY_ID) + 1) + ENTRY_ID,  # one past the end
        zigzag(-5) + ENTRY_ID,  # a negative length
        b"\xff" * 11 + b"\x01",  # a varint longer than 10 bytes
        b"\xff" * 9 + b"\x7f",  # ten bytes but beyond 64 bits
    ],
    ids=["huge-length", "length-past-end", "negative-length", "long-varint", "varint-overflow"],
)
def test_bad_lengths_are_malformed(body: bytes) -> None:
    assert reason("LedgerEntry", body) == "malformed_avro"


def ledger_with(lines: bytes, rest: bytes = b"\x00\x00") -> bytes:
    """A LedgerEntry body with `lines` in place of the array (fx, reverses null)."""
    head = b"".join(zigzag(len(s)) + s for s in [b"je", b"evt", b"settled", b"pay", b"m"])
    return head + zigzag(5) + zigzag(1_764_064_800_123) + lines + rest


def test_the_ledger_helper_builds_a_valid_body() -> None:
    line = b"".join([zigzag(1), b"a", zigzag(3), b"EUR", zigzag(7), zigzag(0)])
    assert Codec("LedgerEntry").decode(Codec("LedgerEntry").schema.header + ledger_with(zigzag(1) + line + b"\x00"))


@pytest.mark.parametrize(
    "lines",
    [
        zigzag(2**60),  # an array count far beyond the bytes left
        zigzag(LONG_MAX),
        zigzag(-(2**60)) + zigzag(10),  # a negative count (a sized block) as big
        zigzag(-1) + zigzag(-1),  # a negative block size
    ],
    ids=["huge-count", "max-count", "huge-negative-count", "negative-size"],
)
def test_bad_block_counts_are_malformed_without_allocating(lines: bytes) -> None:
    assert reason("LedgerEntry", ledger_with(lines)) == "malformed_avro"


def test_a_negative_block_count_with_its_size_is_read_as_fastavro_reads_it() -> None:
    line = b"".join([zigzag(1), b"a", zigzag(3), b"EUR", zigzag(7), zigzag(0)])
    body = ledger_with(zigzag(-1) + zigzag(len(line)) + line + b"\x00")
    assert compiled("LedgerEntry").decode(body, 0) == (fastavro_record("LedgerEntry", body), len(body))


# The index of fx, a ["null", record] union: 2 and -1 are no branch; a padded 0 is
# refused too (fastavro reads it as 0; no Avro writer pads a varint).
@pytest.mark.parametrize("index", [zigzag(2), zigzag(-1), b"\x80\x00"], ids=["2", "-1", "padded-0"])
def test_bad_union_index_is_malformed(index: bytes) -> None:
    assert reason("LedgerEntry", ledger_with(b"\x00", index + b"\x00")) == "malformed_avro"


@pytest.mark.parametrize("index", [14, 15, -1, 2**40])
def test_enum_index_out_of_range_is_malformed(index: int) -> None:
    # ValidatedCommand: command_id (string), then kind, an enum of 14 symbols.
    assert reason("ValidatedCommand", zigzag(1) + b"c" + zigzag(index)) == "malformed_avro"


def test_an_int_beyond_32_bits_is_malformed() -> None:
    head = b"".join(zigzag(len(s)) + s for s in [b"je", b"evt", b"settled", b"pay", b"m"])
    assert reason("LedgerEntry", head + zigzag(2**31) + zigzag(0) + b"\x00\x00\x00") == "malformed_avro"


def test_trailing_bytes_stay_trailing_bytes() -> None:
    assert reason("LedgerEntry", LEDGER + b"\x00") == "trailing_bytes"


@settings(max_examples=300)
@given(st.sampled_from(SCHEMA_NAMES), st.binary(max_size=400))
def test_random_bodies_only_raise_decode_error(name: str, body: bytes) -> None:
    codec = Codec(name)
    try:
        record = codec.decode(codec.schema.header + body)
    except DecodeError as e:
        assert e.reason in {"malformed_avro", "trailing_bytes"}
    else:  # accepted: then fastavro reads the same record
        assert record == fastavro_record(name, body)


@settings(max_examples=300)
@given(st.sampled_from(NAMES_AND_BODIES), st.data())
def test_corrupted_bodies_decode_as_fastavro_or_raise_decode_error(named: tuple[str, bytes], data: Any) -> None:
    name, body = named
    corrupted = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        corrupted[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    codec = Codec(name)
    try:
        record = codec.decode(codec.schema.header + bytes(corrupted))
    except DecodeError as e:
        assert e.reason in {"malformed_avro", "trailing_bytes"}
    else:  # accepted: then fastavro reads the same record
        assert record == fastavro_record(name, bytes(corrupted))


# --- beyond the shipped schemas: references, recursion, what falls back ---

PARTY_FIELDS = [{"name": "id", "type": "bytes"}]
TREE = fastavro.parse_schema(
    {
        "type": "record",
        "name": "t.Node",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "at", "type": {"type": "long", "logicalType": "timestamp-millis"}},
            {"name": "left", "type": ["null", "t.Node"], "default": None},
            {"name": "children", "type": {"type": "array", "items": "t.Node"}, "default": []},
            {"name": "tags", "type": {"type": "map", "values": {"type": "int", "logicalType": "date"}}},
            {"name": "owner", "type": {"type": "record", "name": "t.Party", "fields": PARTY_FIELDS}},
            {"name": "payer", "type": ["null", "t.Party"]},
            {"name": "score", "type": "double"},
        ],
    }
)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_named_references_and_recursion_match_fastavro(data: st.DataObject) -> None:
    record = data.draw(strategy(TREE, TREE["__named_schemas"]))
    compiled_tree = compile_schema(TREE)
    assert compiled_tree is not None
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, TREE, record)
    out = compiled_tree.encode(b"", record)
    assert out == buf.getvalue()
    assert compiled_tree.decode(bytes(out), 0) == (fastavro.schemaless_reader(io.BytesIO(out), TREE, None), len(out))


@pytest.mark.parametrize(
    "field_type",
    [
        "float",
        {"type": "fixed", "name": "t.Sixteen", "size": 16},
        ["null", "string", "long"],
        ["string", "null"],
        {"type": "string", "logicalType": "uuid"},
        {"type": "bytes", "logicalType": "decimal", "precision": 9, "scale": 2},
        {"type": "long", "logicalType": "timestamp-micros"},
        {"type": "array", "items": "null"},  # counts no byte bounds
    ],
)
def test_schemas_outside_the_subset_are_left_to_fastavro(field_type: Any) -> None:
    parsed = fastavro.parse_schema({"type": "record", "name": "t.Other", "fields": [{"name": "x", "type": field_type}]})
    assert compile_schema(parsed) is None


def test_a_tuple_is_an_array_outside_a_union_only() -> None:
    split = {"merchant_id": "m_shop_a", "amount_minor": 12_345}
    record = RECORDS["ValidatedCommand"] | {"splits": (split,)}  # ["null", array]: tuple notation in fastavro
    with pytest.raises(EncodeError, match="splits"):
        Codec("ValidatedCommand").encode(record)
    with pytest.raises(ValueError):
        fastavro_bytes("ValidatedCommand", record)


def test_a_codec_without_a_compiled_schema_uses_fastavro_alike() -> None:
    compiled_codec, fallback = Codec("LedgerEntry"), Codec("LedgerEntry")
    fallback._compiled = None  # what a schema outside the compiled subset gets
    record = RECORDS["LedgerEntry"]
    assert fallback.encode(record) == compiled_codec.encode(record)
    assert fallback.decode(compiled_codec.encode(record)) == compiled_codec.decode(fallback.encode(record)) == record
    with pytest.raises(EncodeError):  # fastavro's OverflowError is an EncodeError too
        fallback.encode(record | {"lines": [LINE | {"debit_minor": 2**63}]})
    with pytest.raises(DecodeError):
        fallback.decode(fallback.encode(record)[:-1])
