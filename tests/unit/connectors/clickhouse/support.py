"""Deterministic payment traffic for the read-model tests: PaymentEvents from a
seeded generator (declines, fraud declines, partial captures with fees, refunds,
disputes), their journal entries posted by the real ledger rules, both passed
through the Avro codecs so the records look exactly like what a sink decodes."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from connectors.clickhouse.rows import rows_for
from connectors.clickhouse.sink import Sink
from schemas.codec import Codec
from streams.domain.ledger import SettlementTerms, entry_to_record, post, shard_for
from tests.unit.streams.ledger_support import event

DAY0 = datetime(2026, 11, 25, tzinfo=UTC)
MERCHANTS = ("m_acme", "m_globex", "m_initech")
CURRENCIES = {"USD": (500, 50_000), "EUR": (500, 40_000), "JPY": (100, 20_000)}
SHARDS = 8
_EVENTS, _ENTRIES = Codec("PaymentEvent"), Codec("LedgerEntry")


@dataclass
class Traffic:
    events: list[dict[str, Any]] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)


def traffic(payments: int = 200, seed: int = 7, start: datetime = DAY0, days: int = 1) -> Traffic:
    rng = random.Random(seed)
    out = Traffic()
    span_ms = days * 86_400_000
    for i in range(payments):
        merchant, currency = rng.choice(MERCHANTS), rng.choice(list(CURRENCIES))
        pid = f"pay_{seed}_{i}"
        at = start + timedelta(milliseconds=rng.randrange(span_ms - 3_600_000))
        state = {"authorized": 0, "captured": 0, "refunded": 0, "version": 0}

        def emit(
            etype: str, amount: int = 0, fee: int = 0, status: str | None = None, reason: str | None = None
        ) -> None:
            nonlocal at
            state["version"] += 1
            at += timedelta(seconds=rng.randint(1, 600))
            e = event(
                etype,
                amount=amount,
                fee=fee,
                payment_id=pid,
                merchant=merchant,
                currency=currency,
                authorized=state["authorized"],
                captured=state["captured"],
                refunded=state["refunded"],
                version=state["version"],
                status=status,
                at=at,
            )
            e["reason_code"] = reason
            e["provider_ref"] = f"prv_{pid}_{state['version']}"
            decoded = _EVENTS.decode(_EVENTS.encode(e, check=True))
            out.events.append(decoded)
            entry = post(decoded, shard=shard_for(merchant, SHARDS), settlement=SettlementTerms(currency))
            if entry is not None:
                out.entries.append(_ENTRIES.decode(_ENTRIES.encode(entry_to_record(entry))))

        roll = rng.random()
        if roll < 0.05:
            emit("declined", status="declined", reason="fraud_suspected")
            continue
        if roll < 0.15:
            emit("declined", status="declined", reason=rng.choice(("card_declined", "insufficient_funds")))
            continue
        amount = rng.randint(*CURRENCIES[currency])
        state["authorized"] = amount
        emit("authorized", amount, status="authorized")
        captured = amount if rng.random() < 0.8 else amount // 2
        if rng.random() < 0.1:
            emit("voided", amount, status="voided")
            continue
        state["captured"] = captured
        emit(
            "captured",
            captured,
            fee=captured * 29 // 1000 + 30,
            status="captured" if captured == amount else "partially_captured",
        )
        if captured < amount:
            emit("voided", amount - captured, status="partially_captured")
        if rng.random() < 0.15:
            refund = captured // 3
            state["refunded"] = refund
            emit("refunded", refund, status="partially_refunded")
        elif rng.random() < 0.05:
            emit("dispute_opened", captured, fee=1500, status="captured")
            emit(rng.choice(("dispute_won", "dispute_lost")), captured, status="captured")
    return out


def populate(ch: Any, t: Traffic) -> Any:
    """Every read model filled from `t`: events, entries, one validation rejection,
    a day's settlements and a reconciliation; the client back."""
    from dataclasses import asdict

    from connectors.providers.bank import DAY_MS, BankRail
    from streams.domain.ledger import entry_from_record
    from streams.domain.payouts import payout_of_settlement, run_payouts
    from streams.domain.reconcile import ledger_side, reconcile
    from streams.domain.settlement import cutoff_ms, settle
    from streams.jobs.payouts import status_record

    rows = [r for e in t.events for r in rows_for("payment_event", e)]
    rows += [r for e in t.entries for r in rows_for("ledger_entry", e)]
    rows += rows_for(
        "payment_outcome",
        {
            "outcome_id": "out_1",
            "command_id": "c1",
            "kind": "create",
            "merchant_id": "m_acme",
            "idempotency_key": "k",
            "payment_id": None,
            "status": "rejected",
            "reason_code": "invalid_currency",
            "reason_detail": None,
            "payment_status": None,
            "amount_minor": 100,
            "currency": None,
            "occurred_at": DAY0,
        },
    )
    run = settle(DAY0.date(), [entry_from_record(r) for r in t.entries], shards=SHARDS)
    rows += [r for s in run.settlements for r in rows_for("settlement", asdict(s))]
    closed = BankRail(closed_accounts=frozenset({run.payouts[0].merchant_id})) if run.payouts else BankRail()
    sent = run_payouts(
        [payout_of_settlement(e) for e in run.entries],
        {},
        as_of_ms=cutoff_ms(DAY0.date()) + 5 * DAY_MS,
        bank=closed,
        shards=SHARDS,
    )
    rows += [r for s in sent.statuses for r in rows_for("payout", status_record(s))]
    books = ledger_side(t.events)
    rows += [r for i in reconcile(DAY0.date(), books[1:], books).items for r in rows_for("reconciliation", asdict(i))]
    Sink(ch).insert(rows)
    return ch
