"""Subscriptions on a real worker: three subscriptions ticked through three months of
event time (a trial, a plan change with proration, a card that always declines:
dunning retries, then canceled); then the replay: the pure logic run over
subscription-commands from offset 0 emits byte for byte the charges the worker put
on payment-commands."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from connectors.kafka.clients import read_to_end
from schemas.codec import Codec
from schemas.ids import derive_charge_command_id
from streams.client.observe import Observer
from streams.client.processes import wait_until
from streams.client.publish import publish_tick, tokenize_in_vault
from streams.client.subscriptions import change_plan_command, create_command, publish, read_subscriptions
from streams.domain.subscriptions import CHARGE_KEY_PREFIX, DAY_MS, MAX_ATTEMPTS, prorate
from streams.settings import client_config
from streams.stages.subscriptions import replay_charges
from streams.topics import topic_names
from tests.integration.support import WAIT_S, make_settings, start_worker

pytestmark = pytest.mark.integration
SUBS, COMMANDS = Codec("SubscriptionCommand"), Codec("PaymentCommand")
DEC1 = datetime(2026, 12, 1, tzinfo=UTC)


def token(settings, pan: str) -> dict:
    (record,) = tokenize_in_vault(
        settings,
        [
            {
                "kind": "create",
                "merchant_id": "m_subs",
                "command_id": "t",
                "card": {"number": pan, "exp_month": 12, "exp_year": 2030},
            }
        ],
    )
    return record["card_token"]


def test_three_months_with_dunning_and_a_byte_identical_replay(bootstrap: str, tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "subs")
    names = topic_names(settings)
    good, bad = token(settings, "4242424242424242"), token(settings, "4000000000000002")
    a = create_command("m_subs", "a", good, 1000, "USD", "month", 1, 0, DEC1, DEC1)
    b = create_command("m_subs", "b", good, 700, "EUR", "month", 1, 10, DEC1, DEC1)  # billing from Dec 11
    c = create_command("m_subs", "c", bad, 500, "USD", "month", 1, 0, DEC1, DEC1)
    ids = {x: cmd["subscription_id"] for x, cmd in zip("abc", (a, b, c))}
    worker = start_worker(settings)
    observer = Observer(settings)
    try:
        publish(settings, [a, b, c])

        def settled() -> bool:
            """Every charge sent has its outcome applied (the next tick must find it)."""
            subs = read_subscriptions(settings)
            return len(subs) == 3 and all(
                s.pending is None or not s.pending.sent or s.status == "canceled" for s in subs
            )

        def tick(day: int) -> None:
            publish_tick(settings, DEC1 + timedelta(days=day, hours=1))
            assert wait_until(settled, WAIT_S), worker.log_tail()

        # c's retries on Dec 2, 5 and 10; b's trial ends Dec 11; the months turn on Jan 1 and Feb 1.
        for day in (0, 1, 4, 9, 10, 31, 41):
            tick(day)
        # Mid-January a's plan goes to 2000: the unused 16 of 31 days are prorated onto February's invoice.
        (sub_a,) = [s for s in read_subscriptions(settings) if s.subscription_id == ids["a"]]
        publish(settings, [change_plan_command(sub_a, 2000, DEC1 + timedelta(days=46))])
        assert wait_until(
            lambda: any(s.subscription_id == ids["a"] and s.amount_minor == 2000 for s in read_subscriptions(settings)),
            WAIT_S,
        )
        for day in (62, 72):
            tick(day)

        expected = {derive_charge_command_id(ids[x], k, 0) for x in "ab" for k in range(3)}
        expected |= {derive_charge_command_id(ids["c"], 0, n) for n in range(MAX_ATTEMPTS)}
        assert observer.wait_for(expected, 0, WAIT_S), worker.log_tail()
    finally:
        assert worker.stop() == 0, worker.log_tail()
    observer.close()

    outcomes = {cid: observer.outcomes[cid] for cid in expected}
    assert all(len(o) == 1 for o in outcomes.values())  # each charge exactly once
    for (o,) in outcomes.values():
        declined = o["idempotency_key"].startswith(f"{CHARGE_KEY_PREFIX}{ids['c']}/")
        assert (o["status"], o["payment_status"]) == (
            ("rejected", "declined") if declined else ("succeeded", "captured")
        ), o
    subs = {s.subscription_id: s for s in read_subscriptions(settings)}
    assert (subs[ids["a"]].status, subs[ids["a"]].paid_periods) == ("active", 3)
    assert (subs[ids["b"]].status, subs[ids["b"]].paid_periods) == ("active", 3)
    assert (subs[ids["c"]].status, subs[ids["c"]].cancel_reason, subs[ids["c"]].retries_sent) == (
        "canceled",
        "dunning_exhausted",
        MAX_ATTEMPTS - 1,
    )

    # The charges on payment-commands, as the worker wrote them.
    conn = client_config(settings)
    emitted = [bytes(m.value()) for m in read_to_end(conn, [names.commands], settings.partitions)]
    charges = [raw for raw in emitted if COMMANDS.decode(raw)["idempotency_key"].startswith(CHARGE_KEY_PREFIX)]
    assert len(charges) == len(expected)
    # February's charge of a: 2000 plus the proration of 16 of January's 31 days.
    feb = next(
        COMMANDS.decode(r)
        for r in charges
        if COMMANDS.decode(r)["command_id"] == derive_charge_command_id(ids["a"], 2, 0)
    )
    remaining, month = 16 * DAY_MS, 31 * DAY_MS
    assert feb["amount_minor"] == 2000 + prorate(2000, remaining, month) - prorate(1000, remaining, month)
    # Replay: subscription-commands from offset 0 through the pure logic: the same bytes.
    log = [
        (m.partition(), SUBS.decode(m.value()))
        for m in read_to_end(conn, [names.subscription_commands], settings.partitions)
    ]
    replayed = replay_charges(log, settings.partitions)
    assert sorted(COMMANDS.encode(c) for c in replayed) == sorted(charges)
