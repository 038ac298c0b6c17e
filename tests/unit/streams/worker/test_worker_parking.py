"""A bug in a stage's pure logic parks the record as one `internal_error` dead letter and
the batch goes on: it never crashes the worker or stops the partition."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.codec import Codec
from streams.worker import topology as worker_module
from streams.stages.ledger import Applied
from streams.runtime.messages import Message, Record
from streams.runtime.state import Task
from streams.settings import Settings
from streams.topics import topic_names
from streams.worker.topology import build_worker

DLQ = Codec("DeadLetter")


def test_a_stage_bug_parks_its_record_and_the_batch_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = Settings(namespace="unit", partitions=2, data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test")
    engine = build_worker(settings)  # builds the clients; nothing connects
    names = topic_names(settings)
    monkeypatch.setattr(worker_module.ENTRY_CODEC, "decode", lambda value: {"entry": value})

    def apply_entry(record, *args, **kwargs):  # type: ignore[no-untyped-def]
        if record["entry"] == b"bug":
            raise KeyError("a bug in the ledger stage")
        return Applied(skipped=True)  # a redelivery: nothing to do

    monkeypatch.setattr(worker_module.ledger_stage, "apply_entry", apply_entry)
    sent: list[Record] = []
    task = Task(1, engine.tables, tmp_path / "state", lambda record, partition, origin: sent.append(record))
    batch = [Message(names.ledger, 1, offset, 1_700_000_000_000, b"m", value, 1_700_000_000_000)
             for offset, value in enumerate([b"ok", b"bug", b"ok"])]

    engine.stages[names.ledger].handle(batch, task)  # does not raise

    [letter] = [DLQ.decode(r.value) for r in sent if r.topic == names.dlq]
    assert (letter["stage"], letter["reason"], letter["source_offset"]) == ("ledger", "internal_error", 1)
    assert "KeyError" in letter["detail"] and letter["raw_value"] == b"bug"
    assert task.table("dlq-marks").get(b"ledger:" + names.ledger.encode() + b"/1") == b"1"  # one letter, even if redelivered
    task.close()
