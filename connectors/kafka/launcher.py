"""The embedded Kafka broker: real Apache Kafka in KRaft mode, one combined node,
or a local cluster of N combined controller+broker nodes (`ClusterConfig`).

Jars come from Maven Central through `deploy/kafka/pom.xml` (resolved once into
`home/libs`), the JVM is the machine's Java 17+, data lives in `home/data` (one
node) or `home/node-<id>/data` (a cluster; the nodes share `home/libs`).
Plain parameters only; no `streams` imports.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from connectors import jvm
from connectors.kafka.admin import CLUSTER_REPLICATION_FACTOR, broker_answers, min_insync_for

#: deploy/kafka in the source tree: the pom and the log4j2 config.
DEPLOY_DIR = Path(__file__).resolve().parents[2] / "deploy" / "kafka"
POM = DEPLOY_DIR / "pom.xml"
LOG4J2_CONFIG = DEPLOY_DIR / "log4j2.properties"

MIN_JAVA = 17
MAVEN_TIMEOUT_S = 1800  # a cold resolve downloads ~45 MB
# The machine has 2 cores shared with workers and ClickHouse: a small heap, G1 as in
# kafka-run-class. KAFKA_HEAP_OPTS overrides the heap like it does for kafka-server-start.
DEFAULT_HEAP_OPTS = "-Xmx1g -Xms256m"
JVM_OPTS = ("-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true")


class BrokerError(jvm.JvmError):
    """The broker could not be resolved, formatted, started or stopped."""


@dataclass(frozen=True)
class BrokerConfig:
    home: Path
    port: int = 19092
    controller_port: int = 19093
    start_timeout_s: int = 120
    maven_repo: Path | None = None  # None -> home/m2, so a clean clone needs no ~/.m2
    node_id: int = 1
    # The controller quorum as (node id, controller port); empty: this node alone.
    voters: tuple[tuple[int, int], ...] = ()
    # Where libs/ and m2/ live: the cluster's home, shared by its nodes; None -> home.
    libs_home: Path | None = None

    @property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def libs_dir(self) -> Path:
        return (self.libs_home or self.home).resolve() / "libs"

    @property
    def quorum(self) -> tuple[tuple[int, int], ...]:
        return self.voters or ((self.node_id, self.controller_port),)

    @property
    def pid_file(self) -> Path:
        return self.root / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.root / "broker.log"

    @property
    def properties_file(self) -> Path:
        return self.root / "server.properties"

    @property
    def bootstrap(self) -> str:
        return f"localhost:{self.port}"

    @property
    def service(self) -> jvm.JvmService:
        return jvm.JvmService("Kafka", self.root, self.pid_file, self.log_file, b"kafka.Kafka", BrokerError)


@dataclass(frozen=True)
class BrokerStatus:
    running: bool  # our broker process (from the pid file) is alive
    answering: bool  # something answers metadata requests on the bootstrap
    pid: int | None
    bootstrap: str
    log_file: Path
    already_running: bool = False


MAX_CLUSTER_NODES = 5
# A cluster's node i listens on base + 2(i-1) (clients) and base + 2(i-1) + 1 (controller).
PORTS_PER_NODE = 2


def replication_for(nodes: int) -> tuple[int, int]:
    """(replication factor, min.insync.replicas) for a cluster of `nodes`."""
    rf = min(nodes, CLUSTER_REPLICATION_FACTOR)
    return rf, min_insync_for(rf)


def render_server_properties(cfg: BrokerConfig) -> str:
    """server.properties for one KRaft node that is both broker and controller."""
    voters = cfg.quorum
    assert cfg.node_id in {node for node, _ in voters}, "a combined node must be one of the voters"
    rf, min_isr = (str(n) for n in replication_for(len(voters)))
    props = {
        "process.roles": "broker,controller",
        "node.id": str(cfg.node_id),
        # Static voters: ports may change between runs without reformatting the data
        # dir (a --standalone dynamic quorum records the controller endpoint at format).
        "controller.quorum.voters": ",".join(f"{node}@localhost:{port}" for node, port in voters),
        "listeners": f"PLAINTEXT://localhost:{cfg.port},CONTROLLER://localhost:{cfg.controller_port}",
        "advertised.listeners": f"PLAINTEXT://localhost:{cfg.port}",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "log.dirs": str(cfg.data_dir),
        "num.partitions": "8",
        "auto.create.topics.enable": "false",
        # Internal topics (offsets, transactions, share state) as replicated as ours:
        # RF 1 on one node, RF 3 / min ISR 2 on a cluster of 3+.
        "offsets.topic.replication.factor": rf,
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": min_isr,
        "min.insync.replicas": min_isr,
        "default.replication.factor": rf,
        "group.initial.rebalance.delay.ms": "0",
        # Two cores: fewer request threads than the defaults (3 network, 8 io).
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    return "".join(f"{k}={v}\n" for k, v in props.items())


def _new_cluster_id() -> str:
    # Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding; Kafka
    # itself rerolls ids starting with '-' so they never look like a CLI flag.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _java() -> str:
    return jvm.find_java(MIN_JAVA, "Kafka 4", BrokerError)


def _java_cmd(cfg: BrokerConfig, java: str, main: str, *args: str, heap: str) -> list[str]:
    return [
        java,
        *heap.split(),
        *JVM_OPTS,
        f"-Dlog4j2.configurationFile={LOG4J2_CONFIG}",
        "-cp",
        f"{cfg.libs_dir}/*",  # a JVM class-path wildcard, not a shell glob
        main,
        *args,
    ]


def resolve_jars(cfg: BrokerConfig) -> Path:
    """Copy the broker's runtime jars into home/libs with Maven, once per pom version."""
    repo = cfg.maven_repo or cfg.libs_dir.parent / "m2"
    return jvm.maven_resolve(POM, cfg.libs_dir, repo, ["dependency:copy-dependencies"], MAVEN_TIMEOUT_S, "the Kafka jars", BrokerError)


