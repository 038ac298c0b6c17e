"""Split payments: the largest remainder rule, the shares' bounds, and a split
payment's life through the state machine and the ledger (streams/domain/splits.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.domain.ledger import Line, PostingError, apply, merchant_account, post, totals_by_currency
from streams.domain.payments import Payment, Policy, decide
from streams.domain.splits import (
    MAX_SPLITS,
    Share,
    SplitError,
    allocate,
    checked_splits,
    largest_remainder,
)
from tests.unit.streams.conftest import Commands, saga_of

POLICY = Policy()
CMDS = Commands()
PLATFORM = CMDS.merchant


def splits_of(*parts: tuple[str, int]) -> list[dict[str, Any]]:
    return [{"merchant_id": m, "amount_minor": a} for m, a in parts]


# --- largest remainder ---


def test_largest_remainder_gives_the_units_left_to_the_largest_remainders_then_the_earlier() -> None:
    assert largest_remainder(10, [5, 5, 5]) == (4, 3, 3)  # equal remainders: the first gets the unit
    assert largest_remainder(100, [50, 30, 20]) == (50, 30, 20)
    assert largest_remainder(7, [5, 3, 2]) == (4, 2, 1)  # 3.5, 2.1, 1.4: 3+2+1, one unit left to the .5
    assert largest_remainder(0, [5, 0]) == (0, 0)


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=MAX_SPLITS + 1).filter(lambda w: sum(w) > 0), st.data())
def test_largest_remainder_sums_exactly_and_never_exceeds_a_weight(weights: list[int], data: st.DataObject) -> None:
    amount = data.draw(st.integers(0, sum(weights)))
    parts = largest_remainder(amount, weights)
    assert sum(parts) == amount
    assert all(0 <= p <= w for p, w in zip(parts, weights))
    exact = [amount * w / sum(weights) for w in weights]
    assert all(abs(p - e) < 1 + 1e-6 * max(1, e) for p, e in zip(parts, exact))  # within one unit of its quota


# --- what a create may carry ---


def test_checked_splits_puts_the_platform_last() -> None:
    shares = checked_splits(splits_of(("m_a", 700), ("m_b", 200)), 100, merchant_id=PLATFORM, amount_minor=1_000)
    assert shares == (Share("m_a", 700), Share("m_b", 200), Share(PLATFORM, 100))
    assert checked_splits(None, None, merchant_id=PLATFORM, amount_minor=1_000) == ()


@pytest.mark.parametrize(
    "splits, fee, reason",
    [
        (splits_of(("m_a", 700)), 200, "splits_mismatch"),
        (splits_of(("m_a", 0), ("m_b", 1_000)), None, "invalid_splits"),
        (splits_of(("m_a", 500), ("m_a", 500)), None, "invalid_splits"),
        (splits_of((PLATFORM, 1_000)), None, "invalid_splits"),
        (splits_of(("m_a", 1_001)), -1, "invalid_splits"),
        (splits_of(*((f"m_{i}", 1) for i in range(MAX_SPLITS + 1))), 1_000 - MAX_SPLITS - 1, "too_many_splits"),
        (None, 10, "invalid_splits"),
        (splits_of(("x" * 65, 1_000)), None, "invalid_splits"),
    ],
)
def test_checked_splits_refuses(splits: Any, fee: Any, reason: str) -> None:
    with pytest.raises(SplitError) as e:
        checked_splits(splits, fee, merchant_id=PLATFORM, amount_minor=1_000)
    assert e.value.reason == reason


# --- a split payment through decide() and the ledger ---


def create(splits: list[tuple[str, int]], fee: int, *, key: str = "order-1") -> dict[str, Any]:
    amount = sum(a for _, a in splits) + fee
    return CMDS.create(key, amount=amount, capture_method="manual") | {
        "splits": splits_of(*splits),
        "platform_fee_minor": fee,
    }


def run(payment: Payment | None, cmd: dict[str, Any]) -> tuple[Payment, list[dict[str, Any]]]:
    d = decide(payment, cmd, saga_of(), POLICY)
    assert d.outcome["status"] == "succeeded", d.outcome
    return d.payment, list(d.events)


def pending(balances: dict, merchant: str) -> int:
    """What the ledger owes the merchant (pending is a credit balance)."""
    return -balances.get((merchant_account(merchant, "pending"), "USD"), 0)


def test_a_capture_credits_each_account_and_the_platform_in_one_balanced_entry() -> None:
    p, events = run(None, create([("m_a", 6_000), ("m_b", 3_000)], 1_000))
    p, events = run(p, CMDS.capture(p.payment_id, "cap-1"))
    [captured] = events
    assert (captured["splits"], captured["platform_fee_minor"]) == (splits_of(("m_a", 6_000), ("m_b", 3_000)), 1_000)
    entry = post(captured, shard=0)
    credits = {x.account: x.credit_minor for x in entry.lines if x.credit_minor and "pending" in x.account}
    assert credits == {
        "merchant:m_a:pending": 6_000,
        "merchant:m_b:pending": 3_000,
        f"merchant:{PLATFORM}:pending": 1_000,
    }
    assert Line("house:clearing:0", "USD", debit_minor=10_000) in entry.lines
    assert not totals_by_currency(apply({}, entry))


def test_a_partial_refund_is_split_pro_rata_and_a_won_dispute_returns_what_it_took() -> None:
    p, _ = run(None, create([("m_a", 1), ("m_b", 1), ("m_c", 1)], 0))
    p, _ = run(p, CMDS.capture(p.payment_id, "cap-1"))
    p, [refund] = run(p, CMDS.refund(p.payment_id, "ref-1", amount=2))
    assert refund["splits"] == splits_of(("m_a", 1), ("m_b", 1))  # ties: the earlier accounts
    p, [opened] = run(p, CMDS.dispute("dispute_open", p.payment_id, "d-1", reason="fraudulent"))
    assert (opened["amount_minor"], opened["splits"]) == (1, splits_of(("m_c", 1)))  # only m_c holds anything
    p, [won] = run(p, CMDS.dispute("dispute_close", p.payment_id, "d-2", outcome="won"))
    assert won["splits"] == opened["splits"]


def test_the_ledger_refuses_an_event_whose_parts_do_not_add_up() -> None:
    p, _ = run(None, create([("m_a", 600)], 400))
    _, [captured] = run(p, CMDS.capture(p.payment_id, "cap-1"))
    with pytest.raises(PostingError) as e:
        post(captured | {"platform_fee_minor": 399}, shard=0)
    assert e.value.reason == "split_mismatch"
    with pytest.raises(PostingError) as e:
        post(captured | {"splits": [{"merchant_id": "m_a"}]}, shard=0)
    assert e.value.reason == "invalid_splits"


def test_the_payment_state_round_trips_with_its_shares() -> None:
    p, _ = run(None, create([("m_a", 600)], 400))
    p, _ = run(p, CMDS.capture(p.payment_id, "cap-1", amount=500))
    assert Payment.from_json(p.to_json()) == p
    assert p.splits == (Share("m_a", 600, captured_minor=300), Share(PLATFORM, 400, captured_minor=200))


ops = st.lists(
    st.tuples(st.sampled_from(["capture", "refund", "dispute_open", "won", "lost"]), st.integers(1, 10**6)), max_size=12
)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(1, 10**6), min_size=1, max_size=MAX_SPLITS), st.integers(0, 10**5), ops)
def test_split_payments_keep_the_books_and_never_take_more_than_an_account_got(
    parts: list[int], fee: int, operations: list[tuple[str, int]]
) -> None:
    accounts = [f"m_s{i}" for i in range(len(parts))]
    p, events = run(None, create(list(zip(accounts, parts)), fee))
    for i, (op, amount) in enumerate(operations):
        key, at = f"op-{i}", CMDS.t0 + timedelta(minutes=i + 1)
        cmd = {
            "capture": lambda: CMDS.capture(p.payment_id, key, amount=amount, at=at),
            "refund": lambda: CMDS.refund(p.payment_id, key, amount=amount, at=at),
            "dispute_open": lambda: CMDS.dispute(
                "dispute_open", p.payment_id, key, reason="fraudulent", amount=amount, at=at
            ),
            "won": lambda: CMDS.dispute("dispute_close", p.payment_id, key, outcome="won", at=at),
            "lost": lambda: CMDS.dispute("dispute_close", p.payment_id, key, outcome="lost", at=at),
        }[op]()
        d = decide(p, cmd, saga_of(), POLICY)
        if d.changed:
            p, events = d.payment, events + list(d.events)
    balances: dict = {}
    for event in events:
        split = event.get("splits") or []
        if split:
            assert sum(s["amount_minor"] for s in split) + event["platform_fee_minor"] == event["amount_minor"]
        entry = post(event, shard=0)
        if entry is not None:
            balances = apply(balances, entry)
    assert not totals_by_currency(balances)
    fees = sum(e["fee_minor"] for e in events)
    for share in p.splits:  # every account holds exactly what it was given and not taken back
        assert (
            share.refunded_minor + share.disputed_minor + share.lost_minor <= share.captured_minor <= share.share_minor
        )
        held = share.captured_minor - share.refunded_minor - share.disputed_minor - share.lost_minor
        assert pending(balances, share.merchant_id) == held - (fees if share.merchant_id == PLATFORM else 0)
    assert sum(s.captured_minor for s in p.splits) == p.captured_minor
    assert sum(s.refunded_minor for s in p.splits) == p.refunded_minor
    assert sum(s.lost_minor for s in p.splits) == p.dispute_lost_minor


def test_allocate_over_shares_of_a_partly_captured_payment_stays_within_each_share() -> None:
    shares = (Share("m_a", 5), Share("m_b", 5), Share(PLATFORM, 0))
    shares, first = allocate(shares, "captured", 3)
    shares, second = allocate(shares, "captured", 7)
    assert [s.captured_minor for s in shares] == [5, 5, 0]
    assert first.total_minor == 3 and second.total_minor == 7
