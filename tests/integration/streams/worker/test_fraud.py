"""The risk stage on the real broker: scored before authorization, a blocklisted BIN
declined, a payment's capture kept behind its create through the extra hop, a
velocity review held until an operator resolves it from the review queue, and 3DS
step-ups completed by the cardholder's confirm (Y authorized, N declined)."""

from __future__ import annotations

import socket
import urllib.request
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connectors.kafka.clients import read_to_end
from models.features import MerchantState, TxStates
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from schemas.partitioning import partition_for
from streams.client.fraud import block_record, label_record, resolve_command
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_commands
from streams.stages.idempotency import merchant_state_key
from streams.topics import topic_names
from streams.worker.changelogs import read_table
from tests.integration.support import T0, WAIT_S, create, follow_up, make_settings, start_worker

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def card(number: str) -> dict:
    return {"number": number, "exp_month": 12, "exp_year": 2030, "cvc": "123"}


# A first payment of $1,000 on a fresh card at a fresh merchant: the shipped model's
# score lands in the 3DS band (checked below with the worker's own scorer).
STEP_UP_AMOUNT_MINOR = 100_000


def step_up_create(merchant: str, key: str) -> dict:
    return create(merchant, key, amount=STEP_UP_AMOUNT_MINOR, card=card("4000056655665556"))


def three_ds(cmd: dict, status: str) -> dict:
    return cmd | {
        "three_ds": {"trans_status": status, "eci": "05" if status == "Y" else "07", "ds_trans_id": str(uuid.uuid4())}
    }


