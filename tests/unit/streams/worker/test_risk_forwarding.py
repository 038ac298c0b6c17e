"""The risk stage forwards a record it passes on unchanged as it came when those bytes
are its encoding now (no second encode), and encodes one written with an earlier
schema version again, as before."""

from __future__ import annotations

import io
from pathlib import Path

import fastavro
import pytest

from schemas.codec import MAGIC, Codec, load_schema
from streams.runtime.messages import Message, Record
from streams.runtime.state import Task
from streams.settings import Settings
from streams.topics import topic_names
from streams.worker import topology as worker_module
from streams.worker.topology import build_worker
from tests.unit.schemas.test_codec import RECORDS

VALIDATED = Codec("ValidatedCommand")
TS_MS = 1_790_000_000_000


def test_a_passed_on_record_is_forwarded_as_it_came_unless_written_with_an_earlier_schema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_module.BlocklistReader, "ensure_loaded", lambda self: None)  # no broker here
    settings = Settings(namespace="unit", partitions=2, data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test")
    engine = build_worker(settings)
    names = topic_names(settings)
    # A refused create: the risk stage does not score it, it passes it on.
    refused = RECORDS["ValidatedCommand"] | {"rejection_reason": "duplicate", "rejection_detail": "seen"}
    current = VALIDATED.encode(refused)
    old = load_schema("history/ValidatedCommand.8")
    buf = io.BytesIO(MAGIC + old.fingerprint)
    buf.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buf, old.parsed, {f["name"]: refused[f["name"]] for f in old.parsed["fields"]})
    earlier = buf.getvalue()
    sent: list[Record] = []
    task = Task(0, engine.tables, tmp_path / "state", lambda record, partition, origin: sent.append(record))
    batch = [Message(names.risk, 0, i, TS_MS, b"k", v, TS_MS) for i, v in enumerate([current, earlier])]

    engine.stages[names.risk].handle(batch, task)

    first, second = (r for r in sent if r.topic == names.validated)
    assert first.value is current
    assert second.value == VALIDATED.encode(VALIDATED.decode(earlier)) != earlier
    assert VALIDATED.decode(second.value) == VALIDATED.decode(current)
    task.close()
