"""The risk stage on the real broker: scored before authorization, a blocklisted BIN
declined, a payment's capture kept behind its create through the extra hop, a
velocity review held until an operator resolves it from the review queue."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connectors.kafka.clients import read_to_end
from schemas.codec import Codec
from schemas.partitioning import partition_for
from streams.fraud_ops import block_record, resolve_command
from streams.observe import Observer
from streams.publish import publish_commands
from streams.runner import wait_until
from streams.topics import topic_names
from tests.integration.support import T0, WAIT_S, create, follow_up, make_settings, start_worker

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


def test_scoring_blocklist_ordering_and_review(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "fraud").model_copy(update={"fraud_scoring": True, "metrics_port": free_port()})
    names = topic_names(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    worker = start_worker(settings)
    try:
        producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
        key, record = block_record("bin", "555555", "block", "issuer_compromised", T0 - timedelta(days=1))
        producer.produce(names.blocklist, Codec("FraudBlockEntry").encode(record), key=key)
        producer.flush(10)

        ok = create(m, "ok", amount=2_000, card=card("4000056655665556"))
        blocked = create(m, "blocked", amount=2_000, card=card("5555555555554444"))
        capture = follow_up("capture", m, ok["payment_id"], "ok-cap")  # published right behind its create
        # One card five times in a minute: past the 1-minute velocity limit (3), a review.
        burst = [create(m, f"burst-{i}", amount=1_000 + i, card=card("5200828282828210"), occurred_at=T0 + timedelta(seconds=i))
                 for i in range(5)]
        commands = [ok, blocked, capture, *burst]
        with Observer(settings) as seen:
            publish_commands(settings, commands)
            assert seen.wait_for({c["command_id"] for c in commands}, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            first = {c["command_id"]: seen.outcomes[c["command_id"]][0] for c in commands}
            assert (first[ok["command_id"]]["status"], first[capture["command_id"]]["status"]) == ("succeeded", "succeeded")
            assert (first[blocked["command_id"]]["status"], first[blocked["command_id"]]["reason_code"]) == ("rejected", "fraud_suspected")
            statuses = [first[c["command_id"]]["payment_status"] for c in burst]
            # Five payments on one card in a minute: the fifth the risk stage sees (creates of different
            # payments may reach it in any order: ingest runs per payment partition) breaks the
            # one-minute velocity limit (3) and is held for review; the other four pass.
            assert sorted(statuses) == ["authorized"] * 4 + ["requires_review"], statuses
            held = [c for c, status in zip(burst, statuses) if status == "requires_review"]

            # The review queue holds it; an operator approves; the payment is authorized at the provider.
            reviews: list[dict] = []
            def reviewed() -> bool:
                reviews[:] = [Codec("FraudReview").decode(msg.value()) for msg in
                              read_to_end(settings.kafka_bootstrap, [names.review], settings.partitions)]
                return any(r["payment_id"] == held[0]["payment_id"] for r in reviews)

            assert wait_until(reviewed, 30)
            review = next(r for r in reviews if r["payment_id"] == held[0]["payment_id"])
            key, resolve = resolve_command(review, "approve", T0 + timedelta(minutes=5), "it-operator")
            # As `paystream fraud review --resolve` sends it: to the payment's partition.
            producer.produce(names.validated, Codec("ValidatedCommand").encode(resolve), key=key,
                             partition=partition_for(key, settings.partitions))
            producer.flush(10)
            assert seen.wait_for({resolve["command_id"]}, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            answer = seen.outcomes[resolve["command_id"]][0]
            assert (answer["status"], answer["payment_status"]) == ("succeeded", "authorized")
        # The worker's Prometheus endpoint counts what it decided.
        scraped = urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).read().decode()
        assert 'paystream_fraud_decisions_total{action="review",fallback="false"} 1.0' in scraped
        assert "paystream_outcomes_total" in scraped
    finally:
        assert worker.stop() == 0, worker.log_tail()
