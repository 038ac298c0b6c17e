"""Sanctions screening on the real broker: a payer on the shipped list is held in
requires_review with the match in the review queue, a clear miss is authorized, and a
list update published on `sanctions-list` while the worker runs reaches its keys stage."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from confluent_kafka import Producer

from connectors.kafka.clients import read_to_end
from schemas.codec import Codec
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_commands
from streams.domain.sanctions import Entry
from streams.topics import topic_names
from streams.worker.feeds import ENTRY_CODEC
from tests.integration.support import WAIT_S, create, make_settings, start_worker

pytestmark = pytest.mark.integration

BANK = {
    "card": None,
    "capture_method": "automatic",
    "method": "bank_transfer",
    "bank_account": {"scheme": "ach", "mandate_id": "MD-1", "account_last4": "6789"},
}
NEW_PARTY = Entry.make("PS-9001", "individual", "Quillon Ebberwick Marsh", programs=["FICT-TEST"])


def test_hits_are_held_misses_pass_and_list_updates_are_picked_up(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "sanctions")
    names = topic_names(settings)
    m = f"m_{uuid.uuid4().hex[:6]}"
    worker = start_worker(settings)
    try:
        hit = create(m, "hit", metadata={"payer_name": "Drakonov Ivan Petrovitch"}, **BANK)
        card_hit = create(m, "card-hit", metadata={"cardholder_name": "NORDHAVEN SHIPPING"})
        miss = create(m, "miss", metadata={"payer_name": "Maria Garcia"}, **BANK)
        with Observer(settings) as seen:
            publish_commands(settings, [hit, card_hit, miss])
            ids = {c["command_id"] for c in (hit, card_hit, miss)}
            assert seen.wait_for(ids, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
            status = {
                c["idempotency_key"]: seen.outcomes[c["command_id"]][0]["payment_status"] for c in (hit, card_hit, miss)
            }
            assert status == {"hit": "requires_review", "card-hit": "requires_review", "miss": "submitted"}, status

            reviews: dict[str, dict] = {}

            def reviewed(*pids: str) -> bool:
                for msg in read_to_end(settings.kafka_bootstrap, [names.review], settings.partitions):
                    r = Codec("FraudReview").decode(msg.value())
                    reviews[r["payment_id"]] = r
                return all(p in reviews for p in pids)

            assert wait_until(lambda: reviewed(hit["payment_id"], card_hit["payment_id"]), 30)
            match = reviews[hit["payment_id"]]["sanctions"]
            assert (match["uid"], match["matched_name"], match["screened_field"]) == (
                "PS-0001",
                "Drakonov, Ivan Petrovich",
                "payer_name",
            )
            assert 88 <= match["score"] < 100 and reviews[hit["payment_id"]]["reasons"] == [
                f"sanctions_hit:PS-0001:{match['score']}"
            ]
            assert reviews[card_hit["payment_id"]]["sanctions"]["uid"] == "PS-0003"

            # A new party listed while the worker runs: creates naming it are held once the
            # worker has read the update (it polls the topic); before that they pass.
            producer = Producer({"bootstrap.servers": settings.kafka_bootstrap})
            producer.produce(
                names.sanctions, ENTRY_CODEC.encode(NEW_PARTY.to_record("it-1"), check=True), key=NEW_PARTY.uid.encode()
            )
            assert producer.flush(10) == 0
            outcomes: list[str] = []

            def held_after_update() -> bool:
                probe = create(m, f"probe-{len(outcomes)}", metadata={"payer_name": "Marsh, Quillon Ebberwick"}, **BANK)
                publish_commands(settings, [probe])
                assert seen.wait_for({probe["command_id"]}, 0, WAIT_S, lambda *_: worker.supervise()), worker.log_tail()
                outcomes.append(seen.outcomes[probe["command_id"]][0]["payment_status"])
                return outcomes[-1] == "requires_review"

            assert wait_until(held_after_update, 30), outcomes
            assert set(outcomes[:-1]) <= {"submitted"}
    finally:
        worker.stop()