def test_the_step_up_payment_scores_in_the_3ds_band() -> None:
    tx = {
        "card_token": "tok_fresh",
        "bin": "400005",
        "merchant_id": "m_fresh",
        "amount_minor": STEP_UP_AMOUNT_MINOR,
        "currency": "USD",
        "occurred_at": T0,
    }
    assert Scorer.load(SHIPPED_ARTIFACT).score(tx, TxStates()).action == "requires_action"


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
        burst = [
            create(
                m, f"burst-{i}", amount=1_000 + i, card=card("5200828282828210"), occurred_at=T0 + timedelta(seconds=i)
            )
            for i in range(5)
        ]
        # One fresh merchant each, so the model sees what the 3DS-band check above scored.
        step_ups = [step_up_create(f"{m}-3ds-{r}", "step-up") for r in ("y", "n")]
        commands = [ok, blocked, capture, *burst, *step_ups]
        with Observer(settings) as seen:
            publish_commands(settings, commands)
            assert seen.wait_for({c["command_id"] for c in commands}, 0, WAIT_S, lambda *_: worker.supervise()), (
                worker.log_tail()
            )
            first = {c["command_id"]: seen.outcomes[c["command_id"]][0] for c in commands}
            assert (first[ok["command_id"]]["status"], first[capture["command_id"]]["status"]) == (
                "succeeded",
                "succeeded",
            )
            assert (first[blocked["command_id"]]["status"], first[blocked["command_id"]]["reason_code"]) == (
                "rejected",
                "fraud_suspected",
            )
            statuses = [first[c["command_id"]]["payment_status"] for c in burst]
            # Five payments on one card in a minute: the fifth the risk stage sees (creates of different
            # payments may reach it in any order: ingest runs per payment partition) breaks the
            # one-minute velocity limit (3) and is held for review; the other four pass.
            assert sorted(statuses) == ["authorized"] * 4 + ["requires_review"], statuses
            held = [c for c, status in zip(burst, statuses) if status == "requires_review"]

            # The review queue holds it; an operator approves; the payment is authorized at the provider.
            reviews: list[dict] = []

            def reviewed() -> bool:
                reviews[:] = [
                    Codec("FraudReview").decode(msg.value())
                    for msg in read_to_end(settings.kafka_bootstrap, [names.review], settings.partitions)
                ]
                return any(r["payment_id"] == held[0]["payment_id"] for r in reviews)

            assert wait_until(reviewed, 30)
            review = next(r for r in reviews if r["payment_id"] == held[0]["payment_id"])
            key, resolve = resolve_command(review, "approve", T0 + timedelta(minutes=5), "it-operator")
            # As `paystream fraud review --resolve` sends it: to the payment's partition.
            producer.produce(
                names.validated,
                Codec("ValidatedCommand").encode(resolve),
                key=key,
                partition=partition_for(key, settings.partitions),
            )
            producer.flush(10)
            assert seen.wait_for({resolve["command_id"]}, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            answer = seen.outcomes[resolve["command_id"]][0]
            assert (answer["status"], answer["payment_status"]) == ("succeeded", "authorized")

            # The 3DS step-ups: the cardholder's confirm, with its result, through the front door.
            assert [first[c["command_id"]]["payment_status"] for c in step_ups] == ["requires_action"] * 2
            confirms = [
                three_ds(follow_up("confirm", c["merchant_id"], c["payment_id"], "step-up-3ds"), status)
                for c, status in zip(step_ups, "YN")
            ]
            publish_commands(settings, confirms)
            assert seen.wait_for({c["command_id"] for c in confirms}, 0, WAIT_S, lambda *_: worker.supervise()), (
                worker.log_tail()
            )
            passed, failed = (seen.outcomes[c["command_id"]][0] for c in confirms)
            assert (passed["status"], passed["payment_status"]) == ("succeeded", "authorized")
            assert (failed["status"], failed["reason_code"], failed["payment_status"]) == (
                "rejected",
                "authentication_failed",
                "declined",
            )
            # The events say what 3DS did. A Y the merchant reports without the issuer's signed
            # value authorizes without a liability shift (tests/integration/api/test_three_ds.py
            # has the signed path).
            y, n = (c["payment_id"] for c in step_ups)
            assert seen.wait_until(lambda: len(seen.events[y]) == 2 and len(seen.events[n]) == 2, 30), (
                seen.events[y],
                seen.events[n],
            )
            assert [(e["type"], e["three_ds_status"], e["liability_shift"]) for e in seen.events[y]] == [
                ("authorization_pending", None, None),
                ("authorized", "Y", False),
            ]
            assert [(e["type"], e["reason_code"], e["liability_shift"]) for e in seen.events[n]] == [
                ("authorization_pending", "requires_action", None),
                ("declined", "authentication_failed", False),
            ]
            # A label reaches the merchant's exact state at the keys stage (forwarded by the risk
            # stage's labels agent, keyed by merchant), once: the second copy changes nothing.
            label_key, label = label_record(
                ok["payment_id"],
                "tok_it_unknown_card",
                m,
                fraud=True,
                source="fraud_report",
                tx_occurred_at=T0,
                at=T0 + timedelta(days=1),
            )
            for _ in range(2):
                producer.produce(
                    names.labels,
                    Codec("FraudLabel").encode(label, check=True),
                    key=label_key,
                    partition=partition_for(label_key, settings.partitions),
                )
            producer.flush(10)
            kp = partition_for(m.encode(), settings.partitions)
            states: list[MerchantState] = []

            def labelled() -> bool:
                states[:] = [
                    MerchantState.from_bytes(value)
                    for _, key, value in read_table(settings, "keys")
                    if key == merchant_state_key(kp, m) and value is not None
                ]
                return bool(states) and states[-1].labels.counts == [1, 1]

            assert wait_until(labelled, 30), [s.labels.counts for s in states]
            assert states[-1].labels.totals == [1, 1]  # one fraud label, applied once
        # The worker's Prometheus endpoint counts what it decided.
        scraped = (
            urllib.request.urlopen(f"http://127.0.0.1:{settings.metrics_port}/metrics", timeout=10).read().decode()
        )
        assert 'paystream_fraud_decisions_total{action="review",fallback="false",merchant="exact"} 1.0' in scraped
        assert "paystream_outcomes_total" in scraped
    finally:
        assert worker.stop() == 0, worker.log_tail()
