"""A small chaos run in the suite (issue 11): two workers, kill -9 twice mid-stream,
then every figure from the topics must be clean. The big run is a documented command
(docs/reliability.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from streams.harness.chaos import run_chaos, to_json
from tests.integration.support import make_settings

pytestmark = pytest.mark.integration


def test_kill_9_twice_across_two_workers_loses_and_doubles_nothing(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "chaos").model_copy(update={"fraud_scoring": True})  # every stage under fire
    figures = run_chaos(settings, commands=3_000, kills=2, broker_restarts=0, workers=2, seed=11)
    assert figures.kills == 2, "the faults did not fire: nothing was tested"
    assert figures.ok, json.dumps(to_json(figures), indent=2)
