"""Avro single-object encoding (Avro spec, "Single object encoding").

A message is `C3 01` + the 8-byte little-endian CRC-64-AVRO fingerprint of the
writer schema's parsing canonical form + the Avro binary body. Decoding looks the
fingerprint up among every schema we ship, so a reader can still decode messages
written by an older (registered) schema version.

Decoding never raises anything but `DecodeError`, whose `reason` is a stable code
the caller puts on the dead-letter record.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form
from fastavro.validation import ValidationError, validate

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8
# Bound on what a decoder accepts: a message larger than this is rejected before
# fastavro allocates anything for it (the broker's default max is 1 MiB).
MAX_MESSAGE_BYTES = 1_048_576


class DecodeError(Exception):
    """Bytes that are not a message we can read. `reason` is a stable code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class EncodeError(ValueError):
    """A record that does not match its schema; the message names the field."""


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
def load_schema(name: str) -> Schema:
    text = resources.files("schemas").joinpath("avro", f"{name}.avsc").read_text()
    raw = json.loads(text)
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


class Codec:
    """Encodes and decodes one record type. Thread-safe; hold one per type."""

    def __init__(self, name: str) -> None:
        self.schema = load_schema(name)

    def encode(self, record: dict[str, Any], *, check: bool = False) -> bytes:
        """Encode a record. `check=True` validates first and names the bad field."""
        if check:
            try:
                validate(record, self.schema.parsed, raise_errors=True)
            except ValidationError as e:
                raise EncodeError(_validation_message(e)) from None
        buf = io.BytesIO()
        buf.write(self.schema.header)
        try:
            fastavro.schemaless_writer(buf, self.schema.parsed, record)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            raise EncodeError(f"{self.schema.name}: {e}") from None
        return buf.getvalue()

    def decode(self, data: bytes | None) -> dict[str, Any]:
        if data is None:
            raise DecodeError("empty_message", "message has no value (tombstone)")
        if len(data) > MAX_MESSAGE_BYTES:
            raise DecodeError("message_too_large", f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise DecodeError("not_single_object_encoding", "missing C3 01 header")
        fp = bytes(data[2:HEADER_LEN])
        writer = _by_fingerprint().get(fp)
        if writer is None:
            raise DecodeError("unknown_fingerprint", f"schema fingerprint {fp.hex()} is not registered")
        if writer.parsed["name"] != self.schema.parsed["name"]:
            raise DecodeError(
                "wrong_schema", f"expected {self.schema.name}, message is {writer.name}"
            )
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            record = fastavro.schemaless_reader(body, writer.parsed, self.schema.parsed)
        except Exception as e:  # fastavro raises many types on hostile bytes; all mean the same
            raise DecodeError("malformed_avro", f"{type(e).__name__}: {e}"[:500]) from None
        if body.tell() != len(data) - HEADER_LEN:
            raise DecodeError("trailing_bytes", f"{len(data) - HEADER_LEN - body.tell()} bytes after the record")
        return record


def _validation_message(e: ValidationError) -> str:
    # `e.errors` holds the per-field errors; `e.args[0]` is their JSON dump (a str).
    return "; ".join(str(x) for x in getattr(e, "errors", ())) or str(e)
