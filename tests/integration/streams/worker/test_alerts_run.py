"""The worker's alerts fire from what a running worker exposes (deploy/prometheus/alerts.yml;
the evaluation is tests/unit/deploy/alert_support.py's): bad input dead-lettered, a
window of declines, commands that reach the pipeline seconds late, and consumer lag
over the bound and growing, read by the worker's own lag watch."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from connectors.kafka import admin
from connectors.kafka.clients import command_producer
from connectors.providers.simulated import AMOUNT_CEILING_MINOR
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import COMMAND_CODEC, command_key, intake_sealer, publish_commands, seal_commands
from streams.settings import client_config
from streams.topics import declared_topics, topic_names
from streams.worker.topology import LagWatch
from tests.integration.support import WAIT_S, create, make_settings, start_worker
from tests.unit.deploy.alert_support import expr, free_port, increase, increase_by, quantile, render, scrape, total

pytestmark = pytest.mark.integration

LATE_S = 5  # how far in the past the late commands' Kafka timestamps are


def test_the_workers_alerts_fire(bootstrap: str, tmp_path: Path) -> None:
    assert expr("PaystreamDeadLetters") == "sum by (stage, reason) (increase(paystream_dead_letters_total[15m])) > 0"
    assert expr("PaystreamSuccessRateLow") == (
        'sum(rate(paystream_outcomes_total{status="succeeded"}[5m])) / '
        'sum(rate(paystream_outcomes_total{status=~"succeeded|rejected"}[5m])) < 0.95'
    )
    assert expr("PaystreamLatencyP99High") == (
        "histogram_quantile(0.99, sum by (le) "
        '(rate(paystream_stage_latency_seconds_bucket{stage="pipeline"}[5m]))) > 0.2'
    )
    settings = make_settings(tmp_path, "alerts").model_copy(update={"metrics_port": free_port()})
    m = f"m_{uuid.uuid4().hex[:6]}"
    worker = start_worker(settings)
    try:
        with Observer(settings) as seen:
            # A clean window first: the same checks must not fire on it.
            clean = [create(m, f"ok{i}") for i in range(5)]
            assert wait_until(lambda: bool(_scrape(settings.metrics_port)), WAIT_S), worker.log_tail()
            start = scrape(settings.metrics_port)
            publish_commands(settings, clean)
            assert seen.wait_for({c["command_id"] for c in clean}, 0, WAIT_S, lambda *_: worker.supervise()), (
                worker.log_tail()
            )
            before = scrape(settings.metrics_port)
            ok = increase(start, before, "paystream_outcomes_total", status="succeeded")
            assert (
                ok == 5
                and ok / increase(start, before, "paystream_outcomes_total", status="succeeded|rejected") >= 0.95
            )
            assert not any(v > 0 for v in increase_by(start, before, "paystream_dead_letters_total", "stage").values())

            # The bad window: declines, one undecodable message, and commands stamped LATE_S ago.
            declined = [create(m, f"big{i}", amount=AMOUNT_CEILING_MINOR + 1) for i in range(10)]
            late = [create(m, f"late{i}") for i in range(10)]
            publish_commands(settings, [*declined, (b"junk", b"\x00 not a command")])
            producer = command_producer(client_config(settings))
            stamped_ms = int(time.time() * 1000) - LATE_S * 1000
            for cmd in seal_commands(late, intake_sealer(settings)):
                producer.produce(
                    topic_names(settings).commands,
                    key=command_key(cmd),
                    value=COMMAND_CODEC.encode(cmd),
                    timestamp=stamped_ms,
                )
            assert producer.flush(30) == 0
            ids = {c["command_id"] for c in declined + late}
            assert seen.wait_for(ids, 1, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            after = scrape(settings.metrics_port)

        dead = {k for k, v in increase_by(before, after, "paystream_dead_letters_total", "stage").items() if v > 0}
        assert dead == {"ingest"}
        rate = increase(before, after, "paystream_outcomes_total", status="succeeded") / increase(
            before, after, "paystream_outcomes_total", status="succeeded|rejected"
        )
        assert rate == 0.5 < 0.95
        p99 = quantile(0.99, before, after, "paystream_stage_latency_seconds", stage="pipeline")
        assert p99 > 0.2 and p99 >= LATE_S - 1
    finally:
        assert worker.stop() == 0, worker.log_tail()


def _scrape(port: int) -> dict:
    try:
        return scrape(port)
    except OSError:
        return {}


def test_consumer_lag_growing_fires_from_the_lag_watch(bootstrap: str, tmp_path: Path) -> None:
    assert expr("PaystreamConsumerLagGrowing") == (
        "sum by (topic) (paystream_consumer_lag_messages) > 10000 and "
        "deriv(sum by (topic) (paystream_consumer_lag_messages)[10m:1m]) > 0"
    )
    settings = make_settings(tmp_path, "lag")
    admin.ensure_topics(client_config(settings), declared_topics(settings))
    topic = topic_names(settings).commands
    # No worker in the group: whatever is published is lag, as behind a stopped pipeline.
    watch = LagWatch(settings, lambda: frozenset({(topic, 0)}), lambda: False)
    producer = command_producer(client_config(settings))

    def publish(n: int) -> None:
        for _ in range(n):
            while True:
                try:
                    producer.produce(topic, key=b"k", value=b"x", partition=0)
                    break
                except BufferError:
                    producer.poll(0.1)
        assert producer.flush(30) == 0

    publish(10_001)
    watch.check()
    first = render()
    publish(500)
    watch.check()
    second = render()
    lag = total(second, "paystream_consumer_lag_messages", topic=topic)
    assert lag == 10_501 > 10_000
    assert lag - total(first, "paystream_consumer_lag_messages", topic=topic) > 0  # growing: deriv > 0
