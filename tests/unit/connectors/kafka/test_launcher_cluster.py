"""The local 3-node KRaft cluster's generated configs (no JVM started here), the
replication of our topics on it, and the settings that select it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError

from connectors.kafka.admin import TopicSpec, min_insync_for
from connectors.kafka.launcher import (
    BrokerConfig,
    ClusterConfig,
    _cluster_id,
    existing_cluster,
    quorum_leader,
    render_server_properties,
    replication_for,
)
from streams.settings import Settings
from streams.topics import declared_topics


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


@pytest.fixture
def cluster(tmp_path: Path) -> ClusterConfig:
    return ClusterConfig(tmp_path / "kafka", nodes=3, base_port=29092)


def test_three_nodes_on_distinct_ports_and_dirs(cluster: ClusterConfig) -> None:
    nodes = cluster.all_nodes()
    ports = [p for n in nodes for p in (n.port, n.controller_port)]
    assert ports == [29092, 29093, 29094, 29095, 29096, 29097]
    assert len({n.data_dir for n in nodes}) == len({n.pid_file for n in nodes}) == len({n.log_file for n in nodes}) == 3
    assert [n.data_dir for n in nodes] == [cluster.root / f"node-{i}" / "data" for i in (1, 2, 3)]
    # One jar dir for the whole cluster, the single node's (same home).
    assert {n.libs_dir for n in nodes} == {BrokerConfig(home=cluster.home).libs_dir}
    assert cluster.bootstrap == "localhost:29092,localhost:29094,localhost:29096"


def test_each_node_is_a_combined_voter_of_one_quorum(cluster: ClusterConfig) -> None:
    for node_id, node in enumerate(cluster.all_nodes(), start=1):
        props = _props(render_server_properties(node))
        assert props["process.roles"] == "broker,controller"
        assert props["node.id"] == str(node_id)
        assert props["controller.quorum.voters"] == "1@localhost:29093,2@localhost:29095,3@localhost:29097"
        assert props["listeners"] == f"PLAINTEXT://localhost:{node.port},CONTROLLER://localhost:{node.controller_port}"
        assert props["advertised.listeners"] == f"PLAINTEXT://localhost:{node.port}"
        assert props["log.dirs"] == str(node.data_dir)


def test_cluster_replicates_three_ways_with_two_in_sync(cluster: ClusterConfig) -> None:
    props = _props(render_server_properties(cluster.node(2)))
    for key in ("offsets.topic.replication.factor", "transaction.state.log.replication.factor",
                "share.coordinator.state.topic.replication.factor", "default.replication.factor"):  # fmt: skip
        assert props[key] == "3", key
    for key in ("transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr", "min.insync.replicas"):
        assert props[key] == "2", key


def test_single_node_keeps_replication_one(tmp_path: Path) -> None:
    props = _props(render_server_properties(BrokerConfig(home=tmp_path)))
    assert props["controller.quorum.voters"] == "1@localhost:19093"
    assert props["default.replication.factor"] == props["min.insync.replicas"] == "1"


@pytest.mark.parametrize(("nodes", "expected"), [(1, (1, 1)), (3, (3, 2)), (5, (3, 2))])
def test_replication_for(nodes: int, expected: tuple[int, int]) -> None:
    assert replication_for(nodes) == expected


@pytest.mark.parametrize("nodes", [0, 1, 2, 6])
def test_cluster_size_is_three_to_five(tmp_path: Path, nodes: int) -> None:
    with pytest.raises(ValueError, match="3 to 5 nodes"):
        ClusterConfig(tmp_path, nodes=nodes)


def test_ports_must_fit(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no room"):
        ClusterConfig(tmp_path, nodes=3, base_port=65532)


def test_every_node_is_formatted_with_one_cluster_id(cluster: ClusterConfig) -> None:
    cluster.root.mkdir(parents=True)
    first = _cluster_id(cluster)
    assert _cluster_id(cluster) == first
    assert len(first) == 22 and not first.startswith("-")  # Kafka's Uuid text form


def test_existing_cluster_is_found_by_its_node_dirs(tmp_path: Path) -> None:
    assert existing_cluster(tmp_path) is None
    for i in (1, 2, 3):
        (tmp_path / f"node-{i}").mkdir()
    found = existing_cluster(tmp_path, base_port=29092)
    assert found is not None and found.nodes == 3 and found.node(3).port == 29096


# --- our topics on the cluster ---


def test_min_insync_replicas_in_topic_config() -> None:
    assert TopicSpec("t", 8, 3, min_insync_replicas=2).config()["min.insync.replicas"] == "2"
    with pytest.raises(ValueError, match="min_insync_replicas"):
        TopicSpec("t", 8, 1, min_insync_replicas=2)
    assert (min_insync_for(1), min_insync_for(2), min_insync_for(3)) == (1, 1, 2)


def _quorum_state(cluster: ClusterConfig, node_id: int, leader: int, epoch: int) -> None:
    path = cluster.node(node_id).data_dir / "__cluster_metadata-0" / "quorum-state"
    path.parent.mkdir(parents=True)
    path.write_text(f'{{"clusterId":"","leaderId":{leader},"leaderEpoch":{epoch},"votedId":-1,"data_version":0}}')


def test_the_quorum_leader_is_the_newest_epochs(cluster: ClusterConfig) -> None:
    assert quorum_leader(cluster) is None  # no node formatted yet
    _quorum_state(cluster, 1, leader=2, epoch=4)  # node 1 was down through the last election
    _quorum_state(cluster, 2, leader=3, epoch=5)
    _quorum_state(cluster, 3, leader=-1, epoch=6)  # an election under way: no leader known
    assert quorum_leader(cluster) == 3


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_embedded_cluster_settings_give_every_topic_rf3_min_isr2(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_KAFKA_BROKERS", "3")
    settings = Settings()
    assert settings.replication_factor == 3
    assert settings.bootstrap_servers == "localhost:19092,localhost:19094,localhost:19096"
    specs = declared_topics(settings)
    assert specs and all(s.replication_factor == 3 and s.config()["min.insync.replicas"] == "2" for s in specs)


def test_single_node_topics_keep_the_broker_default(env: pytest.MonkeyPatch) -> None:
    settings = Settings()
    assert settings.bootstrap_servers == settings.kafka_bootstrap
    assert all(s.replication_factor == 1 and "min.insync.replicas" not in s.config() for s in declared_topics(settings))


def test_an_explicit_replication_factor_wins(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_KAFKA_BROKERS", "3")
    env.setenv("PAYSTREAM_REPLICATION_FACTOR", "2")
    assert Settings().replication_factor == 2


def test_two_embedded_brokers_are_refused(env: pytest.MonkeyPatch) -> None:
    env.setenv("PAYSTREAM_KAFKA_BROKERS", "2")
    with pytest.raises(ValidationError, match="1 \\(one node\\) or 3-5"):
        Settings()


def test_a_worker_of_an_embedded_cluster_knows_every_node(env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from streams.client.processes import WorkerProcess

    parent = Settings(kafka_bootstrap="localhost:48100", kafka_embedded_port=48100, kafka_brokers=3, data_dir=tmp_path)
    for name, value in WorkerProcess(parent, tmp_path / "w.log").env().items():
        if name.startswith("PAYSTREAM_"):
            env.setenv(name, value)
    child = Settings()
    # A worker restarted while node 1 is down still bootstraps from nodes 2 and 3.
    assert child.bootstrap_servers == "localhost:48100,localhost:48102,localhost:48104"
    assert child.replication_factor == 3
