"""Avro binary encoders and decoders compiled per schema to straight-line Python.

Why: fastavro's compiled writer and reader still dispatch on the schema for every
field and match each union branch by validating the datum against it; that was the
largest single item of a stage's CPU. For each of our record schemas (as fastavro
parses it) this module generates Python source with the dispatch resolved in
advance, `compile()`s it once and caches it per schema fingerprint.

The bytes are identical to `fastavro.schemaless_writer`'s and decoded records equal
`fastavro.schemaless_reader`'s (property-tested over every shipped schema). Values
are checked as fastavro's validator checks them (a float or a bool is not a long, an
int must fit its 32 or 64 bits, a string must be a str), so a bad value raises
TypeError, ValueError or KeyError and is never written; fastavro's writer outside a
union would truncate a float or write any truthy object as true.

What stays with fastavro (the codec's choice): decoding a message written with
another schema (resolution), `check=True` validation, parsing and fingerprints, and
any schema with a type outside the subset below (`compile_schema` returns None).
Supported: record, string, bytes, int, long, boolean, double, enum, array, map,
named references, unions of the form ["null", X], and the logical types
timestamp-millis (long) and date (int).

Decoding hostile bytes raises (never loops or allocates unboundedly): counts are
bounded by the bytes remaining, a length by the end of the data (a slice stops there;
a record that ends past it is rejected), varints by 10 bytes; a union index, an enum
index or an int outside its range is rejected.

What the generated code is shaped by (CPU per record, docs/performance.md): an
encoder returns one `b"".join` of the header and the values' pieces held in locals
(no append per piece, no copy out of a buffer); numbers, lengths, union indexes and
enum symbols come from precomputed tables; a required field is read by subscript (a
KeyError is the missing field); a decoder reads one-byte numbers by table.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from numbers import Integral, Real
from typing import Any, NoReturn

from fastavro.logical_writers import LOGICAL_WRITERS

LONG_MIN = -(2**63)
LONG_MAX = 2**63 - 1
INT_MIN = -(2**31)
INT_MAX = 2**31 - 1
MAX_VARINT_BYTES = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MILLISECOND = timedelta(milliseconds=1)
_DAYS_SHIFT = date(1970, 1, 1).toordinal()  # fastavro's const.DAYS_SHIFT
# fastavro's own conversion of a naive datetime (through the local time zone).
_FASTAVRO_TIMESTAMP_MILLIS = LOGICAL_WRITERS["long-timestamp-millis"]
_PRIMITIVES = ("null", "boolean", "int", "long", "double", "bytes", "string")


class Unsupported(ValueError):
    """A schema with a type this compiler does not handle: fastavro does it instead."""


def _varint_of(n: int) -> bytes:
    """The Avro varint of an already zig-zagged (non-negative) integer."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Varints of the zig-zagged values below 2**14 (two bytes at most): lengths, counts,
# small longs. A lookup instead of a Python loop for nearly every number we write.
_SMALL_VARINTS = tuple(_varint_of(n) for n in range(1 << 14))
# The two leading bytes of any varint of 2**14 or more, by its low 14 bits (both with
# the continuation bit): a larger varint is 14 bits a lookup, not 7 bits a loop turn.
_CONTINUED_PAIRS = tuple(bytes(((n & 0x7F) | 0x80, ((n >> 7) & 0x7F) | 0x80)) for n in range(1 << 14))


# The varint of a string's or bytes' length below 8192 (zig-zagged: doubled), by the length.
_LENGTH_VARINTS = _SMALL_VARINTS[::2]
# The same after a ["null", X] union's index of X.
_UNION_LENGTH_VARINTS = tuple(b"\x02" + v for v in _LENGTH_VARINTS)


def _large_varint_of(n: int) -> bytes:
    """`_varint_of` of a value of 2**14 or more (timestamps, amounts, ids' hashes): a
    timestamp-millis is six bytes, three lookups here against six turns of its loop."""
    out = _CONTINUED_PAIRS[n & 0x3FFF]
    n >>= 14
    while n >= 1 << 14:
        out += _CONTINUED_PAIRS[n & 0x3FFF]
        n >>= 14
    return out + _SMALL_VARINTS[n]


