"""The demo's crypto payments: quoted, paid on the simulated chains, confirmed as the
clock moves.

After the day's traffic the demo's crypto customers pay in USDC and BTC: most in full,
some short, one too much, one never; one confirmed payment is refunded by its merchant
afterwards. The simulated payer of a deposit address is drawn from the chain's seed
(connectors/providers/chain.py), so the demo picks each payment's idempotency key
until the payer behind its address does what the plan says (and no reorg drops its
transfer): the same run every time for a seed.

Crypto timers fire on clock ticks (docs/payments.md), so a tick phase then moves event
time a poll at a time past the last quote; what each payment's looks must have shown by
then is computed with the same pure rules the payments stage runs (`observe` over the
same chain), and the demo waits until the events say so."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from connectors.kafka.clients import command_producer
from connectors.providers.chain import SimChain
from schemas.ids import derive_payment_id
from schemas.times import from_ms, span_ms, to_ms
from streams.api.commands import follow_up_command
from streams.client.observe import Observer
from streams.client.publish import publish_commands, publish_tick
from streams.domain.crypto import MOVES, CryptoPayment, CryptoPolicy, observe, watching
from streams.settings import Settings, client_config

# (asset, currency, what the payer does, merchant, refunded by the merchant once confirmed)
PLAN = (
    ("USDC", "USD", "exact", "m_acme", False),
    ("USDC", "USD", "exact", "m_umbrella", False),
    ("USDC", "USD", "exact", "m_acme", True),
    ("USDC", "USD", "under", "m_umbrella", False),
    ("USDC", "USD", "over", "m_acme", False),
    ("USDC", "USD", "never", "m_acme", False),
    ("BTC", "USD", "exact", "m_acme", False),
    ("BTC", "EUR", "exact", "m_globex", False),
    ("BTC", "USD", "under", "m_umbrella", False),
)
MAX_KEY_TRIES = 5_000  # keys tried per planned payment for a payer that fits (the rarest: ~3 %)
AMOUNT_MINOR = (500, 20_000)
# Ticks run this long past the last quote, a poll apart: BTC's 3 blocks of 10 minutes
# after a payment in the lock window, a reorg's extra blocks, and the give-backs after.
TICK_SPAN = timedelta(hours=3)
MAX_TICKS = 1_000


def _transfers(behaviour: str) -> int:
    """How many transfers the payer of a behaviour sends (connectors/providers/chain.py)."""
    return {"never": 0, "split": 2}.get(behaviour, 1)


def fits(
    chain: SimChain, payment_id: str, behaviour: str, fiat_minor: int, currency: str, at_ms: int, policy: CryptoPolicy
) -> bool:
    """Whether the payer behind this payment's address does `behaviour` and every transfer
    it sends stays on the chain (a reorg may move it, not drop it)."""
    address = chain.deposit_address(payment_id)
    if chain.behaviour(address) != behaviour:
        return False
    rate = chain.rate(currency, at_ms)
    assert rate is not None, (chain.asset, currency)
    view = chain.view(
        address,
        rate.to_asset_minor(fiat_minor),
        at_ms,
        at_ms + policy.lock_ms,
        at_ms + span_ms(TICK_SPAN),
    )
    return len(view.deposits) == _transfers(behaviour)


def crypto_commands(
    run_id: str, seed: int, start: datetime, chains: Mapping[str, SimChain], policy: CryptoPolicy
) -> list[dict[str, Any]]:
    """The PLAN's creates (PaymentCommand v7 `crypto`), a second apart from `start`."""
    out: list[dict[str, Any]] = []
    for n, (asset, currency, behaviour, merchant, _) in enumerate(PLAN):
        rng = random.Random(f"{seed}:crypto:{n}")
        amount, at = rng.randint(*AMOUNT_MINOR), start + timedelta(seconds=n)
        for k in range(MAX_KEY_TRIES):
            key = f"{run_id}-crypto-{n}-{k}"
            pid = derive_payment_id(merchant, key)
            if fits(chains[asset], pid, behaviour, amount, currency, to_ms(at), policy):
                break
        else:
            raise RuntimeError(f"no {behaviour} payer on {asset} in {MAX_KEY_TRIES} keys")
        out.append(
            {
                "command_id": f"cmd_{run_id}_crypto_{n}",
                "kind": "create",
                "merchant_id": merchant,
                "idempotency_key": key,
                "payment_id": pid,
                "amount_minor": amount,
                "currency": currency,
                "capture_method": "automatic",
                "card": None,
                "metadata": {"order_id": f"crypto_{n}"},
                "occurred_at": at,
                "method": "crypto",
                "crypto": {"asset": asset, "refund_address": f"bc1qdemo{run_id}payer{n}"},
            }
        )
    return out


def quoted(events: Iterable[Mapping[str, Any]]) -> CryptoPayment | None:
    """The payment's quote as its `crypto_quoted` event carries it (None: never quoted)."""
    q = next((e for e in events if e["type"] == "crypto_quoted"), None)
    if q is None:
        return None
    c, at = q["crypto"], to_ms(q["occurred_at"])
    return CryptoPayment(
        c["asset"],
        c["address"],
        "payer",
        1,
        c["due_minor"],
        c["rate_asset_minor"],
        c["rate_fiat_minor"],
        at,
        to_ms(c["expires_at"]),
    )


