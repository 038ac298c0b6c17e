"""Integration tests run against the real broker that `paystream kafka up` started
(`make test` and .ci/run start it). Each test session gets its own namespace, so
its topics, consumer group and state are fresh; every namespace's topics are deleted
when its module (the shared pipeline's: the session) ends, or the broker would keep
a suite's ~900 topics, run after run."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from connectors.kafka import admin
from connectors.schema_registry import launcher as registry_launcher
from streams.client.schema_registry import registry_config
from streams.settings import Settings
from streams.topics import discard_namespace
from tests.integration.support import Pipeline, drop_scratch_topics, namespace_settings, start_worker


@pytest.fixture(scope="session")
def bootstrap() -> str:
    settings = Settings()
    if not admin.broker_answers(settings.kafka_bootstrap, timeout_s=5):
        pytest.fail(f"no Kafka broker at {settings.kafka_bootstrap}: run `paystream kafka up` first (make test does)")
    return settings.kafka_bootstrap


@pytest.fixture(scope="session")
def schema_registry_url() -> str:
    """PAYSTREAM_SCHEMA_REGISTRY_URL when set (an external registry), else the embedded
    one, started unless it runs (`make test` starts it; `make down` and .ci/run stop it).
    A registry that cannot be had fails the tests that need it: they never skip."""
    settings = Settings()
    if settings.schema_registry_url is not None:
        if not registry_launcher.registry_answers(settings.schema_registry_url, timeout_s=5):
            pytest.fail(f"no Schema Registry answers at PAYSTREAM_SCHEMA_REGISTRY_URL={settings.schema_registry_url}")
        return settings.schema_registry_url
    return registry_launcher.up(registry_config(settings)).url


@pytest.fixture(scope="session")
def pipeline(bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """A worker shared by the tests that do not break it."""
    settings = namespace_settings(tmp_path_factory.mktemp("pipeline"), "shared")
    worker = start_worker(settings)
    yield Pipeline(settings, worker)
    code = worker.stop()
    discard_namespace(settings)  # the session's end: every test that shares it is done
    assert code == 0, f"worker exited with {code}:\n{worker.log_tail()}"


@pytest.fixture(scope="module", autouse=True)
def scratch_topics_dropped() -> Iterator[None]:
    """The module's make_settings namespaces and scratch_topics, deleted when it ends
    (best effort: a failed delete warns, never fails a test)."""
    yield
    drop_scratch_topics()