def status(cfg: BrokerConfig) -> BrokerStatus:
    pid = jvm.running_pid(cfg.service)
    return BrokerStatus(
        running=pid is not None,
        answering=broker_answers(cfg.bootstrap),
        pid=pid,
        bootstrap=cfg.bootstrap,
        log_file=cfg.log_file,
    )


def _format_storage(cfg: BrokerConfig, java: str, cluster_id: str | None = None) -> None:
    """Format the data dir once. The nodes of one cluster share `cluster_id`."""
    if (cfg.data_dir / "meta.properties").exists():
        return
    cmd = _java_cmd(
        cfg, java, "kafka.tools.StorageTool",
        "format", "--cluster-id", cluster_id or _new_cluster_id(), "--config", str(cfg.properties_file),
        heap="-Xmx256m",
    )  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=cfg.start_timeout_s, check=False)
    if proc.returncode != 0:
        raise BrokerError(f"formatting {cfg.data_dir} failed:\n{proc.stdout}{proc.stderr}")


def _wait_answering(cfg: BrokerConfig, proc: subprocess.Popen[bytes] | None, pid: int) -> None:
    jvm.wait_answering(cfg.service, lambda: broker_answers(cfg.bootstrap), cfg.bootstrap, proc, pid, cfg.start_timeout_s)


