"""Settings from PAYSTREAM_* env, and the topics declared for the topology."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import EMBEDDED_BOOTSTRAP, Settings
from streams.topics import (
    TABLES,
    declared_topics,
    namespace_topics,
    per_table_changelog_topic,
    tables_changelog_topic,
    topic_names,
)


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
    assert (s.partitions, s.replication_factor) == (4, 1)
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


def test_a_second_embedded_broker_on_its_own_port(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", "localhost:29092")
    assert not Settings().kafka_embedded  # a local port alone does not make a broker ours (docker-compose's 9092)
    env.setenv("PAYSTREAM_KAFKA_EMBEDDED_PORT", "29092")
    assert Settings().kafka_embedded
    env.setenv("PAYSTREAM_KAFKA_BOOTSTRAP", EMBEDDED_BOOTSTRAP)
    assert not Settings().kafka_embedded  # the default broker is then someone else's: never stopped by us


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


@pytest.mark.parametrize(
    ("name", "value"),
    [("PAYSTREAM_PARTITIONS", "0"), ("PAYSTREAM_PARTITIONS", "eight"), ("PAYSTREAM_COMMIT_INTERVAL_MS", "0")],
)
def test_out_of_range_numbers_are_refused(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


@pytest.mark.parametrize("value", ["decline", "authorize"])
def test_three_ds_unavailable_is_a_choice_of_two(env: pytest.MonkeyPatch, value: str) -> None:
    from streams.domain.payments import THREE_DS_UNAVAILABLE_ACTIONS

    env.setenv("PAYSTREAM_THREE_DS_UNAVAILABLE", value)
    assert Settings().three_ds_unavailable == value and value in THREE_DS_UNAVAILABLE_ACTIONS
    env.setenv("PAYSTREAM_THREE_DS_UNAVAILABLE", "review")
    with pytest.raises(ValidationError, match="three_ds_unavailable"):
        Settings()


# --- topics ---


def test_every_topic_has_the_same_partition_count(env: pytest.MonkeyPatch) -> None:
    specs = declared_topics(Settings(partitions=12, replication_factor=3))
    assert len(specs) == 25 + 1  # the pipeline's topics and the tables' one changelog
    assert {s.partitions for s in specs} == {12}
    assert {s.replication_factor for s in specs} == {3}


def test_changelogs_are_compacted_and_pipeline_topics_are_not(env: pytest.MonkeyPatch) -> None:
    specs = {s.name: s for s in declared_topics(Settings())}
    changelogs = {tables_changelog_topic("paystream")}
    assert changelogs == {"paystream-tables-changelog"}  # every table's: a commit writes fewer partitions
    assert changelogs <= set(specs)
    # the per-table changelogs of before are read by the migration only, never declared
    assert not {per_table_changelog_topic("paystream", t) for t in TABLES} & set(specs)
    # latest entry per key is the state (api-objects: the merchant API's Customers and PaymentMethods)
    # card-vault: the latest sealed record of each card
    # monitoring-cases by case id, monitoring-decisions by decision id (every decision kept: the audit trail)
    compacted = changelogs | {
        "fraud-blocklist",
        "merchants",
        "fx-rates",
        "job-runs",
        "sanctions-list",
        "api-objects",
        "monitoring-cases",
        "monitoring-decisions",
        "card-vault",
    }
    aml_records = {"monitoring-cases", "monitoring-decisions"}  # compacted and deleted past five years
    for name, spec in specs.items():
        assert spec.compacted == (name in compacted), name
        policy = "compact,delete" if name in aml_records else "compact" if name in compacted else "delete"
        assert spec.config()["cleanup.policy"] == policy
        if name in ("payment-events", "ledger-entries", "payouts", "subscription-commands"):
            assert spec.retention_ms == -1  # the event store and the books keep everything
        elif name == "vault-reveals":
            assert spec.retention_ms >= 366 * 24 * 3600 * 1000  # the reveal audit outlives PCI DSS's year
        elif name not in compacted:
            assert spec.retention_ms is not None and spec.retention_ms > 0


def test_changelog_segments_roll_so_compaction_runs(env: pytest.MonkeyPatch) -> None:
    # The cleaner never compacts a log's open segment: with the 7-day default a chaos run's
    # changelogs kept every version and each restart replayed them all (docs/reliability.md).
    env.setenv("PAYSTREAM_CHANGELOG_SEGMENT_MS", "30000")
    specs = declared_topics(Settings())
    changelogs = [s for s in specs if s.name.endswith("-changelog")]
    assert len(changelogs) == 1
    for spec in changelogs:
        cfg = spec.config()
        assert cfg["segment.ms"] == "30000" and float(cfg["min.cleanable.dirty.ratio"]) < 0.5
        assert cfg["cleanup.policy"] == "compact"
    assert all(
        "segment.ms" not in s.config() for s in specs if s not in changelogs
    )  # the event store keeps its segments
    env.setenv("PAYSTREAM_CHANGELOG_SEGMENT_MS", "1000")
    with pytest.raises(ValidationError):
        Settings()  # a segment a second would flood the broker with files


def test_namespace_prefixes_topics_and_changelogs(env: pytest.MonkeyPatch) -> None:
    s = Settings(namespace="ci-7")
    names = topic_names(s)
    assert (names.commands, names.validated, names.outcomes, names.dlq) == (
        "ci-7.payment-commands",
        "ci-7.payment-commands-validated",
        "ci-7.payment-outcomes",
        "ci-7.payment-dlq",
    )
    declared = {spec.name for spec in declared_topics(s)}
    assert "paystream-ci-7-tables-changelog" in declared
    assert not declared & {spec.name for spec in declared_topics(Settings())}  # no topic shared with the default


def test_namespace_topics_cover_the_namespace_and_nothing_of_another(env: pytest.MonkeyPatch) -> None:
    def covered(s: Settings, topic: str) -> bool:
        names, prefixes = namespace_topics(s)
        return topic in names or topic.startswith(tuple(prefixes))

    s = Settings(namespace="ci-7")
    migrated_from = per_table_changelog_topic(s.app_id, "payments")
    assert all(covered(s, t) for t in [spec.name for spec in declared_topics(s)] + [migrated_from])
    # a namespace that starts like it ("ci-7-b": "paystream-ci-7-b-...") and the default keep theirs
    for other in (Settings(namespace="ci-7-b"), Settings()):
        assert not any(covered(s, spec.name) for spec in declared_topics(other))
    with pytest.raises(ValueError):
        namespace_topics(Settings())


def test_the_worker_uses_only_declared_topics(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Topics are never auto-created, so every topic the worker reads and every table
    changelog must be declared."""
    from streams.worker.topology import build_worker  # builds the clients without connecting

    s = Settings(namespace="unit", partitions=6, data_dir=tmp_path, keys_dir=tmp_path / "keys")
    engine = build_worker(s)
    declared = {spec.name for spec in declared_topics(s)}
    names = topic_names(s)

    read = set(engine.stages)
    changelogs = set(engine.tables.values())
    assert {names.commands, names.validated} <= read <= declared
    assert changelogs == {tables_changelog_topic(s.app_id)}
    assert set(engine.tables) == set(TABLES)
    assert changelogs <= declared
    # written only, read by every worker outside the group (the blocklist, the sanctions list), settle's (fx-rates,
    # payouts), or written by a process of its own: the webhook runner (webhook-deliveries), the scheduler (job-runs);
    # api-objects is the merchant API's alone; monitoring-cases and -decisions are the case queue's (`paystream cases`);
    # card-vault is read by every worker outside the group and vault-reveals is the audit (written only)
    assert declared - read - changelogs <= {
        names.outcomes,
        names.dlq,
        names.events,
        names.review,
        names.blocklist,
        names.fx_rates,
        names.payouts,
        names.webhooks,
        names.job_runs,
        names.sanctions,
        names.api_objects,
        names.monitoring_cases,
        names.monitoring_decisions,
        names.card_vault,
        names.vault_reveals,
    }
    assert names.monitoring_activity in read
    assert {spec.partitions for spec in declared_topics(s)} == {6}  # one partition count: tasks span topics


