"""Topic administration: declare topics as specs, create the missing ones, bring
existing ones to their spec's config where that loses nothing.

Plain parameters only (a Connection: a bootstrap string or librdkafka settings; specs);
no `streams` imports.
"""

from __future__ import annotations

import socket
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewTopic, ResourceType

from connectors.kafka.clients import Connection, bootstrap_of, connection

#: Upper bound of one metadata probe while polling for a broker.
PROBE_TIMEOUT_S = 2.0
POLL_INTERVAL_S = 0.25


#: Replicas per partition on a cluster of 3+ brokers. With min.insync.replicas=2 an
#: acks=all write survives one broker down, and two down refuse writes rather than
#: keep a single copy.
CLUSTER_REPLICATION_FACTOR = 3
CLUSTER_MIN_INSYNC_REPLICAS = 2


def min_insync_for(replication_factor: int) -> int:
    """min.insync.replicas for a replication factor: 2 from RF 3 up, else 1 (with
    fewer copies, requiring 2 would stop writes whenever one broker is down)."""
    return CLUSTER_MIN_INSYNC_REPLICAS if replication_factor >= CLUSTER_REPLICATION_FACTOR else 1


class TopicError(RuntimeError):
    """A topic exists in a shape that contradicts its spec, or could not be created."""


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    replication_factor: int = 1
    compacted: bool = False
    retention_ms: int | None = None  # None -> broker default; -1 -> keep forever
    extra_config: Mapping[str, str] = field(default_factory=dict)
    min_insync_replicas: int | None = None  # None -> broker default

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("topic name must not be empty")
        if self.partitions < 1 or self.replication_factor < 1:
            raise ValueError(f"{self.name}: partitions and replication_factor must be >= 1")
        if self.retention_ms is not None and self.retention_ms < -1:
            raise ValueError(f"{self.name}: retention_ms must be -1 (infinite) or >= 0")
        if self.min_insync_replicas is not None and not 1 <= self.min_insync_replicas <= self.replication_factor:
            raise ValueError(f"{self.name}: min_insync_replicas must be 1..replication_factor")

    def config(self) -> dict[str, str]:
        cfg = {"cleanup.policy": "compact" if self.compacted else "delete"}
        if self.retention_ms is not None:
            cfg["retention.ms"] = str(self.retention_ms)
        if self.min_insync_replicas is not None:
            cfg["min.insync.replicas"] = str(self.min_insync_replicas)
        cfg.update(self.extra_config)
        return cfg


@dataclass(frozen=True)
class Drift:
    """How an existing topic's config differs from its spec: what may be set to the
    spec's values, and what is refused because setting it could drop records."""

    to_set: dict[str, str]
    refused: list[str]


def _retention(value: str) -> float:
    return float("inf") if int(value) < 0 else int(value)


def config_drift(spec: TopicSpec, current: Mapping[str, str]) -> Drift:
    """Compare `spec.config()` with a topic's `current` config. Everything aligns to
    the spec except what would delete records the topic keeps today: a change of
    cleanup.policy (compact drops all but the last value per key; delete drops by
    age) is refused, and a shorter retention.ms is left as it is."""
    to_set: dict[str, str] = {}
    refused: list[str] = []
    for key, wanted in spec.config().items():
        have = current.get(key)
        if have == wanted:
            continue
        if key == "cleanup.policy":
            refused.append(
                f"{spec.name}: cleanup.policy is {have}, spec wants {wanted} (change it by hand, knowing what the "
                "new policy deletes)"
            )
        elif key == "retention.ms" and have is not None and _retention(wanted) < _retention(have):
            continue  # keeps more than declared; shortening it would delete records
        else:
            to_set[key] = wanted
    return Drift(to_set, refused)


def _admin(conn: Connection) -> AdminClient:
    # log_level 0: librdkafka would print a line per refused connect while we poll;
    # every failure reaches the caller as an exception instead.
    return AdminClient({**connection(conn), "log_level": 0})


def _port_open(bootstrap: str, timeout_s: float) -> bool:
    for server in bootstrap.split(","):
        host, _, port = server.strip().rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
        except (OSError, ValueError):
            continue
        return True
    return False


