"""Avro single-object encoding (Avro spec, "Single object encoding"), or the
Confluent wire format when a Schema Registry is configured (`use_registry`).

Single object: `C3 01` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's parsing canonical form + the Avro binary body. Decoding looks the
fingerprint up among every schema we ship, so a reader can still decode messages
written by an older (registered) schema version.

Confluent wire format: `00` + the registry's 4-byte big-endian schema id + the Avro
binary body. With a registry configured, encoding writes it and decoding reads both
formats (topics written before the switch stay readable).

Bad bytes never raise anything but `DecodeError`, whose `reason` is a stable code
the caller puts on the dead-letter record. An unreachable registry raises
`RegistryError` instead: the message is fine, so it must not be dead-lettered.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

from schemas.avro_compiled import CompiledSchema, compiled_for
from schemas.errors import ReasonedError

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
# Bound on what a decoder accepts: a message larger than this is rejected before
# fastavro allocates anything for it (the broker's default max is 1 MiB).
MAX_MESSAGE_BYTES = 1_048_576

CONFLUENT_MAGIC = b"\x00"
CONFLUENT_HEADER_LEN = len(CONFLUENT_MAGIC) + 4
# Java reads the schema id as a signed 32-bit int; registries hand out positive ids.
MAX_SCHEMA_ID = 2**31 - 1
# Writer schemas fetched by id (known and unknown ids alike), so a flood of messages
# with made-up ids costs at most this many registry round trips held in memory.
MAX_CACHED_SCHEMA_IDS = 1024


class DecodeError(ReasonedError):
    """Bytes that are not a message we can read. `reason` is a stable code."""


class EncodeError(ValueError):
    """A record that does not match its schema; the message names the field."""


class RegistryError(RuntimeError):
    """The Schema Registry refused a schema (incompatible) or could not be reached."""


@dataclass(frozen=True)
class Schema:
    name: str
    parsed: Any
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO

    @property
    def header(self) -> bytes:
        return MAGIC + self.fingerprint


def crc64_avro_fingerprint(canonical_form: str) -> bytes:
    """The schema fingerprint as the 8 little-endian bytes single-object encoding uses."""
    return bytes.fromhex(fingerprint(canonical_form, "CRC-64-AVRO"))


@cache
def schema_text(name: str) -> str:
    """The .avsc file as shipped (docs and defaults included: what a registry checks)."""
    return resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text()


@cache
def load_schema(name: str) -> Schema:
    raw = json.loads(schema_text(name))
    parsed = fastavro.parse_schema(raw)
    return Schema(name, parsed, crc64_avro_fingerprint(to_parsing_canonical_form(raw)))


@cache
def schema_names() -> tuple[str, ...]:
    """Every schema we ship: each .avsc file under schemas/avro."""
    files = resources.files("schemas").joinpath("avro").iterdir()
    return tuple(sorted(f.name.removesuffix(".avsc") for f in files if f.name.endswith(".avsc")))


@cache
def history_names() -> tuple[str, ...]:
    """Earlier versions of shipped schemas (`avro/history/<Name>.<version>.avsc`):
    registered for decoding only, so messages already in a topic stay readable
    after a schema gains a field."""
    files = resources.files("schemas").joinpath("avro", "history").iterdir()
    return tuple(sorted("history/" + f.name.removesuffix(".avsc") for f in files if f.name.endswith(".avsc")))


@cache
def _by_fingerprint() -> dict[bytes, Schema]:
    return {s.fingerprint: s for s in map(load_schema, schema_names() + history_names())}


class RegistryClient(Protocol):
    """What we use of confluent-kafka's `SchemaRegistryClient` (tests pass a fake).

    Errors carry `http_status_code` like `SchemaRegistryError` does; 404 means the
    subject or schema id does not exist.
    """

    def register_schema(self, subject_name: str, schema: Any) -> int: ...

    def get_schema(self, schema_id: int) -> Any: ...  # has .schema_str

    def test_compatibility(self, subject_name: str, schema: Any) -> bool: ...


def subject_name(schema: Schema) -> str:
    """Registry subject of a schema: its Avro full name (Confluent's RecordNameStrategy).

    A codec encodes one record type and does not know the topic, so the record name,
    not `<topic>-value`, is the subject; one compatibility history per record type.
    """
    return str(schema.parsed["name"])


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "http_status_code", None) == 404


class RegistryWire:
    """The Confluent wire format against one registry: the ids of our schemas
    (registered at construction, after a compatibility check) and writer schemas
    fetched by id for decoding."""

    def __init__(self, client: RegistryClient) -> None:
        from confluent_kafka.schema_registry import Schema as RegistrySchema

        self._client = client
        self._ids: dict[bytes, int] = {}  # our fingerprint -> registry id
        self._own: dict[int, Schema] = {}  # registry id -> our schema, never evicted
        self._fetched: dict[int, Schema | None] = {}  # other ids -> writer, None if unknown
        for schema in map(load_schema, schema_names()):
            subject = subject_name(schema)
            # The full text, not the canonical form: compatibility rules need the defaults.
            registered = RegistrySchema(schema_text(schema.name), "AVRO")
            try:
                if not client.test_compatibility(subject, registered):
                    raise RegistryError(
                        f"schema {schema.name} is not compatible with the latest version of subject"
                        f" {subject} under the registry's compatibility level; nothing registered after it"
                    )
            except RegistryError:
                raise
            except Exception as exc:
                if not _not_found(exc):  # 404: a new subject, nothing to be compatible with
                    raise RegistryError(f"compatibility check of {subject} failed: {exc}") from exc
            try:
                schema_id = client.register_schema(subject, registered)
            except Exception as exc:
                raise RegistryError(f"registering {subject} failed: {exc}") from exc
            if not 0 <= schema_id <= MAX_SCHEMA_ID:
                raise RegistryError(f"registry returned schema id {schema_id} for {subject}: not a 4-byte id")
            self._ids[schema.fingerprint] = schema_id
            self._own[schema_id] = schema

    def header(self, schema: Schema) -> bytes:
        schema_id = self._ids.get(schema.fingerprint)
        if schema_id is None:  # e.g. a history/ schema: kept for decoding only
            raise EncodeError(f"{schema.name} is not registered: only current schemas are written")
        return CONFLUENT_MAGIC + schema_id.to_bytes(4, "big")

    def writer(self, schema_id: int) -> Schema:
        own = self._own.get(schema_id)
        if own is not None:
            return own
        if schema_id not in self._fetched:
            if len(self._fetched) >= MAX_CACHED_SCHEMA_IDS:
                self._fetched.pop(next(iter(self._fetched)))  # oldest first
            self._fetched[schema_id] = self._fetch(schema_id)
        writer = self._fetched[schema_id]
        if writer is None:
            raise DecodeError("unknown_schema_id", f"schema id {schema_id} is not in the registry")
        return writer

    def _fetch(self, schema_id: int) -> Schema | None:
        try:
            registered = self._client.get_schema(schema_id)
        except Exception as exc:
            if _not_found(exc):
                return None
            raise RegistryError(f"fetching schema id {schema_id} failed: {exc}") from exc
        try:
            raw = json.loads(registered.schema_str)
            canonical = to_parsing_canonical_form(raw)
            known = _by_fingerprint().get(crc64_avro_fingerprint(canonical))
            return known or Schema(
                f"registry/{schema_id}", fastavro.parse_schema(raw), crc64_avro_fingerprint(canonical)
            )
        except Exception as exc:  # a non-Avro or broken schema under that id
            raise DecodeError(
                "unreadable_writer_schema", f"schema id {schema_id}: {type(exc).__name__}: {exc}"[:500]
            ) from None


#: The registry every codec uses, or None for single-object encoding (the default).
_wire: RegistryWire | None = None


def use_registry(client: RegistryClient | None) -> RegistryWire | None:
    """Switch every codec of this process to the Confluent wire format against
    `client` (registering our schemas now, so an incompatible one fails at startup),
    or back to single-object encoding with None."""
    global _wire
    _wire = RegistryWire(client) if client is not None else None
    return _wire


class Codec:
    """Encodes and decodes one record type. Thread-safe; hold one per type."""

    def __init__(self, name: str) -> None:
        self.schema = load_schema(name)
        # Our own schema compiled to straight-line code (schemas/avro_compiled.py):
        # the same bytes as fastavro, without its per-field dispatch. None: fastavro.
        self._compiled: CompiledSchema | None = compiled_for(self.schema.parsed, self.schema.fingerprint)
        self._header = self.schema.header

    def encode(self, record: dict[str, Any], *, check: bool = False) -> bytes:
        """Encode a record. `check=True` validates first and names the bad field."""
        if check:
            try:
                validate(record, self.schema.parsed, raise_errors=True)
            except ValidationError as e:
                raise EncodeError(_validation_message(e)) from None
        header = self._header if _wire is None else _wire.header(self.schema)
        try:
            if self._compiled is not None:
                return self._compiled.encode(header, record)
            buf = io.BytesIO()
            buf.write(header)
            fastavro.schemaless_writer(buf, self.schema.parsed, record)
            return buf.getvalue()
        # OverflowError: fastavro's writer on an int beyond 64 bits.
        except (TypeError, ValueError, KeyError, AttributeError, OverflowError) as e:
            raise EncodeError(f"{self.schema.name}: {e}") from None

    def current(self, data: bytes) -> bool:
        """Whether `data` starts with the header `encode` writes now: written with this
        very schema, in the wire format in use. Such a record `decode`d and encoded again
        is the same bytes (Avro's binary encoding of a value is unique), so a stage that
        passes one on unchanged can forward it as it came."""
        return data.startswith(self._header if _wire is None else _wire.header(self.schema))

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise DecodeError("empty_message", "message has no value (tombstone)")
        if len(data) > MAX_MESSAGE_BYTES:
            raise DecodeError("message_too_large", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
        if data[:HEADER_LEN] == self._header:  # single-object, our own schema: the usual case
            writer, header_len = self.schema, HEADER_LEN
        else:
            writer, header_len = self._writer(data)
            if writer.parsed["name"] != self.schema.parsed["name"]:
                raise DecodeError("wrong_schema", f"expected {self.schema.name}, message is {writer.name}")
        own = writer.fingerprint == self.schema.fingerprint
        try:
            if own and self._compiled is not None:
                record, end = self._compiled.decode(bytes(data), header_len)
            else:
                body = io.BytesIO(data[header_len:])
                # Written with our own schema (the usual case): no reader schema, so
                # fastavro neither compares the two nor resolves one against the other.
                record = fastavro.schemaless_reader(body, writer.parsed, None if own else self.schema.parsed)
                end = header_len + body.tell()
        except Exception as e:  # hostile bytes raise many types; all mean the same
            raise DecodeError("malformed_avro", f"{type(e).__name__}: {e}"[:500]) from None
        if end != len(data):
            raise DecodeError("trailing_bytes", f"{len(data) - end} bytes after the record")
        return record

    @staticmethod
    def _writer(data: bytes) -> tuple[Schema, int]:
        """The writer schema named by the header, and the header's length."""
        if _wire is not None and data[:1] == CONFLUENT_MAGIC:
            if len(data) < CONFLUENT_HEADER_LEN:
                raise DecodeError("malformed_header", f"{len(data)} bytes: magic byte 0 needs a 4-byte schema id")
            return _wire.writer(int.from_bytes(data[1:CONFLUENT_HEADER_LEN], "big")), CONFLUENT_HEADER_LEN
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            if _wire is not None and data[:2] != MAGIC:
                raise DecodeError(
                    "unknown_magic_byte",
                    f"starts with {bytes(data[:2]).hex() or 'nothing'}: neither 00 (Confluent) nor c3 01 (single "
                    "object)",
                )
            hint = (
                " (magic byte 0 is the Confluent wire format: set PAYSTREAM_SCHEMA_REGISTRY_URL)"
                if data[:1] == CONFLUENT_MAGIC
                else ""
            )
            raise DecodeError("not_single_object_encoding", "missing C3 01 header" + hint)
        fp = bytes(data[2:HEADER_LEN])
        writer = _by_fingerprint().get(fp)
        if writer is None:
            raise DecodeError("unknown_fingerprint", f"schema fingerprint {fp.hex()} is not registered")
        return writer, HEADER_LEN


def _validation_message(e: ValidationError) -> str:
    # `e.errors` holds the per-field errors; `e.args[0]` is their JSON dump (a str).
    return "; ".join(str(x) for x in getattr(e, "errors", ())) or str(e)