# Decoding by the first byte: the long of a one-byte varint; the length of a
# one-byte even (non-negative) one, -1 for any byte that is not one.
_ONE_BYTE_LONGS = tuple((b >> 1) ^ -(b & 1) for b in range(128))
_ONE_BYTE_LENGTHS = tuple(b >> 1 if b < 128 and not b & 1 else -1 for b in range(256))


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned (still zig-zagged) varint at `pos` and the position after it."""
    n = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift >= 7 * MAX_VARINT_BYTES:
            raise ValueError(f"varint longer than {MAX_VARINT_BYTES} bytes")
    if n >> 64:
        raise ValueError("varint overflows 64 bits")
    return n, pos


def _slow_long(v: Any, path: str, lo: int, hi: int) -> int:
    """A long/int that is not an exact int (or is out of range): what fastavro's
    validator accepts (an Integral, not a bool, in range) as a plain int."""
    if isinstance(v, bool) or not isinstance(v, Integral):
        raise TypeError(f"{path}: expected an integer, got {type(v).__name__}")
    n = int(v)
    if not lo <= n <= hi:
        raise ValueError(f"{path}: {n} is out of range [{lo}, {hi}]")
    return n


def _slow_str(v: Any, path: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"{path}: expected a string, got {type(v).__name__}")
    return v


def _slow_bytes(v: Any, path: str) -> bytes:
    if not isinstance(v, (bytes, bytearray)):
        raise TypeError(f"{path}: expected bytes, got {type(v).__name__}")
    return bytes(v)


def _slow_bool(v: Any, path: str) -> NoReturn:
    raise TypeError(f"{path}: expected a bool, got {type(v).__name__}")


def _slow_double(v: Any, path: str) -> float:
    if isinstance(v, bool) or not isinstance(v, Real):
        raise TypeError(f"{path}: expected a number, got {type(v).__name__}")
    return float(v)


def _timestamp_millis(v: Any, path: str) -> int:
    """fastavro's prepare_timestamp_millis: an aware datetime's milliseconds since
    the epoch (floored), a naive one through the local time zone (fastavro's own
    function, so its exact arithmetic), an integer as it is."""
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            return int((v - _EPOCH) // _MILLISECOND)
        return int(_FASTAVRO_TIMESTAMP_MILLIS(v, {}))
    return _slow_long(v, path, LONG_MIN, LONG_MAX)


def _date(v: Any, path: str) -> int:
    """fastavro's prepare_date: a date (a datetime is one) or an ISO date string."""
    if isinstance(v, date):
        v = v.toordinal() - _DAYS_SHIFT
    elif isinstance(v, str):
        v = date.fromisoformat(v).toordinal() - _DAYS_SHIFT
    return _slow_long(v, path, INT_MIN, INT_MAX)


def _mapping(v: Any, path: str) -> Mapping[Any, Any]:
    if not isinstance(v, Mapping):
        raise TypeError(f"{path}: expected a mapping, got {type(v).__name__}")
    # A dict subclass as a plain dict: the generated code reads a field by
    # subscript, which would call a defaultdict's __missing__ where fastavro's
    # .get() takes the field's default.
    return dict(v) if isinstance(v, dict) else v


def _sequence(v: Any, path: str, in_union: bool) -> Sequence[Any]:
    # fastavro's validator accepts any non-str Sequence; inside a union its writer
    # reads a tuple as (branch name, value), which never fits ["null", array].
    if isinstance(v, str) or not isinstance(v, Sequence) or (in_union and isinstance(v, tuple)):
        raise TypeError(f"{path}: expected a list, got {type(v).__name__}")
    return v


def _bad_enum(v: Any, path: str, symbols: tuple[str, ...]) -> NoReturn:
    raise ValueError(f"{path}: {v!r} is not one of {list(symbols)}")


def _missing(error: KeyError, paths: Mapping[str, str]) -> NoReturn:
    """A required field absent: the generated code reads it by subscript."""
    name = error.args[0] if error.args else None
    raise ValueError(f"no value and no default for {paths.get(name, name)}") from None


def _bad(what: str, value: int) -> NoReturn:
    raise ValueError(f"{what} {value} at this position")


