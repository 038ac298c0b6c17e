"""A 3-node KRaft cluster (`paystream kafka up --brokers 3`'s launcher) loses a
broker mid-run and nothing is lost: every command gets exactly one outcome.

Starts its own cluster on ports 29092-29097 under tmp (not the embedded broker on
19092, which may run beside it) and stops it at the end. Needs Java 17 and the
jars (resolved into the tmp home, or PAYSTREAM_TEST_KAFKA_LIBS_HOME to reuse
var/kafka's). Heavy: three JVMs and a worker on the machine.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource

from connectors.kafka import launcher
from connectors.kafka.admin import ensure_topics
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_commands
from streams.settings import Settings
from streams.topics import declared_topics, topic_names
from tests.integration.support import PARTITIONS, create, start_worker

pytestmark = pytest.mark.integration

BASE_PORT = 29092
COMMANDS = 3000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterConfig]:
    home = tmp_path_factory.mktemp("kafka-cluster")
    libs = os.environ.get("PAYSTREAM_TEST_KAFKA_LIBS_HOME")
    if libs:  # reuse resolved jars instead of a ~45 MB Maven resolve
        shutil.copytree(Path(libs) / "libs", home / "libs")
    cfg = launcher.ClusterConfig(home, nodes=3, base_port=BASE_PORT, start_timeout_s=180)
    launcher.up_cluster(cfg)
    yield cfg
    launcher.down_cluster(cfg)


def _leaders(bootstrap: str, topic: str) -> dict[int, int]:
    meta = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return {p: m.leader for p, m in meta.topics[topic].partitions.items()}


def test_topics_are_rf3_with_min_isr_2(cluster: launcher.ClusterConfig, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=cluster.bootstrap,
        replication_factor=3,
        namespace=f"it-rf-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        data_dir=tmp_path,
        keys_dir=tmp_path / "keys",
    )
    ensure_topics(settings.kafka_bootstrap, declared_topics(settings))
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap})
    topic = topic_names(settings).commands
    meta = admin.list_topics(topic, timeout=10).topics[topic]
    assert all(len(p.replicas) == 3 for p in meta.partitions.values())

    def min_isr() -> str | None:
        (config,) = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, topic)]).values()
        try:
            return config.result()["min.insync.replicas"].value
        except KafkaException:  # the node asked has not learned of the new topic yet (UNKNOWN_TOPIC_OR_PART)
            return None

    assert wait_until(lambda: min_isr() is not None, 30), "no node describes the topic"
    assert min_isr() == "2"


def test_a_broker_killed_mid_run_loses_nothing(cluster: launcher.ClusterConfig, tmp_path: Path) -> None:
    settings = Settings(
        kafka_bootstrap=cluster.bootstrap,  # all three: clients find the cluster whichever node is down
        replication_factor=3,
        namespace=f"it-mb-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        data_dir=tmp_path,
        keys_dir=tmp_path / "keys",
        commit_interval_ms=50,
        providers="test",  # every create is asserted to succeed
        fraud_scoring=False,  # (and one card pays them all)
    )
    merchant = f"m_{uuid.uuid4().hex[:6]}"
    commands = [create(merchant, f"k{i}", amount=1 + i) for i in range(COMMANDS)]
    ids = {c["command_id"] for c in commands}
    worker = start_worker(settings)
    observer = Observer(settings)
    try:
        publish_commands(settings, commands[: COMMANDS // 2])
        assert wait_until(lambda: observer.poll() >= 0 and len(observer.outcomes) >= 300, 120), worker.log_tail()
        # Kill the node leading most command partitions: leadership must move.
        leaders = _leaders(cluster.bootstrap, topic_names(settings).commands)
        victim = max(set(leaders.values()), key=list(leaders.values()).count)
        assert launcher.kill_node(cluster, victim) is not None
        answered_at_kill = len(observer.outcomes)
        # Publish the rest with one broker down: acks=all with 2 of 3 in sync still succeeds.
        publish_commands(settings, commands[COMMANDS // 2 :])
        assert observer.wait_for(ids, 0, 300, lambda _d, _q: worker.supervise(), on_stall=worker.restart), (
            f"missing {len(ids - observer.outcomes.keys())} with node {victim} down; log:\n{worker.log_tail()}"
        )
        # The node comes back and catches up; nothing committed meanwhile goes missing.
        launcher.up_cluster(cluster)
        while observer.poll(1.0):
            pass
    finally:
        worker.stop()
        observer.close()
    assert answered_at_kill < len(ids), "the kill came after everything was answered; nothing was tested"
    duplicated = {c for c, o in observer.outcomes.items() if len(o) > 1}
    assert not duplicated, f"{len(duplicated)} commands answered twice"
    assert ids <= observer.outcomes.keys()
    assert all(observer.outcomes[c["command_id"]][0]["status"] == "succeeded" for c in commands)
    events = {c["payment_id"]: [(e["type"], e["version"]) for e in observer.events[c["payment_id"]]] for c in commands}
    assert {tuple(v) for v in events.values()} == {(("authorized", 1),)}