def up(cfg: BrokerConfig) -> BrokerStatus:
    """Start the broker unless it runs; return once it answers metadata requests."""
    with jvm.locked(cfg.root):
        pid = jvm.running_pid(cfg.service)
        if pid is not None:
            _wait_answering(cfg, None, pid)  # it may still be starting
            return BrokerStatus(True, True, pid, cfg.bootstrap, cfg.log_file, already_running=True)
        if broker_answers(cfg.bootstrap):
            raise BrokerError(f"another Kafka (not ours: no live pid in {cfg.pid_file}) answers on {cfg.bootstrap}")

        java = _java()
        resolve_jars(cfg)
        proc = _launch(cfg, java, heap=os.environ.get("KAFKA_HEAP_OPTS", DEFAULT_HEAP_OPTS))
        _wait_answering(cfg, proc, proc.pid)
        return BrokerStatus(True, True, proc.pid, cfg.bootstrap, cfg.log_file)


def _launch(cfg: BrokerConfig, java: str, heap: str, cluster_id: str | None = None) -> subprocess.Popen[bytes]:
    """Write the config, format once, start the JVM and record its pid (no wait)."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    cfg.properties_file.write_text(render_server_properties(cfg))
    _format_storage(cfg, java, cluster_id)
    cmd = _java_cmd(cfg, java, "kafka.Kafka", str(cfg.properties_file), heap=heap)
    return jvm.launch(cfg.service, cmd, cwd=cfg.root)


def down(cfg: BrokerConfig, timeout_s: float = 60) -> bool:
    """Stop the broker: SIGTERM, bounded wait, then SIGKILL. False if it was not running."""
    return jvm.down(cfg.service, timeout_s)


# --- a local cluster of N combined nodes ---

#: Heap per node of a local cluster: three JVMs share the machine.
CLUSTER_HEAP_OPTS = "-Xmx512m -Xms128m"


@dataclass(frozen=True)
class ClusterConfig:
    """N combined controller+broker nodes on one machine: node i in `home/node-<i>`,
    on ports base_port + 2(i-1) (clients) and + 1 (controller). The jars in
    `home/libs` are the single node's (same home), resolved once for both."""

    home: Path
    nodes: int = 3
    base_port: int = 19092
    start_timeout_s: int = 120

    def __post_init__(self) -> None:
        # One node is BrokerConfig's layout; two could not lose a controller (quorum of 2).
        if not CLUSTER_REPLICATION_FACTOR <= self.nodes <= MAX_CLUSTER_NODES:
            raise ValueError(f"a local cluster has {CLUSTER_REPLICATION_FACTOR} to {MAX_CLUSTER_NODES} nodes, not {self.nodes}")
        if not 1024 <= self.base_port <= 65535 - PORTS_PER_NODE * self.nodes:
            raise ValueError(f"base port {self.base_port} leaves no room for {self.nodes} nodes")

    @property
    def root(self) -> Path:
        return self.home.resolve()

    @property
    def cluster_id_file(self) -> Path:
        return self.root / "cluster.id"

    def node(self, node_id: int) -> BrokerConfig:
        assert 1 <= node_id <= self.nodes, node_id
        voters = tuple((i, self._port(i) + 1) for i in range(1, self.nodes + 1))
        return BrokerConfig(
            home=self.root / f"node-{node_id}",
            port=self._port(node_id),
            controller_port=self._port(node_id) + 1,
            start_timeout_s=self.start_timeout_s,
            node_id=node_id,
            voters=voters,
            libs_home=self.root,
        )

    def all_nodes(self) -> list[BrokerConfig]:
        return [self.node(i) for i in range(1, self.nodes + 1)]

    @property
    def bootstrap(self) -> str:
        return ",".join(n.bootstrap for n in self.all_nodes())

    def _port(self, node_id: int) -> int:
        return self.base_port + PORTS_PER_NODE * (node_id - 1)


def _cluster_id(cluster: ClusterConfig) -> str:
    """The id every node is formatted with, made once and kept beside the nodes."""
    if cluster.cluster_id_file.exists():
        return cluster.cluster_id_file.read_text().strip()
    cid = _new_cluster_id()
    cluster.cluster_id_file.write_text(cid + "\n")
    return cid


