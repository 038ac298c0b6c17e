"""The CLI switches the codecs of every process at start (streams/cli/main.py, `configure`):
each command but the few that touch no record asks the registry first, and a
registry that does not answer stops the command before it does anything."""

from __future__ import annotations

import os

import pytest
import typer
from typer.testing import CliRunner

from schemas.codec import use_registry
from streams.cli.main import NO_CODEC_COMMANDS, app

DEAD_URL = "http://localhost:1/apis/ccompat/v7"
COMMANDS = sorted(typer.main.get_group(app).commands)


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    from streams.settings import get_settings

    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "localhost:1")  # nothing here may reach a broker
    get_settings.cache_clear()
    yield monkeypatch
    get_settings.cache_clear()
    use_registry(None)


def test_the_exempt_commands_exist() -> None:
    assert NO_CODEC_COMMANDS <= set(COMMANDS)


@pytest.mark.parametrize("command", [c for c in COMMANDS if c not in NO_CODEC_COMMANDS])
def test_every_other_command_asks_the_registry_first(command: str, env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", DEAD_URL)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_WAIT_S", "0")
    result = CliRunner().invoke(app, [command, "--no-such-option"])
    assert result.exit_code == 1, result.output
    assert f"no Schema Registry answered at {DEAD_URL}" in " ".join(result.stderr.split())


@pytest.mark.parametrize("command", sorted(NO_CODEC_COMMANDS))
def test_exempt_commands_run_without_a_registry(command: str, env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", DEAD_URL)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_WAIT_S", "0")
    result = CliRunner().invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output


def test_help_needs_no_registry(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", DEAD_URL)
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_WAIT_S", "0")
    result = CliRunner().invoke(app, ["worker", "--help"])
    assert result.exit_code == 0 and "Run a pipeline worker" in result.output


def test_unset_url_asks_nothing() -> None:
    result = CliRunner().invoke(app, ["produce", "--no-such-option"])
    assert result.exit_code == 2 and "Schema Registry" not in result.output  # the option error, not the registry


def test_an_external_registry_is_not_ours_to_start(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_SCHEMA_REGISTRY_URL", "http://registry.example:8081")
    result = CliRunner().invoke(app, ["registry", "up"])
    assert result.exit_code == 0 and "is external: nothing to start" in " ".join(result.stderr.split())
