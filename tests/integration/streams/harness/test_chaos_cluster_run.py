"""A chaos run on a 3-node cluster (issue 24): RF 3, min ISR 2, two workers; one node
is killed -9 mid-run and comes back, one worker is killed too, and every figure from
the topics must be clean. The big run is a documented command (docs/reliability.md).

Starts its own cluster on ports 28100-28105 under tmp (neither the embedded broker nor
test_multibroker's 29092-29097, and below Linux's ephemeral range, 32768-60999: at
48100 a node once failed to bind while a client's outgoing connection held the port)
and stops it at the end, failed or not. The jars are
copied from PAYSTREAM_TEST_KAFKA_LIBS_HOME, else from the embedded broker's home
(`make test` resolved them there), else resolved by Maven.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from connectors.kafka import launcher
from streams.client.broker import cluster_config
from streams.harness.chaos import run_chaos, to_json
from streams.settings import Settings
from tests.integration.support import PARTITIONS

pytestmark = pytest.mark.integration

BASE_PORT = 28100
# Seed 9's plan: node 1 (the first bootstrap server) killed at 37% answered, a worker
# killed at 44% while the node is still down (it must bootstrap from nodes 2 and 3).
SEED = 9


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    settings = Settings(
        kafka_bootstrap=f"localhost:{BASE_PORT}", kafka_embedded_port=BASE_PORT, kafka_brokers=3,
        kafka_start_timeout_s=180, namespace=f"it-chaos3-{uuid.uuid4().hex[:8]}", partitions=PARTITIONS,
        data_dir=tmp_path, keys_dir=tmp_path / "keys", commit_interval_ms=50,
        providers="test", fraud_scoring=True,  # every stage under fire
    )  # fmt: skip
    cluster = cluster_config(settings, settings.kafka_brokers)
    libs = Path(os.environ.get("PAYSTREAM_TEST_KAFKA_LIBS_HOME") or Settings().kafka_dir) / "libs"
    if (libs / ".resolved").exists():  # reuse resolved jars instead of a ~45 MB Maven resolve
        shutil.copytree(libs, cluster.root / "libs")
    try:
        launcher.up_cluster(cluster)
        yield settings
    finally:
        launcher.down_cluster(cluster)


def test_a_node_and_a_worker_killed_lose_and_double_nothing(settings: Settings) -> None:
    assert settings.replication_factor == 3
    figures = run_chaos(settings, commands=1_500, kills=1, broker_restarts=0, workers=2, seed=SEED, broker_kills=1)
    report = json.dumps(to_json(figures), indent=2)
    assert (figures.kills, figures.broker_kills) == (1, 1), f"the faults did not fire: nothing was tested\n{report}"
    (node_kill,) = figures.broker_kill_log
    assert node_kill.node == 1 and node_kill.answered_while_down > 0, f"nothing answered on two nodes\n{report}"
    assert figures.ok, report