def test_monitoring_thresholds_come_from_the_env_and_a_bad_one_stops_the_worker(
    env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from streams.worker.topology import build_worker

    env.setenv("PAYSTREAM_MONITORING_THRESHOLDS", '{"device_cards": 3, "reporting_threshold_minor": {"USD": 300000}}')
    assert Settings().monitoring_thresholds == {"device_cards": 3, "reporting_threshold_minor": {"USD": 300000}}
    for bad in ({"device_cards": 1}, {"no_such_threshold": 1}):
        with pytest.raises(ValueError, match="PAYSTREAM_MONITORING_THRESHOLDS"):
            build_worker(
                Settings(namespace="unit", data_dir=tmp_path, keys_dir=tmp_path / "keys", monitoring_thresholds=bad)
            )


# --- bounds (docs/reliability.md) ---


def _bounds(name: str) -> tuple[bool, bool]:
    metadata = Settings.model_fields[name].metadata
    lower = any(getattr(m, "ge", None) is not None or getattr(m, "gt", None) is not None for m in metadata)
    upper = any(getattr(m, "le", None) is not None or getattr(m, "lt", None) is not None for m in metadata)
    return lower, upper


def test_every_numeric_setting_is_bounded_both_ways() -> None:
    numeric = [n for n, f in Settings.model_fields.items() if f.annotation in (int, float)]
    assert len(numeric) >= 20
    unbounded = [n for n in numeric if _bounds(n) != (True, True)]
    assert unbounded == [], f"give these a ge and an le: {unbounded}"


def test_bound_settings_default_to_the_code_s_own_defaults(env: pytest.MonkeyPatch) -> None:
    from connectors.clickhouse.sink import MAX_ATTEMPTS, MAX_BATCH_ROWS, MAX_WAIT_MS, Batcher, Sink
    from connectors.kafka.clients import PRODUCER_QUEUE_MAX_MESSAGES
    from connectors.webhooks.delivery import Backoff
    from schemas.codec import MAX_MESSAGE_BYTES
    from streams.domain.payments import MAX_FOLLOW_UPS, Policy
    from streams.domain.timers import SWEEP_MAX

    s = Settings()
    fields = Settings.model_fields
    assert (
        (s.timer_sweep_max, s.payment_max_follow_ups)
        == (SWEEP_MAX, MAX_FOLLOW_UPS)
        == (SWEEP_MAX, Policy().max_follow_ups)
    )
    assert s.three_ds_unavailable == Policy().three_ds_unavailable
    batcher = Batcher()
    assert (s.clickhouse_batch_max_rows, s.clickhouse_batch_max_wait_ms) == (batcher.max_rows, batcher.max_wait_ms)
    assert s.clickhouse_insert_attempts == Sink.attempts
    caps = {
        "clickhouse_batch_max_rows": MAX_BATCH_ROWS,
        "clickhouse_batch_max_wait_ms": MAX_WAIT_MS,
        "clickhouse_insert_attempts": MAX_ATTEMPTS,
    }
    for name, cap in caps.items():  # a setting never goes past what the code asserts
        assert next(m.le for m in fields[name].metadata if getattr(m, "le", None) is not None) == cap
    backoff = Backoff()
    assert (s.webhook_backoff_base_s, s.webhook_backoff_max_delay_s, s.webhook_give_up_after_s) == (
        backoff.base_s,
        backoff.max_delay_s,
        backoff.give_up_after_s,
    )
    assert s.producer_queue_max_messages == PRODUCER_QUEUE_MAX_MESSAGES
    # The largest message a stage may read must fit a fetch and a produce request.
    assert (
        s.consumer_max_fetch_size_bytes >= MAX_MESSAGE_BYTES and s.producer_max_request_size_bytes > MAX_MESSAGE_BYTES
    )


@pytest.mark.parametrize(
    "name, value",
    [
        ("PAYSTREAM_BATCH_MAX", "1000000"),
        ("PAYSTREAM_TIMER_SWEEP_MAX", "0"),
        ("PAYSTREAM_MAX_AMOUNT_MINOR", str(2**63)),
        ("PAYSTREAM_CONSUMER_MAX_FETCH_SIZE_BYTES", "1000"),
    ],
)
def test_a_bound_outside_its_range_is_refused(env: pytest.MonkeyPatch, name: str, value: str) -> None:
    env.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()
