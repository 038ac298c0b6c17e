"""deploy/kafka-security/acls.sh grants what docs/security.md says, and nothing more."""

from __future__ import annotations

import os
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "deploy" / "kafka-security" / "acls.sh"
DOC = Path(__file__).resolve().parents[3] / "docs" / "security.md"


def grants(namespace: str = "") -> dict[str, set[tuple[str, str, str]]]:
    """principal -> {(operation, resource, name)} from a dry run."""
    env = os.environ | {"DRY_RUN": "1", "NAMESPACE": namespace}
    out = subprocess.run(["bash", str(SCRIPT)], env=env, check=True, capture_output=True, text=True).stdout
    found: dict[str, set[tuple[str, str, str]]] = defaultdict(set)
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


def test_producers_only_write_commands() -> None:
    assert grants()["producer"] == {("Write", "topic", "payment-commands"), ("Describe", "topic", "payment-commands")}


def test_the_sink_reads_events_and_outcomes_only() -> None:
    sink = grants()["clickhouse-sink"]
    assert {op for op, _, _ in sink} == {"Read", "Describe"}
    assert {name for _, kind, name in sink if kind == "topic"} == {"payment-events", "payment-outcomes"}


def test_only_the_worker_reads_commands() -> None:
    readers = {p for p, acls in grants().items() if ("Read", "topic", "payment-commands") in acls}
    assert readers == {"paystream-worker"}


def test_the_worker_has_its_group_transactions_and_changelogs() -> None:
    worker = grants()["paystream-worker"]
    assert {
        ("Read", "group", "paystream"),
        ("Write", "transactional-id", "paystream-*"),
        ("Read", "topic", "paystream-*"),
        ("Write", "topic", "paystream-*"),
    } <= worker
    assert ("Write", "topic", "payment-commands") not in worker  # it never forges commands


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


@pytest.mark.parametrize("principal", ["producer", "paystream-worker", "clickhouse-sink", "ops"])
def test_every_principal_is_in_the_doc_matrix(principal: str) -> None:
    assert f"`User:{principal}`" in DOC.read_text()
