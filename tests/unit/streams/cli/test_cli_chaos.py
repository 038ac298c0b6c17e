"""`paystream chaos` refuses a broker fault its broker cannot take, before it starts anything."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from streams.cli.main import app


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    from streams.settings import get_settings

    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    # An embedded broker on a port where nothing runs: a refusal must come before any start.
    monkeypatch.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "localhost:1024")
    monkeypatch.setenv("PAYSTREAM_KAFKA_EMBEDDED_PORT", "1024")
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()


@pytest.mark.parametrize(("brokers", "flag", "said"), [
    ("1", "--broker-kills", "needs the embedded cluster"),
    ("3", "--broker-restarts", "restarts the single embedded broker"),
])
def test_a_broker_fault_the_broker_cannot_take_is_refused(env: pytest.MonkeyPatch, brokers: str, flag: str, said: str) -> None:
    env.setenv("PAYSTREAM_KAFKA_BROKERS", brokers)
    result = CliRunner().invoke(app, ["chaos", flag, "1", "--commands", "10"])
    assert result.exit_code == 2, result.output
    assert said in " ".join(result.output.split())
