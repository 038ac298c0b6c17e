"""The retention decision as the broker holds it (docs/compliance.md, "Retention"): the
topics created from the declared specs, their configs described back from a real broker."""

from __future__ import annotations

from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource, ResourceType

from connectors.kafka.admin import ensure_topics
from connectors.kafka.clients import connection
from streams.settings import client_config
from streams.topics import AML_RECORDS_RETENTION_MS, PERSONAL_DATA_RETENTION_MAX_MS, declared_topics, topic_names
from tests.integration.support import make_settings

pytestmark = pytest.mark.integration


def test_the_broker_keeps_aml_records_five_years_and_payer_names_a_month(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "retention")
    names = topic_names(settings)
    specs = [
        s
        for s in declared_topics(settings)
        if s.name in (names.monitoring_cases, names.monitoring_decisions, names.commands, names.review)
    ]
    ensure_topics(client_config(settings), specs)
    admin = AdminClient(connection(client_config(settings)))
    futures = admin.describe_configs([ConfigResource(ResourceType.TOPIC, s.name) for s in specs])
    got = {r.name: {k: v.value for k, v in f.result(timeout=30).items()} for r, f in futures.items()}
    for topic in (names.monitoring_cases, names.monitoring_decisions):
        assert got[topic]["cleanup.policy"] == "compact,delete"
        assert int(got[topic]["retention.ms"]) == AML_RECORDS_RETENTION_MS
    for topic in (names.commands, names.review):
        assert got[topic]["cleanup.policy"] == "delete"
        assert int(got[topic]["retention.ms"]) <= PERSONAL_DATA_RETENTION_MAX_MS
