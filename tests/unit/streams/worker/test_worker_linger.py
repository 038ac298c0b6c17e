"""The worker's transactional producer lingers `worker_linger_ms`, whatever the API's
command producer does: what the worker sends is read only once the transaction commits,
and the commit sends what still lingers at once."""

from __future__ import annotations

from pathlib import Path

from streams.settings import Settings
from streams.worker.topology import build_worker


def test_the_workers_producer_lingers_its_own_setting(tmp_path: Path) -> None:
    def linger_ms(**given: int) -> int:
        s = Settings(namespace="unit", data_dir=tmp_path, keys_dir=tmp_path / "keys", providers="test", **given)
        return build_worker(s).config.linger_ms  # builds the clients; nothing connects

    assert linger_ms() == Settings().worker_linger_ms > 0
    assert linger_ms(worker_linger_ms=40, producer_linger_ms=0) == 40
    assert linger_ms(worker_linger_ms=0, producer_linger_ms=100) == 0
