"""A fake Schema Registry client and a DeadLetter with its Avro body built by hand,
shared by the codec tests (unit, and the real-registry integration test)."""

from __future__ import annotations

from datetime import UTC, datetime

from confluent_kafka.schema_registry import Schema as RegistrySchema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from schemas.codec import Codec, schema_text

FIRST_ID = 0x01020304  # four distinct bytes: a swapped byte order would show


class FakeRegistry:
    """Subjects, versions and ids like a Schema Registry: one id per distinct schema
    text, 404s for unknown subjects and ids, and a switchable compatibility answer."""

    def __init__(self, *, compatible: bool = True) -> None:
        self.compatible = compatible
        self.ids: dict[str, int] = {}  # schema text -> id
        self.subjects: dict[str, list[int]] = {}
        self.get_calls: list[int] = []
        self.down = False

    def register_schema(self, subject_name: str, schema: RegistrySchema) -> int:
        assert schema.schema_type == "AVRO"
        schema_id = self.ids.setdefault(schema.schema_str, FIRST_ID + len(self.ids))
        versions = self.subjects.setdefault(subject_name, [])
        if schema_id not in versions:
            versions.append(schema_id)
        return schema_id

    def get_schema(self, schema_id: int) -> RegistrySchema:
        self.get_calls.append(schema_id)
        if self.down:
            raise ConnectionError("connection refused")
        for text, known in self.ids.items():
            if known == schema_id:
                return RegistrySchema(text, "AVRO")
        raise SchemaRegistryError(404, 40403, "Schema not found")

    def test_compatibility(self, subject_name: str, schema: RegistrySchema) -> bool:
        if subject_name not in self.subjects:
            raise SchemaRegistryError(404, 40401, f"Subject '{subject_name}' not found.")
        return self.compatible

    def id_of(self, name: str) -> int:
        return self.ids[schema_text(name)]


DEAD = Codec("DeadLetter")
DEAD_LETTER = {
    "dlq_id": "d1",
    "stage": "ingest",
    "reason": "r",
    "detail": "x",
    "source_topic": "t",
    "source_partition": 3,
    "source_offset": 7,
    "source_timestamp": datetime(1970, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),  # 1 ms
    "raw_key": None,
    "raw_value": b"\x01",
    "pans_masked": 0,
}
# The Avro binary body by hand (spec: strings and bytes are a zig-zag varint length
# then the data; int/long zig-zag varints; a union is the branch index then the value).
DEAD_LETTER_BODY = bytes.fromhex(
    "04" "6431"          # "d1"
    "0c" "696e67657374"  # "ingest"
    "02" "72"            # "r"
    "02" "78"            # "x"
    "02" "74"            # "t"
    "06"                 # source_partition 3
    "0e"                 # source_offset 7
    "02"                 # source_timestamp 1 ms
    "00"                 # raw_key: branch 0, null
    "02" "01"            # raw_value b"\x01"
    "00"                 # pans_masked 0
)  # fmt: skip