_HELPERS: dict[str, Any] = {
    "_VI": _SMALL_VARINTS,
    "_VL": _LENGTH_VARINTS,
    "_VU": _UNION_LENGTH_VARINTS,
    "_CP": _CONTINUED_PAIRS,
    "_join": b"".join,
    "_varint": _large_varint_of,  # the generated code looks the small ones up itself
    "_rv": _read_varint,
    "_ZZ": _ONE_BYTE_LONGS,
    "_SL": _ONE_BYTE_LENGTHS,
    "_slong": _slow_long,
    "_sstr": _slow_str,
    "_sbytes": _slow_bytes,
    "_sbool": _slow_bool,
    "_sdouble": _slow_double,
    "_ts": _timestamp_millis,
    "_date": _date,
    "_mapping": _mapping,
    "_seq": _sequence,
    "_bad_enum": _bad_enum,
    "_missing": _missing,
    "_bad": _bad,
    "_pack_d": struct.Struct("<d").pack,
    "_unpack_d": struct.Struct("<d").unpack_from,
    "_EPOCH": _EPOCH,
    "_MS": _MILLISECOND,
    "_datetime": datetime,
    "_fromordinal": date.fromordinal,
    "_DAYS_SHIFT": _DAYS_SHIFT,
    "_LMIN": LONG_MIN,
    "_LMAX": LONG_MAX,
    "_IMIN": INT_MIN,
    "_IMAX": INT_MAX,
}


@dataclass(frozen=True)
class CompiledSchema:
    """`encode(head, record)` returns `head` followed by the record's Avro body;
    `decode(data, pos)` returns the record starting at `pos` and the end position."""

    encode: Callable[[bytes, Mapping[str, Any]], bytes]
    decode: Callable[[bytes, int], tuple[dict[str, Any], int]]
    source: str


