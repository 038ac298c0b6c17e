"""The topology's feeding stages: the merchant registry and the label counts are
declared first and `feeds`, so a batch runs them before the stages that read their
tables and, after an assignment, those stages wait until they are read to their ends."""

from __future__ import annotations

from pathlib import Path

from streams.settings import Settings
from streams.topics import topic_names
from streams.worker.topology import build_worker


def test_the_feeding_stages_come_first_and_only_they_feed(tmp_path: Path) -> None:
    settings = Settings(namespace="unit", partitions=2, data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test")
    engine = build_worker(settings)  # builds the clients; nothing connects
    names = topic_names(settings)
    declared = list(engine.stages.values())
    assert [(s.name, s.feeds) for s in declared[:3]] == [
        ("merchants", True),
        ("labels", True),
        ("merchant-labels", True),
    ]
    assert not any(s.feeds for s in declared[3:])
    ingest = engine.stages[names.commands]
    assert {"merchants", "keys"} <= set(ingest.tables)  # the keys stage runs in ingest's transaction
