"""The subscriptions stage over plain values: a tick visits its partition's
subscriptions, outcomes come back by the charge's key, the wire form round-trips,
and a log replayed from offset 0 emits byte-identical charges."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from schemas.codec import Codec
from schemas.ids import derive_subscription_id
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.client.subscriptions import cancel_command, change_plan_command, create_command
from streams.domain.subscriptions import Subscription
from streams.stages.subscriptions import (
    handle,
    outcome_forward,
    partition_prefix,
    replay_charges,
    table_key,
    tick_command,
)

SUBS, COMMANDS, OUTCOMES = Codec("SubscriptionCommand"), Codec("PaymentCommand"), Codec("PaymentOutcome")
N = 4
T0 = datetime(2027, 3, 1, tzinfo=UTC)
TOKEN = {
    "token": "tok_" + "B" * 32,
    "bin": "424242",
    "last4": "4242",
    "brand": "visa",
    "exp_month": 12,
    "exp_year": 2031,
}
DECLINE = TOKEN | {"bin": "400000", "last4": "0002"}


def wire(cmd: dict) -> dict:
    """What the stage reads: the command as it comes off the topic."""
    return SUBS.decode(SUBS.encode(cmd, check=True))


def creates(count: int) -> list[dict]:
    return [
        create_command(
            "m_acme", f"k{i}", DECLINE if i % 3 == 0 else TOKEN, 1000 + i, "USD", "month", 1, 7 if i % 2 else 0, T0, T0
        )
        for i in range(count)
    ]


class Log:
    """A tiny subscriptions stage: the log it read, the state it keeps, the charges it sent."""

    def __init__(self) -> None:
        self.state: dict[bytes, bytes] = {}
        self.log: list[tuple[int, dict]] = []
        self.charges: list[dict] = []

    def feed(self, partition: int, cmd: dict) -> list[dict]:
        cmd = wire(cmd)
        self.log.append((partition, cmd))
        prefix = partition_prefix(partition)
        effects = handle(
            cmd, partition, N, self.state.get, lambda: [kv for kv in self.state.items() if kv[0].startswith(prefix)]
        )
        assert effects.refused is None, effects.refused
        self.state.update(effects.writes)
        self.charges.extend(effects.charges)
        return effects.charges

    def command(self, cmd: dict) -> list[dict]:
        return self.feed(partition_for(cmd["subscription_id"].encode(), N), cmd)

    def tick(self, at: datetime) -> list[dict]:
        return [c for p in range(N) for c in self.feed(p, tick_command(at, p))]

    def answer(self, charge: dict) -> None:
        """The payments stage's outcome for a charge, by the simulated provider's rule for the decline card."""
        declined = charge["card_token"]["last4"] == "0002"
        outcome = {
            "outcome_id": "out_" + charge["command_id"],
            "command_id": charge["command_id"],
            "kind": "create",
            "merchant_id": charge["merchant_id"],
            "idempotency_key": charge["idempotency_key"],
            "payment_id": charge["payment_id"],
            "status": "rejected" if declined else "succeeded",
            "reason_code": "card_declined" if declined else None,
            "reason_detail": None,
            "payment_status": "declined" if declined else "captured",
            "amount_minor": charge["amount_minor"],
            "currency": charge["currency"],
            "card_bin": None,
            "card_last4": None,
            "occurred_at": charge["occurred_at"],
        }
        forwarded = outcome_forward(OUTCOMES.decode(OUTCOMES.encode(outcome, check=True)))
        assert forwarded is not None
        self.command(forwarded)


def run_months(stage: Log, subs: list[dict], days: int) -> None:
    """Create, then tick every other day, answering each charge (and what its answer chains) at once."""
    for cmd in subs:
        stage.command(cmd)
    answered = 0
    for day in range(0, days, 2):
        stage.tick(T0 + timedelta(days=day, hours=1))
        while answered < len(stage.charges):
            stage.answer(stage.charges[answered])
            answered += 1


def test_three_months_then_replay_emits_the_same_bytes() -> None:
    stage = Log()
    run_months(stage, creates(12), 89)  # to May 29: the March, April and May periods
    charged = {
        (c["metadata"]["subscription_id"], c["metadata"]["period"])
        for c in stage.charges
        if c["card_token"]["last4"] == "4242"
    }
    assert len(charged) == 8 * 3  # 8 good cards, 3 monthly periods each, each once
    retries = [c for c in stage.charges if c["metadata"]["attempt"] != "0"]
    assert retries and all(c["card_token"]["last4"] == "0002" for c in retries)
    states = [Subscription.from_json(v) for v in stage.state.values()]
    assert {s.status for s in states if s.card_token["last4"] == "0002"} == {"canceled"}
    # Replay: the same log from offset 0, empty state: the same charges, byte for byte.
    again = replay_charges(stage.log, N)
    assert [COMMANDS.encode(c) for c in again] == [COMMANDS.encode(c) for c in stage.charges]


def test_a_tick_visits_only_its_partitions_subscriptions() -> None:
    stage = Log()
    for cmd in creates(8):
        stage.command(cmd)
    sid = creates(1)[0]["subscription_id"]
    p = partition_for(sid.encode(), N)
    charged = stage.feed(p, tick_command(T0 + timedelta(hours=1), p))
    assert charged and all(partition_for(c["metadata"]["subscription_id"].encode(), N) == p for c in charged)
    assert [c["metadata"]["subscription_id"] for c in charged] == sorted(
        c["metadata"]["subscription_id"] for c in charged
    )


def test_a_message_on_the_wrong_partition_is_refused() -> None:
    cmd = wire(creates(1)[0])
    wrong = (partition_for(cmd["subscription_id"].encode(), N) + 1) % N
    effects = handle(cmd, wrong, N, {}.get, list)
    assert effects.refused is not None and effects.refused.reason == "wrong_partition" and effects.writes == []


def test_bad_commands_are_refused_not_raised() -> None:
    cmd = wire(
        creates(1)[0] | {"plan": {"amount_minor": 0, "currency": "USD", "interval": "month", "interval_count": 1}}
    )
    effects = handle(cmd, partition_for(cmd["subscription_id"].encode(), N), N, {}.get, list)
    assert effects.refused is not None and effects.refused.reason == "invalid_amount"
    orphan = wire(cancel_command("m_acme", "sub_nope", False, T0))
    effects = handle(orphan, partition_for(b"sub_nope", N), N, {}.get, list)
    assert effects.refused is not None and effects.refused.reason == "subscription_not_found"


def test_only_charges_outcomes_are_forwarded_and_another_merchants_payment_pays_nothing() -> None:
    base = {
        "outcome_id": "out_1",
        "command_id": "c1",
        "kind": "create",
        "merchant_id": "m_acme",
        "idempotency_key": "order-1",
        "payment_id": "pay_1",
        "status": "succeeded",
        "reason_code": None,
        "payment_status": "captured",
        "occurred_at": T0,
    }
    assert outcome_forward(base) is None
    stage = Log()
    create = creates(2)[1]
    stage.command(create)
    (charge,) = [
        c for c in stage.tick(T0 + timedelta(days=8)) if c["metadata"]["subscription_id"] == create["subscription_id"]
    ]
    forged = outcome_forward(
        base
        | {
            "merchant_id": "m_evil",
            "command_id": charge["command_id"],
            "idempotency_key": charge["idempotency_key"],
            "payment_id": "pay_other",
        }
    )
    assert forged is not None
    before = dict(stage.state)
    stage.command(forged)
    assert stage.state == before


def test_cli_commands_match_the_schema() -> None:
    create = create_command("m_acme", "k", TOKEN, 999, "EUR", "week", 2, 0, None, T0)
    assert create["subscription_id"] == derive_subscription_id("m_acme", "k")
    sub = Subscription(create["subscription_id"], "m_acme", TOKEN, 999, "EUR", "week", 2, to_ms(T0), 0, to_ms(T0))
    for cmd in (create, cancel_command("m_acme", sub.subscription_id, True, T0), change_plan_command(sub, 1500, T0)):
        assert wire(cmd)["kind"] == cmd["kind"]
    assert table_key(3, "sub_x") == b"3/sub_x"
