"""Shared by the engine's tests against the real broker."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.runtime.engine import EngineConfig


@pytest.fixture
def own_signals() -> Iterator[None]:
    """Engine.run takes SIGTERM and SIGINT; pytest gets them back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


def engine_config(bootstrap: str, run: str, state_dir: Path, **overrides: Any) -> EngineConfig:
    """A test engine's settings: its own group and transactional id, short intervals."""
    return EngineConfig(
        **{
            "client": {"bootstrap.servers": bootstrap},
            "group_id": f"{run}-group",
            "transactional_id": f"{run}-tx",
            "state_dir": state_dir,
            "commit_interval_ms": 50,
            "commit_idle_ms": 5,
            "commit_records_max": 1_000,
            "batch_max": 100,
            "session_timeout_ms": 10_000,
            "linger_ms": 0,
            "batch_bytes": 1_000_000,
            "fetch_partition_bytes": 1_048_576,
            "request_bytes": 1_100_000,
        }
        | overrides
    )
