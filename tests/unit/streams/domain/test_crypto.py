"""Crypto payments: the simulated chain, the quote, `observe` and the lifecycle in decide,
posted to the ledger (streams/domain/crypto.py, connectors/providers/chain.py)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connectors.providers.chain import ChainConfig, ChainConfigError, ChainView, Deposit, Rate, SimChain, load_chains
from schemas.codec import Codec
from schemas.times import from_ms, to_ms
from streams.domain import crypto
from streams.domain.crypto import CryptoPolicy, observe, quote
from streams.domain.ledger import Balances, add_into, house_account, merchant_account, post, totals_by_currency
from streams.domain.methods import MethodError, check_instrument
from streams.domain.payments import Payment, Policy, crypto_due, decide
from tests.unit.streams.conftest import Commands, saga_of

EVENTS = Codec("PaymentEvent")
PAYER = "bc1qpayer0000000000000000000000000000"
POLICY = CryptoPolicy(depth_blocks=(("USDC", 3), ("BTC", 2)), lock_ms=15 * 60_000, poll_ms=12_000, watch_ms=3_600_000)


def usdc(**kw: Any) -> ChainConfig:
    base = dict(name="sim_usdc", asset="USDC", block_interval_ms=12_000, price_minor={"USD": 100}, reorg_depth_blocks=2)
    return ChainConfig(**(base | kw))


# --- the chain and the quote ---


def test_a_quote_rounds_up_and_a_refund_rounds_down_in_integers() -> None:
    btc = Rate(10**8, 6_000_000)  # 60,000.00 USD per BTC: 10**8 sat per 6,000,000 cents
    assert btc.to_asset_minor(10_000) == 166_667  # 100.00 USD = 166,666.67 sat, rounded up
    assert btc.refund_asset_minor(10_000) == 166_666
    assert Rate(10**6, 100).to_asset_minor(12_345) == 123_450_000  # USDC: 1 cent = 10,000 micro-USDC
    with pytest.raises(AssertionError):
        Rate(1.5, 1)  # type: ignore[arg-type]  # never a float


def test_the_shipped_chains_load_and_price_by_the_hour() -> None:
    chains = load_chains()
    assert set(chains) == {"USDC", "BTC"}
    btc = SimChain(chains["BTC"], seed=7)
    r1, r2 = btc.rate("USD", 0), btc.rate("USD", 3_600_000 * 5)
    assert r1 == btc.rate("USD", 59 * 60_000) and r1 is not None and r2 is not None  # locked within the hour
    assert abs(r1.fiat_minor - 6_000_000) <= 180_000 and btc.rate("JPY", 0) is None
    assert SimChain(chains["USDC"]).rate("USD", 123) == Rate(10**6, 100)
    with pytest.raises(ChainConfigError):
        chains["USDC"].check_depth(2)  # a depth a reorg can undo
    with pytest.raises(ChainConfigError):
        usdc(asset="DOGE")


def test_the_chain_is_a_function_of_seed_address_and_event_time() -> None:
    chain = SimChain(usdc(reorg_per_mille=1000, drop_per_mille=0, payer_delay_blocks=1), seed=3)
    addr = chain.deposit_address("pay_1")
    assert addr == SimChain(usdc(), seed=9).deposit_address("pay_1") != chain.deposit_address("pay_2")
    first = chain.view(addr, 5_000_000, 0, 900_000, 12_000)  # the transfer is in block 1
    assert [d.block for d in first.deposits] == [1] and first.confirmations(first.deposits[0]) == 1
    later = chain.view(addr, 5_000_000, 0, 900_000, 120_000)
    # every transfer reorged: orphaned within 2 blocks and mined again in the new tip
    assert [d.tx_id for d in later.deposits] == [d.tx_id for d in first.deposits]
    assert later.deposits[0].block in (2, 3) and later == chain.view(addr, 5_000_000, 0, 900_000, 120_000)
    assert (
        chain.send("k1", PAYER, 10, 0).tx_id
        == chain.send("k1", PAYER, 99, 5).tx_id
        != chain.send("k2", PAYER, 10, 0).tx_id
    )


def test_a_crypto_create_carries_exactly_an_asset_and_a_payer_address() -> None:
    base = {"method": "crypto", "currency": "USD", "capture_method": "automatic"}
    got = check_instrument(base | {"crypto": {"asset": "BTC", "refund_address": PAYER}}, {"card": frozenset({"USD"})})
    assert got.fields()["crypto"] == {"asset": "BTC", "refund_address": PAYER}
    for crypto_field, reason in (
        ({"asset": "DOGE", "refund_address": PAYER}, "invalid_crypto"),
        ({"asset": "USDC", "refund_address": "bc1-q"}, "invalid_crypto"),
    ):
        with pytest.raises(MethodError) as e:
            check_instrument(base | {"crypto": crypto_field})
        assert e.value.reason == reason
    with pytest.raises(MethodError) as e:
        check_instrument(base | {"capture_method": "manual", "crypto": {"asset": "USDC", "refund_address": PAYER}})
    assert e.value.reason == "capture_method_not_supported"


# --- observe, by hand-made views ---


def view(at_ms: int, *deposits: tuple[str, int, int]) -> ChainView:
    head = at_ms // 12_000
    return ChainView(head, at_ms, tuple(Deposit(tx, amount, block, block * 12_000) for tx, amount, block in deposits))


def quoted(due_minor: int = 1_000_000) -> crypto.CryptoPayment:
    return quote("USDC", "sim1addr", PAYER, due_minor // 10_000, Rate(10**6, 100), 0, POLICY)


def types(moves: list[crypto.Move]) -> list[tuple[str, int, int]]:
    return [(m.type, m.fiat_minor, m.asset_minor) for m in moves]


def test_paid_in_full_is_pending_then_confirmed_at_depth() -> None:
    cp = quoted()
    cp, moves = observe(cp, view(12_000, ("t1", 1_000_000, 1)), 3)
    assert types(moves) == [("crypto_received", 0, 1_000_000), ("crypto_pending", 100, 0)] and cp.state == "confirming"
    cp, moves = observe(cp, view(24_000, ("t1", 1_000_000, 1)), 3)
    assert moves == []
    cp, moves = observe(cp, view(36_000, ("t1", 1_000_000, 1)), 3)
    assert types(moves) == [("crypto_confirmed", 100, 1_000_000)] and cp.state == "confirmed"


def test_a_reorg_before_depth_takes_the_payment_back_until_it_is_mined_again() -> None:
    cp, _ = observe(quoted(), view(12_000, ("t1", 1_000_000, 1)), 3)
    cp, moves = observe(cp, view(24_000), 3)
    assert (
        types(moves) == [("crypto_reorged", 0, 1_000_000), ("crypto_unpending", 100, 0)]
        and cp.state == "awaiting_payment"
    )
    cp, moves = observe(cp, view(36_000, ("t1", 1_000_000, 3)), 3)
    assert types(moves) == [("crypto_received", 0, 1_000_000), ("crypto_pending", 100, 0)]


def test_an_over_payment_confirms_and_the_excess_goes_back_once_deep() -> None:
    cp, _ = observe(quoted(), view(12_000, ("t1", 1_250_000, 1)), 3)
    cp, moves = observe(cp, view(36_000, ("t1", 1_250_000, 1)), 3)
    assert types(moves) == [("crypto_confirmed", 100, 1_000_000), ("crypto_refunded", 0, 250_000)]
    assert (cp.sent_back_minor, cp.sends) == (250_000, 1)
    assert observe(cp, view(48_000, ("t1", 1_250_000, 1)), 3)[1] == []  # given back once


def test_an_under_payment_expires_and_is_given_back_and_a_late_one_too() -> None:
    cp, moves = observe(quoted(), view(12_000, ("t1", 400_000, 1)), 3)
    assert types(moves) == [("crypto_received", 0, 400_000)] and cp.state == "awaiting_payment"
    cp, moves = observe(cp, view(900_000, ("t1", 400_000, 1)), 3)
    assert types(moves) == [("crypto_expired", 0, 0), ("crypto_refunded", 0, 400_000)]
    # the rest arrives after the lock window: it never counts, it goes back when deep
    cp, moves = observe(cp, view(912_000, ("t1", 400_000, 1), ("t2", 600_000, 76)), 3)
    assert types(moves) == [("crypto_received", 0, 600_000)]
    cp, moves = observe(cp, view(948_000, ("t1", 400_000, 1), ("t2", 600_000, 76)), 3)
    assert types(moves) == [("crypto_refunded", 0, 600_000)] and cp.state == "expired"


def test_a_deposit_a_reorg_moves_past_the_lock_window_no_longer_pays() -> None:
    cp, _ = observe(quoted(), view(888_000, ("t1", 1_000_000, 74)), 3)  # block 74 is mined at 888 s < 900 s
    assert cp.state == "confirming"
    cp, moves = observe(cp, view(912_000, ("t1", 1_000_000, 76)), 3)
    assert types(moves) == [("crypto_unpending", 100, 0), ("crypto_expired", 0, 0)]


# --- decide and the timers, posted to the ledger ---


def create(cmds: Commands, *, amount: int = 10_000, asset: str = "USDC", key: str = "order-1") -> dict[str, Any]:
    return cmds.create(key, amount=amount) | {
        "card": None,
        "method": "crypto",
        "crypto": {"asset": asset, "refund_address": PAYER},
    }


def run(
    chain: SimChain, cmds: Commands, create_cmd: dict[str, Any], polls: int, refund_at_poll: int | None = None
) -> tuple[Payment, list[dict[str, Any]]]:
    """A create, then its crypto timers fired in order (as the stage does), every event encoded."""
    saga = replace(saga_of(), chains={chain.asset: chain})
    policy = Policy(crypto=POLICY)
    d = decide(None, create_cmd, saga, policy)
    p, events, timers = d.payment, list(d.events), list(d.timers)
    for i in range(polls):
        if not timers:
            break
        t = timers.pop(0)
        if refund_at_poll is not None and i >= refund_at_poll and p.status == "confirmed":
            # a command id per payment: one command's events have one id each, as in the pipeline
            r = decide(
                p,
                cmds.refund(
                    p.payment_id,
                    "r1",
                    amount=max(1, p.amount_minor // 2),
                    at=from_ms(t.due_ms),
                    command_id=f"cmd_refund_{p.payment_id}",
                ),
                saga,
                policy,
            )
            p, events = r.payment, events + list(r.events)
        looked = crypto_due(p, t, saga, policy)
        assert looked is not None
        p, events, timers = looked.payment, events + list(looked.events), timers + list(looked.timers)
    for e in events:
        EVENTS.encode(e, check=True)
    return p, events


def book(events: list[dict[str, Any]]) -> Balances:
    balances: Balances = {}
    for e in events:
        entry = post(e, shard=0)
        if entry is not None:
            add_into(balances, entry)
    return balances


def test_a_usdc_payment_is_quoted_confirmed_refunded_and_booked(cmds: Commands) -> None:
    chain = SimChain(usdc(payer_delay_blocks=1), seed=1)
    p, events = run(chain, cmds, create(cmds), polls=8, refund_at_poll=6)
    assert [e["type"] for e in events][:4] == ["crypto_quoted", "crypto_received", "crypto_pending", "crypto_confirmed"]
    assert "refunded" in [e["type"] for e in events] and p.status == "partially_refunded"
    quoted_event = events[0]
    assert quoted_event["crypto"]["due_minor"] == 100_000_000 and quoted_event["crypto"]["address"] == p.crypto.address
    b = book(events)
    assert totals_by_currency(b) == {}
    assert b[(merchant_account("m_acme", "pending"), "USD")] == -5_000  # confirmed, half refunded
    assert b[(house_account("crypto_custody", 0), "USDC")] == 50_000_000  # 100 USDC in, 50 back to the payer
    assert b[(house_account("crypto_owned", 0), "USDC")] == -50_000_000


def test_a_payment_in_a_currency_the_chain_does_not_price_is_declined(cmds: Commands) -> None:
    saga = replace(saga_of(), chains={"USDC": SimChain(usdc())})
    d = decide(None, create(cmds) | {"currency": "JPY"}, saga, Policy(crypto=POLICY))
    assert d.payment.status == "declined" and d.outcome["reason_code"] == "currency_not_supported"
    d = decide(None, create(cmds, key="o2"), saga, Policy(crypto=POLICY))
    for kind in ("capture", "void"):
        r = decide(d.payment, cmds.follow_up(kind, d.payment.payment_id, kind), saga, Policy(crypto=POLICY))
        assert r.outcome["reason_code"] == "no_authorization_hold"


# --- the property: no money created or lost, whatever the chain does ---


@st.composite
def chains(draw: st.DrawFn) -> SimChain:
    asset = draw(st.sampled_from(["USDC", "BTC"]))
    mix = draw(st.lists(st.integers(0, 200), min_size=5, max_size=5))
    config = ChainConfig(
        name="sim",
        asset=asset,
        block_interval_ms=draw(st.sampled_from([12_000, 60_000, 600_000])),
        reorg_per_mille=draw(st.integers(0, 1000)),
        reorg_depth_blocks=1,
        drop_per_mille=draw(st.integers(0, 1000)),
        split_per_mille=mix[0],
        under_per_mille=mix[1],
        over_per_mille=mix[2],
        late_per_mille=mix[3],
        never_per_mille=mix[4],
        payer_delay_blocks=draw(st.integers(1, 4)),
        price_minor={"USD": draw(st.integers(1, 10_000_000))},
        volatility_per_mille=draw(st.integers(0, 100)),
        fee_bps=draw(st.integers(0, 200)),
    )
    return SimChain(config, seed=draw(st.integers(0, 2**32)))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chain=chains(), amount=st.integers(1, 10**7), refund_at=st.none() | st.integers(0, 30))
def test_no_money_is_created_or_lost_across_confirmations_reorgs_and_refunds(
    cmds: Commands, chain: SimChain, amount: int, refund_at: int | None
) -> None:
    p, events = run(chain, cmds, create(cmds, amount=amount, asset=chain.asset), polls=400, refund_at_poll=refund_at)
    cp = p.crypto
    assert cp is not None
    b = book(events)
    assert totals_by_currency(b) == {}  # every currency and asset balances
    # the house's custody is what the chain holds for us: deposits on the canonical chain less what we sent
    last_ms = max(to_ms(e["occurred_at"]) for e in events)
    on_chain = chain.view(cp.address, cp.due_minor, cp.issued_ms, cp.expires_ms, last_ms)
    sent = sum(e["crypto"]["amount_minor"] for e in events if e["type"] in ("crypto_refunded", "refunded"))
    assert (
        b.get((house_account("crypto_custody", 0), cp.asset), 0)
        == sum(d.amount_minor for d in on_chain.deposits) - sent
    ), [(e["type"], e["crypto"]["amount_minor"], e["occurred_at"]) for e in events]
    # the merchant is owed the price exactly when the payment confirmed (less refunds and fees)
    fees = sum(e["fee_minor"] for e in events)
    owed = -b.get((merchant_account("m_acme", "pending"), "USD"), 0)
    assert owed == (amount - p.refunded_minor - fees if cp.state == "confirmed" else 0)
    assert b.get((merchant_account("m_acme", "incoming"), "USD"), 0) == (-amount if cp.state == "confirming" else 0)
    # the payer gets back at most what it sent; once closed and deep, everything that is not the merchant's
    received = sum(e["crypto"]["amount_minor"] for e in events if e["type"] == "crypto_received")
    reorged = sum(e["crypto"]["amount_minor"] for e in events if e["type"] in ("crypto_reorged", "crypto_lost"))
    assert sent <= received - reorged
    if cp.state == "confirmed":
        assert cp.due_minor * amount >= 0 and crypto._owed(cp) >= 0
        assert cp.rate.to_asset_minor(amount) == cp.due_minor  # the merchant's price, at the locked rate
    if cp.state in ("confirmed", "expired") and not crypto.watching(cp, last_ms, POLICY):
        assert crypto._owed(cp) == 0
    assert not any(e["type"] == "crypto_lost" for e in events)  # depth 2+ > reorg depth 1: nothing confirmed vanishes