def expected_moves(cp: CryptoPayment, chain: SimChain, policy: CryptoPolicy, until_ms: int) -> int:
    """The crypto moves the payments stage records for a quote by the looks due up to
    `until_ms` (one every poll after the quote, while the address is watched)."""
    moves, at = 0, cp.issued_ms + policy.poll_ms
    while at <= until_ms:
        view = chain.view(cp.address, cp.due_minor, cp.issued_ms, cp.expires_ms, at)
        cp, made = observe(cp, view, policy.depth(cp.asset))
        moves += len(made)
        if not watching(cp, at, policy):
            break
        at += policy.poll_ms
    return moves


def crypto_payments(
    events: Mapping[str, list[dict[str, Any]]], payment_ids: set[str]
) -> dict[str, list[dict[str, Any]]]:
    """This run's crypto payments with their events."""
    return {pid: evs for pid, evs in events.items() if pid in payment_ids and evs and evs[0].get("method") == "crypto"}


def looked_enough(events: Mapping[str, list[dict[str, Any]]], expected: Mapping[str, int]) -> bool:
    """Every quoted payment has at least the crypto moves its looks up to the last tick make."""
    return all(
        sum(1 for e in events.get(pid, ()) if e["type"] in MOVES and e["type"] != "crypto_quoted") >= n
        for pid, n in expected.items()
    )


@dataclass(frozen=True)
class CryptoRun:
    ticks: int = 0
    moved: bool = False  # every payment's looks up to the last tick were recorded
    refunds: int = 0  # the merchants' refunds applied


def run_crypto(
    settings: Settings,
    observer: Observer,
    creates: list[dict[str, Any]],
    chains: Mapping[str, SimChain],
    policy: CryptoPolicy,
    run_id: str,
    timeout_s: float,
) -> CryptoRun:
    """Tick the clock a poll at a time from the first crypto create to TICK_SPAN past the
    last quote, wait for what the looks show, then the planned merchant refunds."""
    ids = {c["payment_id"] for c in creates if c.get("method") == "crypto"}
    # Each create's answer is in: quoted, declined or held for review (the operator approved those).
    observer.wait_until(
        lambda: all(
            any(e["type"] in ("crypto_quoted", "declined") for e in observer.events.get(pid, ())) for pid in ids
        ),
        timeout_s,
    )
    mine = crypto_payments(observer.events, ids)
    quotes = {pid: cp for pid, evs in mine.items() if (cp := quoted(evs)) is not None}
    if not quotes:
        return CryptoRun()
    first = min(to_ms(c["occurred_at"]) for c in creates if c["payment_id"] in ids)
    end_ms = max(cp.issued_ms for cp in quotes.values()) + span_ms(TICK_SPAN)
    ticks = range(first + policy.poll_ms, end_ms + 1, policy.poll_ms)
    assert len(ticks) <= MAX_TICKS, len(ticks)
    producer = command_producer(client_config(settings))
    for at_ms in ticks:
        publish_tick(settings, from_ms(at_ms), producer)
    last = ticks[-1]
    expected = {pid: expected_moves(cp, chains[cp.asset], policy, last) for pid, cp in quotes.items()}
    moved = observer.wait_until(lambda: looked_enough(observer.events, expected), timeout_s)
    refunds = refund_commands(creates, observer.events, run_id, from_ms(last) + timedelta(seconds=1))
    publish_commands(settings, refunds)
    observer.wait_for({r["command_id"] for r in refunds}, 0, timeout_s)
    applied = sum(
        1
        for r in refunds
        if observer.outcomes.get(r["command_id"]) and observer.outcomes[r["command_id"]][0]["status"] == "succeeded"
    )
    return CryptoRun(len(ticks), moved, applied)


def refund_commands(
    creates: list[dict[str, Any]], events: Mapping[str, list[dict[str, Any]]], run_id: str, at: datetime
) -> list[dict[str, Any]]:
    """A full refund of each planned payment its merchant refunds, if it was confirmed."""
    out = []
    refunded = {f"crypto_{n}" for n, plan in enumerate(PLAN) if plan[4]}
    for c in creates:
        evs = events.get(c["payment_id"], [])
        if (c.get("metadata") or {}).get("order_id") in refunded and evs and evs[-1]["payment_status"] == "confirmed":
            refund = follow_up_command(
                "refund", c["merchant_id"], f"{c['idempotency_key']}-refund", c["payment_id"], None
            )
            out.append(refund | {"command_id": f"cmd_{run_id}_crypto_refund_{len(out)}", "occurred_at": at})
    return out


def crypto_summary(events: Mapping[str, list[dict[str, Any]]], payment_ids: set[str], run: CryptoRun) -> str:
    """One line: this run's crypto payments by asset and by final state, the coins given
    back to payers, and how many ticks moved the chain."""
    mine = crypto_payments(events, payment_ids)
    assets: Counter[str] = Counter()
    states: Counter[str] = Counter()
    for evs in mine.values():
        asset = next((e["crypto"]["asset"] for e in evs if e.get("crypto")), "unquoted")
        assets[asset] += 1
        states[evs[-1]["payment_status"]] += 1
    given_back = sum(1 for evs in mine.values() if any(e["type"] == "crypto_refunded" for e in evs))
    by_state = ", ".join(f"{s} {n}" for s, n in sorted(states.items()))
    by_asset = ", ".join(f"{a} {n}" for a, n in sorted(assets.items()))
    return (
        f"crypto: {len(mine)} payments ({by_asset}); by final state: {by_state or 'none'}; coins given back to "
        f"{given_back} payer(s); {run.ticks} clock ticks, chain looks recorded {run.moved}"
    )
