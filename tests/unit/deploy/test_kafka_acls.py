"""deploy/kafka-security/acls.sh grants what the code uses and docs/security.md says.

The names come from the code, not from a list here: every declared topic
(streams/topics.py declared_topics), every consumer group and transactional id
(streams/topics.py client_ids, the one place the clients take them from), and what the
worker's own topology reads, writes and follows (streams/worker/topology.py)."""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path

import pytest

from streams.jobs.sink import sink_topics
from streams.jobs.webhooks import WebhookRunner
from streams.settings import Settings
from streams.topics import client_ids, declared_topics, topic_names
from streams.worker.cards import topic_vault
from streams.worker.feeds import SanctionsReader
from streams.worker.topology import BlocklistReader, build_worker

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "kafka-security" / "acls.sh"
DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"
PRINCIPALS = (
    "producer",
    "paystream-worker",
    "clickhouse-sink",
    "paystream-api",
    "paystream-webhooks",
    "paystream-scheduler",
    "ops",
    "operator",
    "schema-registry",
)

Grant = tuple[str, str, str]  # (operation, resource kind, name; a prefix ends in "*")


def grants(namespace: str = "") -> dict[str, set[Grant]]:
    """principal -> {(operation, resource, name)} from a dry run."""
    env = os.environ | {"DRY_RUN": "1", "NAMESPACE": namespace}
    out = subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, text=True).stdout
    found: dict[str, set[Grant]] = defaultdict(set)
    for line in out.splitlines():
        m = re.search(
            r"--allow-principal User:(\S+) --operation (\w+) --(topic|group|transactional-id) (\S+)( "
            r"--resource-pattern-type prefixed)?$",
            line,
        )
        assert m, line
        name = m.group(4) + ("*" if m.group(5) else "")
        found[m.group(1)].add((m.group(2), m.group(3), name))
    return found


def allows(held: set[Grant], operation: str, kind: str, name: str) -> bool:
    """Does a literal, prefixed or wildcard grant in `held` cover `name`? Kafka's rules:
    Read, Write and Delete imply Describe."""
    ops = {operation} | ({"Read", "Write"} if operation == "Describe" else set())
    for op, k, granted in held:
        if op not in ops or k != kind:
            continue
        if granted == "*" or granted == name or (granted.endswith("*") and name.startswith(granted[:-1])):
            return True
    return False


def granted_to_anyone(all_grants: dict[str, set[Grant]], operation: str, kind: str, name: str) -> set[str]:
    return {p for p, held in all_grants.items() if allows(held, operation, kind, name)}


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PAYSTREAM_"):
            monkeypatch.delenv(name)


# --- every name the code uses is granted ---


@pytest.mark.parametrize("namespace", ["", "staging"])
def test_every_declared_topic_is_written_and_read_by_a_granted_principal(clean_env: None, namespace: str) -> None:
    settings = Settings(namespace=namespace)
    acls = grants(namespace)
    for spec in declared_topics(settings):
        assert granted_to_anyone(acls, "Write", "topic", spec.name), f"nobody may write {spec.name}"
        assert granted_to_anyone(acls, "Read", "topic", spec.name), f"nobody may read {spec.name}"


@pytest.mark.parametrize("namespace", ["", "staging"])
def test_every_consumer_group_and_transactional_id_is_granted(clean_env: None, namespace: str) -> None:
    acls = grants(namespace)
    for field, name in asdict(client_ids(Settings(namespace=namespace))).items():
        # A prefix is granted as one: any suffix the process adds is covered.
        probe = name + "x" if name.endswith("-") else name
        if field.endswith(("_group", "_groups")):
            assert granted_to_anyone(acls, "Read", "group", probe), f"{field} ({name}): no grant"
        else:
            assert field.endswith(("_transaction", "_transactions")), field
            assert granted_to_anyone(acls, "Write", "transactional-id", probe), f"{field} ({name}): no grant"