def broker_answers(conn: Connection, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """One metadata round trip: True if a broker at `conn` answered in time."""
    # A refused connect fails at once, while librdkafka would retry until the timeout.
    if not _port_open(bootstrap_of(conn), timeout_s):
        return False
    try:
        _admin(conn).list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True


def wait_for_broker(conn: Connection, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no Kafka broker answered at {bootstrap_of(conn)} within {timeout_s:g}s")
        if broker_answers(conn, min(PROBE_TIMEOUT_S, remaining)):
            return
        time.sleep(min(POLL_INTERVAL_S, max(0.0, deadline - time.monotonic())))


def _existing_topics(admin: AdminClient, conn: Connection, timeout_s: float) -> dict:
    try:
        return admin.list_topics(timeout=timeout_s).topics
    except KafkaException as exc:
        raise TopicError(f"cannot read topic metadata from {bootstrap_of(conn)}: {exc}") from exc


def ensure_topics(conn: Connection, specs: Iterable[TopicSpec], timeout_s: float = 30) -> list[str]:
    """Create the topics that do not exist yet; return the names created.

    Existing topics are left as they are (`align_topic_configs` is the admin's step):
    one whose partitions differ from its spec is an error, fewer or more. Keys map to
    `murmur2(key) mod N`: a producer's partitioner counts the topic's partitions, the
    stages count the settings', and the state was written under the N it had.
    """
    specs = list(specs)
    admin = _admin(conn)
    existing = _existing_topics(admin, conn, timeout_s)

    mismatched = [
        f"{s.name} has {len(existing[s.name].partitions)} partitions, spec wants {s.partitions}"
        for s in specs
        if s.name in existing and len(existing[s.name].partitions) != s.partitions
    ]
    if mismatched:
        raise TopicError(
            "existing topics do not match their specs (set PAYSTREAM_PARTITIONS to the topics' count, "
            "or use a new PAYSTREAM_NAMESPACE; docs/scaling.md): " + "; ".join(mismatched)
        )

    missing = [
        NewTopic(s.name, s.partitions, s.replication_factor, config=s.config()) for s in specs if s.name not in existing
    ]
    if not missing:
        return []
    created: list[str] = []
    futures = admin.create_topics(missing, operation_timeout=timeout_s, request_timeout=timeout_s)
    for name, future in futures.items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue  # lost a race with another creator: the topic is there
            raise TopicError(f"creating topic {name} failed: {exc.args[0].str()}") from exc
        created.append(name)
    _wait_for_leaders(admin, created, time.monotonic() + timeout_s)
    return sorted(created)


def delete_topics(
    conn: Connection, names: Iterable[str] = (), *, prefixes: Iterable[str] = (), timeout_s: float = 30
) -> list[str]:
    """Delete the named topics, and those whose names start with one of `prefixes`,
    that exist (a scratch run's, never the pipeline's: the caller names them); return
    the names deleted. Every partition holds files open in the broker: a bench that
    left its topics behind run after run exhausted the broker's file descriptors."""
    admin = _admin(conn)
    existing = _existing_topics(admin, conn, timeout_s)
    named, starts = set(names), tuple(prefixes)
    wanted = sorted(n for n in existing if n in named or (starts and n.startswith(starts)))
    if not wanted:
        return []
    deleted: list[str] = []
    for name, future in admin.delete_topics(wanted, operation_timeout=timeout_s, request_timeout=timeout_s).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                continue  # deleted meanwhile by someone else
            raise TopicError(f"deleting topic {name} failed: {exc.args[0].str()}") from exc
        deleted.append(name)
    # The controller took the deletion; the broker's metadata follows a moment later.
    deadline = time.monotonic() + timeout_s
    while left := [n for n in deleted if n in _existing_topics(admin, conn, timeout_s)]:
        if time.monotonic() > deadline:
            raise TopicError(f"topics still listed {timeout_s:g}s after their deletion: {', '.join(left)}")
        time.sleep(POLL_INTERVAL_S)  # polled: the broker sends no notice of it
    return sorted(deleted)


def discard_topics(
    conn: Connection, names: Iterable[str] = (), *, prefixes: Iterable[str] = (), timeout_s: float = 30
) -> list[str]:
    """delete_topics for a cleanup that must not fail what it cleans up after (a test, a
    scratch run's end): a failure is a warning, and it gives up after about 2 x timeout_s."""
    try:
        return delete_topics(conn, names, prefixes=prefixes, timeout_s=timeout_s)
    except (TopicError, KafkaException) as exc:
        warnings.warn(f"scratch topics left on the broker: {exc}", RuntimeWarning, stacklevel=2)
        return []


def align_topic_configs(conn: Connection, specs: Iterable[TopicSpec], timeout_s: float = 30) -> list[str]:
    """Set the existing topics' configs to their specs where `config_drift` allows;
    return "topic: key old -> new" per config set. A refused drift (cleanup.policy)
    raises TopicError before anything is set. Needs DescribeConfigs and AlterConfigs
    on the topics: the admin's rights, not a worker's (docs/security.md)."""
    admin = _admin(conn)
    existing = _existing_topics(admin, conn, timeout_s)
    specs = [s for s in specs if s.name in existing]
    if not specs:
        return []
    resources = [ConfigResource(ResourceType.TOPIC, s.name) for s in specs]
    try:
        described = {
            r.name: {k: e.value for k, e in f.result().items()}
            for r, f in admin.describe_configs(resources, request_timeout=timeout_s).items()
        }
    except KafkaException as exc:
        raise TopicError(f"cannot read topic configs: {exc.args[0].str()}") from exc
    drifts = {s.name: config_drift(s, described[s.name]) for s in specs}
    refused = [r for d in drifts.values() for r in d.refused]
    if refused:
        raise TopicError("existing topics do not match their specs: " + "; ".join(refused))
    changes = [
        ConfigResource(
            ResourceType.TOPIC,
            name,
            incremental_configs=[
                ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in d.to_set.items()
            ],
        )
        for name, d in drifts.items()
        if d.to_set
    ]
    if not changes:
        return []
    try:
        for f in admin.incremental_alter_configs(changes, request_timeout=timeout_s).values():
            f.result()
    except KafkaException as exc:
        raise TopicError(f"aligning topic configs failed: {exc.args[0].str()}") from exc
    return [
        f"{name}: {k} {described[name].get(k)} -> {v}"
        for name, d in sorted(drifts.items())
        for k, v in d.to_set.items()
    ]


def _wait_for_leaders(admin: AdminClient, names: list[str], deadline: float) -> None:
    """A new topic is usable once every partition has a leader; until then clients
    get NOT_LEADER errors. Poll metadata until they all have one, or the deadline."""
    pending = set(names)
    while pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TopicError(f"topics created but without partition leaders in time: {sorted(pending)}")
        try:
            topics = admin.list_topics(timeout=min(PROBE_TIMEOUT_S, remaining)).topics
        except KafkaException as e:  # a busy broker's metadata answer can miss one probe; the deadline decides
            if not e.args[0].retriable() and e.args[0].code() != KafkaError._TIMED_OUT:
                raise
            continue
        pending = {
            n
            for n in pending
            if n not in topics
            or topics[n].error is not None
            or any(p.leader < 0 for p in topics[n].partitions.values())
        }


def leaders_on(conn: Connection, node_id: int, topics: Iterable[str], timeout_s: float = PROBE_TIMEOUT_S) -> int:
    """How many partitions of `topics` node `node_id` leads now (from metadata)."""
    meta = _admin(conn).list_topics(timeout=timeout_s).topics
    return sum(1 for t in topics if t in meta for p in meta[t].partitions.values() if p.leader == node_id)


def group_members(conn: Connection, group: str, timeout_s: float = PROBE_TIMEOUT_S * 5) -> int:
    """The members a consumer group has now (0 for a group that does not exist)."""
    admin = _admin(conn)
    try:
        described = admin.describe_consumer_groups([group], request_timeout=timeout_s)[group].result(timeout=timeout_s)
    except KafkaException as exc:
        if exc.args[0].code() == KafkaError.GROUP_ID_NOT_FOUND:
            return 0
        raise TopicError(f"cannot describe consumer group {group} at {bootstrap_of(conn)}: {exc}") from exc
    return len(described.members)
