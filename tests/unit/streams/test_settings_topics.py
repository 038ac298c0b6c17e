"""Settings from PAYSTREAM_* env, and the topics declared for the topology."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import EMBEDDED_BOOTSTRAP, Settings
from streams.topics import TABLES, changelog_topic, declared_topics, topic_names


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """A clean PAYSTREAM_ environment; set variables with env.setenv."""
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


# --- settings ---


def test_defaults_are_the_embedded_single_node(env: pytest.MonkeyPatch) -> None:
    s = Settings()
    assert s.kafka_bootstrap == EMBEDDED_BOOTSTRAP
    assert s.kafka_embedded
    assert s.app_id == "paystream"
    assert (s.partitions, s.replication_factor) == (8, 1)
    assert s.max_amount_minor == 10**15 and s.idempotency_key_max_len == 255


def test_values_come_from_paystream_env(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", " broker-1:9092,broker-2:9092 ")
    env.setenv("PAYSTREAM_PARTITIONS", "16")
    env.setenv("PAYSTREAM_REPLICATION_FACTOR", "3")
    env.setenv("PAYSTREAM_DATA_DIR", "/srv/paystream")
    env.setenv("KAFKA_BOOTSTRAP", "ignored:1")  # no prefix, not ours

    s = Settings()

    assert s.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    assert not s.kafka_embedded
    assert (s.partitions, s.replication_factor) == (16, 3)
    assert s.kafka_dir == Path("/srv/paystream/kafka")


def test_namespace_names_the_app(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_NAMESPACE", "ci-42")
    s = Settings()
    assert s.app_id == "paystream-ci-42"
    assert s.state_dir.is_relative_to(Path("var/state/paystream-ci-42"))


@pytest.mark.parametrize("value", ["", "   "])
def test_empty_bootstrap_is_refused(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", value)
    with pytest.raises(ValidationError, match="PAYSTREAM_KAFKA_BOOTSTRAP must not be empty"):
        Settings()


@pytest.mark.parametrize("value", ["Prod", "ci_1", "a.b", "x" * 33, "ns/1"])
def test_bad_namespace_is_refused(env: pytest.MonkeyPatch, value: str) -> None:
    env.setenv("PAYSTREAM_NAMESPACE", value)
    with pytest.raises(ValidationError, match="namespace"):
        Settings()


@pytest.mark.parametrize(("name", "value"), [("PAYSTREAM_PARTITIONS", "0"), ("PAYSTREAM_PARTITIONS", "eight"),
                                             ("PAYSTREAM_COMMIT_INTERVAL_S", "0")])
def test_out_of_range_numbers_are_refused(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


# --- topics ---


def test_every_topic_has_the_same_partition_count(env: pytest.MonkeyPatch) -> None:
    specs = declared_topics(Settings(partitions=12, replication_factor=3))
    assert len(specs) == 6 + len(TABLES)
    assert {s.partitions for s in specs} == {12}
    assert {s.replication_factor for s in specs} == {3}


def test_changelogs_are_compacted_and_pipeline_topics_are_not(env: pytest.MonkeyPatch) -> None:
    specs = {s.name: s for s in declared_topics(Settings())}
    changelogs = {changelog_topic("paystream", t) for t in TABLES}
    assert changelogs == {"paystream-payments-changelog", "paystream-payments-dedup-changelog",
                          "paystream-payments-timers-changelog", "paystream-keys-changelog"}
    assert changelogs <= set(specs)
    for name, spec in specs.items():
        assert spec.compacted == (name in changelogs), name
        assert spec.config()["cleanup.policy"] == ("compact" if name in changelogs else "delete")
        if name == "payment-events":
            assert spec.retention_ms == -1  # the event store keeps everything
        elif name not in changelogs:
            assert spec.retention_ms is not None and spec.retention_ms > 0


def test_namespace_prefixes_topics_and_changelogs(env: pytest.MonkeyPatch) -> None:
    s = Settings(namespace="ci-7")
    names = topic_names(s)
    assert (names.commands, names.validated, names.outcomes, names.dlq) == (
        "ci-7.payment-commands", "ci-7.payment-commands-validated", "ci-7.payment-outcomes", "ci-7.payment-dlq")
    declared = {spec.name for spec in declared_topics(s)}
    assert "paystream-ci-7-payments-changelog" in declared
    assert not declared & {spec.name for spec in declared_topics(Settings())}  # no topic shared with the default


def test_the_app_uses_only_declared_topics(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Topics are never auto-created, so every topic the app reads and every table
    changelog must be declared, with the one partition count."""
    from streams.app import build_app  # imports Faust; builds the app without connecting

    s = Settings(namespace="unit", partitions=6, data_dir=tmp_path, keys_dir=tmp_path / "keys")
    app = build_app(s)
    declared = {spec.name for spec in declared_topics(s)}
    names = topic_names(s)

    read = {agent.channel.get_topic_name() for agent in app.agents.values()}
    changelogs = {table.changelog_topic.get_topic_name() for table in app.tables.values()}
    assert {names.commands, names.keyed, names.validated} <= read <= declared
    assert changelogs == {changelog_topic(s.app_id, t) for t in TABLES}
    assert changelogs <= declared
    assert declared - read - changelogs <= {names.outcomes, names.dlq, names.events}  # written only
    assert {table.partitions for table in app.tables.values()} == {6}
