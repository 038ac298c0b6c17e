"""Pure logic of the Kafka edge: topic configs and the broker's server.properties."""

import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from connectors.kafka import admin
from connectors.kafka.admin import TopicSpec, config_drift
from connectors.kafka.launcher import BrokerConfig, render_server_properties


def test_delete_policy_with_broker_default_retention() -> None:
    assert TopicSpec("payment-commands", 8).config() == {"cleanup.policy": "delete"}


def test_compacted_topic() -> None:
    assert TopicSpec("payments-changelog", 8, compacted=True).config() == {"cleanup.policy": "compact"}


def test_retention_and_extra_config() -> None:
    spec = TopicSpec("payment-events", 8, retention_ms=-1, extra_config={"min.compaction.lag.ms": "0"})
    assert spec.config() == {"cleanup.policy": "delete", "retention.ms": "-1", "min.compaction.lag.ms": "0"}


def test_extra_config_overrides_derived_keys() -> None:
    spec = TopicSpec("t", 1, compacted=True, extra_config={"cleanup.policy": "compact,delete"})
    assert spec.config()["cleanup.policy"] == "compact,delete"


@pytest.mark.parametrize(
    "kwargs", [{"partitions": 0}, {"partitions": 1, "replication_factor": 0}, {"partitions": 1, "retention_ms": -2}]
)
def test_invalid_specs_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        TopicSpec("t", **kwargs)


def test_drift_sets_what_differs_and_nothing_else() -> None:
    spec = TopicSpec("t-changelog", 8, compacted=True, extra_config={"segment.ms": "60000"})
    drift = config_drift(spec, {"cleanup.policy": "compact", "segment.ms": "604800000", "flush.ms": "1"})
    assert drift.to_set == {"segment.ms": "60000"} and drift.refused == []
    assert config_drift(spec, {"cleanup.policy": "compact", "segment.ms": "60000"}).to_set == {}


def test_drift_refuses_a_cleanup_policy_change() -> None:
    drift = config_drift(
        TopicSpec("payment-events", 8, retention_ms=-1), {"cleanup.policy": "compact", "retention.ms": "-1"}
    )
    assert drift.to_set == {} and len(drift.refused) == 1 and "cleanup.policy is compact" in drift.refused[0]


@pytest.mark.parametrize(
    ("have", "wanted", "sets"),
    [
        ("86400000", "604800000", True),  # longer: keeps more
        ("86400000", "-1", True),  # forever
        ("-1", "604800000", False),  # would delete what forever keeps
        ("604800000", "86400000", False),  # would delete the older days
    ],
)
def test_drift_only_lengthens_retention(have: str, wanted: str, sets: bool) -> None:
    drift = config_drift(
        TopicSpec("t", 1, retention_ms=int(wanted)), {"cleanup.policy": "delete", "retention.ms": have}
    )
    assert drift.to_set == ({"retention.ms": wanted} if sets else {}) and drift.refused == []


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def test_server_properties_single_kraft_node(tmp_path: Path) -> None:
    cfg = BrokerConfig(home=tmp_path / "kafka", port=29092, controller_port=29093)
    props = _props(render_server_properties(cfg))

    assert props["process.roles"] == "broker,controller"
    assert props["node.id"] == "1"
    assert props["controller.quorum.voters"] == "1@localhost:29093"
    assert props["listeners"] == "PLAINTEXT://localhost:29092,CONTROLLER://localhost:29093"
    assert props["advertised.listeners"] == "PLAINTEXT://localhost:29092"
    assert props["controller.listener.names"] == "CONTROLLER"
    assert props["log.dirs"] == str((tmp_path / "kafka" / "data").resolve())
    assert props["auto.create.topics.enable"] == "false"
    assert props["num.partitions"] == "8"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    for key in (
        "offsets.topic.replication.factor",
        "transaction.state.log.replication.factor",
        "transaction.state.log.min.isr",
        "min.insync.replicas",
    ):
        assert props[key] == "1", key


def test_broker_paths_live_under_home(tmp_path: Path) -> None:
    cfg = BrokerConfig(home=tmp_path)
    assert cfg.bootstrap == "localhost:19092"
    assert {p.parent for p in (cfg.data_dir, cfg.libs_dir, cfg.pid_file, cfg.log_file)} == {tmp_path.resolve()}


class _Meta:
    def __init__(self, topics: dict[str, Any]) -> None:
        self.topics = topics


class _SlowAdmin:
    """Metadata answers: a timeout first (a busy broker), then a topic without a leader, then led."""

    def __init__(self, answers: list[Any]) -> None:
        self.answers = answers

    def list_topics(self, timeout: float) -> _Meta:
        answer = self.answers.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _topic(leader: int) -> Any:
    return SimpleNamespace(error=None, partitions={0: SimpleNamespace(leader=leader)})


def test_waiting_for_leaders_outlasts_a_timed_out_metadata_probe() -> None:
    slow = _SlowAdmin(
        [KafkaException(KafkaError(KafkaError._TIMED_OUT)), _Meta({"t": _topic(-1)}), _Meta({"t": _topic(1)})]
    )
    admin._wait_for_leaders(slow, ["t"], time.monotonic() + 60)  # type: ignore[arg-type]
    assert slow.answers == []


def test_waiting_for_leaders_raises_a_non_retriable_metadata_error() -> None:
    slow = _SlowAdmin([KafkaException(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))])
    with pytest.raises(KafkaException):
        admin._wait_for_leaders(slow, ["t"], time.monotonic() + 60)  # type: ignore[arg-type]


def test_waiting_for_leaders_gives_up_at_its_deadline() -> None:
    with pytest.raises(admin.TopicError, match="without partition leaders"):
        admin._wait_for_leaders(_SlowAdmin([]), ["t"], time.monotonic() - 1)  # type: ignore[arg-type]


def test_discarding_topics_without_a_broker_warns_and_returns() -> None:
    # Nothing listens on port 1: the metadata read times out, and a cleanup must not raise.
    with pytest.warns(RuntimeWarning, match="scratch topics left"):
        assert admin.discard_topics("localhost:1", ["t"], prefixes=["p."], timeout_s=0.5) == []
