"""Fixtures shared by the runtime's unit tests."""

from __future__ import annotations

import pytest

from streams.runtime import callwatch as callwatch_module
from tests.unit.streams.runtime.runtime_support import WatchExits


@pytest.fixture
def watch_exits(monkeypatch: pytest.MonkeyPatch) -> WatchExits:
    recorded = WatchExits()
    monkeypatch.setattr(callwatch_module, "exit_for_restart", recorded)
    return recorded
