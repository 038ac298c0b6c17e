"""Crypto payments: the quote and the deposit's lifecycle on the chain. Pure.

A crypto payment is priced in a currency (the merchant's price, `fiat_minor`) and
paid in an asset (USDC, BTC) to a deposit address of its own. The quote fixes the
asset amount due at a rate (an integer ratio, schemas/money.py units) for a lock
window; what the payer sends is then watched on the chain (connectors/providers/
chain.py) by event time, and `observe` turns each look at the chain into moves:

| move | when | fiat (payment currency) | asset |
|---|---|---|---|
| crypto_received | new deposits on the canonical chain | - | custody <- payer |
| crypto_reorged | booked deposits gone (before confirmation) | - | payer <- custody (undo) |
| crypto_pending | paid in full in the lock window (not yet deep) | transit -> merchant incoming | - |
| crypto_unpending | a reorg took it below the quote again | incoming -> transit (undo) | - |
| crypto_confirmed | every counted deposit `depth_blocks` deep | incoming -> pending; clearing | payer -> owned (the
quote) |
| crypto_expired | the lock window ended without a full payment | - | - |
| crypto_refunded | what is not the merchant's (excess, late, short) sent back, once deep | - | payer -> custody
(sent) |
| crypto_lost | a deposit gone after confirmation (a reorg deeper than depth) | - | owned -> custody (the house's
loss) |

Deposits count towards the quote only when mined in a block before the lock
window ends; a late one (or one a reorg moved past the end) is given back. A
refund waits until its deposits are deep, so a reorg cannot take back coins we
already returned. After the payment closes, the address is watched `watch_ms`
longer for late deposits (docs/payments.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from connectors.providers.chain import ChainView, Rate

AWAITING, CONFIRMING, CONFIRMED, EXPIRED = "awaiting_payment", "confirming", "confirmed", "expired"
STATES = (AWAITING, CONFIRMING, CONFIRMED, EXPIRED)
MOVES = (
    "crypto_quoted",
    "crypto_received",
    "crypto_reorged",
    "crypto_pending",
    "crypto_unpending",
    "crypto_confirmed",
    "crypto_expired",
    "crypto_refunded",
    "crypto_lost",
)
REFUND_ADDRESS_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")


@dataclass(frozen=True)
class CryptoPolicy:
    """How crypto payments are watched. Depths are per asset (a chain's own finality)."""

    depth_blocks: tuple[tuple[str, int], ...] = (("USDC", 12), ("BTC", 3))
    lock_ms: int = 15 * 60_000  # the quote's lock window
    poll_ms: int = 60_000  # how often the pipeline looks at the chain (event time)
    watch_ms: int = 24 * 3_600_000  # how long a closed payment's address is still watched

    def __post_init__(self) -> None:
        assert all(d >= 1 for _, d in self.depth_blocks), self.depth_blocks
        assert self.lock_ms > 0 and self.poll_ms > 0 and self.watch_ms >= 0, self

    def depth(self, asset: str) -> int:
        return dict(self.depth_blocks)[asset]


@dataclass(frozen=True)
class CryptoPayment:
    asset: str
    address: str  # the payment's deposit address
    refund_address: str  # the payer's address: where excess, late and refunded coins go
    fiat_minor: int  # the price, in the payment's currency
    due_minor: int  # the quote: asset minor units owed for fiat_minor
    rate_asset_minor: int  # the locked rate: rate_asset_minor of the asset per rate_fiat_minor
    rate_fiat_minor: int
    issued_ms: int
    expires_ms: int  # the end of the lock window
    state: str = AWAITING
    booked: tuple[tuple[str, int], ...] = ()  # (tx_id, amount_minor) received and still canonical
    sent_back_minor: int = 0  # given back to the payer: excess, late, short payments
    refunded_minor: int = 0  # the merchant's refunds, in the asset, sent to the payer
    lost_minor: int = 0  # gone from under a confirmed payment
    sends: int = 0  # sends made (each under a key of its own)

    def __post_init__(self) -> None:
        assert self.state in STATES, self.state
        assert self.due_minor > 0 and self.fiat_minor > 0 and self.expires_ms > self.issued_ms, self
        assert min(self.sent_back_minor, self.refunded_minor, self.lost_minor, self.sends) >= 0, self
        assert self.refunded_minor <= (self.due_minor if self.state == CONFIRMED else 0), self

    @property
    def rate(self) -> Rate:
        return Rate(self.rate_asset_minor, self.rate_fiat_minor)

    @property
    def received_minor(self) -> int:
        return sum(a for _, a in self.booked)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> CryptoPayment:
        return cls(**(values | {"booked": tuple((tx, a) for tx, a in values.get("booked", ()))}))


@dataclass(frozen=True)
class Move:
    type: str  # one of MOVES
    fiat_minor: int  # in the payment's currency
    asset_minor: int  # in the asset
    tx_ids: tuple[str, ...] = ()


def quote(
    asset: str, address: str, refund_address: str, fiat_minor: int, rate: Rate, at_ms: int, policy: CryptoPolicy
) -> CryptoPayment:
    """The quote of a new payment: the asset amount for the price, locked for the window."""
    return CryptoPayment(
        asset,
        address,
        refund_address,
        fiat_minor,
        rate.to_asset_minor(fiat_minor),
        rate.asset_minor,
        rate.fiat_minor,
        at_ms,
        at_ms + policy.lock_ms,
    )


def check_refund_address(address: Any) -> str | None:
    """None for a well-formed payer address, else why not (the chain's own address check
    belongs to the chain; here: printable, bounded, no separators)."""
    if not isinstance(address, str) or not 8 <= len(address) <= 100:
        return "crypto.refund_address must be 8..100 characters"
    if not set(address) <= REFUND_ADDRESS_CHARS:
        return "crypto.refund_address must be letters and digits only"
    return None


def observe(cp: CryptoPayment, view: ChainView, depth_blocks: int) -> tuple[CryptoPayment, list[Move]]:
    """One look at the chain: the payment after it, and the moves it makes (in order)."""
    moves: list[Move] = []
    canonical = {d.tx_id: d for d in view.deposits}
    booked = dict(cp.booked)
    state, lost = cp.state, cp.lost_minor

    gone = tuple(tx for tx in booked if tx not in canonical)
    if gone:
        amount = sum(booked.pop(tx) for tx in gone)
        if state == CONFIRMED:  # deeper than the depth: the merchant keeps its money, the house takes the loss
            lost += amount
            moves.append(Move("crypto_lost", 0, amount, gone))
        else:
            moves.append(Move("crypto_reorged", 0, amount, gone))
    new = tuple(d for d in view.deposits if d.tx_id not in booked)
    if new:
        booked.update((d.tx_id, d.amount_minor) for d in new)
        moves.append(Move("crypto_received", 0, sum(d.amount_minor for d in new), tuple(d.tx_id for d in new)))

    in_time = [tx for tx in booked if canonical[tx].block_ms < cp.expires_ms]
    paid_minor = sum(booked[tx] for tx in in_time)
    if state == CONFIRMING and paid_minor < cp.due_minor:
        moves.append(Move("crypto_unpending", cp.fiat_minor, 0))
        state = AWAITING
    if state == AWAITING and paid_minor >= cp.due_minor:
        moves.append(Move("crypto_pending", cp.fiat_minor, 0, tuple(in_time)))
        state = CONFIRMING

    def deep(txs: Iterable[str]) -> bool:
        return all(view.confirmations(canonical[tx]) >= depth_blocks for tx in txs)

    if state == CONFIRMING and deep(in_time):
        moves.append(Move("crypto_confirmed", cp.fiat_minor, cp.due_minor, tuple(in_time)))
        state = CONFIRMED
    if state == AWAITING and view.at_ms >= cp.expires_ms:
        moves.append(Move("crypto_expired", 0, 0))
        state = EXPIRED

    sent_back, sends = cp.sent_back_minor, cp.sends
    after = replace(cp, state=state, booked=tuple(booked.items()), lost_minor=lost)
    owed = _owed(after)
    if state in (CONFIRMED, EXPIRED) and owed > 0 and deep(booked):
        moves.append(Move("crypto_refunded", 0, owed))
        sent_back, sends = sent_back + owed, sends + 1
    return replace(after, sent_back_minor=sent_back, sends=sends), moves


def _owed(cp: CryptoPayment) -> int:
    """What of the received coins belongs to the payer and was not given back yet:
    everything before confirmation, the excess over the quote after it."""
    kept = cp.due_minor - cp.lost_minor if cp.state == CONFIRMED else 0
    return cp.received_minor - kept - cp.sent_back_minor


def watching(cp: CryptoPayment, at_ms: int, policy: CryptoPolicy) -> bool:
    """Whether the address is still to be looked at after `at_ms`: while open, while
    something is owed to the payer, and `watch_ms` past the lock window for late coins."""
    if cp.state in (AWAITING, CONFIRMING) or _owed(cp) > 0:
        return True
    return at_ms < cp.expires_ms + policy.watch_ms


def refund_asset_minor(cp: CryptoPayment, fiat_minor: int) -> int:
    """A merchant's refund of `fiat_minor`, in the asset at the locked rate (rounded down)."""
    return cp.rate.refund_asset_minor(fiat_minor)