def test_the_worker_is_granted_exactly_what_its_topology_uses(clean_env: None, tmp_path: Path) -> None:
    """Each stage's source and outputs, its tables' changelogs, the topics every worker
    follows whole, its group and its transactional id."""
    settings = Settings(namespace="unit", partitions=6, data_dir=tmp_path, keys_dir=tmp_path / "keys")
    engine = build_worker(settings)  # builds the clients; nothing connects
    followed = {
        BlocklistReader(settings, None).follower.topic,  # type: ignore[arg-type]
        SanctionsReader(settings).follower.topic,
        topic_vault(settings).follower.topic,
    }
    reads = set(engine.stages) | set(engine.tables.values()) | followed
    writes = {o for s in engine.stages.values() for o in s.outputs} | set(engine.tables.values())
    worker = grants("unit")["paystream-worker"]
    assert {t for t in reads if not allows(worker, "Read", "topic", t)} == set()
    assert {t for t in writes if not allows(worker, "Write", "topic", t)} == set()
    assert allows(worker, "Read", "group", engine.config.group_id)
    ids = client_ids(settings)  # followers read in reader groups, restores in snapshot groups
    assert allows(worker, "Read", "group", f"{ids.reader_groups}x") and allows(
        worker, "Read", "group", f"{ids.snapshot_groups}x"
    )
    assert allows(worker, "Write", "transactional-id", engine.config.transactional_id)
    # ... and no more: a topic granted literally is one the topology uses.
    literal = {name for op, kind, name in worker if kind == "topic" and not name.endswith("*")}
    assert literal <= reads | writes


def test_the_jobs_are_granted_their_topics(clean_env: None, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, keys_dir=tmp_path / "keys")
    acls = grants()
    assert {t for t in sink_topics(settings) if not allows(acls["clickhouse-sink"], "Read", "topic", t)} == set()
    runner = WebhookRunner(settings)
    assert allows(acls["paystream-webhooks"], "Read", "topic", runner.topic)
    assert allows(acls["paystream-webhooks"], "Write", "topic", runner.deliveries_topic)
    names = topic_names(settings)
    for topic in (names.clock, names.job_runs, names.ledger, names.payouts):
        assert allows(acls["paystream-scheduler"], "Write", "topic", topic), topic


# --- least privilege ---


def test_producers_only_write_commands() -> None:
    assert grants()["producer"] == {("Write", "topic", "payment-commands"), ("Describe", "topic", "payment-commands")}


def test_the_sink_reads_its_topics_only(clean_env: None) -> None:
    sink = grants()["clickhouse-sink"]
    assert {op for op, _, _ in sink} == {"Read", "Write", "Describe"}
    assert {name for op, kind, name in sink if kind == "topic" and op == "Read"} == set(sink_topics(Settings()))
    assert {name for op, kind, name in sink if kind == "topic" and op == "Write"} == {"payment-dlq"}


def test_only_the_worker_reads_commands() -> None:
    readers = granted_to_anyone(grants(), "Read", "topic", "payment-commands")
    assert readers == {"paystream-worker"}


def test_raw_cards_and_sealed_cards_stay_with_the_worker() -> None:
    acls = grants()
    assert granted_to_anyone(acls, "Read", "topic", "card-vault") == {"paystream-worker"}
    assert granted_to_anyone(acls, "Write", "topic", "card-vault") == {"paystream-worker"}


def test_ops_write_nothing() -> None:
    assert {op for op, _, _ in grants()["ops"]} == {"Read", "Describe"}


def test_a_namespace_prefixes_topics_and_the_app_id() -> None:
    worker = grants("staging")["paystream-worker"]
    assert ("Read", "topic", "staging.payment-commands") in worker
    assert ("Read", "group", "paystream-staging") in worker
    assert not any(name.startswith("payment-") for _, _, name in worker)


def test_a_bad_namespace_is_refused() -> None:
    r = subprocess.run(
        ["bash", str(SCRIPT)], env=os.environ | {"DRY_RUN": "1", "NAMESPACE": "Bad ns"}, capture_output=True, text=True
    )
    assert r.returncode == 2 and "NAMESPACE must match" in r.stderr


def test_the_principals_are_the_documented_ones() -> None:
    assert set(grants()) == set(PRINCIPALS)


@pytest.mark.parametrize("principal", PRINCIPALS)
def test_every_principal_is_in_the_doc_matrix(principal: str) -> None:
    assert f"`User:{principal}`" in DOC.read_text()
