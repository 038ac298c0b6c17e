"""Builders and runners shared by the integration tests (imported as tests.integration.support)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from connectors.kafka import admin
from connectors.kafka.clients import Connection
from schemas.ids import derive_payment_id
from streams.client.observe import Observer
from streams.client.processes import WorkerProcess
from streams.client.publish import publish_commands
from streams.settings import Settings, client_config
from streams.topics import declared_topics, namespace_topics

PARTITIONS = 4
WAIT_S = 180
# Noon (UTC) of the day the run started: event times stay relative to the run, so the
# suite passes on any day. The API's tests stamp the wall clock on the shared pipeline,
# which moves its partitions' event time to now; a fixed date falls out of the 7-day
# authorization window as the calendar moves on (it did: docs/decisions.md, Test time).
# Noon keeps T0 +- 12 h inside one settlement day.
T0 = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)


# The topics the running test module made, as (connection, names, prefixes): deleted when
# the module ends (conftest.py's scratch_topics_dropped). One sweep per module, not per test:
# a module-scoped fixture's topics must outlive the module's first test.
_SCRATCH: list[tuple[Connection, list[str], list[str]]] = []


def scratch_topics(conn: Connection, names: Iterable[str] = (), *, prefixes: Iterable[str] = ()) -> None:
    """Topics a test creates outside a make_settings namespace, to delete when its module ends."""
    _SCRATCH.append((conn, list(names), list(prefixes)))


def drop_scratch_topics() -> None:
    while _SCRATCH:
        conn, names, prefixes = _SCRATCH.pop()
        admin.discard_topics(conn, names, prefixes=prefixes)


def make_settings(tmp: Path, label: str) -> Settings:
    """A fresh namespace for one test or module: its topics are deleted when the module ends."""
    settings = namespace_settings(tmp, label)
    names, prefixes = namespace_topics(settings)
    scratch_topics(client_config(settings), names, prefixes=prefixes)
    return settings


def namespace_settings(tmp: Path, label: str) -> Settings:
    """A fresh namespace whose topics the caller deletes (streams.topics.discard_namespace)."""
    return Settings(
        namespace=f"it-{label}-{uuid.uuid4().hex[:8]}",
        partitions=PARTITIONS,
        data_dir=tmp,
        keys_dir=tmp / "keys",
        commit_interval_ms=50,
        # Exact outcomes are asserted: the deterministic test-mode provider, and no fraud
        # stage (these tests pay with one card thousands of times: velocity rules would
        # review them). tests/integration/streams/worker/test_fraud.py runs the risk stage.
        providers="test",
        fraud_scoring=False,
    )


def start_worker(settings: Settings, log_name: str = "worker.log") -> WorkerProcess:
    admin.ensure_topics(settings.kafka_bootstrap, declared_topics(settings))
    return WorkerProcess(settings, settings.data_dir / log_name).start()


def create(merchant: str, key: str, amount: int = 1000, currency: str = "USD", **extra: Any) -> dict[str, Any]:
    return {
        "command_id": f"cmd_{uuid.uuid4().hex}",
        "kind": "create",
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": derive_payment_id(merchant, key),
        "amount_minor": amount,
        "currency": currency,
        "capture_method": "manual",
        "card": {"number": "4242424242424242", "exp_month": 12, "exp_year": 2030, "cvc": "123"},
        "metadata": {},
        "occurred_at": T0,
    } | extra


def follow_up(
    kind: str, merchant: str, payment_id: str, key: str, amount: int | None = None, at: datetime = T0
) -> dict[str, Any]:
    return {
        "command_id": f"cmd_{uuid.uuid4().hex}",
        "kind": kind,
        "merchant_id": merchant,
        "idempotency_key": key,
        "payment_id": payment_id,
        "amount_minor": amount,
        "currency": None,
        "capture_method": None,
        "card": None,
        "metadata": {},
        "occurred_at": at,
    }


@dataclass
class Pipeline:
    settings: Settings
    worker: WorkerProcess


def run(
    pipeline: Pipeline, items: list, dead_letters: int = 0, settled: Callable[[Observer], bool] | None = None
) -> Observer:
    """Publish, wait for every command's outcome and the dead letters, then (if given)
    until `settled(observer)` holds, e.g. until the payment events of a saga arrived."""
    observer = Observer(pipeline.settings)
    publish_commands(pipeline.settings, items)
    ids = {i["command_id"] for i in items if isinstance(i, dict)}
    supervise = lambda _done, _dlq: pipeline.worker.supervise()  # noqa: E731
    assert observer.wait_for(ids, dead_letters, WAIT_S, supervise, on_stall=pipeline.worker.restart), (
        f"{len(ids) - sum(1 for c in ids if c in observer.outcomes)} commands without outcome, "
        f"{len(observer.dead_letters)}/{dead_letters} dead letters"
    )
    if settled is not None:
        assert observer.wait_until(lambda: settled(observer), WAIT_S), "the payment events did not settle"
    observer.close()
    return observer