def up_cluster(cluster: ClusterConfig) -> list[BrokerStatus]:
    """Start every node that does not run; return once each answers.

    All missing nodes are launched before any wait: a node reports ready only once
    a quorum of controllers (2 of 3) is up. Idempotent, so it also restarts a node
    that was killed. A failed start stops the nodes this call launched.
    """
    nodes = cluster.all_nodes()
    with jvm.locked(cluster.root):
        java = _java()
        resolve_jars(nodes[0])
        cid = _cluster_id(cluster)
        launched: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for cfg in nodes:
                if jvm.running_pid(cfg.service) is not None:
                    continue
                if broker_answers(cfg.bootstrap):
                    raise BrokerError(f"another Kafka (not node {cfg.node_id} of {cluster.root}) answers on {cfg.bootstrap}")
                launched[cfg.node_id] = _launch(cfg, java, heap=os.environ.get("KAFKA_HEAP_OPTS", CLUSTER_HEAP_OPTS), cluster_id=cid)
            for cfg in nodes:
                proc = launched.get(cfg.node_id)
                pid = proc.pid if proc else jvm.running_pid(cfg.service)
                if pid is None:
                    raise BrokerError(f"node {cfg.node_id} exited before it answered; see {cfg.log_file}:\n{jvm.log_excerpt(cfg.log_file)}")
                _wait_answering(cfg, proc, pid)
        except BaseException:
            for node_id, proc in launched.items():
                if proc.poll() is None:
                    jvm.stop(cluster.node(node_id).service, proc.pid, timeout_s=30)
            raise
    return [
        BrokerStatus(True, True, jvm.running_pid(cfg.service), cfg.bootstrap, cfg.log_file, already_running=cfg.node_id not in launched)
        for cfg in nodes
    ]


def existing_cluster(home: Path, base_port: int = 19092) -> ClusterConfig | None:
    """The cluster formatted under `home` (its node dirs), if any: what `down` stops."""
    nodes = len(list(home.glob("node-*")))
    return ClusterConfig(home, nodes, base_port) if nodes >= CLUSTER_REPLICATION_FACTOR else None


def down_cluster(cluster: ClusterConfig, timeout_s: float = 60) -> list[int]:
    """Stop every node at once; return the ids stopped. One after another, the last
    node left has lost its controller quorum, cannot finish a controlled shutdown and
    was SIGKILLed after the whole timeout (60 s on every `kafka down`)."""
    nodes = cluster.all_nodes()
    with ThreadPoolExecutor(len(nodes)) as pool:
        stopped = list(pool.map(lambda cfg: down(cfg, timeout_s), nodes))
    return [cfg.node_id for cfg, was in zip(nodes, stopped, strict=True) if was]


def status_cluster(cluster: ClusterConfig) -> list[BrokerStatus]:
    return [status(cfg) for cfg in cluster.all_nodes()]


def kill_node(cluster: ClusterConfig, node_id: int) -> int | None:
    """SIGKILL one node, as a crash would; its pid, or None if it was not running."""
    cfg = cluster.node(node_id)
    with jvm.locked(cfg.root):
        pid = jvm.running_pid(cfg.service)
        if pid is None:
            return None
        jvm.kill(cfg.service, pid)
        return pid


def quorum_leader(cluster: ClusterConfig) -> int | None:
    """The active KRaft controller, from the quorum-state file each node keeps beside
    its metadata log (the newest epoch wins): clients' metadata cannot say (in KRaft a
    broker reports a random broker as the controller). None if no node knows one yet."""
    best: tuple[int, int] | None = None  # (epoch, leader)
    for cfg in cluster.all_nodes():
        try:
            state = json.loads((cfg.data_dir / "__cluster_metadata-0" / "quorum-state").read_text())
        except (OSError, ValueError):
            continue
        if state.get("leaderId", -1) >= 0 and (best is None or state["leaderEpoch"] > best[0]):
            best = (state["leaderEpoch"], state["leaderId"])
    return best[1] if best else None