class _Generator:
    def __init__(self, named: Mapping[str, Any]) -> None:
        self.named = named
        self.consts: dict[str, Any] = {}
        self.functions: list[str] = []
        self.records: dict[str, tuple[str, str]] = {}  # full name -> (encoder, decoder)
        self.min_sizes: dict[str, int] = {}
        self.inlining: list[str] = []  # records being generated: a reference back is recursion
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    def const(self, value: Any, prefix: str = "_k") -> str:
        name = self.fresh(prefix)
        self.consts[name] = value
        return name

    def resolve(self, schema: Any) -> Any:
        """A named reference's definition; anything else as it is."""
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            if schema not in self.named:
                raise Unsupported(f"type {schema}: neither compiled nor a named type")
            return self.named[schema]
        return schema

    def kind(self, schema: Any) -> str:
        """The type's name, or raises Unsupported for anything outside the subset."""
        schema = self.resolve(schema)
        if isinstance(schema, str):
            return schema
        if isinstance(schema, list):
            if len(schema) == 2 and schema[0] == "null" and self.kind(schema[1]) != "null":
                return "nullable"
            raise Unsupported(f"union {schema}: only [null, X] is compiled")
        if not isinstance(schema, dict):
            raise Unsupported(f"schema {schema!r}")
        t = schema.get("type")
        logical = schema.get("logicalType")
        if logical is not None:
            if (t, logical) == ("long", "timestamp-millis"):
                return "timestamp-millis"
            if (t, logical) == ("int", "date"):
                return "date"
            raise Unsupported(f"logical type {logical} on {t}")
        if t in _PRIMITIVES:
            return str(t)
        if t in ("record", "enum", "array", "map"):
            return str(t)
        raise Unsupported(f"type {t}")

    def min_size(self, schema: Any) -> int:
        """The fewest bytes a value of the type takes (bounds counts by bytes left)."""
        kind = self.kind(schema)
        schema = self.resolve(schema)
        if kind == "null":
            return 0
        if kind == "double":
            return 8
        if kind == "record":
            name = schema["name"]
            if name not in self.min_sizes:
                self.min_sizes[name] = 0  # a recursive reference counts as 0: still a bound
                self.min_sizes[name] = sum(self.min_size(f["type"]) for f in schema["fields"])
            return self.min_sizes[name]
        return 1  # every other type starts with at least one byte

    # -- encoding -------------------------------------------------------------
    #
    # Each value's bytes go to locals ("pieces", assigned on every branch, b"" where a
    # branch writes nothing) that one b"".join per record function concatenates with
    # the header: one copy, against one bytearray append per piece and a copy out.

    def record_functions(self, schema: dict[str, Any]) -> tuple[str, str]:
        """The names of a record's encoder and decoder functions (generated once)."""
        name = schema["name"]
        if name not in self.records:
            ident = self.fresh("_rec")
            self.records[name] = (f"_e{ident}", f"_d{ident}")
            self.inlining.append(name)
            body: list[str] = []
            pieces: list[str] = []
            required: dict[str, str] = {}
            self.encode_fields(schema, "r", body, "        ", pieces, required)
            lines = [f"def _e{ident}(h, r):", f"    if type(r) is not dict: r = _mapping(r, {name!r})", "    try:"]
            lines += body
            lines.append(f"    except KeyError as e: _missing(e, {self.const(required)})")
            lines.append(f"    return _join(({', '.join(['h', *pieces])},))")
            self.functions.append("\n".join(lines))
            lines = [f"def _d{ident}(d, p):", "    end_d = len(d)"]
            record = self.decode_fields(schema, lines, "    ")
            # Lengths are not checked one by one (a slice stops at the end): p past the
            # end is a truncated message, whichever field overran.
            lines.append("    if p > end_d: _bad('length beyond the bytes left: ends at', p)")
            lines.append(f"    return {record}, p")
            self.functions.append("\n".join(lines))
            self.inlining.pop()
        return self.records[name]

    def encode_fields(
        self, schema: dict[str, Any], r: str, lines: list[str], ind: str, pieces: list[str], required: dict[str, str]
    ) -> None:
        record = schema["name"]
        for field in schema["fields"]:
            name = field["name"]
            path = f"{record}.{name}"
            v = self.fresh("v")
            if "default" in field:
                default = field["default"]
                if default is None or isinstance(default, (bool, int, str)):
                    lines.append(f"{ind}{v} = {r}.get({name!r}, {default!r})")
                else:
                    lines.append(f"{ind}{v} = {r}.get({name!r}, {self.const(default)})")
            elif self.kind(field["type"]) == "nullable":  # fastavro: missing -> None
                lines.append(f"{ind}{v} = {r}.get({name!r})")
            else:  # missing: a KeyError, reported by the function's handler
                required.setdefault(name, path)
                lines.append(f"{ind}{v} = {r}[{name!r}]")
            self.encode_value(field["type"], v, path, lines, ind, pieces, required, in_union=False)

    def encode_value(
        self,
        schema: Any,
        v: str,
        path: str,
        lines: list[str],
        ind: str,
        pieces: list[str],
        required: dict[str, str],
        *,
        in_union: bool,
    ) -> None:
        kind = self.kind(schema)
        schema = self.resolve(schema)
        p = repr(path)
        if kind == "null":
            lines.append(f"{ind}if {v} is not None: raise TypeError({path + ': expected None'!r})")
        elif kind == "nullable":
            # The index byte as its own piece, but in the piece of a string's length
            # (from a table) or of a whole record (joined apart): an absent optional
            # field adds one or two pieces to the record's join, not one per value.
            u = self.fresh("x")
            inner: list[str] = []
            branch: list[str] = []
            inner_kind = self.kind(schema[1])
            if inner_kind == "enum":  # a table of the index and the symbol's
                symbols = tuple(self.resolve(schema[1])["symbols"])
                table = self.const({s: b"\x02" + _varint_of(i << 1) for i, s in enumerate(symbols)}, "_enum")
                branch.append(f"{ind}    {u} = {table}.get({v})")
                branch.append(f"{ind}    if {u} is None: _bad_enum({v}, {p}, {self.const(symbols, '_syms')})")
            elif inner_kind in ("string", "bytes"):
                check = "str" if inner_kind == "string" else "bytes"
                slow = "_sstr" if inner_kind == "string" else "_sbytes"
                branch.append(f"{ind}    if type({v}) is not {check}: {v} = {slow}({v}, {p})")
                expr = f"{v}.encode()" if inner_kind == "string" else v
                self.encode_bytes(expr, branch, ind + "    ", inner, union=True)
                u = inner.pop(0)  # the index and the length: one piece
            else:
                self.encode_value(schema[1], v, path, branch, ind + "    ", inner, required, in_union=True)
                if inner_kind == "record":
                    branch.append(f"{ind}    {u} = _join((b'\\x02', {', '.join(inner)}))")
                    inner = []
                else:
                    branch.insert(0, f"{ind}    {u} = b'\\x02'")
            lines.append(f"{ind}if {v} is None:")
            lines.append(f"{ind}    {u} = b'\\x00'" + (f"; {' = '.join(inner)} = b''" if inner else ""))
            lines.append(f"{ind}else:")
            lines += branch
            pieces += [u, *inner]
        elif kind == "string":
            lines.append(f"{ind}if type({v}) is not str: {v} = _sstr({v}, {p})")
            self.encode_bytes(f"{v}.encode()", lines, ind, pieces)
        elif kind == "bytes":
            lines.append(f"{ind}if type({v}) is not bytes: {v} = _sbytes({v}, {p})")
            self.encode_bytes(v, lines, ind, pieces)
        elif kind in ("long", "int", "timestamp-millis", "date"):
            lo, hi = ("_IMIN", "_IMAX") if kind in ("int", "date") else ("_LMIN", "_LMAX")
            bad = f"type({v}) is not int or not {lo} <= {v} <= {hi}"
            if kind == "timestamp-millis":  # an aware datetime inline, anything else as fastavro
                lines.append(f"{ind}if {bad}:")
                aware = f"type({v}) is _datetime and {v}.tzinfo is not None"
                lines.append(f"{ind}    {v} = ({v} - _EPOCH) // _MS if {aware} else _ts({v}, {p})")
            elif kind == "date":
                lines.append(f"{ind}if {bad}: {v} = _date({v}, {p})")
            else:
                lines.append(f"{ind}if {bad}: {v} = _slong({v}, {p}, {lo}, {hi})")
            lines.append(f"{ind}{v} = ({v} << 1) ^ ({v} >> 63)")
            self.encode_varint(v, lines, ind, pieces, timestamp=kind == "timestamp-millis")
        elif kind == "boolean":
            x = self.fresh("x")
            lines.append(f"{ind}{x} = b'\\x01' if {v} is True else b'\\x00' if {v} is False else _sbool({v}, {p})")
            pieces.append(x)
        elif kind == "double":
            x = self.fresh("x")
            lines.append(f"{ind}if type({v}) is not float: {v} = _sdouble({v}, {p})")
            lines.append(f"{ind}{x} = _pack_d({v})")
            pieces.append(x)
        elif kind == "enum":
            symbols = tuple(schema["symbols"])
            table = self.const({s: _varint_of(i << 1) for i, s in enumerate(symbols)}, "_enum")
            syms = self.const(symbols, "_syms")
            x = self.fresh("x")
            lines.append(f"{ind}{x} = {table}.get({v})")
            lines.append(f"{ind}if {x} is None: _bad_enum({v}, {p}, {syms})")
            pieces.append(x)
        elif kind in ("array", "map"):
            x, parts = self.fresh("x"), self.fresh("parts")
            item: list[str] = []
            if kind == "array":
                e, items, item_path = self.fresh("i"), schema["items"], path + "[]"
                lines.append(f"{ind}if type({v}) is not list: {v} = _seq({v}, {p}, {in_union})")
                loop = f"for {e} in {v}:"
            else:
                key, e, items, item_path = self.fresh("key"), self.fresh("val"), schema["values"], path + "{}"
                lines.append(f"{ind}if type({v}) is not dict: {v} = _mapping({v}, {p})")
                loop = f"for {key}, {e} in {v}.items():"
            lines.append(f"{ind}if {v}:")
            n = self.fresh("n")
            lines.append(f"{ind}    {n} = len({v}) << 1")
            lines.append(f"{ind}    {parts} = [_VI[{n}] if {n} < 16384 else _varint({n})]")
            lines.append(f"{ind}    {loop}")
            if kind == "map":
                self.encode_value("string", key, item_path, lines, ind + "        ", item, required, in_union=False)
            self.encode_value(items, e, item_path, lines, ind + "        ", item, required, in_union=False)
            lines.append(f"{ind}        {parts} += ({', '.join(item)},)")
            lines.append(f"{ind}    {parts}.append(b'\\x00')")
            lines.append(f"{ind}    {x} = _join({parts})")
            lines.append(f"{ind}else:")
            lines.append(f"{ind}    {x} = b'\\x00'")
            pieces.append(x)
        elif kind == "record":
            lines.append(f"{ind}if type({v}) is not dict: {v} = _mapping({v}, {p})")
            if schema["name"] in self.inlining:  # recursive: a function calls itself
                x = self.fresh("x")
                lines.append(f"{ind}{x} = {self.record_functions(schema)[0]}(b'', {v})")
                pieces.append(x)
            else:  # inline: no call per nested record
                self.inlining.append(schema["name"])
                self.encode_fields(schema, v, lines, ind, pieces, required)
                self.inlining.pop()
        else:  # pragma: no cover - kind() admits nothing else
            raise Unsupported(kind)

    def encode_bytes(self, expr: str, lines: list[str], ind: str, pieces: list[str], *, union: bool = False) -> None:
        """A length (from a table of the varints of the lengths below 8192; in a union,
        preceded by the branch's index) and the bytes."""
        x, b, n = self.fresh("x"), self.fresh("b"), self.fresh("n")
        lines.append(f"{ind}{b} = {expr}")
        lines.append(f"{ind}{n} = len({b})")
        if union:
            lines.append(f"{ind}{x} = _VU[{n}] if {n} < 8192 else b'\\x02' + _varint({n} << 1)")
        else:
            lines.append(f"{ind}{x} = _VL[{n}] if {n} < 8192 else _varint({n} << 1)")
        pieces += [x, b]

    def encode_varint(self, v: str, lines: list[str], ind: str, pieces: list[str], *, timestamp: bool) -> None:
        """A zig-zagged long by 14-bit lookups, inline: below 2**28 (amounts, counts) in
        one piece; a timestamp's (2**28 up to 2**42, the years 1974 to 2039) in three
        (measured: as one piece, concatenated, no faster)."""
        x1 = self.fresh("x")
        if timestamp:
            x2, x3 = self.fresh("x"), self.fresh("x")
            lines.append(f"{ind}if 268435456 <= {v} < 4398046511104:")
            lines.append(f"{ind}    {x1} = _CP[{v} & 16383]; {x2} = _CP[{v} >> 14 & 16383]; {x3} = _VI[{v} >> 28]")
            lines.append(f"{ind}else:")
            lines.append(f"{ind}    {x1} = _VI[{v}] if {v} < 16384 else _varint({v}); {x2} = {x3} = b''")
            pieces += [x1, x2, x3]
            return
        two_bytes = f"_CP[{v} & 16383] + _VI[{v} >> 14]"
        lines.append(f"{ind}{x1} = _VI[{v}] if {v} < 16384 else {two_bytes} if {v} < 268435456 else _varint({v})")
        pieces.append(x1)

    # -- decoding -------------------------------------------------------------

    def decode_fields(self, schema: dict[str, Any], lines: list[str], ind: str) -> str:
        """Decodes the record into a copy of a template holding every field as None
        (fastavro's field order); returns the copy's name. A copy and a store per
        present field is cheaper than one dict display of all the fields' locals,
        and an absent optional field costs no store at all."""
        rec = self.fresh("rec")
        # Interned keys, as a dict display's literals are: a reader's literal key then
        # matches by identity, not by comparing the strings.
        names = [sys.intern(field["name"]) for field in schema["fields"]]
        lines.append(f"{ind}{rec} = {self.const(dict.fromkeys(names), '_tmpl')}.copy()")
        for field in schema["fields"]:
            v, key = self.fresh("v"), f"{rec}[{field['name']!r}]"
            if self.kind(field["type"]) == "nullable":
                lines.append(f"{ind}if not d[p]:")
                lines.append(f"{ind}    p += 1")
                lines.append(f"{ind}elif d[p] == 2:")
                lines.append(f"{ind}    p += 1")
                self.decode_value(self.resolve(field["type"])[1], v, lines, ind + "    ")
                lines.append(f"{ind}    {key} = {v}")
                lines.append(f"{ind}else:")
                lines.append(f"{ind}    _bad('union index byte', d[p])")
            else:
                self.decode_value(field["type"], v, lines, ind)
                lines.append(f"{ind}{key} = {v}")
        return rec

    def decode_long(self, v: str, lines: list[str], ind: str, *, timestamp: bool = False) -> None:
        """A zig-zagged varint: one byte by a table; two and three bytes (counts, most
        amounts) inline; a timestamp's six by a loop inline; anything else by `_rv`."""
        lines.append(f"{ind}{v} = d[p]")
        lines.append(f"{ind}if {v} < 128:")
        lines.append(f"{ind}    {v} = _ZZ[{v}]")
        lines.append(f"{ind}    p += 1")
        lines.append(f"{ind}else:")
        if timestamp:
            # Bounded by the bytes left (d[p] raises past the end); longer than ten
            # bytes or beyond 64 bits is refused after the loop.
            lines.append(f"{ind}    {v} &= 127")
            lines.append(f"{ind}    _s = 7")
            lines.append(f"{ind}    while True:")
            lines.append(f"{ind}        p += 1")
            lines.append(f"{ind}        _b = d[p]")
            lines.append(f"{ind}        {v} |= (_b & 127) << _s")
            lines.append(f"{ind}        if _b < 128: break")
            lines.append(f"{ind}        _s += 7")
            lines.append(f"{ind}    p += 1")
            lines.append(f"{ind}    if _s > 63 and (_s >= 70 or {v} >> 64): _bad('varint beyond 64 bits, bits:', _s)")
        else:
            lines.append(f"{ind}    _b = d[p + 1]")
            lines.append(f"{ind}    if _b < 128:")
            lines.append(f"{ind}        {v} = ({v} & 127) | (_b << 7)")
            lines.append(f"{ind}        p += 2")
            lines.append(f"{ind}    else:")
            lines.append(f"{ind}        _c = d[p + 2]")
            lines.append(f"{ind}        if _c < 128:")
            lines.append(f"{ind}            {v} = ({v} & 127) | ((_b & 127) << 7) | (_c << 14)")
            lines.append(f"{ind}            p += 3")
            lines.append(f"{ind}        else:")
            lines.append(f"{ind}            {v}, p = _rv(d, p)")
        lines.append(f"{ind}    {v} = ({v} >> 1) ^ -({v} & 1)")

    def decode_count(self, v: str, item_min_size: int, lines: list[str], ind: str) -> None:
        """A block count; negative: followed by the block's byte size (ignored)."""
        self.decode_long(v, lines, ind)
        lines.append(f"{ind}if {v} < 0:")
        lines.append(f"{ind}    {v} = -{v}")
        size = self.fresh("size")
        self.decode_long(size, lines, ind + "    ")
        lines.append(f"{ind}    if {size} < 0: _bad('negative block size', {size})")
        lines.append(f"{ind}if {v} * {item_min_size} > end_d - p: _bad('block count beyond the bytes left:', {v})")

    def decode_value(self, schema: Any, v: str, lines: list[str], ind: str) -> None:
        kind = self.kind(schema)
        schema = self.resolve(schema)
        if kind == "null":
            lines.append(f"{ind}{v} = None")
        elif kind == "nullable":
            lines.append(f"{ind}{v} = d[p]")
            lines.append(f"{ind}p += 1")
            lines.append(f"{ind}if {v} == 0:")
            lines.append(f"{ind}    {v} = None")
            lines.append(f"{ind}elif {v} == 2:")
            self.decode_value(schema[1], v, lines, ind + "    ")
            lines.append(f"{ind}else:")
            lines.append(f"{ind}    _bad('union index byte', {v})")
        elif kind in ("string", "bytes"):
            n = self.fresh("n")
            # A length below 64 is one even byte (a table gives it, -1 for any other
            # byte); anything else goes the long way. No check against the end here:
            # the slice stops there and the record function checks p once.
            lines.append(f"{ind}{n} = _SL[d[p]]")
            lines.append(f"{ind}if {n} < 0:")
            lines.append(f"{ind}    {n}, p = _rv(d, p)")
            lines.append(f"{ind}    if {n} & 1: _bad('negative length', -({n} >> 1) - 1)")
            lines.append(f"{ind}    {n} >>= 1")
            lines.append(f"{ind}else:")
            lines.append(f"{ind}    p += 1")
            lines.append(f"{ind}{v} = d[p:p + {n}]" + (".decode()" if kind == "string" else ""))
            lines.append(f"{ind}p += {n}")
        elif kind in ("long", "timestamp-millis"):
            self.decode_long(v, lines, ind, timestamp=kind == "timestamp-millis")
            if kind == "timestamp-millis":  # fastavro's epoch + timedelta, by a product (exact)
                lines.append(f"{ind}{v} = _EPOCH + _MS * {v}")
        elif kind in ("int", "date"):
            self.decode_long(v, lines, ind)
            lines.append(f"{ind}if not _IMIN <= {v} <= _IMAX: _bad('int out of range:', {v})")
            if kind == "date":
                lines.append(f"{ind}{v} = _fromordinal({v} + _DAYS_SHIFT)")
        elif kind == "boolean":
            lines.append(f"{ind}{v} = d[p] != 0")
            lines.append(f"{ind}p += 1")
        elif kind == "double":
            lines.append(f"{ind}{v} = _unpack_d(d, p)[0]")
            lines.append(f"{ind}p += 8")
        elif kind == "enum":
            syms = self.const(tuple(schema["symbols"]), "_syms")
            self.decode_long(v, lines, ind)
            lines.append(f"{ind}if not 0 <= {v} < {len(schema['symbols'])}: _bad('enum index', {v})")
            lines.append(f"{ind}{v} = {syms}[{v}]")
        elif kind == "array":
            n, item = self.fresh("n"), self.fresh("item")
            item_size = max(1, self.min_size(schema["items"]))
            if self.min_size(schema["items"]) == 0:
                raise Unsupported("array of zero-size items: its counts are unbounded")
            lines.append(f"{ind}{v} = []")
            self.decode_count(n, item_size, lines, ind)
            lines.append(f"{ind}while {n}:")
            lines.append(f"{ind}    for _ in range({n}):")
            self.decode_value(schema["items"], item, lines, ind + "        ")
            lines.append(f"{ind}        {v}.append({item})")
            self.decode_count(n, item_size, lines, ind + "    ")
        elif kind == "map":
            n, key, val = self.fresh("n"), self.fresh("key"), self.fresh("val")
            item_size = 1 + self.min_size(schema["values"])
            lines.append(f"{ind}{v} = {{}}")
            self.decode_count(n, item_size, lines, ind)
            lines.append(f"{ind}while {n}:")
            lines.append(f"{ind}    for _ in range({n}):")
            self.decode_value("string", key, lines, ind + "        ")
            self.decode_value(schema["values"], val, lines, ind + "        ")
            lines.append(f"{ind}        {v}[{key}] = {val}")
            self.decode_count(n, item_size, lines, ind + "    ")
        elif kind == "record":
            if schema["name"] in self.inlining:
                lines.append(f"{ind}{v}, p = {self.record_functions(schema)[1]}(d, p)")
            else:
                self.inlining.append(schema["name"])
                lines.append(f"{ind}{v} = {self.decode_fields(schema, lines, ind)}")  # the copy's name
                self.inlining.pop()
        else:  # pragma: no cover - kind() admits nothing else
            raise Unsupported(kind)


def compile_schema(parsed: Any) -> CompiledSchema | None:
    """The compiled encoder and decoder of a record schema parsed by fastavro, or
    None when it has a type outside the compiled subset (fastavro handles it)."""
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        return None
    generator = _Generator(parsed.get("__named_schemas", {}))
    try:
        if generator.min_size(parsed) == 0:
            raise Unsupported("a record of zero bytes")
        encoder, decoder = generator.record_functions(parsed)
    except Unsupported:
        return None
    source = "\n\n".join(generator.functions) + "\n"
    namespace: dict[str, Any] = {**_HELPERS, **generator.consts, "_MISSING": object()}
    exec(compile(source, f"<avro_compiled {parsed['name']}>", "exec"), namespace)
    return CompiledSchema(namespace[encoder], namespace[decoder], source)


_compiled: dict[bytes, CompiledSchema | None] = {}


def compiled_for(parsed: Any, fingerprint: bytes) -> CompiledSchema | None:
    """`compile_schema`, once per schema fingerprint."""
    if fingerprint not in _compiled:
        _compiled[fingerprint] = compile_schema(parsed)
    return _compiled[fingerprint]
