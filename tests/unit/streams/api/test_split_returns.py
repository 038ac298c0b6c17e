"""What a destination charge's refunds gave back, as Stripe shows it: the transfer
reversals and application fee refunds that `split_returns` reads off the ledger's lines
(docs/api.md, Marketplaces). A hypothesis property drives split payments through the
state machine and the ledger: the books balance, every connected account's reversals
are what the payment's shares say it gave back, the fee refunds are the platform's, and
no transfer or fee gives back more than it was."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.api.stripe_objects import application_fee_object, fee_id, split_returns, transfer_id, transfer_object
from streams.domain.ledger import apply, merchant_account, post, totals_by_currency
from streams.domain.payments import Payment, decide
from streams.domain.splits import MAX_SPLITS
from tests.unit.streams.conftest import saga_of
from tests.unit.streams.domain.test_splits import CMDS, PLATFORM, POLICY, create

OWN = merchant_account(PLATFORM, "pending")


def ledger_lines(events: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[Any, int]]:
    """The events' entries as the read model's ledger_entries rows, oldest first; and the balances."""
    lines, balances = [], {}
    for event in events:
        entry = post(event, shard=0)
        if entry is None:
            continue
        balances = apply(balances, entry)
        if event["type"] not in ("captured", "refunded"):
            continue
        for no, line in enumerate(entry.lines):
            lines.append(
                {
                    "entry_id": entry.entry_id,
                    "line_no": no,
                    "payment_id": event["payment_id"],
                    "account": line.account,
                    "event_type": event["type"],
                    "debit_minor": line.debit_minor,
                    "credit_minor": line.credit_minor,
                    "occurred_at": event["occurred_at"],
                }
            )
    return lines, balances


ops = st.lists(st.tuples(st.sampled_from(["capture", "refund"]), st.integers(1, 10**6)), max_size=10)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=MAX_SPLITS), st.integers(0, 10**5), ops)
def test_refunds_reverse_the_transfers_and_refund_the_fees_they_took_from(
    parts: list[int], fee: int, operations: list[tuple[str, int]]
) -> None:
    accounts = [f"m_s{i}" for i in range(len(parts))]
    d = decide(None, create(list(zip(accounts, parts)), fee), saga_of(), POLICY)
    p: Payment = d.payment
    events = list(d.events)
    for i, (op, amount) in enumerate(operations):
        key, at = f"op-{i}", CMDS.t0 + timedelta(minutes=i + 1)
        make = CMDS.capture if op == "capture" else CMDS.refund
        d = decide(p, make(p.payment_id, key, amount=amount, at=at), saga_of(), POLICY)
        if d.changed:
            p, events = d.payment, events + list(d.events)
    lines, balances = ledger_lines(events)
    assert not totals_by_currency(balances)  # the entries balance, per currency

    reversals, refunds = split_returns(lines, OWN)
    transfers = [
        x
        for x in lines
        if x["event_type"] == "captured"
        and x["credit_minor"] > 0
        and x["account"] != OWN
        and x["account"].startswith("merchant:")
        and x["account"].endswith(":pending")
    ]
    for share in p.splits:
        mine = [t for t in transfers if t["account"] == merchant_account(share.merchant_id, "pending")]
        objects = [
            transfer_object(
                {
                    "id": transfer_id(t),
                    "payment_id": p.payment_id,
                    "amount_minor": t["credit_minor"],
                    "currency": "USD",
                    "account": t["account"],
                    "occurred_at": t["occurred_at"],
                    "entry_id": t["entry_id"],
                    "reversals": reversals[transfer_id(t)],
                }
            )
            for t in mine
        ]
        if share.merchant_id == PLATFORM:
            continue
        assert sum(o["amount"] for o in objects) == share.captured_minor
        assert sum(o["amount_reversed"] for o in objects) == share.refunded_minor
        assert all(0 <= o["amount_reversed"] <= o["amount"] for o in objects)
        assert all(sum(r["amount"] for r in o["reversals"]["data"]) == o["amount_reversed"] for o in objects)
    platform = next(s for s in p.splits if s.merchant_id == PLATFORM)
    captures = list(dict.fromkeys(x["entry_id"] for x in lines if x["event_type"] == "captured"))
    fees = [
        application_fee_object(
            {
                "id": fee_id(e),
                "payment_id": p.payment_id,
                "currency": "USD",
                "destination": merchant_account(accounts[0], "pending"),
                "occurred_at": None,
                "entry_id": e,
                "refunds": refunds.get(fee_id(e), []),
                "amount_minor": sum(x["credit_minor"] for x in lines if x["entry_id"] == e and x["account"] == OWN),
            }
        )
        for e in captures
    ]
    assert sum(f["amount"] for f in fees) == platform.captured_minor
    assert sum(f["amount_refunded"] for f in fees) == platform.refunded_minor
    assert all(0 <= f["amount_refunded"] <= f["amount"] for f in fees)
    ids = [r["id"] for f in fees for r in f["refunds"]["data"]]
    assert len(ids) == len(set(ids))


def test_a_refund_spanning_two_captures_reverses_the_older_first() -> None:
    d = decide(None, create([("m_a", 600)], 400), saga_of(), POLICY)
    p, events = d.payment, list(d.events)
    for i, (make, amount) in enumerate([(CMDS.capture, 500), (CMDS.capture, 500), (CMDS.refund, 800)]):
        d = decide(
            p, make(p.payment_id, f"k{i}", amount=amount, at=CMDS.t0 + timedelta(minutes=i + 1)), saga_of(), POLICY
        )
        p, events = d.payment, events + list(d.events)
    lines, _ = ledger_lines(events)
    reversals, refunds = split_returns(lines, OWN)
    first, second = [
        transfer_id(x)
        for x in lines
        if x["event_type"] == "captured" and x["account"] == merchant_account("m_a", "pending")
    ]
    # the refund of 800 takes 480 from m_a (600 of 1000) and 320 from the fee
    assert [r.amount_minor for r in reversals[first]] == [300] and [r.amount_minor for r in reversals[second]] == [180]
    assert reversals[first][0].id.endswith("_0") and reversals[second][0].id.endswith("_1")
    assert sum(r.amount_minor for rs in refunds.values() for r in rs) == 320
