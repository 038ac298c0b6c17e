"""The demo's crypto customers: every create is one ingest forwards and the risk stage
approves; through the payments rules over the shipped chains, looked at a poll at a
time as the demo's ticks drive them, each payer does what the plan says, and the demo's
expectation of the moves is what the stage records."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.providers.chain import build_chains
from connectors.vault.tokenizer import Tokenizer
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.demo.crypto import (
    PLAN,
    TICK_SPAN,
    CryptoRun,
    crypto_commands,
    crypto_summary,
    expected_moves,
    looked_enough,
    quoted,
    refund_commands,
)
from streams.domain.crypto import MOVES
from streams.domain.payments import Policy, crypto_due, decide
from streams.domain.timers import Timer
from streams.stages import idempotency as ks
from streams.stages import risk as rs
from streams.stages.ingest import Forward, Limits, Source, command_key, ingest
from tests.unit.streams.conftest import saga_of

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LIMITS = Limits(max_amount_minor=10**15, idempotency_key_max_len=255, partitions=8)
RETENTION = timedelta(hours=24)
POLICY = Policy()
CHAINS = build_chains(seed=0)
SAGA = replace(saga_of(), chains=CHAINS)


def validated(creates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each create through ingest, the keys stage and the risk stage (dict tables)."""
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    keys: dict[bytes, bytes] = {}
    risk: dict[bytes, bytes] = {}
    out = []
    for c in creates:
        key = command_key(c)
        source = Source("payment-commands", partition_for(key, LIMITS.partitions), 0, 0, key)
        result = ingest(Codec("PaymentCommand").encode(c, check=True), source, Tokenizer(b"k" * 32, "t1"), LIMITS)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result.command
        at = to_ms(c["occurred_at"])
        routed = ks.handle(result.command, 0, at, keys.get, RETENTION, route_retention=timedelta(days=180))
        keys.update((k, v) for k, v in routed.writes if v is not None)
        scored = rs.handle(routed.command, 0, at, risk.get, scorer, RETENTION)
        risk.update((k, v) for k, v in scored.writes if v is not None)
        out.append(scored.command)
    return out


def tick_through(cmd: dict[str, Any], until_ms: int) -> list[dict[str, Any]]:
    """A create decided, then its crypto timers fired a poll at a time up to `until_ms`, as ticks do."""
    d = decide(None, cmd, SAGA, POLICY)
    p, events, timers = d.payment, list(d.events), list(d.timers)
    while timers and timers[0].due_ms <= until_ms:
        t: Timer = timers.pop(0)
        looked = crypto_due(p, t, SAGA, POLICY)
        assert looked is not None
        p, events, timers = looked.payment, events + list(looked.events), timers + list(looked.timers)
    return events


def test_the_plan_plays_out_on_the_chain_as_the_demo_expects() -> None:
    creates = crypto_commands("run1", 7, START, CHAINS, POLICY.crypto)
    assert len(creates) == len(PLAN) and crypto_commands("run1", 7, START, CHAINS, POLICY.crypto) == creates
    last = to_ms(creates[-1]["occurred_at"]) + TICK_SPAN // timedelta(milliseconds=1)
    finals, expected, events = [], {}, {}
    for cmd, (asset, _, behaviour, _, _) in zip(validated(creates), PLAN):
        assert cmd["fraud_action"] == "approve", cmd
        evs = tick_through(cmd, last)
        cp = quoted(evs)
        assert cp is not None and cp.asset == asset
        expected[cmd["payment_id"]] = expected_moves(cp, CHAINS[asset], POLICY.crypto, last)
        events[cmd["payment_id"]] = evs
        moves = [e["type"] for e in evs if e["type"] in MOVES and e["type"] != "crypto_quoted"]
        assert len(moves) == expected[cmd["payment_id"]], (behaviour, moves)
        finals.append((behaviour, evs[-1]["payment_status"], "crypto_refunded" in moves))
    assert looked_enough(events, expected)
    assert not looked_enough({pid: evs[:-1] for pid, evs in events.items()}, expected)
    want = {
        "exact": ("confirmed", False),
        "under": ("expired", True),
        "over": ("confirmed", True),
        "never": ("expired", False),
    }
    assert [(s, back) for b, s, back in finals] == [want[b] for b, _, _ in finals]
    # the merchant refunds the one planned, once confirmed
    refunds = refund_commands(creates, events, "run1", START + TICK_SPAN)
    assert [r["payment_id"] for r in refunds] == [c["payment_id"] for c, plan in zip(creates, PLAN) if plan[4]]
    assert refund_commands(creates, {}, "run1", START) == []


def test_the_summary_counts_this_runs_crypto_payments_by_final_state() -> None:
    creates = crypto_commands("run2", 3, START, CHAINS, POLICY.crypto)
    last = to_ms(creates[-1]["occurred_at"]) + TICK_SPAN // timedelta(milliseconds=1)
    events = {c["payment_id"]: tick_through(c, last) for c in validated(creates)}
    events["pay_card"] = [{"type": "captured", "payment_status": "captured", "method": None}]
    line = crypto_summary(events, set(events), CryptoRun(ticks=180, moved=True, refunds=0))
    assert line.startswith("crypto: 9 payments (BTC 3, USDC 6); by final state: confirmed 6, expired 3; ")
    assert line.endswith("coins given back to 3 payer(s); 180 clock ticks, chain looks recorded True")
    assert crypto_summary({}, set(), CryptoRun()).startswith("crypto: 0 payments (); by final state: none")
