"""The demo's fraud showcase: every create is one ingest forwards, and through the keys
and risk stages (dict tables, the shipped model, rules and sanctioned-address list, the
operator's blocks) each method gets exactly one decline and one review; the summary
line counts them per method from the payments' events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from connectors.vault.tokenizer import Tokenizer
from models.blocklist import BlockEntry
from models.scoring import Scorer
from models.train import SHIPPED_ARTIFACT
from schemas.codec import Codec
from schemas.partitioning import partition_for
from schemas.times import to_ms
from streams.demo.methods import (
    FRAUD_BURST,
    FRAUD_METHODS,
    fraud_blocks,
    fraud_by_method,
    fraud_commands,
    fraud_summary,
)
from streams.stages import idempotency as ks
from streams.stages import risk as rs
from streams.stages.ingest import Forward, Limits, Source, command_key, ingest

START = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
LIMITS = Limits(max_amount_minor=10**15, idempotency_key_max_len=255, partitions=8)
RETENTION = timedelta(hours=24)


def test_each_method_gets_one_decline_and_one_review_through_the_stages() -> None:
    scorer = Scorer.load(SHIPPED_ARTIFACT)
    for _, record in fraud_blocks("run1", START - timedelta(hours=1)):
        scorer.blocklist.apply(BlockEntry.from_record(record))
    keys: dict[bytes, bytes] = {}
    risk: dict[bytes, bytes] = {}
    actions: dict[str, list[str]] = {m: [] for m in FRAUD_METHODS}
    cmds = fraud_commands("run1", START)
    assert len(cmds) == len(FRAUD_METHODS) * (1 + FRAUD_BURST)
    for c in cmds:
        key = command_key(c)
        source = Source("payment-commands", partition_for(key, LIMITS.partitions), 0, 0, key)
        result = ingest(Codec("PaymentCommand").encode(c, check=True), source, Tokenizer(b"k" * 32, "t1"), LIMITS)
        assert isinstance(result, Forward) and result.command["rejection_reason"] is None, result.command
        at = to_ms(c["occurred_at"])
        routed = ks.handle(result.command, 0, at, keys.get, RETENTION, route_retention=timedelta(days=180))
        keys.update((k, v) for k, v in routed.writes if v is not None)
        assert routed.route is not None
        scored = rs.handle(routed.command, 0, at, risk.get, scorer, RETENTION)
        risk.update((k, v) for k, v in scored.writes if v is not None)
        actions[c["method"]].append(scored.command["fraud_action"])
    for method, got in actions.items():
        assert got == ["decline"] + ["approve"] * (FRAUD_BURST - 1) + ["review"], (method, got)


def test_the_summary_counts_fraud_declines_and_reviews_per_method() -> None:
    def ev(method, type_, reason=None):
        return {"type": type_, "reason_code": reason, "method": method}

    events = {
        "p1": [ev("wallet", "declined", "fraud_suspected")],
        "p2": [ev("wallet", "authorization_pending", "fraud_review"), ev("wallet", "authorized")],
        "p3": [ev(None, "declined", "card_declined")],
        "p4": [ev("crypto", "authorization_pending", "fraud_review")],
    }
    assert fraud_by_method(events) == {"card": (0, 0), "crypto": (0, 1), "wallet": (1, 1)}
    assert fraud_summary(events) == (
        "fraud by method: card declined 0, reviewed 0; crypto declined 0, reviewed 1; wallet declined 1, reviewed 1"
    )
